"""Wall time, clean and robust accuracy of each shipped preset on three models, for the README.

    nice -n 10 .venv/bin/python benchmarks/presets.py [--presets quick,standard,strict,autoattack]
        [--models plain,robust,resnet18] [--digits-samples N] [--timeout 3600] [--grace 600]
        [--time-budget strict/resnet18=40m] [--max-rss-gb 12] [--malloc-mmap-threshold 65536]
        [--json out/bench/presets.json] [--render SAVED.json ...]

Why: the presets fit any image model (input shape from the data, classes from a forward pass,
budgets from the profile chosen by input size), so their cost has to be quoted on more than
the 8x8 digits CNNs. Each run is the real CLI, in a subprocess, exactly as a user types it::

    robaudit scan MODEL --config configs/PRESET.yaml --data DATA --samples N \\
        --out out/bench/PRESET/MODEL --quiet --exit-zero --device cpu

Models: ``plain`` (sample_models/digits_cnn.pt) and ``robust`` (digits_cnn_robust.pt) on
``builtin:digits`` (1x8x8, digits profile), each with the preset's own sample count unless
``--digits-samples`` is given; ``resnet18``, a CIFAR-stem torchvision ResNet-18 on the digits
upsampled to 3x32x32 (cifar profile: Linf 8/255, 16/255; L2 0.5), on 100 test images. Its
checkpoint is trained by sample_models/train_resnet18.py first when missing (about 5 minutes).

Wall time is the whole process (start-up, import, loading, every attack, the integrity checks,
writing every report format), measured around the subprocess. ``--time-budget`` passes
robaudit's own ``--time-budget`` to every run or, as ``PRESET/MODEL=SPEC``, to one: a clean stop
with a partial report (a stop lands within one model call; the interrupted cell's finished
batches are kept and ``--resume`` continues it). ``--timeout`` and ``--max-rss-gb`` are the
benchmark's backstops: SIGTERM (the same clean stop), then SIGKILL after ``--grace`` seconds;
such a run is marked ``> N (why)`` with whatever partial report it wrote.

Memory: ``peak_rss_gb`` is sampled every 2 s. A ResNet-18 scan's resident memory used to grow
for as long as an attack ran (glibc heap fragmentation as the active batch shrinks, about 0.4
GiB a minute); robaudit.allocator now trims the heap once it has doubled past the last trim,
and ``--malloc-mmap-threshold`` remains to study glibc's own knob (it halves the speed).
Runs go one after another; each one's console output lands in ``out/bench/PRESET/MODEL.log``.

Timing note: CPU only, 2 threads (``torch.set_num_threads(2)``, OMP_NUM_THREADS=2) on a shared
2-core VM; the same run varies by +-10-20% here, more when other work shares the cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ("quick", "standard", "strict", "autoattack")
RESNET_DIR = ROOT / "out" / "resnet18"
RESNET_SAMPLES = 100
# robaudit.allocator raises glibc's mmap threshold to 32 MiB at the first attack (mallopt wins
# over MALLOC_MMAP_THRESHOLD_); this, robaudit's documented opt-out, leaves the variable in force
MALLOC_ENV = {"ROBAUDIT_KEEP_MALLOC": "1"}


@dataclass(frozen=True)
class Model:
    """A checkpoint, the data it is audited on, and a fixed sample count (None: the preset's)."""

    path: Path
    data: str
    samples: int | None


MODELS: dict[str, Model] = {
    "plain": Model(ROOT / "sample_models" / "digits_cnn.pt", "builtin:digits", None),
    "robust": Model(ROOT / "sample_models" / "digits_cnn_robust.pt", "builtin:digits", None),
    "resnet18": Model(
        RESNET_DIR / "resnet18_digits32.pt", str(RESNET_DIR / "digits32_test.npz"), RESNET_SAMPLES
    ),
}


@dataclass
class Result:
    """One preset x model run: what the table shows, plus the command for reproducing it."""

    preset: str
    model: str
    command: list[str]
    exit_code: int | None = None
    seconds: float = 0.0
    stopped: str | None = None  # why the benchmark stopped it (timeout, memory)
    peak_rss_gb: float = 0.0
    env: dict[str, str] = field(default_factory=dict)  # set for the scan beyond OMP threads
    error: str | None = None
    samples: int | None = None
    clean_accuracy: float | None = None
    robust: dict[str, float] = field(default_factory=dict)
    gate_passed: bool | None = None
    findings: list[str] = field(default_factory=list)
    partial: str | None = None


def ensure_resnet() -> None:
    """Train the ResNet-18 and write its test data when either file is missing."""
    m = MODELS["resnet18"]
    if m.path.exists() and Path(m.data).exists():
        return
    print("ResNet-18 checkpoint missing: training it (sample_models/train_resnet18.py)", flush=True)
    script = ROOT / "sample_models" / "train_resnet18.py"
    subprocess.run([sys.executable, str(script), "--out", str(RESNET_DIR)], cwd=ROOT, check=True)


def robaudit_exe() -> list[str]:
    """The venv's console script next to this interpreter, else ``python -m robaudit``."""
    exe = Path(sys.executable).with_name("robaudit")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "robaudit"]


def command(
    preset: str, name: str, out: Path, digits_samples: int | None, device: str, budget: str | None
) -> list[str]:
    """The exact ``robaudit scan`` command line of one run."""
    m = MODELS[name]
    cmd = [
        *robaudit_exe(),
        "scan",
        str(m.path.relative_to(ROOT)),
        "--config",
        f"configs/{preset}.yaml",
        "--data",
        m.data if m.data.startswith("builtin:") else str(Path(m.data).relative_to(ROOT)),
    ]
    samples = m.samples if m.samples is not None else digits_samples
    if samples is not None:
        cmd += ["--samples", str(samples)]
    cmd += ["--out", str(out.relative_to(ROOT)), "--quiet", "--exit-zero", "--device", device]
    if budget:
        cmd += ["--time-budget", budget]
    return cmd


@dataclass(frozen=True)
class Limits:
    """When to stop a run (SIGTERM, so robaudit still writes its partial report)."""

    timeout: float  # seconds of wall time
    grace: float  # after SIGTERM: seconds to finish the batch in flight and write the report
    max_rss_gb: float | None  # resident memory of the scan; None: unlimited
    mmap_threshold: int | None  # glibc MALLOC_MMAP_THRESHOLD_ for the scan; None: glibc's


def rss_gb(pid: int) -> float:
    """Resident memory of a process in GiB (0 once it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 2**20
    return 0.0


def run_one(preset: str, name: str, cmd: list[str], out: Path, limits: Limits) -> Result:
    """Run one scan in a subprocess, time it, and read its report.json (partial ones too).

    Polled every 2 s: past ``limits.timeout`` or ``limits.max_rss_gb`` it gets SIGTERM (on a
    shared machine a growing scan must not take the others down), then SIGKILL after
    ``limits.grace`` seconds: robaudit stops between batches, so the batch in flight finishes.
    """
    res = Result(preset, name, cmd)
    shutil.rmtree(out, ignore_errors=True)  # never read a stale report
    env = {**os.environ, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    if limits.mmap_threshold is not None:
        env.update(MALLOC_ENV)
        env["MALLOC_MMAP_THRESHOLD_"] = str(limits.mmap_threshold)
        res.env = {**MALLOC_ENV, "MALLOC_MMAP_THRESHOLD_": str(limits.mmap_threshold)}
    log = out.parent / f"{out.name}.log"  # stdout and stderr, outside the report folder
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
        stop_at: float | None = None
        while proc.poll() is None:
            elapsed = time.perf_counter() - t0
            res.peak_rss_gb = max(res.peak_rss_gb, rss_gb(proc.pid))
            if stop_at is None:
                if elapsed > limits.timeout:
                    res.stopped = f"timeout {limits.timeout:.0f} s"
                elif limits.max_rss_gb is not None and res.peak_rss_gb > limits.max_rss_gb:
                    res.stopped = f"RSS > {limits.max_rss_gb:g} GiB"
                if res.stopped:
                    res.seconds = elapsed
                    proc.send_signal(signal.SIGTERM)  # robaudit writes a partial report, exit 130
                    stop_at = elapsed
            elif elapsed - stop_at > limits.grace:
                proc.kill()
            time.sleep(2.0)
    if not res.stopped:
        res.seconds = time.perf_counter() - t0
    res.exit_code = proc.returncode
    if proc.returncode not in (0, 1) and not res.stopped:
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
        res.error = lines[-1].strip() if lines else f"exit {proc.returncode}, no message"
    report = out / "report.json"
    if report.exists():
        read_report(res, json.loads(report.read_text()))
    return res


def read_report(res: Result, rep: dict[str, Any]) -> None:
    """Fill the table's fields from report.json."""
    res.samples = rep.get("data", {}).get("samples")
    res.clean_accuracy = rep.get("clean_accuracy")
    res.robust = {t["key"]: t["robust_accuracy"] for t in rep.get("threats", [])}
    res.gate_passed = rep.get("gate", {}).get("passed")
    counts: dict[str, int] = {}
    for f in rep.get("findings", []):
        if not f.get("resolved", False):
            label = f"{f['id']} {f['severity']}"
            counts[label] = counts.get(label, 0) + 1
    res.findings = [f"{k} ×{n}" if n > 1 else k for k, n in counts.items()]
    partial = rep.get("partial")
    if partial:
        res.partial = f"{partial.get('kind')}: {len(partial.get('unrun', []))} cells unrun"
    elif rep.get("incomplete"):
        res.partial = "incomplete"


def pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def threat_label(key: str) -> str:
    """``white-box/linf/8/255`` -> ``linf 8/255``; other variants or access keep their prefix."""
    return key.removeprefix("white-box/").replace("/", " ", 1)


def table(results: list[Result]) -> str:
    """The Markdown table of all runs."""
    head = (
        "| preset | model | samples | wall time (s) | clean acc. | robust acc. per threat "
        "| gate | unresolved findings |\n|---|---|---:|---:|---:|---|---|---|"
    )
    rows = [head]
    for r in results:
        wall = f"{r.seconds:.0f}"
        if r.stopped:
            wall = f"> {wall} ({r.stopped})"
        if r.env:
            wall += " †"
        robust = "<br>".join(f"{threat_label(k)}: {pct(v)}" for k, v in r.robust.items()) or "–"
        if r.error:
            robust = f"ERROR (exit {r.exit_code}): {r.error}"
        elif r.partial:
            robust = f"PARTIAL ({r.partial})<br>{robust}"
        gate = "–" if r.gate_passed is None else ("pass" if r.gate_passed else "fail")
        rows.append(
            f"| {r.preset} | {r.model} | {r.samples if r.samples is not None else '–'} | {wall} "
            f"| {pct(r.clean_accuracy)} | {robust} | {gate} | {', '.join(r.findings) or 'none'} |"
        )
    envs = sorted({" ".join(f"{k}={v}" for k, v in r.env.items()) for r in results if r.env})
    if envs:
        rows += ["", f"† run with {'; '.join(envs)} (see the module docstring)"]
    return "\n".join(rows)


def budget_for(specs: list[str], preset: str, model: str) -> str | None:
    """The ``--time-budget`` of one run: ``PRESET/MODEL=SPEC`` wins over a bare ``SPEC``."""
    chosen = None
    for spec in specs:
        key, sep, value = spec.rpartition("=")
        if not sep:
            chosen = chosen or value
        elif key == f"{preset}/{model}":
            return value
    return chosen


def load_results(path: Path) -> list[Result]:
    """Results saved by ``--json`` (unknown keys of other versions ignored)."""
    known = {f.name for f in fields(Result)}
    return [
        Result(**{k: v for k, v in d.items() if k in known}) for d in json.loads(path.read_text())
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", default=",".join(PRESETS))
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument(
        "--digits-samples",
        type=int,
        default=None,
        help="samples for the digits models (default: each preset's own)",
    )
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per run")
    parser.add_argument(
        "--grace",
        type=float,
        default=600.0,
        help="seconds a stopped scan gets to write its partial report before SIGKILL",
    )
    parser.add_argument(
        "--time-budget",
        action="append",
        default=[],
        metavar="[PRESET/MODEL=]SPEC",
        help="robaudit's --time-budget for every run or one (repeatable)",
    )
    parser.add_argument(
        "--max-rss-gb",
        type=float,
        default=None,
        help="stop a scan whose resident memory passes this (GiB); default: no limit",
    )
    parser.add_argument(
        "--malloc-mmap-threshold",
        type=int,
        default=None,
        metavar="BYTES",
        help="set glibc's MALLOC_MMAP_THRESHOLD_ for the scans (default: glibc's own)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, default=None, help="save the results here")
    parser.add_argument(
        "--render",
        type=Path,
        action="append",
        default=[],
        metavar="JSON",
        help="print the table of saved --json results (repeatable, in order) and run nothing",
    )
    args = parser.parse_args()
    if args.render:
        print(table([r for path in args.render for r in load_results(path)]))
        return

    presets = [p for p in args.presets.split(",") if p]
    models = [m for m in args.models.split(",") if m]
    for p in presets:
        if p not in PRESETS:
            parser.error(f"unknown preset {p!r}; choose from {', '.join(PRESETS)}")
    for m in models:
        if m not in MODELS:
            parser.error(f"unknown model {m!r}; choose from {', '.join(MODELS)}")
    if "resnet18" in models:
        ensure_resnet()

    limits = Limits(args.timeout, args.grace, args.max_rss_gb, args.malloc_mmap_threshold)
    results: list[Result] = []
    for preset in presets:
        for name in models:
            out = ROOT / "out" / "bench" / preset / name
            budget = budget_for(args.time_budget, preset, name)
            cmd = command(preset, name, out, args.digits_samples, args.device, budget)
            prefix = (
                f"ROBAUDIT_KEEP_MALLOC=1 MALLOC_MMAP_THRESHOLD_={limits.mmap_threshold} "
                if limits.mmap_threshold
                else ""
            )
            print(f"$ {prefix}{' '.join(cmd)}", flush=True)
            res = run_one(preset, name, cmd, out, limits)
            note = f" (stopped: {res.stopped})" if res.stopped else ""
            print(
                f"  exit {res.exit_code}, {res.seconds:.0f} s, peak RSS {res.peak_rss_gb:.1f} GiB{note}",
                flush=True,
            )
            if res.error:
                print(f"  error: {res.error}", flush=True)
            results.append(res)
            if args.json:  # saved after every run, so a long benchmark loses nothing
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps([asdict(r) for r in results], indent=1))
    print()
    print(table(results))


if __name__ == "__main__":
    main()
