"""Deep copies of a model that own their parameters, so the original is never shared or changed."""

from __future__ import annotations

import copy
from typing import TypeVar

import torch
from torch import nn

_M = TypeVar("_M", bound=nn.Module)


def _owned_copy(model: _M) -> _M:
    """A deep copy that owns its parameters. Outside no_grad, TorchScript parameters would be
    copied as clones whose grad_fn reaches back into the original's; inside it they lose
    requires_grad, which is put back."""
    with torch.no_grad():
        out = copy.deepcopy(model)
    for src, dst in zip(model.parameters(), out.parameters(), strict=True):
        dst.requires_grad_(src.requires_grad)
    return out
