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

from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field, model_validator

from robaudit.attacks.base import Attack, AttackOutput, AttackParams, register
from robaudit.attacks.common import mean_trace, most_likely_wrong
from robaudit.attacks.feasible import mask_gradient, project, restrict
from robaudit.attacks.losses import get_loss, get_targeted_loss, with_targets
from robaudit.attacks.projections import (
    ball_scale,
    clip_to_ball,
    random_point,
    steepest_direction,
)
from robaudit.classifier import Classifier, LossFn
from robaudit.threat import Threat


class FGSMParams(AttackParams):
    loss: Literal["ce", "margin"] = Field("ce", description="loss to ascend: ce or margin (C&W)")


@register("fgsm")
class FGSM(Attack[FGSMParams]):
    """One full-size step along the gradient's steepest direction."""

    Params = FGSMParams

    def run(
        self,
        clf: Classifier,
        x: torch.Tensor,
        y: torch.Tensor,
        threat: Threat,
        generator: torch.Generator,
    ) -> AttackOutput:
        _, grad, _ = clf.loss_and_grad(x, y, get_loss(self.params.loss))
        x_adv = x + ball_scale(x, threat.norm, threat.eps) * steepest_direction(grad, threat.norm)
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

    def step_for(self, eps: float | torch.Tensor) -> float | torch.Tensor:
        """The absolute step size at ``eps`` (Madry's 2.5·eps/steps unless told otherwise);
        ``eps`` may be a per-sample radius (:func:`ball_scale`, snr)."""
        if self.step_size is not None:
            return self.step_size
        rel = self.rel_step_size if self.rel_step_size is not None else 2.5 / self.steps
        return rel * eps

    def cost(self) -> float:
        return float(self.steps * self.restarts)


@register("pgd")
class PGD(Attack[PGDParams]):
    """Projected gradient ascent from random starts; the workhorse first-order attack.

    With active tabular constraints every iterate is projected onto the feasible set as well
    (:mod:`robaudit.attacks.feasible`) and immutable features get no gradient."""

    Params = PGDParams

    def run(
        self,
        clf: Classifier,
        x: torch.Tensor,
        y: torch.Tensor,
        threat: Threat,
        generator: torch.Generator,
    ) -> AttackOutput:
        p = self.params
        targets = pick_target(clf, x, y, p.target) if p.targeted else None
        run = _Run(p, clf, x, y, threat, generator, targets)
        standing = torch.arange(x.shape[0], device=x.device)  # samples not yet fooled
        for restart in range(p.restarts):
            a = run.ascend(standing)
            if a.idx.numel() == 0:
                break
            if restart == p.restarts - 1:
                # The engine verifies every candidate with a fresh forward pass, so the last
                # restart's final iterates need no extra check here.
                run.best[a.idx] = a.xa
                break
            standing = run.keep_better(a)
        # samples whose iterate the attack itself saw misclassified: the engine checks this claim
        claimed = run.best_loss == float("inf")
        return AttackOutput(x_adv=run.best, loss_trace=mean_trace(run.trace), claimed=claimed)


@dataclass
class _Active:
    """The samples one restart still works on: batch positions, clean inputs, labels, targets,
    current iterates."""

    idx: torch.Tensor
    x0: torch.Tensor
    y0: torch.Tensor
    t0: torch.Tensor | None
    xa: torch.Tensor

    def select(self, keep: torch.Tensor) -> _Active:
        t0 = None if self.t0 is None else self.t0[keep]
        return _Active(self.idx[keep], self.x0[keep], self.y0[keep], t0, self.xa[keep])


class _Run:
    """One batch's PGD: the best point per sample over the restarts, its loss (+inf once
    fooled) and the per-step mean losses."""

    def __init__(self, p: PGDParams, clf: Classifier, x: torch.Tensor, y: torch.Tensor,
                 threat: Threat, generator: torch.Generator,
                 targets: torch.Tensor | None) -> None:  # fmt: skip
        self.p, self.clf, self.x, self.y, self.threat = p, clf, x, y, threat
        self.gen, self.targets = generator, targets
        self.best = x.clone()
        self.best_loss = torch.full((x.shape[0],), float("-inf"), device=x.device)
        self.trace: list[torch.Tensor] = []

    def loss_for(self, t: torch.Tensor | None) -> LossFn:
        p = self.p
        return get_loss(p.loss) if t is None else with_targets(get_targeted_loss(p.loss), t)

    def ascend(self, standing: torch.Tensor) -> _Active:
        """One restart's steps on the samples ``standing``; those fooled on the way leave."""
        p, norm, eps, bounds = self.p, self.threat.norm, self.threat.eps, self.clf.bounds
        x0 = self.x[standing]
        xa = random_point(x0, norm, eps, bounds, self.gen) if p.random_start else x0.clone()
        xa = restrict(xa, x0, norm, eps)
        t0 = None if self.targets is None else self.targets[standing]
        a = _Active(standing, x0, self.y[standing], t0, xa)
        for _ in range(p.steps):
            if a.idx.numel() == 0:
                break
            loss, grad, logits = self.clf.loss_and_grad(a.xa, a.y0, self.loss_for(a.t0))
            self.trace.append(loss.mean())
            if p.early_stop:
                fooled = logits.argmax(dim=1) != a.y0
                if bool(fooled.any()):
                    self.best[a.idx[fooled]] = a.xa[fooled]
                    self.best_loss[a.idx[fooled]] = float("inf")
                    keep = ~fooled
                    a, grad = a.select(keep), grad[keep]
            step = p.step_for(ball_scale(a.x0, norm, eps))
            xa = a.xa + step * steepest_direction(mask_gradient(grad), norm)
            a.xa = project(xa, a.x0, norm, eps, bounds)
        return a

    def keep_better(self, a: _Active) -> torch.Tensor:
        """Keep each sample's final iterate where fooled or of higher loss; the samples left."""
        logits = self.clf.logits(a.xa)
        loss = self.loss_for(a.t0)(logits, a.y0)
        fooled = logits.argmax(dim=1) != a.y0
        improved = loss > self.best_loss[a.idx]
        upd = improved | fooled
        self.best[a.idx[upd]] = a.xa[upd]
        self.best_loss[a.idx[upd]] = torch.where(fooled[upd], float("inf"), loss[upd])
        return a.idx[~fooled]


def pick_target(
    clf: Classifier, x: torch.Tensor, y: torch.Tensor, which: str = "most-likely"
) -> torch.Tensor:
    """One target class per sample from the clean logits: the most or least likely wrong class."""
    logits = clf.logits(x)
    if which == "most-likely":
        return most_likely_wrong(logits, y)
    if which == "least-likely":
        return logits.scatter(1, y[:, None], float("inf")).argmin(dim=1)
    raise ValueError(f"unknown target {which!r}; valid: most-likely, least-likely")
