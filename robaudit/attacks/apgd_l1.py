"""APGD's L1 rules: l1-APGD (Croce & Hein 2021, "Mind the box: l1-APGD for sparse adversarial
attacks on image classifiers"), used by ``apgd`` and ``apgd-t`` at an L1 threat.

PGD's L1 steepest ascent puts the whole step on one coordinate, and a step blind to the box
spends budget on pixels already at 0 or 1 that the projection then throws away. l1-APGD:

- steps along sign(g) on the ``k`` largest |g_i| among the coordinates that can still move in
  their gradient's direction (a pixel at a face pushed outward is left out), spread evenly
  (unit L1 norm), without momentum;
- adapts ``k`` to the search: it starts at 20% of the coordinates and, at each checkpoint
  (every 4% of the steps), becomes the sparsity of the best point so far / 1.5, rounded
  down (AutoAttack's code rounds up, so a best point that changes 2 pixels keeps moving 2
  for good: on a linear model that leaves the budget split between two pixels where the
  better one alone flips the class; rounding down found all of those and was as strong or
  stronger on the sample models);
- adapts the step: it starts at eps; at a checkpoint where the best point got more than 5%
  sparser the step goes back to eps and the search restarts from the best point, elsewhere
  the step shrinks by 1.5, never below eps/10;
- projects every iterate exactly onto the L1 ball ∩ the box (:mod:`robaudit.norms.l1`);
- with ``eps_schedule`` (AutoAttack's L1 version): 30% of the steps at 3·eps, 30% at 2·eps,
  the rest at eps, each phase starting from the highest-loss point of the one before; only
  the last phase's misclassified points are answers (the others lie outside the threat).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from robaudit.attacks.feasible import project
from robaudit.norms import TINY, per_sample

if TYPE_CHECKING:
    from robaudit.attacks.apgd import _State

TOPK_START = 0.2  # share of the coordinates the first steps move
SPARSER = 0.95  # the best point got sparser when its L0 fell below this share of the last
TOPK_DIVISOR = 1.5  # k = L0(best point) / 1.5 at each checkpoint
STEP_DIVISOR = 1.5  # the step shrinks by this where the best point did not get sparser
MIN_STEP = 0.1  # the step never falls below this share of eps
CHECK_EVERY = 0.04  # a checkpoint every 4% of the steps
SCHEDULE = ((3.0, 0.3), (2.0, 0.3))  # (radius / eps, share of the steps), then eps


def sparse_direction(
    grad: torch.Tensor, xk: torch.Tensor, bounds: tuple[float, float], topk: torch.Tensor
) -> torch.Tensor:
    """sign(grad) on the ``topk`` share of the coordinates with the largest |grad| among
    those free to move in the gradient's direction, scaled to unit L1 norm (N×... like grad)."""
    lo, hi = bounds
    g, xf = grad.flatten(1), xk.flatten(1)
    stuck = ((xf >= hi) & (g > 0)) | ((xf <= lo) & (g < 0))
    free = g.masked_fill(stuck, 0.0)
    size = free.abs()
    d = size.shape[1]
    # ⌊k⌋ coordinates, at least one (1e-6: topk·d, a whole number, may round a hair below it)
    rank = d - (topk * d + 1e-6).floor().long().clamp(1, d)
    cut = size.sort(dim=1).values.gather(1, rank[:, None])
    s = torch.where(size >= cut, free.sign(), torch.zeros_like(free))
    return (s / (s.abs().sum(dim=1, keepdim=True) + TINY)).view_as(grad)


def sparsity(delta: torch.Tensor) -> torch.Tensor:
    """Per sample the number of changed coordinates (L0), as a float."""
    return (delta.flatten(1) != 0).sum(dim=1).to(delta.dtype)


def phases(eps: float, steps: int, schedule: bool) -> list[tuple[float, int]]:
    """(radius, steps) of each phase: AutoAttack's 3·eps, 2·eps, eps schedule, or eps alone
    (also when ``steps`` is too small to give every phase a step)."""
    if not schedule:
        return [(eps, steps)]
    out = [(eps * r, math.ceil(share * steps)) for r, share in SCHEDULE]
    left = steps - sum(n for _, n in out)
    return [*out, (eps, left)] if left >= 1 else [(eps, steps)]


def marks(steps: int) -> list[int]:
    """The iterations (below ``steps``) after which a checkpoint adapts k and the step."""
    every = max(int(CHECK_EVERY * steps), 1)
    return list(range(every, steps, every))


def random_start(
    x: torch.Tensor, eps: float, bounds: tuple[float, float], generator: torch.Generator
) -> torch.Tensor:
    """x plus standard Gaussian noise (drawn on the CPU), projected onto the ball ∩ box."""
    noise = torch.randn(x.shape, generator=generator, dtype=torch.float32)
    return project(x + noise.to(device=x.device, dtype=x.dtype), x, "l1", eps, bounds)


def begin(st: _State, fresh: bool) -> None:
    """k and the reference sparsity at a phase's start: 20% and all coordinates from a random
    start, the start's own sparsity (k = L0 / 1.5) when it continues an earlier phase."""
    n, d = st.xk.shape[0], st.xk[0].numel()
    if fresh:
        st.topk = torch.full((n,), TOPK_START, device=st.xk.device, dtype=st.xk.dtype)
        st.sparsity = torch.full_like(st.topk, float(d))
    else:
        st.sparsity = sparsity(st.xk - st.x0)
        st.topk = st.sparsity / d / TOPK_DIVISOR


def checkpoint(st: _State, eps: float) -> None:
    """Adapt k and the step to how sparse the best point became since the last checkpoint;
    where it got sparser, restart from it at the full step."""
    assert st.topk is not None and st.sparsity is not None
    now = sparsity(st.x_max - st.x0)
    sparser = now / st.sparsity.clamp(min=TINY) < SPARSER
    st.topk = now / st.xk[0].numel() / TOPK_DIVISOR
    eta = torch.where(sparser, torch.full_like(st.eta, eps), st.eta / STEP_DIVISOR)
    st.eta = eta.clamp(MIN_STEP * eps, eps)
    st.sparsity = now
    back = per_sample(sparser, st.xk)
    st.xk = torch.where(back, st.x_max, st.xk)
    st.g = torch.where(back, st.g_max, st.g)
    st.f = torch.where(sparser, st.f_max, st.f)


class L1Rules:
    """The L1 side of APGD's search (:class:`robaudit.attacks.apgd._Rules` is the Linf/L2
    side): the same methods, the rules above."""

    momentum = False
    eta_start = 1.0  # the first step, in units of eps

    def phases(self, eps: float, steps: int, schedule: bool) -> list[tuple[float, int]]:
        return phases(eps, steps, schedule)

    def marks(self, steps: int) -> list[int]:
        return marks(steps)

    def start(self, x: torch.Tensor, norm: str, eps: float, bounds: tuple[float, float],
              generator: torch.Generator) -> torch.Tensor:  # fmt: skip
        return random_start(x, eps, bounds, generator)

    def begin(self, st: _State, fresh: bool) -> None:
        begin(st, fresh)

    def direction(self, st: _State, g: torch.Tensor, norm: str,
                  bounds: tuple[float, float]) -> torch.Tensor:  # fmt: skip
        assert st.topk is not None
        return sparse_direction(g, st.xk, bounds, st.topk)

    def checkpoint(self, st: _State, rho: float, window: int, eps: float) -> None:
        checkpoint(st, eps)
