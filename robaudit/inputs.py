"""What one model input is: its shape and kind, so no part of robaudit assumes images.

``model.input_shape`` may have rank 3 (``[C, H, W]``, an image), rank 2 (``[C, T]``, a
sequence such as a waveform) or rank 1 (``[F]``, a feature vector such as a table row). The
kind follows from the rank unless the config names it (``model.input_kind``). Parts that only
make sense on images (JPEG and other image defenses, Square's square windows, the PNG
gallery) declare it with ``needs_image``, and a config that puts them on another kind of input
is refused with one line that names the part.

Layer: the bottom (imports nothing from robaudit), so config, norms and loaders can use it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

InputKind = Literal["image", "sequence", "vector"]
INPUT_KINDS: tuple[InputKind, ...] = ("image", "sequence", "vector")
_KIND_OF_RANK: dict[int, InputKind] = {3: "image", 2: "sequence", 1: "vector"}
_AXES: dict[InputKind, str] = {"image": "C, H, W", "sequence": "C, T", "vector": "F"}


@dataclass(frozen=True)
class InputSpec:
    """One input's shape and kind; the batch axis is not part of it."""

    shape: tuple[int, ...]
    kind: InputKind

    @classmethod
    def of(cls, shape: Sequence[int], kind: InputKind | None = None) -> InputSpec:
        """The spec of ``shape``; ValueError names what is wrong (rank, sizes, kind vs rank)."""
        dims = tuple(int(d) for d in shape)
        if len(dims) not in _KIND_OF_RANK:
            raise ValueError(
                f"{list(dims)} has rank {len(dims)}; valid input shapes are [C, H, W] (images), "
                "[C, T] (sequences such as waveforms) and [F] (feature vectors)"
            )
        if any(d <= 0 for d in dims):
            raise ValueError(f"every dimension must be > 0, got {list(dims)}")
        natural = _KIND_OF_RANK[len(dims)]
        if kind is not None and kind != natural:
            raise ValueError(
                f"input_kind {kind!r} needs a shape [{_AXES[kind]}]; {list(dims)} is "
                f"[{_AXES[natural]}] ({natural})"
            )
        return cls(dims, natural)

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_image(self) -> bool:
        return self.kind == "image"

    @property
    def dims(self) -> int:
        """Numbers in one input (what an L2 or L1 budget spreads over)."""
        return math.prod(self.shape)

    @property
    def channels(self) -> int:
        """Values ``model.mean``/``model.std`` may have besides one: channels, or features."""
        return self.shape[0]

    @property
    def stat_axis(self) -> str:
        """What a per-axis statistic (mean, std) runs along, for messages."""
        return "feature(s)" if self.kind == "vector" else "channel(s)"

    def describe(self) -> str:
        """``3x32x32 image``, ``1x4000 sequence``, ``30-feature vector``."""
        if self.kind == "vector":
            return f"{self.shape[0]}-feature vector"
        return f"{'x'.join(str(d) for d in self.shape)} {self.kind}"

    def axes(self) -> str:
        """The axes' names, e.g. ``C, H, W``."""
        return _AXES[self.kind]


def stat_view(rank: int) -> tuple[int, ...]:
    """The shape a per-channel (per-feature) statistic takes to broadcast over a batch.

    Channel first after the batch axis, ones after it: images (1, C, 1, 1), sequences
    (1, C, 1), vectors (1, F).
    """
    return (1, -1, *([1] * (rank - 2)))


def needs_image_error(part: str, spec: InputSpec, where: str) -> str:
    """The one-line refusal for an image-only part on another kind of input."""
    return (
        f"{where}: {part} works on images ([C, H, W]) only; this model's input is a "
        f"{spec.describe()} [{spec.axes()}]"
    )
