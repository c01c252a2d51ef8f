"""Per-sample attack losses; every loss here is maximized by the attack.

Untargeted losses take ``(logits, y)``; targeted ones take ``(logits, y, t)`` and grow as
the logits move from the true class ``y`` towards the target ``t``. DLR and targeted DLR
are from Croce & Hein 2020 ("Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
import torch.nn.functional as F

LOSSES = ("ce", "margin", "dlr")
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
TargetedLossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
_TINY = 1e-12
_Fn = TypeVar("_Fn")


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the true class (Madry et al. 2018)."""
    return F.cross_entropy(logits, y, reduction="none")


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Carlini–Wagner logit margin: best other logit minus the true logit (> 0 means fooled).

    Unlike cross-entropy it does not saturate when logits are scaled up (Carlini & Wagner 2017).
    """
    true = logits.gather(1, y[:, None]).squeeze(1)
    if logits.requires_grad or logits.shape[1] < 2:
        # amax spreads the gradient over tied best classes, so a tie cannot stall the attack
        other = logits.clone()
        other.scatter_(1, y[:, None], float("-inf"))
        return other.amax(dim=1) - true
    # scores only (black-box searches): the best other logit is the top one unless that is
    # the true class, then the second; fewer ops than a masked copy, the same value on ties
    top = logits.topk(2, dim=1).values
    best, second = top[:, 0], top[:, 1]
    return torch.where(best > true, best, second) - true


def dlr(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Difference of Logits Ratio: −(z_y − max_{i≠y} z_i) / (z_π1 − z_π3) (Croce & Hein 2020).

    ``π`` sorts the logits in decreasing order. Shift- and scale-invariant in the logits, so
    it neither saturates like cross-entropy nor depends on the logits' scale like the margin.
    With two classes ``z_π3`` does not exist; the denominator is then 1 (the plain margin).
    """
    num = margin(logits, y)
    if logits.shape[1] < 3:
        return num
    top = logits.topk(3, dim=1).values
    return num / (top[:, 0] - top[:, 2] + _TINY)


def cross_entropy_targeted(logits: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Minus the cross-entropy of the target class (ascending it moves towards ``t``)."""
    return -F.cross_entropy(logits, t, reduction="none")


def margin_targeted(logits: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Carlini–Wagner targeted margin: the target logit minus the best other logit."""
    return -margin(logits, t)


def dlr_targeted(logits: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Targeted DLR: −(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2) (Croce & Hein 2020).

    With three classes the denominator uses ``z_π3`` alone, with two it is 1.
    """
    num = logits.gather(1, t[:, None]).squeeze(1) - logits.gather(1, y[:, None]).squeeze(1)
    c = logits.shape[1]
    if c < 3:
        return num
    top = logits.topk(min(c, 4), dim=1).values
    return num / (top[:, 0] - top[:, 2:].mean(dim=1) + _TINY)


_UNTARGETED: dict[str, LossFn] = {"ce": cross_entropy, "margin": margin, "dlr": dlr}
_TARGETED: dict[str, TargetedLossFn] = {
    "ce": cross_entropy_targeted,
    "margin": margin_targeted,
    "dlr": dlr_targeted,
}


def _lookup(table: dict[str, _Fn], name: str) -> _Fn:
    if name not in table:
        raise ValueError(f"unknown loss {name!r}; valid: {', '.join(LOSSES)}")
    return table[name]


def get_loss(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Look up an untargeted loss by its config name."""
    return _lookup(_UNTARGETED, name)


def get_targeted_loss(name: str) -> TargetedLossFn:
    """Look up the targeted version of a loss by its config name."""
    return _lookup(_TARGETED, name)


def with_targets(
    fn: TargetedLossFn, t: torch.Tensor
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Bind the targets of a targeted loss, giving the ``(logits, y)`` form attacks call."""

    def bound(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return fn(logits, y, t)

    return bound


def logit_gap(k: torch.Tensor) -> LossFn:
    """Per sample ``z_k − z_y`` for a per-sample class ``k`` (negative while ``y`` wins): the
    linearized boundary DeepFool and FAB step towards."""

    def gap(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return logits.gather(1, k[:, None]).squeeze(1) - logits.gather(1, y[:, None]).squeeze(1)

    return gap
