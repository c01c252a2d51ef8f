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
from robaudit.attacks.projections import clip_to_ball
from robaudit.classifier import Classifier
from robaudit.threat import Threat

_TRACE_POINTS = 200  # the loss trace is thinned to at most this many points
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

    def step_for(self, norm: str, eps: float, span: float) -> float:
        """The step length for a threat (see the module docstring for the defaults' reasons)."""
        if self.step is not None:
            return self.step
        unbounded = _PAPER_STEP * span
        if not math.isfinite(eps):
            return unbounded
        return eps if {"linf": True, "l2": False}[norm] else min(unbounded, eps / 2)


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
        self.linf = {"linf": True, "l2": False}[norm]  # another norm fails here, loudly
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


@register
class SimBA(Attack):
    """Greedy coordinate search on the true class's probability over a random orthonormal basis."""

    name = "simba"
    summary = "SimBA: score-based greedy search over random pixel or low-frequency DCT directions"
    paper = "Guo, Gardner, You, Wilson & Weinberger 2019, 'Simple Black-box Adversarial Attacks'"
    norms = ("linf", "l2")
    requires = "scores"
    strength = "strong"
    Params = SimBAParams
    cost_rank = 60

    def cost(self) -> float:
        # forward passes only, about a third of a forward+backward each
        assert isinstance(self.params, SimBAParams)
        return self.params.queries / 3

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
        assert isinstance(p, SimBAParams)
        norm, eps = threat.norm, threat.eps
        if norm not in self.norms:
            raise ValueError(f"simba supports linf and l2, not {norm!r}")
        n, dev = int(x.shape[0]), x.device
        used = torch.zeros(n, dtype=torch.long, device=dev)
        if n == 0:
            return AttackOutput(x_adv=x.clone(), queries=used.cpu())
        lo, hi = clf.bounds
        step = p.step_for(norm, eps, hi - lo)
        if step <= 0:  # eps = 0: nothing to search
            return AttackOutput(x_adv=x.clone(), queries=used.cpu())
        basis = _Basis(x.shape[1:], p.basis, p.freq_dims, norm, dev, x.dtype)
        seeds = torch.randint(0, 2**62, (n,), generator=generator).tolist()
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
        order = torch.stack([basis.order(g) for g in gens])
        pos = torch.zeros(n, dtype=torch.long)
        idle = torch.zeros(n, dtype=torch.long, device=dev)  # directions in a row not queried

        def query(idx: torch.Tensor, pts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """The log-odds against the true class and the fooled flag; one query each."""
            used[idx] += 1
            logits = clf.logits(pts)
            return _log_odds(logits, y[idx]), logits.argmax(dim=1) != y[idx]

        cur = x.clone()
        odds, fooled = query(torch.arange(n, device=dev), x)
        trace = [float(odds.mean())]
        while True:
            # a whole pass without a query means clipping blocks every direction: stop there
            active = (~fooled & (used < p.queries) & (idle < basis.size)).nonzero().flatten()
            if active.numel() == 0:
                break
            act_cpu = active.cpu()
            for i in act_cpu[pos[act_cpu] >= basis.size].tolist():  # a pass is over: reorder
                order[i] = basis.order(gens[i])
                pos[i] = 0
            k = order[act_cpu, pos[act_cpu]]
            pos[act_cpu] += 1
            diff = step * basis.directions(k.to(dev))
            todo = torch.ones(int(active.numel()), dtype=torch.bool, device=dev)
            asked = torch.zeros_like(todo)
            for sign in (1.0, -1.0):
                j = todo.nonzero().flatten()
                if j.numel() == 0:
                    break
                idx = active[j]
                cand = clip_to_ball(cur[idx] + sign * diff[j], x[idx], norm, eps, (lo, hi))
                changed = (cand != cur[idx]).flatten(1).any(dim=1) & (used[idx] < p.queries)
                j, idx, cand = j[changed], idx[changed], cand[changed]
                if idx.numel() == 0:
                    continue
                asked[j] = True
                new_o, new_f = query(idx, cand)
                better = (new_o > odds[idx]) | new_f
                win = idx[better]
                cur[win], odds[win], fooled[win] = cand[better], new_o[better], new_f[better]
                todo[j[better]] = False
            idle[active] = torch.where(asked, 0, idle[active] + 1)
            trace.append(float(odds.mean()))
        return AttackOutput(
            x_adv=cur, loss_trace=_thin(trace), claimed=fooled.cpu(), queries=used.cpu()
        )


def _log_odds(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``log((1 − p_y)/p_y)``: falls exactly when ``p_y`` rises, but without float saturation.

    The paper compares ``p_y``; at ``p_y`` ≈ 1 float32 rounds every nearby point to 1.0 and
    the search stalls on confident samples, while ``logsumexp_{k≠y} z_k − z_y`` still moves.
    """
    others = logits.scatter(1, y[:, None], float("-inf"))
    return others.logsumexp(dim=1) - logits.gather(1, y[:, None]).squeeze(1)


def _thin(trace: list[float]) -> list[float]:
    """At most ``_TRACE_POINTS`` evenly spaced points, the first and the last included."""
    if len(trace) <= _TRACE_POINTS:
        return trace
    last = len(trace) - 1
    return [trace[round(i * last / (_TRACE_POINTS - 1))] for i in range(_TRACE_POINTS)]
