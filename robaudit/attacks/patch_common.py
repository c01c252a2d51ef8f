"""What the patch attacks share: the threat's region, candidate places, pasting.

A patch threat's norm (:mod:`robaudit.norms.patch`) knows the region's size and, for a fixed
location, its place; the attacks here only choose the place (anywhere) and the content.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from robaudit.norms import get as get_norm
from robaudit.norms.patch import Patch, box_mask, region_dims
from robaudit.threat import Threat


@dataclass(frozen=True)
class Region:
    """A patch threat on one batch: the region's size and, unless anywhere, its corner."""

    dims: tuple[int, int]
    height: int
    width: int
    fixed: tuple[int, int] | None  # top-left corner of a fixed region; None: anywhere

    @property
    def empty(self) -> bool:
        return self.dims[0] == 0 or self.dims[1] == 0

    @property
    def places(self) -> tuple[int, int]:
        """How many rows and columns a top-left corner may take (anywhere)."""
        return self.height - self.dims[0] + 1, self.width - self.dims[1] + 1

    def mask(self, tops: torch.Tensor, lefts: torch.Tensor, device: torch.device) -> torch.Tensor:
        """N×1×H×W float mask of the region at each sample's corner."""
        m = box_mask(int(tops.shape[0]), self.height, self.width, tops, lefts, self.dims, device)
        return m.float()

    def random_corners(
        self, n: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` corners drawn uniformly (on the CPU, from the generator); the fixed one repeated."""
        if self.fixed is not None:
            return torch.full((n,), self.fixed[0]), torch.full((n,), self.fixed[1])
        rows, cols = self.places
        return (torch.randint(0, rows, (n,), generator=generator),
                torch.randint(0, cols, (n,), generator=generator))  # fmt: skip


def region_of(threat: Threat, x: torch.Tensor) -> Region:
    """The patch region of ``threat`` on images shaped like ``x`` (N×C×H×W)."""
    norm = get_norm(threat.norm)
    if not isinstance(norm, Patch) or x.dim() != 4:
        raise ValueError(
            f"patch attacks need a patch threat on N×C×H×W images, got {threat.norm!r} on "
            f"inputs of rank {x.dim() - 1}"
        )
    height, width = int(x.shape[-2]), int(x.shape[-1])
    dims = region_dims(threat.eps if math.isfinite(threat.eps) else 1.0, height, width)
    fixed = None if norm.location == "anywhere" else norm.origin(dims, height, width)
    if fixed is not None:  # a fixed region is cut at the image's edge (as the norm measures it)
        dims = (min(dims[0], height - fixed[0]), min(dims[1], width - fixed[1]))
    return Region(dims, height, width, fixed)


def salient_corners(
    grad: torch.Tensor, region: Region, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """N×k corners of the windows with the largest summed |gradient| (LaVAN-style saliency)."""
    energy = grad.abs().sum(dim=1, keepdim=True)
    sums = F.avg_pool2d(energy, region.dims, stride=1).flatten(1)
    k = min(k, int(sums.shape[1]))
    at = sums.topk(k, dim=1).indices
    cols = region.places[1]
    return at // cols, at % cols


def paste(x: torch.Tensor, content: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x`` with the masked pixels replaced by ``content`` (same shape as ``x``)."""
    return x + mask * (content - x)


def place(x: torch.Tensor, patches: torch.Tensor, tops: torch.Tensor,
          lefts: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """``x`` with each sample's ``patches[i]`` (C×h×w) written at corner (tops[i], lefts[i])."""
    n, _, h, w = patches.shape
    dev = x.device
    rows = tops.to(dev).view(-1, 1) + torch.arange(h, device=dev)
    cols = lefts.to(dev).view(-1, 1) + torch.arange(w, device=dev)
    ni = torch.arange(n, device=dev).view(-1, 1, 1)
    out = x.clone()
    out[ni, :, rows[:, :, None], cols[:, None, :]] = patches.permute(0, 2, 3, 1)
    return out
