"""Baselines: compare a run with an earlier one, threat by threat, and decide whether robust
accuracy dropped too far. ``robaudit diff`` and ``robaudit scan --baseline`` both call
:func:`compare`, so they always agree.

The rule: a threat fails when its robust accuracy dropped by more than ``max_drop``
percentage points (default 1.0). Whether the change is larger than the two runs' sampling
noise is reported alongside and never changes the verdict, because a CI gate must be
predictable: the same two reports always give the same answer.

Noise is judged the strongest way the two reports allow:

- **paired**, when both evaluated the same samples (same data source and split, the same set
  of ``samples[*].source_index`` with the same labels): McNemar's exact test on the samples
  that flipped (robust in one run, broken in the other) and Newcombe's hybrid score interval
  for a difference of paired proportions (Newcombe 1998, method 10);
- **unpaired** otherwise: Newcombe's hybrid score interval (Wilson intervals of each run) for
  the difference of two independent proportions (Newcombe 1998, method 10); the change is
  significant when the interval excludes 0.

A threat is (variant, access, norm, eps); threats present in only one report are listed, not
compared. Two reports with no threat in common fail: nothing was checked.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from robaudit.documents import load_document
from robaudit.errors import UserInputError
from robaudit.results import wilson_interval

DEFAULT_MAX_DROP = 1.0  # percentage points of robust accuracy
ALPHA = 0.05  # significance level of the noise verdict (95% intervals)
EPS_DIGITS = 12  # eps values equal to 12 significant digits are the same threat
TOLERANCE = 1e-9

ThreatId = tuple[str, str, str, float]


def points_text(v: float) -> str:
    """``1 point``, ``2.5 points``: a number of percentage points."""
    return f"{v:g} point" + ("" if v == 1 else "s")


def check_max_drop(value: Any, name: str = "--max-drop") -> float:
    """A drop limit in percentage points: a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise UserInputError(f"{name} {value!r}: give the allowed drop in percentage points, a number >= 0")
    return float(value)


# ----------------------------------------------------------------------------- statistics


def mcnemar_exact(lost: int, gained: int) -> float:
    """Two-sided exact McNemar p-value: a binomial test of the discordant pairs against 1/2."""
    m = lost + gained
    if m == 0:
        return 1.0
    tail = sum(math.comb(m, i) for i in range(min(lost, gained) + 1))
    return min(1.0, float(Fraction(2 * tail, 2**m)))


def newcombe_interval(
    x_new: int, n_new: int, x_base: int, n_base: int, phi: float = 0.0
) -> tuple[float, float]:
    """95% hybrid score interval for p_new - p_base from the two Wilson intervals; ``phi`` is the
    correlation of paired data (0 for independent samples)."""
    p1 = x_new / n_new if n_new else 0.0
    p2 = x_base / n_base if n_base else 0.0
    l1, u1 = wilson_interval(x_new, n_new)
    l2, u2 = wilson_interval(x_base, n_base)
    d = p1 - p2
    lo = d - math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    hi = d + math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return (max(-1.0, lo), min(1.0, hi))


def paired_phi(both: int, gained: int, lost: int, neither: int) -> float:
    """Newcombe's continuity-corrected phi of a paired 2x2 table (method 10)."""
    n = both + gained + lost + neither
    denom = (both + gained) * (lost + neither) * (both + lost) * (gained + neither)
    if denom == 0:
        return 0.0
    ad, bc = both * neither, gained * lost
    num = max(ad - bc - n / 2, 0.0) if ad > bc else float(ad - bc)
    return num / math.sqrt(denom)


# ----------------------------------------------------------------------------- the comparison


@dataclass(frozen=True)
class Change:
    """Clean or robust accuracy of one variant/threat in both runs, and what the change means."""

    measure: str  # "clean" or "robust"
    variant: str
    access: str | None
    norm: str | None
    eps: float | None
    eps_label: str | None
    key: str | None  # the threat key in the new report
    base: float
    new: float
    base_count: int
    base_n: int
    new_count: int
    new_n: int
    delta: float  # new - base, a difference of proportions
    delta_ci: tuple[float, float]
    method: str  # "mcnemar" (paired) or "newcombe" (unpaired)
    p_value: float | None  # McNemar's exact p (paired only)
    lost: int | None  # paired: right/robust in the baseline, not now
    gained: int | None  # paired: not in the baseline, right/robust now
    significant: bool  # the change is larger than the two runs' noise (5% level)
    exceeds: bool  # robust accuracy dropped by more than max_drop points (fails the check)

    @property
    def label(self) -> str:
        if self.measure == "clean":
            return f"{self.variant} clean"
        return f"{self.variant} {self.access} {self.norm} eps={self.eps_label}"

    @property
    def criterion(self) -> str:
        return f"baseline[{self.label}]"

    def noise_text(self) -> str:
        verdict = "larger than noise" if self.significant else "within noise"
        if self.method == "mcnemar":
            return (
                f"paired McNemar test: {self.lost} sample(s) lost, {self.gained} gained, "
                f"p={self.p_value:.3g}: {verdict}"
            )
        lo, hi = self.delta_ci
        return f"unpaired Newcombe 95% CI {100 * lo:+.1f} to {100 * hi:+.1f} points: {verdict}"

    def describe(self, max_drop: float) -> str:
        """One line: before, after, the allowed drop and the noise verdict."""
        what = "clean accuracy" if self.measure == "clean" else "robust accuracy"
        where = f"{self.variant}" if self.measure == "clean" else self.label
        pts = -100 * self.delta
        if pts > TOLERANCE:
            moved = f"dropped {pts:.1f} points"
        elif pts < -TOLERANCE:
            moved = f"rose {-pts:.1f} points"
        else:
            moved = "did not change"
        text = (
            f"{what} at {where} {moved}, from {self.base:.1%} in the baseline to {self.new:.1%}"
        )
        if self.exceeds:
            text += f"; allowed drop {points_text(max_drop)}, exceeded by {pts - max_drop:.1f}"
        return f"{text} ({self.noise_text()})"


@dataclass(frozen=True)
class Comparison:
    """Every change between a baseline report and a new one, and the verdict."""

    base_path: str
    new_path: str
    base_sha256: str
    new_sha256: str
    max_drop_points: float
    paired: bool
    pairing: str  # why the runs were (not) paired
    clean: tuple[Change, ...]
    robust: tuple[Change, ...]
    only_in_base: tuple[str, ...]
    only_in_new: tuple[str, ...]
    notes: tuple[str, ...] = field(default=())

    @property
    def failures(self) -> tuple[Change, ...]:
        return tuple(c for c in self.robust if c.exceeds)

    @property
    def passed(self) -> bool:
        """No robust accuracy dropped by more than max_drop, and at least one threat compared."""
        return bool(self.robust) and not self.failures

    def worst(self) -> Change | None:
        return min(self.robust, key=lambda c: c.delta, default=None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: report.json's ``meta.baseline`` and ``robaudit diff --format json``."""

        def row(c: Change) -> dict[str, Any]:
            d = asdict(c)
            d["delta_ci"] = list(c.delta_ci)
            return d

        return {
            "path": self.base_path,
            "new_path": self.new_path,
            "base_sha256": self.base_sha256,
            "new_sha256": self.new_sha256,
            "max_drop_points": self.max_drop_points,
            "passed": self.passed,
            "paired": self.paired,
            "pairing": self.pairing,
            "clean": [row(c) for c in self.clean],
            "robust": [row(c) for c in self.robust],
            "only_in_base": list(self.only_in_base),
            "only_in_new": list(self.only_in_new),
            "notes": list(self.notes),
            "rule": (
                "fail when robust accuracy at a threat dropped by more than "
                f"{points_text(self.max_drop_points)}; significance (McNemar exact test on flipped samples when "
                "paired, Newcombe interval otherwise) is reported, not gated"
            ),
        }


def _threat_id(t: Mapping[str, Any]) -> ThreatId:
    eps = float(t.get("eps") or 0.0)
    return (
        str(t.get("variant") or "model"), str(t.get("access")), str(t.get("norm")),
        float(f"{eps:.{EPS_DIGITS}g}"),
    )


def _threat_name(t: Mapping[str, Any]) -> str:
    return f"{t.get('variant') or 'model'} {t.get('access')} {t.get('norm')} eps={t.get('eps_label')}"


def _n(doc: Mapping[str, Any], row: Mapping[str, Any] | None = None) -> int:
    for v in ((row or {}).get("n"), (doc.get("data") or {}).get("samples"), len(doc.get("samples") or [])):
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    return 0


def _count(value: Any, fraction: float, n: int) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return round(fraction * n)


def _pairs(
    base: Mapping[str, Any], new: Mapping[str, Any]
) -> tuple[list[tuple[Mapping[str, Any], Mapping[str, Any]]] | None, str]:
    """The samples of both runs matched by source index, or None and why they cannot be."""
    bd, nd = base.get("data") or {}, new.get("data") or {}
    where = (bd.get("source"), bd.get("split"))
    if where != (nd.get("source"), nd.get("split")):
        return None, (
            f"different data: {bd.get('source')}:{bd.get('split')} vs {nd.get('source')}:{nd.get('split')}"
        )
    maps = []
    for doc in (base, new):
        m: dict[int, Mapping[str, Any]] = {}
        for s in doc.get("samples") or []:
            idx = s.get("source_index") if isinstance(s, Mapping) else None
            if not isinstance(idx, int) or idx in m:
                return None, "per-sample records lack unique source indices"
            m[idx] = s
        maps.append(m)
    bmap, nmap = maps
    if not bmap or set(bmap) != set(nmap):
        common = len(set(bmap) & set(nmap))
        return None, (
            f"different samples: {len(bmap)} vs {len(nmap)} evaluated, {common} in common "
            "(another seed, sample count or data)"
        )
    pairs = [(bmap[i], nmap[i]) for i in sorted(bmap)]
    if any(b.get("label") != n.get("label") for b, n in pairs):
        return None, "the same source indices carry different labels (different data)"
    seed = (base.get("meta") or {}).get("data_seed")
    return pairs, (
        f"the same {len(pairs)} samples of {where[0]}:{where[1]} (matched by source index"
        + (f", data seed {seed})" if seed is not None else ")")
    )


def _robust_flags(
    pairs: list[tuple[Mapping[str, Any], Mapping[str, Any]]], bkey: Any, nkey: Any
) -> list[tuple[bool, bool]] | None:
    """Per pair: (robust in the baseline, robust now); None if a record lacks the threat."""
    out = []
    for b, n in pairs:
        bt, nt = b.get("threats"), n.get("threats")
        if not isinstance(bt, Mapping) or not isinstance(nt, Mapping) or bkey not in bt or nkey not in nt:
            return None
        out.append((b.get("correct") is True and bt[bkey] is None, n.get("correct") is True and nt[nkey] is None))
    return out


def _change(
    measure: str,
    ident: Mapping[str, Any],
    base: tuple[float, int, int],
    new: tuple[float, int, int],
    flags: list[tuple[bool, bool]] | None,
    max_drop: float,
) -> Change:
    (b_acc, b_x, b_n), (n_acc, n_x, n_n) = base, new
    delta = n_acc - b_acc
    if flags is not None:
        both = sum(1 for b, n in flags if b and n)
        lost = sum(1 for b, n in flags if b and not n)
        gained = sum(1 for b, n in flags if n and not b)
        neither = len(flags) - both - lost - gained
        phi = paired_phi(both, gained, lost, neither)
        ci = newcombe_interval(n_x, n_n, b_x, b_n, phi)
        p: float | None = mcnemar_exact(lost, gained)
        assert p is not None
        significant = p < ALPHA
        method, lost_v, gained_v = "mcnemar", lost, gained
    else:
        ci = newcombe_interval(n_x, n_n, b_x, b_n)
        p, lost_v, gained_v = None, None, None
        significant = ci[1] < 0 or ci[0] > 0
        method = "newcombe"
    exceeds = measure == "robust" and -100 * delta > max_drop + TOLERANCE
    return Change(
        measure=measure, variant=str(ident.get("variant") or "model"),
        access=ident.get("access"), norm=ident.get("norm"),
        eps=ident.get("eps"), eps_label=ident.get("eps_label"), key=ident.get("key"),
        base=b_acc, new=n_acc, base_count=b_x, base_n=b_n, new_count=n_x, new_n=n_n,
        delta=delta, delta_ci=ci, method=method, p_value=p, lost=lost_v, gained=gained_v,
        significant=significant, exceeds=exceeds,
    )


def _clean_side(
    doc: Mapping[str, Any], variant: str, rows: list[Mapping[str, Any]]
) -> tuple[tuple[float, int, int], bool]:
    """(accuracy, correct, n) of a variant; True when it is the run-level clean accuracy (the
    one samples[*].correct records), False when the variant carries its own (a defense variant
    in ``doc["variants"]``, or threat rows with their own clean accuracy)."""
    for v in doc.get("variants") or []:
        own = isinstance(v, Mapping) and v.get("variant") == variant != "model"
        if own and isinstance(v.get("clean_accuracy"), (int, float)):
            n = _n(doc)
            acc = float(v["clean_accuracy"])
            return (acc, _count(v.get("clean_correct"), acc, n), n), False
    for r in rows:
        if isinstance(r.get("clean_accuracy"), (int, float)):
            n = _n(doc, r)
            acc = float(r["clean_accuracy"])
            return (acc, _count(r.get("clean_correct"), acc, n), n), False
    n = _n(doc)
    acc = float(doc.get("clean_accuracy") or 0.0)
    return (acc, _count(doc.get("clean_correct"), acc, n), n), True


def compare(
    base: Mapping[str, Any],
    new: Mapping[str, Any],
    max_drop: float = DEFAULT_MAX_DROP,
    *,
    base_path: str = "<baseline>",
    new_path: str = "<new>",
) -> Comparison:
    """Compare two report documents (report.json contents); see the module docstring."""
    max_drop = check_max_drop(max_drop, "max_drop")
    pairs, pairing = _pairs(base, new)
    notes: list[str] = []
    for name, doc in (("the baseline", base), ("the new report", new)):
        if doc.get("incomplete"):
            notes.append(f"{name} is from an incomplete run; its numbers may overstate robustness")
    bcfg, ncfg = (base.get("meta") or {}).get("config_sha256"), (new.get("meta") or {}).get("config_sha256")
    if bcfg and ncfg and bcfg != ncfg:
        notes.append("the two runs used different configs: attacks or budgets may differ")
    bth = {_threat_id(t): t for t in base.get("threats") or [] if isinstance(t, Mapping)}
    nth = {_threat_id(t): t for t in new.get("threats") or [] if isinstance(t, Mapping)}
    common = [k for k in nth if k in bth]

    clean: list[Change] = []
    variants = list(dict.fromkeys(k[0] for k in common)) or ["model"]
    for v in variants:
        brows = [t for k, t in bth.items() if k[0] == v]
        nrows = [t for k, t in nth.items() if k[0] == v]
        bside, b_run = _clean_side(base, v, brows)
        nside, n_run = _clean_side(new, v, nrows)
        flags = None
        if pairs is not None and b_run and n_run:
            flags = [(b.get("correct") is True, n.get("correct") is True) for b, n in pairs]
            if sum(b for b, _ in flags) != bside[1] or sum(n for _, n in flags) != nside[1]:
                flags = None
        clean.append(_change("clean", {"variant": v}, bside, nside, flags, max_drop))

    robust: list[Change] = []
    for k in common:
        bt, nt = bth[k], nth[k]
        bn, nn = _n(base, bt), _n(new, nt)
        b_acc, n_acc = float(bt["robust_accuracy"]), float(nt["robust_accuracy"])
        bside = (b_acc, _count(bt.get("robust"), b_acc, bn), bn)
        nside = (n_acc, _count(nt.get("robust"), n_acc, nn), nn)
        flags = _robust_flags(pairs, bt.get("key"), nt.get("key")) if pairs is not None else None
        if flags is not None and (
            sum(b for b, _ in flags) != bside[1] or sum(n for _, n in flags) != nside[1]
        ):
            notes.append(f"{_threat_name(nt)}: per-sample records disagree with the totals; compared unpaired")
            flags = None
        ident = {**nt, "variant": nt.get("variant") or "model"}
        robust.append(_change("robust", ident, bside, nside, flags, max_drop))

    return Comparison(
        base_path=base_path,
        new_path=new_path,
        base_sha256=str((base.get("model") or {}).get("sha256") or ""),
        new_sha256=str((new.get("model") or {}).get("sha256") or ""),
        max_drop_points=max_drop,
        paired=pairs is not None,
        pairing=pairing,
        clean=tuple(clean),
        robust=tuple(robust),
        only_in_base=tuple(_threat_name(t) for k, t in bth.items() if k not in nth),
        only_in_new=tuple(_threat_name(t) for k, t in nth.items() if k not in bth),
        notes=tuple(notes),
    )


def load_baseline(source: Any) -> tuple[dict[str, Any], str]:
    """A baseline given as a report.json path (or its folder) or an already loaded document."""

    if isinstance(source, Mapping):
        return dict(source), "<dict baseline>"
    if isinstance(source, (str, Path)) or hasattr(source, "__fspath__"):
        return load_document(Path(source)), str(source)
    raise UserInputError(
        f"baseline must be a report.json path or a loaded report dict, not {type(source).__name__}"
    )
