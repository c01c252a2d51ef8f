"""The ``natural:`` section: common corruptions, rotations and translations, occlusion.

Natural robustness runs in the same audit as the attacks and gates the same exit code
(``gate.min_corruption_accuracy``, ``gate.max_mce``, ``gate.min_geometric_accuracy``,
``gate.min_occlusion_accuracy``). Corruption names are checked against robaudit's list
(with a did-you-mean); severities are 1 to 5, as in Hendrycks & Dietterich 2019.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from robaudit.config.messages import did_you_mean
from robaudit.threat import parse_eps

# the 15 of ImageNet-C / CIFAR-10-C, then the 4 held-out extras (opt-in by name)
CORRUPTION_NAMES: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise",
    "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness",
    "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)
EXTRA_CORRUPTIONS: tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "saturate")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class CorruptionSection(_Section):
    """Which corruptions at which severities (every one on every sample)."""

    names: list[str] | Literal["all"] = Field(
        "all", description="'all' (the 15 of ImageNet-C) or a list; extras only by name"
    )
    severities: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5], min_length=1)
    reference: str | None = Field(
        None,
        description="a reference model's checkpoint for corruption error (CE) and mCE; "
        "omitted: relative CE against the model's own clean error",
    )

    @field_validator("names")
    @classmethod
    def _known(cls, v: list[str] | str) -> list[str] | str:
        if isinstance(v, str):
            return v
        known = [*CORRUPTION_NAMES, *EXTRA_CORRUPTIONS]
        for name in v:
            if name not in known:
                raise ValueError(
                    f"unknown corruption {name!r}{did_you_mean(name, known)}; valid: "
                    f"{', '.join(known)}"
                )
        if len(set(v)) != len(v) or not v:
            raise ValueError("list each corruption once (at least one)")
        return v

    @field_validator("severities")
    @classmethod
    def _levels(cls, v: list[int]) -> list[int]:
        bad = [s for s in v if not 1 <= s <= 5]
        if bad:
            raise ValueError(f"severities are 1 to 5, got {bad[0]}")
        return sorted(set(v))

    def chosen(self) -> list[str]:
        return list(CORRUPTION_NAMES) if self.names == "all" else list(self.names)


class GeometricSection(_Section):
    """Rotations and translations, worst of k random draws per sample or a full grid."""

    max_angle: float = Field(30.0, ge=0.0, le=180.0, description="degrees, both directions")
    max_shift: float = Field(0.1, ge=0.0, le=0.5, description="share of the width and height")
    padding: Literal["black", "edge"] = "black"
    search: Literal["worst-of-k", "grid"] = "worst-of-k"
    k: int = Field(10, ge=1, le=10_000, description="worst-of-k: random transforms per sample")
    angles: int = Field(31, ge=1, le=721, description="grid: angles in [-max, max]")
    shifts: int = Field(5, ge=1, le=101, description="grid: shifts per axis in [-max, max]")


class OcclusionSection(_Section):
    """A fixed grey or black square at the worst of a grid of positions."""

    size: float = Field(0.1, description="share of the image the box covers, e.g. 10% or 0.1")
    fill: Literal["grey", "black"] = "grey"
    stride: int | None = Field(None, ge=1, description="pixels between positions; half a side")

    @field_validator("size", mode="before")
    @classmethod
    def _share(cls, v: Any) -> float:
        if isinstance(v, str) and v.strip().endswith("%"):
            v = float(v.strip()[:-1]) / 100.0
        value = float(parse_eps(v)) if isinstance(v, str) else float(v)
        if not 0.0 < value <= 1.0:
            raise ValueError(f"size is a share of the image in (0, 1] or a percentage, got {v}")
        return value


class NaturalSection(_Section):
    """Natural robustness: any of corruptions, geometric, occlusion."""

    corruptions: CorruptionSection | None = None
    geometric: GeometricSection | None = None
    occlusion: OcclusionSection | None = None
