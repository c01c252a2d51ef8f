"""Noise family: Gaussian, shot (Poisson), impulse (salt and pepper), speckle.

Every function takes ``x: [N, C, H, W]`` in [0, 1] and works on each channel independently
(grayscale inputs are fine). Noise is drawn per image from :class:`~._common.Rng`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._common import Rng, rng_for


def gaussian_noise_fn(x: Tensor, sigma: float, rng: Rng | None = None) -> Tensor:
    """``clip(x + N(0, sigma^2))``, independent per pixel and channel."""
    if sigma == 0:
        return x
    noise = rng_for(rng, x).normal(x.shape[1:])
    return (x + sigma * noise.to(x.dtype)).clamp(0, 1)


def shot_noise_fn(x: Tensor, photons: float, rng: Rng | None = None) -> Tensor:
    """``clip(Poisson(photons * x) / photons)``; ``photons = inf`` is the identity."""
    if math.isinf(photons):
        return x
    counts = rng_for(rng, x).poisson(x * photons)
    return (counts / photons).clamp(0, 1)


def impulse_noise_fn(x: Tensor, amount: float, rng: Rng | None = None) -> Tensor:
    """skimage's ``random_noise(mode='s&p', amount)``: each value is replaced with probability
    ``amount``, by 1 or 0 with equal chance. Two float32 draws per value: which values are
    replaced (nested across severities: a higher amount replaces a superset) and by what (the
    same at every severity), so a stronger severity only adds salt and pepper."""
    if amount == 0:
        return x
    draws = rng_for(rng, x).uniform32((2, *x.shape[1:]))
    return torch.where(draws[:, 0] < amount, (draws[:, 1] < 0.5).to(x.dtype), x)


def speckle_noise_fn(x: Tensor, sigma: float, rng: Rng | None = None) -> Tensor:
    """``clip(x + x * N(0, sigma^2))``."""
    if sigma == 0:
        return x
    noise = rng_for(rng, x).normal(x.shape[1:])
    return (x + x * sigma * noise.to(x.dtype)).clamp(0, 1)
