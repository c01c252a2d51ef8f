"""Do two commits write the same report? Fixed-seed scans of both sample models with each preset.

    .venv/bin/python benchmarks/same_reports.py BEFORE [AFTER] [--presets quick,standard]
        [--models plain,robust] [--samples 100] [--keep DIR] [--presets-from REV]

Why: a refactor (issue 15, architecture v2) must not change a single number. Each commit is
checked out in its own ``git worktree`` and scanned with the real CLI from there (``python -m
robaudit`` run inside the worktree imports that commit's package), with the same seed, sample
count and one thread (so float reductions agree). The two ``report.json`` files are compared
after dropping the fields that measure time or the machine (``seconds``, ``started_at``,
``execution``, ...), and so is each scan's exit code. ``AFTER`` defaults to the work tree as
it is now. Exit 0 when every pair is identical, 1 otherwise (the first differing paths are
printed).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"plain": "sample_models/digits_cnn.pt", "robust": "sample_models/digits_cnn_robust.pt"}
PRESETS = ("quick", "standard", "strict", "autoattack")
TIMING = frozenset({"seconds", "duration_seconds", "clean_seconds", "started_at", "execution"})


def without_timing(doc: Any) -> Any:
    if isinstance(doc, dict):
        return {k: without_timing(v) for k, v in doc.items() if k not in TIMING}
    if isinstance(doc, list):
        return [without_timing(v) for v in doc]
    return doc


def differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Paths where two JSON values differ (first few only matter)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{path}.{k}: only in one" for k in sorted(set(a) ^ set(b))]
        for k in sorted(set(a) & set(b)):
            out += differences(a[k], b[k], f"{path}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} vs {len(b)} items"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} vs {b!r}"]


def checkout(rev: str, where: Path) -> Path:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(where), rev],
                   check=True, capture_output=True)
    return where


def scan(tree: Path, model: str, preset: str, samples: int, out: Path) -> tuple[int, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(tree)}
    proc = subprocess.run(
        [sys.executable, "-m", "robaudit", "scan", str(tree / MODELS[model]), "--config",
         preset if preset.endswith(".yaml") else f"{preset}.yaml", "--samples", str(samples), "--seed", "0", "--out", str(out),
         "--quiet", "--device", "cpu"],
        cwd=tree, env=env, capture_output=True, text=True,
    )
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{tree}: {model}/{preset} exited {proc.returncode}: {proc.stderr[-2000:]}")
    text = (out / "report.json").read_text().replace(str(tree), "<tree>")  # bundled preset paths
    return proc.returncode, without_timing(json.loads(text))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before")
    parser.add_argument("after", nargs="?", default=None, help="default: the work tree")
    parser.add_argument("--presets", default="quick,standard")
    parser.add_argument("--models", default="plain,robust")
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--keep", type=Path, default=None, help="keep the reports here")
    parser.add_argument(
        "--presets-from", default=None, metavar="REV",
        help="both sides scan with the preset files as they were at REV (a later commit may "
        "have changed a preset on purpose; this checks the code alone)",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="same-reports-"))
    configs: dict[str, str] = {}
    for preset in args.presets.split(","):
        configs[preset] = preset
        if args.presets_from:
            text = subprocess.run(
                ["git", "-C", str(ROOT), "show", f"{args.presets_from}:robaudit/presets/{preset}.yaml"],
                check=True, capture_output=True, text=True,
            ).stdout
            (work / "presets").mkdir(exist_ok=True)
            (work / "presets" / f"{preset}.yaml").write_text(text)
            configs[preset] = str(work / "presets" / f"{preset}.yaml")
    trees = {"before": checkout(args.before, work / "before")}
    trees["after"] = checkout(args.after, work / "after") if args.after else ROOT
    failed = 0
    try:
        for model in args.models.split(","):
            for preset in args.presets.split(","):
                got = {
                    side: scan(tree, model, configs[preset], args.samples,
                               (args.keep or work) / side / f"{model}-{preset}")
                    for side, tree in trees.items()
                }
                (code_b, doc_b), (code_a, doc_a) = got["before"], got["after"]
                diff = differences(doc_b, doc_a)
                if code_b != code_a:
                    diff.insert(0, f"exit code: {code_b} vs {code_a}")
                same = not diff
                failed += not same
                print(f"{model:7s} {preset:11s} {'identical' if same else 'DIFFERENT'}", flush=True)
                for d in diff[:10]:
                    print(f"    {d}")
    finally:
        for tree in trees.values():
            if tree != ROOT:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                               capture_output=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
