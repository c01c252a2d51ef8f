"""The checks every data source gets: labels, the seeded subset, shapes, values, channels."""

from __future__ import annotations

import numpy as np

from robaudit.errors import DataError

# ITU-R 601-2 luma, the weights PIL uses for RGB -> L.
LUMA = (0.299, 0.587, 0.114)
BOUNDS_TOL = 1e-6


def check_labels(y: np.ndarray, name: str, num_classes: int) -> np.ndarray:
    """Labels as int64 1-D; floats are accepted only when every value is a whole number."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        hint = " (one-hot? store class indices, e.g. y.argmax(1))" if y.ndim == 2 else ""
        raise DataError(
            f"{name}: y has shape {y.shape}; expected a 1-D array of class indices{hint}"
        )
    if y.dtype.kind in "iu":
        y64 = y.astype(np.int64)
    elif y.dtype.kind == "f" and len(y) > 0:
        bad = ~np.isfinite(y) | (y != np.round(y))
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(
                f"{name}: y holds non-integer label {y[i].item()!r} at position {i}; "
                "labels must be integer class indices"
            )
        y64 = y.astype(np.int64)
    elif y.dtype.kind == "f":
        y64 = y.astype(np.int64)
    else:
        raise DataError(f"{name}: y has dtype {y.dtype}; labels must be integer class indices")
    out = (y64 < 0) | (y64 >= num_classes)
    if out.any():
        i = int(np.argmax(out))
        raise DataError(
            f"{name}: label {int(y64[i])} at position {i} is outside [0, {num_classes}) "
            f"({int(out.sum())} labels out of range; num_classes is {num_classes})"
        )
    return y64


def choose_subset(n: int, samples: int | None, seed: int) -> np.ndarray:
    """All positions, or a seeded subset without replacement, sorted back into source order.

    Public so that sources decoded lazily elsewhere (a torch Dataset) pick the same subset.
    """
    if samples is None or samples >= n:
        return np.arange(n, dtype=np.int64)
    rs = np.random.RandomState(seed)
    return np.sort(rs.choice(n, size=samples, replace=False)).astype(np.int64)


choose = choose_subset


def check_shape(x: np.ndarray, shape: tuple[int, ...], name: str) -> None:
    """HxW must match exactly; channels must match or be convertible (1<->3).

    Vectors and sequences must match exactly: their channels are not colours.
    """
    if len(shape) != 3:
        if tuple(int(s) for s in x.shape[1:]) != shape:
            raise DataError(
                f"{name}: samples have shape {tuple(x.shape[1:])} but the model's input_shape "
                f"is {shape}"
            )
        return
    c, h, w = shape
    got = tuple(int(s) for s in x.shape[1:])
    if x.ndim != 4 or got[1:] != (h, w):
        raise DataError(
            f"{name}: samples have shape {got} (CxHxW) but the model's input_shape is {shape}"
        )
    if got[0] != c and {got[0], c} != {1, 3}:
        raise DataError(
            f"{name}: samples have {got[0]} channels but the model takes {c}; "
            "only 1->3 and 3->1 channel conversion is supported"
        )


def check_values(
    x: np.ndarray, bounds: tuple[float, float], name: str, positions: np.ndarray
) -> None:
    """Finite and inside the bounds, with a hint for the two usual mistakes.

    ``positions``: each row's position in the source, for the message (x is one chunk).
    """
    finite = np.isfinite(x)
    if not finite.all():
        bad = int((~finite).sum())
        first = int(positions[int(np.argmax(~finite.reshape(len(x), -1).all(axis=1)))])
        raise DataError(f"{name}: x contains {bad} NaN/inf values (first in sample {first})")
    lo, hi = bounds
    mn, mx = float(x.min()), float(x.max())
    if mn < lo - BOUNDS_TOL or mx > hi + BOUNDS_TOL:
        hint = ""
        if mn < 0 and lo == 0:
            hint = (
                "; data looks already normalized (mean/std): give pixel values, robaudit applies "
                "the normalization inside the model wrapper"
            )
        elif mx > 1.5 and (lo, hi) == (0.0, 1.0):
            hint = "; looks like 0-255 data: divide by 255 or store x as uint8"
        raise DataError(
            f"{name}: x values span [{mn:.6g}, {mx:.6g}], outside the declared bounds "
            f"[{lo:g}, {hi:g}]{hint}"
        )


def convert_channels(x: np.ndarray, c: int) -> np.ndarray:
    """1->3 by repeat, 3->1 by luminance; same count (and any non-image) is a no-op."""
    have = x.shape[1]
    if have == c or x.ndim != 4:
        return x
    if have == 1 and c == 3:
        return np.repeat(x, 3, axis=1)
    if have == 3 and c == 1:
        wts = np.asarray(LUMA, dtype=np.float32).reshape(1, 3, 1, 1)
        gray: np.ndarray = (x * wts).sum(axis=1, keepdims=True, dtype=np.float32)
        return gray
    raise DataError(f"cannot convert {have} channels to {c}")  # check_shape rules this out
