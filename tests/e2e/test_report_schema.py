"""End to end: scan the committed sample models through the CLI and check what lands on disk
against the published JSON Schema, the HTML report and each other."""

from __future__ import annotations

import html as html_lib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

GATE = {"min_clean_accuracy": 0.9, "min_robust_accuracy": [{"norm": "linf", "eps": 0.1, "value": 0.8}]}
EXPECTED = {"plain": (1, "FAIL"), "robust": (0, "PASS")}


@pytest.fixture(scope="module")
def scans(
    tmp_path_factory: pytest.TempPathFactory, tiny_config: Any, cli: Any,
    plain_model_path: Path, robust_model_path: Path,
) -> dict[str, tuple[int, Path]]:
    """Both sample models scanned with one tiny config and one gate: name -> (exit code, out)."""
    tmp = tmp_path_factory.mktemp("e2e")
    cfg = tiny_config(tmp, gate=GATE)
    done = {}
    for name, model in (("plain", plain_model_path), ("robust", robust_model_path)):
        out = tmp / name
        result = cli("scan", model, "--config", cfg, "--out", out)
        assert "Traceback" not in result.output, result.output
        done[name] = (result.exit_code, out)
    return done


def _doc(out: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((out / "report.json").read_text(encoding="utf-8"))
    return doc


def _check_consistency(doc: dict[str, Any]) -> None:
    """Numbers in one report that must agree whatever the model."""
    n = doc["data"]["samples"]
    samples = doc["samples"]
    assert len(samples) == n and [s["index"] for s in samples] == list(range(n))
    correct = sum(s["correct"] for s in samples)
    assert correct == doc["clean_correct"]
    assert doc["clean_accuracy"] == pytest.approx(correct / n)
    for s in samples:
        assert s["correct"] == (s["label"] == s["clean_pred"])
    keys = [t["key"] for t in doc["threats"]]
    assert len(set(keys)) == len(keys)
    for t in doc["threats"]:
        unbroken = sum(1 for s in samples if s["correct"] and s["threats"][t["key"]] is None)
        assert t["robust_accuracy"] == pytest.approx(unbroken / n), t["key"]
        assert t["robust_accuracy"] <= doc["clean_accuracy"]
        assert t["ci"][0] <= t["robust_accuracy"] <= t["ci"][1]
        for s in samples:
            hit = s["threats"][t["key"]]
            if hit is not None:
                assert s["correct"] and hit["adv_pred"] != s["label"]
                assert hit["eps_found"] <= t["eps"] + 1e-12
                assert hit["norm"] <= hit["eps_found"] + 1e-5
                assert hit["attack"] in t["attacks"]
    # balls are nested: a larger eps never leaves more robust accuracy at the same norm
    for a in doc["threats"]:
        for b in doc["threats"]:
            if (a["access"], a["norm"]) == (b["access"], b["norm"]) and a["eps"] < b["eps"]:
                assert b["robust_accuracy"] <= a["robust_accuracy"]
    assert doc["score"] == pytest.approx(
        100 * sum(t["robust_accuracy"] for t in doc["threats"]) / len(doc["threats"]), abs=0.01
    )


@pytest.mark.parametrize("name", ["plain", "robust"])
def test_sample_model_report_validates(
    name: str, scans: dict[str, tuple[int, Path]], validate_report: Any
) -> None:
    code, out = scans[name]
    assert code == EXPECTED[name][0]
    doc = _doc(out)
    validate_report(doc)
    _check_consistency(doc)
    assert doc["incomplete"] is False
    assert doc["gate"]["passed"] is (code == 0)
    assert doc["meta"]["device"] == "cpu" and doc["meta"]["seed"] == 0


@pytest.mark.parametrize("name", ["plain", "robust"])
def test_html_shows_verdict_and_headline(name: str, scans: dict[str, tuple[int, Path]]) -> None:
    _, out = scans[name]
    doc = _doc(out)
    page = (out / "report.html").read_text(encoding="utf-8")
    verdict = EXPECTED[name][1]
    other = "PASS" if verdict == "FAIL" else "FAIL"
    assert f'<span class="big">{verdict}</span>' in page
    assert f'<span class="big">{other}</span>' not in page
    start = page.index('<table class="headline">')
    table = page[start : page.index("</table>", start)]
    assert f"{100 * doc['clean_accuracy']:.1f}%" in table
    rows = re.findall(r"<tr class=\"sev-[\w-]+\">(.*?)</tr>", table, re.S)
    assert len(rows) == len(doc["threats"])
    for row, t in zip(rows, doc["threats"], strict=True):
        cells = [html_lib.unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
        assert cells[:3] == [t["access"], t["norm"], t["eps_label"]]
        assert f"{100 * t['robust_accuracy']:.1f}%" in cells
    for f in doc["gate"]["failures"]:
        assert html_lib.escape(f["detail"]) in page or f["detail"] in page
    # self-contained: no external scripts, styles or images
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=\"https?://", page)


def test_robust_model_beats_plain_model(scans: dict[str, tuple[int, Path]]) -> None:
    plain, robust = _doc(scans["plain"][1]), _doc(scans["robust"][1])
    for tp, tr in zip(plain["threats"], robust["threats"], strict=True):
        assert tp["key"] == tr["key"]
        assert tr["robust_accuracy"] > tp["robust_accuracy"] + 0.1, tp["key"]
    assert plain["model"]["sha256"] != robust["model"]["sha256"]


def test_quick_preset_demo_run(
    repo_root: Path, tmp_path: Path, cli: Any, validate_report: Any,
    plain_model_path: Path, robust_model_path: Path,
) -> None:
    """What `make demo` does, with 60 samples: the plain model fails the quick gate (exit 1,
    through a real `python -m robaudit` process), the robust twin passes it (exit 0)."""
    preset = repo_root / "configs" / "quick.yaml"
    plain_out = tmp_path / "plain"
    proc = subprocess.run(
        [sys.executable, "-m", "robaudit", "scan", str(plain_model_path), "--config", str(preset),
         "--out", str(plain_out), "--samples", "60"],
        capture_output=True, text=True, cwd=repo_root, timeout=300, check=False,
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "gate FAIL" in proc.stderr
    robust_out = tmp_path / "robust"
    result = cli("scan", robust_model_path, "--config", preset, "--out", robust_out, "--samples", "60")
    assert result.exit_code == 0, result.output
    for out in (plain_out, robust_out):
        doc = _doc(out)
        validate_report(doc)
        _check_consistency(doc)
        assert doc["data"]["samples"] == 60 and doc["data"]["requested_samples"] == 60
        assert {a["attack"] for a in doc["attacks"]} == {"noise", "fgsm", "pgd"}
        assert doc["meta"]["cascade"] is True
        assert doc["meta"]["config_path"] == str(preset)


def _set(path: str, value: Any) -> Any:
    def mutate(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if value is _DELETE:
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return mutate


_DELETE = object()
BROKEN = {
    "schema_version_2": _set("schema_version", "2.0"),
    "incomplete_not_bool": _set("incomplete", "no"),
    "no_model": _set("model", _DELETE),
    "short_sha256": _set("model.sha256", "abc123"),
    "unknown_format": _set("model.format", "pkl"),
    "no_data_source": _set("data.source", _DELETE),
    "clean_accuracy_null": _set("clean_accuracy", None),
    "robust_accuracy_above_1": _set("threats.0.robust_accuracy", 1.5),
    "unknown_access": _set("threats.0.access", "black-box"),
    "unknown_norm": _set("threats.0.norm", "l3"),
    "negative_eps": _set("threats.0.eps", -0.1),
    "ci_one_number": _set("threats.0.ci", [0.1]),
    "attack_accuracy_string": _set("attacks.0.robust_accuracy", "0.5"),
    "negative_queries": _set("attacks.0.queries", -1),
    "float_grad_evals": _set("attacks.0.grad_evals", 1.5),
    "negative_seconds": _set("attacks.0.seconds", -0.1),
    "sample_break_missing_keys": _set("samples.0.threats", {"white-box/linf/0.1": {"attack": "pgd"}}),
    "sample_correct_not_bool": _set("samples.0.correct", 1),
    "score_above_100": _set("score", 100.5),
    "grade_e": _set("grade", "E"),
    "passed_with_failures": _set("gate.passed", True),
    "failure_without_limit": _set("gate.failures.0.limit", _DELETE),
    "finding_bad_id": _set("findings", [{"id": "RA1", "severity": "info", "title": "t", "detail": ""}]),
    "finding_bad_severity": _set("findings", [{"id": "RA001", "severity": "fatal", "title": "t", "detail": ""}]),
    "meta_without_seed": _set("meta.seed", _DELETE),
    "meta_bad_config_hash": _set("meta.config_sha256", "not-a-hash"),
    "example_not_png": _set("examples.0.adv_png", "R0lGODlhAQABAAAAACw="),
}


@pytest.mark.parametrize("mutation", BROKEN.values(), ids=list(BROKEN))
def test_schema_rejects_broken_documents(
    mutation: Any, scans: dict[str, tuple[int, Path]], report_schema: dict[str, Any]
) -> None:
    import jsonschema

    doc = _doc(scans["plain"][1])
    validator = jsonschema.Draft202012Validator(report_schema)
    assert not list(validator.iter_errors(doc))
    mutation(doc)
    assert list(validator.iter_errors(doc)), "the schema accepted a broken document"


def test_schema_allows_added_fields(scans: dict[str, tuple[int, Path]], validate_report: Any) -> None:
    doc = _doc(scans["plain"][1])
    doc["new_section"] = {"anything": [1, 2]}
    doc["model"]["new_field"] = "x"
    doc["threats"][0]["new_metric"] = 0.5
    doc["schema_version"] = "1.7"
    validate_report(doc)


def test_committed_sample_report_validates(repo_root: Path, validate_report: Any) -> None:
    path = repo_root / "tests" / "data" / "sample_report.json"
    validate_report(json.loads(path.read_text(encoding="utf-8")))
