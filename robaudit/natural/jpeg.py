"""Baseline JPEG compression and decompression in torch, batched.

What Pillow's ``save(format='JPEG', quality=q)`` then ``open`` does with libjpeg's defaults,
up to integer-arithmetic details: 8-bit samples; JFIF YCbCr; chroma subsampled 4:2:0 (2x2
means) on RGB inputs; 8x8 orthonormal DCT-II; the IJG example quantisation tables (JPEG
standard, Annex K) scaled by the IJG quality rule and clamped to 1..255 (baseline); decoding
by the inverse DCT with 8-bit rounding and clamping, libjpeg's "fancy" (triangular, 3:1)
chroma upsampling and the inverse colour transform. Edges are padded by replicating the last
row and column. Grayscale (1-channel) inputs are coded as one luminance component (what
Pillow gives for an RGB image whose three channels are equal, then converted back to L).
No entropy coding is needed: it is lossless.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

LUMA_TABLE = (
    16, 11, 10, 16, 24, 40, 51, 61,
    12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77,
    24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99,
)  # fmt: skip
CHROMA_TABLE = (
    17, 18, 24, 47, 99, 99, 99, 99,
    18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
)  # fmt: skip


def quant_table(base: tuple[int, ...], quality: int) -> Tensor:
    """IJG ``jpeg_set_quality``: percentage ``5000 / q`` below 50, ``200 - 2 q`` above;
    entries ``(base * pct + 50) // 100`` clamped to 1..255. ``[8, 8]`` float."""
    q = min(max(int(quality), 1), 100)
    pct = 5000 // q if q < 50 else 200 - 2 * q
    table = [min(max((b * pct + 50) // 100, 1), 255) for b in base]
    return torch.tensor(table, dtype=torch.float32).view(8, 8)


@lru_cache(maxsize=1)
def dct_matrix() -> Tensor:
    """The orthonormal 8-point DCT-II matrix ``D[k, n]``."""
    k = torch.arange(8, dtype=torch.float64)[:, None]
    n = torch.arange(8, dtype=torch.float64)[None, :]
    d = torch.cos((2 * n + 1) * k * math.pi / 16) * math.sqrt(2 / 8)
    d[0] = math.sqrt(1 / 8)
    return d.to(torch.float32)


def _code_plane(plane: Tensor, table: Tensor) -> Tensor:
    """Quantise ``plane`` ``[N, H, W]`` (0..255, H and W multiples of 8) in the DCT domain
    and decode it back to 8-bit samples."""
    n, h, w = plane.shape
    d = dct_matrix().to(plane.device)
    blocks = (plane - 128.0).reshape(n, h // 8, 8, w // 8, 8).transpose(2, 3)
    coef = d @ blocks @ d.T
    t = table.to(plane.device)
    coef = torch.round(coef / t) * t
    back = (d.T @ coef @ d).transpose(2, 3).reshape(n, h, w)
    return torch.round(back + 128.0).clamp(0, 255)


def _fancy_upsample(plane: Tensor) -> Tensor:
    """libjpeg's h2v2 fancy upsampling: each output sample is 3/4 of the nearer and 1/4 of
    the next input sample along each axis (edges replicated)."""
    for dim in (1, 2):
        prev = torch.cat([plane.narrow(dim, 0, 1), plane.narrow(dim, 0, plane.shape[dim] - 1)],
                         dim)
        nxt = torch.cat([plane.narrow(dim, 1, plane.shape[dim] - 1), plane.narrow(dim, -1, 1)],
                        dim)
        even, odd = 0.75 * plane + 0.25 * prev, 0.75 * plane + 0.25 * nxt
        plane = torch.stack([even, odd], dim=dim + 1).flatten(dim, dim + 1)
    return plane


def jpeg_compression_fn(x: Tensor, quality: int) -> Tensor:
    """``x`` coded as a baseline JPEG of ``quality`` (1..100) and decoded (see the module
    docstring)."""
    _n, c, h, w = x.shape
    v = torch.round(x.clamp(0, 1) * 255.0).to(torch.float32)
    ql, qc = quant_table(LUMA_TABLE, quality), quant_table(CHROMA_TABLE, quality)
    if c == 1:
        plane = F.pad(v, (0, (-w) % 8, 0, (-h) % 8), mode="replicate")[:, 0]
        out = _code_plane(plane, ql)[:, None, :h, :w]
        return (out / 255.0).to(x.dtype)
    r, g, b = v[:, 0], v[:, 1], v[:, 2]
    y = torch.round(0.299 * r + 0.587 * g + 0.114 * b)
    cb = torch.round(-0.168736 * r - 0.331264 * g + 0.5 * b + 128.0).clamp(0, 255)
    cr = torch.round(0.5 * r - 0.418688 * g - 0.081312 * b + 128.0).clamp(0, 255)
    planes = F.pad(torch.stack([y, cb, cr], 1), (0, (-w) % 16, 0, (-h) % 16), mode="replicate")
    y = _code_plane(planes[:, 0], ql)
    chroma = F.avg_pool2d(planes[:, 1:], 2)
    cb = _fancy_upsample(_code_plane(chroma[:, 0], qc))
    cr = _fancy_upsample(_code_plane(chroma[:, 1], qc))
    y, cb, cr = y[:, :h, :w], cb[:, :h, :w] - 128.0, cr[:, :h, :w] - 128.0
    rgb = torch.stack(
        [y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], 1
    )
    return (torch.round(rgb).clamp(0, 255) / 255.0).to(x.dtype)
