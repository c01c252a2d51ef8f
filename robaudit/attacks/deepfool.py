"""DeepFool (Moosavi-Dezfooli, Fawzi & Frossard 2016), multi-class, L2 and Linf.

A minimal-norm attack: at each step the classifier is linearized around the current point
using the gradients of the logit gaps ``z_k − z_y`` for the ``candidates`` classes ranked
highest on the clean input, and the point moves onto the closest linearized boundary
(L2: ``r = |f_k|/‖w_k‖₂² · w_k``; Linf: ``r = |f_k|/‖w_k‖₁ · sign(w_k)``). The total step is
scaled by ``1 + overshoot`` and clipped to the input bounds; a sample leaves the batch once
misclassified. Exact in one step on an affine classifier away from the box. Samples never
fooled within ``steps`` come back unchanged. Inputs and outputs are N×C×H×W.
"""

from __future__ import annotations

import torch
from pydantic import Field

from robaudit.attacks.base import Attack, AttackOutput, AttackParams, register
from robaudit.attacks.common import ClosestBoundary, ranked_wrong
from robaudit.attacks.losses import logit_gap
from robaudit.attacks.projections import per_sample
from robaudit.classifier import Classifier
from robaudit.norms import get as get_norm
from robaudit.threat import Threat

# the paper's code adds 1e-4 to each step's length so rounding cannot stop it on the boundary
_PUSH = 1e-4


class DeepFoolParams(AttackParams):
    steps: int = Field(50, ge=1, le=10_000, description="maximum linearization steps")
    overshoot: float = Field(
        0.02, ge=0, le=1, description="the total perturbation is scaled by 1 + overshoot"
    )
    candidates: int = Field(
        10,
        ge=2,
        le=100_000,
        description="classes considered (the true one plus the top others on the clean input), "
        "capped at the number of classes",
    )

    def cost(self) -> float:
        """DeepFool usually converges in a handful of steps, each one backward per candidate."""
        return float(min(self.steps, 5) * (self.candidates - 1) + 1)


@register("deepfool")
class DeepFool(Attack[DeepFoolParams]):
    """Iterated steps onto the closest linearized decision boundary, with a small overshoot."""

    Params = DeepFoolParams

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
        norm = threat.norm
        self.check_norm(norm)
        lo, hi = clf.bounds
        n_others = min(p.candidates, clf.num_classes) - 1
        best = x.clone()
        if n_others < 1 or x.shape[0] == 0:
            return AttackOutput(x_adv=best)
        # the candidate classes: the highest other logits on the clean input, fixed throughout
        clean = clf.logits(x)
        others = ranked_wrong(clean, y, n_others)
        idx = torch.arange(x.shape[0], device=x.device)  # samples not yet misclassified
        x0, y0, cand = x, y, others
        xa = x.clone()
        r_tot = torch.zeros_like(x)
        for _ in range(p.steps):
            closest = ClosestBoundary(norm)
            for j in range(n_others):
                f, w, logits = clf.loss_and_grad(xa, y0, logit_gap(cand[:, j]))
                if j == 0:
                    fooled = logits.argmax(dim=1) != y0
                    if bool(fooled.any()):
                        best[idx[fooled]] = xa[fooled]
                        keep = ~fooled
                        idx, x0, y0, cand = idx[keep], x0[keep], y0[keep], cand[keep]
                        xa, r_tot, f, w = xa[keep], r_tot[keep], f[keep], w[keep]
                        if idx.numel() == 0:
                            break
                closest.offer(f, w)  # candidate j's linearized boundary
            best_dist, best_w = closest.dist, closest.w
            if idx.numel() == 0 or best_dist is None or best_w is None:
                break
            direction = get_norm(norm).steepest(best_w)
            r_tot = r_tot + per_sample(best_dist + _PUSH, direction) * direction
            xa = (x0 + (1 + p.overshoot) * r_tot).clamp(lo, hi)
            # keep the running total consistent with the clipped point
            r_tot = (xa - x0) / (1 + p.overshoot)
        if idx.numel():
            fooled = clf.logits(xa).argmax(dim=1) != y0
            best[idx[fooled]] = xa[fooled]
        return AttackOutput(x_adv=best)
