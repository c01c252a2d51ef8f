"""Occlusion ("partially obscured"): a grey or black box at the worst of a grid of positions.

Unlike an adversarial patch, the box's content is fixed; only its position is searched. A
box covering ``size`` of the image (a share of its pixels) is square, of side
round(sqrt(size·H·W)) pixels (at least 1, at most the shorter side), and slides over the image
with a stride of half its side (the last row and column touch the far edges), so every pixel
is covered by some position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

FILLS = ("grey", "black")


@dataclass(frozen=True)
class Box:
    """One box position: top-left corner and side, in pixels."""

    top: int
    left: int
    side: int

    def to_dict(self) -> dict[str, int]:
        return {"top": self.top, "left": self.left, "side": self.side}


def box_side(size: float, h: int, w: int) -> int:
    """The side of a square box covering ``size`` (0 < size <= 1) of an h×w image."""
    if not 0.0 < size <= 1.0:
        raise ValueError(f"occlusion size {size:g}: give a share of the image in (0, 1]")
    return max(1, min(h, w, round(math.sqrt(size * h * w))))


def positions(h: int, w: int, side: int, stride: int | None = None) -> list[Box]:
    """Every grid position of a ``side`` box, row by row; the grid reaches both far edges."""
    step = max(1, stride if stride is not None else side // 2)
    tops = _starts(h, side, step)
    lefts = _starts(w, side, step)
    return [Box(t, left, side) for t in tops for left in lefts]


def _starts(length: int, side: int, step: int) -> list[int]:
    last = length - side
    out = list(range(0, last + 1, step))
    if out[-1] != last:
        out.append(last)
    return out


def occlude(
    x: torch.Tensor, box: Box, *, bounds: tuple[float, float] = (0.0, 1.0), fill: str = "grey"
) -> torch.Tensor:
    """``x`` (N×C×H×W) with the box filled: grey is the middle of the bounds, black the lower."""
    if fill not in FILLS:
        raise ValueError(f"fill {fill!r}: valid values are {', '.join(FILLS)}")
    value = (bounds[0] + bounds[1]) / 2 if fill == "grey" else bounds[0]
    out = x.clone()
    out[:, :, box.top : box.top + box.side, box.left : box.left + box.side] = value
    return out
