"""Small helpers shared by test modules (fixtures live in conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn


def one_thread() -> Iterator[None]:
    """Tiny models on a shared 2-core machine run far faster on one intra-op thread; use as
    ``yield from one_thread()`` inside a module-scoped autouse fixture."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class RowCounter(nn.Module):
    """Counts every input row the wrapped model is asked about: a query counter independent
    of robaudit's own."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.rows = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += int(x.shape[0])
        return self.inner(x)


class Affine(nn.Module):
    """logits = x·W + b over the flattened input: minimal perturbations known exactly."""

    def __init__(self, w: torch.Tensor, b: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone(), requires_grad=False)
        self.b = nn.Parameter(b.clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w + self.b
