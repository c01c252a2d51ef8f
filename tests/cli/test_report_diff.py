"""`robaudit report` (re-render a saved report.json), `robaudit diff` and `scan --baseline`, on
real scans of the plain and the PGD-trained sample models with the same tiny config."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

import robaudit
from robaudit.errors import UserInputError

FILES = {"report.json", "report.html", "results.csv", "summary.md", "junit.xml"}


@pytest.fixture(scope="module")
def runs(
    tmp_path_factory: pytest.TempPathFactory, tiny_config: Any, cli: Any,
    plain_model_path: Path, robust_model_path: Path,
) -> dict[str, Any]:
    """robust: a plain scan; plain: the plain model with --baseline robust (a drop);
    robust_vs_plain: the robust model with --baseline plain (a rise). No other gate criteria."""
    tmp = tmp_path_factory.mktemp("baseline")
    cfg = tiny_config(tmp)
    out: dict[str, Any] = {"tmp": tmp, "config": cfg}
    r = cli("scan", robust_model_path, "--config", cfg, "--out", tmp / "robust")
    assert r.exit_code == 0, r.output
    r = cli("scan", plain_model_path, "--config", cfg, "--out", tmp / "plain",
            "--baseline", tmp / "robust" / "report.json")
    out["plain_result"] = r
    r2 = cli("scan", robust_model_path, "--config", cfg, "--out", tmp / "robust_vs_plain",
             "--baseline", tmp / "plain", "--max-drop", "0")
    out["robust_vs_plain_result"] = r2
    for name in ("robust", "plain", "robust_vs_plain"):
        out[name] = tmp / name
    return out


def _doc(folder: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    return doc


def _one_line_error(result: Any, *expect: str) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("robaudit: error: "), lines[0]
    for text in expect:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"
    return lines[0]


# ----------------------------------------------------------------------------- scan --baseline


def test_scan_with_baseline_fails_on_a_drop(runs: dict[str, Any], validate_report: Any) -> None:
    result = runs["plain_result"]
    assert result.exit_code == 1, result.output
    doc = _doc(runs["plain"])
    validate_report(doc)
    assert {p.name for p in runs["plain"].iterdir()} == FILES
    base = doc["meta"]["baseline"]
    assert base["path"] == str(runs["robust"] / "report.json")
    assert base["paired"] is True and base["passed"] is False
    assert base["max_drop_points"] == 1.0
    gate = doc["gate"]
    assert gate["passed"] is False
    criteria = [f"baseline[model {t['access']} {t['norm']} eps={t['eps_label']}]" for t in doc["threats"]]
    assert gate["checked"] == criteria
    failed = {f["criterion"]: f for f in gate["failures"]}
    assert set(failed) == set(criteria)  # the plain model lost at every threat
    for c in base["robust"]:
        f = failed[f"baseline[model {c['access']} {c['norm']} eps={c['eps_label']}]"]
        assert f["value"] == c["new"] and f["limit"] == pytest.approx(c["base"] - 0.01)
        assert c["method"] == "mcnemar" and c["lost"] > 0 and c["gained"] == 0
        assert c["significant"] is True  # far beyond 40 samples' noise
        assert f"dropped {100 * (c['base'] - c['new']):.1f} points" in f["detail"]
        assert f["criterion"] in result.stderr  # the terminal lists each failure
    assert "baseline " in result.stderr and "paired, McNemar" in result.stderr
    # every other report shows the baseline failures
    page = (runs["plain"] / "report.html").read_text(encoding="utf-8")
    assert '<span class="big">FAIL</span>' in page and 'class="baseline"' in page
    assert "paired on the same samples" in page
    md = (runs["plain"] / "summary.md").read_text(encoding="utf-8")
    assert md.startswith("## robaudit: ❌ FAIL") and "**Baseline**" in md and "❌ (" in md
    cases = {c.get("name"): c for c in ET.fromstring(
        (runs["plain"] / "junit.xml").read_text(encoding="utf-8")).iter("testcase")}
    assert set(cases) == set(criteria)
    assert all(c.find("failure") is not None for c in cases.values())


def test_scan_with_baseline_passes_on_a_rise(runs: dict[str, Any], validate_report: Any) -> None:
    result = runs["robust_vs_plain_result"]
    assert result.exit_code == 0, result.output
    doc = _doc(runs["robust_vs_plain"])
    validate_report(doc)
    assert doc["gate"]["passed"] is True and doc["gate"]["failures"] == []
    base = doc["meta"]["baseline"]
    assert base["max_drop_points"] == 0 and base["passed"] is True
    assert all(c["delta"] > 0 and not c["exceeds"] for c in base["robust"])
    assert "no drop above the limit" in (runs["robust_vs_plain"] / "report.html").read_text(encoding="utf-8")


def test_scan_with_a_bad_baseline_is_bad_input(
    runs: dict[str, Any], cli: Any, plain_model_path: Path
) -> None:
    out = runs["tmp"] / "never"
    r = cli("scan", plain_model_path, "--config", runs["config"], "--out", out,
            "--baseline", runs["tmp"] / "missing.json")
    _one_line_error(r, "missing.json", "report file not found")
    r = cli("scan", plain_model_path, "--config", runs["config"], "--out", out,
            "--baseline", runs["robust"] / "report.json", "--max-drop", "-2")
    _one_line_error(r, "--max-drop", "percentage points")
    assert not out.exists()


def test_api_scan_baseline(runs: dict[str, Any], plain_model_path: Path) -> None:
    base = _doc(runs["robust"])
    report = robaudit.scan(plain_model_path, config=runs["config"], baseline=base, max_drop=100)
    assert report.passed  # every drop is below 100 points
    assert report.to_dict()["meta"]["baseline"]["path"] == "<dict baseline>"
    with pytest.raises(UserInputError, match="max_drop"):
        robaudit.scan(plain_model_path, config=runs["config"], baseline=base, max_drop=-1)


# ----------------------------------------------------------------------------- robaudit report


def test_report_rerenders_what_the_scan_wrote(runs: dict[str, Any], cli: Any) -> None:
    for name in ("robust", "plain"):  # with and without a baseline in the verdict
        src = runs[name]
        out = runs["tmp"] / f"rerendered_{name}"
        r = cli("report", src / "report.json", "--format", "html,md,junit,csv,json", "--out", out)
        assert r.exit_code == 0, r.output
        assert {p.name for p in out.iterdir()} == FILES
        for f in FILES:
            assert (out / f).read_bytes() == (src / f).read_bytes(), f"{name}: {f} differs"


def test_report_defaults_to_the_reports_folder(runs: dict[str, Any], cli: Any) -> None:
    folder = runs["tmp"] / "copy"
    shutil.copytree(runs["plain"], folder)
    for f in ("report.html", "summary.md", "junit.xml", "results.csv"):
        (folder / f).unlink()
    r = cli("report", folder / "report.json", "--quiet")
    assert r.exit_code == 0, r.output
    assert r.stderr == ""
    for f in FILES:
        assert (folder / f).read_bytes() == (runs["plain"] / f).read_bytes(), f


def _bad_json(tmp: Path, name: str, text: str) -> Path:
    p = tmp / name
    p.write_text(text, encoding="utf-8")
    return p


def test_report_bad_inputs(runs: dict[str, Any], cli: Any) -> None:
    tmp = runs["tmp"]
    good = json.loads((runs["robust"] / "report.json").read_text(encoding="utf-8"))
    v2 = _bad_json(tmp, "v2.json", json.dumps({**good, "schema_version": "2.0"}))
    no_threats = _bad_json(tmp, "nothreats.json", json.dumps({k: v for k, v in good.items() if k != "threats"}))
    cases = [
        ((tmp / "nope.json",), ("nope.json", "not found")),
        ((runs["config"],), ("not a robaudit report", "invalid JSON")),
        ((_bad_json(tmp, "list.json", "[1, 2]"),), ("not a robaudit report",)),
        ((_bad_json(tmp, "cut.json", '{"schema_version": "1.0", '),), ("invalid JSON",)),
        ((v2,), ("v2.json", "'2.0'", "1.x")),
        ((no_threats,), ("'threats'", "missing")),
        ((runs["robust"] / "report.json", "--format", "html,pdf"), ("'pdf'", "json, html, csv, md, junit")),
        ((runs["robust"] / "report.json", "--format", ","), ("--format",)),
    ]
    for args, expect in cases:
        out = tmp / "bad_out"
        r = cli("report", *args, "--out", out)
        _one_line_error(r, *expect)
        assert not out.exists() or not list(out.iterdir())


# ----------------------------------------------------------------------------- robaudit diff


def test_diff_robust_to_plain_is_a_drop(runs: dict[str, Any], cli: Any) -> None:
    r = cli("diff", runs["robust"] / "report.json", runs["plain"] / "report.json", "--format", "json")
    assert r.exit_code == 1, r.output
    d = json.loads(r.stdout)
    assert d["paired"] is True and d["passed"] is False
    assert d["robust"] and all(c["exceeds"] and c["lost"] > 0 for c in d["robust"])
    # the same comparison the scan's gate made
    assert d["robust"] == _doc(runs["plain"])["meta"]["baseline"]["robust"]
    table = cli("diff", runs["robust"], runs["plain"])
    assert table.exit_code == 1
    assert "FAIL: robust accuracy dropped by more than 1 point" in table.stdout
    assert "McNemar" in table.stdout
    assert cli("diff", runs["robust"], runs["plain"], "--max-drop", "100").exit_code == 0


def test_diff_plain_to_robust_passes(runs: dict[str, Any], cli: Any) -> None:
    r = cli("diff", runs["plain"] / "report.json", runs["robust"] / "report.json", "--format", "md")
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("## robaudit diff: ✅ no robust accuracy dropped by more than 1 point")
    assert "McNemar" in r.stdout


def test_diff_report_against_itself(runs: dict[str, Any], cli: Any) -> None:
    path = runs["plain"] / "report.json"
    r = cli("diff", path, path, "--format", "json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["paired"] is True and d["passed"] is True
    for c in d["clean"] + d["robust"]:
        assert c["method"] == "mcnemar" and c["p_value"] == 1.0
        assert (c["lost"], c["gained"], c["delta"], c["significant"]) == (0, 0, 0.0, False)
    table = cli("diff", path, path)
    assert table.exit_code == 0 and "PASS" in table.stdout and "within noise" in table.stdout


def test_diff_unpaired_and_one_sided_threats(runs: dict[str, Any], cli: Any) -> None:
    doc = _doc(runs["robust"])
    for s in doc["samples"]:
        s["source_index"] += 5000  # other samples of the same data
    gone = doc["threats"].pop()
    other = runs["tmp"] / "other.json"
    other.write_text(json.dumps(doc), encoding="utf-8")
    r = cli("diff", runs["robust"] / "report.json", other, "--format", "json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["paired"] is False and "different samples" in d["pairing"]
    assert all(c["method"] == "newcombe" and c["p_value"] is None for c in d["robust"])
    assert d["only_in_base"] == [f"model {gone['access']} {gone['norm']} eps={gone['eps_label']}"]
    assert len(d["robust"]) == len(doc["threats"])


def test_diff_bad_inputs(runs: dict[str, Any], cli: Any) -> None:
    good = runs["robust"] / "report.json"
    _one_line_error(cli("diff", good, runs["tmp"] / "nope.json"), "nope.json", "not found")
    _one_line_error(cli("diff", runs["config"], good), "not a robaudit report")
    _one_line_error(cli("diff", good, good, "--format", "xml"), "'xml'", "table, json, md")
    _one_line_error(cli("diff", good, good, "--max-drop", "-1"), "--max-drop", ">= 0")
    v2 = _bad_json(runs["tmp"], "diff_v2.json", json.dumps({**_doc(runs["robust"]), "schema_version": "2.0"}))
    _one_line_error(cli("diff", good, v2), "diff_v2.json", "'2.0'")
