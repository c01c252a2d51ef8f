"""The threat-model config: YAML in, typed and validated objects out.

Every validation error names its YAML path (``attacks[1].steps``) and what would be valid;
an unknown key suggests the closest known one. Attack parameters are validated by each
attack's own parameter model, so ``robaudit attacks`` and the config never disagree.
"""

from __future__ import annotations

import difflib
import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from robaudit import norms
from robaudit.access import LEVELS as ACCESS_LEVELS
from robaudit.access import RANK, AccessName
from robaudit.attacks.base import ACCESS_FOR_REQUIRES, AttackParams, registry
from robaudit.attacks.batteries import BATTERY_PARAMS, battery_members
from robaudit.errors import ConfigError
from robaudit.inputs import InputSpec, needs_image_error
from robaudit.norms import CONFIG_NORMS as NORMS
from robaudit.smoothing import SmoothingParams
from robaudit.threat import Threat, _short_repr, parse_eps

PRESETS_DIR = Path(__file__).parent / "presets"
PRESET_NAMES = ("quick", "standard", "strict", "autoattack")
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

Norm = Literal["linf", "l2"]
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


class AttackSpec(BaseModel):
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
                f"unknown attack {_short_repr(v)}{_did_you_mean(v, names)}; valid: {', '.join(names)}"
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
        return battery_members(self.battery, self.params)

    def threats(self) -> list[Threat]:
        """One threat per eps value (none before the budget profile filled an omitted eps)."""
        if self.eps is None:
            return []
        labels = self._eps_labels or [""] * len(self.eps)
        return [Threat(self.norm, e, self.access, lab) for e, lab in zip(self.eps, labels, strict=True)]


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
                f"unknown defense {_short_repr(v)}{_did_you_mean(v, names)}; "
                f"valid: {', '.join(names)}"
            )
        return v

    def build(self) -> Any:
        """The Defense instance (parameters validated by :func:`config_from_dict`)."""
        from robaudit.defenses import defense_registry

        cls = defense_registry()[self.name]
        params = self._params or cls.Params.model_validate(self.model_extra or {})
        return cls(params)


class GateThreshold(_Section):
    """A minimum robust accuracy at one threat (of the bare model unless ``variant`` says)."""

    norm: Norm
    eps: float | None = Field(None, description="omitted: the budget profile's headline budget")
    value: float = Field(ge=0.0, le=1.0)
    access: Access = "white-box"
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
    allow_weak: bool = Field(
        False,
        description="pass a threat where no adversarial search ran or converged (noise only, "
        "a decision-based attack still improving at its budget); such audits get no grade",
    )


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
        "auto", "digits", "mnist", "cifar", "imagenet", "tabular", "waveform"
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

    def threats(self) -> list[Threat]:
        """Every distinct threat in the config, sorted by access, norm and eps."""
        seen: dict[tuple[str, str, float], Threat] = {}
        for spec in self.attacks:
            for t in spec.threats():
                seen.setdefault((t.access, t.norm, t.eps), t)
        return sorted(seen.values(), key=lambda t: (t.access, t.norm, t.eps))

    @property
    def data_seed(self) -> int:
        return self.data.seed if self.data.seed is not None else self.seed


# ---------------------------------------------------------------------------------------
# loading and error formatting


def load_config(path: str | Path) -> Config:
    """Read, parse and validate a YAML config file; any problem is a one-line ConfigError."""
    p = Path(path)
    try:
        exists, is_dir = p.exists(), p.is_dir()
    except (OSError, ValueError) as exc:  # a name the OS refuses (NUL byte, too long)
        raise ConfigError(f"{str(p)!r}: not a usable config path ({exc})") from None
    if not exists:
        raise ConfigError(f"{p}: config file not found")
    if is_dir:
        raise ConfigError(f"{p}: is a directory, expected a YAML config file")
    try:
        size = p.stat().st_size
        raw = p.read_bytes() if size <= MAX_CONFIG_BYTES else b""
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config ({exc.strerror or exc})") from None
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{p}: config is {size} bytes, larger than the {MAX_CONFIG_BYTES} bytes allowed; "
            "is it the right file?"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{p}: config is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
            "save it as UTF-8"
        ) from None
    return config_from_yaml(text.removeprefix("\ufeff"), source=str(p))


def config_from_yaml(text: str, source: str = "<config>") -> Config:
    """Parse YAML text (``yaml.safe_load`` only) and validate it.

    Aliases are kept as shared references by the parser, so a "billion laughs" document
    parses cheaply; :func:`_check_size` then refuses it before anything expands it.
    """
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{source}: config is larger than {MAX_CONFIG_BYTES} characters")
    try:
        data = yaml.load(text, Loader=_DepthLimitedLoader)  # safe_load with a depth limit
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        if "\t" in problem or "\\t" in problem:
            problem += " (YAML indents with spaces, never tabs)"
        raise ConfigError(f"{source}: malformed YAML{where}: {problem}") from None
    except RecursionError:
        raise ConfigError(
            f"{source}: YAML nested too deeply to parse; a config nests at most "
            f"{MAX_CONFIG_DEPTH} levels"
        ) from None
    except Exception as exc:  # the parser failing on hostile input (a 5000-digit integer)
        raise ConfigError(
            f"{source}: malformed YAML: {type(exc).__name__}: {str(exc).split(';')[0][:200]}"
        ) from None
    if data is None:
        raise ConfigError(f"{source}: config is empty; start from `robaudit init --preset quick`")
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: top level must be a mapping of sections (model, data, attacks, ...), "
            f"got {type(data).__name__}"
        )
    _check_size(data, source)
    return config_from_dict(data, source=source)


class _DepthLimitedLoader(yaml.SafeLoader):
    """``yaml.safe_load``'s loader, refusing nesting beyond MAX_CONFIG_DEPTH while composing:
    cheaper than letting the scanner go thousands of levels deep (quadratic) and overflow."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_CONFIG_DEPTH + 1:
                mark = self.peek_event().start_mark
                raise ConfigError(
                    f"line {mark.line + 1}, column {mark.column + 1}: nested more than "
                    f"{MAX_CONFIG_DEPTH} levels deep; a config is a few levels of mappings and lists"
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _check_size(data: Any, source: str) -> None:
    """Refuse documents that are huge once aliases are expanded, nest too deeply, or refer to
    themselves; shared (aliased) nodes are counted once per use, each computed only once."""
    sizes: dict[int, int] = {}
    open_ids: set[int] = set()

    def size(node: Any, path: str, depth: int) -> int:
        if not isinstance(node, (dict, list)):
            return 1
        path = path if len(path) <= 80 else path[:40] + "..." + path[-37:]
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_ids:
            raise ConfigError(
                f"{source}: {path or '(top level)'}: a YAML alias refers to a node that "
                "contains it (a self-referencing document)"
            )
        if depth > MAX_CONFIG_DEPTH:
            raise ConfigError(
                f"{source}: {path}: nested more than {MAX_CONFIG_DEPTH} levels deep; "
                "a config is a few levels of mappings and lists"
            )
        open_ids.add(key)
        items = node.items() if isinstance(node, dict) else enumerate(node)
        total = 1
        for k, v in items:
            name = _key_str(k)
            sub = f"{path}[{k}]" if isinstance(node, list) else (f"{path}.{name}" if path else name)
            total += size(v, sub, depth + 1)
            if total > MAX_CONFIG_NODES:
                raise ConfigError(
                    f"{source}: {sub}: the document expands to more than {MAX_CONFIG_NODES} "
                    "values (YAML aliases repeating aliases: a 'billion laughs' bomb?)"
                )
        open_ids.discard(key)
        sizes[key] = total
        return total

    size(data, "", 0)


def config_from_dict(data: dict[str, Any], source: str = "<config>") -> Config:
    """Validate a config given as a dict (YAML already parsed, or built in Python)."""
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(source, exc, (), Config)) from None
    except (ValueError, TypeError, RecursionError) as exc:
        raise ConfigError(f"{source}: {exc}") from None
    problems: list[str] = []
    spec_in = _input_spec(cfg)
    for i, spec in enumerate(cfg.attacks):
        try:
            spec._params = spec.params_model.model_validate(spec.model_extra or {})
        except ValidationError as exc:
            problems.append(_format_errors(source, exc, ("attacks", i), spec.params_model, spec=True))
            continue
        raw = data["attacks"][i].get("eps") if isinstance(data["attacks"][i], dict) else None
        raw_list = raw if isinstance(raw, list) else [raw]
        spec._eps_labels = [str(r).strip() if isinstance(r, str) else "" for r in raw_list]
        for member, _ in spec.members():
            norms = registry()[member].norms
            if spec.norm not in norms:
                problems.append(
                    f"{source}: attacks[{i}].norm: {member} supports {', '.join(norms)}, "
                    f"not {spec.norm!r}"
                )
            problems.extend(_check_access(source, i, member, spec.access))
            if spec_in is not None and not spec_in.is_image and registry()[member].needs_image:
                part = f"attack '{member}'" + (f" (battery {spec.battery})" if spec.battery else "")
                problems.append(needs_image_error(part, spec_in, f"{source}: attacks[{i}]"))
        if spec.name is not None:
            problem = registry()[spec.name].config_problem(spec.params)
            if problem:
                problems.append(f"{source}: attacks[{i}].{problem}")
        problems.extend(_check_eps(source, i, spec, cfg.model))
    raw_gate = data.get("gate") if isinstance(data.get("gate"), dict) else {}
    raw_min = raw_gate.get("min_robust_accuracy") if isinstance(raw_gate, dict) else None
    for k, g in enumerate(cfg.gate.min_robust_accuracy):
        entry = raw_min[k] if isinstance(raw_min, list) and k < len(raw_min) else None
        raw_eps = entry.get("eps") if isinstance(entry, dict) else None
        g._eps_label = raw_eps.strip() if isinstance(raw_eps, str) else ""
    problems.extend(_check_defenses(source, cfg))
    problems.extend(_check_gate(source, cfg))
    if problems:
        raise ConfigError(_with_others(problems, source))
    return cfg


def _with_others(problems: list[str], source: str) -> str:
    """The first problem, then the others on the same line (each without the file name again),
    so a user fixes them all in one pass; a long tail is cut."""
    if len(problems) == 1:
        return problems[0]
    others = "; ".join(p.removeprefix(f"{source}: ") for p in problems[1:])
    if len(others) > 400:
        others = others[:397] + "..."
    return f"{problems[0]} (and {len(problems) - 1} more: {others})"


ACCESS_ORDER = RANK


def _check_access(source: str, i: int, member: str, access: str) -> list[str]:
    """An attack cannot run at a threat that gives the attacker less than it needs."""
    need = ACCESS_FOR_REQUIRES[registry()[member].requires]
    if ACCESS_ORDER[need] <= ACCESS_ORDER[access]:
        return []
    fits = [
        n for n, c in registry().items()
        if ACCESS_ORDER[ACCESS_FOR_REQUIRES[c.requires]] <= ACCESS_ORDER[access]
    ]
    return [
        f"{source}: attacks[{i}].access: {member} needs {need} access, the threat gives "
        f"{access!r}; attacks that run at {access}: {', '.join(fits)}"
    ]


def _check_eps(source: str, i: int, spec: AttackSpec, model: ModelSection) -> list[str]:
    if spec.eps is None or model.input_shape is None:  # checked once the profile filled it
        return []
    lo, hi = model.bounds
    span = hi - lo
    dims = math.prod(model.input_shape)
    limit = norms.get(spec.norm).covering_radius(span, dims)
    out = []
    for j, e in enumerate(spec.eps):
        if e > limit + 1e-12:
            out.append(
                f"{source}: attacks[{i}].eps[{j}]: {e:g} is larger than the whole input range "
                f"({spec.norm} budget at most {limit:g} for bounds {list(model.bounds)})"
            )
    return out


def _check_defenses(source: str, cfg: Config) -> list[str]:
    from robaudit.defenses import defense_registry

    out = []
    spec_in = _input_spec(cfg)
    for i, spec in enumerate(cfg.defenses):
        cls = defense_registry()[spec.name]
        if spec_in is not None and not spec_in.is_image and getattr(cls, "needs_image", False):
            where = f"{source}: defenses[{i}].name"
            out.append(needs_image_error(f"defense '{spec.name}'", spec_in, where))
            continue
        try:
            spec._params = cls.Params.model_validate(spec.model_extra or {})
        except ValidationError as exc:
            out.append(_format_errors(source, exc, ("defenses", i), cls.Params, spec=True))
            continue
        if spec.backward == "eot" and not cls.randomized:
            out.append(
                f"{source}: defenses[{i}].backward: eot needs a randomized defense; "
                f"{spec.name} is deterministic (use auto, exact or bpda)"
            )
    labels = variant_labels(cfg)
    if len(set(labels)) != len(labels) or "model" in labels:
        out.append(f"{source}: defenses: variant labels must be unique and not 'model': {labels}")
    return out


def _input_spec(cfg: Config) -> InputSpec | None:
    """The input's spec when the config gives its shape (else the run checks once it is known)."""
    shape = cfg.model.input_shape
    return InputSpec.of(shape) if shape is not None else None


def variant_labels(cfg: Config) -> list[str]:
    """The report's name of each defense variant, in config order."""
    out = []
    for spec in cfg.defenses:
        try:
            out.append(spec.label or spec.build().label())
        except ValidationError:
            out.append(spec.label or spec.name)
    return out


def fitted(cfg: Config) -> bool:
    """Every budget is known (none is left for the budget profile to fill in at run time)."""
    return all(spec.eps is not None for spec in cfg.attacks) and all(
        g.eps is not None for g in cfg.gate.min_robust_accuracy
    )


def _check_gate(source: str, cfg: Config) -> list[str]:
    threats = cfg.threats()
    out = []
    radii = cfg.certify.radii if cfg.certify is not None else []
    for k, c in enumerate(cfg.gate.min_certified_accuracy):
        if not any(abs(r - c.radius) < 1e-9 for r in radii):
            out.append(
                f"{source}: gate.min_certified_accuracy[{k}].radius: {c.radius:g} is not among "
                f"certify.radii ({', '.join(f'{r:g}' for r in radii) or 'no certify section'})"
            )
    variants = {"model", *variant_labels(cfg)}
    if not fitted(cfg):  # budgets from the profile: checked once the run has fitted them
        return out
    for k, g in enumerate(cfg.gate.min_robust_accuracy):
        if g.variant not in variants:
            out.append(
                f"{source}: gate.min_robust_accuracy[{k}].variant: {g.variant!r} is not a "
                f"variant of this config; valid: {', '.join(sorted(variants))}"
            )
            continue
        if not any(
            t.norm == g.norm and t.access == g.access and abs(t.eps - g.budget) < 1e-9
            for t in threats
        ):
            have = (
                ", ".join(f"{t.access} {t.norm} {t.label}" for t in threats if t.norm == g.norm)
                or "none"
            )
            out.append(
                f"{source}: gate.min_robust_accuracy[{k}]: no attack runs at {g.access} {g.norm} "
                f"eps {g._eps_label or f'{g.eps:g}'}; threats in this config at {g.norm}: {have}"
            )
    return out


def _loc_str(loc: tuple[Any, ...]) -> str:
    s = ""
    for part in loc:
        if isinstance(part, int):
            s += f"[{part}]"
        else:
            s += ("." if s else "") + _key_str(part)
    return s or "(top level)"


def _key_str(key: Any) -> str:
    """A YAML key as it can be shown in a one-line path: quoted when it is not a plain word."""
    text = str(key)
    plain = text and text.isprintable() and text == text.strip() and len(text) <= 60
    return text if plain else _short_repr(text)


def _did_you_mean(word: str, choices: list[str]) -> str:
    if len(word) > 100:  # no real typo is that long; and matching it would be slow
        return ""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f", did you mean {close[0]!r}?" if close else ""


def _fields_at(root: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Known keys of the mapping that holds the last element of ``loc`` (for suggestions)."""
    model: Any = root
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return []
        field = model.model_fields.get(part)
        if field is None:
            return []
        model = _inner_model(field.annotation)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def _inner_model(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def _format_errors(
    source: str,
    exc: ValidationError,
    prefix: tuple[Any, ...],
    root: type[BaseModel],
    spec: bool = False,
) -> str:
    msgs = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if p not in ("function-after", "function-before"))
        full = prefix + loc
        where = f"{source}: {_loc_str(full)}"
        if err["type"] == "extra_forbidden":
            known = list(root.model_fields) if spec and len(loc) == 1 else _fields_at(root, loc)
            if spec:
                known += (
                    ["name", "backward", "label"]
                    if prefix[:1] == ("defenses",)
                    else ["name", "battery", "norm", "eps", "access"]
                )
            msgs.append(f"{where}: unknown key{_did_you_mean(str(loc[-1]), known)}")
        elif err["type"] == "missing" and loc and isinstance(loc[-1], int):  # a short tuple
            msgs.append(
                f"{source}: {_loc_str(full[:-1])}: too few values, item [{loc[-1]}] is missing"
                + (f" (got {_short_repr(err['input'])})" if isinstance(err.get("input"), list) else "")
            )
        elif err["type"] == "missing":
            msgs.append(f"{where}: required key is missing")
        elif err["type"] == "invalid_key":  # a YAML key such as 1, null or a date
            parent = _loc_str(full[:-1])
            key = err.get("input", loc[-1])
            msgs.append(
                f"{source}: {parent}: key {'null' if key is None else _short_repr(key)} is not a "
                "string; keys are names such as "
                f"{', '.join(repr(k) for k in _fields_at(root, loc)[:3]) or 'model'}"
            )
        else:
            msg = err["msg"]
            for lead in ("Value error, ", "Assertion failed, "):
                msg = msg.removeprefix(lead)
            got = err.get("input")
            short = _short_repr(got)
            shown = (
                "" if isinstance(got, (dict, list)) or got is None or short in msg else f" (got {short})"
            )
            msgs.append(f"{where}: {msg}{shown}")
    # a misspelled key also shows up as a missing one: the unknown-key message explains both
    msgs.sort(key=lambda m: 0 if "unknown key" in m else 1)
    return _with_others(msgs, source)


def preset_path(name: str) -> Path:
    """Path of a bundled preset; unknown names are a ConfigError listing the valid ones."""
    if name not in PRESET_NAMES:
        raise ConfigError(
            f"unknown preset {name!r}{_did_you_mean(name, list(PRESET_NAMES))}; "
            f"valid: {', '.join(PRESET_NAMES)}"
        )
    return PRESETS_DIR / f"{name}.yaml"


__all__ = [
    "ACCESS_LEVELS",
    "NORMS",
    "AttackSpec",
    "Config",
    "DataSection",
    "EngineSection",
    "GateSection",
    "GateThreshold",
    "ModelSection",
    "ReportSection",
    "config_from_dict",
    "config_from_yaml",
    "load_config",
    "preset_path",
]
