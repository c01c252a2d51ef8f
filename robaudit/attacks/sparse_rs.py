"""Sparse-RS for L0 (Croce, Andriushchenko, Singh, Flammarion & Hein, AAAI 2022, "Sparse-RS: a
versatile framework for query-efficient sparse black-box adversarial attacks"), score-based.

A random search over *which* units change (pixels with all their channels, or single numbers at
``l0-feature``). The start changes ``k = eps`` random units of each input to random corners of
the box (every value at the lower or upper bound). Each iteration swaps ``m`` of the changed
units back to the clean input and changes ``m`` unchanged ones to fresh random corners, so the
count stays ``k``; the candidate is kept only if the margin ``max_{j≠y} z_j - z_y`` rose (or
the model is fooled), one query per sample per iteration. ``m = max(1, floor(α·k))``, with α
the paper's L0 schedule: ``α_init`` divided by 2, 4, 5, 6, 8, 10, 12, 15 and 20 after
iterations 0, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 of a 10 000-query run (rescaled to
the actual budget). ``α_init = 0.3`` and 10 000 queries are the paper's untargeted settings.

A sample stops being queried once the model misclassifies it; each sample's queries, the start
included, are returned in ``AttackOutput.queries``. When the budget covers every unit there is
nothing to swap in, and an iteration redraws ``m`` of the changed units instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field

from robaudit.attacks.base import Attack, AttackOutput, AttackParams, register
from robaudit.attacks.losses import get_loss
from robaudit.attacks.sparse import l0_norm, unit_budget
from robaudit.classifier import Classifier
from robaudit.norms.l0 import L0
from robaudit.threat import Threat

# (iteration of a 10 000-query run after which, divisor of alpha_init from then on)
SCHEDULE = ((0, 2), (50, 4), (200, 5), (500, 6), (1000, 8), (2000, 10), (4000, 12),
            (6000, 15), (8000, 20))  # fmt: skip
SCHEDULE_LENGTH = 10_000


class SparseRSParams(AttackParams):
    queries: int = Field(
        10_000, ge=1, le=1_000_000, description="max model queries per sample, restarts included"
    )
    alpha_init: float = Field(
        0.3, gt=0, le=1, description="share of the changed units resampled at first (α_init)"
    )
    loss: Literal["margin", "ce"] = Field(
        "margin", description="score to raise: margin (best other minus true logit) or ce"
    )
    restarts: int = Field(
        1, ge=1, le=1000, description="fresh starts on unfooled samples; they share the budget"
    )

    def cost(self) -> float:
        return self.queries / 3.0  # forward passes only


def resample_share(i: int, budget: int, alpha_init: float) -> float:
    """α at iteration ``i`` of a ``budget``-query run (integer rescaling onto 10 000)."""
    scaled = i * SCHEDULE_LENGTH // max(budget, 1)
    divisor = 1
    for after, d in SCHEDULE:
        if scaled > after:
            divisor = d
    return alpha_init / divisor


@dataclass
class _Search:
    """The samples one restart still searches: batch rows, clean and current units (N x U x
    c), labels, current loss, and which units are changed (``on``) or not (``off``)."""

    rows: torch.Tensor
    clean: torch.Tensor
    cur: torch.Tensor
    y: torch.Tensor
    loss: torch.Tensor
    on: torch.Tensor
    off: torch.Tensor

    def keep(self, k: torch.Tensor) -> _Search:
        return _Search(self.rows[k], self.clean[k], self.cur[k], self.y[k], self.loss[k],
                       self.on[k], self.off[k])  # fmt: skip


@register("sparse-rs")
class SparseRS(Attack[SparseRSParams]):
    """Score-based random search over which pixels to change; blind to gradient masking."""

    Params = SparseRSParams

    def run(
        self,
        clf: Classifier,
        x: torch.Tensor,
        y: torch.Tensor,
        threat: Threat,
        generator: torch.Generator,
    ) -> AttackOutput:
        p = self.params
        norm = l0_norm(self, threat)
        n = int(x.shape[0])
        queries = torch.zeros(n, dtype=torch.int64, device=x.device)
        best = x.clone()
        best_loss = torch.full((n,), float("-inf"), device=x.device)
        won = torch.zeros(n, dtype=torch.bool, device=x.device)
        units, k = unit_budget(norm, threat.eps, x)
        restarts = 1 if k == 0 else p.restarts  # a ball of one point: one query tells all
        with torch.inference_mode():
            for r in range(restarts):
                budget = p.queries // restarts + (1 if r < p.queries % restarts else 0)
                idx = (~won).nonzero().flatten()
                if idx.numel() == 0 or budget == 0:
                    continue
                run = _Restart(self.params, clf, norm, x, y, k, units, generator)
                run.search(idx, min(budget, 1) if k == 0 else budget, best, best_loss, won, queries)
        return AttackOutput(x_adv=best, claimed=won.clone(), queries=queries.cpu())


class _Restart:
    """One restart: a start of ``k`` random corners per sample, then the swap search."""

    def __init__(self, p: SparseRSParams, clf: Classifier, norm: L0, x: torch.Tensor,
                 y: torch.Tensor, k: int, units: int, generator: torch.Generator) -> None:  # fmt: skip
        self.p, self.clf, self.norm, self.x, self.y = p, clf, norm, x, y
        self.k, self.units, self.gen = k, units, generator
        self.loss_fn = get_loss(p.loss)

    def corners(self, shape: tuple[int, ...]) -> torch.Tensor:
        """Random corners of the box: every value at the lower or the upper bound."""
        lo, hi = self.clf.bounds
        up = torch.randint(0, 2, shape, generator=self.gen).to(self.x.device)
        return torch.where(up.bool(), hi, lo).to(self.x.dtype)

    def score(self, s: _Search, cand: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One query per sample: (loss to raise, fooled)."""
        logits = self.clf.logits(self.norm.ungroup(cand, self.x[s.rows]))
        return self.loss_fn(logits, s.y), logits.argmax(dim=1) != s.y

    def start(self, idx: torch.Tensor) -> _Search:
        clean = self.norm.group(self.x[idx])
        n, _, c = clean.shape
        order = torch.rand(n, self.units, generator=self.gen).argsort(dim=1).to(self.x.device)
        on, off = order[:, : self.k], order[:, self.k :]
        cur = clean.clone()
        cur.scatter_(1, on[..., None].expand(-1, -1, c), self.corners((n, self.k, c)))
        empty = torch.empty(0, device=self.x.device)
        return _Search(idx, clean, cur, self.y[idx], empty, on, off)

    def propose(self, s: _Search, i: int, budget: int) -> tuple[torch.Tensor, torch.Tensor,
                                                                 torch.Tensor]:  # fmt: skip
        """A candidate, and the positions (in ``on`` and ``off``) of the swapped units."""
        n, _, c = s.cur.shape
        free = self.units - self.k
        m = max(int(resample_share(i, budget, self.p.alpha_init) * self.k), 1)
        m = min(m, self.k, free) if free else min(m, self.k)
        pos_on = torch.randperm(self.k, generator=self.gen)[:m].to(self.x.device)
        pos_off = torch.randperm(free, generator=self.gen)[:m].to(self.x.device)
        cand = s.cur.clone()
        leave = s.on[:, pos_on][..., None].expand(-1, -1, c)
        if free:  # swap: m changed units back to clean, m others to fresh corners
            cand.scatter_(1, leave, s.clean.gather(1, leave))
            enter = s.off[:, pos_off][..., None].expand(-1, -1, c)
        else:  # every unit is changed: redraw m of them
            enter = leave
        cand.scatter_(1, enter, self.corners((n, m, c)))
        return cand, pos_on, pos_off

    def search(self, idx: torch.Tensor, budget: int, best: torch.Tensor, best_loss: torch.Tensor,
               won: torch.Tensor, queries: torch.Tensor) -> None:  # fmt: skip
        """The restart on samples ``idx``; writes each sample's best point, loss and queries."""
        s = self.start(idx)
        s.loss, fooled = self.score(s, s.cur)
        queries[s.rows] += 1
        for i in range(1, budget + 1):
            if bool(fooled.any()) or i == budget:  # who leaves: the fooled, or all at the end
                gone = fooled if i < budget else torch.ones_like(fooled)
                rows = s.rows[gone]
                upd = fooled[gone] | (s.loss[gone] > best_loss[rows])
                best[rows[upd]] = self.norm.ungroup(s.cur[gone][upd], self.x[rows[upd]])
                best_loss[rows[upd]] = s.loss[gone][upd]
                won[rows] |= fooled[gone]
                s, fooled = s.keep(~gone), fooled[~gone]
            if i == budget or s.rows.numel() == 0:
                break
            cand, pos_on, pos_off = self.propose(s, i, budget)
            loss, fooled = self.score(s, cand)
            queries[s.rows] += 1
            better = (loss > s.loss) | fooled
            s.cur = torch.where(better[:, None, None], cand, s.cur)
            s.loss = torch.where(better, loss, s.loss)
            if self.units > self.k:  # the swapped units trade places in the accepted rows
                on, off = s.on.clone(), s.off.clone()
                on[:, pos_on], off[:, pos_off] = s.off[:, pos_off], s.on[:, pos_on]
                s.on = torch.where(better[:, None], on, s.on)
                s.off = torch.where(better[:, None], off, s.off)
