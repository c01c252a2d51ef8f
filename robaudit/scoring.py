"""Score, grade and gate: from the results table to a verdict and an exit code.

Score (0-100) = 100 × the mean, over every threat in the run, of the robust accuracy at that
threat (the worst case over attacks). Robust accuracy already includes clean errors, so a
model that is accurate but fragile and one that is robust but inaccurate both score low.
Grades: A ≥ 80, B ≥ 65, C ≥ 50, D ≥ 35, else F. With ``data.attack_only_class`` only that
class is attacked, so robust accuracy over all samples would be mostly the clean accuracy of
the others: the score is then the mean robust recall of the attacked class instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from robaudit.config import CertifiedThreshold, GateSection, GateThreshold
from robaudit.natural.run import NaturalOutcome
from robaudit.results import Finding, GateFailure, GateResult, PartialRun, ThreatRow
from robaudit.threat import format_eps

if TYPE_CHECKING:
    from robaudit.baseline import Comparison

SCORE_FORMULA = (
    "score = 100 × mean over threats of robust accuracy (worst case over attacks); "
    "grade A ≥ 80, B ≥ 65, C ≥ 50, D ≥ 35, else F; with data.attack_only_class, robust "
    "recall of the attacked class instead of robust accuracy"
)
GRADES = ((80.0, "A"), (65.0, "B"), (50.0, "C"), (35.0, "D"))
# gate.fail_on_findings: which unresolved findings fail the gate. An unresolved error means
# the numbers cannot be trusted (masked gradients, attacks that do not work on the model).
FAILING_SEVERITIES = {"none": (), "errors": ("error",), "any": ("warning", "error")}


def untrusted(findings: Sequence[Finding]) -> list[Finding]:
    """Unresolved error-severity findings: each says the numbers cannot be trusted."""
    return [f for f in findings if not f.resolved and f.severity == "error"]


def score(threats: tuple[ThreatRow, ...], clean_accuracy: float) -> float:
    """The documented 0–100 score; with no threats it is the clean accuracy."""
    if not threats:
        return round(100.0 * clean_accuracy, 2)
    return round(100.0 * sum(t.robust_accuracy for t in threats) / len(threats), 2)


def class_score(positive: dict[str, Any]) -> float:
    """The score of a run that attacks one class only: its mean robust recall (its clean recall
    with no threats), so the unattacked classes cannot lift the grade."""
    rows = positive["threats"]
    if not rows:
        return round(100.0 * positive["clean_recall"], 2)
    return round(100.0 * sum(r["robust_recall"] for r in rows.values()) / len(rows), 2)


def grade(value: float) -> str:
    for limit, letter in GRADES:
        if value >= limit:
            return letter
    return "F"


Check = tuple[str, list[GateFailure]]  # a criterion's name and its failures (none: it held)


def evaluate_gate(
    gate: GateSection,
    clean_accuracy: float,
    threats: tuple[ThreatRow, ...],
    score_value: float,
    findings: Sequence[Finding] = (),
    certification: dict[str, Any] | None = None,
    natural: NaturalOutcome | None = None,
    positive: dict[str, Any] | None = None,
) -> GateResult:
    """Check every configured threshold; each miss says its value, its limit and by how much."""
    checks: list[Check] = []
    if gate.min_clean_accuracy is not None:
        limit = gate.min_clean_accuracy
        checks.append(_at_least(
            "min_clean_accuracy", clean_accuracy, limit,
            f"clean accuracy {clean_accuracy:.1%} is below {limit:.1%} "
            f"by {100 * (limit - clean_accuracy):.1f} points",
        ))
    checks.extend(_robust_check(g, threats) for g in gate.min_robust_accuracy)
    if gate.min_score is not None:
        checks.append(_at_least(
            "min_score", score_value, gate.min_score,
            f"score {score_value:.1f} is below {gate.min_score:g} by {gate.min_score - score_value:.1f}",
        ))
    curve = {round(c["radius"], 9): c for c in (certification or {}).get("curve", [])}
    checks.extend(_certified_check(c, curve) for c in gate.min_certified_accuracy)
    checks.extend(natural_checks(gate, natural))
    if gate.min_robust_recall is not None:
        checks.append(_recall_check(gate.min_robust_recall, positive))
    if gate.fail_on_findings != "none":
        severities = FAILING_SEVERITIES[gate.fail_on_findings]
        checks.append(("fail_on_findings", [
            GateFailure(f"finding {f.id}", 1.0, 0.0, f"unresolved {f.severity}: {f.title} ({f.detail})")
            for f in findings
            if not f.resolved and f.severity in severities
        ]))
    failures = tuple(f for _, fs in checks for f in fs)
    return GateResult(passed=not failures, failures=failures, checked=tuple(n for n, _ in checks))


def natural_checks(gate: GateSection, natural: NaturalOutcome | None) -> list[Check]:
    """The natural-robustness thresholds: mean (or per-corruption) corruption accuracy, the
    highest mCE, and accuracy under the worst rotation/translation and the worst occlusion."""
    checks: list[Check] = []
    summary = natural.summary if natural is not None else None
    per = (summary or {}).get("per_corruption", {})
    mca = gate.min_corruption_accuracy
    if isinstance(mca, dict):
        for name, limit in mca.items():
            crit = f"min_corruption_accuracy[{name}]"
            got = per.get(name, {}).get("accuracy")
            checks.append(_measured(crit, got, limit, f"{name} accuracy (mean over severities)"))
    elif mca is not None:
        got = (summary or {}).get("mean_accuracy")
        checks.append(_measured("min_corruption_accuracy", got, mca, "mean corruption accuracy"))
    if gate.max_mce is not None:
        mce = (summary or {}).get("mce")
        if mce is None:
            checks.append(("max_mce", [GateFailure("max_mce", float("nan"), gate.max_mce,
                                                   "mCE was not measured")]))
        else:
            fails = mce > gate.max_mce
            checks.append(("max_mce", [GateFailure(
                "max_mce", mce, gate.max_mce,
                f"mCE {mce:.1%} is above {gate.max_mce:.1%} by {100 * (mce - gate.max_mce):.1f} points",
            )] if fails else []))
    for crit, part in (("min_geometric_accuracy", "geometric"), ("min_occlusion_accuracy", "occlusion")):
        limit = getattr(gate, crit)
        if limit is not None:
            got = (getattr(natural, part) or {}).get("robust_accuracy") if natural else None
            checks.append(_measured(crit, got, limit, f"accuracy under the worst {part} transform"))
    return checks


def _measured(name: str, value: float | None, limit: float, what: str) -> Check:
    if value is None:
        return (name, [GateFailure(name, float("nan"), limit, f"{what} was not measured")])
    return _at_least(
        name, value, limit,
        f"{what} {value:.1%} is below {limit:.1%} by {100 * (limit - value):.1f} points",
    )


def _at_least(name: str, value: float, limit: float, detail: str) -> Check:
    """A minimum: fails, saying ``detail``, when ``value`` is below ``limit``."""
    return (name, [GateFailure(name, value, limit, detail)] if value < limit else [])


def _robust_check(g: GateThreshold, threats: tuple[ThreatRow, ...]) -> Check:
    """One ``min_robust_accuracy`` threshold against the run's row for its threat."""
    where = "" if g.variant == "model" else f"{g.variant} "
    name = f"min_robust_accuracy[{where}{g.access} {g.threat_norm} eps={g._eps_label or format_eps(g.budget)}]"
    row = next(
        (
            t
            for t in threats
            if t.norm == g.threat_norm
            and t.access == g.access
            and t.variant == g.variant
            and abs(t.eps - g.budget) < 1e-9
        ),
        None,
    )
    if row is None:
        return (name, [GateFailure(name, float("nan"), g.value, "threat was not evaluated")])
    return _at_least(
        name, row.robust_accuracy, g.value,
        f"robust accuracy {row.robust_accuracy:.1%} at {g.threat_norm} eps {row.eps_label} is "
        f"below {g.value:.1%} by {100 * (g.value - row.robust_accuracy):.1f} points",
    )


def _recall_check(limit: float, positive: dict[str, Any] | None) -> Check:
    """``min_robust_recall``: the positive class's recall at its worst threat of the model."""
    name = "min_robust_recall"
    rows = (positive or {}).get("threats", {})
    if not rows:
        return (name, [GateFailure(name, float("nan"), limit, "robust recall was not measured")])
    key, worst = min(rows.items(), key=lambda kv: kv[1]["robust_recall"])
    got = float(worst["robust_recall"])
    return _at_least(
        name, got, limit,
        f"robust recall of class {positive['class'] if positive else '?'} {got:.1%} at {key} "
        f"is below {limit:.1%} by {100 * (limit - got):.1f} points",
    )


def _certified_check(c: CertifiedThreshold, curve: dict[float, dict[str, Any]]) -> Check:
    """One ``min_certified_accuracy`` threshold against the certified-accuracy curve."""
    name = f"min_certified_accuracy[l2 radius={c.radius:g}]"
    point = curve.get(round(c.radius, 9))
    if point is None:
        return (name, [GateFailure(name, float("nan"), c.value, "certification did not run")])
    return _at_least(
        name, point["accuracy"], c.value,
        f"certified accuracy {point['accuracy']:.1%} at L2 radius {c.radius:g} is "
        f"below {c.value:.1%} by {c.value - point['accuracy']:.1%}",
    )


def with_baseline(gate: GateResult, comparison: Comparison) -> GateResult:
    """The gate plus one criterion per threat compared with a baseline (``--baseline``): each
    fails when its robust accuracy dropped by more than ``max_drop`` points; a baseline that
    shares no threat with the run fails as one criterion, since nothing was checked."""
    checked = list(gate.checked)
    failures = list(gate.failures)
    limit = comparison.max_drop_points / 100
    if not comparison.robust:
        checked.append("baseline")
        failures.append(
            GateFailure(
                "baseline",
                float("nan"),
                limit,
                f"no threat in common with the baseline {comparison.base_path}; nothing was compared",
            )
        )
    for c in comparison.robust:
        checked.append(c.criterion)
        if c.exceeds:
            failures.append(
                GateFailure(c.criterion, c.new, c.base - limit, c.describe(comparison.max_drop_points))
            )
    return GateResult(passed=not failures, failures=tuple(failures), checked=tuple(checked))


def with_partial(gate: GateResult, incomplete: PartialRun, allow_partial: bool) -> GateResult:
    """The gate of a run that did not finish: every unrun planned cell fails it (robust
    accuracy without its attacks would overstate robustness), unless ``--allow-partial``
    accepts a time-budget stop. An interrupted or failed run never passes."""
    unrun = len(incomplete.unrun) + len(incomplete.not_run)
    accepted = allow_partial and incomplete.kind == "time-budget"
    checked = [*gate.checked, "complete"]
    if accepted:
        return GateResult(gate.passed, gate.failures, tuple(checked))
    from robaudit.report.notices import unrun_text  # robaudit.report imports this module

    detail = f"{incomplete.reason}: {unrun_text(incomplete.to_dict())}"
    if incomplete.kind == "time-budget":
        detail += " (--allow-partial accepts the partial result)"
    failure = GateFailure("complete", float(unrun), 0.0, detail)
    return GateResult(False, (*gate.failures, failure), tuple(checked))
