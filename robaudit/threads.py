"""Intra-op threads that fit the runner: the CPUs this process may actually use.

PyTorch starts one intra-op thread per visible core. On a shared CI runner, or in a
container whose CPU quota is below the visible core count, that oversubscribes the CPU: PGD
on 20 images took 14x longer with the default threads than with one while other processes
loaded a 2-core machine. The default here is the smallest of the affinity mask and the cgroup
(v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``/``cpu.cfs_period_us``) quota, rounded down, at
least 1; ``--threads N`` or ``engine.threads`` overrides it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class ThreadChoice:
    """How many intra-op threads a run uses, and why (recorded in the report)."""

    count: int
    source: str

    def to_dict(self) -> dict[str, object]:
        return {"count": self.count, "from": self.source}


def cgroup_quota(root: Path = CGROUP_ROOT) -> float | None:
    """CPUs allowed by the cgroup CPU quota (v2 first, then v1); None when unlimited or unknown."""
    try:
        v2 = root / "cpu.max"
        if v2.is_file():
            quota, period = v2.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        q1, p1 = root / "cpu" / "cpu.cfs_quota_us", root / "cpu" / "cpu.cfs_period_us"
        if q1.is_file() and p1.is_file():
            quota_us, period_us = int(q1.read_text()), int(p1.read_text())
            return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None
    return None


def available_cpus(root: Path = CGROUP_ROOT) -> ThreadChoice:
    """The CPUs this process may use: affinity mask and cgroup quota, rounded down, >= 1."""
    try:
        affinity = len(os.sched_getaffinity(0))
        why = [f"affinity {affinity}"]
    except (AttributeError, OSError):  # not on Linux
        affinity = os.cpu_count() or 1
        why = [f"{affinity} CPUs"]
    count = affinity
    quota = cgroup_quota(root)
    if quota is not None:
        why.append(f"cgroup quota {quota:g}")
        count = min(count, math.floor(quota))
    return ThreadChoice(max(1, count), ", ".join(why))


def choose(threads: int | None, where: str = "--threads or engine.threads") -> ThreadChoice:
    """``threads`` when given, else ``OMP_NUM_THREADS`` when set (torchrun sets 1 per process),
    else :func:`available_cpus`."""
    if threads is not None:
        return ThreadChoice(threads, f"set by {where}")
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return ThreadChoice(int(env), "OMP_NUM_THREADS")
    return available_cpus()


def current() -> ThreadChoice:
    """The caller's own setting, which the Python API keeps unless told otherwise."""
    return ThreadChoice(torch.get_num_threads(), "the caller's torch.get_num_threads()")


@contextmanager
def using(choice: ThreadChoice) -> Iterator[ThreadChoice]:
    """Run the block with ``choice.count`` intra-op threads; the caller's count is restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(choice.count)
    try:
        yield choice
    finally:
        torch.set_num_threads(before)
