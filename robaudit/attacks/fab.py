"""FAB, the Fast Adaptive Boundary attack (Croce & Hein 2020, "Minimally distorted Adversarial
Examples with a Fast Adaptive Boundary Attack"), Linf, L2 and L1, untargeted and targeted.

A minimal-norm attack. Each step linearizes the gap ``f = z_s − z_y`` between the true class
``y`` and one other class ``s`` at the current point ``x_i``: untargeted, ``s`` is the class
whose linearized boundary is closest (``|f_s| / ‖∇f_s‖_dual``, one gradient per class);
targeted (``fab-t``), ``s`` is the target, one gradient per step. Both the current point and
the original ``x_0`` are projected onto that hyperplane intersected with the input box (the
smallest ``δ`` in the attack norm with ``lo ≤ x + δ ≤ hi``, solved exactly per sample), and the
step is biased towards the original by ``α = min(‖δ_i‖ / (‖δ_i‖ + ‖δ_0‖), alpha_max)``:

    x_{i+1} = clip((1 − α)(x_i + η δ_i) + α (x_0 + η δ_0))

``η`` (eta) overshoots the linearized boundary. Whenever an iterate is misclassified it is kept
if it is the smallest so far and the search moves back towards the original,
``x ← (1 − β) x_0 + β x`` (beta), so the iterates keep tracking the boundary from both sides.
The first restart starts at ``x_0``; later ones at a random point at distance
``min(eps, best norm so far) / 2`` (the paper's rule; the whole box's extent where both are
infinite). ``fab-t`` runs once per target (the ``targets`` most likely wrong classes on the
clean input) and keeps each sample's smallest adversarial over all runs; like AutoAttack's
FAB-T, any misclassification counts, the target only guides the linearization.

Every sample runs every step (a smaller adversarial may still come), so cost does not depend
on the data: per step and run one forward pass plus ``C − 1`` gradients (``fab``) or one
(``fab-t``). Samples misclassified on the clean input, and samples never fooled, come back
unchanged. Inputs and outputs are N×C×H×W inside ``clf.bounds``.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field

from robaudit.attacks.base import Attack, AttackOutput, AttackParams, register
from robaudit.attacks.common import ClosestBoundary, is_l2, random_directions, ranked_wrong
from robaudit.attacks.losses import logit_gap
from robaudit.attacks.projections import flat_norm, per_sample
from robaudit.classifier import Classifier
from robaudit.norms import get as get_norm
from robaudit.threat import Threat

_TINY = 1e-12


class FABParams(AttackParams):
    steps: int = Field(100, ge=1, le=100_000, description="iterations per restart")
    restarts: int = Field(
        1,
        ge=1,
        le=1000,
        description="runs per sample: the first from the clean input, the others from random "
        "points at distance min(eps, best norm so far)/2",
    )
    alpha_max: float = Field(
        0.1, ge=0, le=1, description="largest weight of the step from the original input (bias)"
    )
    eta: float = Field(
        1.05, ge=1, le=2, description="overshoot: both projections are scaled by eta"
    )
    beta: float = Field(
        0.9,
        gt=0,
        lt=1,
        description="backward step: a misclassified iterate x becomes (1-beta)*x_orig + beta*x",
    )

    def cost(self) -> float:
        """Per step a forward pass plus one backward per other class (9 on a 10-class model)."""
        return float(self.steps * self.restarts * 10)


class FABTParams(FABParams):
    targets: int = Field(
        9,
        ge=1,
        le=1000,
        description="most likely wrong classes on the clean input, one run each (≤ classes − 1)",
    )
    stop_within_eps: bool = Field(
        False,
        description="a sample skips the remaining targets once it has an adversarial within eps "
        "(AutoAttack's protocol, used by the battery: faster; norms above eps not minimal)",
    )

    def cost(self) -> float:
        """Per step and target a forward pass and one backward."""
        return float(self.steps * self.restarts * self.targets * 2)


def project_hyperplane_box(
    w: torch.Tensor, r: torch.Tensor, low: torch.Tensor, high: torch.Tensor, norm: str
) -> torch.Tensor:
    """Per row, the smallest ``δ`` in ``norm`` with ``w·δ = r`` and ``low ≤ δ ≤ high``.

    ``l1`` is a fractional knapsack (:func:`_project_l1`); ``l2`` and ``linf`` share the
    one-dimensional search of :func:`_project_clipped_ray`.
    """
    if norm == "l1":
        return _project_l1(w, r, low, high)
    return _project_clipped_ray(w, r, low, high, norm)


def _project_l1(
    w: torch.Tensor, r: torch.Tensor, low: torch.Tensor, high: torch.Tensor
) -> torch.Tensor:
    """The smallest L1 ``δ`` with ``w·δ = r`` and ``low ≤ δ ≤ high`` (``low ≤ 0 ≤ high``).

    Moving coordinate ``i`` by ``t`` towards the hyperplane costs ``t`` and gains ``|w_i| t``,
    so the cheapest way is greedy: fill the coordinates by decreasing ``|w_i|``, each up to its
    face of the box, until the gain reaches ``r``; at most one coordinate is filled partly (the
    optimum of a fractional knapsack, exact after one sort). Out of reach, every coordinate with
    ``w_i ≠ 0`` sits at its face: the box corner closest to the hyperplane.
    """
    flip = torch.where(r < 0, -1.0, 1.0).to(w.dtype)
    w = w * flip[:, None]
    r = r * flip
    aw = w.abs()
    room = torch.where(w > 0, high, torch.where(w < 0, -low, 0.0))
    aw_s, order = aw.sort(dim=1, descending=True)
    room_s = room.gather(1, order)
    gain = aw_s * room_s
    before = torch.cumsum(gain, dim=1) - gain  # gained by the coordinates filled earlier
    full = before + gain <= r[:, None]  # filled to the face, still short of (or exactly at) r
    part = ~full & (before < r[:, None])  # the one coordinate that gets there
    step = torch.where(part, (r[:, None] - before) / aw_s.clamp(min=_TINY), 0.0)
    step = torch.where(full, room_s, torch.minimum(step, room_s))
    size = torch.zeros_like(w).scatter(1, order, step)
    return size * w.sign()


def _project_clipped_ray(
    w: torch.Tensor, r: torch.Tensor, low: torch.Tensor, high: torch.Tensor, norm: str
) -> torch.Tensor:
    """Per row, the smallest ``δ`` (``l2`` or ``linf``) with ``w·δ = r`` and ``low ≤ δ ≤ high``.

    ``w``, ``low ≤ 0 ≤ high`` are M×D, ``r`` is M. The optimum is ``δ(λ) = clip(λ v, low, high)``
    with ``v = w`` (l2) or ``sign(w)`` (linf) and ``λ`` the root of the increasing, concave,
    piecewise-linear ``g(λ) = w·δ(λ)``; sorting each row's breakpoints (where a coordinate hits
    the box) finds the segment holding ``r`` exactly, in O(D log D), with no bisection tolerance.
    When the box cannot reach the hyperplane, the box corner closest to it comes back.
    """
    flip = torch.where(r < 0, -1.0, 1.0).to(w.dtype)
    w = w * flip[:, None]  # now r ≥ 0 and the root λ ≥ 0
    r = r * flip
    v = w if is_l2(norm) else w.sign()  # FAB's two geometries; another norm raises
    av = v.abs()
    room = torch.where(v > 0, high, -low)  # how far a coordinate can move in v's direction
    moving = av > 0
    brk = torch.where(moving, room / torch.where(moving, av, 1.0), float("inf"))
    slope = w.abs() * av  # d g / d λ contributed by a coordinate until it hits its breakpoint
    cap = torch.where(moving, slope * brk, 0.0)  # its contribution once clipped
    brk, order = brk.sort(dim=1)
    slope, cap = slope.gather(1, order), cap.gather(1, order)
    # g at each sorted breakpoint: the clipped coordinates' caps plus the others' slopes × λ
    cap_before = torch.cumsum(cap, dim=1) - cap
    slope_from = slope.flip(1).cumsum(dim=1).flip(1)  # slopes of the coordinates not yet clipped
    slope_after = slope_from - slope
    g_at = cap_before + cap + torch.where(slope_after > 0, brk * slope_after, 0.0)
    k = (g_at < r[:, None]).sum(dim=1)  # the segment (brk[k-1], brk[k]] that holds the root
    feasible = k < w.shape[1]
    kk = k.clamp(max=w.shape[1] - 1)[:, None]
    # on that segment g(λ) = (caps of the coordinates already clipped) + λ·(the others' slopes)
    clipped = cap_before.gather(1, kk).squeeze(1)
    free = slope_from.gather(1, kk).squeeze(1).clamp(min=_TINY)
    lam = (r - clipped) / free
    corner = torch.where(torch.isfinite(brk), brk, 0.0).amax(dim=1)  # every coordinate clipped
    lam = torch.where(feasible, lam, corner).clamp(min=0.0)
    return torch.minimum(torch.maximum(lam[:, None] * v, low), high)


def _random_start(
    x0: torch.Tensor,
    radius: torch.Tensor,
    norm: str,
    bounds: tuple[float, float],
    generator: torch.Generator,
) -> torch.Tensor:
    """A point at ``radius`` from each ``x0`` (drawn on CPU so seeds agree across devices)."""
    lo, hi = bounds
    d = random_directions(x0.shape, norm, generator)
    scale = flat_norm(d, norm)
    d = d.to(device=x0.device, dtype=x0.dtype)
    unit = d / per_sample(scale.to(device=x0.device, dtype=x0.dtype) + _TINY, d)
    return (x0 + unit * per_sample(radius, d)).clamp(lo, hi)


class _Best:
    """Each sample's smallest misclassified point so far, and its norm (inf where none)."""

    def __init__(self, x0: torch.Tensor) -> None:
        self.x = x0.clone()
        self.norm = torch.full((x0.shape[0],), float("inf"), device=x0.device, dtype=x0.dtype)

    def subset(self, idx: torch.Tensor) -> _Best:
        part = _Best(self.x[idx])
        part.norm = self.norm[idx].clone()
        return part

    def merge(self, idx: torch.Tensor, part: _Best) -> None:
        self.x[idx] = part.x
        self.norm[idx] = part.norm

    def offer(self, x0: torch.Tensor, xa: torch.Tensor, fooled: torch.Tensor, norm: str) -> None:
        size = flat_norm(xa - x0, norm)
        better = fooled & (size < self.norm)
        self.x = torch.where(per_sample(better, xa), xa, self.x)
        self.norm = torch.where(better, size, self.norm)


def _fab_run(
    clf: Classifier,
    x0: torch.Tensor,
    y: torch.Tensor,
    start: torch.Tensor,
    others: torch.Tensor,
    norm: str,
    p: FABParams,
    best: _Best,
) -> None:
    """One FAB run of ``p.steps`` steps from ``start``; misclassified iterates go to ``best``.

    ``others`` (N×K) are the classes linearized: the closest linearized boundary among them is
    followed (K = 1 is the targeted version).
    """
    lo, hi = clf.bounds
    n = int(x0.shape[0])
    xk = start
    for i in range(p.steps + 1):
        if i > 0 or not torch.equal(start, x0):  # x0 itself is known to be classified right
            fooled = clf.logits(xk).argmax(dim=1) != y
            best.offer(x0, xk, fooled, norm)
            xk = torch.where(per_sample(fooled, xk), x0 + p.beta * (xk - x0), xk)
        if i == p.steps:
            break
        # the linearized gap to the closest boundary among ``others``
        closest = ClosestBoundary(norm)
        for j in range(others.shape[1]):
            fj, wj, _ = clf.loss_and_grad(xk, y, logit_gap(others[:, j]))
            closest.offer(fj, wj)
        f, w = closest.f, closest.w
        assert f is not None and w is not None
        wf = w.flatten(1)
        # project the current point and the original onto {z : f + w·(z − xk) = 0} ∩ box
        pts = torch.cat([xk, x0]).flatten(1)
        rhs = torch.cat([-f, -f - (wf * (x0 - xk).flatten(1)).sum(dim=1)])
        deltas = project_hyperplane_box(torch.cat([wf, wf]), rhs, lo - pts, hi - pts, norm)
        d_k, d_0 = deltas[:n].view_as(xk), deltas[n:].view_as(xk)
        n_k, n_0 = flat_norm(d_k, norm), flat_norm(d_0, norm)
        alpha = torch.where(n_k + n_0 > 0, n_k / (n_k + n_0 + _TINY), 0.0).clamp(max=p.alpha_max)
        a = per_sample(alpha, xk)
        xk = ((1 - a) * (xk + p.eta * d_k) + a * (x0 + p.eta * d_0)).clamp(lo, hi)


def _restart_radius(
    best: _Best, eps: float, norm: str, like: torch.Tensor, bounds: tuple[float, float]
) -> torch.Tensor:
    """Half of min(eps, best norm so far); the box's extent stands in for infinity."""
    lo, hi = bounds
    dim = like[0].numel()
    extent = get_norm(norm).covering_radius(hi - lo, dim)
    r = best.norm.clamp(max=eps) if math.isfinite(eps) else best.norm
    return torch.where(torch.isfinite(r), r, torch.full_like(r, extent)) / 2


def _fab(
    clf: Classifier,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: Threat,
    generator: torch.Generator,
    p: FABParams,
    n_targets: int | None,
) -> AttackOutput:
    """Shared body of ``fab`` (``n_targets`` None: all classes at once) and ``fab-t``."""
    norm = threat.norm
    n = int(x.shape[0])
    out = x.clone()
    claimed = torch.zeros(n, dtype=torch.bool, device=x.device)
    n_others = clf.num_classes - 1
    if n == 0 or n_others < 1:
        return AttackOutput(x_adv=out, claimed=claimed)
    clean = clf.logits(x)
    right = clean.argmax(dim=1) == y
    claimed = ~right  # the clean input itself is already misclassified: norm 0
    idx = right.nonzero().flatten()
    if idx.numel() == 0:
        return AttackOutput(x_adv=out, claimed=claimed)
    x0, y0 = x[idx], y[idx]
    ranked = ranked_wrong(clean[idx], y0, n_others)
    best = _Best(x0)
    # untargeted: one run linearizing every other class; targeted: one run per target
    groups = [ranked] if n_targets is None else [ranked[:, j : j + 1] for j in range(n_targets)]
    stop = bool(getattr(p, "stop_within_eps", False))
    for others in groups:
        act = (
            (~(best.norm <= threat.eps)).nonzero().flatten()
            if stop
            else torch.arange(x0.shape[0], device=x0.device)
        )
        if act.numel() == 0:
            break
        xs, ys, part = x0[act], y0[act], best.subset(act)
        for r in range(p.restarts):
            if r == 0:
                start = xs
            else:
                radius = _restart_radius(part, threat.eps, norm, xs, clf.bounds)
                start = _random_start(xs, radius, norm, clf.bounds, generator)
            _fab_run(clf, xs, ys, start, others[act], norm, p, part)
        best.merge(act, part)
    found = torch.isfinite(best.norm)
    out[idx] = best.x
    claimed[idx] = found
    return AttackOutput(x_adv=out, claimed=claimed)


@register("fab")
class FAB(Attack[FABParams]):
    """Untargeted FAB: steps towards the closest linearized boundary, biased to the original."""

    Params = FABParams

    def run(
        self,
        clf: Classifier,
        x: torch.Tensor,
        y: torch.Tensor,
        threat: Threat,
        generator: torch.Generator,
    ) -> AttackOutput:
        """Smallest adversarial found per sample (or ``x``); ``threat.eps`` sizes restarts."""
        self.check_norm(threat.norm)
        return _fab(clf, x, y, threat, generator, self.params, self._targets(clf))

    def _targets(self, clf: Classifier) -> int | None:
        """Runs per sample, one per target class; None: one run linearizing every class."""
        return None


@register("fab-t")
class FABT(FAB):
    """Targeted FAB over the most likely wrong classes, keeping each sample's smallest answer
    over all targets; otherwise FAB."""

    Params = FABTParams

    def _targets(self, clf: Classifier) -> int | None:
        assert isinstance(self.params, FABTParams)
        return min(self.params.targets, clf.num_classes - 1)
