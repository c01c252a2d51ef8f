"""The config's schema: every section as a typed, validated pydantic model.

Field-level rules live here (types, ranges, an unknown attack named with the closest known
one); rules that need the whole config (an attack's access vs its threat, budgets vs the
input range, image-only parts on other inputs) are in :mod:`robaudit.config.checks`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

from robaudit.access import AccessName
from robaudit.attacks.base import AttackParams, registry
from robaudit.attacks.batteries import BATTERY_PARAMS, battery_members
from robaudit.config.budgets import L0Budgets, count_shares
from robaudit.config.certification import CertifySection
from robaudit.config.decision import DecisionRule
from robaudit.config.gate import GateSection, Norm
from robaudit.config.messages import did_you_mean
from robaudit.config.natural import NaturalSection
from robaudit.config.patch import PatchFields
from robaudit.errors import ConfigError
from robaudit.inputs import InputSpec
from robaudit.threat import Threat, _short_repr, parse_eps

PRESETS_DIR = Path(__file__).parent.parent / "presets"
PRESET_NAMES = ("quick", "standard", "strict", "autoattack")
# starters for inputs that are not images: `robaudit init` picks one from the data
STARTER_NAMES = ("tabular", "audio")
# what each named protocol is for; the report, the terminal and report.json quote it
PROTOCOLS: dict[str, str] = {
    "quick": "smoke test (noise, FGSM, PGD-10): NOT for security claims",
    "standard": "APGD-CE and APGD-T (100 steps) at Linf and L2, Square where gradients are "
    "suspect, noise baseline",
    "strict": "the AutoAttack battery at the paper's settings (APGD-CE, APGD-T, FAB-T, Square "
    "5,000 queries) at Linf and L2, margin-loss PGD with restarts, noise baseline",
    "autoattack": "AutoAttack's standard protocol (Croce & Hein 2020) at one Linf budget; "
    "comparable with published RobustBench numbers",
}
SMOKE_PROTOCOLS = frozenset({"quick"})
MAX_CONFIG_BYTES = 1_000_000
# Hostile YAML: aliases let a 1 kB file stand for a billion nodes ("billion laughs"), and deep
# nesting overflows the parser's recursion. A real config has a few hundred nodes, a dozen levels.
MAX_CONFIG_NODES = 100_000
MAX_CONFIG_DEPTH = 64
# numpy's RandomState (the seeded sample subset) takes seeds in [0, 2**32 - 1]
MAX_SEED = 2**32 - 1

Format = Literal["json", "html", "csv", "md", "junit"]
# report.json, report.html, results.csv, summary.md (CI step summaries), junit.xml (CI test views)
FORMATS: tuple[Format, ...] = ("json", "html", "csv", "md", "junit")
Access = AccessName  # robaudit.access defines the levels once


class _Section(BaseModel):
    # NaN/inf are never meaningful here (a NaN mean silently turns every logit into NaN)
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ModelSection(_Section):
    """What the model expects: its input, classes, pixel range and preprocessing."""

    input_shape: tuple[int, ...] | None = Field(
        None,
        description="one input's shape: [C, H, W] image, [C, T] sequence or [F] feature "
        "vector; omitted: taken from the data",
    )
    num_classes: int | None = Field(
        None, ge=2, le=100_000, description="logits per input; omitted: one forward pass"
    )
    class_names: list[str] | None = None
    bounds: tuple[float, float] = (0.0, 1.0)
    mean: list[float] | None = None
    std: list[float] | None = None
    arch: str | None = Field(None, description="'package.module:Class' for state_dict files")
    decision: DecisionRule | None = Field(
        None, exclude_if=lambda v: v is None,
        description="a binary model's threshold rule: positive when p(positive) >= threshold",
    )
    arch_kwargs: dict[str, Any] = Field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        """The input shape of a fitted config (one a run has filled in from the data)."""
        if self.input_shape is None:
            raise ConfigError("model.input_shape is not known yet: a run takes it from the data")
        return tuple(self.input_shape)

    @property
    def spec(self) -> InputSpec:
        """The fitted input's shape and kind (image, sequence or vector)."""
        return InputSpec.of(self.shape)

    @property
    def classes(self) -> int:
        """The class count of a fitted config (one a run has filled in from the model)."""
        if self.num_classes is None:
            raise ConfigError("model.num_classes is not known yet: a run asks the model")
        return self.num_classes

    @field_validator("input_shape")
    @classmethod
    def _positive_shape(cls, v: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if v is None:
            return v
        return InputSpec.of(v).shape

    @field_validator("bounds")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(math.isfinite(b) for b in v) or v[0] >= v[1] or not math.isfinite(v[1] - v[0]):
            raise ValueError(f"bounds must be finite [low, high] with low < high, got {list(v)}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> ModelSection:
        if self.decision is not None and self.num_classes is not None and self.num_classes != 2:
            raise ValueError(
                f"decision: a threshold rule needs a binary model (2 classes); this one has "
                f"{self.num_classes}"
            )
        if self.decision is not None and self.decision.positive_class > 1:
            raise ValueError(
                f"decision.positive_class: {self.decision.positive_class} is not a class of a "
                "binary model (0 or 1)"
            )
        spec = InputSpec.of(self.input_shape) if self.input_shape is not None else None
        for name in ("mean", "std"):
            vals = getattr(self, name)
            if vals is not None and spec is not None and len(vals) not in (1, spec.channels):
                raise ValueError(
                    f"{name} has {len(vals)} values; the input has {spec.channels} "
                    f"{spec.stat_axis}"
                )
        if self.std is not None and any(s <= 0 for s in self.std):
            raise ValueError(f"std values must be > 0, got {self.std}")
        if (
            self.class_names is not None
            and self.num_classes is not None
            and len(self.class_names) != self.num_classes
        ):
            raise ValueError(
                f"class_names has {len(self.class_names)} names; num_classes is {self.num_classes}"
            )
        return self


class DataSection(_Section):
    """Where the evaluation samples come from."""

    # ``schema`` is the YAML key (the attribute is ``schema_``: pydantic's BaseModel has a
    # ``schema`` method); unset tabular keys stay out of the dump, so other reports are unchanged
    model_config = ConfigDict(
        extra="forbid", allow_inf_nan=False, validate_by_name=True, validate_by_alias=True,
        serialize_by_alias=True,
    )

    source: str = "builtin:digits"
    split: str = "test"
    samples: int | None = Field(None, ge=1, description="seeded random subset; null = all")
    batch_size: int = Field(256, ge=1, le=1_000_000)
    seed: int | None = Field(
        None, ge=0, le=MAX_SEED, description="subset seed; defaults to the top-level seed"
    )
    cache_mb: int = Field(
        1024,
        ge=0,
        le=1 << 30,
        description="keep the decoded images if they fit in this many MB, else decode each "
        "batch when needed (memory bounded by the batch); 0 always streams",
    )
    label: str | None = Field(
        None, min_length=1, exclude_if=lambda v: v is None,
        description="CSV/Parquet sources: the label column (classes 0..K-1)",
    )
    schema_: str | dict[str, Any] | None = Field(
        None, alias="schema", exclude_if=lambda v: v is None,
        description="CSV/Parquet sources: the feature schema, a YAML path or inline; omitted: "
        "inferred from the data and written beside the report as schema.inferred.yaml",
    )
    attack_only_class: int | None = Field(
        None, ge=0, exclude_if=lambda v: v is None,
        description="attack only samples of this true class (fraud: can a fraud pass as "
        "legitimate?); the others keep their clean verdict; the report adds its robust recall",
    )
    sample_rate: int | None = Field(
        None, ge=1, le=10_000_000, exclude_if=lambda v: v is None,
        description="waveforms: the files' sample rate in Hz (a WAV folder needs it; never resampled)",
    )
    fit: Literal["exact", "pad_or_crop"] = Field(
        "exact", exclude_if=lambda v: v == "exact",
        description="waveforms of another length: exact (an error) or pad_or_crop (silence "
        "appended, or the end cut)",
    )


def _db_as_eps(data: dict[str, Any]) -> dict[str, Any]:
    """``db: [40, 30]``: the snr threat's budgets, in dB, written as the issue spells them."""
    if data.get("norm") != "snr":
        raise ValueError(f"db gives snr budgets in dB; with norm {data.get('norm', 'linf')!r} use eps")
    if "eps" in data:
        raise ValueError("give the snr budgets as db or as eps, not both")
    out = {k: v for k, v in data.items() if k != "db"}
    out["eps"] = data["db"]
    return out


class AttackSpec(PatchFields, L0Budgets):
    """One attack at one or more budgets; its own parameters sit beside name, norm and eps."""

    model_config = ConfigDict(extra="allow")

    name: str | None = None
    battery: Literal["autoattack"] | None = Field(
        None, description="a named battery instead of one attack (see BATTERIES)"
    )
    norm: Norm = "linf"
    eps: list[float] | None = Field(
        None, description="budgets; omitted: the budget profile's for this norm (profile:)"
    )
    access: Access = "white-box"
    # eps: profile (or omitted) takes every budget of the profile; eps: headline its headline
    headline_only: bool = Field(False, exclude=True)
    _params: AttackParams | None = PrivateAttr(default=None)
    _eps_labels: list[str] = PrivateAttr(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _profile_eps(cls, data: Any) -> Any:
        if isinstance(data, dict) and "db" in data:
            data = _db_as_eps(data)
        if isinstance(data, dict) and data.get("eps") in ("profile", "headline"):
            data = {**data, "headline_only": data["eps"] == "headline"}
            data.pop("eps")
        return data

    @field_validator("eps", mode="before")
    @classmethod
    def _parse_eps(cls, v: Any) -> list[float] | None:
        if v is None:
            return None
        raw = v if isinstance(v, list) else [v]
        if not raw:
            raise ValueError("eps list is empty; give at least one budget")
        return [parse_eps(e) for e in raw]

    @model_validator(mode="after")
    def _one_of_name_or_battery(self) -> AttackSpec:
        if (self.name is None) == (self.battery is None):
            raise ValueError("give either name (one attack) or battery (e.g. autoattack)")
        return self

    @field_validator("name")
    @classmethod
    def _known(cls, v: str | None) -> str | None:
        names = list(registry())
        if v is not None and v not in names:
            raise ValueError(
                f"unknown attack {_short_repr(v)}{did_you_mean(v, names)}; valid: {', '.join(names)}"
            )
        return v

    @property
    def params_model(self) -> type[AttackParams]:
        """The pydantic model the extra keys are validated against."""
        if self.battery is not None:
            return BATTERY_PARAMS[self.battery]
        assert self.name is not None
        return registry()[self.name].Params

    @property
    def label(self) -> str:
        return self.name or f"battery:{self.battery}"

    @property
    def params(self) -> AttackParams:
        """The attack's (or battery's) validated parameters (set by :func:`load_config`)."""
        if self._params is None:
            self._params = self.params_model.model_validate(self.model_extra or {})
        return self._params

    def members(self) -> list[tuple[str, dict[str, Any]]]:
        """The (attack name, parameters) this entry runs: itself, or a battery's members."""
        if self.battery is None:
            assert self.name is not None
            return [(self.name, self.params.model_dump())]
        return battery_members(self.battery, self.params, self.norm)

    def threats(self) -> list[Threat]:
        """One threat per eps value (none before the budget profile filled an omitted eps)."""
        if self.eps is None:
            return []
        labels = self._eps_labels or [""] * len(self.eps)
        norm = self.threat_norm  # a patch's location (or universal) is in the threat's norm
        return [Threat(norm, e, self.access, lab) for e, lab in zip(self.eps, labels, strict=True)]


class DefenseSpec(BaseModel):
    """One defense, audited as a variant of the model; its own parameters sit beside name."""

    model_config = ConfigDict(extra="allow")

    name: str
    backward: Literal["auto", "exact", "bpda", "eot"] = Field(
        "auto", description="how the adaptive attack differentiates it (auto: per defense)"
    )
    label: str | None = Field(None, description="variant name in the report (default: derived)")
    _params: Any = PrivateAttr(default=None)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        from robaudit.defenses import defense_registry

        names = list(defense_registry())
        if v not in names:
            raise ValueError(
                f"unknown defense {_short_repr(v)}{did_you_mean(v, names)}; "
                f"valid: {', '.join(names)}"
            )
        return v

    def build(self) -> Any:
        """The Defense instance (parameters validated by :func:`config_from_dict`)."""
        from robaudit.defenses import defense_registry

        cls = defense_registry()[self.name]
        params = self._params or cls.Params.model_validate(self.model_extra or {})
        return cls(params)


class ReportSection(_Section):
    """Which files to write and how many example images to show."""

    formats: list[Format] = Field(default_factory=lambda: list(FORMATS))
    examples: int = Field(8, ge=0, le=256)


class EngineSection(_Section):
    """How the attacks run (not what they measure)."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    cascade: bool = Field(
        False,
        description="later attacks at a threat only attack samples still unbroken "
        "(faster; per-attack rows then show cumulative numbers only)",
    )
    non_adaptive: bool = Field(
        True,
        description="also attack each defense variant with the bare model's gradients, to "
        "show the false sense of security a naive evaluation gives",
    )
    threads: int | None = Field(
        None,
        ge=1,
        le=4096,
        description="intra-op CPU threads; omitted: the CPUs this process may use (affinity "
        "and cgroup quota) for the CLI, the caller's setting for the Python API",
    )


class IntegritySection(_Section):
    """Pre-flight checks, indicators of attack failure, and robaudit's reactions to them."""

    enabled: bool = True
    react: bool = Field(True, description="apply EOT / votes / margin-loss attacks when needed")
    sanity: bool = Field(True, description="run PGD at an eps covering the whole input range")
    eot_samples: int = Field(8, ge=1, le=1024, description="gradient draws for randomized models")
    votes: int = Field(9, ge=1, le=1025, description="verification draws for randomized models")
    square_queries: int = Field(
        5000,
        ge=1,
        le=1_000_000,
        description="queries of the Square attack added where gradients are dead (AutoAttack's 5,000)",
    )


class Config(_Section):
    """A whole threat model: model, data, attacks, gate, report, engine."""

    version: Literal[1] = 1
    seed: int = Field(0, ge=0, le=MAX_SEED)
    model: ModelSection
    protocol: Literal["quick", "standard", "strict", "autoattack"] | None = Field(
        None, description="the named protocol this config follows (the report quotes it)"
    )
    profile: Literal[
        "auto", "digits", "mnist", "cifar", "imagenet", "tabular", "waveform", "audio"
    ] = Field(
        "auto", description="budgets for entries without eps: auto picks by input size"
    )
    access: Access = Field(
        "white-box",
        description="the attacker's access for every attack entry and gate threshold that "
        "does not set its own",
    )
    data: DataSection = Field(default_factory=DataSection)
    attacks: list[AttackSpec] = Field(min_length=1)
    defenses: list[DefenseSpec] = Field(default_factory=list)
    certify: CertifySection | None = None
    natural: NaturalSection | None = Field(
        None,
        exclude_if=lambda v: v is None,
        description="natural robustness: corruptions, rotations and translations, occlusion",
    )
    gate: GateSection = Field(default_factory=GateSection)
    report: ReportSection = Field(default_factory=ReportSection)
    engine: EngineSection = Field(default_factory=EngineSection)
    integrity: IntegritySection = Field(default_factory=IntegritySection)

    @model_validator(mode="before")
    @classmethod
    def _default_access(cls, data: Any) -> Any:
        """A top-level ``access`` is the default of every attack entry and gate threshold."""
        if not isinstance(data, dict) or data.get("access") in (None, "white-box"):
            return data
        access = data["access"]
        out = dict(data)
        if isinstance(data.get("attacks"), list):
            out["attacks"] = [
                {**a, "access": access} if isinstance(a, dict) and "access" not in a else a
                for a in data["attacks"]
            ]
        gate = data.get("gate")
        if isinstance(gate, dict) and isinstance(gate.get("min_robust_accuracy"), list):
            out["gate"] = {
                **gate,
                "min_robust_accuracy": [
                    {**g, "access": access} if isinstance(g, dict) and "access" not in g else g
                    for g in gate["min_robust_accuracy"]
                ],
            }
        return out

    @model_validator(mode="after")
    def _count_shares(self) -> Config:  # L0 shares ("5%"), once the input's size is known
        count_shares(self.model.input_shape, [*self.attacks, *self.gate.min_robust_accuracy])
        return self

    def threats(self) -> list[Threat]:
        """Every distinct threat in the config, sorted by access, norm and eps."""
        seen: dict[tuple[str, str, float], Threat] = {}
        for spec in self.attacks:
            for t in spec.threats():
                seen.setdefault((t.access, t.norm, t.eps), t)
        return sorted(seen.values(), key=lambda t: (t.access, t.norm, t.ball_size))

    @model_validator(mode="after")
    def _positive_class(self) -> Config:
        """attack_only_class must be a class of the model; a recall gate needs a positive class."""
        only, k = self.data.attack_only_class, self.model.num_classes
        if only is not None and k is not None and only >= k:
            raise ValueError(
                f"data.attack_only_class: {only} is not a class of this model (0..{k - 1})"
            )
        if self.gate.min_robust_recall is not None and self.positive_class() is None:
            raise ValueError(
                "gate.min_robust_recall: needs a positive class (data.attack_only_class or "
                "model.decision.positive_class)"
            )
        return self

    def positive_class(self) -> int | None:
        """The class whose recall the report follows: the attacked class, else the decision's."""
        if self.data.attack_only_class is not None:
            return self.data.attack_only_class
        return self.model.decision.positive_class if self.model.decision is not None else None

    @property
    def data_seed(self) -> int:
        return self.data.seed if self.data.seed is not None else self.seed
