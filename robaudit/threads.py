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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

CGROUP_ROOT = Path("/sys/fs/cgroup")
SELF_CGROUP = Path("/proc/self/cgroup")


@dataclass(frozen=True)
class ThreadChoice:
    """How many intra-op threads a run uses, and why (recorded in the report)."""

    count: int
    source: str

    def to_dict(self) -> dict[str, object]:
        return {"count": self.count, "from": self.source}


def own_cgroups(text: str) -> dict[str, str]:
    """``/proc/self/cgroup`` as {controller: path}; cgroup v2's single line is under ``""``."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(","):
                found[controller] = parts[2]
    return found


def _upwards(base: Path, path: str) -> list[Path]:
    """``base/path`` and each parent up to ``base``: a quota anywhere above limits us too."""
    parts = [p for p in path.split("/") if p]
    return [base.joinpath(*parts[:k]) for k in range(len(parts), -1, -1)]


def _v2(folder: Path) -> float | None:
    quota, period = (folder / "cpu.max").read_text().split()[:2]
    return None if quota == "max" else int(quota) / int(period)


def _v1(folder: Path) -> float | None:
    quota_us = int((folder / "cpu.cfs_quota_us").read_text())
    period_us = int((folder / "cpu.cfs_period_us").read_text())
    return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us


def cgroup_quota(root: Path = CGROUP_ROOT, self_cgroup: Path | None = SELF_CGROUP) -> float | None:
    """CPUs allowed by the cgroup CPU quota (v2, then v1); None when unlimited or unknown.

    Read at this process's own cgroup (``/proc/self/cgroup``) and every cgroup above it, the
    smallest quota winning; inside a container's cgroup namespace that path is ``/``.
    """
    try:
        text = self_cgroup.read_text() if self_cgroup is not None else ""
    except OSError:
        text = ""
    mine = own_cgroups(text)
    places: list[tuple[Path, Callable[[Path], float | None], str]] = [
        (f, _v2, "cpu.max") for f in _upwards(root, mine.get("", "/"))
    ]
    for mount in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        places += [(f, _v1, "cpu.cfs_quota_us") for f in _upwards(root / mount, mine.get("cpu", "/"))]
    quotas: list[float] = []
    for folder, read, probe in places:
        if not (folder / probe).is_file():
            continue
        try:
            q = read(folder)
        except (OSError, ValueError, IndexError):
            continue
        if q is not None:
            quotas.append(q)
    return min(quotas) if quotas else None


def available_cpus(root: Path = CGROUP_ROOT, self_cgroup: Path | None = SELF_CGROUP) -> ThreadChoice:
    """The CPUs this process may use: affinity mask and cgroup quota, rounded down, >= 1."""
    try:
        affinity = len(os.sched_getaffinity(0))
        why = [f"affinity {affinity}"]
    except (AttributeError, OSError):  # not on Linux
        affinity = os.cpu_count() or 1
        why = [f"{affinity} CPUs"]
    count = affinity
    quota = cgroup_quota(root, self_cgroup)
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
