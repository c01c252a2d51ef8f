"""Square Attack (Andriushchenko, Croce, Flammarion & Hein 2020, "Square Attack: a
query-efficient black-box adversarial attack via random search"), Linf, L2 and L1 (the L1
version of Croce & Hein 2021, "Mind the box", as in AutoAttack's L1 protocol), score-based.

A random search that needs only the model's scores. Each iteration changes the current point
inside one random h×h square (all channels) and keeps the change only if the loss improved, so
every iteration costs exactly one query per sample. The square's side follows a schedule: it
covers a fraction ``p`` of the image, with ``p`` halved after iterations 10, 50, 200, 500, 1000,
2000, 4000, 6000 and 8000 of a 10 000-query run (rescaled to the actual budget).

* Linf: the start is vertical stripes of width one, each column (per channel) at ±eps; an
  update sets the whole square of each channel to ``x ± eps`` (a vertex of the ball), the
  sign drawn per channel. A square that would change nothing gets the opposite signs.
* L2: the start is a grid of small tiles, each holding the bump-shaped pattern below with a
  random sign per channel, scaled to norm eps. An update picks two squares W1 and W2: it adds
  a unit bump pattern to W1's old direction, zeroes W2, and gives W1 all the mass taken from
  W1 ∪ W2 plus a share of the budget unused (lost to the box), so the norm stays at eps.
* L1: the L2 scheme with L1 masses: a start of tiles of unit-L1 patterns (sharper bumps,
  weights 1/k⁴) projected onto the L1 ball ∩ box, and updates that move the L1 mass of W1 ∪
  W2, plus a share of the budget unused, into W1; squares have an odd side of at least 3.

``p_init`` defaults to 0.8, AutoAttack's setting, rather than the paper's ImageNet values (0.05
Linf, 0.1 L2): the schedule shrinks squares within a few percent of the budget anyway, and on
the 8×8 digits sample models 0.8 leaves 5-20 points fewer samples standing at L2 eps 1 (0.10
vs 0.15 plain, 0.27 vs 0.49 adversarially trained) and about one point fewer at Linf.

Untargeted by default it maximizes the margin ``max_{k≠y} z_k − z_y`` (the paper minimizes
its negative); a sample stops being queried once the model misclassifies it. Each sample's
query count, the initial point included, is returned in ``AttackOutput.queries``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field

from robaudit.attacks.base import Attack, AttackOutput, AttackParams, register
from robaudit.attacks.common import TRACE_POINTS, most_likely_wrong, thin
from robaudit.attacks.losses import get_loss, get_targeted_loss
from robaudit.attacks.square_proposals import (  # noqa: F401  (re-exported: tests, callers)
    BLOCK,
    Proposer,
    bump,
    l1_pattern,
    l2_pattern,
    propose,
    propose_l2,
    propose_linf,
    proposer,
)
from robaudit.classifier import Classifier
from robaudit.norms import get as get_norm
from robaudit.threat import Threat

# iterations (of a 10 000-query run) after which the square's area fraction p is halved
HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
SCHEDULE_LENGTH = 10_000


class SquareParams(AttackParams):
    queries: int = Field(
        1000, ge=1, le=1_000_000, description="max model queries per sample, restarts included"
    )
    p_init: float = Field(
        0.8, gt=0, le=1, description="share of the image the first square covers (p at step 0)"
    )
    loss: Literal["margin", "ce"] = Field(
        "margin", description="score to raise: margin (best other minus true logit) or ce"
    )
    targeted: bool = Field(
        False, description="aim at the most likely wrong class at the starting point"
    )
    restarts: int = Field(
        1, ge=1, le=1000, description="fresh starts on unbroken samples; they share the budget"
    )

    def cost(self) -> float:
        """Forward passes only: roughly a third of a forward+backward each."""
        return self.queries / 3.0


def square_fraction(i: int, budget: int, p_init: float) -> float:
    """The share ``p`` of the image a square covers at iteration ``i`` of a ``budget`` run.

    Integer arithmetic rescales ``i`` onto the paper's 10 000-iteration schedule, so the same
    budget always gives the same squares.
    """
    scaled = i * SCHEDULE_LENGTH // max(budget, 1)
    return p_init / 2 ** sum(scaled > t for t in HALVINGS)


def square_side(p: float, height: int, width: int) -> int:
    """Side ``h`` of a square covering about ``p`` of an ``height``×``width`` image (≥ 1)."""
    return max(1, min(round(math.sqrt(p * height * width)), height, width))


def _effective_eps(norm: str, eps: float, x: torch.Tensor, bounds: tuple[float, float]) -> float:
    """An infinite eps capped at the box's span (Linf) or its diagonal (L2): nothing is lost."""
    if math.isfinite(eps):
        return eps
    span = float(bounds[1] - bounds[0])
    return get_norm(norm).covering_radius(span, int(x[0].numel()) if x.shape[0] else 1)


def _segments(budget: int, p_init: float, height: int, width: int) -> list[tuple[int, int]]:
    """(side, iterations) runs of iterations 1 … budget − 1 that share a square side."""
    out: list[tuple[int, int]] = []
    for i in range(1, budget):
        h = square_side(square_fraction(i, budget, p_init), height, width)
        if out and out[-1][0] == h:
            out[-1] = (h, out[-1][1] + 1)
        else:
            out.append((h, 1))
    return out


# -- the search ----------------------------------------------------------------------------


@dataclass
class _Best:
    """Per sample over all restarts: best point, its loss, its prediction, whether it won."""

    x: torch.Tensor
    loss: torch.Tensor
    pred: torch.Tensor
    won: torch.Tensor  # untargeted: misclassified; targeted: classified as the target

    def update(self, idx: torch.Tensor, x: torch.Tensor, loss: torch.Tensor,
               pred: torch.Tensor, won: torch.Tensor) -> None:  # fmt: skip
        """Keep the new point where it wins or beats the stored loss."""
        better = won | (loss > self.loss[idx])
        sel = idx[better]
        self.x[sel] = x[better]
        self.loss[sel] = loss[better]
        self.pred[sel] = pred[better]
        self.won[sel] = self.won[sel] | won[better]


_Score = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, torch.Tensor, torch.Tensor]
]  # fmt: skip


def _scorer(loss: str) -> _Score:
    """Logits to (loss to raise, prediction, won): untargeted, or towards ``t`` when given."""
    untargeted, targeted = get_loss(loss), get_targeted_loss(loss)

    def score(lg: torch.Tensor, yy: torch.Tensor, tt: torch.Tensor | None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
        pred = lg.argmax(dim=1)
        if tt is None:
            return untargeted(lg, yy), pred, pred != yy
        return targeted(lg, yy, tt), pred, pred == tt

    return score


@register("square")
class Square(Attack[SquareParams]):
    """Score-based random search over squares; immune to gradient masking by construction."""

    Params = SquareParams

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
        n = int(x.shape[0])
        dev = x.device
        queries = torch.zeros(n, dtype=torch.int64, device=dev)
        best = _Best(
            x=x.clone(),
            loss=torch.full((n,), float("-inf"), device=dev, dtype=x.dtype),
            pred=torch.full((n,), -1, dtype=torch.int64, device=dev),
            won=torch.zeros(n, dtype=torch.bool, device=dev),
        )
        trace: list[torch.Tensor] = []
        targets: torch.Tensor | None = None
        standing = torch.arange(n, device=dev)
        flat = threat.eps <= 0  # a ball of one point: one query tells all there is to know
        for r in range(1 if flat else p.restarts):
            budget = p.queries // p.restarts + (1 if r < p.queries % p.restarts else 0)
            budget = min(budget, 1) if flat else budget
            if standing.numel() == 0 or budget == 0:
                continue
            # no autograd bookkeeping at all (scores only): each of the loop's small ops is
            # cheaper; the tensors made inside never leave it, ``best`` is written in place
            with torch.inference_mode():
                targets = self._search(clf, x, y, threat, generator, standing, budget,
                                       targets, best, queries, trace)  # fmt: skip
            targets = targets.clone() if targets is not None else None
            standing = standing[~best.won[standing]]
        claimed = (best.pred != y) & (best.pred >= 0)
        return AttackOutput(
            x_adv=best.x,
            loss_trace=thin(torch.stack(trace).tolist()) if trace else None,
            claimed=claimed,
            queries=queries.cpu(),
        )

    def _search(
        self,
        clf: Classifier,
        x: torch.Tensor,
        y: torch.Tensor,
        threat: Threat,
        generator: torch.Generator,
        idx: torch.Tensor,
        budget: int,
        targets: torch.Tensor | None,
        best: _Best,
        queries: torch.Tensor,
        trace: list[torch.Tensor],
    ) -> torch.Tensor | None:
        """One restart with ``budget`` queries on the samples ``idx``; updates ``best``.

        Returns the targets (chosen from the first starting point when targeted).
        """
        p = self.params
        norm, bounds = threat.norm, clf.bounds
        eps = _effective_eps(norm, threat.eps, x, bounds)
        prop = proposer(norm, x[idx], eps, bounds)
        start = prop.start(generator)
        logits = clf.logits(start)
        queries[idx] += 1
        if p.targeted and targets is None:  # no extra query: the start's best wrong class
            full = torch.zeros_like(y)
            full[idx] = most_likely_wrong(logits, y[idx])
            targets = full
        t0 = targets[idx] if targets is not None else None
        score = _scorer(p.loss)
        loss, pred, won = score(logits, y[idx], t0)
        best.update(idx, start, loss, pred, won)
        trace.append(best.loss.mean())
        run = _Restart(clf, prop, score, best, queries, trace, budget)
        run.begin(idx, y[idx], t0, start, loss, pred, won)
        height, width = int(x.shape[-2]), int(x.shape[-1])
        sides = [
            (prop.side(h, height, width), k) for h, k in _segments(budget, p.p_init, height, width)
        ]
        run.search(sides, generator)
        return targets


class _Restart:
    """One restart's search over the samples still searching, compacted as they win.

    Within the restart the accepted point is each sample's best (its loss only rises), so
    ``best`` is written only when a sample wins and when the restart ends; queries likewise:
    every sample still searching spends exactly one per iteration.
    """

    def __init__(self, clf: Classifier, prop: Proposer, score: _Score,
                 best: _Best, queries: torch.Tensor, trace: list[torch.Tensor],
                 budget: int) -> None:  # fmt: skip
        self.clf, self.prop, self.score, self.best = clf, prop, score, best
        self.queries, self.trace = queries, trace
        self.n_all = int(best.x.shape[0])
        self.stride = max(1, -(-budget // TRACE_POINTS))
        self.late = _LateFlag(best.x.device)
        self.i = 0  # iterations done

    def begin(self, rows: torch.Tensor, y0: torch.Tensor, t0: torch.Tensor | None,
              xcur: torch.Tensor, lcur: torch.Tensor, pcur: torch.Tensor,
              won: torch.Tensor) -> None:  # fmt: skip
        """The samples at the start; those the start already made win leave at once."""
        # the search's own state: positions in the batch, labels, targets, current point, its
        # loss and prediction, whether it still searches, and its best loss before the restart
        self.rows, self.y0, self.t0, self.xcur, self.lcur, self.pcur = rows, y0, t0, xcur, lcur, pcur  # fmt: skip
        self.alive = torch.ones_like(lcur, dtype=torch.bool)
        self.frozen = self.best.loss[rows]
        self.select((~won).nonzero().flatten())

    def select(self, keep: torch.Tensor) -> None:
        """Keep the samples at positions ``keep``; the others left the search."""
        self.prop.select(keep)
        self.rows, self.y0, self.xcur, self.lcur, self.pcur, self.alive, self.frozen = (
            self.rows[keep], self.y0[keep], self.xcur[keep], self.lcur[keep], self.pcur[keep],
            self.alive[keep], self.frozen[keep],
        )  # fmt: skip
        self.t0 = self.t0[keep] if self.t0 is not None else None

    def search(self, segments: list[tuple[int, int]], generator: torch.Generator) -> None:
        """Every iteration of the restart, blocks of squares drawn ahead; then the tally."""
        for h, length in segments:
            done = 0
            while done < length and self.rows.numel():
                drawn = self.prop.draw(min(BLOCK, length - done), h, generator)
                done += drawn
                for j in range(drawn):
                    self.iteration(j)
                    if self.rows.numel() == 0:
                        break
        if self.rows.numel():
            self.queries[self.rows] += self.i
            self.best.update(self.rows, self.xcur, self.lcur, self.pcur, ~self.alive)
        if self.i % self.stride:
            self.trace.append(self.best.loss.mean())

    def iteration(self, j: int) -> None:
        """Iteration ``j`` of the block: one query per searching sample."""
        self.i += 1
        cand = self.prop.step(j, self.xcur)
        loss, pred, won = self.score(self.clf.logits(cand), self.y0, self.t0)
        # a sample keeps a better point, and one that wins keeps the winning point (even at a
        # lower loss) and stops searching
        alive, lag = self.alive, self.late.lag
        if lag:  # samples that won wait in the batch, frozen, until they leave
            won &= alive
            better = ((loss > self.lcur) & alive) | won
            alive &= ~won
        else:
            better = (loss > self.lcur) | won
        self.xcur = torch.where(better.view(-1, 1, 1, 1), cand, self.xcur)
        self.lcur = torch.where(better, loss, self.lcur)
        self.pcur = torch.where(better, pred, self.pcur)
        # samples that won leave the batch: right away on the CPU (the check costs nothing
        # there), else one iteration late so the host never waits
        if self.late.swap(won.any()):
            self.leave(~alive if lag else won)
        if self.i % self.stride == 0:
            self.trace.append(_trace_value(self.best.loss, self.frozen, self.lcur, self.n_all))

    def leave(self, gone: torch.Tensor) -> None:
        """The samples ``gone`` (won) leave: their point goes to ``best``, their queries count."""
        hit = gone.nonzero().flatten()
        self.best.update(self.rows[hit], self.xcur[hit], self.lcur[hit], self.pcur[hit], gone[hit])
        self.queries[self.rows[hit]] += self.i
        self.select((~gone).nonzero().flatten())
        self.late.reset()


class _LateFlag:
    """Whether any sample won, as the host sees it: at once on the CPU, where reading a device
    value costs nothing, and one iteration late elsewhere (the value is copied asynchronously
    into pinned memory and read once the next iteration is queued), so the host never waits
    for the device and the only price is one more query for a sample that just won."""

    def __init__(self, device: torch.device) -> None:
        self.lag = 0 if device.type == "cpu" else 1
        self.cuda = device.type == "cuda"
        self.host = torch.zeros((), dtype=torch.bool, pin_memory=self.cuda)
        self.event = torch.cuda.Event() if self.cuda else None
        self.pending = False

    def swap(self, flag: torch.Tensor) -> bool:
        """The flag as the host may read it now: ``flag`` itself, or the one of the call before."""
        if self.lag == 0:
            return bool(flag)
        seen = False
        if self.pending:
            if self.event is not None:
                self.event.synchronize()
            seen = bool(self.host)
        self.host.copy_(flag, non_blocking=self.cuda)
        if self.event is not None:
            self.event.record()
        self.pending = True
        return seen

    def reset(self) -> None:
        """Forget the flag in flight (the batch it describes was just compacted)."""
        self.pending = False


def _trace_value(
    best_loss: torch.Tensor, frozen: torch.Tensor, lcur: torch.Tensor, n: int
) -> torch.Tensor:
    """Mean best loss over all samples, with the searching ones' current losses folded in."""
    return (best_loss.sum() + (torch.maximum(frozen, lcur) - frozen).sum()) / n
