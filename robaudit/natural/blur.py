"""Blur family: defocus, glass, motion, zoom and Gaussian blur (all channel-wise)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ._common import (
    Rng,
    clipped_zoom,
    filter2d,
    gaussian_blur,
    motion_line_blur,
    rng_for,
    separable_filter,
)


def disk_kernel(radius: float, alias_blur: float) -> Tensor:
    """ImageNet-C's anti-aliased disk: the pixels within ``radius`` of the centre of a
    17x17 grid (``2 ceil(radius) + 1`` when ``radius > 8``), normalised, then OpenCV's
    ``GaussianBlur`` (3x3, 5x5 when ``radius > 8``, sigma ``alias_blur``, reflect-101)."""
    half, ksize = (8, 3) if radius <= 8 else (math.ceil(radius), 5)
    t = torch.arange(-half, half + 1, dtype=torch.float64)
    disk = ((t[:, None] ** 2 + t[None, :] ** 2) <= radius**2).to(torch.float64)
    disk = disk / disk.sum()
    if alias_blur <= 0:
        return disk
    g = torch.exp(-((torch.arange(ksize, dtype=torch.float64) - (ksize - 1) / 2) ** 2)
                  / (2 * alias_blur**2))
    g = g / g.sum()
    return separable_filter(disk[None, None], g, g, "reflect101")[0, 0]


def defocus_blur_fn(x: Tensor, radius: float, alias_blur: float) -> Tensor:
    """Each channel filtered with :func:`disk_kernel` (OpenCV ``filter2D``, reflect-101)."""
    kernel = disk_kernel(radius, alias_blur)
    if kernel.numel() == 1:
        return x
    return filter2d(x, kernel, "reflect101").clamp(0, 1)


def glass_blur_fn(
    x: Tensor, sigma: float, max_delta: int, iterations: int, rng: Rng | None = None
) -> Tensor:
    """Gaussian blur, 8-bit truncation, ``iterations`` sweeps of local pixel copies, Gaussian
    blur again (ImageNet-C's glass blur).

    A sweep visits the pixels from the bottom-right to the top-left, ``max_delta`` away from
    the borders, and sets each to the pixel ``(dy, dx)`` away, ``dx, dy`` uniform in
    ``[-max_delta, max_delta)``. The reference writes ``x[h, w], x[h', w'] = x[h', w'],
    x[h, w]`` on numpy views, which copies rather than swaps (the second assignment writes
    back the value just copied); that is the definition ImageNet-C and CIFAR-10-C were made
    with, and it is kept here. The copies are sequential (a value can travel further than
    ``max_delta``) and only depend on the draws, so they are composed into one source map per
    image (a loop over pixel positions, vectorised over the batch) and applied to all
    channels at once. The 8-bit truncation belongs to the copy step (skipped when
    ``iterations == 0``, so that ``sigma = 0, iterations = 0`` is the identity)."""
    y = gaussian_blur(x, sigma)
    if iterations <= 0 or max_delta <= 0:
        return y.clamp(0, 1)
    n, c, h, w = x.shape
    y = torch.floor(y.clamp(0, 1) * 255.0) / 255.0
    d = int(max_delta)
    positions = [(r, col) for r in range(h - d, d, -1) for col in range(w - d, d, -1)]
    if positions:
        pos = np.array([r * w + col for r, col in positions], dtype=np.int64)
        offsets = rng_for(rng, x).randint(-d, d, (iterations, len(positions), 2)).cpu().numpy()
        targets = pos[None, None, :] + offsets[..., 1] * w + offsets[..., 0]  # [N, it, P]
        sweep = glass_sweeps_parallel if d == 1 else glass_sweeps
        perm = sweep(targets, pos, n, h * w)
        index = torch.from_numpy(perm).to(x.device)[:, None, :].expand(n, c, h * w)
        y = y.reshape(n, c, h * w).gather(2, index).reshape(n, c, h, w)
    return gaussian_blur(y, sigma).clamp(0, 1)


def glass_sweeps(targets: np.ndarray, pos: np.ndarray, n: int, size: int) -> np.ndarray:
    """The copies of every sweep in the reference's order, one position at a time: each
    position takes the source its target holds at that moment. ``[N, size]`` source map."""
    perm = np.tile(np.arange(size, dtype=np.int64), (n, 1))
    rows = np.arange(n)
    for it in range(targets.shape[1]):
        tgt = targets[:, it]
        for k, p in enumerate(pos):
            perm[:, p] = perm[rows, tgt[:, k]]
    return perm


def glass_sweeps_parallel(
    targets: np.ndarray, pos: np.ndarray, n: int, size: int
) -> np.ndarray:
    """The same sweeps when ``max_delta`` is 1 (every CIFAR-10-C severity): offsets are -1 or
    0, so each target lies up or left of its position, which a bottom-right-to-top-left sweep
    has not written yet: every copy of a sweep reads the value from before the sweep, and the
    whole sweep is one gather (equal to :func:`glass_sweeps`, tested)."""
    perm = np.tile(np.arange(size, dtype=np.int64), (n, 1))
    rows = np.arange(n)[:, None]
    for it in range(targets.shape[1]):
        perm[:, pos] = perm[rows, targets[:, it]]
    return perm


def motion_blur_fn(
    x: Tensor, radius: float, sigma: float, rng: Rng | None = None,
    angles: Tensor | None = None,
) -> Tensor:
    """ImageMagick's motion blur (:func:`~._common.motion_line_blur`) at a random angle in
    [-45, 45) degrees per image (or the given ``angles``)."""
    if radius <= 0:
        return x
    if angles is None:
        angles = rng_for(rng, x).uniform((), -45.0, 45.0)
    return motion_line_blur(x, radius, sigma, angles).clamp(0, 1)


def zoom_blur_fn(x: Tensor, factors: tuple[float, ...]) -> Tensor:
    """The mean of ``x`` and its central zooms by each factor (ImageNet-C's zoom blur)."""
    if not factors:
        return x
    out = x.clone()
    for z in factors:
        out = out + clipped_zoom(x, float(z))
    return (out / (len(factors) + 1)).clamp(0, 1)


def gaussian_blur_fn(x: Tensor, sigma: float) -> Tensor:
    """skimage ``gaussian(sigma)`` on each channel (borders: nearest, truncate 4)."""
    return gaussian_blur(x, sigma).clamp(0, 1)
