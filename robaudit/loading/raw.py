"""A data source before its checks, shared by the loaders of each source form."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from robaudit.errors import DataError
from robaudit.inputs import InputSpec

TORCHVISION_DATASETS = ("MNIST", "FashionMNIST", "KMNIST", "CIFAR10", "CIFAR100", "SVHN")


@dataclass(frozen=True)
class Raw:
    """A source before checks: all labels, and a way to decode only the chosen samples.

    ``take(idx)`` returns float32 NxCxHxW: 8-bit and unit data already mapped onto the
    bounds, user floats as given (checked afterwards).
    """

    name: str  # how error messages name the source, e.g. "data file 'a.npz'"
    y: np.ndarray
    n_x: int
    take: Callable[[np.ndarray], np.ndarray]
    class_names: tuple[str, ...] | None


def one_line(exc: BaseException | str) -> str:
    """Collapse an underlying message to one short line for our own one-line errors."""
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:297] + "..."


def layout(x: np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
    """Bring x to N x shape without copying values; uint8 may be channel-last, floats must not be."""
    if len(shape) != 3:
        return layout_flat(x, shape, name)
    c, h, w = shape
    if x.dtype == np.uint8:
        if x.ndim == 3:
            return x[:, None, :, :]
        if x.ndim == 4:
            if x.shape[1:3] == (h, w) and x.shape[3] in (1, 3, 4):
                return np.moveaxis(x, 3, 1)  # NxHxWxC, the usual layout of 8-bit arrays
            if x.shape[2:4] == (h, w) or x.shape[3] not in (1, 3, 4):
                return x  # NxCxHxW, or a wrong shape that _check_shape reports
            return np.moveaxis(x, 3, 1)
        raise DataError(
            f"{name}: uint8 x has shape {x.shape}; expected NxHxW, NxHxWxC or NxCxHxW "
            f"for input_shape {shape}"
        )
    if x.dtype.kind == "f":
        if x.ndim == 3 and c == 1:
            return x[:, None, :, :]
        if x.ndim == 4:
            if x.shape[1:] != shape and x.shape[1:3] == (h, w) and x.shape[3] in (1, 3, 4):
                raise DataError(
                    f"{name}: float x has shape {x.shape}, which looks channel-last (NxHxWxC); "
                    f"float x must be NxCxHxW, here Nx{c}x{h}x{w}"
                )
            return x
        raise DataError(f"{name}: float x has shape {x.shape}; expected NxCxHxW (Nx{c}x{h}x{w})")
    raise DataError(
        f"{name}: x has dtype {x.dtype}; expected float (already within bounds) or uint8 (0..255)"
    )


def layout_flat(x: np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
    """Vectors (NxF) and sequences (NxCxT, or NxT for one channel) as stored, nothing moved."""
    if x.dtype != np.uint8 and x.dtype.kind != "f":
        raise DataError(
            f"{name}: x has dtype {x.dtype}; expected float (already within bounds) or uint8"
        )
    if len(shape) == 2 and shape[0] == 1 and x.ndim == 2:
        return x[:, None, :]
    if x.shape[1:] != shape:
        spec = InputSpec.of(shape)
        raise DataError(
            f"{name}: x has shape {x.shape}; the model's input is a {spec.describe()}, so x "
            f"must be N x {' x '.join(map(str, shape))}"
        )
    return x


def to_float(x: np.ndarray, bounds: tuple[float, float], what: str) -> np.ndarray:
    """uint8 -> bounds by lo + x/255·(hi-lo); floats -> float32 unchanged (checked later)."""
    if x.dtype == np.uint8:
        lo, hi = bounds
        return (lo + x.astype(np.float32) * np.float32((hi - lo) / 255.0)).astype(np.float32)
    if x.dtype.kind == "f":
        return np.array(x, dtype=np.float32, copy=True)
    raise DataError(f"{what} has dtype {x.dtype}; expected float or uint8")
