"""PGD-L0 (Croce & Hein 2019, "Sparse and Imperceivable Adversarial Attacks", ICCV): the
simple white-box L0 baseline.

Each step adds the loss gradient, scaled to unit L1 norm per sample, times ``step_size`` input
ranges (the authors' 120000/255/2: large, so the few coordinates where the gradient
concentrates jump to the box's faces), then projects exactly onto the L0 ball ∩ box: the
``eps`` units (pixels, or single numbers at ``l0-feature``) whose clipped change removes the
most squared distance stay, the rest return to the clean input (``L0.clip``). A restart starts
from a uniform point of the whole box, projected (as the authors' code does). A sample stops
once one of its iterates fools the model; the others get fresh restarts.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from robaudit.attacks.base import Attack, AttackOutput, AttackParams, register
from robaudit.attacks.common import mean_trace
from robaudit.attacks.losses import get_loss
from robaudit.attacks.sparse import l0_norm
from robaudit.classifier import Classifier
from robaudit.norms import TINY, per_sample
from robaudit.threat import Threat


class PGDL0Params(AttackParams):
    steps: int = Field(
        20, ge=1, le=100_000, description="gradient steps per restart (the authors' 20)"
    )
    restarts: int = Field(
        3, ge=1, le=1000, description="random restarts on unfooled samples (the authors' 3)"
    )
    step_size: float = Field(
        120000 / 255 / 2,
        gt=0,
        le=1e6,
        description="step in units of the input range: the L1-normalized gradient times this "
        "(the authors' 120000/255/2)",
    )
    loss: Literal["ce", "margin"] = Field("ce", description="loss to ascend: ce or margin (C&W)")
    random_start: bool = Field(True, description="start from a random point of the box")

    def cost(self) -> float:
        return float(self.steps * self.restarts)


@register("pgd-l0")
class PGDL0(Attack[PGDL0Params]):
    """L1-normalized gradient steps, each projected onto the L0 ball ∩ box."""

    Params = PGDL0Params

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
        step = p.step_size * (hi - lo)
        loss_fn = get_loss(p.loss)
        best, claimed = x.clone(), torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        trace: list[torch.Tensor] = []
        idx = torch.arange(x.shape[0], device=x.device)
        for restart in range(p.restarts):
            if idx.numel() == 0:
                break
            x0, y0 = x[idx], y[idx]
            xa = x0.clone()
            if p.random_start:
                u = torch.rand(x0.shape, generator=generator).to(device=x.device, dtype=x.dtype)
                xa = norm.clip(lo + (hi - lo) * u, x0, threat.eps, clf.bounds)
            for _ in range(p.steps):
                loss, grad, logits = clf.loss_and_grad(xa, y0, loss_fn)
                trace.append(loss.mean())
                fooled = logits.argmax(dim=1) != y0
                if bool(fooled.any()):
                    best[idx[fooled]], claimed[idx[fooled]] = xa[fooled], True
                    keep = ~fooled
                    idx, x0, y0, xa, grad = idx[keep], x0[keep], y0[keep], xa[keep], grad[keep]
                    if idx.numel() == 0:
                        break
                g = grad / per_sample(grad.flatten(1).abs().sum(dim=1) + TINY, grad)
                xa = norm.clip(xa + step * g, x0, threat.eps, clf.bounds)
            if idx.numel() == 0:
                break
            best[idx] = xa  # the last iterate: the engine judges it (no extra pass here)
            if restart < p.restarts - 1:  # a last iterate that fools needs no restart
                fooled = clf.predict(xa) != y0
                claimed[idx[fooled]] = True
                idx = idx[~fooled]
        return AttackOutput(x_adv=best, loss_trace=mean_trace(trace), claimed=claimed)
