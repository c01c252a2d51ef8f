"""Square Attack (Andriushchenko, Croce, Flammarion & Hein 2020, "Square Attack: a
query-efficient black-box adversarial attack via random search"), Linf and L2, score-based.

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

``p_init`` defaults to 0.8, AutoAttack's setting, rather than the paper's ImageNet values (0.05
Linf, 0.1 L2): the schedule shrinks squares within a few percent of the budget anyway, and on
the 8×8 digits sample models 0.8 leaves 5-20 points fewer samples standing at L2 eps 1 (0.10
vs 0.15 plain, 0.27 vs 0.49 adversarially trained) and about one point fewer at Linf.

Untargeted by default it maximizes the margin ``max_{k≠y} z_k − z_y`` (the paper minimizes
its negative); a sample stops being queried once the model misclassifies it. Each sample's
query count, the initial point included, is returned in ``AttackOutput.queries``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field

from robaudit.attacks.base import Attack, AttackOutput, AttackParams, register
from robaudit.attacks.losses import get_loss, get_targeted_loss
from robaudit.attacks.projections import clip_to_ball, flat_norm, per_sample
from robaudit.classifier import Classifier
from robaudit.norms import get as get_norm
from robaudit.threat import Threat

# iterations (of a 10 000-query run) after which the square's area fraction p is halved
HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
SCHEDULE_LENGTH = 10_000
TRACE_POINTS = 200
_TINY = 1e-12
_ROUNDING = 5e-7  # L2: norms this far past eps are rounding (the engine allows 1e-6)


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


def bump(h1: int, h2: int) -> torch.Tensor:
    """The paper's η^(h1,h2): concentric rings whose weights grow towards the centre.

    Ring m (m = 0 at the centre) weighs Σ_{k=0}^{n−m} 1/(n+1−k)² with n = ⌊h1/2⌋, so most of
    the mass sits in the middle, like a coarse Gaussian; entries beyond ring n are zero.
    """
    n = h1 // 2
    rows = (torch.arange(h1) - h1 // 2).abs()[:, None]
    cols = (torch.arange(h2) - h2 // 2).abs()[None, :]
    top = n - torch.maximum(rows, cols)  # M(r, s): the number of terms minus one
    weights = 1.0 / (n + 1 - torch.arange(n + 1, dtype=torch.float64)) ** 2
    cum = torch.cat([weights.cumsum(0), weights.new_zeros(1)])  # cum[-1] = 0 for M < 0
    return cum[top.clamp(min=-1)].to(torch.float32)


@functools.lru_cache(maxsize=64)
def l2_pattern(h: int) -> torch.Tensor:
    """The L2 update's h×h shape: a bump on the left half and a negated bump on the right.

    Opposite halves let one square push the logits both ways; unit L2 norm. Cached (callers
    never write to it): every iteration of a run uses one of a few sizes.
    """
    k = h // 2
    eta = torch.cat([bump(h, k), -bump(h, h - k)], dim=1)
    return eta / (eta.norm() + _TINY)


def _rand_sign(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 2, shape, generator=generator).to(torch.float32) * 2 - 1


def _effective_eps(norm: str, eps: float, x: torch.Tensor, bounds: tuple[float, float]) -> float:
    """An infinite eps capped at the box's span (Linf) or its diagonal (L2): nothing is lost."""
    if math.isfinite(eps):
        return eps
    span = float(bounds[1] - bounds[0])
    return get_norm(norm).covering_radius(span, int(x[0].numel()) if x.shape[0] else 1)



# -- starting points -----------------------------------------------------------------------


def _vertices(
    x: torch.Tensor, eps: float, bounds: tuple[float, float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two Linf vertices of every pixel, ``x + eps`` and ``x − eps``, clipped to the box.

    Every Linf point the search visits is built from these two tensors, so "does this square
    change the point" is an exact comparison.
    """
    return (x + eps).clamp(bounds[0], bounds[1]), (x - eps).clamp(bounds[0], bounds[1])


def init_l2(
    x: torch.Tensor, eps: float, bounds: tuple[float, float], generator: torch.Generator
) -> torch.Tensor:
    """A centred grid of about 5×5 tiles, each an L2 pattern with per-channel random sign."""
    n, c, height, width = x.shape
    s = max(1, min(height, width) // 5)
    gh, gw = height // s, width // s
    signs = _rand_sign((n, c, gh, gw), generator)
    tiles = signs.repeat_interleave(s, dim=2).repeat_interleave(s, dim=3)
    tiles = tiles * l2_pattern(s).repeat(gh, gw)
    delta = torch.zeros(n, c, height, width)
    top, left = (height - gh * s) // 2, (width - gw * s) // 2
    delta[:, :, top : top + gh * s, left : left + gw * s] = tiles
    delta = delta / per_sample(flat_norm(delta, "l2") + _TINY, delta) * eps
    delta = delta.to(device=x.device, dtype=x.dtype)
    return clip_to_ball(x + delta, x, "l2", eps, bounds)


# -- proposals, drawn ahead in blocks ------------------------------------------------------
#
# The search is sequential per sample, but its randomness is not: a proposer draws the squares
# of up to BLOCK iterations at once from the explicit generator (on the CPU, so a seed gives the
# same squares on any device) and precomputes what does not depend on the current point, so an
# iteration costs a handful of tensor ops and no host work proportional to the batch.

BLOCK = 64  # iterations drawn ahead
BLOCK_ELEMENTS = 1 << 21  # cap on the elements of one block's precomputed tensors


def _upload(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """CPU draws to the device; to CUDA through pinned memory, so the host does not wait."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


class _LinfProposer:
    """Linf updates: one h×h square of every channel set to ``x0 ± eps`` (a vertex).

    As in the paper's reference code, a square whose every channel already sits at the drawn
    vertex would change nothing, so its signs are redrawn: the reference loops until the
    square changes; here the signs are negated, which for one channel is the only other draw
    and for several always changes every channel (hi ≠ lo for eps > 0). One query, one change.
    """

    def __init__(self, x0: torch.Tensor, eps: float, bounds: tuple[float, float]) -> None:
        self.hi, self.lo = _vertices(x0, eps, bounds)
        self.shape = tuple(int(v) for v in x0.shape)
        self.lin = self.new = self.alt = torch.empty(0)

    def start(self, generator: torch.Generator) -> torch.Tensor:
        """Vertical stripes: each column of each channel at ``x0 ± eps``, signs uniform."""
        n, c, _, w = self.shape
        signs = _rand_sign((n, c, 1, w), generator).to(device=self.hi.device)
        return torch.where(signs > 0, self.hi, self.lo)

    def draw(self, iters: int, h: int, generator: torch.Generator) -> int:
        """Draw the squares of up to ``iters`` iterations of side ``h``; returns how many."""
        n, c, height, width = self.shape
        dev = self.hi.device
        b = max(1, min(iters, BLOCK_ELEMENTS // max(1, n * c * h * h)))
        r = _upload(torch.randint(0, height - h + 1, (b, n), generator=generator), dev)
        s = _upload(torch.randint(0, width - h + 1, (b, n), generator=generator), dev)
        up = _upload(torch.randint(0, 2, (b, n, c, 1, 1), generator=generator), dev).bool()
        ar = torch.arange(h, device=dev)
        # flat index of every pixel of every square in the (contiguous) batch: B×N×C×h×h
        rows = ((r[..., None] + ar) * width)[..., None, :, None]
        cols = (s[..., None] + ar)[..., None, None, :]
        base = torch.arange(n, device=dev).view(1, n, 1, 1, 1) * (c * height * width)
        chan = torch.arange(c, device=dev).view(1, 1, c, 1, 1) * (height * width)
        self.lin = rows + cols + chan + base
        hi, lo = self.hi.take(self.lin), self.lo.take(self.lin)
        self.new, self.alt = torch.where(up, hi, lo), torch.where(up, lo, hi)
        return b

    def step(self, j: int, xcur: torch.Tensor) -> torch.Tensor:
        """The candidate of iteration ``j`` of the block for every sample of ``xcur``."""
        lin, new = self.lin[j], self.new[j]  # N×C×h×h
        same = (xcur.take(lin) == new).flatten(1).all(dim=1)
        cand = xcur.clone()
        cand.put_(lin, torch.where(same.view(-1, 1, 1, 1), self.alt[j], new))
        return cand

    def select(self, keep: torch.Tensor) -> None:
        """Keep the samples at positions ``keep`` (in order); the rest left the search."""
        _, c, height, width = self.shape
        self.hi, self.lo = self.hi[keep], self.lo[keep]
        self.shape = (int(keep.numel()), c, height, width)
        if self.lin.dim() == 5:
            moved = (torch.arange(keep.numel(), device=keep.device) - keep) * (c * height * width)
            self.lin = self.lin[:, keep] + moved.view(1, -1, 1, 1, 1)
            self.new, self.alt = self.new[:, keep], self.alt[:, keep]


class _L2Proposer:
    """L2 updates: move mass into one square W1 in a new direction, emptying a second W2.

    Per channel, W1's new content is its old direction plus a unit pattern of random sign,
    renormalized to carry the mass of W1 ∪ W2 plus an equal share of the budget not yet used,
    so the perturbation keeps norm eps (before clipping to the box).
    """

    def __init__(self, x0: torch.Tensor, eps: float, bounds: tuple[float, float]) -> None:
        self.x0, self.eps, self.bounds = x0, eps, bounds
        self.w1 = self.rest = self.pattern = torch.empty(0)

    def start(self, generator: torch.Generator) -> torch.Tensor:
        return init_l2(self.x0, self.eps, self.bounds, generator)

    def draw(self, iters: int, h: int, generator: torch.Generator) -> int:
        n, c, height, width = (int(v) for v in self.x0.shape)
        dev, dt = self.x0.device, self.x0.dtype
        b = max(1, min(iters, BLOCK_ELEMENTS // max(1, n * (c + 2) * height * width)))
        r1 = torch.randint(0, height - h + 1, (b, n), generator=generator)
        s1 = torch.randint(0, width - h + 1, (b, n), generator=generator)
        r2 = torch.randint(0, height - h + 1, (b, n), generator=generator)
        s2 = torch.randint(0, width - h + 1, (b, n), generator=generator)
        flip = torch.randint(0, 2, (b, n), generator=generator).bool()
        rho = _rand_sign((b, n, c, 1, 1), generator)
        r1, s1, r2, s2, flip = (_upload(t, dev) for t in (r1, s1, r2, s2, flip))
        rows, cols = torch.arange(height, device=dev), torch.arange(width, device=dev)

        def square(r: torch.Tensor, s: torch.Tensor) -> torch.Tensor:  # B×N×1×H×W
            in_r = (rows >= r[..., None]) & (rows < r[..., None] + h)
            in_s = (cols >= s[..., None]) & (cols < s[..., None] + h)
            return (in_r[..., :, None] & in_s[..., None, :])[:, :, None]

        m1 = square(r1, s1)
        # float masks: multiplying by them is one op (a bool mask would be converted each time)
        self.w1 = m1.to(dt)
        self.rest = (~(m1 | square(r2, s2))).to(dt)  # outside both squares: left as it is
        eta = l2_pattern(h).to(device=dev, dtype=dt)
        eta = torch.where(flip[..., None, None], eta.t(), eta)  # half the squares split top/bottom
        canvas = torch.zeros(b * n, height, width, device=dev, dtype=dt)
        ar = torch.arange(h, device=dev)
        canvas[
            torch.arange(b * n, device=dev).view(-1, 1, 1),
            (r1.flatten()[:, None] + ar)[:, :, None],
            (s1.flatten()[:, None] + ar)[:, None, :],
        ] = eta.view(b * n, h, h)
        # the unit pattern in W1 with its per-channel sign: B×N×C×H×W
        self.pattern = _upload(rho, dev).to(dt) * canvas.view(b, n, 1, height, width)
        return b

    def step(self, j: int, xcur: torch.Tensor) -> torch.Tensor:
        """The candidate of iteration ``j`` of the block (squared norms throughout: few ops)."""
        w1, rest, pattern = self.w1[j], self.rest[j], self.pattern[j]
        c = int(xcur.shape[1])
        nu = xcur - self.x0
        kept = nu * rest  # outside W1 ∪ W2
        in_w1 = nu * w1
        # per sample and channel: ‖nu‖², ‖nu outside W1 ∪ W2‖², ‖nu in W1‖²
        total, outside, inside = torch.stack((nu, kept, in_w1)).square_().sum(dim=(3, 4))
        unused = (self.eps**2 - total.sum(dim=1, keepdim=True)).clamp_(min=0.0) / c
        avail2 = (total - outside).clamp_(min=0.0) + unused  # mass of W1 ∪ W2 plus a share
        direction = torch.addcmul(pattern, in_w1, (inside + _TINY**2).rsqrt_()[..., None, None])
        scale = (avail2 / (direction.square().sum(dim=(2, 3)) + _TINY**2)).sqrt_()
        new_nu = torch.addcmul(kept, direction, scale[..., None, None])
        # by construction ‖new_nu‖ = eps; shrink onto the ball only past rounding (so the
        # pixels outside the two squares stay as they were), then clip to the box
        norm2 = new_nu.square().sum(dim=(1, 2, 3))
        shrink = torch.where(norm2 > (self.eps + _ROUNDING) ** 2, (self.eps**2 / norm2).sqrt(), 1.0)
        lo, hi = self.bounds
        return torch.addcmul(self.x0, new_nu, shrink.view(-1, 1, 1, 1)).clamp_(lo, hi)

    def select(self, keep: torch.Tensor) -> None:
        self.x0 = self.x0[keep]
        if self.w1.dim() == 5:
            self.w1, self.rest, self.pattern = (
                self.w1[:, keep], self.rest[:, keep], self.pattern[:, keep]
            )


def _proposer(
    norm: str, x0: torch.Tensor, eps: float, bounds: tuple[float, float]
) -> _LinfProposer | _L2Proposer:
    if norm == "linf":
        return _LinfProposer(x0, eps, bounds)
    if norm == "l2":
        return _L2Proposer(x0, eps, bounds)
    raise ValueError(f"unknown norm {norm!r}")


def propose_linf(
    x0: torch.Tensor,
    xcur: torch.Tensor,
    eps: float,
    h: int,
    bounds: tuple[float, float],
    generator: torch.Generator,
) -> torch.Tensor:
    """One Linf proposal per sample (see :class:`_LinfProposer`)."""
    prop = _LinfProposer(x0, eps, bounds)
    prop.draw(1, h, generator)
    return prop.step(0, xcur)


def propose_l2(
    x0: torch.Tensor,
    xcur: torch.Tensor,
    eps: float,
    h: int,
    bounds: tuple[float, float],
    generator: torch.Generator,
) -> torch.Tensor:
    """One L2 proposal per sample (see :class:`_L2Proposer`)."""
    prop = _L2Proposer(x0, eps, bounds)
    prop.draw(1, h, generator)
    return prop.step(0, xcur)


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


def _subsample(trace: list[torch.Tensor]) -> list[float] | None:
    if not trace:
        return None
    values = torch.stack(trace).tolist()
    if len(values) <= TRACE_POINTS:
        return [float(v) for v in values]
    step = (len(values) - 1) / (TRACE_POINTS - 1)
    return [float(values[round(j * step)]) for j in range(TRACE_POINTS)]


@register
class Square(Attack):
    """Score-based random search over squares; immune to gradient masking by construction."""

    name = "square"
    summary = "Square Attack: score-based random search over square patches (black-box)"
    paper = "Andriushchenko, Croce, Flammarion & Hein 2020"
    norms = ("linf", "l2")
    requires = "scores"
    needs_image = True  # square windows of pixels
    strength = "strong"
    Params = SquareParams
    cost_rank = 60

    def cost(self) -> float:
        """Forward passes only: roughly a third of a forward+backward each."""
        assert isinstance(self.params, SquareParams)
        return self.params.queries / 3.0

    def run(
        self,
        clf: Classifier,
        x: torch.Tensor,
        y: torch.Tensor,
        threat: Threat,
        generator: torch.Generator,
    ) -> AttackOutput:
        p = self.params
        assert isinstance(p, SquareParams)
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
            loss_trace=_subsample(trace),
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

        Returns the targets (chosen from the first starting point when targeted). Within the
        restart the accepted point is each sample's best (its loss only rises), so ``best``
        is written only when a sample wins and when the restart ends; queries likewise: every
        sample still searching spends exactly one per iteration.
        """
        p = self.params
        assert isinstance(p, SquareParams)
        norm, bounds = threat.norm, clf.bounds
        eps = _effective_eps(norm, threat.eps, x, bounds)
        n_all = int(x.shape[0])
        height, width = int(x.shape[-2]), int(x.shape[-1])
        prop = _proposer(norm, x[idx], eps, bounds)
        start = prop.start(generator)

        logits = clf.logits(start)
        queries[idx] += 1
        if p.targeted and targets is None:  # no extra query: the start's best wrong class
            targets = logits.scatter(1, y[idx][:, None], float("-inf")).argmax(dim=1)
            full = torch.zeros_like(y)
            full[idx] = targets
            targets = full
        t0 = targets[idx] if targets is not None else None
        untargeted, targeted = get_loss(p.loss), get_targeted_loss(p.loss)

        def score(lg: torch.Tensor, yy: torch.Tensor, tt: torch.Tensor | None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
            pred = lg.argmax(dim=1)
            if tt is None:
                return untargeted(lg, yy), pred, pred != yy
            return targeted(lg, yy, tt), pred, pred == tt

        loss, pred, won = score(logits, y[idx], t0)
        best.update(idx, start, loss, pred, won)
        trace.append(best.loss.mean())
        # the search's own state, compacted as samples win: positions in the batch, labels,
        # targets, current point, its loss and prediction, and whether it still searches
        keep = (~won).nonzero().flatten()
        prop.select(keep)
        rows, y0, xcur, lcur, pcur = idx[keep], y[idx][keep], start[keep], loss[keep], pred[keep]
        t0 = t0[keep] if t0 is not None else None
        alive = torch.ones_like(lcur, dtype=torch.bool)
        frozen = best.loss[rows]  # best loss of the searching samples before this restart
        late = _LateFlag(x.device)
        stride = max(1, -(-budget // TRACE_POINTS))
        i = 0  # iterations done
        for h, length in _segments(budget, p.p_init, height, width):
            done = 0
            while done < length and rows.numel():
                drawn = prop.draw(min(BLOCK, length - done), h, generator)
                done += drawn
                for j in range(drawn):
                    i += 1
                    cand = prop.step(j, xcur)
                    loss, pred, won = score(clf.logits(cand), y0, t0)
                    # a sample keeps a better point, and one that wins keeps the winning point
                    # (even at a lower loss) and stops searching
                    if late.lag:  # samples that won wait in the batch, frozen, until they leave
                        won &= alive
                        better = ((loss > lcur) & alive) | won
                        alive &= ~won
                    else:
                        better = (loss > lcur) | won
                    xcur = torch.where(better.view(-1, 1, 1, 1), cand, xcur)
                    lcur = torch.where(better, loss, lcur)
                    pcur = torch.where(better, pred, pcur)
                    # samples that won leave the batch: right away on the CPU (the check costs
                    # nothing there), else one iteration late so the host never waits
                    if late.swap(won.any()):
                        gone = ~alive if late.lag else won
                        hit = gone.nonzero().flatten()
                        best.update(rows[hit], xcur[hit], lcur[hit], pcur[hit], gone[hit])
                        queries[rows[hit]] += i
                        keep = (~gone).nonzero().flatten()
                        prop.select(keep)
                        rows, y0, xcur, lcur, pcur, alive, frozen = (
                            rows[keep], y0[keep], xcur[keep], lcur[keep], pcur[keep],
                            alive[keep], frozen[keep],
                        )  # fmt: skip
                        t0 = t0[keep] if t0 is not None else None
                        late.reset()
                    if i % stride == 0:
                        trace.append(_trace_value(best.loss, frozen, lcur, n_all))
                    if rows.numel() == 0:
                        break
        if rows.numel():
            queries[rows] += i
            best.update(rows, xcur, lcur, pcur, ~alive)
        if i % stride:
            trace.append(best.loss.mean())
        return targets


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
