"""Findings about the run itself, beside integrity's findings about the evaluation.

The clean pass and the engine's own checks (RA001 implausible clean accuracy, RA002 attacks
returning points outside the ball or the box, RA016 misreported queries, RA019
candidates that break the feature constraints), a battery without
some members (RA014), skipped attacks (RA015), a model handed over in training mode (RA018)
and certificates the attack contradicts (RA017). The pipeline only collects them.
"""

from __future__ import annotations

from typing import Any

from robaudit.attacks.batteries import BATTERIES
from robaudit.config import Config
from robaudit.findings import finding
from robaudit.outcomes import EngineResult
from robaudit.results import Finding, SkippedAttack


def preflight_findings(er: EngineResult, cfg: Config) -> list[Finding]:
    """Findings read off the clean pass and the engine's own checks (RA001, RA002)."""
    out: list[Finding] = []
    n = int(er.correct.numel())
    acc = float(er.correct.float().mean()) if n else 0.0
    chance = 1.0 / cfg.model.classes
    if n and acc < min(0.5, 2 * chance):
        out.append(
            finding(
                "RA001",
                f"clean accuracy {acc:.1%} with {cfg.model.classes} classes (chance "
                f"{chance:.1%}): check model.mean/std, model.bounds and the labels",
            )
        )
    for c in er.cells:
        if c.query_mismatch:
            out.append(
                finding(
                    "RA016",
                    f"{c.attack} at {c.threat.key}: per-sample query counts of {c.query_mismatch} "
                    f"sample(s) disagree with the counter ({c.queries} queries counted)",
                )
            )
        if c.budget_violations or c.bounds_violations or c.nonfinite:
            out.append(
                finding(
                    "RA002",
                    f"{c.attack} at {c.threat.key}: {c.budget_violations} outside the eps ball, "
                    f"{c.bounds_violations} outside the bounds, {c.nonfinite} non-finite; the "
                    "engine projected them back before verifying",
                )
            )
        if c.constraint_violations:
            out.append(
                finding(
                    "RA019",
                    f"{c.attack} at {c.threat.key}: {c.constraint_violations} candidate(s) broke "
                    f"the feature constraints (first: {', '.join(c.broken_constraints)}); none "
                    "was counted as a break",
                )
            )
    return out


def battery_findings(cfg: Config) -> list[Finding]:
    """Say so when a named battery runs without members robaudit does not have yet."""
    out = []
    for i, spec in enumerate(cfg.attacks):
        if spec.battery is not None and BATTERIES[spec.battery]["missing"]:
            missing = ", ".join(BATTERIES[spec.battery]["missing"])
            out.append(
                finding(
                    "RA014",
                    f"attacks[{i}] battery {spec.battery} ran "
                    f"{', '.join(BATTERIES[spec.battery]['runs'])} as a cascade, without {missing} "
                    "(not yet available in this robaudit version)",
                )
            )
    return out


def train_mode_findings(gap: float | None) -> list[Finding]:
    """RA018 when the model answered differently in train and eval mode."""
    if gap is None or gap <= 1e-5:
        return []
    return [
        finding(
            "RA018",
            f"the model came in training mode; its logits differ from eval mode's by up to "
            f"{gap:.3g} on 8 probed samples. The numbers are eval mode's; the "
            "model's mode and tensors were restored unchanged",
        )
    ]


def skipped_findings(skipped: list[SkippedAttack]) -> list[Finding]:
    """RA015 listing the attacks the access level or the input did not allow."""
    if not skipped:
        return []
    return [
        finding(
            "RA015",
            f"{len(skipped)} attack(s) skipped: "
            + "; ".join(f"{s.attack} ({s.reason})" for s in skipped),
        )
    ]


def certification_findings(certification: dict[str, Any]) -> list[Finding]:
    """RA017 at every radius where more samples are certified than the attack left robust."""
    bad = [e for e in certification["empirical"] if not e["consistent"]]
    if not bad:
        return []
    return [
        finding(
            "RA017",
            "; ".join(
                f"L2 radius {e['radius']:g}: {e['certified']} samples certified but only "
                f"{e['robust']} left robust by the attack"
                for e in bad
            ),
        )
    ]
