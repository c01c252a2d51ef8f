"""Square Attack (Andriushchenko, Croce, Flammarion & Hein 2020, "Square Attack: a
query-efficient black-box adversarial attack via random search"), Linf and L2, score-based.

A random search that needs only the model's scores. Each iteration changes the current point
inside one random h×h square (all channels) and keeps the change only if the loss improved, so
every iteration costs exactly one query per sample. The square's side follows a schedule: it
covers a fraction ``p`` of the image, with ``p`` halved after iterations 10, 50, 200, 500, 1000,
2000, 4000, 6000 and 8000 of a 10 000-query run (rescaled to the actual budget).

* Linf: the start is vertical stripes of width one, each column (per channel) at ±eps; an
  update sets the whole square of each channel to ``x ± eps`` (a vertex of the ball), the
  sign drawn per channel. Squares that would change nothing are redrawn, not queried.
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
from robaudit.attacks.losses import get_loss, get_targeted_loss, with_targets
from robaudit.attacks.projections import clip_to_ball, flat_norm, per_sample
from robaudit.classifier import Classifier, LossFn
from robaudit.threat import Threat

# iterations (of a 10 000-query run) after which the square's area fraction p is halved
HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
SCHEDULE_LENGTH = 10_000
REDRAWS = 10  # Linf: squares drawn per proposal, the first that changes the point is used
REDRAW_ELEMENTS = 1 << 22  # cap on the N×K×C×h×h tensor of drawn squares
TRACE_POINTS = 200
_TINY = 1e-12


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


def _corners(
    n: int, h: int, height: int, width: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform top-left corners of an h×h square per sample (CPU draws)."""
    r = torch.randint(0, height - h + 1, (n,), generator=generator)
    s = torch.randint(0, width - h + 1, (n,), generator=generator)
    return r, s


def _window(r: torch.Tensor, s: torch.Tensor, h: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column indices (N×1×h×1, N×1×1×h) of each sample's square, for fancy indexing."""
    ar = torch.arange(h, device=r.device)
    return (r[:, None] + ar).view(-1, 1, h, 1), (s[:, None] + ar).view(-1, 1, 1, h)


def _mask(r: torch.Tensor, s: torch.Tensor, h: int, height: int, width: int) -> torch.Tensor:
    """Boolean N×1×H×W mask of each sample's square."""
    rows = torch.arange(height, device=r.device)[None, :]
    cols = torch.arange(width, device=r.device)[None, :]
    in_r = (rows >= r[:, None]) & (rows < r[:, None] + h)
    in_s = (cols >= s[:, None]) & (cols < s[:, None] + h)
    return (in_r[:, :, None] & in_s[:, None, :])[:, None]


def _effective_eps(norm: str, eps: float, x: torch.Tensor, bounds: tuple[float, float]) -> float:
    """An infinite eps capped at the box's span (Linf) or its diagonal (L2): nothing is lost."""
    if math.isfinite(eps):
        return eps
    span = float(bounds[1] - bounds[0])
    return span if norm == "linf" else span * math.sqrt(x[0].numel() if x.shape[0] else 1)



# -- starting points -----------------------------------------------------------------------


def init_linf(
    x: torch.Tensor, eps: float, bounds: tuple[float, float], generator: torch.Generator
) -> torch.Tensor:
    """Vertical stripes: each column of each channel at ``x ± eps``, signs uniform."""
    n, c, _, w = x.shape
    signs = _rand_sign((n, c, 1, w), generator).to(device=x.device, dtype=x.dtype)
    return (x + eps * signs).clamp(bounds[0], bounds[1])


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


# -- one random-search proposal per sample -------------------------------------------------


def propose_linf(
    x0: torch.Tensor,
    xcur: torch.Tensor,
    eps: float,
    h: int,
    bounds: tuple[float, float],
    generator: torch.Generator,
) -> torch.Tensor:
    """Set one h×h square (every channel) to ``x0 ± eps``, preferring squares that change.

    Late in a run most squares are one pixel that often already sits at the drawn vertex;
    querying such a no-op would waste the query. So each sample draws up to REDRAWS squares
    at once and takes the first that changes its point (the last if none does): no host sync.
    """
    n, c, height, width = x0.shape
    dev = x0.device
    k = max(1, min(REDRAWS, REDRAW_ELEMENTS // max(1, n * c * h * h)))
    r, s = _corners(n * k, h, height, width, generator)
    signs = _rand_sign((n, k, c, 1, 1), generator).to(device=dev, dtype=x0.dtype)
    ar = torch.arange(h, device=dev)
    rows = (r.to(dev).view(n, k, 1) + ar).view(n, k, 1, h, 1)
    cols = (s.to(dev).view(n, k, 1) + ar).view(n, k, 1, 1, h)
    ni = torch.arange(n, device=dev).view(n, 1, 1, 1, 1)
    ci = torch.arange(c, device=dev).view(1, 1, c, 1, 1)
    new = (x0[ni, ci, rows, cols] + eps * signs).clamp(bounds[0], bounds[1])  # N×K×C×h×h
    changed = (new - xcur[ni, ci, rows, cols]).abs().flatten(2).amax(dim=2) > 1e-7
    first = torch.where(changed.any(dim=1), changed.long().argmax(dim=1), k - 1)
    pick = torch.arange(n, device=dev)
    cand = xcur.clone()
    ni4 = pick.view(n, 1, 1, 1)
    cand[ni4, ci[0], rows[pick, first], cols[pick, first]] = new[pick, first]
    return cand


def propose_l2(
    x0: torch.Tensor,
    xcur: torch.Tensor,
    eps: float,
    h: int,
    bounds: tuple[float, float],
    generator: torch.Generator,
) -> torch.Tensor:
    """Move L2 mass into one square W1 in a new direction, emptying a second square W2.

    Per channel, W1's new content is its old direction plus a unit pattern of random sign,
    renormalized to carry the mass of W1 ∪ W2 plus an equal share of the budget not yet used,
    so the perturbation keeps norm eps (before clipping to the box).
    """
    n, c, height, width = x0.shape
    dev, dt = x0.device, x0.dtype
    r1, s1 = _corners(n, h, height, width, generator)
    r2, s2 = _corners(n, h, height, width, generator)
    flip = torch.randint(0, 2, (n,), generator=generator).bool()
    rho = _rand_sign((n, c, 1, 1), generator).to(device=dev, dtype=dt)
    r1, s1, r2, s2, flip = r1.to(dev), s1.to(dev), r2.to(dev), s2.to(dev), flip.to(dev)

    eta = l2_pattern(h).to(device=dev, dtype=dt)
    eta = torch.where(flip.view(-1, 1, 1), eta.t(), eta)  # half the squares split top/bottom
    canvas = torch.zeros(n, height, width, device=dev, dtype=dt)
    rows, cols = _window(r1, s1, h)
    canvas[torch.arange(n, device=dev).view(-1, 1, 1), rows[:, 0], cols[:, 0]] = eta
    canvas = canvas[:, None]  # N×1×H×W, unit norm, zero outside W1

    nu = xcur - x0
    m1 = _mask(r1, s1, h, height, width)
    both = m1 | _mask(r2, s2, h, height, width)
    unused2 = (eps**2 - flat_norm(nu, "l2") ** 2).clamp(min=0.0)
    in_w1 = nu * m1
    w1_norm = in_w1.flatten(2).norm(dim=2)[..., None, None]  # N×C×1×1
    both_norm2 = (nu * both).flatten(2).pow(2).sum(dim=2)[..., None, None]
    direction = rho * canvas + in_w1 / (w1_norm + _TINY)
    avail = (both_norm2 + per_sample(unused2, nu) / c).sqrt()
    dir_norm = direction.flatten(2).norm(dim=2)[..., None, None]
    new_nu = nu * ~both + direction / (dir_norm + _TINY) * avail
    return clip_to_ball(x0 + new_nu, x0, "l2", eps, bounds)


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
            targets = self._search(clf, x, y, threat, generator, standing, budget, targets,
                                   best, queries, trace)  # fmt: skip
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
        """One restart with ``budget`` queries on the samples ``idx``; updates ``best`` in place.

        Returns the targets (chosen from the first starting point when targeted).
        """
        p = self.params
        assert isinstance(p, SquareParams)
        norm, bounds = threat.norm, clf.bounds
        eps = _effective_eps(norm, threat.eps, x, bounds)
        x0, y0 = x[idx], y[idx]
        height, width = int(x.shape[-2]), int(x.shape[-1])
        if norm == "linf":
            start, propose = init_linf(x0, eps, bounds, generator), propose_linf
        elif norm == "l2":
            start, propose = init_l2(x0, eps, bounds, generator), propose_l2
        else:
            raise ValueError(f"unknown norm {norm!r}")

        logits = clf.logits(start)
        queries[idx] += 1
        if p.targeted and targets is None:  # no extra query: the start's best wrong class
            targets = logits.scatter(1, y[idx][:, None], float("-inf")).argmax(dim=1)
            full = torch.zeros_like(y)
            full[idx] = targets
            targets = full
        t0 = targets[idx] if targets is not None else None

        def score(
            lg: torch.Tensor, yy: torch.Tensor, tt: torch.Tensor | None
        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            fn: LossFn = (
                get_loss(p.loss) if tt is None else with_targets(get_targeted_loss(p.loss), tt)
            )
            pred = lg.argmax(dim=1)
            won = pred != yy if tt is None else pred == tt
            return fn(lg, yy), pred, won

        loss, pred, won = score(logits, y0, t0)
        best.update(idx, start, loss, pred, won)
        trace.append(best.loss.mean())
        # the search's own state: its current point and loss (compacted as samples win)
        act = (~won).nonzero().flatten()
        cur_idx, x0, y0, xcur, lcur = idx[act], x0[act], y0[act], start[act], loss[act]
        t0 = t0[act] if t0 is not None else None
        for i in range(1, budget):
            if cur_idx.numel() == 0:
                break
            h = square_side(square_fraction(i, budget, p.p_init), height, width)
            cand = propose(x0, xcur, eps, h, bounds, generator)
            loss, pred, won = score(clf.logits(cand), y0, t0)
            queries[cur_idx] += 1
            best.update(cur_idx, cand, loss, pred, won)
            accept = per_sample(loss > lcur, cand)
            xcur = torch.where(accept, cand, xcur)
            lcur = torch.maximum(loss, lcur)
            trace.append(best.loss.mean())
            if bool(won.any()):  # the one host sync per step: drop the samples that won
                keep = ~won
                cur_idx, x0, y0, xcur, lcur = (
                    cur_idx[keep],
                    x0[keep],
                    y0[keep],
                    xcur[keep],
                    lcur[keep],
                )
                t0 = t0[keep] if t0 is not None else None
        return targets
