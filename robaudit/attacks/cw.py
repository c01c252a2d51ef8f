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


class ConstantSearchParams(AttackParams):
    """What C&W and EAD share: the per-sample search over the constant c, and the confidence."""

    steps: int = Field(
        100, ge=1, le=100_000, description="iterations per search step (C&W: Adam; EAD: FISTA)"
    )
    binary_search_steps: int = Field(
        9, ge=1, le=100, description="binary-search steps over the constant c (per sample)"
    )
    initial_const: float = Field(
        1e-3, gt=0, description="first c; multiplied by 10 until a success, then bisected"
    )
    kappa: float = Field(
        0.0, ge=0, description="confidence: the margin by which the best other logit must win"
    )

    def cost(self) -> float:
        return float(self.binary_search_steps * self.steps)


class CWParams(ConstantSearchParams):
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


def cw_objective(kappa: float) -> LossFn:
    """The paper's f₆ (untargeted): ``max(z_y − max_{i≠y} z_i, −κ)``, per sample."""

    def f(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.clamp(-margin(logits, y), min=-kappa)

    return f


def next_constants(
    success: torch.Tensor, const: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The paper's search over c, per sample: bisect once bracketed, ×10 while no success yet.

    Returns the next (const, lower, upper); EAD uses the same search.
    """
    upper = torch.where(success, torch.minimum(upper, const), upper)
    lower = torch.where(success, lower, torch.maximum(lower, const))
    const = torch.where(torch.isfinite(upper), (lower + upper) / 2, const * 10)
    return const, lower, upper


def _to_tanh_space(x: torch.Tensor, lo: float, scale: float) -> torch.Tensor:
    """The inverse of ``x = lo + scale·(tanh(w) + 1)``, kept finite at the box's faces."""
    return torch.atanh(((x - lo) / scale - 1.0).clamp(-_ATANH_LIMIT, _ATANH_LIMIT))


@register("cw")
class CarliniWagnerL2(Attack[CWParams]):
    """Minimal L2 perturbation by Adam in tanh space, with a per-sample binary search over c."""

    Params = CWParams

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
        self.check_norm(threat.norm)
        n = int(x.shape[0])
        if n == 0:
            return AttackOutput(x_adv=x.clone())
        run = _Run(clf, x, y, p)
        const = torch.full((n,), p.initial_const, device=x.device, dtype=x.dtype)
        lower = torch.zeros(n, device=x.device, dtype=x.dtype)
        upper = torch.full((n,), float("inf"), device=x.device, dtype=x.dtype)
        for _ in range(p.binary_search_steps):
            success = run.minimize(const)
            const, lower, upper = next_constants(success, const, lower, upper)
        return AttackOutput(x_adv=run.best.clamp(*clf.bounds))


class _Adam:
    """Adam's moments for the tanh-space variables, one row per sample still optimizing."""

    def __init__(self, w: torch.Tensor, lr: float) -> None:
        self.m, self.v, self.lr = torch.zeros_like(w), torch.zeros_like(w), lr

    def step(self, w: torch.Tensor, grad: torch.Tensor, t: int) -> torch.Tensor:
        """``w`` after Adam's ``t``-th step (from 1) along ``grad``."""
        b1, b2 = _ADAM_BETAS
        self.m = b1 * self.m + (1 - b1) * grad
        self.v = b2 * self.v + (1 - b2) * grad.pow(2)
        m_hat = self.m / (1 - b1**t)
        v_hat = self.v / (1 - b2**t)
        return w - self.lr * m_hat / (v_hat.sqrt() + _ADAM_EPS)

    def select(self, keep: torch.Tensor) -> None:
        self.m, self.v = self.m[keep], self.v[keep]


class _Run:
    """One batch: the tanh-space start and each sample's smallest success over every step."""

    def __init__(self, clf: Classifier, x: torch.Tensor, y: torch.Tensor, p: CWParams) -> None:
        self.clf, self.x, self.y, self.p = clf, x, y, p
        self.lo, hi = clf.bounds
        self.scale = (hi - self.lo) / 2.0
        self.f_loss = cw_objective(p.kappa)
        self.w0 = _to_tanh_space(x, self.lo, self.scale)
        self.best = x.clone()
        self.best_d2 = torch.full((x.shape[0],), float("inf"), device=x.device, dtype=x.dtype)

    def minimize(self, const: torch.Tensor) -> torch.Tensor:
        """One binary-search step: Adam from the clean input with each sample's constant
        ``c``; which samples some iterate fooled."""
        p, n, dev, dt = self.p, int(self.x.shape[0]), self.x.device, self.x.dtype
        idx = torch.arange(n, device=dev)  # samples still optimizing in this search step
        w, x0, y0, c = self.w0.clone(), self.x, self.y, const
        adam = _Adam(w, p.lr)
        prev = torch.full((n,), float("inf"), device=dev, dtype=dt)
        success = torch.zeros(n, dtype=torch.bool, device=dev)
        check_every = max(1, p.steps // 10)
        for t in range(1, p.steps + 1):
            xp = self.lo + self.scale * (torch.tanh(w) + 1.0)
            f, grad_f, logits = self.clf.loss_and_grad(xp, y0, self.f_loss)
            diff = xp - x0
            d2 = diff.flatten(1).pow(2).sum(dim=1)
            loss = d2 + c * f
            # success of the current iterate, judged by its own logits (κ-confident)
            won = (logits.argmax(dim=1) != y0) & (margin(logits, y0) >= p.kappa)
            better = won & (d2 < self.best_d2[idx])
            self.best_d2.index_copy_(0, idx, torch.where(better, d2, self.best_d2[idx]))
            self.best.index_copy_(0, idx, torch.where(per_sample(better, xp), xp, self.best[idx]))
            success.index_copy_(0, idx, success[idx] | won)
            # chain rule through the change of variables: dx'/dw = scale·(1 − tanh²(w))
            grad_x = 2.0 * diff + per_sample(c, grad_f) * grad_f
            w = adam.step(w, grad_x * self.scale * (1.0 - torch.tanh(w).pow(2)), t)
            if p.abort_early and t % check_every == 0 and t < p.steps:
                last = prev[idx]
                stalled = torch.isfinite(last) & (loss > last - 1e-4 * last.abs())
                prev.index_copy_(0, idx, loss)
                if bool(stalled.any()):
                    keep = ~stalled
                    idx, w, x0, y0, c = idx[keep], w[keep], x0[keep], y0[keep], c[keep]
                    adam.select(keep)
                    if idx.numel() == 0:
                        break
        return success
