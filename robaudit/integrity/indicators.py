"""Indicators of attack failure read off the finished cells (Carlini et al. 2019; Pintor et
al. 2022): rising losses (RA005), silent failures (RA006), weak attacks beating strong ones
(RA007) and cross-entropy vs margin gaps (RA009)."""

from __future__ import annotations

from dataclasses import replace

import torch

from robaudit.attacks.base import Attack
from robaudit.engine import CellOutcome, EngineResult
from robaudit.entries import entry_name
from robaudit.findings import finding
from robaudit.integrity.probes import (
    LOSS_GAP,
    LOSS_RISE,
    MIN_STANDING,
    MIN_TRACE,
    RANDOM_RISE,
    RANDOM_SILENT_SHARE,
    WEAK_SHARE,
)
from robaudit.integrity.reactions import where
from robaudit.norms import get
from robaudit.norms.l0 import L0
from robaudit.norms.patch import Patch
from robaudit.results import Finding


def entry(cell: CellOutcome, attacks: dict[int, Attack]) -> str:
    """The attack as the config names it: ``pgd (attacks[2], loss margin)``, so two cells of
    the same attack at one threat can be told apart."""
    where = entry_name(cell.index)
    loss = _loss(cell, attacks)
    return f"{cell.attack} ({where}" + (f", loss {loss})" if loss else ")")


def _strength(cell: CellOutcome, attacks: dict[int, Attack]) -> str:
    return attacks[cell.index].strength if cell.index in attacks else "strong"


def _white(cell: CellOutcome, attacks: dict[int, Attack]) -> bool:
    a = attacks.get(cell.index)
    return a is None or a.requires == "gradients"


def _loss(cell: CellOutcome, attacks: dict[int, Attack]) -> str | None:
    a = attacks.get(cell.index)
    if a is None:
        return None
    return getattr(a.params, "loss", None) or ("dlr" if a.name == "apgd-t" else None)


def post_run(
    er: EngineResult,
    attacks: dict[int, Attack],
    *,
    randomized: bool = False,
    explained: set[tuple[str, float]] | None = None,
) -> list[Finding]:
    """Indicators of attack failure read off the finished cells.

    ``explained``: threats, as (norm, eps), where dead gradients were found and the
    gradient-free reaction ran (RA003 resolved): RA007 there is expected and resolved.
    ``randomized``: the model draws randomness (EOT losses; verdicts by the sequential test of
    :mod:`robaudit.verdicts`). Loss traces are then estimates: RA005 fires only on a rise
    beyond ``RANDOM_RISE`` and beyond 3 standard errors of the trace's own step-to-step noise.
    An attack's claims are single draws that a sound verdict overturns whenever
    P(misclassified) < ½ (PGD's check between restarts, black-box searches), so RA006 does not
    apply; RA007 and RA009 tolerate ``RANDOM_SILENT_SHARE``.
    """
    out: list[Finding] = []
    for c in er.cells:
        out += _cell_findings(c, attacks, randomized)
    by_key: dict[str, list[CellOutcome]] = {}
    for c in er.cells:
        by_key.setdefault(c.threat.key, []).append(c)
    for key, cells in by_key.items():
        out += _weak_beats_strong(key, cells, er, attacks, randomized, explained or set())
        out += _loss_gap(key, cells, er, attacks, randomized)
    return out


def _cell_findings(c: CellOutcome, attacks: dict[int, Attack], randomized: bool) -> list[Finding]:
    """RA005 (the loss rose at the end of a gradient attack) and RA006 (silent failures)."""
    out: list[Finding] = []
    # a randomized model's loss traces are estimates and its verdicts votes: tolerate noise
    rise = RANDOM_RISE if randomized else LOSS_RISE
    tr = c.loss_trace
    standing = int((c.attacked & ~c.broken).sum())
    # gradient attacks only: a black-box search improves until its budget ends by design,
    # and its queries-vs-accuracy curve already shows what more queries would buy
    # a short run (a smoke test's PGD-10) has too few steps to tell a rising trend from
    # step-to-step noise: the indicator needs MIN_TRACE steps and a few samples standing
    per_run = _per_run(len(tr), attacks.get(c.index)) if tr else 0
    if tr and per_run >= MIN_TRACE and standing >= MIN_STANDING and _white(c, attacks):
        k = max(3, per_run // 10)
        last, prev = sum(tr[-k:]) / k, sum(tr[-2 * k : -k]) / k
        noise = 0.0
        if randomized:  # 3 standard errors of the difference of two k-step means
            steps = torch.tensor(tr[-2 * k :], dtype=torch.float64)
            sd = float(steps.diff().std()) / 2**0.5  # differences cancel a slow trend
            noise = 3 * sd * (2 / k) ** 0.5
        if last > prev + max(rise * abs(prev), noise) + 1e-3:
            out.append(
                finding(
                    "RA005",
                    f"{entry(c, attacks)} at {c.threat.key}: mean loss rose from {prev:.4g} to {last:.4g} "
                    f"over its last {k} steps with {standing} samples still standing",
                )
            )
    if c.silent_failures > 0 and not randomized:
        out.append(
            finding(
                "RA006",
                f"{entry(c, attacks)} at {c.threat.key}: {c.silent_failures} samples the attack saw "
                "misclassified were correctly classified by the verification pass",
            )
        )
    return out


def _per_run(length: int, attack: Attack | None) -> int:
    """Trace points of one run: the whole trace, or one restart (or target) when the attack
    restarts. A trace runs restart after restart, each from a random start whose loss climbs
    again, so "the last tenth" of PGD-100 x 5's whole trace spans half of its last restart and
    read that restart's ordinary climb as "still rising at the end"; and a short run stays too
    short to judge however often it restarts."""
    steps = getattr(attack.params, "steps", None) if attack is not None else None
    return steps if isinstance(steps, int) and 0 < steps < length else length


def _weak_beats_strong(
    key: str,
    cells: list[CellOutcome],
    er: EngineResult,
    attacks: dict[int, Attack],
    randomized: bool,
    explained: set[tuple[str, float]],
) -> list[Finding]:
    """RA007: weaker attacks break samples the strong gradient attacks left standing.

    The reference is the strong gradient attacks; single-step, noise, black-box and transfer
    attacks use less information, so each break they add is a masking sign.
    """
    n = int(er.correct.numel())
    weak_share = RANDOM_SILENT_SHARE if randomized else WEAK_SHARE
    strong = [c for c in cells if _strength(c, attacks) == "strong" and _white(c, attacks)]
    weak = [c for c in cells if c not in strong]
    if not (strong and weak):
        return []
    s_broken = torch.zeros(n, dtype=torch.bool)
    s_attacked = torch.ones(n, dtype=torch.bool)
    for c in strong:
        s_broken |= c.broken
        s_attacked &= c.attacked | c.broken
    w_broken = torch.zeros(n, dtype=torch.bool)
    for c in weak:
        w_broken |= c.broken
    missed = w_broken & ~s_broken & s_attacked
    attacked = max(1, int(s_attacked.sum()))
    if int(missed.sum()) <= max(1, weak_share * attacked):
        return []
    found = finding(
        "RA007",
        f"at {key}: {int(missed.sum())} samples broken by "
        f"{', '.join(sorted({c.attack for c in weak}))} but not by "
        f"{', '.join(sorted({c.attack for c in strong}))}",
    )
    if where(cells[0].threat) in explained:  # dead gradients, already reacted to
        found = replace(
            found,
            resolved=True,
            reaction="gradients are dead here (RA003, resolved): the gradient-free "
            "search's breaks count in the worst case",
        )
    elif _expected_search_gain(cells[0].threat.norm, weak, attacks, s_broken, s_attacked,
                               max(1, weak_share * attacked)):  # fmt: skip
        found = replace(
            found,
            resolved=True,
            reaction="a few-pixel or patch budget is combinatorial: gradient attacks step on a "
            "continuous relaxation and miss optima that a score-based random search finds "
            "(Sparse-RS, Croce et al. 2022), so both run and the search's breaks count in the "
            "worst case; the gradient attacks found at least as many breaks themselves, so "
            "this is not the pattern of masked gradients",
        )
    elif any(_constrained_search(c, attacks) for c in weak):
        found = replace(
            found,
            resolved=True,
            reaction="tabular constraints: gradient steps rounded onto integer, binary and "
            "one-hot features miss moves a constrained search finds, so both run (TabularBench's "
            "CAA) and the search's breaks count in the worst case",
        )
    return [found]


def _expected_search_gain(
    norm: str, weak: list[CellOutcome], attacks: dict[int, Attack], s_broken: torch.Tensor,
    s_attacked: torch.Tensor, allowed: float,
) -> bool:  # fmt: skip
    """At an L0 or patch threat, the extra breaks come from a score-based search (the other
    weak attacks stay within ``allowed``), and the gradient attacks found at least as many
    breaks themselves: the pattern of a combinatorial budget, not of blind gradients (a
    masked model gives the gradient attacks few breaks and the search many)."""
    if not _combinatorial(norm):
        return False
    search = [c for c in weak if _score_search(c, attacks)]
    others = [c for c in weak if c not in search]
    if not search:
        return False

    def extra(cs: list[CellOutcome]) -> int:
        b = torch.zeros_like(s_broken)
        for c in cs:
            b |= c.broken
        return int((b & ~s_broken & s_attacked).sum())

    return extra(others) <= allowed and extra(search) <= int(s_broken.sum())


def _combinatorial(norm: str) -> bool:
    """An L0 (pixels or features) or patch threat: which units change is a discrete choice."""
    return isinstance(get(norm), (L0, Patch))


def _score_search(c: CellOutcome, attacks: dict[int, Attack]) -> bool:
    """A score-based search (Sparse-RS, its patches) ran in this cell."""
    a = attacks.get(c.index)
    return a is not None and a.requires == "scores" and a.search


def _constrained_search(c: CellOutcome, attacks: dict[int, Attack]) -> bool:
    """A gradient-free search inside the tabular constraints ran in this cell."""
    a = attacks.get(c.index)
    return a is not None and a.constrained and a.requires != "gradients"


def _loss_gap(
    key: str,
    cells: list[CellOutcome],
    er: EngineResult,
    attacks: dict[int, Attack],
    randomized: bool,
) -> list[Finding]:
    """RA009: cross-entropy attacks leave clearly more standing than margin/DLR attacks."""
    n = int(er.correct.numel())
    ce = [c for c in cells if _loss(c, attacks) == "ce" and _strength(c, attacks) == "strong"]
    mg = [c for c in cells if _loss(c, attacks) in ("margin", "dlr")]
    full = [c for c in ce + mg if torch.equal(c.attacked, er.targets())]
    ce_f, mg_f = [c for c in full if c in ce], [c for c in full if c in mg]
    if not (ce_f and mg_f):
        return []

    def robust(cs: list[CellOutcome]) -> float:
        b = torch.zeros(n, dtype=torch.bool)
        for c in cs:
            b |= c.broken
        return float((er.correct & ~b).float().mean())

    gap = robust(ce_f) - robust(mg_f)
    # a randomized model's verdicts are votes: tolerate the noise between two runs
    if gap <= (RANDOM_SILENT_SHARE if randomized else LOSS_GAP):
        return []
    return [
        finding(
            "RA009",
            f"at {key}: cross-entropy attacks leave {robust(ce_f):.1%} robust, "
            f"margin/DLR attacks {robust(mg_f):.1%}",
        )
    ]
