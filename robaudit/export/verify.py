"""``robaudit verify``: re-check exported adversarial examples without trusting the run.

Each row is checked with this module's own float64 arithmetic and a fresh forward pass:
inside the threat's ball around the clean input (taken from the data set when it is given),
inside the bounds, clean input classified correctly, adversarial input misclassified.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from robaudit.classifier import Classifier
from robaudit.errors import UserInputError
from robaudit.export.examples import AdversarialExamples, perturbation_norm
from robaudit.loading.data import DataSet
from robaudit.norms import get as get_norm
from robaudit.verification import TOLERANCE


@dataclass(frozen=True)
class Violation:
    """One row that does not hold up, and which check it failed."""

    row: int
    attack: str
    threat: str
    check: str  # ball | bounds | nonfinite | not_misclassified | misclassified_unbroken |
    #             clean_misclassified | label | x_clean | source_index
    detail: str


@dataclass(frozen=True)
class CellCheck:
    """Rows of one (attack, threat): claimed breaks, breaks that held, unbroken candidates."""

    attack: str
    threat: str
    claimed: int
    verified: int
    unbroken: int


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of re-checking a file; ``ok`` is True when no row failed any check."""

    path: str
    rows: int
    claimed: int
    verified: int
    unbroken: int
    violations: tuple[Violation, ...]
    cells: tuple[CellCheck, ...]
    notes: tuple[str, ...] = ()
    data_checked: bool = True

    @property
    def ok(self) -> bool:
        return not self.violations

    def by_check(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for v in self.violations:
            out[v.check] = out.get(v.check, 0) + 1
        return out

    def summary_lines(self, max_violations: int = 20) -> list[str]:
        """The human summary ``robaudit verify`` prints: counts, per-cell table, violations."""
        where = "checked against the data" if self.data_checked else "taken from the file"
        lines = [
            f"{self.path or 'examples'}: {self.rows} row(s): {self.claimed} claimed break(s), "
            f"{self.verified} verified, {self.unbroken} unbroken candidate(s) "
            f"(clean inputs {where})"
        ]
        if self.cells:
            wa = max(6, *(len(c.attack) for c in self.cells))
            wt = max(6, *(len(c.threat) for c in self.cells))
            lines.append(f"  {'attack':<{wa}}  {'threat':<{wt}}  claimed  verified  unbroken")
            lines.extend(
                f"  {c.attack:<{wa}}  {c.threat:<{wt}}  {c.claimed:>7}  {c.verified:>8}  {c.unbroken:>8}"
                for c in self.cells
            )
        lines.extend(f"note: {n}" for n in self.notes)
        if self.violations:
            kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.by_check().items()))
            rows = len({v.row for v in self.violations})
            lines.append(f"violations: {len(self.violations)} in {rows} row(s) ({kinds})")
            lines.extend(
                f"  row {v.row} {v.attack} {v.threat} [{v.check}]: {v.detail}"
                for v in self.violations[:max_violations]
            )
            if len(self.violations) > max_violations:
                lines.append(f"  ... and {len(self.violations) - max_violations} more")
            lines.append(f"FAILED: {len(self.violations)} violation(s) in {rows} row(s)")
        else:
            lines.append("VERIFIED: every exported example holds")
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "ok": self.ok,
            "rows": self.rows,
            "claimed": self.claimed,
            "verified": self.verified,
            "unbroken": self.unbroken,
            "data_checked": self.data_checked,
            "violations_by_check": self.by_check(),
            "violations": [v.__dict__ for v in self.violations],
            "cells": [c.__dict__ for c in self.cells],
            "notes": list(self.notes),
        }



Problems = list[list[tuple[str, str]]]  # per row: (check, detail) of every check it failed


def verify_examples(
    ex: AdversarialExamples,
    clf: Classifier,
    data: DataSet | None,
    *,
    path: str = "",
    model_sha256: str | None = None,
    tolerance: float = TOLERANCE,
) -> VerifyResult:
    """Re-check every row with a fresh forward pass of ``clf`` and float64 arithmetic.

    With ``data`` (the source reloaded), the clean input and label come from the data set
    at ``source_index`` and the file's ``x_clean``/``y`` must match them; without it they
    come from the file (noted in the result). A randomized classifier (``clf.votes > 1`` or
    ``clf.sequential``) is judged by the sequential test of :mod:`robaudit.verdicts`, two
    verdicts per row (clean and adversarial); a verdict it leaves open does not hold.
    """
    n = len(ex)
    _check_shape(ex, data, path)
    notes: list[str] = []
    stored_sha = (ex.meta.get("model") or {}).get("sha256")
    if model_sha256 and stored_sha and stored_sha != model_sha256:
        notes.append(
            f"the model's sha256 {model_sha256[:12]}… differs from the scanned one "
            f"{str(stored_sha)[:12]}… (checking transfer to another model)"
        )
    x_adv = torch.from_numpy(np.ascontiguousarray(ex.x_adv, dtype=np.float32))
    bad: Problems = [[] for _ in range(n)]
    # 1. the clean reference: from the data set when given, else from the file
    ref_x, ref_y = _reference(ex, data, bad, tolerance, notes)
    # 2. budget and bounds, in float64, without the engine's projection code
    finite = _check_budget(ex, x_adv, ref_x, bad, tolerance)
    _check_bounds(x_adv, clf.bounds, bad, tolerance)
    # 3. fresh forward passes: clean must be right, adversarial wrong (or right if unbroken)
    safe_adv = torch.where(finite.view(-1, *([1] * (x_adv.dim() - 1))), x_adv, ref_x)
    verdicts = _verdicts(clf, ref_x, ref_y, safe_adv)
    _check_verdicts(ex, ref_y, verdicts, bad)
    recorded_diff = (
        int((verdicts.adv_pred != torch.from_numpy(ex.y_adv_pred.astype(np.int64))).sum()) if n else 0
    )
    if recorded_diff:
        notes.append(f"{recorded_diff} row(s) predicted a different class than the scan recorded")
    return _result(ex, bad, path=path, notes=notes, data_checked=data is not None)


def _check_shape(ex: AdversarialExamples, data: DataSet | None, path: str) -> None:
    want_shape = tuple(data.samples.shape[1:]) if data is not None else None
    if want_shape is not None and tuple(ex.x_adv.shape[1:]) != want_shape:
        raise UserInputError(
            f"adversarial file '{path}': inputs have shape {list(ex.x_adv.shape[1:])} but the "
            f"data (and model.input_shape) have {list(want_shape)}"
        )


def _reference(
    ex: AdversarialExamples, data: DataSet | None, bad: Problems, tolerance: float, notes: list[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The clean inputs and labels to judge against; the file's must match the data's."""
    n = len(ex)
    x_file = torch.from_numpy(np.ascontiguousarray(ex.x_clean, dtype=np.float32))
    y_file = torch.from_numpy(np.ascontiguousarray(ex.y, dtype=np.int64))
    if data is None:
        notes.append("clean inputs and labels taken from the file itself (no data to check them against)")
        return x_file, y_file
    pos_of = {src: pos for pos, src in enumerate(data.indices)}
    ref_x = x_file.clone()
    ref_y = y_file.clone()
    for k in range(n):
        src = int(ex.source_index[k])
        pos = pos_of.get(src)
        if pos is None:
            bad[k].append(("source_index", f"source_index {src} is not among the reloaded samples"))
            continue
        if int(ex.x_clean_index[k]) != pos:
            bad[k].append(
                ("source_index", f"x_clean_index {int(ex.x_clean_index[k])} but source_index {src} is sample {pos}")
            )
        ref_x[k] = data.samples[pos]
        ref_y[k] = data.y[pos]
    dx = (x_file.double() - ref_x.double()).flatten(1).abs().amax(dim=1) if n else torch.zeros(0)
    for k in (dx > tolerance).nonzero().flatten().tolist():
        bad[k].append(("x_clean", f"x_clean differs from the data by up to {float(dx[k]):.3g}"))
    for k in (y_file != ref_y).nonzero().flatten().tolist():
        bad[k].append(("label", f"label {int(y_file[k])} but the data says {int(ref_y[k])}"))
    return ref_x, ref_y


def _check_budget(
    ex: AdversarialExamples, x_adv: torch.Tensor, ref_x: torch.Tensor, bad: Problems, tolerance: float
) -> torch.Tensor:
    """Finite values, and each row inside its threat's ball; returns the rows' finiteness."""
    n = len(ex)
    finite = torch.isfinite(x_adv.flatten(1)).all(dim=1) if n else torch.zeros(0, dtype=torch.bool)
    for k in (~finite).nonzero().flatten().tolist():
        bad[k].append(("nonfinite", "x_adv holds NaN or inf"))
    for norm in sorted(set(ex.norm.tolist())):
        rows = torch.tensor([str(v) == norm for v in ex.norm.tolist()], dtype=torch.bool)
        try:
            dist = perturbation_norm(x_adv[rows] - ref_x[rows], norm, ref_x[rows])
        except ValueError:
            for k in rows.nonzero().flatten().tolist():
                bad[k].append(("ball", f"norm {norm!r} is not one verify can measure"))
            continue
        eps = torch.from_numpy(np.asarray(ex.eps, dtype=np.float64))[rows]
        fits = get_norm(norm).fits(dist, eps, tolerance)  # per row
        for j, k in enumerate(rows.nonzero().flatten().tolist()):
            if not bool(fits[j]):
                size, budget = f"{float(dist[j]):.6g}", f"{float(eps[j]):.6g}"
                bad[k].append(("ball", f"{norm} size {size} is outside the budget {budget}"))
    return finite


def _check_bounds(
    x_adv: torch.Tensor, bounds: tuple[float, float], bad: Problems, tolerance: float
) -> None:
    lo, hi = bounds
    flat = x_adv.double().flatten(1)
    if not (x_adv.shape[0] and flat.shape[1]):
        return
    below = flat.amin(dim=1) < lo - tolerance
    above = flat.amax(dim=1) > hi + tolerance
    for k in (below | above).nonzero().flatten().tolist():
        bad[k].append(
            ("bounds", f"values span [{float(flat[k].min()):.6g}, {float(flat[k].max()):.6g}] outside [{lo:g}, {hi:g}]")
        )


@dataclass(frozen=True)
class _Verdicts:
    """Per row, what the fresh forward passes said about the clean and adversarial input."""

    clean_pred: torch.Tensor
    adv_pred: torch.Tensor
    clean_ok: torch.Tensor
    clean_wrong: torch.Tensor  # decided wrong (a randomized model may leave a verdict open)
    adv_wrong: torch.Tensor
    adv_right: torch.Tensor
    clean_draws: torch.Tensor
    adv_draws: torch.Tensor


def _verdicts(
    clf: Classifier, ref_x: torch.Tensor, ref_y: torch.Tensor, safe_adv: torch.Tensor
) -> _Verdicts:
    n = int(ref_y.shape[0])
    test = clf.verdict_test()
    if n and test is not None:  # randomized: sequential verdicts, α split over both per row
        alpha = test.alpha_for(2)
        vc = clf.verdict(ref_x, ref_y, alpha).cpu()
        va = clf.verdict(safe_adv, ref_y, alpha).cpu()
        return _Verdicts(vc.pred, va.pred, vc.right, vc.wrong, va.wrong, va.right, vc.draws, va.draws)
    if n:
        clean_pred = clf.verification_logits(ref_x).argmax(dim=1).cpu()
        adv_pred = clf.verification_logits(safe_adv).argmax(dim=1).cpu()
        clean_ok, adv_wrong = clean_pred == ref_y, adv_pred != ref_y
        ones = torch.ones(n, dtype=torch.long)
        return _Verdicts(clean_pred, adv_pred, clean_ok, ~clean_ok, adv_wrong, ~adv_wrong, ones, ones)
    none = torch.zeros(0, dtype=torch.long)
    no = torch.zeros(0, dtype=torch.bool)
    return _Verdicts(none, none, no, no, no, no, none, none)


def _check_verdicts(ex: AdversarialExamples, ref_y: torch.Tensor, v: _Verdicts, bad: Problems) -> None:
    for k in range(len(ex)):
        y = int(ref_y[k])
        if not bool(v.clean_ok[k]):
            bad[k].append(
                ("clean_misclassified", f"clean input predicted {int(v.clean_pred[k])}, label {y}")
                if bool(v.clean_wrong[k])
                else ("clean_misclassified", f"clean verdict undecided after {int(v.clean_draws[k])} draws")
            )
        if bool(ex.broken[k]) and not bool(v.adv_wrong[k]):
            bad[k].append(
                ("not_misclassified", f"x_adv is still classified as its label {y}")
                if bool(v.adv_right[k])
                else ("not_misclassified", f"x_adv verdict undecided after {int(v.adv_draws[k])} draws")
            )
        if not bool(ex.broken[k]) and bool(v.adv_wrong[k]):
            bad[k].append(
                ("misclassified_unbroken", f"marked unbroken but predicted {int(v.adv_pred[k])}, label {y}")
            )


def _result(
    ex: AdversarialExamples, bad: Problems, *, path: str, notes: list[str], data_checked: bool
) -> VerifyResult:
    """Every failed check as a violation, and the per-(attack, threat) tally."""
    n = len(ex)
    violations = tuple(
        Violation(k, str(ex.attack[k]), str(ex.threat[k]), check, detail)
        for k in range(n)
        for check, detail in bad[k]
    )
    cells: dict[tuple[str, str], list[int]] = {}
    for k in range(n):
        c = cells.setdefault((str(ex.attack[k]), str(ex.threat[k])), [0, 0, 0])
        if bool(ex.broken[k]):
            c[0] += 1
            c[1] += 0 if bad[k] else 1
        else:
            c[2] += 1
    cell_rows = tuple(CellCheck(a, t, c[0], c[1], c[2]) for (a, t), c in cells.items())
    return VerifyResult(
        path=path,
        rows=n,
        claimed=sum(c.claimed for c in cell_rows),
        verified=sum(c.verified for c in cell_rows),
        unbroken=sum(c.unbroken for c in cell_rows),
        violations=violations,
        cells=cell_rows,
        notes=tuple(notes),
        data_checked=data_checked,
    )
