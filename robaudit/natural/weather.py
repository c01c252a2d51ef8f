"""Weather family: snow, frost, fog, brightness, and the opt-in spatter.

Grayscale (1-channel) inputs are handled as imagecorruptions handles them: snow brightens
with the image itself in place of its luminance; frost adds the luminance of the frost
texture; fog and brightness are channel-wise (brightness raises HSV's V, which for one
channel is the value itself); spatter adds the luminance of its coloured layer.
"""

from __future__ import annotations

import importlib.util
import math
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from ._common import (
    LUMA_IC,
    Rng,
    clipped_zoom,
    luminance,
    motion_line_blur,
    next_power_of_2,
    quantize8,
    rng_for,
)

# ---------------------------------------------------------------------------------------------
# snow


def snow_fn(
    x: Tensor, loc: float, scale: float, zoom: float, threshold: float, radius: float,
    sigma: float, blend: float, rng: Rng | None = None,
) -> Tensor:
    """ImageNet-C's snow: a layer of ``N(loc, scale^2)`` noise, zoomed by ``zoom``, zero
    below ``threshold``, motion-blurred (``radius``, ``sigma``, angle in [-135, -45) degrees)
    and rounded to 8 bits, added twice (once turned by 180 degrees) to the image, itself
    brightened towards ``max(x, 1.5 gray + 0.5)`` with weight ``1 - blend``."""
    _n, _, h, w = x.shape
    r = rng_for(rng, x)
    layer = r.normal((h, w), loc, scale)
    layer = clipped_zoom(layer, float(zoom)) if zoom != 1 else layer
    layer = torch.where(layer < threshold, torch.zeros_like(layer), layer).clamp(0, 1)
    angles = r.uniform((), -135.0, -45.0)
    layer = quantize8(motion_line_blur(layer[:, None], radius, sigma, angles)).to(x.dtype)
    bright = torch.maximum(x, luminance(x) * 1.5 + 0.5)
    base = blend * x + (1 - blend) * bright
    return (base + layer + torch.flip(layer, dims=(-2, -1))).clamp(0, 1)


# ---------------------------------------------------------------------------------------------
# frost


class FrostUnavailable(RuntimeError):
    """The frost textures (shipped by the ``imagecorruptions`` package) are not installed."""


FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg")


def frost_dir() -> Path:
    """The folder of imagecorruptions' frost images (found without importing the package)."""
    spec = importlib.util.find_spec("imagecorruptions")
    if spec is None or not spec.submodule_search_locations:
        raise FrostUnavailable(
            "frost needs the frost texture images of the 'imagecorruptions' package "
            "(Apache-2.0), which is not installed: pip install imagecorruptions"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "frost"
    missing = [f for f in FROST_FILES if not (folder / f).is_file()]
    if missing:
        raise FrostUnavailable(f"frost textures missing from {folder}: {', '.join(missing)}")
    return folder


@lru_cache(maxsize=8)
def _frost_texture(index: int) -> Tensor:
    from PIL import Image

    with Image.open(frost_dir() / FROST_FILES[index]) as im:
        data = torch.frombuffer(bytearray(im.convert("RGB").tobytes()), dtype=torch.uint8)
        w, h = im.size
    return data.view(h, w, 3).permute(2, 0, 1).to(torch.float32) / 255.0


def frost_scale(index: int, size: tuple[int, int], small: bool, s: float) -> float:
    """Resize factor of texture ``index`` for images of ``size`` (``s`` = side / reference).

    CIFAR-10-C shrinks the textures by 0.2 (so ``0.2 s`` here); imagecorruptions enlarges
    them by 1.1 times what makes them cover the image (so ``1.1 max(s, cover)`` here). Both
    are raised where needed for the texture to be larger than the image."""
    th, tw = _frost_texture(index).shape[-2:]
    h, w = size
    if small:
        return max(0.2 * s, (h + 1) / th, (w + 1) / tw)
    return 1.1 * max(s, h / th, w / tw)


@lru_cache(maxsize=32)
def _frost_scaled(index: int, factor: float, small: bool) -> Tensor:
    tex = _frost_texture(index)
    th, tw = tex.shape[-2:]
    if small:  # cv2.resize(fx=fy=factor), bilinear
        size = (round(th * factor), round(tw * factor))
        mode = "bilinear"
    else:  # cv2.resize(dsize=ceil(shape * factor)), bicubic
        size = (math.ceil(th * factor), math.ceil(tw * factor))
        mode = "bicubic"
    if size == (th, tw):
        return tex
    out = F.interpolate(tex[None], size=size, mode=mode, align_corners=False)[0]
    return out.clamp(0, 1)


def frost_texture(index: int, size: tuple[int, int], small: bool, s: float) -> Tensor:
    """Texture ``index`` resized for images of ``size`` (``[3, h', w']`` in [0, 1], CPU)."""
    return _frost_scaled(index, frost_scale(index, size, small, s), small)


def frost_fn(
    x: Tensor, keep: float, amount: float, rng: Rng | None = None, small: bool = False,
    s: float = 1.0, crops: Tensor | None = None,
) -> Tensor:
    """``clip(keep x + amount frost)``, ``frost`` a random crop of one of five textures
    (resized by :func:`frost_scale`); on grayscale inputs the texture's luminance.
    ``crops`` (``[N, 3]``: texture index, top, left) replaces the random choice.
    Raises :class:`FrostUnavailable` when the textures are not installed (unless
    ``amount == 0``)."""
    if amount == 0:
        return (keep * x).clamp(0, 1)
    n, c, h, w = x.shape
    u = rng_for(rng, x).uniform((3,)).cpu() if crops is None else None
    if crops is not None:
        which = crops[:, 0].long().cpu()
    else:
        assert u is not None
        which = (u[:, 0] * len(FROST_FILES)).long().clamp(max=len(FROST_FILES) - 1)
    layer = torch.empty(n, 3, h, w, dtype=x.dtype, device=x.device)
    for index in which.unique().tolist():
        tex = frost_texture(index, (h, w), small, s)
        sel = (which == index).nonzero().flatten()
        if crops is not None:
            top, left = crops[sel, 1].long().cpu(), crops[sel, 2].long().cpu()
        else:
            assert u is not None
            top = (u[sel, 1] * (tex.shape[1] - h)).long()
            left = (u[sel, 2] * (tex.shape[2] - w)).long()
        rows = top[:, None] + torch.arange(h)
        cols = left[:, None] + torch.arange(w)
        patch = tex[:, rows[:, :, None], cols[:, None, :]].permute(1, 0, 2, 3)
        layer[sel.to(x.device)] = patch.to(device=x.device, dtype=x.dtype)
    if c == 1:
        layer = luminance(layer, LUMA_IC)
    return (keep * x + amount * layer).clamp(0, 1)


# ---------------------------------------------------------------------------------------------
# fog


def plasma_fractal(rng: Rng, mapsize: int, decay: float) -> Tensor:
    """``[N, mapsize, mapsize]`` diamond-square height maps in [0, 1] (ImageNet-C's
    ``plasma_fractal``: random offsets of ``wibble * U(-wibble, wibble)``, ``wibble``
    starting at 100 and divided by ``decay`` at each level)."""
    steps = []
    step = mapsize
    while step >= 2:
        steps.append(step)
        step //= 2
    total = sum(3 * (mapsize // st) ** 2 for st in steps)
    draws = rng.uniform((total,), -1.0, 1.0)
    n = draws.shape[0]
    grid = torch.zeros(n, mapsize, mapsize, dtype=torch.float64, device=draws.device)
    wibble = 100.0
    offset = 0

    def take(k: int) -> Tensor:
        nonlocal offset
        out = draws[:, offset : offset + k * k].reshape(n, k, k)
        offset += k * k
        return out * wibble * wibble

    for st in steps:
        k, half = mapsize // st, st // 2
        corners = grid[:, 0::st, 0::st]
        squares = corners + corners.roll(-1, 1)
        squares = squares + squares.roll(-1, 2)
        grid[:, half::st, half::st] = squares / 4 + take(k)
        centres, corners = grid[:, half::st, half::st], grid[:, 0::st, 0::st]
        left = centres + centres.roll(1, 1) + corners + corners.roll(-1, 2)
        grid[:, 0::st, half::st] = left / 4 + take(k)
        top = centres + centres.roll(1, 2) + corners + corners.roll(-1, 1)
        grid[:, half::st, 0::st] = top / 4 + take(k)
        wibble /= decay
    lo = grid.amin(dim=(1, 2), keepdim=True)
    grid = grid - lo
    return grid / grid.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)


def fog_fn(x: Tensor, amount: float, decay: float, rng: Rng | None = None) -> Tensor:
    """``clip((x + amount plasma) max(x) / (max(x) + amount))``, the plasma map of side
    ``next_power_of_2(max(H, W))`` (imagecorruptions' rule; 256 for 224, 32 for 32)."""
    if amount == 0:
        return x
    _n, _, h, w = x.shape
    plasma = plasma_fractal(rng_for(rng, x), next_power_of_2(max(h, w)), decay)
    plasma = plasma[:, None, :h, :w].to(x.dtype)
    top = x.amax(dim=(1, 2, 3), keepdim=True)
    return ((x + amount * plasma) * top / (top + amount)).clamp(0, 1)


# ---------------------------------------------------------------------------------------------
# brightness


def brightness_fn(x: Tensor, delta: float) -> Tensor:
    """HSV's V raised by ``delta`` (clipped to 1), hue and saturation kept (skimage's
    rgb2hsv / hsv2rgb round trip in closed form: ``x V'/V``, gray ``V'`` where ``V = 0``)."""
    if delta == 0:
        return x
    v = x.amax(dim=1, keepdim=True)
    v_new = (v + delta).clamp(0, 1)
    ratio = v_new / v.clamp_min(1e-12)
    return torch.where(v > 0, x * ratio, v_new.expand_as(x)).clamp(0, 1)
