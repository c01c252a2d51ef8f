"""summary.md: a compact Markdown summary for CI step summaries and pull-request comments.

It reads only the report document, like every other renderer. Strings that come from users
(class names, paths, data sources, variant names, finding details) are escaped so that they
render as the text they are: a ``|`` cannot split a table cell, ``<script>`` is not HTML,
``@team`` does not notify anybody and ``#12`` links to no issue.
"""

from __future__ import annotations

import math
import re
from typing import Any

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
    satisfaction_rows,
    threat_text,
    universal_lines,
    unrun_text,
    untrusted_line,
)

_ACTIVE = set("\\`*_{}[]()<>#+!|~&$^@:")
_LEADING = re.compile(r"^(\s*)(-|=|\d{1,9}[.)](?=\s|$))")  # others are in _ACTIVE
SHA_SHORT = 12


def md_escape(value: Any, *, start: bool = False) -> str:
    """``value`` as inline Markdown text: every Markdown/HTML-active character backslash-escaped,
    line breaks folded to spaces (a cell or list item stays one line). ``start``: the text
    opens a line or list item, where ``- x`` or ``1. x`` would begin a (nested) list."""
    text = re.sub(r"[\r\n\t\v\f]+", " ", "" if value is None else str(value))
    text = "".join(c for c in text if c >= " " or c == " ")  # other control characters
    out = "".join(f"\\{c}" if c in _ACTIVE else c for c in text)
    m = _LEADING.match(out) if start else None
    if m:  # "- x", "1. x" at the start of a list item would open a nested list
        marker = m.group(2)
        out = m.group(1) + marker[:-1] + "\\" + marker[-1] + out[m.end() :]
    return out


def pct(v: Any, digits: int = 1) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return "—"
    return f"{100 * v:.{digits}f}%"


def ci_text(v: Any) -> str:
    if isinstance(v, (list, tuple)) and len(v) == 2:
        return f"{pct(v[0])}–{pct(v[1])}"
    return "—"


def points(v: Any) -> str:
    """A difference of proportions in percentage points, signed."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return "—"
    return f"{100 * v:+.1f}"


def threat_label(t: dict[str, Any], with_variant: bool) -> str:
    """``white-box linf ε=0.1`` (prefixed by the variant when a report has several)."""
    core = md_escape(threat_text(t))
    return f"{md_escape(t.get('variant'))} · {core}" if with_variant else core


def _class_name(doc: dict[str, Any], k: Any) -> str:
    names = (doc.get("model") or {}).get("class_names")
    if isinstance(k, int) and isinstance(names, list) and 0 <= k < len(names):
        return str(names[k])
    return str(k)


def weakest_class(doc: dict[str, Any], key: Any) -> str:
    """The class with the lowest robust accuracy at a threat, as escaped text (or a dash)."""
    worst: tuple[float, Any] | None = None
    for row in doc.get("per_class") or []:
        v = (row.get("robust_accuracy") or {}).get(key)
        if isinstance(v, (int, float)) and (worst is None or v < worst[0]):
            worst = (float(v), row.get("class"))
    if worst is None:
        return "—"
    return f"{md_escape(_class_name(doc, worst[1]))} ({pct(worst[0], 0)})"


def unresolved_findings(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [f for f in doc.get("findings") or [] if isinstance(f, dict) and not f.get("resolved")]


def _verdict(doc: dict[str, Any]) -> str:
    gate = doc.get("gate") or {}
    passed = bool(gate.get("passed"))
    word = "✅ PASS" if passed else "❌ FAIL"
    score = doc.get("score")
    score_text = f"{score:.1f}" if isinstance(score, (int, float)) else "—"
    line = f"## robaudit: {word} · score {score_text} / 100 · {md_escape(grade_text(doc))}"
    if doc.get("incomplete"):
        line += " · ⚠ incomplete run"
        partial = doc.get("partial") or {}
        if partial:
            line += (
                f"\n\n> ⚠ **Incomplete:** {md_escape(partial.get('reason', ''))}; "
                f"{md_escape(unrun_text(partial))}"
            )
            line += ". The numbers cover only finished work and may overstate robustness."
    return line


def _identity(doc: dict[str, Any]) -> str:
    model, data, meta = doc.get("model") or {}, doc.get("data") or {}, doc.get("meta") or {}
    sha_short = f"`{_short(model.get('sha256'))}`"
    samples = data.get("samples")
    return (
        f"**Model** {md_escape(model.get('path', '—'))} (sha256 {sha_short}) · "
        f"**Data** {samples if isinstance(samples, int) else '—'} samples of "
        f"{md_escape(data.get('source', '—'))} ({md_escape(data.get('split', '—'))}) · "
        f"seed {md_escape(meta.get('seed', '—'))}"
    )


def variant_clean(doc: dict[str, Any], variant: Any) -> tuple[Any, Any]:
    """Clean accuracy and its 95% CI for a variant: a defense variant's own (``doc["variants"]``;
    Wilson interval from its counts), else the run's."""
    for v in doc.get("variants") or []:
        if isinstance(v, dict) and v.get("variant") == variant and variant != "model":
            acc, correct = v.get("clean_accuracy"), v.get("clean_correct")
            n = (doc.get("data") or {}).get("samples")
            ci = v.get("clean_ci")
            if ci is None and isinstance(correct, int) and isinstance(n, int) and n > 0:
                from robaudit.results import wilson_interval

                ci = list(wilson_interval(correct, n))
            return acc, ci
    return doc.get("clean_accuracy"), doc.get("clean_ci")


def _threat_table(doc: dict[str, Any]) -> list[str]:
    threats = [t for t in doc.get("threats") or [] if isinstance(t, dict)]
    if not threats:
        return ["No threats were evaluated."]
    several = len({t.get("variant") for t in threats}) > 1
    pos = positive_columns(doc)
    head = "".join(f" {md_escape(c)} |" for c in pos)
    lines = [
        f"| threat | clean acc. (95% CI) | robust acc. (95% CI) |{head} success rate | "
        "weakest class |",
        "|---|---:|---:|" + "---:|" * len(pos) + "---:|---|",
    ]
    if pos:
        clean_cells = "".join(f" {c} |" for c in positive_cells(doc, None))
        lines.append(
            f"| clean | {pct(doc.get('clean_accuracy'))} ({ci_text(doc.get('clean_ci'))}) | — |"
            f"{clean_cells} — | — |"
        )
    for t in threats:
        clean, clean_ci = variant_clean(doc, t.get("variant"))
        cells = "".join(f" {c} |" for c in positive_cells(doc, t.get("key")))
        lines.append(
            f"| {threat_label(t, several)} | {pct(clean)} ({ci_text(clean_ci)}) | "
            f"**{pct(t.get('robust_accuracy'))}** ({ci_text(t.get('ci'))}) |{cells} "
            f"{pct(t.get('success_rate'))} | {weakest_class(doc, t.get('key'))} |"
        )
    note = positive_note(doc)
    if note:
        lines += ["", f"- {md_escape(note, start=True)}"]
    naive = naive_lines(doc)
    if naive:
        lines += ["", *(f"- {md_escape(line, start=True)}" for line in naive)]
    return lines


def _satisfaction(doc: dict[str, Any]) -> list[str]:
    """Tabular runs: the share of each attack's candidates that were real records as it
    returned them, and what the engine did with the others."""
    rows = satisfaction_rows(doc)
    if not rows:
        return []
    several = len({a.get("variant") for a in rows}) > 1
    lines = [
        "",
        "**Constraint satisfaction of the attacks' candidates** (as returned, before robaudit "
        "repairs them; attacks searching inside the constraints must reach 100%)",
        "",
        "| attack | threat | candidates | satisfy every constraint | repaired | still breaking one |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for a in rows:
        lines.append(
            f"| {md_escape(a.get('attack'))} | {threat_label(a, several)} | {a.get('attacked')} | "
            f"{pct(a.get('constraint_satisfaction'))} | {a.get('repaired')} | "
            f"{a.get('constraint_violations')} |"
        )
    return lines


def _feature_changes(doc: dict[str, Any]) -> list[str]:
    """Tabular runs: which features the verified breaks changed, how often, by how much."""
    fc = doc.get("feature_changes")
    if not fc or not fc.get("features"):
        return []
    lines = [
        "",
        f"**Features the {fc.get('breaks')} verified breaks changed** (data units)",
        "",
        "| feature | changed in | share | mean change | largest change |",
        "|---|---:|---:|---:|---:|",
    ]
    for f in fc["features"]:
        lines.append(
            f"| {md_escape(f.get('feature'))} | {f.get('changed')} | {pct(f.get('share'))} | "
            f"{_g(f.get('mean_abs_change'))} | {_g(f.get('max_abs_change'))} |"
        )
    return lines


def _g(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, (int, float)) else "—"


def _change_rows(changes: list[dict[str, Any]], clean: bool) -> list[str]:
    several = len({c.get("variant") for c in changes}) > 1
    rows = []
    for c in changes:
        mark = " ❌" if c.get("exceeds") else ""
        lo, hi = [*(c.get("delta_ci") or []), None, None][:2]
        p = c.get("p_value")
        noise = "significant" if c.get("significant") else "within noise"
        if isinstance(p, (int, float)):
            noise += f" (McNemar p={p:.3g})"
        what = f"{md_escape(c.get('variant'))} · clean" if clean else threat_label(c, several)
        rows.append(
            f"| {what} | {pct(c.get('base'))} | {pct(c.get('new'))} | "
            f"**{points(c.get('delta'))}**{mark} ({points(lo)} to {points(hi)}) | {noise} |"
        )
    return rows


def comparison_lines(b: dict[str, Any], *, with_clean: bool = False) -> list[str]:
    """A baseline comparison (``Comparison.to_dict()``) as Markdown lines: how it was judged,
    a table of changes in percentage points with 95% intervals, and what was not compared."""
    how = (
        f"paired on {md_escape(b.get('pairing', 'the same samples'))}: McNemar exact test"
        if b.get("paired")
        else f"not paired ({md_escape(b.get('pairing', ''))}): Newcombe interval"
    )
    lines = [f"Allowed robust-accuracy drop {_points(b.get('max_drop_points'))} · {how}"]
    changes = ([*(b.get("clean") or [])] if with_clean else []) + list(b.get("robust") or [])
    if changes:
        lines += [
            "",
            "| threat | baseline | now | change, points (95% CI) | noise |",
            "|---|---:|---:|---:|---|",
        ]
        if with_clean:
            lines += _change_rows(list(b.get("clean") or []), clean=True)
        lines += _change_rows(list(b.get("robust") or []), clean=False)
    else:
        lines += ["", "No threat in common: nothing was compared."]
    for side, where in (("only_in_base", "the baseline"), ("only_in_new", "the new run")):
        keys = b.get(side) or []
        if keys:
            lines += ["", f"Only in {where} (not compared): " + ", ".join(md_escape(k) for k in keys)]
    for note in b.get("notes") or []:
        lines += ["", f"Note: {md_escape(note)}"]
    return lines


def _baseline(doc: dict[str, Any]) -> list[str]:
    b = (doc.get("meta") or {}).get("baseline")
    if not isinstance(b, dict):
        return []
    return ["", f"**Baseline** {md_escape(b.get('path', '—'))}", "", *comparison_lines(b)]


def render_comparison(b: dict[str, Any]) -> str:
    """``robaudit diff --format md``: the verdict line and every change, clean accuracy included."""
    failed = [c for c in b.get("robust") or [] if c.get("exceeds")]
    if b.get("passed"):
        verdict = f"✅ no robust accuracy dropped by more than {_points(b.get('max_drop_points'))}"
    elif failed:
        verdict = (
            f"❌ robust accuracy dropped by more than {_points(b.get('max_drop_points'))} "
            f"at {len(failed)} threat(s)"
        )
    else:
        verdict = "❌ nothing compared"
    head = [
        f"## robaudit diff: {verdict}",
        "",
        f"**Baseline** {md_escape(b.get('path'))} (sha256 `{_short(b.get('base_sha256'))}`) → "
        f"**new** {md_escape(b.get('new_path'))} (sha256 `{_short(b.get('new_sha256'))}`)",
        "",
    ]
    return "\n".join(head + comparison_lines(b, with_clean=True)) + "\n"


def _points(v: Any) -> str:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return f"{v:g} point" + ("" if v == 1 else "s")
    return "—"


def _short(sha: Any) -> str:
    text = str(sha or "")
    return text[:SHA_SHORT] if re.fullmatch(r"[0-9a-f]+", text) else "—"


def render_markdown(doc: dict[str, Any]) -> str:
    """The summary as Markdown text (GitHub-flavoured: tables, no raw HTML)."""
    lines = [_verdict(doc), "", _identity(doc), ""]
    for note in (untrusted_line(doc), protocol_line(doc)):
        if note:
            lines += [f"> ⚠ **{md_escape(note)}**", ""]
    weak = evaluation_lines(doc)
    if weak and (doc.get("meta") or {}).get("evaluation", {}).get("status") == "weak":
        lines += [f"> ⚠ **{md_escape(weak[0])}**"] + [f"> {md_escape(r.strip())}" for r in weak[1:]] + [""]
    for line in inferred_lines(doc):
        lines += [f"- inferred: {md_escape(line)}"]
    if inferred_lines(doc):
        lines.append("")
    lines += _threat_table(doc)
    natural = natural_line(doc)
    if natural:
        lines += ["", f"- {md_escape(natural, start=True)}"]
    lines += _satisfaction(doc)
    lines += _feature_changes(doc)
    for line in universal_lines(doc):
        lines += ["", f"- {md_escape(line, start=True)}"]
    failures = (doc.get("gate") or {}).get("failures") or []
    if failures:
        lines += ["", "**Failed gate criteria**", ""]
        for f in failures:
            lines.append(f"- {md_escape(f.get('criterion'), start=True)}: {md_escape(f.get('detail'))}")
    found = unresolved_findings(doc)
    if found:
        lines += ["", "**Unresolved findings** (`robaudit explain ID`)", ""]
        for f in found:
            lines.append(
                f"- {md_escape(f.get('id'), start=True)} ({md_escape(f.get('severity'))}): "
                f"{md_escape(f.get('title'))}"
            )
    lines += _baseline(doc)
    meta = doc.get("meta") or {}
    lines += [
        "",
        f"robaudit {md_escape(doc.get('robaudit_version', '—'))} · report schema "
        f"{md_escape(doc.get('schema_version', '—'))} · device {md_escape(meta.get('device', '—'))}"
        " · full details in report.html",
    ]
    return "\n".join(lines) + "\n"
