"""The HTML report: one self-contained file (inline CSS and SVG, base64 PNGs, no JavaScript).

It reads only the report document (:func:`robaudit.report.document.to_document`) and computes
nothing new: formatting (percentages, rounding), severity colours and chart geometry only.
Autoescaping is on, so class names, paths and config values from users render as text.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from jinja2 import ChainableUndefined, Environment, PackageLoader, Undefined
from markupsafe import Markup

from robaudit.entries import entry_name
from robaudit.norms import get as get_norm
from robaudit.report.notices import (
    budget_text,
    evaluation_lines,
    grade_text,
    inferred_lines,
    naive_lines,
    own_budget,
    protocol_line,
    satisfaction_rows,
    threat_text,
    untrusted_line,
)
from robaudit.report.svg import Point, Series, bar_chart, line_chart

DASH = "—"
GOOD_RATIO = 0.8  # robust / clean accuracy at or above this: green
WARN_RATIO = 0.5  # at or above this: amber; below: red
_B64 = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")


def _missing(v: Any) -> bool:
    return v is None or isinstance(v, Undefined)


def na(v: Any) -> Any:
    """Absent values as a dash (``0`` and ``False`` are values, not absences)."""
    return DASH if _missing(v) or v == "" else v


def pct(v: Any, digits: int = 1) -> str:
    """A proportion in [0, 1] as a percentage."""
    if _missing(v) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return DASH
    return f"{100 * v:.{digits}f}%"


def ci(v: Any, digits: int = 1) -> str:
    """A ``[low, high]`` proportion interval as ``[a%, b%]``."""
    if _missing(v) or not isinstance(v, (list, tuple)) or len(v) != 2:
        return DASH
    return f"[{pct(v[0], digits)}, {pct(v[1], digits)}]"


def num(v: Any, digits: int = 4) -> str:
    """A float with ``digits`` significant digits (norms, eps)."""
    if _missing(v) or isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return DASH
    return f"{v:.{digits}g}"


def count(v: Any) -> str:
    """An integer with thousands separators."""
    if _missing(v) or isinstance(v, bool) or not isinstance(v, (int, float)):
        return DASH
    return f"{int(v):,}"


def seconds(v: Any) -> str:
    """A duration in seconds, rounded for reading."""
    if _missing(v) or isinstance(v, bool) or not isinstance(v, (int, float)):
        return DASH
    return f"{v:.1f} s" if v >= 10 else f"{v:.2f} s"


def heat(v: Any) -> str:
    """Background colour for an accuracy cell: red (0%) through amber to green (100%)."""
    if _missing(v) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return "#eeeeee"
    return f"hsl({120 * min(1.0, max(0.0, v)):.0f}, 65%, 80%)"


def pretty_json(v: Any) -> str:
    """Config values as indented JSON text (the template escapes it)."""
    return json.dumps(v, indent=2, ensure_ascii=False, default=str)


def params_text(v: Any) -> str:
    """An attack's parameters as ``k=v`` pairs, unset ones left out."""
    if not isinstance(v, dict):
        return ""
    return ", ".join(f"{k}={x}" for k, x in v.items() if x is not None)


def png_b64(v: Any) -> str | None:
    """The base64 payload if it is plausibly base64 (else the image is left out)."""
    return v if isinstance(v, str) and _B64.match(v) else None


def severity(robust: Any, clean: Any) -> str:
    """CSS class for a threat row from how much of the clean accuracy survives."""
    if not isinstance(robust, (int, float)) or not isinstance(clean, (int, float)):
        return "sev-unknown"
    ratio = robust / clean if clean > 0 else 0.0
    if ratio >= GOOD_RATIO:
        return "sev-good"
    return "sev-warn" if ratio >= WARN_RATIO else "sev-bad"


def class_label(names: list[str] | None, k: Any) -> str:
    """A class index as its name when the model declares names, else the index."""
    if isinstance(k, int) and names and 0 <= k < len(names):
        return str(names[k])
    return DASH if _missing(k) else str(k)


def has_undecided(doc: dict[str, Any]) -> bool:
    """True when a randomized model left verdicts open: the threat table then shows robust
    accuracy as an interval and the undecided count (deterministic reports look unchanged)."""
    return any(
        (t.get("undecided") or 0) > 0
        or (
            isinstance(t.get("robust_accuracy_upper"), (int, float))
            and isinstance(t.get("robust_accuracy"), (int, float))
            and t["robust_accuracy_upper"] != t["robust_accuracy"]
        )
        for t in doc.get("threats") or []
    )


def _pair(v: Any) -> tuple[float, float] | None:
    """A ``[low, high]`` interval from the document, if it is one."""
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v):
        return (float(v[0]), float(v[1]))
    return None


def charts(doc: dict[str, Any]) -> list[tuple[str, Markup]]:
    """One robust-accuracy-vs-eps chart per norm (eps scales differ across norms).

    Each (variant, access) at that norm is a polyline starting at clean accuracy, eps 0. A
    budget that is not a length (snr's dB) sits where the norm puts it so that the ball grows
    to the right (:meth:`~robaudit.norms.base.Norm.chart_x`), its ticks labelled in its units.
    """
    threats = doc.get("threats") or []
    variants = {t.get("variant") for t in threats}
    clean, cci = doc.get("clean_accuracy"), doc.get("clean_ci")
    out = []
    for norm in dict.fromkeys(t.get("norm") for t in threats):
        at, ticks = _chart_axis(norm, threats)
        groups: dict[str, list[Point]] = {}
        for t in threats:
            if t.get("norm") != norm:
                continue
            name = str(t.get("access"))
            if len(variants) > 1:
                name = f"{t.get('variant')} · {name}"
            pts = groups.setdefault(name, [])
            if not pts and isinstance(clean, (int, float)):
                pts.append(Point(0.0, clean, f"clean: {pct(clean)} {ci(cci)}", _pair(cci)))
            ra, e = t.get("robust_accuracy"), t.get("eps")
            if isinstance(ra, (int, float)) and isinstance(e, (int, float)):
                c = t.get("ci")
                tip = f"{name} {budget_text(norm, t.get('eps_label'), 'eps=')}: {pct(ra)} {ci(c)}"
                pts.append(Point(at(float(e)), float(ra), tip, _pair(c)))
        for m in doc.get("minimal_norms") or []:
            if m.get("norm") != norm:
                continue
            name = f"{m.get('attack')} (from minimal norms)"
            groups[name] = [
                Point(at(float(e)), float(a), f"{name} {norm} eps={num(e)}: {pct(a)}")
                for e, a in m.get("curve") or []
            ]
        series = [Series(n, tuple(p)) for n, p in groups.items()]
        if ticks is None:
            title, x_label = f"Robust accuracy vs eps ({norm})", f"eps ({norm})"
        else:
            title = f"Robust accuracy vs budget ({norm})"
            x_label = f"{norm} budget in its own units (the ball grows to the right)"
        out.append((str(norm), line_chart(series, title=title, x_label=x_label, x_ticks=ticks)))
    return out


def _chart_axis(
    norm: Any, threats: list[dict[str, Any]]
) -> tuple[Callable[[float], float], list[tuple[float, str]] | None]:
    """Where a norm's budgets sit on its chart and, for a budget that is not a length, the
    x ticks labelled in its own units (clean at 0, then each threat's budget)."""
    try:
        spec = get_norm(str(norm))
    except ValueError:
        return (lambda e: e), None
    if spec.scales_with_range:  # a length: the budget itself, ticks as numbers
        return (lambda e: e), None
    eps = sorted({float(t["eps"]) for t in threats if t.get("norm") == norm
                  and isinstance(t.get("eps"), (int, float))})  # fmt: skip
    labels = {float(t["eps"]): str(t.get("eps_label")) for t in threats if t.get("norm") == norm
              and isinstance(t.get("eps"), (int, float))}  # fmt: skip
    ticks = [(0.0, "clean"), *((spec.chart_x(e), spec.describe(labels[e])) for e in eps)]
    return spec.chart_x, ticks


def certified_chart(doc: dict[str, Any]) -> Markup | None:
    """Certified accuracy vs L2 radius, beside what the adaptive attack on the smoothed
    classifier left at each radius (the certificate must stay at or below it)."""
    cert = doc.get("certification")
    if not isinstance(cert, dict) or not cert.get("curve"):
        return None
    pts = tuple(
        Point(float(c["radius"]), float(c["accuracy"]), f"certified at r={num(c['radius'])}: "
              f"{pct(c['accuracy'])} {ci(c.get('ci95'))}", _pair(c.get("ci95")))
        for c in cert["curve"]
    )
    series = [Series("certified (randomized smoothing)", pts)]
    emp = tuple(
        Point(float(e["radius"]), float(e["accuracy"]),
              f"attack at r={num(e['radius'])}: {pct(e['accuracy'])} robust")
        for e in cert.get("empirical") or []
    )
    if emp:
        series.append(Series("PGD-L2 on the smoothed classifier", emp))
    return line_chart(series, title="Certified accuracy vs L2 radius", x_label="radius (l2)")


def black_box_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Attack rows of query-based black-box searches (a query budget or a queries curve).

    An attack registered with ``search = False`` (the noise baseline: random draws) is left
    out; its row stays in the per-attack tables. An attack not registered here is kept.
    """
    from robaudit.attacks.base import registry

    known = registry()
    return [
        a
        for a in doc.get("attacks") or []
        if (a.get("query_budget") or a.get("query_curve"))
        and getattr(known.get(str(a.get("attack"))), "search", True)
    ]


def query_charts(doc: dict[str, Any]) -> list[tuple[str, Markup]]:
    """Per threat: robust accuracy had each black-box attack stopped after q queries per sample."""
    by_threat: dict[str, list[Series]] = {}
    for a in black_box_rows(doc):
        curve = a.get("query_curve")
        if not curve:
            continue
        key = threat_text(a, "eps=")
        if a.get("variant") not in (None, "model"):
            key = f"{a.get('variant')} · {key}"
        pts = tuple(
            Point(float(q), float(r), f"{a.get('attack')} after {count(q)} queries: {pct(r)}")
            for q, r in curve
            if isinstance(q, (int, float)) and isinstance(r, (int, float))
        )
        by_threat.setdefault(key, []).append(Series(str(a.get("attack")), pts))
    return [
        (key, line_chart(series, title=f"Robust accuracy vs queries ({key})", x_label="queries per sample"))
        for key, series in by_threat.items()
    ]


@lru_cache(maxsize=1)
def environment() -> Environment:
    """One environment per process; ChainableUndefined lets sparse (interrupted) documents render."""
    env = Environment(
        loader=PackageLoader("robaudit", "report/templates"),
        autoescape=True,
        undefined=ChainableUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        na=na, pct=pct, ci=ci, num=num, count=count, seconds=seconds, heat=heat,
        pretty_json=pretty_json, params_text=params_text, png_b64=png_b64,
        entry=lambda i: entry_name(int(i)) if isinstance(i, int) else "",
        threat=lambda t, eq="eps ": threat_text(t, eq),
        own_budget=lambda t: own_budget(t.get("norm"), t.get("eps_label")) or "",
    )
    return env


def feature_chart(doc: dict[str, Any]) -> Markup | None:
    """Tabular runs: the share of verified breaks that changed each feature, as bars."""
    fc = doc.get("feature_changes")
    if not isinstance(fc, dict) or not fc.get("breaks"):
        return None
    bars = [
        (str(f["feature"]), float(f["share"]),
         f"{f['feature']}: changed in {f['changed']} of {fc['breaks']} breaks")
        for f in fc.get("features") or [] if f.get("changed")
    ]  # fmt: skip
    return bar_chart(bars, title="Share of verified breaks that changed each feature")


def render_html(doc: dict[str, Any]) -> str:
    """The whole report as one HTML string (sections in a security reviewer's order)."""
    model = doc.get("model") or {}
    names = model.get("class_names")
    clean = doc.get("clean_accuracy")
    return environment().get_template("report.html.j2").render(
        doc=doc,
        threats_by_key={t.get("key"): t for t in doc.get("threats") or []},
        severity=lambda ra: severity(ra, clean),
        label=lambda k: class_label(names, k),
        charts=charts(doc),
        query_charts=query_charts(doc),
        feature_chart=feature_chart(doc),
        certified_chart=certified_chart(doc),
        undecided_shown=has_undecided(doc),
        black_box=black_box_rows(doc),
        untrusted=untrusted_line(doc),
        naive=naive_lines(doc),
        satisfaction=satisfaction_rows(doc),
        protocol=protocol_line(doc),
        inferred=inferred_lines(doc),
        grade_text=grade_text(doc),
        evaluation=[line.strip() for line in evaluation_lines(doc)],
        good_ratio=GOOD_RATIO,
        warn_ratio=WARN_RATIO,
    )
