"""Tensor helpers shared by the corruption families: per-image randomness, padding, filters,
resampling, colour.

Everything works on batches ``x: [N, C, H, W]`` (float, values in [0, 1]) on ``x``'s device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

# ITU-R BT.601 luma weights, as OpenCV's RGB2GRAY and the JPEG (JFIF) Y channel use them
LUMA = (0.299, 0.587, 0.114)
# the weights imagecorruptions' ``rgb2gray`` uses (frost and spatter on grayscale inputs)
LUMA_IC = (0.2989, 0.5870, 0.1140)

_SEED_MASK = (1 << 63) - 1


class Rng:
    """Random draws for a batch, image ``i`` from its own CPU generator seeded with ``seeds[i]``.

    Drawing image by image (on the CPU, then moving the result to ``device``) is what makes a
    corruption's output for one image independent of the batch it is in and of the device:
    the same seed gives the same draws on every device.
    """

    def __init__(self, seeds: Sequence[int], device: torch.device | str = "cpu") -> None:
        self.seeds = [int(s) & _SEED_MASK for s in seeds]
        self.gens = [torch.Generator().manual_seed(s) for s in self.seeds]
        self.device = torch.device(device)

    @classmethod
    def from_generator(cls, generator: torch.Generator, n: int, device: torch.device) -> Rng:
        """``n`` per-image seeds drawn from ``generator`` (one call: a prefix of the batch gets
        the same seeds as the whole batch)."""
        draws = torch.randint(
            0, 2**62, (n,), generator=generator, device=generator.device, dtype=torch.int64
        )
        return cls(draws.tolist(), device)

    def __len__(self) -> int:
        return len(self.gens)

    def _to(self, t: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        return t.to(device=self.device, dtype=dtype)

    def uniform(self, shape: Sequence[int], low: float = 0.0, high: float = 1.0) -> Tensor:
        """``[N, *shape]`` uniform on ``[low, high)``."""
        draws = [torch.rand(tuple(shape), generator=g, dtype=torch.float64) for g in self.gens]
        return self._to(low + (high - low) * torch.stack(draws), torch.float64)

    def uniform32(self, shape: Sequence[int]) -> Tensor:
        """``[N, *shape]`` uniform on ``[0, 1)`` in float32 (for draws no reference replays)."""
        return self._to(torch.stack([torch.rand(tuple(shape), generator=g) for g in self.gens]))

    def normal(self, shape: Sequence[int], mean: float = 0.0, std: float = 1.0) -> Tensor:
        """``[N, *shape]`` normal draws, float32."""
        draws = [torch.randn(tuple(shape), generator=g) for g in self.gens]
        return self._to(mean + std * torch.stack(draws))

    def randint(self, low: int, high: int, shape: Sequence[int]) -> Tensor:
        """``[N, *shape]`` integers in ``[low, high)`` (int64)."""
        draws = [torch.randint(low, high, tuple(shape), generator=g) for g in self.gens]
        return self._to(torch.stack(draws), torch.int64)

    def poisson(self, rates: Tensor) -> Tensor:
        """Poisson counts with the given per-element ``rates`` ``[N, ...]`` (drawn on the CPU)."""
        cpu = rates.detach().to("cpu", torch.float64)
        draws = [torch.poisson(cpu[i], generator=g) for i, g in enumerate(self.gens)]
        return torch.stack(draws).to(device=rates.device, dtype=rates.dtype)


def image_seeds(seed: int, indices: Sequence[int]) -> list[int]:
    """One 63-bit seed per image from ``(seed, index)`` (SplitMix64 mixing): the seed of image
    ``k`` of a data set does not depend on how the data set is split into batches."""
    out = []
    for index in indices:
        z = (int(seed) * 0x9E3779B97F4A7C15 + int(index) + 1) & 0xFFFFFFFFFFFFFFFF
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        out.append((z ^ (z >> 31)) & _SEED_MASK)
    return out


# ---------------------------------------------------------------------------------------------
# padding and linear filters


def pad_index(n: int, before: int, after: int, mode: str) -> Tensor:
    """Source index of each position of a length-``n`` axis padded by ``before``/``after``.

    ``mode``: ``"replicate"`` (scipy ``nearest``), ``"symmetric"`` (scipy ``reflect``:
    d c b a | a b c d) or ``"reflect101"`` (OpenCV's default border, scipy ``mirror``:
    d c b | a b c d). Works for pads longer than the axis."""
    i = torch.arange(-before, n + after)
    if mode == "replicate" or n == 1:
        return i.clamp(0, n - 1)
    if mode == "symmetric":
        j = i.remainder(2 * n)
        return torch.where(j >= n, 2 * n - 1 - j, j)
    if mode == "reflect101":
        j = i.remainder(2 * n - 2)
        return torch.where(j >= n, 2 * n - 2 - j, j)
    raise ValueError(f"unknown padding mode {mode!r}")


def pad2d(x: Tensor, py: int, px: int, mode: str) -> Tensor:
    """``x`` padded by ``py`` rows above and below and ``px`` columns left and right."""
    h, w = x.shape[-2:]
    rows = pad_index(h, py, py, mode).to(x.device)
    cols = pad_index(w, px, px, mode).to(x.device)
    return x.index_select(-2, rows).index_select(-1, cols)


def gaussian_kernel1d(sigma: float, truncate: float) -> Tensor:
    """scipy's 1-D Gaussian: radius ``int(truncate * sigma + 0.5)``, normalised, float64."""
    radius = int(truncate * float(sigma) + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def separable_filter(x: Tensor, ky: Tensor, kx: Tensor, mode: str) -> Tensor:
    """Correlate every channel of ``x`` with ``ky`` along rows and ``kx`` along columns (odd
    lengths), borders by ``mode`` (see :func:`pad_index`)."""
    n, c, h, w = x.shape
    flat = x.reshape(n * c, 1, h, w)
    ry, rx = ky.numel() // 2, kx.numel() // 2
    flat = pad2d(flat, ry, rx, mode)
    if ky.numel() <= SHORT_KERNEL and kx.numel() <= SHORT_KERNEL:
        flat = _shifted_sum(_shifted_sum(flat, ky.to(x), 2), kx.to(x), 3)
    else:
        flat = F.conv2d(flat, ky.to(x).view(1, 1, -1, 1))
        flat = F.conv2d(flat, kx.to(x).view(1, 1, 1, -1))
    return flat.reshape(n, c, h, w)


SHORT_KERNEL = 15  # taps up to which shifted sums beat conv2d's one-channel kernels on CPU


def _shifted_sum(x: Tensor, k: Tensor, dim: int) -> Tensor:
    """Correlation with the 1-D kernel ``k`` along ``dim`` as a sum of shifted slices ("valid"
    output): a few fused multiply-adds, where conv2d with one input channel is slow on CPU."""
    out_len = x.shape[dim] - k.numel() + 1
    out = x.narrow(dim, 0, out_len) * k[0]
    for i in range(1, k.numel()):
        out = out + x.narrow(dim, i, out_len) * k[i]
    return out


def gaussian_blur(
    x: Tensor, sigma: float | tuple[float, float], truncate: float = 4.0, mode: str = "replicate"
) -> Tensor:
    """skimage's ``filters.gaussian`` on each channel (default ``mode='nearest'``); sigma 0 is
    the identity."""
    sy, sx = (sigma, sigma) if isinstance(sigma, (int, float)) else sigma
    if sy <= 0 and sx <= 0:
        return x
    one = torch.ones(1, dtype=torch.float64)
    ky = gaussian_kernel1d(sy, truncate) if sy > 0 else one
    kx = gaussian_kernel1d(sx, truncate) if sx > 0 else one
    return separable_filter(x, ky, kx, mode)


def filter2d(x: Tensor, kernel: Tensor, mode: str = "reflect101") -> Tensor:
    """Correlate every channel of ``x`` with the odd-sized 2-D ``kernel`` (OpenCV filter2D).

    A border of zero taps is cut off first (ImageNet-C's defocus disk sits on a 17x17 grid
    whatever its radius): the same sums over fewer taps, several times faster on small radii.
    """
    n, c, h, w = x.shape
    kernel = _trim(kernel)
    kh, kw = kernel.shape
    flat = pad2d(x.reshape(n * c, 1, h, w), kh // 2, kw // 2, mode)
    k = kernel.to(x)
    if kh * kw <= SHORT_KERNEL * 3:  # a small disk: shifted sums (see _shifted_sum)
        taps = [(i, j, float(v)) for (i, j), v in zip(
            [(i, j) for i in range(kh) for j in range(kw)], kernel.flatten().tolist(), strict=True
        ) if v != 0]  # read on the host once: no device sync per tap
        out = torch.zeros_like(flat[..., :h, :w])
        for i, j, v in taps:
            out = out + flat[..., i : i + h, j : j + w] * v
        return out.reshape(n, c, h, w)
    out = F.conv2d(flat, k.view(1, 1, kh, kw))
    return out.reshape(n, c, h, w)


def _trim(kernel: Tensor) -> Tensor:
    """The kernel without the rings of zeros around its support (kept odd and centred)."""
    kh, kw = kernel.shape
    nz = kernel.nonzero()
    if nz.numel() == 0:
        return kernel[kh // 2 : kh // 2 + 1, kw // 2 : kw // 2 + 1]
    ry = int((nz[:, 0] - kh // 2).abs().max())
    rx = int((nz[:, 1] - kw // 2).abs().max())
    return kernel[kh // 2 - ry : kh // 2 + ry + 1, kw // 2 - rx : kw // 2 + rx + 1]


# ---------------------------------------------------------------------------------------------
# geometry


def gather_pixels(x: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """``out[n, c, i, j] = x[n, c, rows[n, i], cols[n, j]]`` (per-image row and column maps)."""
    n, c, h, w = x.shape
    idx = (rows[:, :, None] * w + cols[:, None, :]).reshape(n, 1, -1)
    out = x.reshape(n, c, h * w).gather(2, idx.expand(n, c, idx.shape[-1]))
    return out.reshape(n, c, rows.shape[1], cols.shape[1])


def motion_line_blur(x: Tensor, radius: float, sigma: float, angles: Tensor) -> Tensor:
    """ImageMagick's ``-motion-blur radius x sigma + angle``, one angle (degrees) per image.

    A one-sided line of ``2 ceil(radius) + 1`` taps: tap ``i`` samples the pixel
    ``(y + ceil(i sin a - 1/2), x + ceil(i cos a - 1/2))`` (edge pixels beyond the border),
    weighted ``exp(-i^2 / (2 sigma^2))``, weights normalised."""
    width = 2 * math.ceil(radius) + 1
    if width <= 1 or sigma <= 0:
        return x
    h, w = x.shape[-2:]
    taps = torch.arange(width, dtype=torch.float64)
    weights = torch.exp(-(taps**2) / (2 * sigma * sigma))
    weights = weights / weights.sum()
    rad = torch.deg2rad(angles.to("cpu", torch.float64))
    sin, cos = torch.sin(rad), torch.cos(rad)
    pad = width - 1
    xp = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    out = torch.zeros_like(x)
    span = 2 * pad + 1
    for i in range(width):
        oy = torch.ceil(i * sin - 0.5).long() + pad
        ox = torch.ceil(i * cos - 0.5).long() + pad
        key = oy * span + ox
        # images whose tap i has the same offset are shifted together (few groups per tap)
        for k in key.unique().tolist():
            sel = (key == k).nonzero().flatten().to(x.device)
            dy, dx = divmod(int(k), span)
            part = xp[..., dy : dy + h, dx : dx + w].index_select(0, sel)
            out.index_add_(0, sel, part, alpha=float(weights[i]))
    return out


def clipped_zoom(x: Tensor, factor: float) -> Tensor:
    """Zoom into the centre by ``factor`` (scipy ``zoom(order=1)`` of the central crop, as
    ImageNet-C's ``clipped_zoom``), cropped back to ``x``'s size."""
    h, w = x.shape[-2:]
    ch, cw = math.ceil(h / factor), math.ceil(w / factor)
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = x[..., top : top + ch, left : left + cw]
    size = (max(round(ch * factor), h), max(round(cw * factor), w))
    if crop.dim() == 3:
        crop = crop[:, None]
        return F.interpolate(crop, size=size, mode="bilinear", align_corners=True)[:, 0, :h, :w]
    return F.interpolate(crop, size=size, mode="bilinear", align_corners=True)[..., :h, :w]


@lru_cache(maxsize=64)
def pil_resample_matrix(in_size: int, out_size: int, kind: str) -> Tensor:
    """``[out, in]`` weights of Pillow's 1-D resize with the BOX or NEAREST filter."""
    mat = torch.zeros(out_size, in_size, dtype=torch.float64)
    scale = in_size / out_size
    if kind == "nearest":
        src = [min(int((o + 0.5) * scale), in_size - 1) for o in range(out_size)]
        mat[torch.arange(out_size), torch.tensor(src)] = 1.0
        return mat
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    for o in range(out_size):
        center = (o + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        for j in range(lo, hi):
            t = (j - center + 0.5) / filterscale
            if -0.5 < t <= 0.5:
                mat[o, j] = 1.0
        mat[o] /= mat[o].sum().clamp_min(1e-12)
    return mat


def pil_resize(x: Tensor, size: tuple[int, int], kind: str) -> Tensor:
    """Pillow ``Image.resize(size=(w, h))`` with BOX or NEAREST (in float: no 8-bit rounding
    between the two passes)."""
    h, w = x.shape[-2:]
    my = pil_resample_matrix(h, size[0], kind).to(x)
    mx = pil_resample_matrix(w, size[1], kind).to(x)
    return torch.einsum("oh,nchw,pw->ncop", my, x, mx)


# ---------------------------------------------------------------------------------------------
# colour


def luminance(x: Tensor, weights: tuple[float, float, float] = LUMA) -> Tensor:
    """``[N, 1, H, W]`` weighted sum of the RGB channels (``x`` itself when it has one)."""
    if x.shape[1] == 1:
        return x
    wr, wg, wb = weights
    return wr * x[:, 0:1] + wg * x[:, 1:2] + wb * x[:, 2:3]


def quantize8(x: Tensor) -> Tensor:
    """Round to the 8-bit grid (``round(255 x) / 255``)."""
    return torch.round(x * 255.0) / 255.0


def next_power_of_2(n: int) -> int:
    return 1 if n <= 1 else 2 ** (n - 1).bit_length()


def rng_for(rng: Rng | None, x: Tensor) -> Rng:
    """The given draws, or seeds 0..N-1 for a raw function called without any (tests)."""
    return rng if rng is not None else Rng(range(x.shape[0]), x.device)
