"""Sparse-RS patches (Croce, Andriushchenko, Singh, Flammarion & Hein 2022, "Sparse-RS: a
versatile framework for query-efficient sparse black-box adversarial attacks", AAAI): a
score-based random search over a patch's place and content.

The patch starts at a random place with random vertex colours (each channel at the low or the
high bound, constant down each column). Each iteration proposes one change per sample and
keeps it if the margin loss rose (or the model is fooled, which ends that sample's search):

* most iterations change the content: a random square inside the patch, covering a share
  ``p`` of it, gets new random vertex colours per channel; ``p`` starts at ``p_init`` and is
  halved on the paper's schedule (iterations 10, 50, 200, 500, 1000, 4000, 8000 of 10 000,
  rescaled to the budget);
* every ``5 * (1 + i // 1000)``-th iteration instead moves the patch by up to ``0.75 * (1 -
  i / budget)`` of the image's side on each axis (anywhere only; a fixed place never moves).

Each iteration costs one query per sample still searching; ``AttackOutput.queries`` holds each
sample's count, the starting point included.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field

from robaudit.attacks.base import Attack, AttackOutput, AttackParams, register
from robaudit.attacks.common import mean_trace, thin
from robaudit.attacks.losses import get_loss
from robaudit.attacks.patch_common import Region, place, region_of
from robaudit.classifier import Classifier
from robaudit.threat import Threat

# (iteration of a 10 000-query run after which, divisor of p_init) — the paper's patch schedule
SCHEDULE = ((10, 2), (50, 4), (200, 8), (500, 16), (1000, 32), (4000, 64), (8000, 128))


class PatchRSParams(AttackParams):
    queries: int = Field(
        1000, ge=1, le=1_000_000, description="max model queries per sample, restarts included"
    )
    p_init: float = Field(
        0.8, gt=0, le=1, description="share of the patch the first content update covers"
    )
    loss: Literal["margin", "ce"] = Field("margin", description="score to raise")
    restarts: int = Field(1, ge=1, le=1000, description="fresh starts on unbroken samples")

    def cost(self) -> float:
        return self.queries / 3.0


def content_share(i: int, budget: int, p_init: float) -> float:
    """The share of the patch a content update covers at iteration ``i`` of ``budget``."""
    scaled = i * 10_000 // max(budget, 1)
    div = 1
    for after, d in SCHEDULE:
        if scaled > after:
            div = d
    return p_init / div


def shift_share(i: int, budget: int) -> float:
    """The largest move of a location update, as a share of the image's side."""
    return max((budget - i) / budget, 0.0) * 0.75


class _State:
    """The samples still searching: batch rows, their patches, corners, losses."""

    def __init__(self, rows: torch.Tensor, patches: torch.Tensor, tops: torch.Tensor,
                 lefts: torch.Tensor, loss: torch.Tensor) -> None:  # fmt: skip
        self.rows, self.patches, self.tops, self.lefts, self.loss = rows, patches, tops, lefts, loss

    def adopt(self, better: torch.Tensor, loss: torch.Tensor,
              proposal: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> None:  # fmt: skip
        """Move to the proposal where it was ``better``."""
        patches, tops, lefts = proposal
        self.patches = torch.where(better.view(-1, 1, 1, 1), patches, self.patches)
        self.tops = torch.where(better, tops, self.tops)
        self.lefts = torch.where(better, lefts, self.lefts)
        self.loss = torch.where(better, loss, self.loss)

    def keep(self, sel: torch.Tensor) -> None:
        self.rows, self.patches = self.rows[sel], self.patches[sel]
        self.tops, self.lefts, self.loss = self.tops[sel], self.lefts[sel], self.loss[sel]


@register("patch-rs")
class PatchRS(Attack[PatchRSParams]):
    """Score-based random search over a patch's place and content (no gradients)."""

    Params = PatchRSParams

    def run(
        self,
        clf: Classifier,
        x: torch.Tensor,
        y: torch.Tensor,
        threat: Threat,
        generator: torch.Generator,
    ) -> AttackOutput:
        p = self.params
        region = region_of(threat, x)
        n = int(x.shape[0])
        queries = torch.zeros(n, dtype=torch.int64)
        best = x.clone()
        if region.empty or n == 0:
            return AttackOutput(x_adv=best, queries=queries)
        best_loss = torch.full((n,), -math.inf, device=x.device)
        won = torch.zeros(n, dtype=torch.bool, device=x.device)
        trace: list[torch.Tensor] = []  # on the device: one host read at the end
        with torch.inference_mode():
            for r in range(p.restarts):
                budget = p.queries // p.restarts + (1 if r < p.queries % p.restarts else 0)
                standing = (~won).nonzero().flatten()
                if standing.numel() and budget:
                    self._search(clf, x, y, region, standing, budget, generator,
                                 (best, best_loss, won, queries), trace)  # fmt: skip
        return AttackOutput(
            x_adv=best, loss_trace=thin(mean_trace(trace) or []) or None, claimed=won.clone(),
            queries=queries,
        )

    def _search(self, clf: Classifier, x: torch.Tensor, y: torch.Tensor, region: Region,
                rows: torch.Tensor, budget: int, gen: torch.Generator,
                out: tuple[torch.Tensor, ...], trace: list[torch.Tensor]) -> None:  # fmt: skip
        """One restart on the samples ``rows``; writes best points, losses, wins and queries."""
        best, best_loss, won, queries = out
        loss_fn, dev = get_loss(self.params.loss), x.device
        n, c = int(rows.numel()), int(x.shape[1])
        h, w = region.dims
        stripes = torch.randint(0, 2, (n, c, 1, w), generator=gen).expand(n, c, h, w)
        tops, lefts = region.random_corners(n, gen)
        st = _State(rows, self._colour(clf, stripes).to(x), tops.to(dev), lefts.to(dev),
                    torch.zeros(n, device=dev))  # fmt: skip
        proposal = (st.patches, st.tops, st.lefts)
        for i in range(budget):
            if i:
                proposal = self._propose(clf, st, region, i, budget, gen)
            cand = place(x[st.rows], *proposal)
            logits = clf.logits(cand)
            queries[st.rows.cpu()] += 1
            loss = loss_fn(logits, y[st.rows])
            fooled = logits.argmax(dim=1) != y[st.rows]
            better = (loss > st.loss) | fooled | (i == 0)
            st.adopt(better, loss, proposal)
            keep_best = (better & (loss > best_loss[st.rows])) | fooled
            best[st.rows[keep_best]] = cand[keep_best]
            best_loss[st.rows[keep_best]] = torch.where(fooled, math.inf, loss)[keep_best]
            won[st.rows[fooled]] = True
            trace.append(best_loss.clamp(max=1e6).mean())
            st.keep(~fooled)
            if st.rows.numel() == 0:
                break

    @staticmethod
    def _colour(clf: Classifier, bits: torch.Tensor) -> torch.Tensor:
        """Vertex colours: 0 -> the low bound, 1 -> the high bound."""
        lo, hi = clf.bounds
        return lo + (hi - lo) * bits.to(torch.float32)

    def _propose(self, clf: Classifier, st: _State, region: Region, i: int, budget: int,
                 gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
        """One proposal per searching sample: a moved patch or new content in a sub-square."""
        n, dev = int(st.rows.numel()), st.tops.device
        height, width = region.height, region.width
        patches, tops, lefts = st.patches, st.tops, st.lefts
        shift = (int(shift_share(i, budget) * height), int(shift_share(i, budget) * width))
        if region.fixed is None and i % (5 * (1 + i // 1000)) == 0 and max(shift) > 0:
            dt = torch.randint(-shift[0], shift[0] + 1, (n,), generator=gen).to(dev)
            dl = torch.randint(-shift[1], shift[1] + 1, (n,), generator=gen).to(dev)
            tops = (tops + dt).clamp(0, region.places[0] - 1)
            lefts = (lefts + dl).clamp(0, region.places[1] - 1)
        else:
            share = content_share(i, budget, self.params.p_init)
            h, w = region.dims
            sh, sw = max(1, int(math.sqrt(share) * h)), max(1, int(math.sqrt(share) * w))
            r0 = int(torch.randint(0, h - sh + 1, (1,), generator=gen))
            c0 = int(torch.randint(0, w - sw + 1, (1,), generator=gen))
            bits = torch.randint(0, 2, (n, patches.shape[1], 1, 1), generator=gen)
            patches = patches.clone()
            patches[:, :, r0 : r0 + sh, c0 : c0 + sw] = self._colour(clf, bits).to(patches)
        return patches, tops, lefts
