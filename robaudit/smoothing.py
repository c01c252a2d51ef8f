"""Randomized smoothing's parameters, apart from its algorithm (robaudit.certify).

The config validates these, and the config must not import the engine: so the parameters
live here, with nothing but pydantic under them, and certify imports them.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field, field_validator


class SmoothingParams(BaseModel):
    """Parameters of randomized smoothing; unknown keys are errors, like attack parameters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sigma: float = Field(
        0.25, gt=0, description="noise standard deviation, in pixel units of the bounds"
    )
    n0: int = Field(
        100, ge=1, le=10**9, description="CERTIFY: noise draws per sample to pick the top class"
    )
    n: int = Field(
        10_000,
        ge=1,
        le=10**9,
        description="noise draws per sample to bound the top class's probability (CERTIFY) "
        "or to test it against the runner-up (PREDICT)",
    )
    alpha: float = Field(
        0.001,
        gt=0,
        lt=0.5,
        description="failure probability per sample: a wrong certificate or a wrong PREDICT",
    )
    batch_size: int = Field(
        1000, ge=1, le=10**7, description="noisy inputs per forward batch (mixes samples)"
    )
    radii: list[float] = Field(
        default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0],
        min_length=1,
        description="L2 radii (pixel units) at which certified accuracy is reported",
    )

    @field_validator("radii")
    @classmethod
    def _radii_valid(cls, v: list[float]) -> list[float]:
        for r in v:
            if not math.isfinite(r) or r < 0:
                raise ValueError(f"radii must be finite and >= 0, got {r!r}")
        return v
