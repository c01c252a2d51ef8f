"""Input-transformation defenses: JPEG, bit-depth reduction, median and Gaussian smoothing,
random resize-and-pad, Gaussian noise. Each runs batched on the input's device."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field

from robaudit.defenses.base import Defense, DefenseParams, register


class JpegParams(DefenseParams):
    quality: int = Field(75, ge=1, le=100, description="JPEG quality (lower = stronger squeeze)")


@register("jpeg")
class Jpeg(Defense[JpegParams]):
    """JPEG compression of the input: quantizes DCT coefficients, not differentiable."""

    Params = JpegParams

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        # Pillow's codec, image by image on the CPU (torchvision's JPEG I/O is deprecated);
        # the models' forward passes dominate the cost anyway
        import io

        import numpy as np
        from PIL import Image

        if x.shape[1] not in (1, 3):
            raise ValueError(f"jpeg needs 1 or 3 channels, the input has {x.shape[1]}")
        u8 = (x.detach().clamp(0, 1) * 255).round().to("cpu", torch.uint8).numpy()
        out = np.empty_like(u8)
        for i, img in enumerate(u8):
            arr = img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)
            buf = io.BytesIO()
            Image.fromarray(arr).save(buf, format="JPEG", quality=self.params.quality)
            dec = np.asarray(Image.open(io.BytesIO(buf.getvalue())))
            out[i] = dec[None] if dec.ndim == 2 else dec.transpose(2, 0, 1)
        return torch.from_numpy(out).to(device=x.device, dtype=x.dtype) / 255


class BitDepthParams(DefenseParams):
    bits: int = Field(3, ge=1, le=16, description="bits per pixel kept (feature squeezing)")


@register("bit-depth")
class BitDepth(Defense[BitDepthParams]):
    """Rounds each pixel to 2**bits levels: zero gradients almost everywhere."""

    Params = BitDepthParams

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        levels = 2**self.params.bits - 1
        return torch.round(x.clamp(0, 1) * levels) / levels


class MedianParams(DefenseParams):
    kernel: int = Field(3, ge=1, le=15, description="odd kernel size of the median filter")


@register("median")
class Median(Defense[MedianParams]):
    """Spatial median filter (reflect padding); gradients flow to the selected pixels."""

    Params = MedianParams

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        k = self.params.kernel
        if k % 2 == 0:
            raise ValueError(f"median kernel must be odd, got {k}")
        pad = k // 2
        n, c, h, w = x.shape
        padded = F.pad(x, (pad, pad, pad, pad), mode="reflect") if pad else x
        patches = padded.unfold(2, k, 1).unfold(3, k, 1)  # N C H W k k
        return patches.reshape(n, c, h, w, k * k).median(dim=-1).values


class BlurParams(DefenseParams):
    sigma: float = Field(1.0, gt=0, le=20, description="Gaussian blur standard deviation (px)")


@register("gaussian-blur")
class GaussianBlur(Defense[BlurParams]):
    """Gaussian blur by a separable convolution: differentiable, attacked exactly."""

    Params = BlurParams

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        s = self.params.sigma
        r = max(1, math.ceil(3 * s))
        t = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)
        k = torch.exp(-(t**2) / (2 * s * s))
        k = k / k.sum()
        c = x.shape[1]
        pad = min(r, x.shape[2] - 1, x.shape[3] - 1)
        out = F.pad(x, (pad, pad, pad, pad), mode="reflect") if pad else x
        if pad < r:  # tiny images: replicate the rest
            out = F.pad(out, (r - pad,) * 4, mode="replicate")
        out = F.conv2d(out, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
        return F.conv2d(out, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


class ResizePadParams(DefenseParams):
    max_scale: float = Field(
        1.25, gt=1, le=4, description="resize to a random size up to this factor, then pad"
    )


@register("random-resize-pad")
class RandomResizePad(Defense[ResizePadParams]):
    """Random upscaling then random zero padding to a fixed size, resized back: random and
    differentiable, so an adaptive attacker uses EOT (Athalye et al. 2018)."""

    Params = ResizePadParams

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        big = max(h + 1, math.floor(h * self.params.max_scale))
        size = int(torch.randint(h, big, (1,)).item())
        top = int(torch.randint(0, big - size + 1, (1,)).item())
        left = int(torch.randint(0, big - size + 1, (1,)).item())
        up = F.interpolate(x, size=(size, size * w // h), mode="bilinear", align_corners=False)
        canvas = torch.zeros(n, c, big, big * w // h, device=x.device, dtype=x.dtype)
        canvas[:, :, top : top + size, left : left + up.shape[3]] = up
        return F.interpolate(canvas, size=(h, w), mode="bilinear", align_corners=False)


class NoiseParams(DefenseParams):
    sigma: float = Field(0.1, gt=0, le=10, description="std of the Gaussian noise added")


@register("gaussian-noise")
class GaussianNoise(Defense[NoiseParams]):
    """Fresh Gaussian noise on every forward pass (clipped to [0, 1]): randomized."""

    Params = NoiseParams

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self.params.sigma * torch.randn_like(x)).clamp(0, 1)
