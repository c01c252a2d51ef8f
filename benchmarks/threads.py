"""PGD-100 on the ResNet-18 (20 images) under the thread counts a CI runner gets, for issue 20.

    nice -n 0 .venv/bin/python benchmarks/threads.py [--samples 20] [--steps 100] [--cgroup NAME]

Why: PyTorch starts one intra-op thread per visible core; on a runner whose CPU quota is
below that, or whose cores other jobs keep busy, the threads oversubscribe the CPU.
robaudit's default (robaudit/threads.py) is the affinity mask and the cgroup quota, rounded
down. Each row is the real CLI (``robaudit scan``, one PGD entry, CE loss, 100 steps, Linf
8/255) timed around the subprocess, in one run, side by side:

* ``quiet``: nothing else running; torch's defaults (one thread per visible core, OpenMP's
  spinning waits: torch is imported before robaudit's entry point) vs robaudit's (threads
  from the affinity mask and cgroup quota, passive waits; robaudit/entry.py);
* ``busy``: one busy-looping process per visible core beside the scan; the same two;
* ``quota``: the scan inside a cgroup v1 ``cpu`` group limited to 1 CPU (``--cgroup``, made
  here when the machine lets us, as a container with ``--cpus 1`` would be): torch's
  default vs robaudit's, which reads the quota and takes 1 thread.

The ResNet-18 is sample_models/train_resnet18.py's (CIFAR stem, digits upsampled to 3x32x32);
train it first. CPU only. Prints a table of wall seconds and the thread count each run used.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "out" / "resnet18" / "resnet18_digits32.pt"
DATA = ROOT / "out" / "resnet18" / "digits32_test.npz"
CGROUP_V1 = Path("/sys/fs/cgroup/cpu")


def busy() -> None:
    """A neighbour that keeps one core busy."""
    x = 0
    while True:
        x = (x * 7 + 1) % 1_000_003


def config(path: Path, samples: int, steps: int) -> None:
    path.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "model": {"bounds": [0.0, 1.0]},
                "data": {"samples": samples, "batch_size": samples},
                "attacks": [{"name": "pgd", "norm": "linf", "eps": ["8/255"], "steps": steps}],
                "integrity": {"enabled": False},
                "engine": {"device": "cpu"},
            }
        ),
        encoding="utf-8",
    )


# torch imported before robaudit's entry point: OpenMP keeps its default (spinning) waits,
# exactly as PyTorch's own defaults behave; robaudit's command asks for passive waits
TORCH_FIRST = "import sys, torch; from robaudit.entry import main; sys.argv[0] = 'robaudit'; main()"


def scan(cfg: Path, out: Path, threads: int | None, cgroup: Path | None) -> tuple[float, int]:
    """Wall seconds of one CLI scan and the threads its report says it used.

    ``threads`` given: PyTorch's defaults (that many threads, OpenMP's spinning waits);
    None: robaudit's (threads from affinity and quota, passive waits).
    """
    args = ["scan", str(MODEL), "-c", str(cfg), "--data", str(DATA), "--out", str(out),
            "--quiet", "--exit-zero"]
    if threads is None:
        cmd = [sys.executable, "-m", "robaudit", *args]
    else:
        cmd = [sys.executable, "-c", TORCH_FIRST, *args, "--threads", str(threads)]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    if cgroup is not None:  # join the group before exec: the scan runs under its quota
        cmd = ["sh", "-c", f'echo $$ > {cgroup / "cgroup.procs"} && exec "$@"', "scan", *cmd]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - t0
    doc = json.loads((out / "report.json").read_text(encoding="utf-8"))
    return seconds, int(doc["meta"]["execution"]["threads"]["count"])


def make_cgroup(name: str) -> Path | None:
    """A cgroup v1 cpu group limited to 1 CPU, or None when the machine does not allow it."""
    group = CGROUP_V1 / name
    try:
        group.mkdir(exist_ok=True)
        (group / "cpu.cfs_period_us").write_text("100000")
        (group / "cpu.cfs_quota_us").write_text("100000")
    except OSError as exc:
        print(f"(no quota rows: cannot make {group}: {exc})")
        return None
    return group


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--cgroup", default="robaudit-bench")
    args = parser.parse_args()
    if not MODEL.exists():
        sys.exit(f"{MODEL} missing: run sample_models/train_resnet18.py first")
    cores = os.cpu_count() or 1
    rows: list[tuple[str, str, float, int]] = []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "pgd.yaml"
        config(cfg, args.samples, args.steps)
        for label, threads in (("torch default", cores), ("robaudit default", None)):
            rows.append(("quiet", label, *scan(cfg, Path(tmp) / "q", threads, None)))
        neighbours = [mp.Process(target=busy, daemon=True) for _ in range(cores)]
        for p in neighbours:
            p.start()
        try:
            for label, threads in (("torch default", cores), ("one thread", 1),
                                   ("robaudit default", None)):
                rows.append(("busy", label, *scan(cfg, Path(tmp) / "b", threads, None)))
        finally:
            for p in neighbours:
                p.terminate()
        group = make_cgroup(args.cgroup)
        if group is not None:
            try:
                for label, threads in (("torch default", cores), ("robaudit default", None)):
                    rows.append(("quota 1 CPU", label, *scan(cfg, Path(tmp) / "c", threads, group)))
            finally:
                with contextlib.suppress(OSError):
                    group.rmdir()
    print(f"PGD-{args.steps}, ResNet-18 3x32x32, {args.samples} images, {cores} visible cores")
    print(f"{'machine':12s} {'threads':18s} {'used':>4s} {'wall s':>7s}")
    for machine, label, seconds, used in rows:
        print(f"{machine:12s} {label:18s} {used:4d} {seconds:7.1f}")


if __name__ == "__main__":
    main()
