"""Severity constants of the common corruptions, and the rule that picks them for an input size.

Two tables, one entry per severity 1..5, in the order and units of the reference scripts
(images in [0, 1], lengths in pixels):

* ``CIFAR`` from Hendrycks & Dietterich's ``make_cifar_c.py`` (CIFAR-10-C, 32x32 inputs);
* ``IMAGENET`` from ``make_imagenet_c.py`` as ported by the ``imagecorruptions`` package
  (ImageNet-C, 224x224 inputs); where the two differ (elastic transform, pixelate's
  upsampling, frost's texture scale, fog's map size, grayscale paths) the port is followed.

The rule (:func:`regime`, :func:`constants`): with ``side = min(H, W)``, inputs with
``side < 64`` use the CIFAR table with reference side 32, the others the ImageNet table with
reference side 224. Pixel lengths are multiplied by ``s = side / reference side`` (blur radii
and sigmas of defocus, glass, motion, Gaussian blur, snow's motion streaks, spatter's sigmas;
glass blur's pixel displacement is ``max(1, round(delta * s))``). Relative quantities are kept
as they are (noise levels, zoom factors, pixelate's factor, fog, brightness, contrast,
saturation, JPEG quality, snow's zoom). The CIFAR elastic transform is defined in multiples of
the image side (``IMSIZE``), so it uses ``side`` itself; the ImageNet one (imagecorruptions'
version) is already relative to the image shape. At exactly 32 and 224 the tables are the
references' constants, unchanged.
"""

from __future__ import annotations

import math
from typing import Any

CIFAR_SIDE = 32
IMAGENET_SIDE = 224
SMALL_BELOW = 64  # sides below this use the CIFAR table


def _arange(stop: float, step: float) -> tuple[float, ...]:
    """numpy's ``arange(1, stop, step)`` as a tuple (the zoom factors of zoom blur)."""
    n = math.ceil((stop - 1.0) / step)  # numpy's length rule
    return tuple(round(1.0 + i * step, 10) for i in range(n))


CIFAR: dict[str, list[Any]] = {
    "gaussian_noise": [0.04, 0.06, 0.08, 0.09, 0.10],
    "shot_noise": [500, 250, 100, 75, 50],
    "impulse_noise": [0.01, 0.02, 0.03, 0.05, 0.07],
    "speckle_noise": [0.06, 0.1, 0.12, 0.16, 0.2],
    "gaussian_blur": [0.4, 0.6, 0.7, 0.8, 1.0],
    # (sigma, max_delta, iterations)
    "glass_blur": [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)],
    # (radius, alias_blur)
    "defocus_blur": [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)],
    # (radius, sigma) of ImageMagick's motion blur
    "motion_blur": [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)],
    "zoom_blur": [_arange(1.06, 0.01), _arange(1.11, 0.01), _arange(1.16, 0.01),
                  _arange(1.21, 0.01), _arange(1.26, 0.01)],
    # (loc, scale, zoom, threshold, motion radius, motion sigma, blend)
    "snow": [(0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
             (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9), (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
             (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)],
    # (image weight, frost weight)
    "frost": [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)],
    # (amount, wibble decay)
    "fog": [(0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)],
    "brightness": [0.05, 0.1, 0.15, 0.2, 0.3],
    # (loc, scale, sigma, threshold, intensity or mud sigma, mud)
    "spatter": [(0.62, 0.1, 0.7, 0.7, 0.5, 0), (0.65, 0.1, 0.8, 0.7, 0.5, 0),
                (0.65, 0.3, 1, 0.69, 0.5, 0), (0.65, 0.1, 0.7, 0.69, 0.6, 1),
                (0.65, 0.1, 0.5, 0.68, 0.6, 1)],
    "contrast": [0.75, 0.5, 0.4, 0.3, 0.15],
    # (alpha, sigma, affine) in multiples of the image side
    "elastic_transform": [(0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06),
                          (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)],
    "pixelate": [0.95, 0.9, 0.85, 0.75, 0.65],
    "jpeg_compression": [80, 65, 58, 50, 40],
    # (saturation factor, offset)
    "saturate": [(0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)],
}

IMAGENET: dict[str, list[Any]] = {
    "gaussian_noise": [0.08, 0.12, 0.18, 0.26, 0.38],
    "shot_noise": [60, 25, 12, 5, 3],
    "impulse_noise": [0.03, 0.06, 0.09, 0.17, 0.27],
    "speckle_noise": [0.15, 0.2, 0.35, 0.45, 0.6],
    "gaussian_blur": [1, 2, 3, 4, 6],
    "glass_blur": [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)],
    "defocus_blur": [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)],
    "motion_blur": [(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)],
    "zoom_blur": [_arange(1.11, 0.01), _arange(1.16, 0.01), _arange(1.21, 0.02),
                  _arange(1.26, 0.02), _arange(1.31, 0.03)],
    "snow": [(0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
             (0.55, 0.3, 4, 0.9, 12, 8, 0.7), (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
             (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)],
    "frost": [(1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)],
    "fog": [(1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)],
    "brightness": [0.1, 0.2, 0.3, 0.4, 0.5],
    "spatter": [(0.65, 0.3, 4, 0.69, 0.6, 0), (0.65, 0.3, 3, 0.68, 0.6, 0),
                (0.65, 0.3, 2, 0.68, 0.5, 0), (0.65, 0.3, 1, 0.65, 1.5, 1),
                (0.67, 0.4, 1, 0.65, 1.5, 1)],
    "contrast": [0.4, 0.3, 0.2, 0.1, 0.05],
    # alpha of imagecorruptions' elastic transform (sigma = side/100, shifts up to side/200)
    "elastic_transform": [250 * 0.05, 250 * 0.065, 250 * 0.085, 250 * 0.1, 250 * 0.12],
    "pixelate": [0.6, 0.5, 0.4, 0.3, 0.25],
    "jpeg_compression": [25, 18, 15, 10, 7],
    "saturate": [(0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)],
}

# which positions of each entry are pixel lengths (scaled by side / reference side)
_LENGTHS: dict[str, tuple[int, ...]] = {
    "gaussian_blur": (-1,),  # a bare number
    "glass_blur": (0,),
    "defocus_blur": (0, 1),
    "motion_blur": (0, 1),
    "snow": (4, 5),
    "spatter": (2,),
}


def regime(size: int | tuple[int, int]) -> str:
    """``"cifar"`` for inputs whose smaller side is below 64 pixels, else ``"imagenet"``."""
    side = size if isinstance(size, int) else min(size)
    return "cifar" if side < SMALL_BELOW else "imagenet"


def scale(size: int | tuple[int, int]) -> float:
    """``side / reference side`` of the regime of ``size``."""
    side = size if isinstance(size, int) else min(size)
    return side / (CIFAR_SIDE if regime(size) == "cifar" else IMAGENET_SIDE)


def _scaled(name: str, entry: Any, s: float, side: int, small: bool) -> Any:
    if name == "elastic_transform" and small:
        return tuple(side * v for v in entry)
    if name == "spatter" and entry[5] == 1:  # the mud branch: position 4 is a sigma too
        entry = (*entry[:4], entry[4] * s, entry[5])
    positions = _LENGTHS.get(name, ())
    if positions == (-1,):
        return entry * s
    if not positions:
        return entry
    out = list(entry)
    for p in positions:
        out[p] = out[p] * s
    if name == "glass_blur":
        out[1] = max(1, round(entry[1] * s))
    return tuple(out)


def constants(name: str, size: int | tuple[int, int]) -> tuple[Any, ...]:
    """The five per-severity constants of corruption ``name`` for inputs of ``size`` (the
    side, or ``(H, W)``), scaled by the rule in the module docstring."""
    small = regime(size) == "cifar"
    table = CIFAR if small else IMAGENET
    if name not in table:
        raise KeyError(f"unknown corruption {name!r}")
    side = size if isinstance(size, int) else min(size)
    s = scale(size)
    return tuple(_scaled(name, entry, s, side, small) for entry in table[name])
