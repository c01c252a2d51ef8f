"""Score, grade, gate and confidence intervals."""

from __future__ import annotations

import pytest

from robaudit.config import GateSection, GateThreshold
from robaudit.results import ThreatRow, wilson_interval
from robaudit.scoring import evaluate_gate, grade, score


def _row(eps: float, acc: float) -> ThreatRow:
    return ThreatRow("model", "white-box", "linf", eps, f"{eps:g}", f"white-box/linf/{eps:g}", 100,
                     int(acc * 100), acc, 0.0, 1.0, 0.0, ("pgd",), 0)


def test_wilson_interval_contains_the_estimate_and_shrinks_with_n() -> None:
    lo, hi = wilson_interval(50, 100)
    assert lo < 0.5 < hi
    lo2, hi2 = wilson_interval(500, 1000)
    assert hi2 - lo2 < hi - lo
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == pytest.approx(1.0)


def test_score_and_grade() -> None:
    assert score((_row(0.1, 0.9), _row(0.2, 0.5)), 0.99) == 70.0
    assert [grade(v) for v in (95, 70, 55, 40, 10)] == ["A", "B", "C", "D", "F"]


def test_gate_reports_each_failure_with_its_margin() -> None:
    gate = GateSection(
        min_clean_accuracy=0.95,
        min_robust_accuracy=[GateThreshold(norm="linf", eps=0.1, value=0.8)],
        min_score=60,
    )
    res = evaluate_gate(gate, 0.9, (_row(0.1, 0.7),), 70.0)
    assert not res.passed
    crit = {f.criterion: f for f in res.failures}
    assert set(crit) == {"min_clean_accuracy", "min_robust_accuracy[white-box linf eps=0.1]"}
    assert "by 10.0 points" in crit["min_robust_accuracy[white-box linf eps=0.1]"].detail
    assert "by 5.0 points" in crit["min_clean_accuracy"].detail
    assert evaluate_gate(gate, 0.96, (_row(0.1, 0.85),), 70.0).passed


def test_gate_names_a_threshold_by_its_budget_as_written() -> None:
    from robaudit.config import config_from_dict

    gate = config_from_dict({
        "model": {"input_shape": [1, 8, 8], "num_classes": 10},
        "attacks": [{"name": "fgsm", "eps": ["8/255"]}],
        "gate": {"min_robust_accuracy": [{"norm": "linf", "eps": "8/255", "value": 0.9}]},
    }).gate
    res = evaluate_gate(gate, 1.0, (_row(8 / 255, 0.5),), 50.0)
    assert [f.criterion for f in res.failures] == ["min_robust_accuracy[white-box linf eps=8/255]"]
