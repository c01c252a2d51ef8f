"""End to end at an L1 threat: ``robaudit scan`` with L1 entries (explicit budgets and the
profile's), an L1 gate threshold, every output format, the report valid against the schema."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

L1_CONFIG = {
    "attacks": [
        {"name": "apgd", "norm": "l1", "eps": [1, 2], "steps": 20},
        {"name": "apgd-t", "norm": "l1", "steps": 10, "targets": 2},  # the digits profile's
    ],
    "gate": {
        "fail_on_findings": "none",
        "min_robust_accuracy": [
            {"norm": "l1", "eps": 1, "value": 0.05},
            {"norm": "l1", "value": 0.0},
        ],
    },
    "report": {"examples": 2, "formats": ["json", "html", "csv", "md", "junit"]},
}


def test_scan_with_l1_threats(
    tmp_path: Path, tiny_config: Any, cli: Any, robust_model_path: Path, validate_report: Any
) -> None:
    cfg = tiny_config(tmp_path, **L1_CONFIG)
    out = tmp_path / "out"
    result = cli("scan", robust_model_path, "--config", cfg, "--out", out)
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "report.json").read_text(encoding="utf-8"))
    validate_report(doc)
    threats = {t["key"]: t for t in doc["threats"] if t["norm"] == "l1"}
    # explicit budgets and the digits profile's L1 budgets (3.5 and 7)
    assert {t["eps"] for t in threats.values()} == {1.0, 2.0, 3.5, 7.0}
    ra = {t["eps"]: t["robust_accuracy"] for t in threats.values()}
    assert ra[1.0] >= ra[2.0] >= ra[3.5] >= ra[7.0]
    assert ra[1.0] < doc["clean_accuracy"]  # the attack did break something
    for s in doc["samples"]:
        for key, hit in s["threats"].items():
            if key in threats and hit is not None:
                assert hit["norm"] <= threats[key]["eps"] + 1e-5
    for e in doc.get("examples", []):
        if e["threat_key"] in threats:
            assert e["l1"] <= threats[e["threat_key"]]["eps"] + 1e-5
    rows = list(csv.DictReader((out / "results.csv").open(encoding="utf-8")))
    assert any(r.get("norm") == "l1" for r in rows)
    assert "l1" in (out / "report.html").read_text(encoding="utf-8")
    assert "l1" in (out / "summary.md").read_text(encoding="utf-8")
