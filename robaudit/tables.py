"""The run's tables, computed from the engine's cells: threat rows, attack rows, per-sample
verdicts, query statistics, and the per-class, confusion and minimal-norm breakdowns.

Renderers never compute: every number a report shows is made here (or in scoring).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from robaudit.engine import CellOutcome, EngineResult
from robaudit.results import VARIANT, AttackRow, ThreatRow, wilson_interval
from robaudit.threat import Threat


def _median(v: torch.Tensor) -> float | None:
    v = v[torch.isfinite(v)]
    return float(v.median()) if v.numel() else None


QUERY_FRACTIONS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)


def query_stats(
    c: CellOutcome, correct: torch.Tensor, before: torch.Tensor, n: int
) -> dict[str, Any]:
    """Queries per verified break and the queries-vs-robust-accuracy curve of a black-box cell.

    ``before`` holds samples broken at this threat before this attack (and at smaller eps), so
    the curve ends at the row's cumulative robust accuracy.
    """
    out: dict[str, Any] = {}
    sq = c.sample_queries
    if sq is None:
        return out
    if c.distance_trace:
        # a minimal-norm decision attack spends its whole budget shrinking the perturbation;
        # a sample is won at the first checkpoint where its distance fits the eps (the final
        # point itself is verified by the engine)
        first = sq.clone()
        for q, d in sorted(c.distance_trace.items(), reverse=True):
            fits = ~torch.isnan(d) & (d <= c.threat.eps + 1e-6)
            first = torch.where(fits, torch.minimum(first, torch.full_like(first, q)), first)
        sq = first
    won = sq[c.broken].double()
    if won.numel():
        out["queries_per_success_mean"] = float(won.mean())
        out["queries_per_success_median"] = float(won.median())
    top = c.query_budget or (int(sq.max()) if sq.numel() and int(sq.max()) > 0 else None)
    if top and n:
        curve = []
        for q in sorted({max(1, round(top * f)) for f in QUERY_FRACTIONS}):
            hit = c.broken & (sq <= q)
            curve.append([q, int((correct & ~before & ~hit).sum()) / n])
        out["query_curve"] = curve
    if c.distance_trace:
        dc = []
        for q, d in sorted(c.distance_trace.items()):
            seen = d[c.attacked & correct]
            seen = seen[~torch.isnan(seen)]
            dc.append([q, float(seen.median()) if seen.numel() else float("inf")])
        out["distance_curve"] = dc
    return out


def build_tables(
    er: EngineResult,
    y: torch.Tensor,
    params: dict[int, dict[str, Any]],
    cascade: bool,
    *,
    variant: str = VARIANT,
    non_adaptive: frozenset[int] = frozenset(),
) -> tuple[tuple[ThreatRow, ...], tuple[AttackRow, ...], dict[str, dict[int, dict[str, Any]]]]:
    """Aggregate the engine's cells into threat rows, attack rows and per-sample verdicts.

    Threats of one (access, norm) are walked in eps order: a break at a smaller eps lies in
    every larger ball too, so it is carried up (``inherited``). ``non_adaptive`` lists the
    attack indices that searched on the bare model (defense variants); their breaks count like
    any other (verified on the variant itself).
    """
    n = int(er.correct.numel())
    none = torch.zeros(n, dtype=torch.bool)
    by_key: dict[str, list[CellOutcome]] = {}
    threats: dict[str, Threat] = {}
    for c in er.cells:
        by_key.setdefault(c.threat.key, []).append(c)
        threats[c.threat.key] = c.threat
    attack_rows: list[AttackRow] = []
    threat_rows: list[ThreatRow] = []
    verdicts: dict[str, dict[int, dict[str, Any]]] = {}
    carried: dict[tuple[str, str], _Carried] = {}
    for key in sorted(by_key, key=lambda k: (threats[k].access, threats[k].norm, threats[k].ball_size)):
        t = threats[key]
        label = key if variant == VARIANT else f"{variant}/{key}"
        prev = carried.get((t.access, t.norm), _Carried(none, {}, none))
        walk = _Walk(n)
        for c in by_key[key]:
            attack_rows.append(
                _attack_row(c, t, label, walk, prev.broken, er.correct, params, variant,
                            non_adaptive, er.targets())
            )
        now = _carry(walk, prev, er.correct)
        carried[(t.access, t.norm)] = now
        verdicts[key] = now.verdict
        attacks = tuple(dict.fromkeys(c.attack for c in by_key[key]))
        threat_rows.append(_threat_row(t, label, variant, now, prev, walk, er, attacks))
    del y
    return tuple(threat_rows), tuple(attack_rows), verdicts


@dataclass
class _Carried:
    """What a threat hands to the next larger eps of its (access, norm)."""

    broken: torch.Tensor  # bool[N]: broken here or at a smaller eps
    verdict: dict[int, dict[str, Any]]
    open: torch.Tensor  # bool[N]: undecided, not settled by a break


class _Walk:
    """The breaks and open verdicts of one threat's cells so far, in cell order."""

    def __init__(self, n: int) -> None:
        self.own = torch.zeros(n, dtype=torch.bool)
        self.own_open = torch.zeros(n, dtype=torch.bool)
        self.open_by: dict[int, dict[str, Any]] = {}  # first open verdict per sample here
        self.verdict: dict[int, dict[str, Any]] = {}

    def add(self, c: CellOutcome, eps: float) -> None:
        if c.undecided is not None:
            for s in (c.undecided & ~self.own_open).nonzero().flatten().tolist():
                self.open_by[s] = {**_verdict(c, s, eps), "undecided": True}
            self.own_open |= c.undecided
        for s in (c.broken & ~self.own).nonzero().flatten().tolist():
            self.verdict[s] = _verdict(c, s, eps)


def _verdict(c: CellOutcome, s: int, eps: float) -> dict[str, Any]:
    return {
        "attack": c.attack,
        "norm": float(c.norms[s]),
        "adv_pred": int(c.adv_pred[s]),
        "eps_found": eps,
    }


def _attack_row(
    c: CellOutcome,
    t: Threat,
    label: str,
    walk: _Walk,
    prev_mask: torch.Tensor,
    correct: torch.Tensor,
    params: dict[int, dict[str, Any]],
    variant: str,
    non_adaptive: frozenset[int],
    targets: torch.Tensor,
) -> AttackRow:
    """One cell's row; adds the cell's breaks to ``walk`` (the cumulative columns need them).
    ``targets``: the samples every attack may run on (data.attack_only_class narrows them)."""
    n = int(correct.numel())
    walk.add(c, t.eps)
    qs = query_stats(c, correct, walk.own | prev_mask, n)
    walk.own |= c.broken
    own = walk.own
    attacked = int(c.attacked.sum())
    broken = int(c.broken.sum())
    alone = int(correct.sum()) - broken
    cumul = int((correct & ~(own | c.broken | prev_mask)).sum())
    norms_b = c.norms[c.broken]
    full = bool(torch.equal(c.attacked, targets))
    return AttackRow(
        variant=variant,
        attack=c.attack,
        attack_index=c.index,
        access=t.access,
        norm=t.norm,
        eps=t.eps,
        eps_label=t.label,
        threat_key=label,
        attacked=attacked,
        broken=broken,
        robust_accuracy=(int(correct.sum()) - broken) / n if full else None,
        cumulative_robust_accuracy=int((correct & ~(own | prev_mask)).sum()) / n,
        success_rate=broken / attacked if attacked else 0.0,
        median_norm=_median(norms_b),
        mean_norm=float(norms_b.mean()) if norms_b.numel() else None,
        queries=c.queries,
        grad_evals=c.grad_evals,
        seconds=round(c.seconds, 4),
        budget_violations=c.budget_violations,
        bounds_violations=c.bounds_violations,
        nonfinite=c.nonfinite,
        silent_failures=c.silent_failures,
        params=params.get(c.index, {}),
        access_used=c.access_used,
        query_budget=c.query_budget,
        query_mismatch=c.query_mismatch,
        adaptive=c.index not in non_adaptive,
        robust_ci=wilson_interval(alone, n) if full else None,
        cumulative_ci=wilson_interval(cumul, n),
        constraint_violations=c.constraint_violations,
        naive_breaks=int(c.naive.sum()) if c.naive is not None else None,
        constraint_satisfaction=(
            c.feasible_candidates / attacked if c.feasible_candidates is not None and attacked
            else None
        ),
        repaired=c.repaired,
        **qs,
    )


def _carry(walk: _Walk, prev: _Carried, correct: torch.Tensor) -> _Carried:
    """This threat's verdicts: its own breaks, those inherited from a smaller eps, and the
    open verdicts here or at a smaller eps (the candidate lies in this ball too) that no
    attack settled by a break (counted broken in the headline, listed as undecided)."""
    verdict = walk.verdict
    inherited = prev.broken & ~walk.own & correct
    for s in inherited.nonzero().flatten().tolist():
        verdict[s] = dict(prev.verdict[s])
    total = (walk.own | prev.broken) & correct
    still_open = (walk.own_open | prev.open) & correct & ~total
    for s in still_open.nonzero().flatten().tolist():
        verdict[s] = dict(walk.open_by[s]) if s in walk.open_by else dict(prev.verdict[s])
    return _Carried(total, verdict, still_open)


def _threat_row(
    t: Threat,
    label: str,
    variant: str,
    now: _Carried,
    prev: _Carried,
    walk: _Walk,
    er: EngineResult,
    attacks: tuple[str, ...],
) -> ThreatRow:
    correct = er.correct
    n = int(correct.numel())
    clean_open = er.clean_undecided if er.clean_undecided is not None else torch.zeros_like(correct)
    inherited = prev.broken & ~walk.own & correct
    robust = int(correct.sum()) - int(now.broken.sum()) - int(now.open.sum())
    upper = robust + int(now.open.sum()) + int(clean_open.sum())
    lo, hi = wilson_interval(robust, n)
    nc = int(er.targets().sum())  # success rate: of the samples the attacks may run on
    return ThreatRow(
        variant=variant,
        access=t.access,
        norm=t.norm,
        eps=t.eps,
        eps_label=t.label,
        key=label,
        n=n,
        robust=robust,
        robust_accuracy=robust / n if n else 0.0,
        ci_low=lo,
        ci_high=hi,
        success_rate=int(now.broken.sum()) / nc if nc else 0.0,
        attacks=attacks,
        inherited=int(inherited.sum()),
        robust_accuracy_upper=upper / n if n else 0.0,
        undecided=upper - robust,
    )


def per_class_rows(
    y: torch.Tensor,
    correct: torch.Tensor,
    threats: tuple[ThreatRow, ...],
    verdicts: dict[str, dict[int, dict[str, Any]]],
    num_classes: int,
) -> tuple[dict[str, Any], ...]:
    """Clean and robust accuracy per class and threat (for the per-class table)."""
    rows = []
    for k in range(num_classes):
        members = (y == k).nonzero().flatten().tolist()
        if not members:
            continue
        row: dict[str, Any] = {
            "class": k,
            "n": len(members),
            "clean_accuracy": sum(bool(correct[i]) for i in members) / len(members),
            "clean_ci": list(
                wilson_interval(sum(bool(correct[i]) for i in members), len(members))
            ),
            "robust_accuracy": {},
        }
        for t in threats:
            broken = verdicts[t.key]
            ok = sum(1 for i in members if bool(correct[i]) and i not in broken)
            row["robust_accuracy"][t.key] = ok / len(members)
            row.setdefault("robust_ci", {})[t.key] = list(wilson_interval(ok, len(members)))
        rows.append(row)
    return tuple(rows)


def minimal_norm_rows(
    er: EngineResult, eps_by_norm: dict[tuple[str, str], list[float]], points: int = 40
) -> tuple[dict[str, Any], ...]:
    """Per minimal-norm attack: the distribution of smallest breaking norms, and the robust
    accuracy-vs-eps curve they imply (one run gives every eps, not only the configured ones)."""
    rows = []
    n = int(er.correct.numel())
    for (index, name, access, norm), norms in sorted(er.min_norms.items()):
        found = norms[torch.isfinite(norms) & er.correct]
        top = float(found.max()) * 1.1 if found.numel() else 1.0
        grid = sorted(
            {*(top * i / (points - 1) for i in range(points)), *eps_by_norm.get((access, norm), [])}
        )
        curve = [
            [
                e,
                int((er.correct & ~(torch.isfinite(norms) & (norms <= e + 1e-6))).sum()) / n
                if n
                else 0.0,
            ]
            for e in grid
        ]
        q = (
            found.quantile(torch.tensor([0.25, 0.5, 0.75])).tolist()
            if found.numel()
            else [None] * 3
        )
        rows.append(
            {
                "attack": name,
                "attack_index": index,
                "access": access,
                "norm": norm,
                "attacked": int(er.correct.sum()),
                "found": int(found.numel()),
                "median": q[1],
                "p25": q[0],
                "p75": q[2],
                "curve": curve,
            }
        )
    return tuple(rows)


def confusion_rows(
    y: torch.Tensor,
    threats: tuple[ThreatRow, ...],
    verdicts: dict[str, dict[int, dict[str, Any]]],
    top: int = 5,
) -> tuple[dict[str, Any], ...]:
    """Per threat, the most frequent (true class → adversarial prediction) pairs among breaks:
    which mistakes an attacker can force most easily."""
    rows = []
    for t in threats:
        counts: dict[tuple[int, int], int] = {}
        for i, v in verdicts.get(t.key, {}).items():
            if v is None or v.get("adv_pred", -1) < 0 or v.get("undecided"):
                continue
            pair = (int(y[i]), int(v["adv_pred"]))
            counts[pair] = counts.get(pair, 0) + 1
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
        rows.append(
            {
                "threat_key": t.key,
                "pairs": [{"true": a, "pred": b, "count": c} for (a, b), c in ranked],
            }
        )
    return tuple(rows)


def positive_class_row(
    y: torch.Tensor,
    correct: torch.Tensor,
    threats: tuple[ThreatRow, ...],
    verdicts: dict[str, dict[int, dict[str, Any]]],
    positive: int,
    attacked_only: bool,
) -> dict[str, Any]:
    """The positive class (fraud) clean and under each threat: its recall, the rate of its
    samples that pass as another class (1 - recall), and the evasion rate, the share of those
    caught clean that an attack lets pass (TabularBench's success rate on the attacked class)."""
    members = y.cpu() == positive
    n = int(members.sum())
    caught = int((correct & members).sum())
    row: dict[str, Any] = {
        "class": positive, "n": n, "attacked_only": attacked_only,
        "clean_recall": caught / n if n else 0.0,
        "clean_pass_rate": (n - caught) / n if n else 0.0,
        "clean_ci": list(wilson_interval(caught, n)),
        "threats": {},
    }
    for t in threats:
        broken = verdicts[t.key]
        left = sum(1 for i in (correct & members).nonzero().flatten().tolist() if i not in broken)
        row["threats"][t.key] = {
            "robust_recall": left / n if n else 0.0,
            "pass_rate": (n - left) / n if n else 0.0,
            "evasion_rate": (caught - left) / caught if caught else 0.0,
            "ci": list(wilson_interval(left, n)),
        }
    return row
