"""Grades only for audits that earned them: complete runs with an adversarial search that
converged at every threat."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import robaudit
from robaudit.report.junit import render_junit
from robaudit.report.markdown import render_markdown

BASE: dict[str, Any] = {
    "model": {"input_shape": [1, 8, 8], "num_classes": 10},
    "data": {"samples": 30},
    "report": {"examples": 0},
    "integrity": {"sanity": False},
}


def _scan(model: Path, attacks: list[dict[str, Any]], **kw: Any) -> robaudit.Report:
    gate = kw.pop("gate", {})
    return robaudit.scan(str(model), config={**BASE, "attacks": attacks, "gate": gate}, **kw)


def test_noise_alone_is_a_weak_evaluation_without_a_grade(plain_model_path: Path) -> None:
    r = _scan(plain_model_path, [{"name": "noise", "eps": [0.1]}], access="decision")
    ev = r.result.meta.evaluation
    assert r.grade is None and ev["status"] == "weak"
    assert ev["reasons"] == ["decision/linf/0.1: no adversarial search ran (noise only)"]
    assert ev["score_covers"] == ["decision/linf/0.1"]
    assert not r.passed
    failure = next(f for f in r.gate.failures if f.criterion == "adversarial search at every threat")
    assert "noise only" in failure.detail and "gate.allow_weak" in failure.detail
    doc = r.to_dict()
    assert "no grade \\(weak evaluation\\)" in render_markdown(doc)  # Markdown-escaped
    assert "adversarial search at every threat" in render_junit(doc)
    allowed = _scan(plain_model_path, [{"name": "noise", "eps": [0.1]}], access="decision",
                    gate={"allow_weak": True})
    assert allowed.passed and allowed.grade is None  # accepted, but still no grade


def test_a_decision_attack_still_improving_at_its_budget_is_weak(plain_model_path: Path) -> None:
    r = _scan(plain_model_path, [{"name": "hopskipjump", "norm": "l2", "eps": [1.0], "queries": 200}])
    ev = r.result.meta.evaluation
    assert ev["status"] == "weak" and "median distance was still falling" in ev["reasons"][0]
    assert r.grade is None and not r.passed


def test_a_white_box_search_at_the_threat_earns_the_grade(plain_model_path: Path) -> None:
    r = _scan(plain_model_path, [
        {"name": "noise", "eps": [0.1]},
        {"name": "pgd", "eps": [0.1], "steps": 10},
    ])
    ev = r.result.meta.evaluation
    assert ev == {"status": "complete", "reasons": [], "score_covers": ["white-box/linf/0.1"]}
    assert r.grade in ("A", "B", "C", "D", "F")


def test_a_partial_run_gets_no_grade(plain_model_path: Path) -> None:
    r = _scan(plain_model_path, [{"name": "pgd", "eps": [0.1], "steps": 10}], time_budget=1e-6,
              allow_partial=True)
    ev = r.result.meta.evaluation
    assert r.incomplete is not None and ev["status"] == "incomplete" and r.grade is None
    assert ev["reasons"][0].startswith("the run stopped early")
