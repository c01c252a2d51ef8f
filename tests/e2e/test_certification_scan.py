"""Randomized-smoothing certification inside a scan: the report's section, the consistency
check against an adaptive attack, and the gate's certified-accuracy threshold."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import robaudit

PLAIN = Path(__file__).resolve().parents[2] / "sample_models" / "digits_cnn.pt"


def _cfg(**gate: Any) -> dict[str, Any]:
    return {
        "model": {"input_shape": [1, 8, 8], "num_classes": 10},
        "data": {"samples": 40},
        "attacks": [{"name": "pgd", "norm": "l2", "eps": [0.5], "steps": 5}],
        "certify": {
            "sigma": 0.25, "n0": 50, "n": 400, "radii": [0, 0.25, 0.5],
            "attack_steps": 8, "attack_draws": 8, "attack_n": 200,
        },
        "gate": gate,
        "report": {"examples": 0},
        "integrity": {"sanity": False},
    }


@pytest.fixture(scope="module")
def certified() -> robaudit.Report:
    return robaudit.scan(PLAIN, config=_cfg(min_certified_accuracy=[{"radius": 0.25, "value": 0.99}]))


def test_certificate_is_monotone_and_never_above_the_attack(certified: robaudit.Report, validate_report: Any) -> None:
    c = certified.result.certification
    assert c is not None
    accs = [p["accuracy"] for p in c["curve"]]
    assert accs == sorted(accs, reverse=True) and accs[0] > 0.5
    assert [e["radius"] for e in c["empirical"]] == [0.25, 0.5]
    for e in c["empirical"]:
        assert e["consistent"] and e["robust"] >= e["certified"]
    assert "RA017" not in {f.id for f in certified.findings}
    validate_report(certified.to_dict())


def test_gate_checks_certified_accuracy(certified: robaudit.Report) -> None:
    (f,) = certified.result.gate.failures
    assert f.criterion == "min_certified_accuracy[l2 radius=0.25]" and f.limit == 0.99


def test_threshold_at_an_uncertified_radius_is_a_config_error() -> None:
    with pytest.raises(robaudit.errors.ConfigError, match=r"min_certified_accuracy\[0\]\.radius: 0\.3 is not among certify\.radii"):
        robaudit.scan(PLAIN, config=_cfg(min_certified_accuracy=[{"radius": 0.3, "value": 0.5}]))
