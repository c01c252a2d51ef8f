"""SNR threats in the reports (issue 17): labelled in the norm's own words (``SNR 40 dB``, not
``snr ε=40``) in the terminal, Markdown and HTML, and charted so that the ball grows to the
right (a larger dB is a smaller ball: 40 dB sits left of 30 dB, the clean input at 0), with
the ticks in dB. Length budgets keep their labels."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from rich.console import Console

from robaudit.report.console import threat_table
from robaudit.report.html import charts, render_html
from robaudit.report.markdown import render_markdown

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "sample_report.json"


def _doc() -> dict[str, Any]:
    """The sample report with its threats replaced by two SNR budgets and one Linf budget."""
    doc = json.loads(FIXTURE.read_text(encoding="utf-8"))
    base = doc["threats"][0]
    rows = []
    for norm, eps, label, ra in (("snr", 40.0, "40", 0.9), ("snr", 30.0, "30", 0.6),
                                 ("linf", 0.1, "0.1", 0.5)):  # fmt: skip
        key = f"white-box/{norm}/{label}"
        rows.append({**base, "norm": norm, "eps": eps, "eps_label": label, "key": key,
                     "robust_accuracy": ra, "attacks": ["apgd"]})  # fmt: skip
    doc["threats"] = rows
    doc["attacks"], doc["per_class"], doc["confusions"], doc["minimal_norms"] = [], [], [], []
    doc["examples"], doc["samples"] = [], []
    return doc


def test_snr_threats_are_labelled_in_db_everywhere() -> None:
    doc = _doc()
    console = Console(width=200, record=True, color_system=None)
    console.print(threat_table(doc))
    text = console.export_text()
    assert "white-box SNR 40 dB" in text and "white-box SNR 30 dB" in text
    assert "snr ε=" not in text and "white-box linf ε=0.1" in text
    md = render_markdown(doc)
    assert "white-box SNR 40 dB" in md and "snr ε=" not in md and "linf ε=0.1" in md
    html = render_html(doc)
    assert "SNR 30 dB" in html and "snr eps" not in html


def test_the_snr_chart_grows_the_ball_to_the_right_with_ticks_in_db() -> None:
    svg = dict(charts(_doc()))["snr"]
    ticks = re.findall(r'<text class="tick" x="([\d.]+)"[^>]*text-anchor="middle">([^<]*)</text>', svg)
    at = {label: float(x) for x, label in ticks}
    assert set(at) == {"clean", "SNR 40 dB", "SNR 30 dB"}
    assert at["clean"] < at["SNR 40 dB"] < at["SNR 30 dB"]
    points = re.search(r'<polyline[^>]*points="([^"]*)"', svg)
    assert points is not None
    xy = [tuple(map(float, p.split(","))) for p in points.group(1).split()]
    # clean, 40 dB, 30 dB from left to right; robust accuracy falls as the ball grows
    assert [x for x, _ in xy] == sorted(x for x, _ in xy)
    assert [round(x, 2) for x, _ in xy[1:]] == [at["SNR 40 dB"], at["SNR 30 dB"]]
    assert xy[1][1] < xy[2][1]  # svg y grows downward: 90% sits above 60%
    # a length keeps its numeric ticks
    linf = dict(charts(_doc()))["linf"]
    assert ">clean</text>" not in linf and ">0.1</text>" in linf
