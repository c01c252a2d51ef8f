"""Pieces the L0 attacks share (PGD-L0, Sparse-RS, σ-zero): the norm's units and budget.

Every L0 attack works on the units the threat counts (pixels with their channels, or single
numbers at ``l0-feature``), through the norm object's N x units x values view, so the same
code serves images, sequences and feature vectors.
"""

from __future__ import annotations

import torch

from robaudit.attacks.base import Attack
from robaudit.norms import get
from robaudit.norms.l0 import L0
from robaudit.threat import Threat


def l0_norm(attack: Attack, threat: Threat) -> L0:
    """The threat's L0 norm object; a ValueError for a norm the attack does not declare."""
    attack.check_norm(threat.norm)
    norm = get(threat.norm)
    assert isinstance(norm, L0)
    return norm


def unit_budget(norm: L0, eps: float, x: torch.Tensor) -> tuple[int, int]:
    """(units per input, whole units the budget allows) for a batch ``x``."""
    units = int(norm.group(x[:1]).shape[1]) if x.shape[0] else 0
    k = int(norm.budget(eps, 1, units, torch.device("cpu"))[0]) if units else 0
    return units, k
