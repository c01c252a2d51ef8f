"""Random noise of full budget: the baseline that separates adversarial from merely noisy.

If random noise breaks as many samples as PGD, the "attack" found nothing a sensor glitch
would not; if PGD breaks far more, the model has real adversarial vulnerability.
"""

from __future__ import annotations

import torch
from pydantic import Field

from robaudit.attacks.base import Attack, AttackOutput, AttackParams, register
from robaudit.attacks.projections import random_point
from robaudit.classifier import Classifier
from robaudit.threat import Threat


class NoiseParams(AttackParams):
    draws: int = Field(
        1, ge=1, le=10_000, description="random draws per sample; any fooling one counts"
    )


@register("noise")
class Noise(Attack[NoiseParams]):
    """Uniform sign noise at the Linf ball's corners, or Gaussian directions on the L2 sphere."""

    Params = NoiseParams

    def run(
        self,
        clf: Classifier,
        x: torch.Tensor,
        y: torch.Tensor,
        threat: Threat,
        generator: torch.Generator,
    ) -> AttackOutput:
        best = x.clone()
        standing = torch.arange(x.shape[0], device=x.device)
        queries = torch.zeros(x.shape[0], dtype=torch.long)
        for _ in range(self.params.draws):
            if standing.numel() == 0:
                break
            queries[standing.cpu()] += 1
            x0 = x[standing]
            cand = random_point(x0, threat.norm, threat.eps, clf.bounds, generator, on_sphere=True)
            fooled = clf.predict(cand) != y[standing]
            best[standing] = cand  # keep the latest draw for samples still standing
            standing = standing[~fooled]
        return AttackOutput(x_adv=best, queries=queries)
