"""`robaudit init` on a table: the tabular starter, fitted to the fraud sample model, scans as
written; the label column is required and named, image presets are refused by name."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "sample_models" / "fraud_mlp.pt"
TABLE = ROOT / "sample_models" / "data" / "fraud_test.csv"
SCHEMA = ROOT / "sample_models" / "data" / "fraud.yaml"


def test_init_fits_the_tabular_starter_and_the_scan_runs_it(cli: Any, tmp_path: Path) -> None:
    target = tmp_path / "fraud.yaml"
    r = cli("init", "--model", MODEL, "--data", TABLE, "--label", "is_fraud", "--schema", SCHEMA,
            "--output", target)
    assert r.exit_code == 0, r.output
    assert "fitted tabular" in r.stderr and "input [13], 2 classes" in r.stderr
    cfg = yaml.safe_load(target.read_text(encoding="utf-8"))
    assert cfg["profile"] == "tabular"
    assert cfg["model"]["input_shape"] == [13] and cfg["model"]["num_classes"] == 2
    assert cfg["data"]["label"] == "is_fraud" and cfg["data"]["schema"] == str(SCHEMA)
    cfg["data"]["samples"] = 60  # seconds, not a minute
    for entry in cfg["attacks"]:
        if "steps" in entry:
            entry["steps"] = 10
        if "queries" in entry:
            entry["queries"] = 100
    target.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    out = tmp_path / "out"
    scan = cli("scan", MODEL, "--config", target, "--out", out, "--quiet")
    assert scan.exit_code in (0, 1), scan.output
    doc = json.loads((out / "report.json").read_text(encoding="utf-8"))
    keys = {t["key"] for t in doc["threats"]}
    assert keys == {"white-box/l2/0.5", "white-box/linf/0.05", "white-box/linf/0.1"}
    assert all(a["constraint_violations"] == 0 for a in doc["attacks"])


def test_init_without_a_schema_writes_the_inferred_one_inline(cli: Any, tmp_path: Path) -> None:
    r = cli("init", "--model", MODEL, "--data", TABLE, "--label", "is_fraud")
    assert r.exit_code == 0, r.output
    cfg = yaml.safe_load(r.stdout)
    schema = cfg["data"]["schema"]
    assert [f["name"] for f in schema["features"]][:3] == ["age", "account_age_days", "amount"]
    assert "CHECK every entry" in r.stdout  # the user is told to review it
    v = tmp_path / "c.yaml"
    v.write_text(r.stdout, encoding="utf-8")
    assert cli("validate", v).exit_code == 0


def test_init_on_a_table_needs_the_label_and_a_tabular_starter(cli: Any) -> None:
    r = cli("init", "--model", MODEL, "--data", TABLE)
    assert r.exit_code == 2 and "--label" in r.stderr and "is_fraud" in r.stderr
    assert "Traceback" not in r.output
    r = cli("init", "--model", MODEL, "--data", TABLE, "--label", "is_fraud", "--preset", "strict")
    assert r.exit_code == 2 and "--preset tabular" in r.stderr
    r = cli("init", "--model", MODEL, "--data", TABLE, "--label", "nope")
    assert r.exit_code == 2 and "'nope' is not a column" in r.stderr
    r = cli("init", "--label", "is_fraud")
    assert r.exit_code == 2 and "CSV or Parquet" in r.stderr
