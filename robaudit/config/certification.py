"""The ``certify:`` section and the gate's certified-accuracy thresholds."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from robaudit.smoothing import SmoothingParams


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class CertifySection(SmoothingParams):
    """Randomized-smoothing certification of the model, and an adaptive attack on the smoothed
    classifier at each radius (its robust accuracy must not be below the certificate)."""

    attack_steps: int = Field(
        20, ge=0, le=10_000, description="PGD-L2 steps on the smoothed classifier (0: no attack)"
    )
    attack_draws: int = Field(
        16, ge=1, le=10_000, description="noise draws per gradient of the smoothed classifier"
    )
    attack_n: int = Field(
        1000, ge=1, le=10**9, description="PREDICT draws judging each attacked point"
    )


class CertifiedThreshold(_Section):
    """A minimum certified accuracy at one L2 radius."""

    radius: float = Field(ge=0.0)
    value: float = Field(ge=0.0, le=1.0)
