"""Digital family: contrast, elastic transform, pixelate, JPEG (``jpeg.py``), and the opt-in
saturate. All but saturate are channel-wise; saturate needs RGB."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ._common import Rng, gaussian_blur, pil_resize


def contrast_fn(x: Tensor, factor: float) -> Tensor:
    """``clip((x - mean) factor + mean)``, the mean per image and channel."""
    if factor == 1:
        return x
    mean = x.mean(dim=(2, 3), keepdim=True)
    return ((x - mean) * factor + mean).clamp(0, 1)


def pixelate_fn(x: Tensor, factor: float, upsample: str = "nearest") -> Tensor:
    """Pillow BOX resize to ``int(side * factor)``, then back with ``upsample`` (``"nearest"``
    as imagecorruptions, ``"box"`` as CIFAR-10-C and the original ImageNet-C)."""
    h, w = x.shape[-2:]
    small = (max(int(h * factor), 1), max(int(w * factor), 1))
    if small == (h, w):
        return x
    return pil_resize(pil_resize(x, small, "box"), (h, w), upsample).clamp(0, 1)


def _random_affine(x: Tensor, affine: float, rng: Rng) -> Tensor:
    """CIFAR-10-C's random affine warp: three points around the centre (``side // 3`` away)
    each moved by ``U(-affine, affine)`` per coordinate; OpenCV ``warpAffine`` (bilinear,
    reflect-101 borders)."""
    n, _, h, w = x.shape
    cy, cx, sq = float(h // 2), float(w // 2), float(min(h, w) // 3)
    # (the reference builds the points from (H, W) and uses them as (x, y); same on squares)
    src = torch.tensor([[cy + sq, cx + sq], [cy + sq, cx - sq], [cy - sq, cx - sq]],
                       dtype=torch.float64)
    dst = src[None] + rng.uniform((3, 2), -affine, affine).cpu()
    ones = torch.ones(3, 1, dtype=torch.float64)
    # the affine map M (dst = M [p; 1]) and its inverse, applied to every output pixel
    m = torch.linalg.solve(torch.cat([src, ones], 1)[None].expand(n, 3, 3), dst)  # [N, 3, 2]
    a, b = m[:, :2, :].transpose(1, 2), m[:, 2, :]  # dst = a p + b
    inv = torch.linalg.inv(a)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64),
                            torch.arange(w, dtype=torch.float64), indexing="ij")
    pts = torch.stack([xs, ys], -1).reshape(1, -1, 2) - b[:, None, :]
    srcp = torch.einsum("nij,npj->npi", inv, pts).reshape(n, h, w, 2)
    grid = torch.stack([2 * srcp[..., 0] / max(w - 1, 1) - 1,
                        2 * srcp[..., 1] / max(h - 1, 1) - 1], -1)
    return F.grid_sample(x, grid.to(x), mode="bilinear", padding_mode="reflection",
                         align_corners=True)


def elastic_transform_fn(
    x: Tensor, alpha: float, sigma: float | tuple[float, float], max_shift: float,
    affine: float = 0.0, rng: Rng | None = None,
) -> Tensor:
    """Optional random affine warp (``affine > 0``: CIFAR-10-C), then an elastic warp: each
    pixel moved by ``alpha`` times Gaussian-smoothed (``sigma``, truncate 3, symmetric
    borders) ``U(-max_shift, max_shift)`` noise per axis, sampled bilinearly with symmetric
    borders (scipy ``map_coordinates(order=1, mode='reflect')``). ``alpha = affine = 0`` is
    the identity."""
    n, _, h, w = x.shape
    r = rng if rng is not None else Rng(range(n), x.device)
    if affine > 0:
        x = _random_affine(x, affine, r)
    if alpha == 0:
        return x.clamp(0, 1)
    noise = r.uniform((2, h, w), -max_shift, max_shift).to(torch.float32)
    disp = gaussian_blur(noise, sigma, truncate=3.0, mode="symmetric") * alpha
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32, device=x.device),
                            torch.arange(w, dtype=torch.float32, device=x.device),
                            indexing="ij")
    px, py = xs + disp[:, 0], ys + disp[:, 1]
    grid = torch.stack([(2 * px + 1) / w - 1, (2 * py + 1) / h - 1], -1)
    out = F.grid_sample(x, grid.to(x), mode="bilinear", padding_mode="reflection",
                        align_corners=False)
    return out.clamp(0, 1)


def saturate_fn(x: Tensor, factor: float, offset: float) -> Tensor:
    """HSV's S set to ``clip(S factor + offset)``, hue and value kept (skimage's
    rgb2hsv / hsv2rgb round trip in closed form). Gray pixels have hue 0 (red) in skimage,
    so a positive ``offset`` tints them red, as in the reference. RGB only."""
    if x.shape[1] != 3:
        raise ValueError("saturate needs RGB (3-channel) inputs")
    if factor == 1 and offset == 0:
        return x
    v = x.amax(dim=1, keepdim=True)
    delta = v - x.amin(dim=1, keepdim=True)
    s = torch.where(v > 0, delta / v.clamp_min(1e-12), torch.zeros_like(v))
    s_new = (s * factor + offset).clamp(0, 1)
    coloured = v - (s_new / s.clamp_min(1e-12)) * (v - x)
    red_hue = torch.cat([v, v * (1 - s_new), v * (1 - s_new)], dim=1)
    return torch.where(delta > 0, coloured, red_hue).clamp(0, 1)
