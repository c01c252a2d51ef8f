"""What the commands other than ``scan`` print: diff, attacks, selftest and harden tables,
validate's and explain's lines, the files a command wrote.

The CLI parses flags and calls the library; what the user reads is drawn here (the scan's own
summary is robaudit.report.console, progress bars robaudit.report.terminal_bars), so the CLI
holds no rendering.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from robaudit.baseline import Comparison, points_text
from robaudit.config import Config, fitted
from robaudit.findings import FindingDoc
from robaudit.profiles import PROFILES, summary


def print_comparison(c: Comparison) -> None:
    """The diff as a terminal table: drops above the limit red, other drops yellow, gains green."""
    console = Console(highlight=False, soft_wrap=True)
    table = Table(
        title=f"robaudit diff: {c.base_path} → {c.new_path}", title_justify="left",
    )
    for col in ("threat", "baseline", "new", "change (points)", "95% CI (points)", "noise"):
        table.add_column(col, justify="left" if col in ("threat", "noise") else "right")
    for ch in (*c.clean, *c.robust):
        lo, hi = ch.delta_ci
        pts = 100 * ch.delta
        style = "red" if ch.exceeds else "yellow" if pts < -1e-9 else "green" if pts > 1e-9 else ""
        noise = "larger than noise" if ch.significant else "within noise"
        if ch.p_value is not None:
            noise += f", McNemar p={ch.p_value:.3g}, lost {ch.lost}, gained {ch.gained}"
        table.add_row(
            Text(ch.label), f"{ch.base:.1%}", f"{ch.new:.1%}", Text(f"{pts:+.1f}", style=style),
            f"{100 * lo:+.1f} to {100 * hi:+.1f}", noise,
        )
    console.print(table)
    how = "paired" if c.paired else "not paired"
    console.print(Text(f"Samples: {how}: {c.pairing}"))
    for side, names in (("baseline", c.only_in_base), ("new report", c.only_in_new)):
        if names:
            console.print(Text(f"Only in the {side} (not compared): {', '.join(names)}"))
    for note in c.notes:
        console.print(Text(f"Note: {note}"))
    limit = points_text(c.max_drop_points)
    if not c.robust:
        console.print(Text("FAIL: no threat in common; nothing was compared", style="bold red"))
    elif c.failures:
        console.print(Text(f"FAIL: robust accuracy dropped by more than {limit}:", style="bold red"))
        for ch in c.failures:
            console.print(Text(f"  ✗ {ch.describe(c.max_drop_points)}"))
    else:
        console.print(
            Text(f"PASS: no robust accuracy dropped by more than {limit}", style="bold green")
        )


def catalogue_tables(
    rows: list[dict[str, Any]], defenses: list[dict[str, Any]]
) -> tuple[Table, Table]:
    """``robaudit attacks``: the registered attacks and the defenses, with their parameters."""
    table = Table(title="Registered attacks", show_lines=True)
    table.add_column("attack", style="bold")
    table.add_column("norms")
    table.add_column("needs")
    table.add_column("parameters (default)")
    table.add_column("what / paper")
    for r in rows:
        params = "\n".join(f"{p['name']}: {p['type']} = {p['default']}" for p in r["params"]) or "—"
        table.add_row(
            r["name"], ", ".join(r["norms"]), r["requires"], params, f"{r['summary']}\n{r['paper']}"
        )
    dtable = Table(title="Defenses (config `defenses:`, audited as variants)", show_lines=True)
    for col in ("defense", "adaptive gradients", "parameters (default)", "what / paper"):
        dtable.add_column(col, style="bold" if col == "defense" else None)
    for d in defenses:
        params = "\n".join(f"{p['name']}: {p['type']} = {p['default']}" for p in d["params"]) or "—"
        dtable.add_row(
            str(d["name"]), str(d["gradients"]), params, f"{d['summary']}\n{d['paper']}"
        )
    return table, dtable


def selftest_table(results: list[Any]) -> Table:
    """``robaudit selftest``: each case's expected and measured robust accuracy and findings."""
    table = Table(title="robaudit selftest: expected vs measured")
    for col in ("case", "threat", "expected robust acc.", "measured", "expected findings", "fired", "ok"):
        table.add_column(col)
    for r in results:
        table.add_row(
            r.name, r.threat, f"{r.expected[0]:.3f}–{r.expected[1]:.3f}", f"{r.measured:.3f}",
            ", ".join(r.expected_findings) or "none", ", ".join(r.fired) or "none",
            Text("OK", style="green") if r.ok else Text("; ".join(r.problems), style="red"),
        )
    return table


def print_harden_summary(result: Any, console: Console) -> None:
    """Original vs hardened per threat, the selected epoch, notes and the files written."""
    doc = result.comparison
    tr = result.training
    if doc is not None:
        table = Table(title=f"robaudit harden ({result.method}): original → hardened", title_justify="left")
        for col in ("threat", "original", "hardened", "change (points)"):
            table.add_column(col, justify="left" if col == "threat" else "right")
        c = doc["clean"]
        table.add_row("clean", f"{c['original']:.1%}", f"{c['hardened']:.1%}", f"{100 * c['delta']:+.1f}")
        for t in doc["threats"]:
            label = f"{t['access']} {t['norm']} eps={t['eps_label']}"
            if t["variant"] != "model":
                label = f"{t['variant']} · {label}"
            ra, rb = t["original"]["robust_accuracy"], t["hardened"]["robust_accuracy"]
            table.add_row(Text(label), f"{ra:.1%}", f"{rb:.1%}", f"{100 * (rb - ra):+.1f}")
        console.print(table)
        new = doc["findings"]["new_in_hardened"]
        if new:
            console.print(Text(f"New findings in the hardened model: {', '.join(new)}", style="yellow"))
    console.print(
        Text(
            f"Selected epoch {tr.best_epoch} of {len(tr.records)} (best held-out "
            f"{'clean' if result.method == 'distill' else 'robust'} accuracy)"
            + (f"; {tr.stopped}" if tr.stopped else "")
        )
    )
    for note in result.notes:
        console.print(Text(f"Note: {note}"))
    print_files(result.files, console, width=16)


def print_files(files: Mapping[str, Any], console: Console, width: int) -> None:
    """One line per file written: its kind, padded to ``width``, and its path."""
    for name, path in files.items():
        console.print(f"  {name:{width}s} → {path}", highlight=False, markup=False)


def validation_lines(path: Path, cfg: Config) -> list[str]:
    """``robaudit validate``: what the config holds; for one that leaves budgets to a profile,
    which profile and the budgets it would give."""
    threats = cfg.threats()
    entries = f"{len(cfg.attacks)} attack entr{'y' if len(cfg.attacks) == 1 else 'ies'}"
    shown = ", ".join(f"{t.access} {t.norm} {t.label}" for t in threats)
    if fitted(cfg):
        return [f"{path}: valid · {entries}, {len(threats)} threat(s): {shown}"]
    names = list(PROFILES) if cfg.profile == "auto" else [cfg.profile]
    how = "chosen by input size" if cfg.profile == "auto" else "set in the config"
    head = (
        f"{path}: valid · {entries}; budgets left out come from the profile {how} "
        "(scan and `robaudit init --model M --data D` fit them)"
        + (f"; fixed threats: {shown}" if threats else "")
    )
    return [head, *(f"  {summary(name)}" for name in names)]


def catalog_lines(docs: Iterable[FindingDoc]) -> list[str]:
    """``robaudit explain`` without an ID: one line per finding."""
    return [f"{doc.id}  {doc.severity:7s}  {doc.title}" for doc in docs]


def fitted_line(preset: str, model: Path, fit: Any) -> str:
    """``robaudit init --model``: what the starter config was fitted to."""
    return (
        f"robaudit: fitted {preset} to {model}: input {list(fit.input_shape)}, "
        f"{fit.num_classes} classes, {fit.profile} budgets"
    )
