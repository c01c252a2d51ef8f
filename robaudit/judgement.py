"""Score and gate a finished run: the one place a run's numbers become a verdict.

The score and grade describe the audited model only (defense variants are what-ifs); the gate
reads every row, the findings and the certificate, then the partial-run and weak-evaluation
rules (:mod:`robaudit.evaluation`) may fail it further.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from robaudit.config import Config
from robaudit.evaluation import status as evaluation_status
from robaudit.evaluation import weak_threats, with_weak
from robaudit.natural.run import NaturalOutcome
from robaudit.outcomes import EngineResult
from robaudit.plan import Plan
from robaudit.results import AttackRow, Finding, GateResult, PartialRun, ThreatRow
from robaudit.scoring import class_score, evaluate_gate, grade, score, with_partial


@dataclass(frozen=True)
class VariantTables:
    """The defense variants' rows (threat rows and attack rows carry the variant's label)."""

    threats: tuple[ThreatRow, ...] = ()
    attacks: tuple[AttackRow, ...] = ()
    summaries: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class Verdict:
    """What the run earned: score, grade (None when the evaluation is not complete), gate."""

    score: float
    grade: str | None
    gate: GateResult
    evaluation: dict[str, Any]
    incomplete: PartialRun | None


def judge(
    cfg: Config,
    er: EngineResult,
    plan: Plan,
    model_threats: tuple[ThreatRow, ...],
    variants: VariantTables,
    findings: list[Finding],
    certification: dict[str, Any] | None,
    incomplete: PartialRun | None,
    allow_partial: bool,
    natural: NaturalOutcome | None = None,
    positive: dict[str, Any] | None = None,
) -> Verdict:
    """Score the audited model, gate every row; partial and weak evaluations fail the gate."""
    n = int(er.correct.numel())
    clean_acc = int(er.correct.sum()) / n if n else 0.0
    one_class = positive is not None and positive["attacked_only"]
    sc = class_score(positive) if one_class and positive else score(model_threats, clean_acc)
    threats = (*model_threats, *variants.threats)
    gate = evaluate_gate(
        cfg.gate, clean_acc, threats, sc, findings, certification, natural, positive
    )
    if incomplete is not None:
        gate = with_partial(gate, incomplete, allow_partial)
    keys = [t.key for t in model_threats]
    weak = weak_threats(er.cells, plan.attacks(), keys)
    gate = with_weak(gate, weak, cfg.gate.allow_weak)
    evaluation = evaluation_status(incomplete, weak, keys)
    earned = grade(sc) if evaluation["status"] == "complete" else None
    return Verdict(sc, earned, gate, evaluation, incomplete)
