"""The patch threat: arbitrary changes inside one rectangle covering a given share of the image.

A sticker on a stop sign (Eykholt et al. 2018), an adversarial patch (Brown et al. 2017),
LaVAN (Karmon et al. 2018), Sparse-RS patches (Croce et al. 2022): the attacker may set the
pixels of one region to anything inside the input bounds and must leave every other pixel as it
is. The budget ``eps`` is the region's share of the image (``"5%"`` = 0.05). The region has the
image's aspect ratio (a square on a square image) and per axis the side
``round(sqrt(eps) * L)``, the nearest whole pixels: on an 8×8 image 1% is 1×1, 5% 2×2, 10% 3×3.

Its location is part of the threat, and of the norm's name (so of the threat key):
``patch`` — anywhere (the attack searches the place), ``patch@center`` — centred,
``patch@R,C`` — top-left corner at row R, column C (the region is cut at the image's edge).

``measure`` is the smallest budget whose region holds every changed pixel (|delta| above
:data:`CHANGED` in any channel): ``((m - 1/2) / L)^2`` for the changes' extent ``m`` pixels on
an axis of ``L`` pixels, the larger over both axes; ``inf`` when no region at the fixed place
can hold them. So the engine's budget check ``measure <= eps`` reads exactly "changes only
inside an allowed region", and ``project`` keeps the delta inside one: unchanged if it already
fits, else zero outside the fixed region, or (anywhere) outside the window that keeps the most
perturbation energy. Patches need C×H×W images (``needs_image`` on their attacks).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from robaudit.norms.base import Norm

CHANGED = 1e-6  # a pixel whose change is at most this (every channel) counts as untouched
# one patch for every image, pasted anywhere (Brown et al. 2017): the same region set as
# ``patch``, its own threat (a universal attacker is weaker than a per-sample one)
UNIVERSAL = "patch-universal"
SLACK = 1e-7  # float slack when a budget sits exactly on a side's threshold
LOCATIONS = "anywhere, center or [row, col]"


def side(eps: float, length: int) -> int:
    """The region's side along an axis of ``length`` pixels at budget share ``eps``."""
    if eps <= 0:
        return 0
    return min(length, math.floor(math.sqrt(eps) * length + 0.5 + SLACK))


def region_dims(eps: float, height: int, width: int) -> tuple[int, int]:
    """(rows, columns) of the region at budget ``eps`` on a ``height``×``width`` image."""
    return side(eps, height), side(eps, width)


def threshold(extent: torch.Tensor, length: int) -> torch.Tensor:
    """The smallest budget whose side along an axis of ``length`` reaches ``extent`` pixels."""
    t = ((extent.to(torch.float64) - 0.5) / length).pow(2)
    return torch.where(extent > 0, t, torch.zeros_like(t))


def location_name(location: str | tuple[int, int] | list[int]) -> str:
    """The norm's name for a config location: ``patch``, ``patch@center``, ``patch@R,C``."""
    if isinstance(location, str):
        if location == "anywhere":
            return "patch"
        if location == "center":
            return "patch@center"
    elif (
        isinstance(location, (tuple, list))
        and len(location) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in location)
    ):
        return f"patch@{location[0]},{location[1]}"
    raise ValueError(f"patch location {location!r} is not valid; use {LOCATIONS}")


def parse(name: str) -> Patch:
    """The patch norm called ``name`` (``patch``, ``patch@center``, ``patch@R,C``)."""
    if name == "patch":
        return Patch()
    if name == UNIVERSAL:
        return Patch(universal=True)
    where = name.partition("@")[2] if name.startswith("patch@") else ""
    if where == "center":
        return Patch("center")
    row, _, col = where.partition(",")
    if row.isdigit() and col.isdigit():
        return Patch((int(row), int(col)))
    raise ValueError(
        f"unknown patch threat {name!r}; valid: patch, patch@center, patch@ROW,COL, {UNIVERSAL}"
    )


def changed(delta: torch.Tensor) -> torch.Tensor:
    """N×H×W: the pixels a perturbation changes, in any channel."""
    return delta.abs().amax(dim=1) > CHANGED


def _span(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per sample along the last axis of an N×L "any change" mask: (any, first, last)."""
    n_len = mask.shape[-1]
    pos = torch.arange(n_len, device=mask.device)
    first = torch.where(mask, pos, n_len).amin(dim=-1)
    last = torch.where(mask, pos, -1).amax(dim=-1)
    return mask.any(dim=-1), first, last


def box_mask(
    n: int, height: int, width: int, tops: torch.Tensor, lefts: torch.Tensor,
    dims: tuple[int, int], device: torch.device | None = None,
) -> torch.Tensor:  # fmt: skip
    """N×1×H×W: 1 inside each sample's rectangle at (``tops``, ``lefts``) of size ``dims``."""
    rows = torch.arange(height, device=device)[None, :]
    cols = torch.arange(width, device=device)[None, :]
    t, lft = tops.to(device).view(-1, 1), lefts.to(device).view(-1, 1)
    in_r = (rows >= t) & (rows < t + dims[0])
    in_c = (cols >= lft) & (cols < lft + dims[1])
    return (in_r[:, :, None] & in_c[:, None, :]).view(n, 1, height, width)


class Patch(Norm):
    """One patch threat: a region of a budget share, anywhere or at a fixed place."""

    family = "patch"  # the config's norm for every location (attacks declare this one)
    scales_with_range = False  # a share of the image, whatever the input range

    def __init__(
        self, location: str | tuple[int, int] = "anywhere", universal: bool = False
    ) -> None:
        if universal and location != "anywhere":
            raise ValueError("a universal patch is pasted anywhere; it has no fixed location")
        self.location = location
        self.universal = universal
        self.name = location_name(location if isinstance(location, str) else list(location))
        self.name = UNIVERSAL if universal else self.name
        where = "" if location == "anywhere" else f" at {self.name.partition('@')[2]}"
        self.title = "Universal patch" if universal else f"Patch{where}"

    # -- the region ----------------------------------------------------------------------

    def origin(self, dims: tuple[int, int], height: int, width: int) -> tuple[int, int]:
        """Top-left corner of the fixed region of size ``dims`` (not for ``anywhere``)."""
        if self.location == "center":
            return (height - dims[0]) // 2, (width - dims[1]) // 2
        assert isinstance(self.location, tuple), "anywhere has no fixed origin"
        return self.location

    def _needed(self, delta: torch.Tensor) -> torch.Tensor:
        """Per sample the smallest budget whose region holds the changes (float64, may be inf)."""
        ch = changed(delta)
        height, width = int(ch.shape[-2]), int(ch.shape[-1])
        out = torch.zeros(ch.shape[0], dtype=torch.float64, device=delta.device)
        for axis, length in ((2, height), (1, width)):
            any_, first, last = _span(ch.any(dim=axis))
            if self.location == "anywhere":
                extent = torch.where(any_, last - first + 1, 0)
                out = torch.maximum(out, threshold(extent, length))
            else:
                out = torch.maximum(out, self._fixed_needed(any_, first, last, length, axis))
        return out

    def _fixed_needed(self, any_: torch.Tensor, first: torch.Tensor, last: torch.Tensor,
                      length: int, axis: int) -> torch.Tensor:  # fmt: skip
        """The smallest side's threshold at which the fixed region spans [first, last]."""
        sides = torch.arange(length + 1, device=first.device)
        if self.location == "center":
            starts = (length - sides) // 2
        else:
            assert isinstance(self.location, tuple)
            starts = torch.full_like(sides, self.location[0 if axis == 2 else 1])
        holds = (starts[None, :] <= first[:, None]) & ((starts + sides)[None, :] > last[:, None])
        holds &= sides[None, :] > 0
        best = torch.where(holds, sides[None, :], length + 1).amin(dim=1)
        t = threshold(best.clamp(max=length), length)
        t = torch.where(best > length, torch.full_like(t, math.inf), t)
        return torch.where(any_, t, torch.zeros_like(t))

    # -- the Norm interface --------------------------------------------------------------

    def measure(self, delta: torch.Tensor) -> torch.Tensor:
        return self._needed(delta).to(delta.dtype if delta.is_floating_point() else torch.float32)

    def _measure64(self, flat: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("a patch is measured on the image, not a flat vector")

    def measure64(self, delta: torch.Tensor) -> torch.Tensor:
        return self._needed(delta.detach().to(torch.float64))

    def mask(self, delta: torch.Tensor, eps: float | torch.Tensor) -> torch.Tensor:
        """N×1×H×W: the region each projected perturbation may use (the best one, anywhere)."""
        height, width = int(delta.shape[-2]), int(delta.shape[-1])
        if not isinstance(eps, torch.Tensor):
            return self._mask_one(delta, float(eps), height, width)
        rows = [delta[i : i + 1] for i in range(int(delta.shape[0]))]
        return torch.cat(
            [self._mask_one(r, float(e), height, width) for r, e in zip(rows, eps, strict=True)]
        )

    def _mask_one(self, delta: torch.Tensor, eps: float, height: int, width: int) -> torch.Tensor:
        n, dims = int(delta.shape[0]), region_dims(eps, height, width)
        if self.location != "anywhere":
            top, left = self.origin(dims, height, width)
            ones = torch.ones(n, dtype=torch.int64)
            return box_mask(n, height, width, ones * top, ones * left, dims, delta.device)
        if dims[0] == 0 or dims[1] == 0:
            return torch.zeros(n, 1, height, width, dtype=torch.bool, device=delta.device)
        energy = delta.detach().to(torch.float64).pow(2).sum(dim=1, keepdim=True)
        sums = F.avg_pool2d(energy, dims, stride=1)  # windows' energy (times a constant)
        at = sums.flatten(1).argmax(dim=1)
        cols = width - dims[1] + 1
        return box_mask(n, height, width, at // cols, at % cols, dims, delta.device)

    def project(self, delta: torch.Tensor, eps: float | torch.Tensor) -> torch.Tensor:
        e = eps.to(torch.float64) if isinstance(eps, torch.Tensor) else float(eps)
        fits = self._needed(delta) <= e
        cut = delta * self.mask(delta, eps).to(delta.dtype)
        return torch.where(fits.view(-1, 1, 1, 1), delta, cut)

    def steepest(self, grad: torch.Tensor) -> torch.Tensor:
        """Inside a region the content is free in the box: the sign step (Linf geometry)."""
        return grad.sign()

    def dual(self, w: torch.Tensor) -> torch.Tensor:
        return w.flatten(1).abs().sum(dim=1)

    def random_in_ball(
        self, like: torch.Tensor, eps: float, generator: torch.Generator
    ) -> torch.Tensor:
        """Uniform noise in [-1, 1] on a region (a random place, anywhere); callers clamp."""
        n, height, width = int(like.shape[0]), int(like.shape[-2]), int(like.shape[-1])
        dims = region_dims(eps, height, width)
        if self.location == "anywhere":
            tops = torch.randint(0, height - dims[0] + 1, (n,), generator=generator)
            lefts = torch.randint(0, width - dims[1] + 1, (n,), generator=generator)
        else:
            top, left = self.origin(dims, height, width)
            tops, lefts = torch.full((n,), top), torch.full((n,), left)
        noise = 2 * torch.rand(like.shape, generator=generator, dtype=torch.float32) - 1
        delta = noise * box_mask(n, height, width, tops, lefts, dims).to(noise.dtype)
        return delta.to(device=like.device, dtype=like.dtype)

    def random_on_sphere(
        self, like: torch.Tensor, eps: float, generator: torch.Generator
    ) -> torch.Tensor:
        """A start filling the whole region (a patch has no sphere)."""
        return self.random_in_ball(like, eps, generator)

    def covering_radius(self, span: float, dims: int) -> float:
        return 1.0  # the region is the whole image

    def describe(self, eps_label: str) -> str:
        """``Patch 5% (anywhere)``, ``Patch 5% (center)``, ``Patch 5% at (2, 3)``,
        ``Universal patch 10%``: the share, then where the region may lie."""
        if self.universal:
            return f"{self.title} {eps_label}"
        if isinstance(self.location, tuple):
            return f"Patch {eps_label} at ({self.location[0]}, {self.location[1]})"
        return f"Patch {eps_label} ({self.location})"
