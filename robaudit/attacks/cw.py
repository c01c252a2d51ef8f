"""Carlini & Wagner L2 (Carlini & Wagner 2017, "Towards Evaluating the Robustness of Neural Networks").

A minimal-norm attack: for each sample it searches for the *smallest* L2 perturbation that
fools the model, minimizing ``‖x' − x‖₂² + c·f(x')`` with the margin loss
``f = max(z_y − max_{i≠y} z_i, −κ)``. The box ``[lo, hi]`` is removed by the change of
variables ``x' = lo + (hi − lo)·(tanh(w) + 1)/2``, the objective is minimized over ``w`` with
Adam, and the constant ``c`` is tuned per sample by a binary search (×10 until a success,
bisection after). The smallest-norm success over every iteration of every search step is
returned; samples never fooled come back unchanged. Inputs and outputs are N×C×H×W.
"""

from __future__ import annotations

import torch
from pydantic import Field

from robaudit.attacks.base import Attack, AttackOutput, AttackParams, register
from robaudit.attacks.losses import margin
from robaudit.attacks.projections import per_sample
from robaudit.classifier import Classifier, LossFn
from robaudit.threat import Threat

# keeps atanh finite at the box's faces (the paper's code scales by 0.999999 for the same reason)
_ATANH_LIMIT = 1.0 - 1e-6
_ADAM_BETAS = (0.9, 0.999)
_ADAM_EPS = 1e-8


class CWParams(AttackParams):
    steps: int = Field(100, ge=1, le=100_000, description="Adam iterations per binary-search step")
    binary_search_steps: int = Field(
        9, ge=1, le=100, description="binary-search steps over the constant c (per sample)"
    )
    initial_const: float = Field(
        1e-3, gt=0, description="first c; multiplied by 10 until a success, then bisected"
    )
    kappa: float = Field(
        0.0, ge=0, description="confidence: the margin by which the best other logit must win"
    )
    lr: float = Field(
        0.1,
        gt=0,
        description="Adam learning rate in tanh space (0.1: pixels at the bounds barely move at "
        "the paper's 0.01 within 100 steps)",
    )
    abort_early: bool = Field(
        True,
        description="stop a sample's search step once its loss improved < 0.01% over steps/10",
    )


def _cw_objective(kappa: float) -> LossFn:
    """The paper's f₆ (untargeted): ``max(z_y − max_{i≠y} z_i, −κ)``, per sample."""

    def f(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.clamp(-margin(logits, y), min=-kappa)

    return f


def _to_tanh_space(x: torch.Tensor, lo: float, scale: float) -> torch.Tensor:
    """The inverse of ``x = lo + scale·(tanh(w) + 1)``, kept finite at the box's faces."""
    return torch.atanh(((x - lo) / scale - 1.0).clamp(-_ATANH_LIMIT, _ATANH_LIMIT))



@register
class CarliniWagnerL2(Attack):
    """Minimal L2 perturbation by Adam in tanh space, with a per-sample binary search over c."""

    name = "cw"
    summary = "Carlini & Wagner L2: minimal-norm attack (tanh box, Adam, binary search over c)"
    paper = "Carlini & Wagner 2017"
    norms = ("l2",)
    Params = CWParams
    cost_rank = 80
    minimal_norm = True

    def cost(self) -> float:
        assert isinstance(self.params, CWParams)
        return float(self.params.binary_search_steps * self.params.steps)

    def run(
        self,
        clf: Classifier,
        x: torch.Tensor,
        y: torch.Tensor,
        threat: Threat,
        generator: torch.Generator,
    ) -> AttackOutput:
        """Smallest-norm adversarial found per sample (or ``x`` itself); ``threat.eps`` unused."""
        p = self.params
        assert isinstance(p, CWParams)
        if threat.norm != "l2":
            raise ValueError(f"cw supports only the l2 norm, not {threat.norm!r}")
        lo, hi = clf.bounds
        scale = (hi - lo) / 2.0
        n = int(x.shape[0])
        dev, dt = x.device, x.dtype
        f_loss = _cw_objective(p.kappa)

        def to_input(w: torch.Tensor) -> torch.Tensor:
            return lo + scale * (torch.tanh(w) + 1.0)

        w0 = _to_tanh_space(x, lo, scale)
        best = x.clone()
        if n == 0:
            return AttackOutput(x_adv=best)
        best_d2 = torch.full((n,), float("inf"), device=dev, dtype=dt)
        const = torch.full((n,), p.initial_const, device=dev, dtype=dt)
        lower = torch.zeros(n, device=dev, dtype=dt)
        upper = torch.full((n,), float("inf"), device=dev, dtype=dt)
        check_every = max(1, p.steps // 10)
        b1, b2 = _ADAM_BETAS
        for _ in range(p.binary_search_steps):
            idx = torch.arange(n, device=dev)  # samples still optimizing in this search step
            w, x0, y0, c = w0.clone(), x, y, const
            m, v = torch.zeros_like(w), torch.zeros_like(w)
            prev = torch.full((n,), float("inf"), device=dev, dtype=dt)
            success = torch.zeros(n, dtype=torch.bool, device=dev)
            for t in range(1, p.steps + 1):
                xp = to_input(w)
                f, grad_f, logits = clf.loss_and_grad(xp, y0, f_loss)
                diff = xp - x0
                d2 = diff.flatten(1).pow(2).sum(dim=1)
                loss = d2 + c * f
                # success of the current iterate, judged by its own logits (κ-confident)
                won = (logits.argmax(dim=1) != y0) & (margin(logits, y0) >= p.kappa)
                better = won & (d2 < best_d2[idx])
                best_d2.index_copy_(0, idx, torch.where(better, d2, best_d2[idx]))
                best.index_copy_(0, idx, torch.where(per_sample(better, xp), xp, best[idx]))
                success.index_copy_(0, idx, success[idx] | won)
                # chain rule through the change of variables: dx'/dw = scale·(1 − tanh²(w))
                grad_x = 2.0 * diff + per_sample(c, grad_f) * grad_f
                grad_w = grad_x * scale * (1.0 - torch.tanh(w).pow(2))
                m = b1 * m + (1 - b1) * grad_w
                v = b2 * v + (1 - b2) * grad_w.pow(2)
                m_hat = m / (1 - b1**t)
                v_hat = v / (1 - b2**t)
                w = w - p.lr * m_hat / (v_hat.sqrt() + _ADAM_EPS)
                if p.abort_early and t % check_every == 0 and t < p.steps:
                    last = prev[idx]
                    stalled = torch.isfinite(last) & (loss > last - 1e-4 * last.abs())
                    prev.index_copy_(0, idx, loss)
                    if bool(stalled.any()):
                        keep = ~stalled
                        idx, w, m, v = idx[keep], w[keep], m[keep], v[keep]
                        x0, y0, c = x0[keep], y0[keep], c[keep]
                        if idx.numel() == 0:
                            break
            # the paper's search over c: bisect once bracketed, ×10 while no success yet
            upper = torch.where(success, torch.minimum(upper, const), upper)
            lower = torch.where(success, lower, torch.maximum(lower, const))
            bracketed = torch.isfinite(upper)
            const = torch.where(bracketed, (lower + upper) / 2, const * 10)
        return AttackOutput(x_adv=best.clamp(lo, hi))
