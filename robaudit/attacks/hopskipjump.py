"""HopSkipJumpAttack (Chen, Jordan & Wainwright 2020), decision-based, L2 and Linf, untargeted.

Only top-1 labels are used. A start is found by uniform noise in the input bounds (at most
``init_tries`` draws, each one query) and pulled to the boundary by a binary search toward the
clean input. Each iteration ``t`` then

1. estimates the boundary's normal at the current boundary point by Monte-Carlo: ``num_evals
   = min(init_evals·√t, max_evals)`` random unit directions ``u`` (Gaussian for L2, uniform for
   Linf), each queried at ``x_b + δ·u`` (clipped to bounds); the mean of ``(φ − φ̄)·u`` with
   ``φ = ±1`` adversarial or not (the baseline ``φ̄`` cuts the variance; all-equal answers
   fall back to ``±mean(u)``), where ``δ = 0.1·range`` at ``t = 1`` and then ``√d·θ·dist``
   (L2) or ``d·θ·dist`` (Linf), with ``θ = γ/d^{3/2}`` (L2) or ``γ/d²`` (Linf);
2. steps along the estimate (normalized for L2, its sign for Linf) by ``ξ = dist/√t``, halving
   ``ξ`` until the point is adversarial (geometric step search);
3. binary-searches back toward the clean input (L2: blending; Linf: clipping into a shrinking
   box) down to threshold ``θ`` (L2) or ``min(θ·dist, θ)`` (Linf), and keeps the adversarial end.

The batch runs in lock-step with per-sample masks. ``queries`` caps each sample's model queries,
start and searches included: the last gradient estimate shrinks to leave room for its step and
binary search. The answer is the smallest adversarial point the attack queried (minimal-norm:
eps is not a cap), pushed 0.1% further out when that too is adversarial (one last query), so
it does not sit within float noise of the boundary; a sample never started comes back clean.
``distance_trace`` gives, per budget checkpoint, the best distance each sample had reached
within that many queries.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field

from robaudit.attacks.base import Attack, AttackOutput, AttackParams, register
from robaudit.attacks.common import is_l2, random_directions
from robaudit.attacks.projections import flat_norm, per_sample, steepest_direction
from robaudit.classifier import Classifier
from robaudit.threat import Threat

_TINY = 1e-12
_MIN_EVALS = 10  # a smaller normal estimate is mostly noise: the sample stops instead
_MAX_HALVINGS = 40  # geometric step search: ξ shrinks below any float step long before this
_CHUNK = 1 << 24  # at most this many input elements of Monte-Carlo points in memory at once
_PUSH = 1e-3  # the answer moves this share of its distance outward (see _Run.push)


class HopSkipJumpParams(AttackParams):
    queries: int = Field(
        1000,
        ge=1,
        le=100_000_000,
        description="maximum model queries per sample (start, searches and estimates included)",
    )
    max_iter: int = Field(
        200, ge=1, le=100_000, description="maximum iterations (the query budget usually binds)"
    )
    init_evals: int = Field(
        100, ge=1, le=1_000_000, description="Monte-Carlo queries of the first gradient estimate"
    )
    max_evals: int = Field(
        10_000, ge=1, le=10_000_000, description="cap on one gradient estimate's queries"
    )
    gamma: float = Field(
        1.0, gt=0, le=1e6, description="sets the binary search threshold θ and probe size δ"
    )
    init_tries: int = Field(
        100, ge=1, le=1_000_000, description="uniform-noise draws to find an adversarial start"
    )

    def cost(self) -> float:
        """Forward passes only, about a third of a forward+backward each."""
        return self.queries / 3


def _checkpoints(budget: int) -> list[int]:
    """Query budgets 10, 20, 50, 100, 200, 500, ... below ``budget``, then ``budget`` itself."""
    out: list[int] = []
    scale = 10
    while True:
        for m in (1, 2, 5):
            if m * scale >= budget:
                return [*out, budget]
            out.append(m * scale)
        scale *= 10


@register("hopskipjump")
class HopSkipJump(Attack[HopSkipJumpParams]):
    """Boundary walk: Monte-Carlo normal estimates, geometric steps, binary searches back."""

    Params = HopSkipJumpParams

    def run(
        self,
        clf: Classifier,
        x: torch.Tensor,
        y: torch.Tensor,
        threat: Threat,
        generator: torch.Generator,
    ) -> AttackOutput:
        """Smallest adversarial found per sample (or ``x``); ``threat.eps`` unused."""
        p = self.params
        self.check_norm(threat.norm)
        return _Run(clf, x, y, threat.norm, p, generator).attack()


class _Run:
    """One batch's attack state: per-sample queries, boundary points and the best so far."""

    def __init__(self, clf: Classifier, x: torch.Tensor, y: torch.Tensor, norm: str,
                 p: HopSkipJumpParams, generator: torch.Generator) -> None:
        self.clf, self.x, self.y, self.norm, self.p, self.gen = clf, x, y, norm, p, generator
        self.n, self.dev = int(x.shape[0]), x.device
        self.lo, self.hi = clf.bounds
        self.d = int(x[0].numel()) if self.n else 1
        # the paper's two geometries; any other norm fails here, never silently as one of them
        self.l2 = is_l2(norm)
        self.theta = p.gamma / self.d**1.5 if self.l2 else p.gamma / self.d**2
        self.used = torch.zeros(self.n, dtype=torch.long, device=self.dev)
        self.cur = x.clone()  # the current boundary point of each started sample
        self.best = x.clone()
        self.best_dist = torch.full((self.n,), math.inf, device=self.dev)
        self.marks = _checkpoints(p.queries)
        self.trace = torch.full((len(self.marks), self.n), math.inf, device=self.dev)
        # queries one binary search takes (blend range 1 down to θ; Linf ranges scale alike)
        self.search_cost = math.ceil(math.log2(1 / self.theta)) + 1

    # -- queries ---------------------------------------------------------------------
    def left(self, idx: torch.Tensor) -> torch.Tensor:
        """Queries a sample may still spend on the search (one is kept for :meth:`push`)."""
        return self.p.queries - 1 - self.used[idx]

    def adversarial(self, idx: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
        """Whether the model misclassifies each point of sample ``idx``; one query each."""
        self.used.index_add_(0, idx, torch.ones_like(idx))
        return self.clf.predict(pts) != self.y[idx]

    def distance(self, idx: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
        return flat_norm(pts - self.x[idx], self.norm)

    def record(self, idx: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
        """Keep ``pts`` (all queried adversarial) where closer than the best; returns distances."""
        dist = self.distance(idx, pts)
        closer = dist < self.best_dist[idx]
        win = idx[closer]
        self.best[win], self.best_dist[win] = pts[closer], dist[closer]
        for k, mark in enumerate(self.marks):
            within = self.used <= mark
            self.trace[k] = torch.where(
                within, torch.minimum(self.trace[k], self.best_dist), self.trace[k]
            )
        return dist

    # -- the three stages -------------------------------------------------------------
    def start(self) -> torch.Tensor:
        """Uniform noise until misclassified (``init_tries`` draws at most); the samples started."""
        out = self.x.clone()
        found = torch.zeros(self.n, dtype=torch.bool, device=self.dev)
        pending = torch.arange(self.n, device=self.dev)
        for _ in range(self.p.init_tries):
            pending = pending[self.left(pending) > 0]
            if pending.numel() == 0:
                break
            shape = (int(pending.numel()), *self.x.shape[1:])
            u = torch.rand(shape, generator=self.gen, dtype=torch.float32)
            noise = (self.lo + (self.hi - self.lo) * u).to(device=self.dev, dtype=self.x.dtype)
            adv = self.adversarial(pending, noise)
            out[pending[adv]], found[pending[adv]] = noise[adv], True
            pending = pending[~adv]
        self.cur = out
        return found.nonzero().flatten()

    def binary_search(self, idx: torch.Tensor, far: torch.Tensor) -> torch.Tensor:
        """From adversarial ``far`` toward the clean input; the closest adversarial end found."""
        x0 = self.x[idx]
        m = int(idx.numel())
        if self.l2:
            highs = torch.ones(m, device=self.dev)
            thr = torch.full((m,), self.theta, device=self.dev)
        else:
            highs = self.distance(idx, far)
            thr = torch.clamp(highs * self.theta, max=self.theta)
        lows = torch.zeros(m, device=self.dev)
        out = far.clone()
        while True:
            go = ((highs - lows > thr) & (self.left(idx) > 0)).nonzero().flatten()
            if go.numel() == 0:
                return out
            mids = (highs[go] + lows[go]) / 2
            a = per_sample(mids, x0)
            if self.l2:
                pts = (1 - a) * x0[go] + a * far[go]
            else:
                pts = torch.minimum(torch.maximum(far[go], x0[go] - a), x0[go] + a)
            adv = self.adversarial(idx[go], pts)
            highs[go[adv]], out[go[adv]] = mids[adv], pts[adv]
            lows[go[~adv]] = mids[~adv]

    def normal(self, idx: torch.Tensor, delta: torch.Tensor, evals: torch.Tensor) -> torch.Tensor:
        """Monte-Carlo estimate of the boundary normal at ``cur[idx]`` (toward adversarial)."""
        base = self.cur[idx]
        m, k = int(idx.numel()), int(evals.max())
        sum_fu = torch.zeros_like(base)
        sum_u = torch.zeros_like(base)
        sum_f = torch.zeros(m, device=self.dev)
        per = max(1, _CHUNK // (self.d * k))  # samples per chunk
        per_k = max(1, min(k, _CHUNK // self.d))  # evaluations per chunk
        for s0 in range(0, m, per):
            s = slice(s0, min(m, s0 + per))
            for e0 in range(0, k, per_k):
                e = min(k, e0 + per_k) - e0
                shape = (s.stop - s.start, e, *base.shape[1:])
                u = random_directions(shape, self.norm, self.gen)
                u = u.to(device=self.dev, dtype=base.dtype)
                u = u / (u.flatten(2).norm(dim=2) + _TINY).view(*shape[:2], *([1] * (base.dim() - 1)))
                take = torch.arange(e0, e0 + e, device=self.dev)[None, :] < evals[s, None]
                rows, cols = take.nonzero(as_tuple=True)
                if rows.numel() == 0:
                    continue
                dl = per_sample(delta[s][rows], base)
                pts = (base[s][rows] + dl * u[rows, cols]).clamp(self.lo, self.hi)
                u_eff = (pts - base[s][rows]) / dl  # the directions actually probed
                f = self.adversarial(idx[s][rows], pts).to(base.dtype) * 2 - 1
                rows_all = rows + s.start
                sum_fu.index_add_(0, rows_all, per_sample(f, u_eff) * u_eff)
                sum_u.index_add_(0, rows_all, u_eff)
                sum_f.index_add_(0, rows_all, f)
        cnt = evals.to(base.dtype)
        fbar = sum_f / cnt
        mean_u = sum_u / per_sample(cnt, base)
        grad = sum_fu / per_sample(cnt, base) - per_sample(fbar, base) * mean_u
        same = fbar.abs() >= 1  # every probe answered alike: no baseline to subtract
        grad = torch.where(per_sample(same, base), per_sample(fbar.sign(), base) * mean_u, grad)
        return steepest_direction(grad, self.norm)  # L2: normalized; Linf: its sign

    def step(
        self, idx: torch.Tensor, update: torch.Tensor, size: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Geometric step search: halve the step until adversarial; which samples moved."""
        moved = torch.zeros(int(idx.numel()), dtype=torch.bool, device=self.dev)
        far = self.cur[idx].clone()
        for _ in range(_MAX_HALVINGS):
            go = (~moved & (self.left(idx) > 0)).nonzero().flatten()
            if go.numel() == 0:
                break
            pts = (self.cur[idx[go]] + per_sample(size[go], update) * update[go]).clamp(
                self.lo, self.hi
            )
            adv = self.adversarial(idx[go], pts)
            far[go[adv]], moved[go[adv]] = pts[adv], True
            size[go[~adv]] /= 2
        return far, moved

    def push(self) -> None:
        """Move each answer ``_PUSH`` of its distance further out, if still adversarial.

        A binary search ends within float noise of the boundary, where a forward pass in
        another batch (the engine's verification) may round the other way; the pushed point
        has a margin far above that noise, for one query per sample.
        """
        idx = torch.isfinite(self.best_dist).nonzero().flatten()
        if idx.numel() == 0:
            return
        x0 = self.x[idx]
        pts = (x0 + (1 + _PUSH) * (self.best[idx] - x0)).clamp(self.lo, self.hi)
        adv = self.adversarial(idx, pts)
        self.best[idx[adv]] = pts[adv]

    # -- the whole attack -------------------------------------------------------------
    def attack(self) -> AttackOutput:
        idx = self.start()
        dist = torch.zeros(self.n, device=self.dev)
        if idx.numel():
            self.cur[idx] = self.binary_search(idx, self.cur[idx])
            dist[idx] = self.record(idx, self.cur[idx])
        for t in range(1, self.p.max_iter + 1):
            if idx.numel() == 0:
                break
            room = self.left(idx) - self.search_cost - 1
            want = min(int(self.p.init_evals * math.sqrt(t)), self.p.max_evals)
            evals = room.clamp(max=want)
            keep = evals >= min(_MIN_EVALS, want)
            idx, evals = idx[keep], evals[keep]
            if idx.numel() == 0:
                break
            if t == 1:
                delta = torch.full((int(idx.numel()),), 0.1 * (self.hi - self.lo), device=self.dev)
            else:
                scale = math.sqrt(self.d) if self.l2 else float(self.d)
                delta = scale * self.theta * dist[idx]
            update = self.normal(idx, delta, evals)
            far, moved = self.step(idx, update, dist[idx] / math.sqrt(t))
            idx, far = idx[moved], far[moved]
            if idx.numel() == 0:
                break
            self.cur[idx] = self.binary_search(idx, far)
            dist[idx] = self.record(idx, self.cur[idx])
        self.push()
        found = torch.isfinite(self.best_dist)
        return AttackOutput(
            x_adv=self.best,
            claimed=found.cpu(),
            queries=self.used.cpu(),
            distance_trace=[(m, self.trace[k].cpu()) for k, m in enumerate(self.marks)],
        )
