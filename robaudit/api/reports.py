"""What :func:`robaudit.scan` returns: the :class:`Report` (numbers, threat look-up, saving the
files the CLI writes) and the :class:`RobustAccuracy` float that explains a failed assert.

The public classes keep ``robaudit.api`` as their module: that is where users import them
from, where pickles find them, and what the pytest plugin recognises.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Mapping, Sequence
from operator import attrgetter
from pathlib import Path
from typing import Any

import pandas as pd

from robaudit.config import FORMATS
from robaudit.errors import EXIT_BAD_INPUT, RobauditError, UserInputError
from robaudit.export import ADVERSARIAL_FILE, ADVERSARIAL_FOLDER, AdversarialExamples
from robaudit.results import Finding, GateResult, PartialRun, RunResult, ThreatRow
from robaudit.threat import format_eps, parse_eps

EPS_TOLERANCE = 1e-9
REPORT_FORMATS: tuple[str, ...] = FORMATS  # report.json .html results.csv summary.md junit.xml


class UnknownThreatError(RobauditError, KeyError):
    """A threat the report does not hold; the message lists the ones it does."""

    __module__ = "robaudit.api"  # where users import it from (see the module docstring)

    exit_code = EXIT_BAD_INPUT

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class RobustAccuracy(float):
    """A robust accuracy that remembers its threat, counts and the HTML report, so a failed
    ``assert report.robust_accuracy("linf", 0.1) >= 0.8`` can say what it was about."""

    __module__ = "robaudit.api"  # where users import it from (see the module docstring)

    threat: str
    robust: int
    n: int
    ci: tuple[float, float]
    report_html: str | None

    def __new__(
        cls,
        value: float = 0.0,
        threat: str = "",
        robust: int = 0,
        n: int = 0,
        ci: tuple[float, float] = (0.0, 1.0),
        report_html: str | None = None,
    ) -> RobustAccuracy:
        self = super().__new__(cls, value)
        self.threat, self.robust, self.n, self.ci, self.report_html = (
            threat, robust, n, (float(ci[0]), float(ci[1])), report_html,
        )
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (float(self), self.threat, self.robust, self.n, self.ci, self.report_html))

    def __repr__(self) -> str:
        return f"RobustAccuracy({float(self)!r}, threat={self.threat!r})"

    def describe(self) -> str:
        """One line: threat, value, counts and confidence interval."""
        lo, hi = self.ci
        parts = self.threat.split("/", 2)
        where = f"{parts[0]} {parts[1]} eps={parts[2]}" if len(parts) == 3 else self.threat
        return (
            f"robust accuracy at {where} is {float(self):.1%} "
            f"({self.robust}/{self.n} samples, 95% CI {lo:.1%}–{hi:.1%})"
        )

    def explain(self, op: str, limit: float) -> list[str]:
        """Lines for a failed comparison ``self <op> limit`` (the pytest plugin shows them)."""
        gap = abs(float(self) - float(limit))
        where = "below" if float(self) < float(limit) else "above" if float(self) > float(limit) else "at"
        lines = [f"{self.describe()}; required {op} {float(limit):.1%}, it is {where} by {gap:.1%}"]
        lines.append(f"HTML report: {self.report_html}" if self.report_html else "HTML report: not saved (call report.save(out))")
        return lines


def _from_result(path: str, doc: str | None = None) -> Any:
    """A read-only :class:`Report` attribute that is its RunResult's field ``path``."""
    get = attrgetter(path)

    def read(self: Report) -> Any:
        return get(self._result)

    read.__doc__ = doc
    return property(read)


class Report:
    """One audit's outcome: the run's results plus its JSON document, and ways to save them.

    Read-only by design: the numbers come from the run; ``save`` only writes files.
    """

    __module__ = "robaudit.api"  # where users import it from (see the module docstring)

    def __init__(
        self,
        result: RunResult,
        *,
        adversarial: AdversarialExamples | None = None,
        files: Mapping[str, str] | None = None,
    ) -> None:
        self._result = result
        self._adversarial = adversarial
        self._files = dict(files or {})
        self._doc: dict[str, Any] | None = None
        self._paths: dict[str, Path] = {}

    # -- the numbers ------------------------------------------------------------------
    @property
    def result(self) -> RunResult:
        """The underlying frozen :class:`robaudit.results.RunResult`."""
        return self._result

    incomplete: PartialRun | None = _from_result(
        "incomplete", "None for a finished run; else why it stopped and which cells did not run."
    )
    clean_accuracy: float = _from_result("clean_accuracy")
    passed: bool = _from_result(
        "gate.passed", "Whether the config's gate passed (what decides the CLI's exit code)."
    )
    gate: GateResult = _from_result("gate")
    findings: tuple[Finding, ...] = _from_result("findings")
    score: float = _from_result("score")
    grade: str | None = _from_result("grade")
    threats: tuple[ThreatRow, ...] = _from_result(
        "threats", "Worst case over attacks per threat, sorted by access, norm and eps."
    )
    n: int = _from_result("n", "Number of evaluated samples.")

    @property
    def adversarial(self) -> AdversarialExamples | None:
        """Exported examples when the scan ran with ``save_adversarial=True``."""
        return self._adversarial

    @property
    def files(self) -> dict[str, str]:
        """Text files :meth:`save` writes beside the report (name -> text): a table's inferred
        feature schema, ``schema.inferred.yaml``."""
        return dict(self._files)

    @property
    def paths(self) -> dict[str, Path]:
        """Files written by the last :meth:`save` (format -> path)."""
        return dict(self._paths)

    @property
    def html_path(self) -> Path | None:
        return self._paths.get("html")

    def threat(self, norm: str, eps: float | str, access: str = "white-box") -> ThreatRow:
        """The row for one threat; eps matches within 1e-9 and may be a string like ``"8/255"``,
        or an L0 share as the config wrote it (``"5%"``, matched by its label)."""
        share = eps.strip() if isinstance(eps, str) and eps.strip().endswith("%") else None
        try:
            e = parse_eps(eps) if share is None else math.nan
        except ValueError as exc:
            raise UnknownThreatError(str(exc)) from None
        for t in self._result.threats:
            same = t.eps_label == share if share else abs(t.eps - e) <= EPS_TOLERANCE
            if t.norm == norm and t.access == access and same:
                return t
        have = ", ".join(f"({t.norm!r}, {t.eps_label!r}, {t.access!r})" for t in self._result.threats)
        raise UnknownThreatError(
            f"no threat ({norm!r}, {share or format_eps(e)!r}, {access!r}) in this report; "
            f"available (norm, eps, access): {have or 'none'}"
        )

    def robust_accuracy(
        self, norm: str, eps: float | str, access: str = "white-box"
    ) -> RobustAccuracy:
        """Worst-case robust accuracy at a threat (a float that knows its threat and report)."""
        t = self.threat(norm, eps, access)
        html = self.html_path
        return RobustAccuracy(
            t.robust_accuracy, t.key, t.robust, t.n, (t.ci_low, t.ci_high),
            str(html) if html else None,
        )

    def assert_robust(
        self, norm: str, eps: float | str, at_least: float, access: str = "white-box"
    ) -> None:
        """Raise AssertionError, naming threat, value, limit and HTML report, if below ``at_least``."""
        value = self.robust_accuracy(norm, eps, access)
        if not float(value) >= at_least:
            raise AssertionError("\n".join(value.explain(">=", at_least)))

    def to_frame(self) -> pd.DataFrame:
        """The long results table: one row per (variant, attack, threat)."""
        return self._result.table()

    def threat_frame(self) -> pd.DataFrame:
        """One row per threat: the headline numbers."""
        return self._result.threat_table()

    def to_dict(self) -> dict[str, Any]:
        """The report document (what report.json holds), as a fresh copy."""
        return copy.deepcopy(self._document())

    def _document(self) -> dict[str, Any]:
        if self._doc is None:
            from robaudit.report.document import to_document

            self._doc = to_document(self._result)
        return self._doc

    # -- files ------------------------------------------------------------------------
    def save(self, out: str | os.PathLike[str], formats: Sequence[str] | None = None) -> dict[str, Path]:
        """Write the files the CLI writes into ``out``; returns format -> path.

        ``formats`` defaults to the config's ``report.formats``. Exported adversarial
        examples add ``adversarial`` (the .npz) and ``adversarial_images`` (PNG folder).
        """
        from robaudit.report.writers import prepare_out_dir, write_reports

        if isinstance(formats, str):
            formats = [formats]
        chosen = list(formats) if formats is not None else list(self._result.config["report"]["formats"])
        bad = [f for f in chosen if f not in REPORT_FORMATS]
        if bad:
            raise UserInputError(f"unknown report format(s) {bad}; valid: {', '.join(REPORT_FORMATS)}")
        folder = prepare_out_dir(Path(out))
        written = write_reports(self._document(), folder, chosen)
        if self._adversarial is not None:
            written["adversarial"] = self._adversarial.save(folder / ADVERSARIAL_FILE)
            bounds = (float(self._result.model.bounds[0]), float(self._result.model.bounds[1]))
            images = self._adversarial.save_images(folder / ADVERSARIAL_FOLDER, bounds)
            if images is not None:
                written["adversarial_images"] = images
        for name, text in self._files.items():
            (folder / name).write_text(text, encoding="utf-8")
            written[name] = folder / name
        self._paths = dict(written)
        return dict(written)

    def __repr__(self) -> str:
        r = self._result
        heads = ", ".join(f"{t.norm} {t.eps_label}: {t.robust_accuracy:.1%}" for t in r.threats[:4])
        more = f", +{len(r.threats) - 4} more" if len(r.threats) > 4 else ""
        gate = "PASS" if r.gate.passed else "FAIL"
        return (
            f"<robaudit Report {r.model.path}: clean {r.clean_accuracy:.1%} on {r.n}, "
            f"robust [{heads}{more}], score {r.score:.1f} ({r.grade}), gate {gate}>"
        )

