"""Minimal-norm attacks in the cascade: run once per norm, then read off at every eps.

A minimal-norm attack (DeepFool, C&W, FAB, HopSkipJump) answers with the smallest breaking
perturbation it found, not a point in one ball: it runs once per (entry, access, norm) at the
largest eps any of its threats asks for, and each threat's cell is derived from that one run
(broken where the verified size fits the eps).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from robaudit.cell import CellContext, run_cell
from robaudit.outcomes import CellOutcome, Example, PlannedAttack, Unit
from robaudit.stored_cells import stored_or_run
from robaudit.threat import Threat
from robaudit.verification import TOLERANCE


def run_minimal(
    ctx: CellContext,
    item: PlannedAttack,
    plan: list[PlannedAttack],
    targets: torch.Tensor,
    examples: int,
) -> Unit | None:
    """Run a minimal-norm attack once per norm, at the largest eps any of its threats asks for."""
    t = item.threat
    eps = max(
        p.threat.eps
        for p in plan
        if p.index == item.index and p.threat.norm == t.norm and p.threat.access == t.access
    )
    run_threat = Threat(t.norm, eps, t.access)
    none_done = torch.zeros_like(targets)
    return stored_or_run(
        ctx.ctl,
        (ctx.ctl.variant, "minimal", item.index, item.attack.name, run_threat.key),
        lambda _prior: run_cell(  # never partial: its derived cells need every sample
            ctx, PlannedAttack(item.index, item.attack, run_threat, search=item.search),
            targets, none_done, examples, keep_partial=False,
        ),
    )


def derive_minimal(
    full: tuple[CellOutcome, list[Example]],
    threat: Threat,
    first: bool,
    done: torch.Tensor,
    room: int,
) -> tuple[CellOutcome, list[Example]]:
    """The cell of a minimal-norm attack at one eps: broken where the verified norm fits."""
    cell, pool = full
    assert cell.adversarial is not None
    inside = cell.norms <= threat.eps + TOLERANCE
    fits = cell.adversarial & inside
    shown = [
        replace(e, threat_key=threat.key)
        for e in pool
        if bool(fits[e.sample]) and not bool(done[e.sample])
    ][:room]
    derived = replace(
        cell,
        threat=threat,
        broken=fits,
        undecided=cell.undecided & inside if cell.undecided is not None else None,
        queries=cell.queries if first else 0,
        grad_evals=cell.grad_evals if first else 0,
        seconds=cell.seconds if first else 0.0,
        shared_cost=not first,
    )
    return derived, shown
