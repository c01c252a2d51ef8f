"""The command line through typer's CliRunner: version, attacks, init, validate, scan."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

import robaudit
from robaudit import norms
from robaudit.attacks.base import param_table, registry
from robaudit.config import PRESET_NAMES
from robaudit.threat import format_eps, parse_eps

# The plain model sits near 60% robust accuracy at linf 0.1 on the tiny config, the robust
# twin above 90%: one gate that separates them.
GATE = {"min_clean_accuracy": 0.9, "min_robust_accuracy": [{"norm": "linf", "eps": 0.1, "value": 0.8}]}
REPORT_FILES = {"report.json", "report.html", "results.csv"}


def _load(out: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((out / "report.json").read_text(encoding="utf-8"))
    return doc


@pytest.fixture(scope="module")
def failed_scan(tmp_path_factory: pytest.TempPathFactory, tiny_config: Any, cli: Any,
                plain_model_path: Path) -> tuple[Any, Path]:
    """The plain model against GATE: one scan shared by the tests that inspect its output."""
    tmp = tmp_path_factory.mktemp("failed_scan")
    cfg = tiny_config(tmp, gate=GATE)
    out = tmp / "out"
    result = cli("scan", plain_model_path, "--config", cfg, "--out", out)
    return result, out


# --------------------------------------------------------------------- version, attacks


def test_version(cli: Any) -> None:
    r = cli("--version")
    assert r.exit_code == 0
    assert r.stdout.strip() == f"robaudit {robaudit.__version__}"


def test_attacks_table_lists_every_attack_and_parameter(cli: Any) -> None:
    r = cli("attacks")
    assert r.exit_code == 0, r.output
    for name in ("fgsm", "pgd", "noise"):
        assert name in r.stdout
    # every parameter of every attack shows with its type and default
    for name, cls in registry().items():
        assert name in r.stdout
        for p in param_table(cls):
            assert f"{p['name']}: {p['type']} = {p['default']}" in r.stdout, (name, p["name"])
    # spot checks independent of param_table
    for text in ("steps: int = 10", "rel_step_size", "restarts", "draws", "Madry", "Goodfellow"):
        assert text in r.stdout


def test_attacks_json(cli: Any) -> None:
    r = cli("attacks", "--json")
    assert r.exit_code == 0, r.output
    everything = json.loads(r.stdout)
    rows = [row for row in everything if row["kind"] == "attack"]
    defenses = {row["name"]: row for row in everything if row["kind"] == "defense"}
    assert {"jpeg", "bit-depth", "median", "ensemble", "gaussian-noise"} <= set(defenses)
    assert defenses["jpeg"]["gradients"] == "BPDA" and defenses["gaussian-noise"]["gradients"] == "EOT"
    by_name = {row["name"]: row for row in rows}
    assert {"fgsm", "pgd", "noise"} <= set(by_name)
    assert set(by_name) == set(registry())
    for row in rows:
        assert set(row["norms"]) <= set(norms.CONFIG_NORMS) and row["norms"]
        assert row["summary"] and row["paper"]
        for p in row["params"]:
            assert {"name", "type", "default", "description"} <= set(p)
    pgd = {p["name"]: p for p in by_name["pgd"]["params"]}
    assert pgd["steps"]["type"] == "int" and pgd["steps"]["default"] == 10
    assert {"step_size", "rel_step_size", "restarts", "loss"} <= set(pgd)
    assert "draws" in {p["name"] for p in by_name["noise"]["params"]}
    assert by_name["ead"]["norms"] == ["l1"]  # the L1 members of issue 16
    assert all("l1" in by_name[n]["norms"] for n in ("fab", "fab-t", "square"))


# --------------------------------------------------------------------- init, validate


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_init_prints_the_preset_and_validate_accepts_it(
    preset: str, cli: Any, repo_root: Path, tmp_path: Path
) -> None:
    r = cli("init", "--preset", preset)
    assert r.exit_code == 0, r.output
    assert r.stdout == (repo_root / "configs" / f"{preset}.yaml").read_text(encoding="utf-8")
    assert "#" in r.stdout  # the starter keeps its comments
    path = tmp_path / f"{preset}.yaml"
    path.write_text(r.stdout, encoding="utf-8")
    v = cli("validate", path)
    assert v.exit_code == 0, v.output
    assert "valid" in v.stdout


def test_init_output_writes_and_refuses_to_overwrite(cli: Any, repo_root: Path, tmp_path: Path) -> None:
    target = tmp_path / "robaudit.yaml"
    r = cli("init", "--preset", "quick", "--output", target)
    assert r.exit_code == 0, r.output
    expected = (repo_root / "configs" / "quick.yaml").read_text(encoding="utf-8")
    assert target.read_text(encoding="utf-8") == expected
    assert r.stdout == ""
    target.write_text("# mine\n", encoding="utf-8")
    again = cli("init", "--preset", "strict", "--output", target)
    assert again.exit_code == 2
    assert "already exists" in again.stderr and str(target) in again.stderr
    assert target.read_text(encoding="utf-8") == "# mine\n"
    assert [p.name for p in tmp_path.iterdir()] == ["robaudit.yaml"]  # no temp file left


def test_init_output_into_missing_folder(cli: Any, tmp_path: Path) -> None:
    target = tmp_path / "missing" / "robaudit.yaml"
    r = cli("init", "--preset", "quick", "--output", target)
    assert r.exit_code == 2, r.output
    assert str(target.parent) in r.stderr and "internal error" not in r.stderr


def test_init_unknown_preset(cli: Any) -> None:
    r = cli("init", "--preset", "quik")
    assert r.exit_code == 2
    assert "unknown preset 'quik'" in r.stderr and "did you mean 'quick'" in r.stderr
    assert all(name in r.stderr for name in PRESET_NAMES)
    assert r.stdout == ""


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_validate_preset_lists_threats(preset: str, cli: Any, repo_root: Path, tmp_path: Path) -> None:
    """A preset leaves its budgets to the profile: validate shows every profile's budgets; the
    config `init --model --data` fits lists exactly the threats a scan of the preset plans."""
    path = repo_root / "configs" / f"{preset}.yaml"
    r = cli("validate", path)
    assert r.exit_code == 0, r.output
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert f"{len(raw['attacks'])} attack entr" in r.stdout
    for name in ("digits", "mnist", "cifar", "imagenet"):
        assert f"  {name}: linf " in r.stdout
    assert "cifar: linf 8/255, 16/255 (headline 8/255) · l2 0.5 (headline 0.5)" in r.stdout
    assert cli("validate", "--quiet", path).stdout == ""
    fitted = tmp_path / "fitted.yaml"
    r = cli("init", "--preset", preset, "--model", repo_root / "sample_models" / "digits_cnn.pt",
            "--data", "builtin:digits", "--output", fitted)
    assert r.exit_code == 0, r.output
    r = cli("validate", fitted)
    assert r.exit_code == 0, r.output
    fitted_raw = yaml.safe_load(fitted.read_text(encoding="utf-8"))
    expected = set()
    for spec in fitted_raw["attacks"]:
        for e in spec["eps"]:
            label = e.strip() if isinstance(e, str) else format_eps(parse_eps(e))
            expected.add(f"white-box {spec.get('norm', 'linf')} {label}")
    for threat in expected:
        assert threat in r.stdout, threat
    assert f"{len(expected)} threat(s)" in r.stdout


# --------------------------------------------------------------------- scan


def test_scan_gate_failure_exits_1_and_names_the_threshold(failed_scan: tuple[Any, Path]) -> None:
    result, out = failed_scan
    assert result.exit_code == 1, result.output
    doc = _load(out)
    assert doc["gate"]["passed"] is False
    (failure,) = doc["gate"]["failures"]
    robust = next(t for t in doc["threats"] if t["key"] == "white-box/linf/0.1")["robust_accuracy"]
    assert failure["value"] == pytest.approx(robust)
    assert failure["limit"] == 0.8
    # the human summary names the threshold, the measured value and the shortfall
    assert "FAIL" in result.stderr
    assert "min_robust_accuracy" in result.stderr
    assert f"below 80.0% by {100 * (0.8 - robust):.1f} points" in result.stderr
    assert f"{robust:.1%}" in result.stderr
    assert "Traceback" not in result.output


def test_summary_prints_the_full_criterion(failed_scan: tuple[Any, Path]) -> None:
    result, out = failed_scan
    (failure,) = _load(out)["gate"]["failures"]
    assert failure["criterion"] == "min_robust_accuracy[white-box linf eps=0.1]"
    assert failure["criterion"] in result.stderr


def test_scan_writes_every_report(failed_scan: tuple[Any, Path], validate_report: Any) -> None:
    _, out = failed_scan
    assert {p.name for p in out.iterdir()} >= REPORT_FILES
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    doc = _load(out)
    validate_report(doc)
    assert doc["model"]["format"] == "torchscript"
    assert doc["data"]["samples"] == 40 and len(doc["samples"]) == 40
    assert [t["key"] for t in doc["threats"]] == ["white-box/linf/0.1", "white-box/linf/0.2"]
    html = (out / "report.html").read_text(encoding="utf-8")
    assert html.lstrip().lower().startswith("<!doctype html")


def test_report_json_agrees_with_results_csv(failed_scan: tuple[Any, Path]) -> None:
    _, out = failed_scan
    doc = _load(out)
    with (out / "results.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(doc["attacks"]) == 4  # 2 attacks x 2 eps
    for row, a in zip(rows, doc["attacks"], strict=True):
        assert (row["attack"], row["threat_key"]) == (a["attack"], a["threat_key"])
        for key in ("attacked", "broken", "queries", "grad_evals", "budget_violations"):
            assert int(row[key]) == a[key], key
        for key in ("eps", "robust_accuracy", "cumulative_robust_accuracy", "success_rate", "median_norm"):
            if a[key] is None:
                assert row[key] == "", key
            else:
                assert math.isclose(float(row[key]), a[key], rel_tol=1e-12), key
    # the headline robust accuracy is the last cumulative number at each threat in the csv
    for t in doc["threats"]:
        cum = [float(r["cumulative_robust_accuracy"]) for r in rows if r["threat_key"] == t["key"]]
        assert cum and min(cum) == pytest.approx(t["robust_accuracy"])
        assert t["ci"][0] <= t["robust_accuracy"] <= t["ci"][1]


def test_scan_robust_model_meets_the_gate_quietly(
    cli: Any, tiny_config: Any, robust_model_path: Path, tmp_path: Path
) -> None:
    cfg = tiny_config(tmp_path, gate=GATE)
    out = tmp_path / "out"
    r = cli("scan", robust_model_path, "--config", cfg, "--out", out, "--quiet")
    assert r.exit_code == 0, r.output
    assert r.output == ""
    doc = _load(out)
    assert doc["gate"]["passed"] is True and doc["gate"]["failures"] == []
    assert len(doc["gate"]["checked"]) == 2


def test_exit_zero_reports_a_failed_gate_but_exits_0(
    cli: Any, tiny_config: Any, plain_model_path: Path, tmp_path: Path
) -> None:
    cfg = tiny_config(tmp_path, gate=GATE, attacks=[{"name": "fgsm", "eps": [0.1]}])
    out = tmp_path / "out"
    r = cli("scan", plain_model_path, "--config", cfg, "--out", out, "--exit-zero")
    assert r.exit_code == 0, r.output
    assert "FAIL" in r.stderr and "min_robust_accuracy" in r.stderr
    assert _load(out)["gate"]["passed"] is False


def test_python_dash_m(repo_root: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "robaudit", "--version"],
        capture_output=True, text=True, cwd=repo_root, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"robaudit {robaudit.__version__}"
