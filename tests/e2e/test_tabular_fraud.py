"""Fraud audits (issue 17): only true frauds attacked (``data.attack_only_class``), the
positive class's robust recall and pass rate in every report, and their gate.

A small MLP is trained on sample_models/data/fraud.csv (about a second) and scanned at L2 0.5
in scaled units, TabularBench's budget.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from rich.console import Console
from torch import nn

import robaudit
from robaudit.errors import ConfigError
from robaudit.loading.tabular import read_tabular
from robaudit.report.console import threat_table
from tests.helpers import fraud_mlp, one_thread

ROOT = Path(__file__).resolve().parents[2]
CSV = ROOT / "sample_models" / "data" / "fraud.csv"
SCHEMA = ROOT / "sample_models" / "data" / "fraud.yaml"

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    yield from one_thread()


@pytest.fixture(scope="module")
def model() -> nn.Module:
    _, x, y = read_tabular(str(CSV), "is_fraud", str(SCHEMA))
    return fraud_mlp(torch.from_numpy(x), torch.from_numpy(y))


def config(**data: Any) -> dict[str, Any]:
    return {
        "model": {},
        "data": {"source": str(CSV), "label": "is_fraud", "schema": str(SCHEMA), **data},
        "attacks": [{"name": "pgd", "norm": "l2", "eps": [0.25, 0.5], "steps": 10}],
        "gate": {"fail_on_findings": "none"},
    }


def test_only_frauds_are_attacked_and_recall_is_reported(
    model: nn.Module, tmp_path: Path, validate_report: Any
) -> None:
    report = robaudit.scan(model, config=config(attack_only_class=1), samples=240, seed=0)
    r = report.result
    labels = torch.tensor([s["label"] for s in r.samples])
    correct = torch.tensor([s["correct"] for s in r.samples])
    frauds = int((labels == 1).sum())
    caught = int((correct & (labels == 1)).sum())
    assert 0 < caught < int(correct.sum()), "the sample has frauds and caught legitimates"
    for a in r.attacks:  # only the frauds caught clean are attacked
        assert a.attacked == caught
    pc = r.positive_class
    assert pc is not None and pc["class"] == 1 and pc["n"] == frauds and pc["attacked_only"]
    assert pc["clean_recall"] == pytest.approx(caught / frauds)
    broke_any = False
    for t in r.threats:
        broken = {i for i, s in enumerate(r.samples) if s["threats"][t.key] is not None}
        assert all(int(labels[i]) == 1 for i in broken), "a legitimate sample was attacked"
        left = caught - len(broken)
        row = pc["threats"][t.key]
        assert row["robust_recall"] == pytest.approx(left / frauds)
        assert row["pass_rate"] == pytest.approx(1 - left / frauds)
        assert row["evasion_rate"] == pytest.approx(len(broken) / caught)
        # legitimate samples keep their clean verdict in robust accuracy
        assert t.robust == int(correct.sum()) - len(broken)
        broke_any |= bool(broken)
    assert broke_any, "L2 0.5 lets some frauds pass on this small MLP"
    # the score is the attacked class's mean robust recall: the legitimate samples, never
    # attacked, cannot lift it (their clean verdicts dominate robust accuracy)
    recalls = [pc["threats"][t.key]["robust_recall"] for t in r.threats]
    assert report.score == pytest.approx(round(100 * sum(recalls) / len(recalls), 2))
    assert report.score < 100 * min(t.robust_accuracy for t in r.threats)

    written = report.save(tmp_path)
    doc = json.loads(Path(written["json"]).read_text())
    validate_report(doc)
    assert doc["positive_class"]["threats"].keys() == {t.key for t in r.threats}
    html = Path(written["html"]).read_text()
    assert "Recall (class" in html and 'id="positive-note"' in html
    md = Path(written["md"]).read_text()
    assert "| recall \\(class 1\\) | pass rate |" in md and "attack\\_only\\_class" in md
    console = Console(width=200, record=True)
    console.print(threat_table(doc))
    text = console.export_text()
    assert "recall (class 1)" in text and "pass rate" in text
    clean_row = next(line for line in text.splitlines() if "clean" in line)
    assert f"{100 * pc['clean_recall']:.1f}%" in clean_row


def test_all_classes_attacked_without_the_option(model: nn.Module) -> None:
    cfg = config()
    cfg["model"] = {"decision": {"positive_class": 1, "threshold": 0.5}}
    r = robaudit.scan(model, config=cfg, samples=120, seed=0).result
    assert all(a.attacked == r.clean_correct for a in r.attacks)
    pc = r.positive_class  # a decision rule names the positive class: recall is reported
    assert pc is not None and not pc["attacked_only"]


def test_min_robust_recall_gates_the_worst_threat(model: nn.Module) -> None:
    cfg = config(attack_only_class=1)
    cfg["gate"]["min_robust_recall"] = 1.0
    r = robaudit.scan(model, config=cfg, samples=240, seed=0).result
    assert r.positive_class is not None
    worst = min(v["robust_recall"] for v in r.positive_class["threats"].values())
    assert worst < 1.0 and not r.gate.passed
    fail = next(f for f in r.gate.failures if f.criterion == "min_robust_recall")
    assert fail.value == pytest.approx(worst) and "robust recall of class 1" in fail.detail
    cfg["gate"]["min_robust_recall"] = worst
    assert robaudit.scan(model, config=cfg, samples=240, seed=0).result.gate.passed


def test_bad_attack_only_class_and_recall_gate_without_class(model: nn.Module) -> None:
    with pytest.raises(ConfigError, match=r"data\.attack_only_class: 2 is not a class"):
        robaudit.scan(model, config=config(attack_only_class=2), samples=8)
    cfg = config()
    cfg["gate"]["min_robust_recall"] = 0.5
    with pytest.raises(ConfigError, match=r"gate\.min_robust_recall: needs a positive class"):
        robaudit.scan(model, config=cfg, samples=8)


def test_feature_changes_and_before_after_tables(
    model: nn.Module, tmp_path: Path, validate_report: Any
) -> None:
    report = robaudit.scan(
        model, config=config(attack_only_class=1), samples=240, seed=0, save_adversarial=True
    )
    fc = report.result.feature_changes
    assert fc is not None
    assert fc["breaks"] == sum(a.broken for a in report.result.attacks) > 0
    # recount from the saved adversarial examples: the same breaks, the same features
    ex = report.adversarial
    assert ex is not None
    hit = ex.broken.astype(bool)
    moved = abs(ex.x_adv[hit].astype("float64") - ex.x_clean[hit].astype("float64")) > 1e-5
    info, _, _ = read_tabular(str(CSV), "is_fraud", str(SCHEMA))
    counts = dict(zip(info.columns, moved.sum(axis=0).tolist(), strict=True))
    assert {f["feature"]: f["changed"] for f in fc["features"]} == counts
    by = {f["feature"]: f for f in fc["features"]}
    assert by["age"]["changed"] == 0 and by["account_age_days"]["changed"] == 0  # immutable
    assert [f["changed"] for f in fc["features"]] == sorted(counts.values(), reverse=True)
    changed = next(f for f in fc["features"] if f["changed"])
    assert 0 < changed["mean_abs_change"] <= changed["max_abs_change"]
    assert sum(t["breaks"] for t in fc["by_threat"].values()) == fc["breaks"]

    written = report.save(tmp_path)
    doc = json.loads(Path(written["json"]).read_text())
    validate_report(doc)
    e = doc["examples"][0]
    assert [f["feature"] for f in e["features"]] == list(info.columns)
    assert any(f["changed"] for f in e["features"]) and e["clean_png"] is None
    raw = {f["feature"]: f["clean"] for f in e["features"]}
    assert 18 <= raw["age"] <= 90 and float(raw["age"]).is_integer()  # the data's own units
    md = Path(written["md"]).read_text()
    top = doc["feature_changes"]["features"][0]
    assert "verified breaks changed" in md and f"| {top['changed']} |" in md  # summary.md too
    html = Path(written["html"]).read_text()
    gallery = html[html.index('id="gallery"') : html.index('id="findings"')]
    assert "Before / after" in gallery and "<img" not in gallery
    section = html[html.index('id="feature-changes"') : html.index('id="gallery"')]
    assert "<svg" in section and "Share of verified breaks" in section
    assert section.count("<rect") == sum(1 for f in fc["features"] if f["changed"])
