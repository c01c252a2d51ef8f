"""FGSM (Goodfellow, Shlens & Szegedy 2015) and PGD (Madry et al. 2018), Linf and L2.

Inputs are pixel-space batches N×C×H×W inside the classifier's bounds; outputs are
candidates of the same shape. PGD drops each sample from the active batch as soon as
the model misclassifies its current iterate (per-sample early stopping), so the work
left is only on samples still standing.

PGD can ascend cross-entropy, the C&W margin or DLR (Croce & Hein 2020), untargeted or
targeted: ``targeted: true`` pulls each sample towards one class fixed at the start from the
clean logits (``target: most-likely``, the most likely wrong class, or ``least-likely``, the
least likely one). Success is still any misclassification, so a targeted run that lands on
another wrong class counts too.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator

from robaudit.attacks.base import Attack, AttackOutput, AttackParams, register
from robaudit.attacks.losses import get_loss, get_targeted_loss, with_targets
from robaudit.attacks.projections import clip_to_ball, random_in_ball, steepest_direction
from robaudit.classifier import Classifier, LossFn
from robaudit.threat import Threat


class FGSMParams(AttackParams):
    loss: Literal["ce", "margin"] = Field("ce", description="loss to ascend: ce or margin (C&W)")


@register
class FGSM(Attack):
    """One full-size step along the gradient's steepest direction."""

    name = "fgsm"
    summary = "Fast Gradient Sign Method: one gradient step of size eps"
    paper = "Goodfellow, Shlens & Szegedy 2015"
    norms = ("linf", "l2")
    strength = "weak"
    Params = FGSMParams
    cost_rank = 1

    def run(
        self,
        clf: Classifier,
        x: torch.Tensor,
        y: torch.Tensor,
        threat: Threat,
        generator: torch.Generator,
    ) -> AttackOutput:
        assert isinstance(self.params, FGSMParams)
        _, grad, _ = clf.loss_and_grad(x, y, get_loss(self.params.loss))
        x_adv = x + threat.eps * steepest_direction(grad, threat.norm)
        return AttackOutput(x_adv=clip_to_ball(x_adv, x, threat.norm, threat.eps, clf.bounds))


class PGDParams(AttackParams):
    steps: int = Field(10, ge=1, le=100_000, description="gradient steps per restart")
    step_size: float | None = Field(
        None, gt=0, description="absolute step size (pixel units); excludes rel_step_size"
    )
    rel_step_size: float | None = Field(
        None, gt=0, le=10, description="step size as a fraction of eps (default 2.5/steps)"
    )
    restarts: int = Field(1, ge=1, le=1000, description="random restarts on unbroken samples")
    random_start: bool = Field(True, description="start from a uniform point in the ball")
    loss: Literal["ce", "margin", "dlr"] = Field(
        "ce", description="loss to ascend: ce, margin (C&W) or dlr (Croce & Hein 2020)"
    )
    targeted: bool = Field(
        False, description="pull each sample towards one wrong class chosen at the start"
    )
    target: Literal["most-likely", "least-likely"] = Field(
        "most-likely",
        description="with targeted: the most or the least likely wrong class on the clean input",
    )
    early_stop: bool = Field(True, description="drop a sample once its iterate fools the model")

    @model_validator(mode="after")
    def _one_step_size(self) -> PGDParams:
        if self.step_size is not None and self.rel_step_size is not None:
            raise ValueError("give step_size or rel_step_size, not both")
        return self

    def step_for(self, eps: float) -> float:
        """The absolute step size at ``eps`` (Madry's 2.5·eps/steps unless told otherwise)."""
        if self.step_size is not None:
            return self.step_size
        rel = self.rel_step_size if self.rel_step_size is not None else 2.5 / self.steps
        return rel * eps


@register
class PGD(Attack):
    """Projected gradient ascent from random starts; the workhorse first-order attack."""

    name = "pgd"
    summary = "Projected Gradient Descent with random restarts and per-sample early stopping"
    paper = "Madry, Makelov, Schmidt, Tsipras & Vladu 2018"
    norms = ("linf", "l2")
    Params = PGDParams
    cost_rank = 10

    def cost(self) -> float:
        assert isinstance(self.params, PGDParams)
        return float(self.params.steps * self.params.restarts)

    def run(
        self,
        clf: Classifier,
        x: torch.Tensor,
        y: torch.Tensor,
        threat: Threat,
        generator: torch.Generator,
    ) -> AttackOutput:
        p = self.params
        assert isinstance(p, PGDParams)
        targets = pick_target(clf, x, y, p.target) if p.targeted else None

        def loss_for(t: torch.Tensor | None) -> LossFn:
            return get_loss(p.loss) if t is None else with_targets(get_targeted_loss(p.loss), t)

        step = p.step_for(threat.eps)
        best = x.clone()
        best_loss = torch.full((x.shape[0],), float("-inf"), device=x.device)
        standing = torch.arange(x.shape[0], device=x.device)  # samples not yet fooled
        trace: list[torch.Tensor] = []
        for restart in range(p.restarts):
            last = restart == p.restarts - 1
            idx = standing
            x0, y0 = x[idx], y[idx]
            t0 = None if targets is None else targets[idx]
            if p.random_start:
                xa = clip_to_ball(
                    x0 + random_in_ball(x0, threat.norm, threat.eps, generator),
                    x0,
                    threat.norm,
                    threat.eps,
                    clf.bounds,
                )
            else:
                xa = x0.clone()
            for _ in range(p.steps):
                if idx.numel() == 0:
                    break
                loss, grad, logits = clf.loss_and_grad(xa, y0, loss_for(t0))
                trace.append(loss.mean())
                if p.early_stop:
                    fooled = logits.argmax(dim=1) != y0
                    if bool(fooled.any()):
                        best[idx[fooled]] = xa[fooled]
                        best_loss[idx[fooled]] = float("inf")
                        keep = ~fooled
                        idx, x0, y0, xa, grad = idx[keep], x0[keep], y0[keep], xa[keep], grad[keep]
                        t0 = None if t0 is None else t0[keep]
                xa = xa + step * steepest_direction(grad, threat.norm)
                xa = clip_to_ball(xa, x0, threat.norm, threat.eps, clf.bounds)
            if idx.numel() == 0:
                standing = idx
                break
            if last:
                # The engine verifies every candidate with a fresh forward pass, so the last
                # restart's final iterates need no extra check here.
                best[idx] = xa
                break
            logits = clf.logits(xa)
            loss = loss_for(t0)(logits, y0)
            fooled = logits.argmax(dim=1) != y0
            improved = loss > best_loss[idx]
            upd = improved | fooled
            best[idx[upd]] = xa[upd]
            best_loss[idx[upd]] = torch.where(fooled[upd], float("inf"), loss[upd])
            standing = idx[~fooled]
        loss_trace = [float(v) for v in torch.stack(trace).tolist()] if trace else None
        # samples whose iterate the attack itself saw misclassified: the engine checks this claim
        return AttackOutput(x_adv=best, loss_trace=loss_trace, claimed=best_loss == float("inf"))


def pick_target(
    clf: Classifier, x: torch.Tensor, y: torch.Tensor, which: str = "most-likely"
) -> torch.Tensor:
    """One target class per sample from the clean logits: the most or least likely wrong class."""
    logits = clf.logits(x)
    if which == "most-likely":
        return logits.scatter(1, y[:, None], float("-inf")).argmax(dim=1)
    if which == "least-likely":
        return logits.scatter(1, y[:, None], float("inf")).argmin(dim=1)
    raise ValueError(f"unknown target {which!r}; valid: most-likely, least-likely")
