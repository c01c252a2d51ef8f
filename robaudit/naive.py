"""What a naive audit would have counted on a tabular model, and why robaudit did not.

A naive audit of a fraud model runs an unconstrained attack and counts every candidate that
lies in the ball and is misclassified. Many of those are not real records: the attacker made
the customer younger (an immutable feature), opened 2.4 accounts, picked two channels at once
or broke ``open_accounts <= total_accounts``. robaudit never counts them
(:func:`robaudit.verification.verify_batch`); this module counts them anyway, to say how much
a naive audit would have overstated the attack.

Per cell of a tabular run (constraints active), the *naive candidate* is the attack's own
output before the engine repairs it (attacks that search the plain ball), or, for a
constrained gradient attack, the same attack run again with the constraints off (same seed):
one extra attack per batch, on tabular runs only. It is judged like any candidate (ball, box,
a fresh forward pass) but without the constraints; a *naive break* is one that is misclassified
and breaks a constraint. Gradient-free constrained searches (score or decision access) are not
rerun: their query budget is the audit's, not the naive comparison's.

Per threat (:func:`naive_rows`), the samples some naive break hit at this threat or a smaller
budget of the same kind, that robaudit did not count as broken there, are what a naive audit
would have counted *more*; each is explained by the first constraint its candidate breaks
(in the order immutable, bounds, integer, binary, one-hot, relation).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from robaudit.attacks.base import Attack
from robaudit.attacks.feasible import constrained_to
from robaudit.classifier import Classifier
from robaudit.threat import Threat
from robaudit.verification import verify_batch

if TYPE_CHECKING:
    from robaudit.outcomes import CellOutcome
    from robaudit.results import ThreatRow
    from robaudit.tabular import Constraints

# a constraint name's prefix (robaudit.tabular.constraints) -> the report's reason
REASONS = {
    "immutable": "immutable",
    "bounds": "bounds",
    "integer": "integer",
    "binary": "binary",
    "onehot": "onehot",
    "relation": "relation",
    "linear": "relation",
    "nonfinite": "nonfinite",
}
ORDER = ("immutable", "bounds", "integer", "binary", "onehot", "relation", "nonfinite")


@dataclass(frozen=True)
class NaiveBatch:
    """One batch's naive breaks (bool[B], CPU), the constraints each candidate breaks, and
    which breaks hinge on an immutable feature (with those put back, the model is right)."""

    hit: torch.Tensor
    reasons: list[list[str]]
    hinge: torch.Tensor


@dataclass
class NaiveShare:
    """One cell's naive breaks so far: which samples, the constraints each one broke, and
    which hinge on an immutable feature."""

    hit: torch.Tensor  # bool[N]
    hinge: torch.Tensor  # bool[N]
    reasons: dict[int, list[str]] = field(default_factory=dict)

    @classmethod
    def empty(cls, n: int) -> NaiveShare:
        return cls(torch.zeros(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool))

    def record(self, idx: torch.Tensor, batch: NaiveBatch) -> None:
        self.hit[idx] = batch.hit
        self.hinge[idx] = batch.hinge
        for j in batch.hit.nonzero().flatten().tolist():
            self.reasons[int(idx[j])] = batch.reasons[j]

    def forget(self, idx: torch.Tensor) -> None:
        self.hit[idx] = False
        self.hinge[idx] = False
        for s in idx.tolist():
            self.reasons.pop(int(s), None)

    def merge(self, other: NaiveShare) -> None:
        self.hit |= other.hit
        self.hinge |= other.hinge
        self.reasons.update(other.reasons)


def measured(attack: Attack, access: str) -> bool:
    """Whether a cell gets a naive candidate: an attack searching the plain ball (its own
    output), or a constrained gradient attack (rerun without the constraints)."""
    return not attack.constrained or access == "white-box"


@contextmanager
def _uncounted(*clfs: Classifier) -> Iterator[None]:
    """The naive comparison's queries and gradients are not the audit's: counters restored."""
    saved = [c.counters.snapshot() for c in clfs]
    try:
        yield
    finally:
        for c, (q, g) in zip(clfs, saved, strict=True):
            c.counters.queries, c.counters.grad_evals = q, g


def naive_batch(
    clf: Classifier,
    view: Classifier,
    attack: Attack,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: Threat,
    candidate: torch.Tensor,
    seed: int,
    constraints: Constraints,
    *,
    minimal: bool = False,
    alpha: float | None = None,
) -> NaiveBatch:
    """The naive breaks of one batch and why each is not real.

    ``candidate``: the attack's output; a constrained attack is run again here on ``view``
    with the constraints off, from a generator seeded with ``seed`` (the batch's seed). A
    break *hinges* on the immutable features when the candidate with them put back to the
    clean values is classified correctly: it breaks the sample only by changing a fact the
    attacker cannot change (one more forward pass, on the breaks only).
    """
    none = torch.zeros(x.shape[0], dtype=torch.bool)
    with _uncounted(clf, view):
        if attack.constrained:
            with view.fast_layout(), constrained_to(None):
                gen = torch.Generator().manual_seed(seed)
                candidate = attack.run(view, x, y, threat, gen).x_adv
        if candidate.shape != x.shape:
            return NaiveBatch(none, [[] for _ in range(x.shape[0])], none)
        judged = verify_batch(clf, x, candidate, y, threat, minimal=minimal, alpha=alpha)
        reasons = constraints.violations(judged.x_adv, x)
        hit = judged.broken & torch.tensor([bool(r) for r in reasons], dtype=torch.bool)
        hinge = none.clone()
        if bool(hit.any()):
            pick = hit.nonzero().flatten().to(x.device)
            xa = judged.x_adv.to(x.device)[pick]
            back = torch.where(constraints.mutable(x.device), xa, x[pick])
            hinge[pick.cpu()] = clf.verdict(back, y[pick], alpha).right.cpu()
    return NaiveBatch(hit, reasons, hinge)


def reason(names: list[str]) -> str:
    """The first broken constraint's kind (``immutable:age`` -> ``immutable``)."""
    return REASONS.get(names[0].split(":", 1)[0], "relation") if names else "nonfinite"


def naive_rows(
    cells: list[CellOutcome],
    threats: tuple[ThreatRow, ...],
    verdicts: dict[str, dict[int, dict[str, Any]]],
    correct: torch.Tensor,
) -> tuple[dict[str, Any], ...]:
    """Per threat of the audited model where a naive candidate was judged: the breaks a naive
    audit would have counted more, its robust accuracy, and why each break is not real."""
    by_key: dict[str, list[CellOutcome]] = {}
    for c in cells:
        by_key.setdefault(c.threat.key, []).append(c)
    n = int(correct.numel())
    rows: list[dict[str, Any]] = []
    carried: dict[tuple[str, str], tuple[torch.Tensor, dict[int, _Why], list[str]]] = {}
    order = sorted(by_key, key=lambda k: _ball(by_key[k][0].threat))
    row_of = {t.key: t for t in threats}
    for key in order:
        t = by_key[key][0].threat
        hit, why, names = carried.get(
            (t.access, t.norm), (torch.zeros(n, dtype=torch.bool), {}, [])
        )
        hit, why, names = hit.clone(), dict(why), list(names)
        for c in by_key[key]:
            if c.naive is None:
                continue
            names.append(c.attack)
            hinge = c.naive_hinge if c.naive_hinge is not None else torch.zeros_like(c.naive)
            for s in (c.naive & ~hit).nonzero().flatten().tolist():
                why[s] = ((c.naive_reasons or {}).get(s, []), bool(hinge[s]))
            hit |= c.naive
        carried[(t.access, t.norm)] = (hit, why, names)
        if not names or key not in row_of:
            continue
        broken = verdicts.get(key, {})
        extra = [s for s in (hit & correct).nonzero().flatten().tolist() if s not in broken]
        rows.append(_row(row_of[key], extra, why, names, n))
    return tuple(rows)


_Why = tuple[list[str], bool]  # a naive break's broken constraints, and whether it hinges


def _ball(t: Threat) -> tuple[str, str, float]:
    return (t.access, t.norm, t.ball_size)


def _row(
    t: ThreatRow, extra: list[int], why: dict[int, _Why], names: list[str], n: int
) -> dict[str, Any]:
    first = dict.fromkeys(ORDER, 0)
    moved: dict[str, int] = {}
    only = hinged = 0
    for s in extra:
        found, hinge = why.get(s, ([], False))
        hinged += hinge
        first[reason(found)] += 1
        imm = [f.split(":", 1)[1] for f in found if f.startswith("immutable:")]
        for f in imm:
            moved[f] = moved.get(f, 0) + 1
        only += bool(imm) and len(imm) == len(found)
    return {
        "threat_key": t.key,
        "attacks": list(dict.fromkeys(names)),
        "naive_breaks": len(extra),
        "robust_accuracy": t.robust_accuracy,
        "naive_robust_accuracy": (t.robust - len(extra)) / n if n else 0.0,
        "first_constraint": {k: v for k, v in first.items() if v},
        "immutable_features": dict(sorted(moved.items(), key=lambda kv: (-kv[1], kv[0]))),
        "only_immutable": only,
        "hinge_on_immutable": hinged,
    }
