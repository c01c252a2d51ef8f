"""SimBA (Guo, Gardner, You, Wilson & Weinberger 2019), score-based, L2 and Linf.

The paper's algorithm: pick an orthonormal direction ``q`` at random (without replacement)
from a basis, try ``x + δ + α·q``; keep it if the true class's probability drops, else try
``−α·q``; stop as soon as the sample is misclassified. Each step costs one or two queries
and, the directions being orthonormal, the perturbation grows only as ``√k·α``. The drop is
judged on the log-odds against the true class (same order as ``p_y``; see :func:`_log_odds`).

Bases: ``pixel`` (the standard basis) or ``dct`` (SimBA-DCT: the orthonormal 2-D DCT-II
basis per channel, low frequencies first: a random order over the ``freq_dims``×``freq_dims``
block of every channel, then over ever higher frequency bands). Once a sample has used every
direction, a fresh pass over a new random order starts. Inputs that are not N×C×H×W use the
pixel basis.

Threats: every candidate is clipped to the threat's ball and to the input bounds. For L2 the
default step follows the paper's 0.2 (images in [0, 1]) but stays below eps/2, so at least four
steps fit in the ball; beyond that the projection lets further steps rotate the perturbation
on the sphere. For Linf the default step is eps with each direction scaled to unit Linf norm,
so a pixel-basis step sets one coordinate to ±eps and a DCT step reaches the ball's faces
(on the 8×8 digits the pixel basis is the stronger one for Linf: 45% vs 27% fooled at 0.1).

Two additions that change no decision: a candidate that clipping leaves equal to the current
point is not queried (on images with many pixels at 0 or 1 half the pixel steps are such
no-ops), and each sample draws its orders from its own seed (taken from ``generator``), so
a sample's run does not depend on its batch and a larger budget only extends it.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field

from robaudit.attacks.base import Attack, AttackOutput, AttackParams, register
from robaudit.attacks.common import is_l2, thin
from robaudit.attacks.projections import clip_to_ball
from robaudit.classifier import Classifier
from robaudit.threat import Threat

_PAPER_STEP = 0.2  # the paper's step on [0, 1] images, as a share of the input range


class SimBAParams(AttackParams):
    basis: Literal["pixel", "dct"] = Field(
        "dct", description="search directions: the standard basis or low-frequency DCT first"
    )
    queries: int = Field(
        1000, ge=1, le=10_000_000, description="maximum model queries per sample"
    )
    step: float | None = Field(
        None,
        gt=0,
        le=1e6,
        description="step along each direction in pixel units; default linf: eps, "
        "l2: min(0.2·range, eps/2) (0.2·range when unbounded)",
    )
    freq_dims: int | None = Field(
        None,
        ge=1,
        le=100_000,
        description="dct: side of the low-frequency block searched first; "
        "default ceil(min(H, W)/2), at most 28 (the paper's ImageNet value)",
    )

    def cost(self) -> float:
        """Forward passes only, about a third of a forward+backward each."""
        return self.queries / 3

    def step_for(self, norm: str, eps: float, span: float) -> float:
        """The step length for a threat (see the module docstring for the defaults' reasons)."""
        if self.step is not None:
            return self.step
        unbounded = _PAPER_STEP * span
        if not math.isfinite(eps):
            return unbounded
        return min(unbounded, eps / 2) if is_l2(norm) else eps


def _dct_matrix(n: int, device: torch.device) -> torch.Tensor:
    """Rows are the orthonormal DCT-II basis vectors of length ``n``."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    m = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    m[0] /= math.sqrt(2.0)
    return m.to(device=device, dtype=torch.float32)


class _Basis:
    """Directions by index, and a per-sample random order over them (low frequencies first)."""

    def __init__(self, shape: torch.Size, kind: str, freq_dims: int | None, norm: str,
                 device: torch.device, dtype: torch.dtype) -> None:
        self.shape = shape
        self.size = int(math.prod(shape))
        self.kind = kind if len(shape) == 3 else "pixel"  # dct needs C×H×W samples
        self.linf = not is_l2(norm)  # another norm fails here, loudly
        self.device, self.dtype = device, dtype
        self.band = torch.zeros(self.size)
        if self.kind == "dct":
            c, h, w = (int(s) for s in shape)
            self.mh, self.mw = _dct_matrix(h, device), _dct_matrix(w, device)
            f = freq_dims if freq_dims is not None else min(28, math.ceil(min(h, w) / 2))
            stride = max(1, f // 4)
            u = torch.arange(h)[:, None].expand(h, w)
            v = torch.arange(w)[None, :].expand(h, w)
            top = torch.maximum(u, v)
            band = torch.where(top < f, 0, 1 + (top - f).clamp(min=0) // stride)
            self.band = band.flatten().repeat(c).to(torch.float32)

    def order(self, g: torch.Generator) -> torch.Tensor:
        """A random order of all directions, band by band (on CPU, from the sample's generator)."""
        key = self.band + torch.rand(self.size, generator=g)  # rand < 1: bands stay in order
        return key.argsort()

    def directions(self, k: torch.Tensor) -> torch.Tensor:
        """Unit directions for indices ``k`` (unit L2 norm; unit Linf norm for linf threats)."""
        m = int(k.numel())
        if self.kind == "pixel":
            out = torch.zeros(m, self.size, device=self.device, dtype=self.dtype)
            out[torch.arange(m, device=self.device), k] = 1.0
            return out.view(m, *self.shape)
        c, h, w = (int(s) for s in self.shape)
        ch, rest = k // (h * w), k % (h * w)
        img = self.mh[rest // w][:, :, None] * self.mw[rest % w][:, None, :]  # m×H×W
        if self.linf:
            img = img / img.flatten(1).abs().amax(dim=1).view(-1, 1, 1)
        out = torch.zeros(m, c, h, w, device=self.device, dtype=self.dtype)
        out[torch.arange(m, device=self.device), ch] = img.to(self.dtype)
        return out


@register("simba")
class SimBA(Attack[SimBAParams]):
    """Greedy coordinate search on the true class's probability over a random orthonormal basis."""

    Params = SimBAParams

    def run(
        self,
        clf: Classifier,
        x: torch.Tensor,
        y: torch.Tensor,
        threat: Threat,
        generator: torch.Generator,
    ) -> AttackOutput:
        """Candidates inside the ball and bounds, per-sample queries, the mean log-odds trace."""
        p = self.params
        self.check_norm(threat.norm)
        n = int(x.shape[0])
        lo, hi = clf.bounds
        step = p.step_for(threat.norm, threat.eps, hi - lo) if n else 0.0
        if step <= 0:  # no sample, or eps = 0: nothing to search
            return AttackOutput(x_adv=x.clone(), queries=torch.zeros(n, dtype=torch.long))
        return _Run(clf, x, y, threat, p, step, generator).search()


class _Orders:
    """Each sample's random order over the directions (from its own seed) and its place in it."""

    def __init__(self, basis: _Basis, n: int, generator: torch.Generator) -> None:
        self.basis = basis
        seeds = torch.randint(0, 2**62, (n,), generator=generator).tolist()
        self.gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.order = torch.stack([basis.order(g) for g in self.gens])
        self.pos = torch.zeros(n, dtype=torch.long)

    def next(self, act_cpu: torch.Tensor) -> torch.Tensor:
        """The next direction of each sample ``act_cpu``; a sample past its last starts a pass."""
        for i in act_cpu[self.pos[act_cpu] >= self.basis.size].tolist():
            self.order[i] = self.basis.order(self.gens[i])
            self.pos[i] = 0
        k = self.order[act_cpu, self.pos[act_cpu]]
        self.pos[act_cpu] += 1
        return k


class _Run:
    """One batch's search: current points, their log-odds, fooled flags and queries spent."""

    def __init__(self, clf: Classifier, x: torch.Tensor, y: torch.Tensor, threat: Threat,
                 p: SimBAParams, step: float, generator: torch.Generator) -> None:  # fmt: skip
        n, dev = int(x.shape[0]), x.device
        self.clf, self.x, self.y, self.p, self.step = clf, x, y, p, step
        self.norm, self.eps, self.bounds = threat.norm, threat.eps, clf.bounds
        self.used = torch.zeros(n, dtype=torch.long, device=dev)
        self.basis = _Basis(x.shape[1:], p.basis, p.freq_dims, threat.norm, dev, x.dtype)
        self.orders = _Orders(self.basis, n, generator)
        self.idle = torch.zeros(n, dtype=torch.long, device=dev)  # directions in a row not queried
        self.cur = x.clone()
        self.odds, self.fooled = self.query(torch.arange(n, device=dev), x)

    def query(self, idx: torch.Tensor, pts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The log-odds against the true class and the fooled flag; one query each."""
        self.used[idx] += 1
        logits = self.clf.logits(pts)
        return _log_odds(logits, self.y[idx]), logits.argmax(dim=1) != self.y[idx]

    def search(self) -> AttackOutput:
        trace = [float(self.odds.mean())]
        while True:
            # a whole pass without a query means clipping blocks every direction: stop there
            searching = ~self.fooled & (self.used < self.p.queries) & (self.idle < self.basis.size)
            active = searching.nonzero().flatten()
            if active.numel() == 0:
                break
            self.try_direction(active)
            trace.append(float(self.odds.mean()))
        return AttackOutput(
            x_adv=self.cur, loss_trace=thin(trace), claimed=self.fooled.cpu(),
            queries=self.used.cpu(),
        )  # fmt: skip

    def try_direction(self, active: torch.Tensor) -> None:
        """Each active sample's next direction: ``+step``, then ``−step`` where that did not
        help; a candidate that clipping leaves unchanged is not queried."""
        cur, x, used = self.cur, self.x, self.used
        diff = self.step * self.basis.directions(self.orders.next(active.cpu()).to(x.device))
        todo = torch.ones(int(active.numel()), dtype=torch.bool, device=x.device)
        asked = torch.zeros_like(todo)
        for sign in (1.0, -1.0):
            j = todo.nonzero().flatten()
            if j.numel() == 0:
                break
            idx = active[j]
            cand = clip_to_ball(cur[idx] + sign * diff[j], x[idx], self.norm, self.eps, self.bounds)
            changed = (cand != cur[idx]).flatten(1).any(dim=1) & (used[idx] < self.p.queries)
            j, idx, cand = j[changed], idx[changed], cand[changed]
            if idx.numel() == 0:
                continue
            asked[j] = True
            new_o, new_f = self.query(idx, cand)
            better = (new_o > self.odds[idx]) | new_f
            win = idx[better]
            cur[win], self.odds[win], self.fooled[win] = cand[better], new_o[better], new_f[better]
            todo[j[better]] = False
        self.idle[active] = torch.where(asked, 0, self.idle[active] + 1)


def _log_odds(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``log((1 − p_y)/p_y)``: falls exactly when ``p_y`` rises, but without float saturation.

    The paper compares ``p_y``; at ``p_y`` ≈ 1 float32 rounds every nearby point to 1.0 and
    the search stalls on confident samples, while ``logsumexp_{k≠y} z_k − z_y`` still moves.
    """
    others = logits.scatter(1, y[:, None], float("-inf"))
    return others.logsumexp(dim=1) - logits.gather(1, y[:, None]).squeeze(1)
