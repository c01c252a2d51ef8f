"""The terminal summary (rich): verdict, clean vs robust table, where the report went."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from robaudit.baseline import points_text
from robaudit.report.html import has_undecided
from robaudit.report.notices import (
    evaluation_lines,
    grade_text,
    inferred_lines,
    protocol_line,
    untrusted_line,
)


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


def print_summary(doc: dict[str, Any], console: Console, written: dict[str, Path]) -> None:
    """Print what a person needs to see at the end of a scan."""
    m, d = doc["model"], doc["data"]
    console.print(
        f"[bold]robaudit[/] {doc['robaudit_version']} · model {escape(str(m['path']))} "
        f"({m['format']}) · {d['samples']} samples of {escape(str(d['source']))}:"
        f"{escape(str(d['split']))} · device {doc['meta']['device']}",
        highlight=False,
    )
    proto = protocol_line(doc)
    if proto:
        smoke = not ((doc.get("meta") or {}).get("protocol") or {}).get("security_claims", True)
        console.print(Text(proto, style="yellow" if smoke else "dim"))
    for line in inferred_lines(doc):
        console.print(Text(f"inferred: {line}", style="dim"))
    table = Table(title="Clean vs robust accuracy (worst case over attacks)", title_justify="left")
    # a randomized model's open verdicts: robust accuracy as an interval, and their count
    open_cols = ("interval", "undecided") if has_undecided(doc) else ()
    for col in ("threat", "robust acc.", "95% CI", *open_cols, "success rate", "attacks"):
        table.add_column(col, justify="right" if col != "attacks" and col != "threat" else "left")
    lo, hi = doc["clean_ci"]
    blank = ("",) * len(open_cols)
    table.add_row("clean", _pct(doc["clean_accuracy"]), f"{_pct(lo)}–{_pct(hi)}", *blank, "", "")
    clean = doc["clean_accuracy"] or 1.0
    for t in doc["threats"]:
        ratio = t["robust_accuracy"] / clean if clean else 0.0
        style = "green" if ratio >= 0.8 else "yellow" if ratio >= 0.5 else "red"
        upper = t.get("robust_accuracy_upper", t["robust_accuracy"])
        extra = (f"{_pct(t['robust_accuracy'])}–{_pct(upper)}", str(t.get("undecided") or 0))
        table.add_row(
            f"{t['access']} {t['norm']} ε={t['eps_label']}",
            Text(_pct(t["robust_accuracy"]), style=style),
            f"{_pct(t['ci'][0])}–{_pct(t['ci'][1])}",
            *extra[: len(open_cols)],
            _pct(t["success_rate"]),
            ", ".join(t["attacks"]),
        )
    console.print(table)
    if open_cols:
        console.print(
            Text(
                "randomized model: robust accuracy counts undecided samples (verdicts the "
                "sequential test left open) as broken; the interval's upper end counts none",
                style="dim",
            )
        )
    for f in doc["findings"]:
        colour = {"error": "red", "warning": "yellow"}.get(f["severity"], "cyan")
        console.print(
            f"[{colour}]{f['id']} {f['severity']}[/]: {escape(f['title'])} — {escape(f['detail'])}"
            + (f" [green](resolved: {escape(f.get('reaction', ''))})[/]" if f.get("resolved") else ""),
            highlight=False,
        )
    distrust = untrusted_line(doc)
    if distrust:
        console.print(Text(distrust, style="bold red"))
    gate = doc["gate"]
    verdict = "[bold green]PASS[/]" if gate["passed"] else "[bold red]FAIL[/]"
    console.print(f"Score {doc['score']:.1f} / 100, {grade_text(doc)} · gate {verdict}")
    for line in evaluation_lines(doc):
        console.print(Text(line, style="yellow"))
    for fail in gate["failures"]:
        console.print(
            f"  [red]✗[/] {escape(fail['criterion'])}: {escape(fail['detail'])}", highlight=False
        )
    base = (doc.get("meta") or {}).get("baseline")
    if isinstance(base, dict):
        print_baseline_line(base, console)
    for fmt, path in written.items():
        console.print(f"  {fmt:5s} → {escape(str(path))}", highlight=False)


def print_baseline_line(base: dict[str, Any], console: Console) -> None:
    """One line on the baseline check: what was compared, the worst change, how it was judged."""
    robust = base.get("robust") or []
    how = "paired, McNemar" if base.get("paired") else "unpaired, Newcombe"
    if not robust:
        console.print(f"  baseline {escape(str(base.get('path')))}: no threat in common", highlight=False)
        return
    worst = min(robust, key=lambda c: c["delta"])
    where = f"{worst['variant']} {worst['access']} {worst['norm']} ε={worst['eps_label']}"
    noise = "larger than noise" if worst.get("significant") else "within noise"
    colour = "red" if worst.get("exceeds") else "green"
    console.print(
        f"  baseline {escape(str(base.get('path')))}: {len(robust)} threat(s) compared ({how}); "
        f"largest change [{colour}]{100 * worst['delta']:+.1f} points[/] at {escape(where)} "
        f"({noise}); allowed drop {points_text(float(base.get('max_drop_points') or 0))}",
        highlight=False,
    )
