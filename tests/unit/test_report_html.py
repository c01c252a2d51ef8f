"""The HTML report: self-contained, escaped, and faithful to the document it renders."""

from __future__ import annotations

import base64
import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from robaudit.report.html import render_html
from robaudit.report.svg import Point, Series, line_chart, nice_ticks

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "sample_report.json"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EVIL = "<script>alert(1)</script>"


@pytest.fixture()
def doc() -> dict[str, Any]:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


@pytest.fixture()
def html(doc: dict[str, Any]) -> str:
    return render_html(doc)


def test_verdict_matches_gate(doc: dict[str, Any], html: str) -> None:
    expected, other = ("PASS", "FAIL") if doc["gate"]["passed"] else ("FAIL", "PASS")
    assert f'<span class="big">{expected}</span>' in html
    assert other not in html
    for f in doc["gate"]["failures"]:
        assert f["detail"] in html
    assert f"{doc['score']:.4g}" in html and f"<strong>grade {doc['grade']}</strong>" in html
    assert "<details>" in html and "mean over threats of robust accuracy" in html


def test_verdict_flips_with_gate(doc: dict[str, Any]) -> None:
    doc["gate"] = {"passed": True, "checked": ["min_score"], "failures": []}
    out = render_html(doc)
    assert '<span class="big">PASS</span>' in out and "FAIL" not in out


def test_sections_in_reviewer_order(html: str) -> None:
    ids = ["verdict", "threat-model", "headline", "charts", "per-class", "gallery", "findings", "attacks", "definitions"]
    positions = [html.index(f'<section id="{i}">') for i in ids]
    assert positions == sorted(positions)
    assert html.index("<footer>") > positions[-1]


def test_headline_values(doc: dict[str, Any], html: str) -> None:
    table = html[html.index('<table class="headline">') : html.index("</table>", html.index('<table class="headline">'))]
    assert f"{100 * doc['clean_accuracy']:.1f}%" in table
    rows = re.findall(r'<tr class="(sev-\w+)">(.*?)</tr>', table, re.S)
    assert len(rows) == len(doc["threats"])
    for (sev, row), t in zip(rows, doc["threats"], strict=True):
        assert f"<td>{t['eps_label']}</td>" in row
        assert f"{100 * t['robust_accuracy']:.1f}%" in row
        assert f"[{100 * t['ci'][0]:.1f}%, {100 * t['ci'][1]:.1f}%]" in row
        assert f"{100 * t['success_rate']:.1f}%" in row
        ratio = t["robust_accuracy"] / doc["clean_accuracy"]
        assert sev == ("sev-good" if ratio >= 0.8 else "sev-warn" if ratio >= 0.5 else "sev-bad")


def test_one_chart_per_norm(doc: dict[str, Any], html: str) -> None:
    charts = re.findall(r'<svg class="chart".*?</svg>', html, re.S)
    norms = {t["norm"] for t in doc["threats"]}
    assert len(charts) == len(norms)
    for svg in charts:
        assert "<polyline" in svg or "<path" in svg
        assert "<title>" in svg and "100%" in svg


def test_gallery_images_are_pngs(doc: dict[str, Any], html: str) -> None:
    srcs = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(srcs) == 3 * len(doc["examples"]) == html.count("<img")
    for s in srcs:
        assert base64.b64decode(s, validate=True).startswith(PNG_SIGNATURE)


def test_class_names_label_rows_and_examples(doc: dict[str, Any]) -> None:
    doc["model"]["class_names"] = [f"klass-{i}" for i in range(doc["model"]["num_classes"])]
    out = render_html(doc)
    heat = out[out.index('<table class="heat">') :]
    for row in doc["per_class"]:
        assert f"<th>klass-{row['class']}</th>" in heat
    assert f"klass-{doc['examples'][0]['adv_pred']}" in out[out.index('<section id="gallery">') :]


def test_user_strings_are_escaped(doc: dict[str, Any]) -> None:
    evil = copy.deepcopy(doc)
    evil["model"]["class_names"] = [EVIL] * evil["model"]["num_classes"]
    evil["model"]["path"] = f"/models/{EVIL}.pt"
    evil["attacks"][0]["attack"] = EVIL
    evil["threats"][0]["attacks"] = [EVIL]
    evil["findings"] = [{"id": "RA999", "severity": EVIL, "title": EVIL, "detail": EVIL}]
    evil["config"]["data"]["source"] = EVIL
    evil["examples"][0]["clean_png"] = '"><script>alert(1)</script>'
    out = render_html(evil)
    assert "<script" not in out.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in out


def test_self_contained(html: str) -> None:
    assert "http://" not in html and "https://" not in html
    assert "<script" not in html.lower() and "<link" not in html.lower()


def test_incomplete_warning(doc: dict[str, Any], html: str) -> None:
    assert "INCOMPLETE RUN" not in html
    doc["incomplete"] = True
    assert "INCOMPLETE RUN" in render_html(doc)


def test_no_findings_and_null_alone_accuracy(doc: dict[str, Any]) -> None:
    doc["findings"] = []
    doc["attacks"][0]["robust_accuracy"] = None
    out = render_html(doc)
    assert "No findings." in out
    attacks = out[out.index('<table class="attacks">') :]
    assert '<td class="n">—</td>' in attacks


def test_findings_listed(doc: dict[str, Any]) -> None:
    doc["findings"] = [{"id": "RA001", "severity": "warning", "title": "Zero gradients", "detail": "masked"}]
    out = render_html(doc)
    assert "RA001" in out and "Zero gradients" in out and "No findings." not in out


def test_minimal_document_renders() -> None:
    """A sparse (e.g. interrupted) document still renders instead of raising."""
    out = render_html({"incomplete": True, "gate": {"passed": False, "failures": [], "checked": []}})
    assert "INCOMPLETE RUN" in out and "FAIL" in out and "No threats were evaluated." in out


def test_nice_ticks() -> None:
    assert nice_ticks(0.3) == [0.0, 0.1, 0.2, 0.3]
    assert nice_ticks(1.0) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(0.0) == [0.0, 1.0]


def test_line_chart_escapes_text() -> None:
    svg = line_chart([Series(EVIL, (Point(0, 1, EVIL), Point(1, 0.5, "x", (0.4, 0.6))))], title=EVIL, x_label=EVIL)
    assert str(svg).startswith('<svg class="chart"') and "<polyline" in svg
    assert "<script" not in svg and "&lt;script&gt;" in svg
