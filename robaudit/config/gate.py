"""The gate section: the thresholds that decide a scan's exit code.

A ``min_robust_accuracy`` threshold names its threat the way an attack entry does (norm, eps,
access, and for a patch its location or ``universal``), so the two always match.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from robaudit.access import AccessName
from robaudit.config.budgets import L0Budgets
from robaudit.config.certification import CertifiedThreshold
from robaudit.config.patch import PatchFields
from robaudit.errors import ConfigError
from robaudit.threat import parse_eps

Norm = Literal["linf", "l2", "l1", "l0", "l0-feature", "snr", "patch"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class GateThreshold(_Section, PatchFields, L0Budgets):
    """A minimum robust accuracy at one threat (of the bare model unless ``variant`` says)."""

    norm: Norm
    eps: float | None = Field(None, description="omitted: the budget profile's headline budget")
    value: float = Field(ge=0.0, le=1.0)
    access: AccessName = "white-box"
    variant: str = Field("model", description="'model' or a defense variant's label")
    _eps_label: str = PrivateAttr(default="")

    @field_validator("eps", mode="before")
    @classmethod
    def _parse_eps(cls, v: Any) -> float | None:
        return None if v is None else parse_eps(v)

    @property
    def budget(self) -> float:
        """The eps of a fitted config (the profile's headline filled in when it was left out)."""
        if self.eps is None:
            raise ConfigError(f"gate threshold at {self.norm} has no eps yet: a run fits it")
        return self.eps


class GateSection(_Section):
    """Thresholds that decide the exit code."""

    fail_on_findings: Literal["none", "errors", "any"] = Field(
        "errors",
        description="fail on unresolved findings: none, errors (an error-severity finding means "
        "the numbers cannot be trusted) or any (warnings too)",
    )

    @field_validator("fail_on_findings", mode="before")
    @classmethod
    def _findings_policy(cls, v: Any) -> Any:
        if v is True:  # the boolean form of earlier versions
            return "any"
        if v is False:
            return "none"
        return v

    min_clean_accuracy: float | None = Field(None, ge=0.0, le=1.0)
    min_robust_accuracy: list[GateThreshold] = Field(default_factory=list)
    min_score: float | None = Field(None, ge=0.0, le=100.0)
    min_certified_accuracy: list[CertifiedThreshold] = Field(default_factory=list)
    min_corruption_accuracy: float | dict[str, float] | None = Field(
        None,
        exclude_if=lambda v: v is None,
        description="mean accuracy over the corruptions run, or a minimum per corruption name",
    )
    max_mce: float | None = Field(
        None,
        ge=0.0,
        exclude_if=lambda v: v is None,
        description="the highest mCE (needs natural.corruptions.reference)",
    )
    min_geometric_accuracy: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        exclude_if=lambda v: v is None,
        description="accuracy under the worst rotation/translation tried",
    )
    min_occlusion_accuracy: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        exclude_if=lambda v: v is None,
        description="accuracy with the occluding box at its worst position",
    )
    min_robust_recall: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        exclude_if=lambda v: v is None,
        description="the positive class's robust recall at every threat of the audited model "
        "(needs data.attack_only_class or model.decision)",
    )
    allow_weak: bool = Field(
        False,
        description="pass a threat where no adversarial search ran or converged (noise only, "
        "a decision-based attack still improving at its budget); such audits get no grade",
    )
