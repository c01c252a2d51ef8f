"""Per-sample attack losses; every loss here is maximized by an untargeted attack."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

LOSSES = ("ce", "margin")


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the true class (Madry et al. 2018)."""
    return F.cross_entropy(logits, y, reduction="none")


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Carlini–Wagner logit margin: best other logit minus the true logit (> 0 means fooled).

    Unlike cross-entropy it does not saturate when logits are scaled up (Carlini & Wagner 2017).
    """
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.clone()
    other.scatter_(1, y[:, None], float("-inf"))
    return other.amax(dim=1) - true


def get_loss(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Look up a loss by its config name."""
    if name == "ce":
        return cross_entropy
    if name == "margin":
        return margin
    raise ValueError(f"unknown loss {name!r}; valid: {', '.join(LOSSES)}")
