"""A gradient-free search inside the feature constraints, for score access (tabular models).

Gradient-boosted trees, the usual fraud model, have no gradients at all; an attacker probing a
scoring service has only its scores. This is a random search in the spirit of Square
(Andriushchenko et al. 2020) and of MOEVA's constrained genetic search (Simonetto et al. 2022,
"A Unified Framework for Adversarial Attack and Defense in Constrained Feature Space"; used by
TabularBench, Simonetto et al. 2024): each iteration changes a random share of the *mutable*
features of the current point, repairs the proposal onto the constraints, queries the model
once and keeps the proposal when the margin ``max_{k≠y} z_k − z_y`` rose. A sample stops being
queried as soon as the model misclassifies it.

Proposals respect the feature types (:mod:`robaudit.tabular.compiled`): continuous features
move to a vertex of the Linf ball (``x ± eps``, as Square) or by a Gaussian step of ``step ·
eps`` in L2; integers by at least one whole unit in the raw data; binaries flip and one-hot
groups switch to another category, but only when one such change fits the budget (a flip costs
1 scaled unit, a category switch 1 in Linf and √2 in L2). The share of features changed starts
at ``p_init`` and halves on Square's schedule. Every proposal is clipped to the ball and the
bounds and repaired onto the constraints (:func:`robaudit.attacks.feasible.restrict`) before it
is queried, so the points the model sees are real records. Without active constraints (a
feature vector with no schema, any other input) every coordinate is a mutable continuous one.

Each sample's query count, the starting point included, is ``AttackOutput.queries``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch
from pydantic import Field

from robaudit.attacks.base import Attack, AttackOutput, AttackParams, register
from robaudit.attacks.common import is_l2, mean_trace, thin
from robaudit.attacks.feasible import active, restrict
from robaudit.attacks.losses import margin
from robaudit.attacks.projections import clip_to_ball
from robaudit.attacks.square import square_fraction
from robaudit.classifier import Classifier
from robaudit.threat import Threat

_SQRT2 = math.sqrt(2.0)


class ConstrainedSearchParams(AttackParams):
    queries: int = Field(
        1000, ge=1, le=1_000_000, description="max model queries per sample, the start included"
    )
    p_init: float = Field(
        0.3, gt=0, le=1, description="share of the mutable features the first proposals change"
    )
    step: float = Field(
        0.5, gt=0, le=10, description="l2: length of a continuous move, as a share of eps"
    )

    def cost(self) -> float:
        """Forward passes only: roughly a third of a forward+backward each."""
        return self.queries / 3.0


@dataclass(frozen=True)
class _Kinds:
    """Which flattened coordinates are of which kind, and what one raw unit is in them."""

    continuous: torch.Tensor  # F bool, mutable
    integer: torch.Tensor  # F bool, mutable
    binary: torch.Tensor  # F bool, mutable and a flip fits the budget
    groups: tuple[torch.Tensor, ...]  # column indices of mutable groups whose switch fits
    unit: torch.Tensor  # F: one raw unit in working units (1 / span)

    @cached_property
    def movable(self) -> torch.Tensor:
        """F bool: the features a move may change (built once, not per proposal)."""
        out = self.continuous | self.integer | self.binary
        for idx in self.groups:
            out = out.clone()
            out[idx] = True
        return out

    @cached_property
    def counts(self) -> tuple[int, bool]:
        """(movable features, any binary one): read on the host once, not every step."""
        return int(self.movable.sum()), bool(self.binary.any())


def _kinds(f: int, norm: str, eps: float, device: torch.device) -> _Kinds:
    """The active layout's kinds (all continuous without one), discrete moves that fit ``eps``."""
    feasible = active()
    layout = getattr(feasible, "layout", None) if feasible is not None else None
    if layout is None:
        every = torch.ones(f, dtype=torch.bool, device=device)
        none = torch.zeros_like(every)
        return _Kinds(every, none, none, (), torch.ones(f, device=device))
    lay = layout(device)
    mutable = lay.mutable
    integer = torch.zeros(f, dtype=torch.bool, device=device)
    integer[lay.integer] = True
    binary = torch.zeros_like(integer)
    binary[lay.binary] = True
    flip_fits = eps >= 1.0 - 1e-9  # a binary flip and a Linf category switch cost 1
    switch_fits = eps >= (_SQRT2 if is_l2(norm) else 1.0) - 1e-9
    groups = tuple(idx for _, idx in lay.groups if switch_fits and bool(mutable[idx].all()))
    return _Kinds(
        continuous=mutable & lay.continuous,
        integer=mutable & integer,
        binary=mutable & binary & flip_fits,
        groups=groups,
        unit=(1.0 / lay.span).to(torch.float32),
    )


@register("constrained-search")
class ConstrainedSearch(Attack[ConstrainedSearchParams]):
    """Score-based random search over the mutable features, repaired onto the constraints."""

    Params = ConstrainedSearchParams

    def run(
        self,
        clf: Classifier,
        x: torch.Tensor,
        y: torch.Tensor,
        threat: Threat,
        generator: torch.Generator,
    ) -> AttackOutput:
        p = self.params
        self.check_norm(threat.norm)
        n, shape = int(x.shape[0]), x.shape
        flat = x.reshape(n, -1)
        eps = threat.eps if math.isfinite(threat.eps) else float(flat.shape[1])
        kinds = _kinds(int(flat.shape[1]), threat.norm, eps, x.device)
        search = _Search(clf, flat, y, threat.norm, eps, kinds, generator, shape)
        queries = torch.zeros(n, dtype=torch.int64)
        trace: list[torch.Tensor] = []  # on the device: one host read at the end
        with torch.inference_mode():
            search.start(queries)
            budget = 1 if threat.eps <= 0 else p.queries
            for i in range(1, budget):
                alive = search.alive()
                if alive.numel() == 0:
                    break
                share = square_fraction(i, budget, p.p_init)
                search.iterate(alive, share, p.step, queries)
                trace.append(search.loss.mean())
        return AttackOutput(
            x_adv=search.cur.reshape(shape).clone(),
            loss_trace=thin(mean_trace(trace) or []) or None,
            claimed=search.won.clone(),
            queries=queries,
        )


class _Search:
    """Per sample: the current (best) point, its margin, whether the model is fooled there."""

    def __init__(self, clf: Classifier, x: torch.Tensor, y: torch.Tensor, norm: str, eps: float,
                 kinds: _Kinds, generator: torch.Generator, shape: torch.Size) -> None:  # fmt: skip
        self.clf, self.x, self.y, self.norm, self.eps = clf, x, y, norm, eps
        self.kinds, self.g, self.shape = kinds, generator, shape
        self.cur = x.clone()
        self.loss = torch.full((x.shape[0],), float("-inf"), device=x.device, dtype=x.dtype)
        self.won = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)

    def alive(self) -> torch.Tensor:
        return (~self.won).nonzero().flatten()

    def start(self, queries: torch.Tensor) -> None:
        """One query on a random feasible point at the full budget (the search's start)."""
        idx = torch.arange(self.x.shape[0], device=self.x.device)
        self._judge(idx, self._propose(idx, self.x, 1.0, 1.0), queries)

    def iterate(self, idx: torch.Tensor, share: float, step: float, queries: torch.Tensor) -> None:
        """One proposal and one query per searching sample; keep it where the margin rose."""
        self._judge(idx, self._propose(idx, self.cur[idx], share, step), queries)

    def _judge(self, idx: torch.Tensor, cand: torch.Tensor, queries: torch.Tensor) -> None:
        """Query ``cand``; keep it where it fools the model or beats the kept margin (the
        start always: the kept margin begins at -inf)."""
        logits = self.clf.logits(cand.reshape(-1, *self.shape[1:]))
        queries[idx.cpu()] += 1
        yy = self.y[idx]
        loss = margin(logits, yy)
        won = logits.argmax(dim=1) != yy
        better = won | (loss > self.loss[idx])
        sel = idx[better]
        self.cur[sel] = cand[better]
        self.loss[sel] = loss[better]
        self.won[sel] = won[better]

    def _propose(self, idx: torch.Tensor, base: torch.Tensor, share: float,
                 step: float) -> torch.Tensor:  # fmt: skip
        """Change about ``share`` of the movable features of ``base`` (at least one), by
        kind; then clip to the ball and the bounds and repair onto the constraints."""
        k, x = self.kinds, self.x[idx]
        m, f = base.shape
        draw = torch.rand(m, f, generator=self.g).to(base.device)
        draw[:, ~k.movable] = 2.0
        movable, has_binary = k.counts
        count = max(1, round(share * movable))
        cut = draw.kthvalue(min(count, f), dim=1, keepdim=True).values
        chosen = (draw <= cut) & (draw < 2.0)
        cand = base.clone()
        self._continuous(cand, x, chosen & k.continuous, step)
        self._integers(cand, chosen & k.integer)
        if has_binary:
            flip = chosen & k.binary
            cand = torch.where(flip, 1.0 - cand, cand)
        for cols in k.groups:
            self._switch(cand, cols, chosen[:, cols].any(dim=1))
        lo, hi = self.clf.bounds
        cand = clip_to_ball(cand, x, self.norm, self.eps, (lo, hi))
        return restrict(cand, x, self.norm, self.eps)

    def _continuous(self, cand: torch.Tensor, x: torch.Tensor, mask: torch.Tensor,
                    step: float) -> None:  # fmt: skip
        """Linf: a vertex of the ball (x ± eps); L2: a Gaussian move of length step·eps."""
        if not bool(mask.any()):
            return
        if is_l2(self.norm):
            noise = torch.randn(cand.shape, generator=self.g).to(cand) * mask
            length = noise.norm(dim=1, keepdim=True).clamp_min(1e-12)
            cand += noise / length * (step * self.eps)
        else:
            sign = torch.randint(0, 2, cand.shape, generator=self.g).to(cand) * 2 - 1
            cand.copy_(torch.where(mask, x + sign * self.eps, cand))

    def _integers(self, cand: torch.Tensor, mask: torch.Tensor) -> None:
        """At least one whole raw unit up or down (the repair rounds what is left)."""
        if not bool(mask.any()):
            return
        units = self.kinds.unit.to(cand)
        most = torch.clamp(self.eps / units, min=1.0).floor()  # whole units the budget allows
        size = (torch.rand(cand.shape, generator=self.g).to(cand) * most).floor() + 1
        sign = torch.randint(0, 2, cand.shape, generator=self.g).to(cand) * 2 - 1
        cand += torch.where(mask, sign * size * units, torch.zeros_like(cand))

    def _switch(self, cand: torch.Tensor, cols: torch.Tensor, rows: torch.Tensor) -> None:
        """Rows ``rows`` of the one-hot group ``cols`` move to another category at random."""
        if not bool(rows.any()):
            return
        width = int(cols.numel())
        now = cand[:, cols].argmax(dim=1)
        shift = torch.randint(1, max(2, width), now.shape, generator=self.g).to(now.device)
        new = torch.nn.functional.one_hot((now + shift) % width, width).to(cand)
        cand[:, cols] = torch.where(rows.unsqueeze(1), new, cand[:, cols])
