"""Spatter (an opt-in extra of ImageNet-C): water drops (severities 1-3) or mud (4-5).

A liquid layer of ``N(loc, scale^2)`` noise, Gaussian-blurred (``sigma``) and zero below
``threshold``. Mud: the layer's support, blurred again (sigma ``intensity``) and kept where
above 0.8, paints the image mud-brown (63, 42, 20). Water: the layer, shaded by an embossed
map of the distance to the drops' edges, adds pale turquoise (175, 238, 238).

The water branch of the reference runs OpenCV's Canny edge detector and an L2 distance
transform on the 8-bit layer; here (intentionally approximate, batched in torch) the edges
are the inner boundary pixels of the drops (where Canny's strong step edges lie) and the
distance is a chamfer distance (steps 1 and sqrt 2), truncated at 20 as in the reference;
the rest (3x3 box blurs, histogram equalisation, the emboss filter with 8-bit saturation)
follows OpenCV's definitions.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ._common import LUMA_IC, Rng, filter2d, gaussian_blur, luminance

WATER = (175 / 255, 238 / 255, 238 / 255)
MUD = (63 / 255, 42 / 255, 20 / 255)
_EMBOSS = torch.tensor([[-2.0, -1.0, 0.0], [-1.0, 1.0, 1.0], [0.0, 1.0, 2.0]])
_BOX3 = torch.full((3, 3), 1.0 / 9.0)


def _chamfer_distance(edges: Tensor, cap: float = 20.0) -> Tensor:
    """Distance (steps 1 and sqrt 2) of each pixel to the nearest ``edges`` pixel, at most
    ``cap``; ``edges``: ``[N, 1, H, W]`` bool."""
    d = torch.where(edges, 0.0, cap).to(torch.float32)
    h, w = d.shape[-2:]
    diag = math.sqrt(2.0)
    for _ in range(int(cap) + 1):
        p = F.pad(d, (1, 1, 1, 1), value=cap)
        best = d
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                if dy == 1 and dx == 1:
                    continue
                step = 1.0 if dy == 1 or dx == 1 else diag
                best = torch.minimum(best, p[..., dy : dy + h, dx : dx + w] + step)
        if torch.equal(best, d):
            break
        d = best
    return d.clamp(max=cap)


def _equalize_hist(levels: Tensor) -> Tensor:
    """OpenCV ``equalizeHist`` of each image of integer ``levels`` in 0..255."""
    n = levels.shape[0]
    flat = levels.reshape(n, -1).long()
    hist = torch.zeros(n, 256, device=levels.device).scatter_add_(
        1, flat, torch.ones_like(flat, dtype=torch.float32)
    )
    cdf = hist.cumsum(1)
    first = (hist > 0).float().argmax(1, keepdim=True)
    base = hist.gather(1, first)
    denom = flat.shape[1] - base
    lut = torch.round((cdf - base) * 255.0 / denom.clamp_min(1)).clamp(0, 255)
    ident = torch.arange(256, device=levels.device, dtype=lut.dtype).expand(n, 256)
    lut = torch.where(denom > 0, lut, ident)
    return lut.gather(1, flat).reshape(levels.shape)


def _water_shading(liquid: Tensor) -> Tensor:
    """``liquid * shading``, the reference's ``liquid_layer * dist`` (before normalising)."""
    level8 = torch.floor(liquid * 255.0).clamp(0, 255)
    inside = level8 > 0
    eroded = -F.max_pool2d(-inside.float(), 3, stride=1, padding=1) > 0.5
    edges = inside & ~eroded
    dist = _chamfer_distance(edges)
    dist = torch.floor(filter2d(dist, _BOX3, "reflect101"))
    dist = _equalize_hist(dist)
    dist = torch.round(filter2d(dist, _EMBOSS, "reflect101")).clamp(0, 255)
    dist = torch.round(filter2d(dist, _BOX3, "reflect101"))
    return liquid * dist


def spatter_fn(
    x: Tensor, loc: float, scale: float, sigma: float, threshold: float, intensity: float,
    mud: bool, rng: Rng | None = None,
) -> Tensor:
    """Spatter with the reference's six constants ``(loc, scale, sigma, threshold, intensity,
    mud)``; ``intensity`` is the water layer's strength, or the mud mask's blur sigma."""
    n, c, h, w = x.shape
    r = rng if rng is not None else Rng(range(n), x.device)
    liquid = gaussian_blur(r.normal((1, h, w), loc, scale).to(x.dtype), sigma)
    liquid = torch.where(liquid < threshold, torch.zeros_like(liquid), liquid)
    if mud:
        mask = gaussian_blur((liquid > threshold).to(x.dtype), intensity)
        mask = torch.where(mask < 0.8, torch.zeros_like(mask), mask)
        colour = torch.tensor(MUD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1) * mask
        if c == 1:
            colour = luminance(colour, LUMA_IC)
        return (x * (1 - mask) + colour).clamp(0, 1)
    m = _water_shading(liquid)
    m = m / m.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12) * intensity
    add = torch.tensor(WATER, dtype=x.dtype, device=x.device).view(1, 3, 1, 1) * m
    if c == 1:
        add = luminance(add.clamp(0, 1), LUMA_IC)
    return (x + add).clamp(0, 1)
