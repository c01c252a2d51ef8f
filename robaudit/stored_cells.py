"""Cells saved by an earlier run of the same audit: reused whole, or, for a cell an
interrupted run left partial, continued and merged with what this run adds.

Saved cells hold plain tensors, numbers and dicts only (safe with ``weights_only=True``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, replace

import torch

from robaudit.outcomes import CellOutcome, EngineControl, Example, Unit
from robaudit.threat import Threat


def combine(prior: Unit, new: Unit, room: int) -> Unit:
    """A resumed partial cell: the earlier run's finished samples plus this run's."""
    old, new_cell = prior[0], new[0]
    was = old.attacked

    def both(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.where(was.view(-1, *([1] * (a.dim() - 1))), a, b)

    def pick(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
        if a is None or b is None:
            return b if a is None else a
        return both(a, b)

    traces = dict(new_cell.distance_trace or {})
    for q, dist in (old.distance_trace or {}).items():
        traces[q] = both(dist, traces.get(q, torch.full_like(dist, float("nan"))))
    cell = replace(
        new_cell,
        attacked=was | new_cell.attacked,
        broken=both(old.broken, new_cell.broken),
        norms=both(old.norms, new_cell.norms),
        adv_pred=both(old.adv_pred, new_cell.adv_pred),
        adversarial=pick(old.adversarial, new_cell.adversarial),
        sample_queries=pick(old.sample_queries, new_cell.sample_queries),
        undecided=pick(old.undecided, new_cell.undecided),
        distance_trace=traces or None,
        queries=old.queries + new_cell.queries,
        grad_evals=old.grad_evals + new_cell.grad_evals,
        seconds=old.seconds + new_cell.seconds,
        budget_violations=old.budget_violations + new_cell.budget_violations,
        bounds_violations=old.bounds_violations + new_cell.bounds_violations,
        nonfinite=old.nonfinite + new_cell.nonfinite,
        silent_failures=old.silent_failures + new_cell.silent_failures,
        query_mismatch=old.query_mismatch + new_cell.query_mismatch,
        loss_trace=old.loss_trace if old.loss_trace is not None else new_cell.loss_trace,
        constraint_violations=_sum_or_none(old.constraint_violations, new_cell.constraint_violations),
        broken_constraints=old.broken_constraints or new_cell.broken_constraints,
        naive=pick(old.naive, new_cell.naive),
        naive_hinge=pick(old.naive_hinge, new_cell.naive_hinge),
        naive_reasons=_reasons(old.naive_reasons, new_cell.naive_reasons),
        feasible_candidates=_sum_or_none(old.feasible_candidates, new_cell.feasible_candidates),
        repaired=_sum_or_none(old.repaired, new_cell.repaired),
        # kept only where both parts have it: a part saved without it leaves its breaks'
        # feature changes untallied (the report says so) rather than half counted
        candidates=both(old.candidates, new_cell.candidates)
        if old.candidates is not None and new_cell.candidates is not None
        else None,
    )
    shown = sorted(prior[1] + new[1], key=lambda e: e.sample)[:room]
    return cell, shown


def _reasons(
    a: dict[int, list[str]] | None, b: dict[int, list[str]] | None
) -> dict[int, list[str]] | None:
    return None if a is None and b is None else {**(b or {}), **(a or {})}


def _sum_or_none(a: int | None, b: int | None) -> int | None:
    return None if a is None and b is None else (a or 0) + (b or 0)


def stored_or_run(
    ctl: EngineControl, key: tuple[object, ...], run: Callable[[Unit | None], Unit | None]
) -> Unit | None:
    """A cell saved by an earlier run of the same audit, else run it (and save it).

    A partial cell saved by an interrupted run is continued: ``run`` gets it as ``prior``.
    """
    found = ctl.store.load(key) if ctl.store is not None else None
    if ctl.shard.active:
        found = ctl.shard.broadcast(found)  # rank 0 holds the folder
    prior = _unit_from_dict(found) if found is not None else None
    if prior is not None and prior[0].unfinished == 0:
        return prior
    unit = run(prior)
    if unit is not None and ctl.store is not None:
        ctl.store.save(key, _unit_to_dict(unit))
    return unit


def _unit_to_dict(unit: Unit) -> dict[str, object]:
    """Plain tensors, numbers and dicts only: safe to load with ``weights_only=True``."""
    cell, shown = unit
    return {"cell": asdict(cell), "shown": [asdict(e) for e in shown]}


def _unit_from_dict(d: dict[str, object]) -> Unit:
    raw = dict(d["cell"])  # type: ignore[call-overload]
    raw["threat"] = Threat(**raw["threat"])
    shown = [Example(**e) for e in d["shown"]]  # type: ignore[attr-defined]
    raw["broken_constraints"] = tuple(raw.get("broken_constraints") or ())
    return CellOutcome(**raw), shown
