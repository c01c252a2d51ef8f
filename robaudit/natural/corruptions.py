"""The 15 common corruptions of Hendrycks & Dietterich (ICLR 2019; ImageNet-C, CIFAR-10-C),
plus their 4 opt-in extras, in torch, batched, on the input's device.

``CORRUPTIONS[name].apply(x, severity, generator)`` corrupts ``x: [N, C, H, W]`` (float, in
[0, 1], ``C`` 1 or 3) at ``severity`` 1..5 and returns a tensor of the same shape, dtype and
device, in [0, 1]. The raw parameterised functions (``gaussian_noise_fn(x, sigma)``, ...)
are each registry entry's ``fn``; ``zero`` holds the arguments that make it the identity.

**Constants.** :func:`constants` (``constants.py``): CIFAR-10-C's for inputs whose smaller
side is below 64 px, ImageNet-C's (as ported by ``imagecorruptions``) from 64 px up, pixel
lengths scaled by ``side / 32`` or ``side / 224``; the exact reference constants at 32 and 224.

**Randomness.** Only from the given ``torch.Generator``: ``apply`` draws one seed per image
from it (one ``randint`` call, so image ``i`` gets the same seed whatever the batch size as
long as the generator starts in the same state), and every random draw for image ``i`` then
comes from a CPU generator seeded with that seed. The same generator state gives identical
output on every call, and the same draws on every device. Splitting a batch into several
``apply`` calls with one generator changes the seeds; to make each image's corruption
independent of batching, use ``apply_seeded(x, severity, seeds)`` with
``seeds = image_seeds(seed, dataset_indices)``.

**Grayscale.** Every corruption but ``saturate`` (``needs_color``: its reference is the
identity on gray images) accepts 1-channel inputs, as imagecorruptions treats them: noise,
blur, contrast, elastic, pixelate, fog and brightness channel-wise; snow with the image as its
own luminance; frost and spatter adding the luminance of their coloured layers; JPEG coding
one luminance component.

**Intentional differences from the references** (all compared in
``tests/peer/test_corruptions_oracle.py``):

* everything is computed in float: no 8-bit rounding of the input or of intermediate
  results, except where the definition itself quantises (glass blur's ``uint8`` truncation,
  snow's 8-bit layer, JPEG's samples, spatter's OpenCV steps);
* motion blur (and snow's streaks): ImageMagick's ``MotionBlurImage`` kernel (one-sided line
  of ``2 ceil(radius) + 1`` Gaussian-weighted taps at ``ceil(i sin a - 1/2)``,
  ``ceil(i cos a - 1/2)``), the same as imagecorruptions' numpy port; edges replicate (as the
  port; ImageMagick's default virtual pixels are also the edge), no 8-bit PNG round trip;
* glass blur: the reference's sequential pixel "swaps" (which, on numpy views, copy the
  neighbour's value instead of swapping: kept, it is how ImageNet-C was made), composed into
  one source map per image (exact, only the random stream differs);
* JPEG: a torch baseline codec (``jpeg.py``), not libjpeg: float DCT instead of libjpeg's
  integer DCT, float chroma averaging and upsampling; 4:2:0 as Pillow's default;
* pixelate: Pillow's BOX (down) and NEAREST (up, imagecorruptions) or BOX (up, CIFAR-10-C)
  resampling as exact weight matrices, without Pillow's 8-bit rounding between passes;
* frost: textures read with Pillow (the reference uses OpenCV: JPEG decoders may differ by
  a level), resized with torch's bilinear / bicubic (OpenCV's INTER_LINEAR / INTER_CUBIC);
  only frost1-5 are drawn (the reference's ``randint(5)`` never picks frost6);
* spatter (opt-in): the water branch approximates Canny edges and the L2 distance transform
  (``spatter.py``);
* elastic transform: at CIFAR sizes CIFAR-10-C's version (random affine then elastic
  warp), from 64 px imagecorruptions' version (elastic warp only, sigma = side/100), not
  the original ImageNet-C's affine + elastic one;
* brightness and saturate use closed forms of skimage's HSV round trip (exact up to float).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import Tensor

from ._common import Rng, image_seeds
from .blur import defocus_blur_fn, gaussian_blur_fn, glass_blur_fn, motion_blur_fn, zoom_blur_fn
from .constants import constants, regime, scale
from .digital import contrast_fn, elastic_transform_fn, pixelate_fn, saturate_fn
from .jpeg import jpeg_compression_fn
from .noise import gaussian_noise_fn, impulse_noise_fn, shot_noise_fn, speckle_noise_fn
from .spatter import spatter_fn
from .weather import FrostUnavailable, brightness_fn, fog_fn, frost_dir, frost_fn, snow_fn

__all__ = [
    "CORRUPTIONS",
    "Corruption",
    "FrostUnavailable",
    "constants",
    "corruption_names",
    "image_seeds",
]

FAMILIES = ("noise", "blur", "weather", "digital")


class Context(NamedTuple):
    """What an adapter needs to know about the input size."""

    small: bool  # CIFAR regime
    s: float  # side / reference side
    h: int
    w: int


Adapter = Callable[[Tensor, Any, Rng, Context], Tensor]


@dataclass(frozen=True)
class Corruption:
    """One corruption: its metadata, raw function and severity adapter."""

    name: str
    family: str
    fn: Callable[..., Tensor] = field(repr=False)
    adapter: Adapter = field(repr=False)
    zero: dict[str, Any] | None = None  # kwargs of ``fn`` (besides x, rng) for the identity
    random: bool = True
    extra: bool = False
    needs_color: bool = False

    def constants(self, size: int | tuple[int, int]) -> tuple[Any, ...]:
        """The five per-severity constants for inputs of ``size``."""
        return constants(self.name, size)

    def unavailable(self) -> str | None:
        """Why this corruption cannot run here (frost without its textures), else None."""
        if self.name == "frost":
            try:
                frost_dir()
            except FrostUnavailable as exc:
                return str(exc)
        return None

    def _check(self, x: Tensor, severity: int) -> None:
        if x.dim() != 4 or not x.is_floating_point():
            raise ValueError(f"{self.name}: expected a float tensor [N, C, H, W], got "
                             f"{tuple(x.shape)} {x.dtype}")
        if x.shape[1] not in (1, 3):
            raise ValueError(f"{self.name}: expected 1 or 3 channels, got {x.shape[1]}")
        if self.needs_color and x.shape[1] != 3:
            raise ValueError(f"{self.name} needs RGB (3-channel) inputs")
        if not (isinstance(severity, int) and 1 <= severity <= 5):
            raise ValueError(f"{self.name}: severity must be an int in 1..5, got {severity!r}")

    def _run(self, x: Tensor, severity: int, rng: Rng) -> Tensor:
        h, w = x.shape[-2:]
        ctx = Context(regime((h, w)) == "cifar", scale((h, w)), h, w)
        c = constants(self.name, (h, w))[severity - 1]
        work = x if x.dtype in (torch.float32, torch.float64) else x.float()
        with torch.no_grad():
            out = self.adapter(work, c, rng, ctx)
        return out.to(x.dtype)

    def apply(self, x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
        """Corrupt ``x`` at ``severity``; random corruptions need ``generator``."""
        self._check(x, severity)
        if self.random and generator is None:
            raise ValueError(f"{self.name} is random: pass a torch.Generator")
        if self.random and generator is not None:
            rng = Rng.from_generator(generator, x.shape[0], x.device)
        else:
            rng = Rng([0] * x.shape[0], x.device)
        return self._run(x, severity, rng)

    def apply_seeded(self, x: Tensor, severity: int, seeds: Sequence[int]) -> Tensor:
        """Corrupt ``x`` with image ``i``'s draws from ``seeds[i]`` (see :func:`image_seeds`):
        an image's result does not depend on the batch it is in."""
        self._check(x, severity)
        if len(seeds) != x.shape[0]:
            raise ValueError(f"{len(seeds)} seeds for {x.shape[0]} images")
        return self._run(x, severity, Rng(seeds, x.device))


def _elastic(x: Tensor, c: Any, r: Rng, k: Context) -> Tensor:
    if k.small:  # CIFAR-10-C: (alpha, sigma, affine), already times the side
        return elastic_transform_fn(x, c[0], c[1], 1.0, c[2], rng=r)
    return elastic_transform_fn(x, c, (0.01 * k.h, 0.01 * k.w), 0.005 * k.h, rng=r)


def _entries() -> list[Corruption]:
    inf = math.inf
    return [
        Corruption("gaussian_noise", "noise", gaussian_noise_fn,
                   lambda x, c, r, k: gaussian_noise_fn(x, c, r), {"sigma": 0.0}),
        Corruption("shot_noise", "noise", shot_noise_fn,
                   lambda x, c, r, k: shot_noise_fn(x, c, r), {"photons": inf}),
        Corruption("impulse_noise", "noise", impulse_noise_fn,
                   lambda x, c, r, k: impulse_noise_fn(x, c, r), {"amount": 0.0}),
        Corruption("defocus_blur", "blur", defocus_blur_fn,
                   lambda x, c, r, k: defocus_blur_fn(x, c[0], c[1]),
                   {"radius": 0.0, "alias_blur": 0.0}, random=False),
        Corruption("glass_blur", "blur", glass_blur_fn,
                   lambda x, c, r, k: glass_blur_fn(x, c[0], c[1], c[2], r),
                   {"sigma": 0.0, "max_delta": 0, "iterations": 0}),
        Corruption("motion_blur", "blur", motion_blur_fn,
                   lambda x, c, r, k: motion_blur_fn(x, c[0], c[1], r),
                   {"radius": 0.0, "sigma": 1.0}),
        Corruption("zoom_blur", "blur", zoom_blur_fn,
                   lambda x, c, r, k: zoom_blur_fn(x, c), {"factors": ()}, random=False),
        Corruption("snow", "weather", snow_fn,
                   lambda x, c, r, k: snow_fn(x, c[0], c[1], c[2], c[3], c[4], c[5], c[6], r),
                   {"loc": 0.0, "scale": 0.0, "zoom": 1.0, "threshold": 1.0, "radius": 0.0,
                    "sigma": 1.0, "blend": 1.0}),
        Corruption("frost", "weather", frost_fn,
                   lambda x, c, r, k: frost_fn(x, c[0], c[1], r, small=k.small, s=k.s),
                   {"keep": 1.0, "amount": 0.0}),
        Corruption("fog", "weather", fog_fn,
                   lambda x, c, r, k: fog_fn(x, c[0], c[1], r), {"amount": 0.0, "decay": 2.0}),
        Corruption("brightness", "weather", brightness_fn,
                   lambda x, c, r, k: brightness_fn(x, c), {"delta": 0.0}, random=False),
        Corruption("contrast", "digital", contrast_fn,
                   lambda x, c, r, k: contrast_fn(x, c), {"factor": 1.0}, random=False),
        Corruption("elastic_transform", "digital", elastic_transform_fn, _elastic,
                   {"alpha": 0.0, "sigma": 1.0, "max_shift": 1.0, "affine": 0.0}),
        Corruption("pixelate", "digital", pixelate_fn,
                   lambda x, c, r, k: pixelate_fn(x, c, "box" if k.small else "nearest"),
                   {"factor": 1.0}, random=False),
        Corruption("jpeg_compression", "digital", jpeg_compression_fn,
                   lambda x, c, r, k: jpeg_compression_fn(x, c), None, random=False),
        # the opt-in extras
        Corruption("speckle_noise", "noise", speckle_noise_fn,
                   lambda x, c, r, k: speckle_noise_fn(x, c, r), {"sigma": 0.0}, extra=True),
        Corruption("gaussian_blur", "blur", gaussian_blur_fn,
                   lambda x, c, r, k: gaussian_blur_fn(x, c), {"sigma": 0.0},
                   random=False, extra=True),
        Corruption("spatter", "weather", spatter_fn,
                   lambda x, c, r, k: spatter_fn(x, c[0], c[1], c[2], c[3], c[4], bool(c[5]), r),
                   {"loc": 0.0, "scale": 0.0, "sigma": 0.0, "threshold": 1.0,
                    "intensity": 0.5, "mud": False}, extra=True),
        Corruption("saturate", "digital", saturate_fn,
                   lambda x, c, r, k: saturate_fn(x, c[0], c[1]),
                   {"factor": 1.0, "offset": 0.0}, random=False, extra=True, needs_color=True),
    ]


CORRUPTIONS: dict[str, Corruption] = {c.name: c for c in _entries()}


def corruption_names(extras: bool = False) -> list[str]:
    """The 15 common corruptions in the papers' order, then (``extras``) the 4 extras."""
    return [n for n, c in CORRUPTIONS.items() if extras or not c.extra]
