"""σ-zero (Cinà, Villani, Pintor, Schönherr, Biggio & Pelillo, ICLR 2025, arXiv 2402.01879):
a white-box, minimal-L0 attack.

It descends ``max(z_y - max_{k≠y} z_k, 0) + (1/U) Σ_u s_u / (s_u + σ)`` over the perturbation
δ, where ``s_u`` is the squared change of unit u (a pixel with its channels, or one number at
``l0-feature``) and U the number of units: the first term pushes across the boundary, the
second is a smooth count of the units changed. Each step normalizes the gradient by its Linf
norm per sample and takes an Adam step whose size η is cosine-annealed from η0 to η0/10, then
clips to the box. A per-sample threshold τ then zeroes every unit whose largest change is below
τ; τ grows by ``τ_factor·η`` while the iterate is adversarial and shrinks while it is not, so
the perturbation gets sparser exactly as long as it keeps fooling the model. The answer is the
adversarial iterate with the fewest changed units seen. δ, σ and τ are in units of the input
range (the paper's [0, 1] settings hold for any bounds).
"""

from __future__ import annotations

import math

import torch
from pydantic import Field

from robaudit.attacks.base import Attack, AttackOutput, AttackParams, register
from robaudit.attacks.common import mean_trace, thin
from robaudit.attacks.losses import margin
from robaudit.attacks.sparse import l0_norm
from robaudit.classifier import Classifier
from robaudit.norms import per_sample
from robaudit.norms.l0 import L0
from robaudit.threat import Threat

BETAS = (0.9, 0.999)  # Adam's moment decay rates, as in the paper


class SigmaZeroParams(AttackParams):
    steps: int = Field(1000, ge=1, le=100_000, description="gradient steps (the paper's 1000)")
    lr: float = Field(
        1.0, gt=0, le=100, description="initial step η0 (input range units), annealed to η0/10"
    )
    sigma: float = Field(
        1e-3, gt=0, le=1, description="smoothness σ of the L0 approximation s/(s+σ)"
    )
    threshold: float = Field(
        0.3, ge=0, le=1, description="initial sparsity threshold τ0 (share of the input range)"
    )
    threshold_factor: float = Field(
        0.01, gt=0, le=1, description="τ moves by this times η per step (up while adversarial)"
    )

    def cost(self) -> float:
        return float(self.steps)


def _not_fooled(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """How far the true logit leads the best other one, 0 once the model is fooled."""
    return (-margin(logits, y)).clamp(min=0)


def _smooth_count_grad(norm: L0, delta: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gradient of (1/U) Σ_u s_u/(s_u+σ), s_u the unit's squared change."""
    v = norm.group(delta)
    s = v.pow(2).sum(dim=2, keepdim=True)
    g = 2 * v * sigma / (s + sigma).pow(2) / max(int(v.shape[1]), 1)
    return norm.ungroup(g, delta)


@register("sigma-zero")
class SigmaZero(Attack[SigmaZeroParams]):
    """Normalized Adam steps on a smooth L0 count, sparsified by an adaptive threshold."""

    Params = SigmaZeroParams

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
        lo, hi = clf.bounds
        span = hi - lo
        n = x.shape[0]
        delta = torch.zeros_like(x)  # in units of the input range
        m1, m2 = torch.zeros_like(x), torch.zeros_like(x)
        best, best_l0 = x.clone(), torch.full((n,), math.inf, device=x.device)
        tau = torch.full((n,), p.threshold, device=x.device, dtype=x.dtype)
        eta, trace = p.lr, []
        for i in range(p.steps):
            xa = x + delta * span
            loss, grad, logits = clf.loss_and_grad(xa, y, _not_fooled)
            trace.append(loss.mean())
            adv = logits.argmax(dim=1) != y
            size = norm.measure(xa - x).to(best_l0.dtype)
            better = adv & (size < best_l0)
            best = torch.where(per_sample(better, x), xa, best)
            best_l0 = torch.where(better, size, best_l0)
            g = grad * span + _smooth_count_grad(norm, delta, p.sigma)
            g = g / per_sample(g.flatten(1).abs().amax(dim=1).clamp(min=1e-12), g)
            m1 = BETAS[0] * m1 + (1 - BETAS[0]) * g
            m2 = BETAS[1] * m2 + (1 - BETAS[1]) * g * g
            denom = (m2 / (1 - BETAS[1] ** (i + 1))).sqrt() + 1e-8
            delta = delta - eta * m1 / (1 - BETAS[0] ** (i + 1)) / denom
            delta = ((x + delta * span).clamp(lo, hi) - x) / span
            eta = p.lr * (0.1 + 0.9 * (1 + math.cos(math.pi * i / p.steps)) / 2)
            tau = (tau + torch.where(adv, 1.0, -1.0) * p.threshold_factor * eta).clamp(0, 1)
            v = norm.group(delta)
            small = v.abs().amax(dim=2) < tau[:, None]
            delta = norm.ungroup(torch.where(small[..., None], torch.zeros_like(v), v), delta)
        losses = mean_trace(trace)
        return AttackOutput(
            x_adv=best,
            loss_trace=thin(losses) if losses else None,
            claimed=torch.isfinite(best_l0),
        )
