"""What ``robaudit scan`` prints (rich): the log header, the summary (verdict, clean vs robust
table, where the report went) and the notice of a run that stopped early."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

import robaudit
from robaudit.access import LEVELS as ACCESS_LEVELS
from robaudit.baseline import points_text
from robaudit.norms import find as find_norm
from robaudit.report.html import has_undecided
from robaudit.report.notices import (
    evaluation_lines,
    grade_text,
    inferred_lines,
    naive_lines,
    natural_line,
    positive_cells,
    positive_columns,
    positive_note,
    protocol_line,
    threat_text,
    universal_lines,
    unrun_text,
    untrusted_line,
)
from robaudit.results import VARIANT, PartialRun

if TYPE_CHECKING:
    from robaudit.report.log import LogProgress
    from robaudit.threads import ThreadChoice


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


def _not_run_rows(doc: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(variant, access, norm, eps label) of planned threats with no row: nothing finished there.

    An incomplete run's table lists them as "not run" instead of silently dropping them.
    """
    have = {(t.get("variant", VARIANT), t["key"]) for t in doc["threats"]}
    rows: list[tuple[str, str, str, str]] = []
    for u in (doc.get("partial") or {}).get("unrun") or []:
        parts = str(u["threat"]).split("/")  # [variant/]access/norm/label; "8/255" has a slash
        at = next(
            (i for i in range(len(parts) - 2) if parts[i] in ACCESS_LEVELS and find_norm(parts[i + 1]) is not None),
            None,
        )
        if at is None:  # a variant that did not start at all ("jpeg/*")
            continue
        variant = "/".join(parts[:at]) or VARIANT
        access, norm, eps = parts[at], parts[at + 1], "/".join(parts[at + 2 :])
        if (variant, f"{access}/{norm}/{eps}") in have or (variant, access, norm, eps) in rows:
            continue
        rows.append((variant, access, norm, eps))
    return rows


def threat_table(doc: dict[str, Any]) -> Table:
    """Clean and robust accuracy per threat; a variant column whenever defenses ran."""
    table = Table(title="Clean vs robust accuracy (worst case over attacks)", title_justify="left")
    missing = _not_run_rows(doc)
    variants = {t.get("variant", VARIANT) for t in doc["threats"]} | {m[0] for m in missing}
    show_variant = bool(doc.get("variants")) or variants - {VARIANT} != set()
    # a randomized model's open verdicts: robust accuracy as an interval, and their count
    open_cols = ("interval", "undecided") if has_undecided(doc) else ()
    lead = ("variant",) if show_variant else ()
    pos = positive_columns(doc)
    for col in (*lead, "threat", "robust acc.", "95% CI", *open_cols, *pos, "success rate",
                "attacks"):
        left = col in ("attacks", "threat", "variant")
        table.add_column(col, justify="left" if left else "right")
    lo, hi = doc["clean_ci"]
    blank = ("",) * len(open_cols)
    first = (VARIANT,) if show_variant else ()
    table.add_row(
        *first, "clean", _pct(doc["clean_accuracy"]), f"{_pct(lo)}–{_pct(hi)}", *blank,
        *positive_cells(doc, None), "", "",
    )
    clean = doc["clean_accuracy"] or 1.0
    for t in doc["threats"]:
        ratio = t["robust_accuracy"] / clean if clean else 0.0
        style = "green" if ratio >= 0.8 else "yellow" if ratio >= 0.5 else "red"
        upper = t.get("robust_accuracy_upper", t["robust_accuracy"])
        extra = (f"{_pct(t['robust_accuracy'])}–{_pct(upper)}", str(t.get("undecided") or 0))
        table.add_row(
            *((t.get("variant", VARIANT),) if show_variant else ()),
            threat_text(t),
            Text(_pct(t["robust_accuracy"]), style=style),
            f"{_pct(t['ci'][0])}–{_pct(t['ci'][1])}",
            *extra[: len(open_cols)],
            *positive_cells(doc, t["key"]),
            _pct(t["success_rate"]),
            ", ".join(t["attacks"]),
        )
    for variant, access, norm, eps in missing:
        table.add_row(
            *((variant,) if show_variant else ()),
            threat_text({"access": access, "norm": norm, "eps_label": eps}),
            Text("not run", style="yellow"),
            "", *blank, *("",) * len(pos), "", "",
        )
    return table


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
    console.print(threat_table(doc))
    note = positive_note(doc)
    if note:
        console.print(Text(note, style="dim"))
    for line in naive_lines(doc):
        console.print(Text(line, style="dim"))
    natural = natural_line(doc)
    if natural:
        console.print(natural, highlight=False)
    for line in universal_lines(doc):
        console.print(line, highlight=False)
    if has_undecided(doc):
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
    where = f"{worst['variant']} {threat_text(worst)}"
    noise = "larger than noise" if worst.get("significant") else "within noise"
    colour = "red" if worst.get("exceeds") else "green"
    console.print(
        f"  baseline {escape(str(base.get('path')))}: {len(robust)} threat(s) compared ({how}); "
        f"largest change [{colour}]{100 * worst['delta']:+.1f} points[/] at {escape(where)} "
        f"({noise}); allowed drop {points_text(float(base.get('max_drop_points') or 0))}",
        highlight=False,
    )


def log_scan_start(
    log: LogProgress, model: Path, config: Path, out: Path, threads: ThreadChoice
) -> None:
    """A CI log's header: what is scanned with which config into where, on how many threads."""
    log.header(
        "scan_start",
        f"robaudit {robaudit.__version__} · scan {model} · config {config} · "
        f"out {out} · threads {threads.count} ({threads.source})",
        model=str(model), config=str(config), out=str(out), threads=threads.count,
    )


def print_incomplete(inc: PartialRun, out: Path, console: Console) -> None:
    """Why a run stopped early, what did not run, and how to finish it."""
    console.print(
        Text.assemble(
            ("robaudit: incomplete: ", "yellow"),
            f"{inc.reason}; {unrun_text(inc.to_dict())}; partial report in {out} (scan again "
            "with --resume to finish)",
        )
    )
