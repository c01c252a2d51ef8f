"""A universal patch judged on the audited images (Brown et al. 2017's sticker threat).

:func:`evaluate_universal` pastes ONE trained patch (:mod:`robaudit.attacks.patch_universal`),
unscaled and unrotated, at ``placements`` random places on each audited image; each set of
candidates goes through the engine's :func:`~robaudit.verification.verify_batch` at the patch
threat (anywhere, the patch's share), so every pasted image is checked to change only one
region of the declared size and judged by a fresh forward pass. Two numbers:

* ``accuracy`` — the share of (image, placement) pairs still classified correctly (clean-wrong
  images count as wrong): Brown et al.'s accuracy with the patch at a random place;
* ``robust_accuracy`` — images correct clean and under EVERY placement tried: the worst case
  over placements, the audit's robust accuracy at this threat (the number a gate uses).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from robaudit.attacks.patch_universal import random_placements
from robaudit.classifier import Classifier
from robaudit.threat import Threat
from robaudit.verification import verify_batch


@dataclass(frozen=True)
class UniversalResult:
    """The patch on the audited images: per-image and per-placement outcomes."""

    correct: torch.Tensor  # bool[P, N]: still correct with the patch at placement p
    clean: torch.Tensor  # bool[N]: correct without the patch
    budget_violations: int  # placements the engine found outside the region (must be 0)

    @property
    def accuracy(self) -> float:
        """Share of (image, placement) pairs classified correctly (random placement)."""
        ok = self.correct & self.clean[None, :]
        return float(ok.float().mean()) if ok.numel() else math.nan

    @property
    def robust(self) -> torch.Tensor:
        """bool[N]: correct clean and under every placement tried."""
        return self.clean & self.correct.all(dim=0)

    @property
    def robust_accuracy(self) -> float:
        return float(self.robust.float().mean()) if self.robust.numel() else math.nan


def evaluate_universal(
    clf: Classifier,
    x: torch.Tensor,
    y: torch.Tensor,
    patch: torch.Tensor,
    size: float,
    generator: torch.Generator,
    placements: int = 8,
) -> UniversalResult:
    """The patch at ``placements`` random places per image, each verified by the engine."""
    threat = Threat("patch", size)
    clean = clf.predict(x) == y
    rows, violations = [], 0
    for cand in random_placements(x, patch, placements, generator):
        v = verify_batch(clf, x, cand, y, threat)
        violations += v.budget + v.bounds
        rows.append(~v.broken.to(clean.device))
    return UniversalResult(torch.stack(rows), clean, violations)
