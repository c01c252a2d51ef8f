"""The straight-through autograd helpers that a rewritten graph calls.

Each helper returns its first argument's value unchanged and passes a surrogate's gradient
backward. Plain torch code, so that the same functions serve as FX call targets and,
scripted, as TorchScript subgraphs inlined into a module's IR. Scalars arrive as tensors in
TorchScript. ``_HELPERS`` names them for the TorchScript path.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def _ste(value: Tensor, surrogate: Tensor) -> Tensor:
    """``value`` forward, the gradient of ``surrogate`` backward.

    ``s.detach() - s`` is +0.0 for finite ``s``, so the added term is -0.0, which leaves every
    value (-0.0, inf and NaN included) unchanged; ``nan_to_num`` keeps a non-finite surrogate
    from turning that zero into NaN. The cast keeps the value's dtype. ``value`` is detached:
    its own gradient is zero, or missing (``floor_divide`` has no derivative at all).
    """
    s = torch.nan_to_num(surrogate, 0.0, 0.0, 0.0)
    return value.detach() + (s.detach() - s).neg().to(value.dtype)


def _ste_kept(value: Tensor, surrogate: Tensor) -> Tensor:
    """:func:`_ste` for arithmetic on a mask (``(x < t) + y``): ``value`` keeps the gradient
    its other operand gives it, and the mask's share is added."""
    s = torch.nan_to_num(surrogate, 0.0, 0.0, 0.0)
    return value + (s.detach() - s).neg().to(value.dtype)


def _st_identity(value: Tensor, x: Tensor) -> Tensor:
    """round/floor/ceil/trunc/sign(x), quantize→dequantize(x): identity backward."""
    return _ste(value, x)


def _st_step(value: Tensor, a: Tensor, b: Tensor, sign: float, scale: Tensor) -> Tensor:
    """A threshold step (a > b) times ``scale``: backward of ``sign * (a - b) * scale``."""
    return _ste_kept(value, (a - b) * sign * scale)


def _st_step_div(value: Tensor, a: Tensor, b: Tensor, sign: float, divisor: Tensor) -> Tensor:
    """A threshold step divided by ``divisor``: backward of ``sign * (a - b) / divisor``."""
    return _ste_kept(value, (a - b) * sign / divisor)


def _st_select(
    value: Tensor, a: Tensor, b: Tensor, sign: float, hi: Tensor, lo: Tensor
) -> Tensor:
    """``where(a > b, hi, lo)`` with constant branches: backward of ``(hi - lo) * (a - b)``."""
    return _ste(value, (a - b) * sign * (hi - lo))


def _st_ratio(value: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Rounding division ``a // b``: backward of the true division ``a / b``."""
    return _ste(value, a / b)


def _st_onehot(value: Tensor, x: Tensor, dim: int, sign: float) -> Tensor:
    """``one_hot(argmax(x, dim))`` as floats: backward of ``softmax(x, dim)`` (classes last)."""
    return _ste(value, torch.softmax(x * sign, dim).movedim(dim, -1))


_HELPERS: dict[str, Callable[..., Tensor]] = {
    f.__name__: f
    for f in (_st_identity, _st_step, _st_step_div, _st_select, _st_ratio, _st_onehot)
}
