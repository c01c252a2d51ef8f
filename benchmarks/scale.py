"""Scale-out: the same scan on 1 process and on 2 torchrun processes (Gloo, CPU), side by side.

    .venv/bin/python benchmarks/scale.py [--samples 500] [--steps 50]

Each process gets one intra-op thread (torchrun's default), so "2 processes" uses the two
cores a "1 process" run leaves half idle; a 1-process run with 2 threads is printed too (what a
plain `robaudit scan` on this machine does). Prints wall time (process start to exit) and the
audit time the report records (``meta.duration_seconds``: loading done, attacks to gate), the
speed-ups, whether the sharded report equals the single-process one (timings aside), and an
Amdahl estimate for N GPUs from the measured serial share (loading, the integrity checks and the
report, which every rank repeats; the clean pass is sharded like the cells) — a compute-bound
estimate, not a GPU measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
TIMING = {"seconds", "duration_seconds", "clean_seconds", "started_at", "execution"}


def strip(doc: Any) -> Any:
    if isinstance(doc, dict):
        return {k: strip(v) for k, v in doc.items() if k not in TIMING}
    if isinstance(doc, list):
        return [strip(v) for v in doc]
    return doc


def config(samples: int, steps: int) -> dict[str, Any]:
    return {
        "version": 1,
        "seed": 0,
        "model": {"input_shape": [1, 8, 8], "num_classes": 10, "bounds": [0.0, 1.0]},
        "data": {"source": "builtin:digits", "split": "test", "samples": samples, "batch_size": 32},
        "attacks": [
            {"name": "fgsm", "norm": "linf", "eps": [0.1, 0.2, 0.3]},
            {"name": "pgd", "norm": "linf", "eps": [0.1, 0.2, 0.3], "steps": steps, "restarts": 2},
            {"name": "apgd", "norm": "l2", "eps": [0.5, 1.0, 1.5], "steps": steps},
        ],
        "report": {"formats": ["json"], "examples": 4},
        "engine": {"device": "cpu", "cascade": False},
    }


def run(cmd: list[str], threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode not in (0, 1):
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--model", default=str(ROOT / "sample_models" / "digits_cnn_robust.pt"))
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="robaudit-scale-"))
    cfg = tmp / "scale.yaml"
    cfg.write_text(yaml.safe_dump(config(args.samples, args.steps)), encoding="utf-8")
    scan = ["scan", args.model, "-c", str(cfg), "--quiet"]
    py = sys.executable
    runs = {
        "1 process x 1 thread": ([py, "-m", "robaudit", *scan, "--out", str(tmp / "one")], 1),
        "2 processes x 1 thread (torchrun, gloo)": (
            [py, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
             "-m", "robaudit", *scan, "--out", str(tmp / "two")],
            1,
        ),
        "1 process x 2 threads": ([py, "-m", "robaudit", *scan, "--out", str(tmp / "thr")], 2),
    }
    rows = []
    for name, (cmd, threads) in runs.items():
        wall = run(cmd, threads)
        out = Path(cmd[cmd.index("--out") + 1])
        doc = json.loads((out / "report.json").read_text(encoding="utf-8"))
        cells = sum(a["seconds"] for a in doc["attacks"])
        rows.append((name, wall, doc["meta"]["duration_seconds"], cells, doc))
    base_wall, base_audit, base_cells = rows[0][1], rows[0][2], rows[0][3]
    print(f"scan: {args.samples} digits, fgsm + pgd-{args.steps} x2 restarts + apgd-{args.steps}"
          f" at 3 eps each, batch 32, cascade off, model {Path(args.model).name}")
    print(f"{'run':42s} {'wall s':>8s} {'audit s':>8s} {'cells s':>8s} {'speed-up wall':>14s}"
          f" {'speed-up audit':>15s}")
    for name, wall, audit, cells, _ in rows:
        print(f"{name:42s} {wall:8.1f} {audit:8.1f} {cells:8.1f} {base_wall / wall:13.2f}x"
              f" {base_audit / audit:14.2f}x")
    same = strip(rows[0][4]) == strip(rows[1][4])
    print(f"2-process report equals the 1-process report (timings aside): {same}")
    clean = float(rows[0][4]["meta"].get("clean_seconds", 0.0))  # sharded like a cell
    serial = max(0.0, base_audit - base_cells - clean) / base_audit
    print(f"serial share of the 1-process audit (repeated on every rank): {serial:.1%} "
          f"(clean pass {clean:.2f} s, sharded, counted as parallel)")
    for n in (2, 4, 8):
        est = 1.0 / (serial + (1.0 - serial) / n)
        print(f"  Amdahl estimate on {n} GPUs (compute-bound): {est:.2f}x = {est / n:.2f} N")


if __name__ == "__main__":
    main()
