"""Whether an audit earned a grade: complete, and an adversarial search at every threat.

A partial run (time budget, interrupt, failure) covers only what finished, and a threat where
nothing searched (the noise baseline alone, or a decision-based attack whose median distance
was still falling when its query budget ran out) gives an upper bound on robustness, not a
measurement. Such audits get no letter grade: the verdict says *incomplete* or *weak
evaluation* with the reasons, and the gate fails on them unless ``gate.allow_weak`` (weak) or
``--allow-partial`` (a time-budget stop) accepts them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from robaudit.attacks.base import Attack
from robaudit.engine import CellOutcome
from robaudit.results import GateFailure, GateResult, PartialRun

# a decision-based attack has converged when its median distance fell by less than this
# share over the last half of its query budget
STILL_FALLING = 0.05


def unconverged(cell: CellOutcome) -> str | None:
    """Why a decision-based search had not converged at its budget, or None."""
    trace = cell.distance_trace
    if not trace or len(trace) < 2:
        return None
    marks = sorted(trace)
    last, half = marks[-1], min(marks, key=lambda q: abs(q - marks[-1] / 2))
    if half == last:
        return None
    mask = cell.attacked
    a, b = trace[half][mask], trace[last][mask]
    ok = torch.isfinite(a) & torch.isfinite(b)
    if not bool(ok.any()):
        return None
    before, after = float(a[ok].median()), float(b[ok].median())
    if before > 0 and after < (1 - STILL_FALLING) * before:
        return (
            f"{cell.attack}'s median distance was still falling at its budget ({before:.3g} at "
            f"{half} queries, {after:.3g} at {last})"
        )
    return None


def weak_threats(
    cells: Sequence[CellOutcome], attacks: dict[int, Attack], keys: Sequence[str]
) -> dict[str, str]:
    """Threat keys with no converged adversarial search, and why."""
    out: dict[str, str] = {}
    for key in keys:
        here = [c for c in cells if c.threat.key == key]
        searching = [c for c in here if c.index not in attacks or attacks[c.index].search]
        converged = [c for c in searching if unconverged(c) is None]
        if converged:
            continue
        if searching:
            out[key] = "; ".join(r for c in searching if (r := unconverged(c)))
        else:
            names = ", ".join(sorted({c.attack for c in here})) or "nothing"
            out[key] = f"no adversarial search ran ({names} only)"
    return out


def status(incomplete: PartialRun | None, weak: dict[str, str], covers: list[str]) -> dict[str, Any]:
    """The evaluation verdict that decides whether the score earns a letter grade."""
    reasons = [f"{k}: {why}" for k, why in weak.items()]
    if incomplete is not None:
        state = "incomplete"
        reasons.insert(0, f"the run stopped early: {incomplete.reason}")
    elif weak:
        state = "weak"
    else:
        state = "complete"
    return {"status": state, "reasons": reasons, "score_covers": covers}


def with_weak(gate: GateResult, weak: dict[str, str], allowed: bool) -> GateResult:
    """The gate plus one criterion: every threat had a converged adversarial search."""
    if not weak:
        return gate
    checked = [*gate.checked, "adversarial search at every threat"]
    if allowed:
        return GateResult(gate.passed, gate.failures, tuple(checked))
    detail = "weak evaluation (upper bounds, not measurements): " + "; ".join(
        f"{k}: {why}" for k, why in weak.items()
    ) + " (gate.allow_weak accepts it)"
    failure = GateFailure("adversarial search at every threat", float(len(weak)), 0.0, detail)
    return GateResult(False, (*gate.failures, failure), tuple(checked))
