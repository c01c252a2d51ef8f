"""Small pieces several attacks share, so each attack module holds only its own algorithm.

The two-geometry attacks (Linf and L2 only: their update rules come from their papers, not from
a norm object) ask :func:`is_l2`, which refuses any third norm instead of treating it as one of
the two. Everything drawn at random is drawn on the CPU from the explicit generator, so a seed
gives the same run on any device.
"""

from __future__ import annotations

import torch

from robaudit.norms import TINY, get, per_sample

TRACE_POINTS = 200  # a long loss trace is thinned to at most this many points


def is_l2(norm: str) -> bool:
    """True for ``l2``, False for ``linf``; a ValueError for any other norm."""
    geometry = {"l2": True, "linf": False}.get(norm)
    if geometry is None:
        raise ValueError(f"this attack has Linf and L2 update rules only, not {norm!r}")
    return geometry


def random_directions(
    shape: tuple[int, ...], norm: str, generator: torch.Generator
) -> torch.Tensor:
    """Random float32 directions on the CPU: Gaussian for L2 and L1 (FAB-L1's restarts, as in
    the paper's code), uniform in the cube for Linf."""
    if norm == "l1" or is_l2(norm):
        return torch.randn(shape, generator=generator, dtype=torch.float32)
    return 2 * torch.rand(shape, generator=generator, dtype=torch.float32) - 1


def most_likely_wrong(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per sample the highest-scoring class other than ``y``."""
    return logits.scatter(1, y[:, None], float("-inf")).argmax(dim=1)


def ranked_wrong(logits: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """Per sample the ``k`` highest-scoring classes other than ``y``, most likely first (N×k)."""
    return logits.scatter(1, y[:, None], float("-inf")).topk(k, dim=1).indices


def mean_trace(trace: list[torch.Tensor]) -> list[float] | None:
    """Per-step mean losses (0-d tensors, kept on the device until now) as floats."""
    return [float(v) for v in torch.stack(trace).tolist()] if trace else None


def thin(values: list[float], points: int = TRACE_POINTS) -> list[float]:
    """At most ``points`` evenly spaced values, the first and the last included."""
    if len(values) <= points:
        return values
    last = len(values) - 1
    return [values[round(i * last / (points - 1))] for i in range(points)]


class ClosestBoundary:
    """Among the linearized boundaries offered one by one, per sample the closest so far.

    A boundary is a logit gap ``f`` with gradient ``w``; its distance in the attack norm is
    ``|f| / ‖w‖_dual`` (DeepFool's and FAB's linearization).
    """

    def __init__(self, norm: str) -> None:
        self.norm = get(norm)
        self.f: torch.Tensor | None = None
        self.w: torch.Tensor | None = None
        self.dist: torch.Tensor | None = None

    def offer(self, f: torch.Tensor, w: torch.Tensor) -> None:
        dist = f.abs() / (self.norm.dual(w) + TINY)
        if self.f is None or self.w is None or self.dist is None:
            self.f, self.w, self.dist = f, w, dist
            return
        closer = dist < self.dist
        self.f = torch.where(closer, f, self.f)
        self.w = torch.where(per_sample(closer, w), w, self.w)
        self.dist = torch.where(closer, dist, self.dist)
