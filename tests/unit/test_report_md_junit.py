"""summary.md and junit.xml from the committed sample report: content, escaping, strict mode,
and the writers' promise that a failing renderer leaves no file half-written."""

from __future__ import annotations

import copy
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from robaudit.config import FORMATS, ReportSection
from robaudit.errors import UserInputError
from robaudit.report import writers
from robaudit.report.junit import render_junit
from robaudit.report.markdown import md_escape, render_markdown

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "sample_report.json"


@pytest.fixture()
def doc() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(FIXTURE.read_text(encoding="utf-8"))
    return data


def _cells(row: str) -> list[str]:
    return re.split(r"(?<!\\)\|", row.strip().strip("|"))


# ----------------------------------------------------------------------------- markdown


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a|b", r"a\|b"),
        ("<script>alert(1)</script>", r"\<script\>alert\(1\)\</script\>"),
        ("two\nlines\r\n", "two lines "),
        ("*bold* _it_ `code` [l](u) ![i](u)", r"\*bold\* \_it\_ \`code\` \[l\]\(u\) \!\[i\]\(u\)"),
        ("@team #12 :smile: &lt; ~~s~~ $x$", r"\@team \#12 \:smile\: \&lt; \~\~s\~\~ \$x\$"),
        ("C:\\models\\m.pt", r"C\:\\models\\m.pt"),
        ("plain text, 0.5 - ok", "plain text, 0.5 - ok"),
        (None, ""),
    ],
)
def test_md_escape(raw: Any, expected: str) -> None:
    assert md_escape(raw) == expected


def test_md_escape_at_line_start_prevents_lists() -> None:
    assert md_escape("- x", start=True) == r"\- x"
    assert md_escape("12. x", start=True) == r"12\. x"
    assert md_escape("0.5", start=True) == "0.5"


def test_summary_md_content(doc: dict[str, Any]) -> None:
    md = render_markdown(doc)
    lines = md.splitlines()
    assert lines[0] == "## robaudit: ❌ FAIL · score 44.2 / 100 · grade D"
    assert f"`{doc['model']['sha256'][:12]}`" in md and "200 samples" in md
    table = [line for line in lines if line.startswith("| ")]
    assert len(table) == 1 + len(doc["threats"])
    header = _cells(table[0])
    assert [c.strip() for c in header][:3] == ["threat", "clean acc. (95% CI)", "robust acc. (95% CI)"]
    for row, t in zip(table[1:], doc["threats"], strict=True):
        cells = [c.strip() for c in _cells(row)]
        assert len(cells) == len(header)
        assert f"{100 * t['robust_accuracy']:.1f}%" in cells[2]
        assert f"{100 * t['ci'][0]:.1f}%–{100 * t['ci'][1]:.1f}%" in cells[2]
        assert f"{100 * t['success_rate']:.1f}%" == cells[3]
        assert f"{100 * doc['clean_accuracy']:.1f}%" in cells[1]
    assert "**Failed gate criteria**" in md
    assert r"- min\_score: score 44.2 is below 50 by 5.8" in md
    assert "Unresolved findings" not in md  # the sample report has none


def test_summary_md_findings_pass_and_variants(doc: dict[str, Any]) -> None:
    doc["gate"] = {"passed": True, "failures": [], "checked": ["min_score"]}
    doc["findings"] = [
        {"id": "RA005", "severity": "warning", "title": "Incomplete | optimization", "detail": "d"},
        {"id": "RA003", "severity": "warning", "title": "Resolved one", "detail": "d", "resolved": True},
    ]
    doc["threats"].append(dict(doc["threats"][0], variant="jpeg|q=75", key="jpeg/x"))
    doc["variants"] = [{"variant": "jpeg|q=75", "clean_accuracy": 0.5, "clean_correct": 100}]
    md = render_markdown(doc)
    assert md.startswith("## robaudit: ✅ PASS")
    assert "Failed gate criteria" not in md
    assert r"- RA005 (warning): Incomplete \| optimization" in md and "RA003" not in md
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    (jpeg,) = [r for r in rows if r"jpeg\|q=75 · white-box" in r]  # several variants: named
    assert "50.0% (43.1%–56.9%)" in jpeg  # the variant's own clean accuracy and Wilson CI
    assert all(len(_cells(r)) == len(_cells(rows[0])) for r in rows)


# ----------------------------------------------------------------------------- junit


def _cases(xml: str) -> dict[str, ET.Element]:
    root = ET.fromstring(xml)
    assert root.tag == "testsuites"
    return {c.get("name", ""): c for c in root.iter("testcase")}


def test_junit_one_case_per_criterion(doc: dict[str, Any]) -> None:
    xml = render_junit(doc)
    cases = _cases(xml)
    assert list(cases) == doc["gate"]["checked"]
    failed = {n for n, c in cases.items() if c.find("failure") is not None}
    assert failed == {"min_score"}
    msg = cases["min_score"].find("failure").get("message")  # type: ignore[union-attr]
    assert msg == "min_score: value 44.21, limit 50.00, short by 5.79: score 44.2 is below 50 by 5.8"
    suite = ET.fromstring(xml).find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("3", "1", "0")


def test_junit_strict_mode_adds_findings(doc: dict[str, Any]) -> None:
    doc["config"]["gate"]["fail_on_findings"] = True
    doc["findings"] = [
        {"id": "RA005", "severity": "warning", "title": "Incomplete", "detail": "loss rising"},
        {"id": "RA003", "severity": "error", "title": "Masked", "detail": "d", "resolved": True,
         "reaction": "margin PGD"},
        {"id": "RA013", "severity": "info", "title": "Reaction", "detail": "d"},
    ]
    cases = _cases(render_junit(doc))
    assert cases["RA005 Incomplete"].find("failure") is not None
    assert cases["RA003 Masked"].find("failure") is None
    assert cases["RA013 Reaction"].find("failure") is None
    no_strict = copy.deepcopy(doc)
    no_strict["config"]["gate"]["fail_on_findings"] = False
    assert not [n for n in _cases(render_junit(no_strict)) if n.startswith("RA")]


def test_junit_escapes_and_drops_what_xml_cannot_hold(doc: dict[str, Any]) -> None:
    evil = "<script>\"&'\x00\x1b\ud800 ok"
    doc["model"]["path"] = evil
    doc["gate"]["failures"][0]["detail"] = evil
    xml = render_junit(doc)
    assert "<script>" not in xml
    root = ET.fromstring(xml)
    props = {p.get("name"): p.get("value") for p in root.iter("property")}
    assert props["model.path"] == "<script>\"&' ok"
    assert props["gate.passed"] == "false"


def test_junit_without_criteria_and_incomplete(doc: dict[str, Any]) -> None:
    doc["gate"] = {"passed": True, "failures": [], "checked": []}
    assert list(_cases(render_junit(doc))) == ["gate"]
    doc["incomplete"] = True
    case = _cases(render_junit(doc))["run completed"]
    assert case.find("error") is not None


# ----------------------------------------------------------------------------- writers and config


def test_default_formats_include_md_and_junit() -> None:
    assert ReportSection().formats == ["json", "html", "csv", "md", "junit"] == list(FORMATS)


def test_write_reports_writes_every_format(doc: dict[str, Any], tmp_path: Path) -> None:
    written = writers.write_reports(doc, tmp_path, list(FORMATS))
    assert {p.name for p in tmp_path.iterdir()} == set(writers.FILE_NAMES.values())
    assert written["md"].read_text(encoding="utf-8") == render_markdown(doc)
    assert written["junit"].read_text(encoding="utf-8") == render_junit(doc)


def test_a_failing_renderer_writes_nothing(
    doc: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "report.json").write_text("old", encoding="utf-8")

    def broken(_: dict[str, Any]) -> str:
        raise RuntimeError("renderer bug")

    real = writers.renderers
    monkeypatch.setattr(writers, "renderers", lambda: {**real(), "junit": broken})
    with pytest.raises(RuntimeError):
        writers.write_reports(doc, tmp_path, list(FORMATS))
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]
    assert (tmp_path / "report.json").read_text(encoding="utf-8") == "old"


def test_unknown_format_is_one_line(doc: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match=r"unknown report format\(s\) 'pdf'; valid: json, html, csv, md, junit"):
        writers.write_reports(doc, tmp_path, ["md", "pdf"])
    assert list(tmp_path.iterdir()) == []
