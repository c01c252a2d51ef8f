"""EAD, the elastic-net attack (Chen, Sharma, Zhang, Yi & Hsieh 2018, "EAD: Elastic-Net Attacks
to Deep Neural Networks via Adversarial Examples"), a minimal-norm L1 attack.

C&W's objective with an elastic-net penalty: per sample it minimizes

    c·f(x') + ‖x' − x‖₂² + β‖x' − x‖₁,   lo ≤ x' ≤ hi,

with C&W's margin loss ``f = max(z_y − max_{i≠y} z_i, −κ)``. The L1 term is not smooth, so
instead of C&W's change of variables the paper uses FISTA: a gradient step on the smooth part
at the look-ahead point ``y_k``, then the elastic-net proximal step, a shrinkage of each pixel's
change by ``β`` followed by clipping to the box (no tanh: pixels at the box's faces move as
freely as the others, which matters on images with many saturated pixels):

    x_{k+1} = S_β(y_k − α_k ∇(c·f + ‖· − x‖₂²)(y_k)),   y_{k+1} = x_{k+1} + k/(k+3)·(x_{k+1} − x_k)

with the step ``α_k = lr·(1 − k/K)^½``. ``c`` is tuned per sample by C&W's binary search (×10
until a success, bisection after). Of every misclassified iterate the attack keeps the one with
the smallest L1 norm (``decision_rule: l1``, the default: the audit measures L1) or the
smallest elastic-net value ``β‖δ‖₁ + ‖δ‖₂²`` (``en``, the paper's other rule). Samples never
fooled come back unchanged. Inputs and outputs are N×C×H×W inside ``clf.bounds``; each step
costs one gradient at ``y_k`` and one forward pass at ``x_{k+1}``.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from robaudit.attacks.base import Attack, AttackOutput, register
from robaudit.attacks.cw import ConstantSearchParams, cw_objective, next_constants
from robaudit.attacks.losses import margin
from robaudit.attacks.projections import per_sample
from robaudit.classifier import Classifier
from robaudit.threat import Threat


class EADParams(ConstantSearchParams):
    beta: float = Field(
        0.03,
        ge=0,
        description="weight of the L1 penalty: each step shrinks pixel changes by it (input "
        "units; 0.03 for [0, 1]: within 1% of the exact L1 distance on affine models, where "
        "0.01 left up to 20%)",
    )
    lr: float = Field(
        0.01, gt=0, description="first FISTA step size, decayed as lr·(1 − k/steps)^0.5"
    )
    decision_rule: Literal["l1", "en"] = Field(
        "l1",
        description="which misclassified iterate is kept: smallest L1 norm (l1) or smallest "
        "elastic-net value beta·L1 + L2² (en)",
    )
    abort_early: bool = Field(
        False,
        description="stop a sample's search step once its loss improved < 0.01% over steps/10 "
        "(off: FISTA is not monotone, and on the digits models stopping early left 1-5 points "
        "more robust accuracy at L1 1 and 2)",
    )

    def cost(self) -> float:
        """Per step one gradient and one forward pass."""
        return float(self.binary_search_steps * self.steps * 1.3)


def shrink(
    z: torch.Tensor, x: torch.Tensor, beta: float, bounds: tuple[float, float]
) -> torch.Tensor:
    """EAD's projected shrinkage-thresholding: each change ``z − x`` shrunk towards 0 by
    ``beta`` (changes smaller than ``beta`` vanish), then clipped to the box."""
    d = z - x
    kept = d.abs() > beta
    moved = x + d - beta * d.sign()
    return torch.where(kept, moved, x).clamp(bounds[0], bounds[1])


@register("ead")
class EAD(Attack[EADParams]):
    """Minimal L1 perturbation by FISTA on C&W's loss plus an elastic-net penalty."""

    Params = EADParams

    def run(
        self,
        clf: Classifier,
        x: torch.Tensor,
        y: torch.Tensor,
        threat: Threat,
        generator: torch.Generator,
    ) -> AttackOutput:
        """Smallest adversarial found per sample (or ``x`` itself); ``threat.eps`` unused."""
        p = self.params
        self.check_norm(threat.norm)
        n = int(x.shape[0])
        if n == 0:
            return AttackOutput(x_adv=x.clone(), claimed=torch.zeros(0, dtype=torch.bool))
        run = _Run(clf, x, y, p)
        const = torch.full((n,), p.initial_const, device=x.device, dtype=x.dtype)
        lower = torch.zeros(n, device=x.device, dtype=x.dtype)
        upper = torch.full((n,), float("inf"), device=x.device, dtype=x.dtype)
        for _ in range(p.binary_search_steps):
            success = run.minimize(const)
            const, lower, upper = next_constants(success, const, lower, upper)
        return AttackOutput(x_adv=run.best, claimed=torch.isfinite(run.best_score))


class _Run:
    """One batch: each sample's best misclassified iterate over every search step."""

    def __init__(self, clf: Classifier, x: torch.Tensor, y: torch.Tensor, p: EADParams) -> None:
        self.clf, self.x, self.y, self.p = clf, x, y, p
        self.f_loss = cw_objective(p.kappa)
        self.best = x.clone()
        self.best_score = torch.full((x.shape[0],), float("inf"), device=x.device, dtype=x.dtype)

    def _keep(self, idx: torch.Tensor, xk: torch.Tensor, won: torch.Tensor,
              l1: torch.Tensor, l2sq: torch.Tensor) -> None:  # fmt: skip
        """Offer the iterates ``xk`` of the samples ``idx``; the misclassified smaller ones stay."""
        score = l1 if self.p.decision_rule == "l1" else self.p.beta * l1 + l2sq
        better = won & (score < self.best_score[idx])
        self.best_score.index_copy_(0, idx, torch.where(better, score, self.best_score[idx]))
        self.best.index_copy_(0, idx, torch.where(per_sample(better, xk), xk, self.best[idx]))

    def minimize(self, const: torch.Tensor) -> torch.Tensor:
        """One binary-search step: FISTA from the clean input with each sample's constant
        ``c``; which samples some iterate fooled."""
        p, n, dev, dt = self.p, int(self.x.shape[0]), self.x.device, self.x.dtype
        idx = torch.arange(n, device=dev)  # samples still optimizing in this search step
        x0, y0, c = self.x, self.y, const
        xk, yk = x0.clone(), x0.clone()
        prev = torch.full((n,), float("inf"), device=dev, dtype=dt)
        success = torch.zeros(n, dtype=torch.bool, device=dev)
        check_every = max(1, p.steps // 10)
        for k in range(p.steps):
            lr = p.lr * (1.0 - k / p.steps) ** 0.5
            _, grad_f, _ = self.clf.loss_and_grad(yk, y0, self.f_loss)
            grad = 2.0 * (yk - x0) + per_sample(c, grad_f) * grad_f
            x_old = xk
            xk = shrink(yk - lr * grad, x0, p.beta, self.clf.bounds)
            yk = xk + (k / (k + 3.0)) * (xk - x_old)
            logits = self.clf.logits(xk)
            gap = margin(logits, y0)
            won = (logits.argmax(dim=1) != y0) & (gap >= p.kappa)
            delta = (xk - x0).flatten(1)
            l1, l2sq = delta.abs().sum(dim=1), delta.pow(2).sum(dim=1)
            self._keep(idx, xk, won, l1, l2sq)
            success.index_copy_(0, idx, success[idx] | won)
            if p.abort_early and (k + 1) % check_every == 0 and k + 1 < p.steps:
                loss = c * torch.clamp(-gap, min=-p.kappa) + l2sq + p.beta * l1
                last = prev[idx]
                stalled = torch.isfinite(last) & (loss > last - 1e-4 * last.abs())
                prev.index_copy_(0, idx, loss)
                if bool(stalled.any()):
                    keep = ~stalled
                    idx, x0, y0, c = idx[keep], x0[keep], y0[keep], c[keep]
                    xk, yk = xk[keep], yk[keep]
                    if idx.numel() == 0:
                        break
        return success
