"""The run's results: one long table of (variant, attack, threat) rows, threat summaries,
per-sample records and run metadata. Everything downstream (score, gate, renderers)
reads only this.

Definitions, stated once and used everywhere:
- robust accuracy at a threat = samples classified correctly clean and not broken by any
  attack at that threat (nor at a smaller eps of the same norm: the balls are nested),
  over all evaluated samples;
- attack success rate = verified breaks / samples the attack ran on (those classified
  correctly clean, minus, in a cascade, those already broken);
- 95% confidence intervals are Wilson score intervals;
- randomized models (verdicts by the sequential test of :mod:`robaudit.verdicts`): a sample
  whose clean verdict, or whose verdict on some candidate at the threat (or at a smaller eps
  of the same family), the test left open and that no attack there broke is *undecided*.
  Robust accuracy is then an interval: the headline ``robust_accuracy`` (and ``robust``, the
  CI, the gate, the score) counts every undecided sample broken (an open clean verdict as not
  correct); ``robust_accuracy_upper`` counts none of them broken. Deterministic models have
  no undecided samples and ``robust_accuracy_upper == robust_accuracy``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from robaudit.natural.run import NaturalOutcome

if TYPE_CHECKING:
    from robaudit.universal import UniversalOutcome

SCHEMA_VERSION = "1.0"
VARIANT = "model"  # the bare model; defenses add variants later


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a proportion (sensible even at 0 or n successes)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class Finding:
    """An integrity or pre-flight observation with a stable id."""

    id: str
    severity: str  # "info" | "warning" | "error"
    title: str
    detail: str
    resolved: bool = False  # robaudit reacted and the reported numbers already include it
    reaction: str = ""


@dataclass(frozen=True)
class ThreatRow:
    """Worst case over every attack at one threat."""

    variant: str
    access: str
    norm: str
    eps: float
    eps_label: str
    key: str
    n: int
    robust: int
    robust_accuracy: float
    ci_low: float
    ci_high: float
    success_rate: float
    attacks: tuple[str, ...]
    inherited: int  # samples counted broken by an example found at a smaller eps
    # randomized models: robust accuracy with no undecided sample counted broken, and how
    # many samples are undecided (the headline counts them broken); deterministic: = / 0
    robust_accuracy_upper: float = 0.0
    undecided: int = 0


@dataclass(frozen=True)
class AttackRow:
    """What one attack did at one threat (a diagnostic; the headline is the ThreatRow)."""

    variant: str
    attack: str
    attack_index: int
    access: str
    norm: str
    eps: float
    eps_label: str
    threat_key: str
    attacked: int
    broken: int
    robust_accuracy: float | None  # the attack alone; None when a cascade skipped samples
    cumulative_robust_accuracy: float  # this attack and those run before it at this threat
    success_rate: float
    median_norm: float | None
    mean_norm: float | None
    queries: int
    grad_evals: int
    seconds: float
    budget_violations: int
    bounds_violations: int
    nonfinite: int
    silent_failures: int = 0  # the attack saw these fooled; verification did not (RA006)
    params: dict[str, Any] = field(default_factory=dict)
    access_used: str = "white-box"  # the view the attack ran through (black-box: restricted)
    query_budget: int | None = None  # black-box attacks: the per-sample query budget
    # black-box attacks: model queries per verified break (mean, median) and the cumulative
    # robust accuracy had the attack stopped at each fraction of its budget
    queries_per_success_mean: float | None = None
    queries_per_success_median: float | None = None
    query_curve: list[list[float]] | None = None
    # decision-based minimal-norm attacks: [queries, median distance reached] checkpoints
    distance_curve: list[list[float]] | None = None
    query_mismatch: int = 0  # samples whose self-reported query count disagreed with the counter
    # defense variants: False for the non-adaptive run (gradients of the bare model)
    adaptive: bool = True
    # 95% Wilson intervals of robust_accuracy (None when undefined) and of the cumulative one
    robust_ci: tuple[float, float] | None = None
    cumulative_ci: tuple[float, float] = (0.0, 1.0)
    # tabular runs: candidates that broke a feature constraint (not counted as breaks);
    # None without a feature schema, and then left out of report.json and the tables
    constraint_violations: int | None = None
    # tabular runs: samples whose naive candidate (robaudit.naive: the attack without the
    # constraints) is misclassified but breaks a constraint; None where not measured
    naive_breaks: int | None = None
    # tabular runs: the share of the attack's candidates that, as it returned them (in the ball
    # and the box, before the engine's repair), broke no constraint (constrained attacks: 1.0,
    # else RA019), and how many the engine repaired; None without a schema (and the share
    # without candidates)
    constraint_satisfaction: float | None = None
    repaired: int | None = None


@dataclass(frozen=True)
class GateFailure:
    """A threshold the run did not meet."""

    criterion: str
    value: float
    limit: float
    detail: str


@dataclass(frozen=True)
class GateResult:
    passed: bool
    failures: tuple[GateFailure, ...]
    checked: tuple[str, ...]


class _Record:
    """A record the report writes as a JSON object, field by field in declaration order."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]


@dataclass(frozen=True)
class ModelInfo(_Record):
    """report.model: the checkpoint's identity and what the model expects."""

    path: str
    sha256: str
    format: str
    arch: str | None
    input_shape: list[int]
    num_classes: int
    class_names: list[str] | None
    bounds: list[float]
    mean: list[float] | None
    std: list[float] | None



@dataclass(frozen=True)
class DataInfo(_Record):
    """report.data: where the evaluated samples came from."""

    source: str
    split: str
    samples: int
    requested_samples: int | None



@dataclass(frozen=True)
class SkippedAttack(_Record):
    """An attack the run's access level did not allow, at the threats it would have run at."""

    attack: str
    attack_index: int
    threats: list[str]
    reason: str



@dataclass(frozen=True)
class PartialRun(_Record):
    """A run that stopped early: why (``kind``: interrupted, time-budget or failure, and the
    reason), the planned cells that did not run or finish (``unrun``, each with
    ``samples_left`` when it kept a part), and the later steps skipped (``not_run``)."""

    kind: str
    reason: str
    unrun: list[dict[str, Any]]
    not_run: list[str]



@dataclass(frozen=True)
class RunMeta:
    """report.meta: versions, the run's settings, timings, how it executed, and, when they
    apply, how randomized verdicts were drawn, the protocol, what the run inferred and the
    baseline comparison."""

    robaudit_version: str
    torch_version: str
    python_version: str
    platform: str
    device: str
    seed: int
    data_seed: int
    batch_size: int
    cascade: bool
    eot_samples: int
    votes: int
    access: str
    config_path: str | None
    config_sha256: str
    started_at: str
    duration_seconds: float
    clean_seconds: float
    schema_version: str
    execution: dict[str, Any]
    evaluation: dict[str, Any]
    verdicts: dict[str, Any] | None = None
    protocol: dict[str, Any] | None = None
    inferred: dict[str, Any] | None = None
    baseline: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: the optional parts only when they apply."""
        out = asdict(self)
        for key in _OPTIONAL_META:
            if out[key] is None:
                del out[key]
        return out


_OPTIONAL_META = ("verdicts", "protocol", "inferred", "baseline")


@dataclass(frozen=True)
class RunResult:
    """Everything a report needs; renderers compute nothing new."""

    model: ModelInfo
    data: DataInfo
    n: int
    clean_correct: int
    clean_accuracy: float
    clean_ci: tuple[float, float]
    threats: tuple[ThreatRow, ...]
    attacks: tuple[AttackRow, ...]
    samples: tuple[dict[str, Any], ...]
    examples: tuple[dict[str, Any], ...]
    findings: tuple[Finding, ...]
    score: float
    grade: str | None  # None: the audit did not earn one (meta.evaluation says why)
    gate: GateResult
    meta: RunMeta
    config: dict[str, Any]
    per_class: tuple[dict[str, Any], ...] = ()
    minimal_norms: tuple[dict[str, Any], ...] = ()
    skipped: tuple[SkippedAttack, ...] = ()  # attacks the access level did not allow
    # defense variants: per threat, non-adaptive vs adaptive robust accuracy and the gap
    variants: tuple[dict[str, Any], ...] = ()
    # randomized smoothing: certified accuracy per radius and the adaptive attack's check
    certification: dict[str, Any] | None = None
    # per threat of the bare model: the most common (true -> adversarial) class pairs
    confusions: tuple[dict[str, Any], ...] = ()
    incomplete: PartialRun | None = None  # None when the run is complete
    # corruptions, rotations and translations, occlusion (the config's natural section)
    natural: NaturalOutcome | None = None
    # data.attack_only_class / model.decision: the positive class's recall and pass rate, clean
    # and per threat of the audited model (robaudit.tables.positive_class_row)
    positive_class: dict[str, Any] | None = None
    # tabular runs: the features the verified breaks changed (robaudit.tabular.changes)
    feature_changes: dict[str, Any] | None = None
    # tabular runs: per threat, what a naive audit (no constraint checks) would have counted
    # more, and why each is not a real break (robaudit.naive.naive_rows)
    naive_audit: tuple[dict[str, Any], ...] | None = None
    # universal patches (patch-pgd universal: true): the patch, per-placement accuracy, noise
    universal: tuple[UniversalOutcome, ...] = ()

    def table(self) -> pd.DataFrame:
        """The long results table: one row per (variant, attack, threat)."""
        return pd.DataFrame([_row(r) for r in self.attacks])

    def threat_table(self) -> pd.DataFrame:
        return pd.DataFrame([asdict(r) for r in self.threats])


def _row(r: AttackRow) -> dict[str, Any]:
    """One attack row for the long table; the tabular columns only on tabular runs."""
    out = {k: v for k, v in asdict(r).items() if k != "params"}
    for key in TABULAR_COLUMNS:
        if out[key] is None:
            del out[key]
    return out


# None (left out) elsewhere
TABULAR_COLUMNS = ("constraint_violations", "naive_breaks", "constraint_satisfaction", "repaired")
