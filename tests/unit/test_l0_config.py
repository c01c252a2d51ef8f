"""L0 budgets in the config: counts or shares of the pixels ("5%"), counted once the input's
shape is known (given, or taken from the data), ``l0_unit``, and one-line errors."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from robaudit.config import config_from_dict
from robaudit.errors import ConfigError
from robaudit.fitting import fit_config

BASE: dict[str, Any] = {
    "version": 1,
    "model": {"num_classes": 10, "arch": "robaudit.models.digits:DigitsCNN"},
    "attacks": [{"name": "pgd-l0", "norm": "l0", "eps": [1, 5, "1%", "5%"]}],
}


def _cfg(shape: list[int] | None = None, **entry: Any) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    if shape is not None:
        doc["model"]["input_shape"] = shape
    doc["attacks"][0].update(entry)
    return doc


def test_shares_count_pixels_floored_at_least_one() -> None:
    cfg = config_from_dict(_cfg([1, 8, 8]))  # 64 pixels: 1% -> 0.64 -> 1, 5% -> 3.2 -> 3
    assert cfg.attacks[0].eps == [1.0, 5.0, 1.0, 3.0]
    keys = [t.key for t in cfg.attacks[0].threats()]
    assert keys == ["white-box/l0/1", "white-box/l0/5", "white-box/l0/1%", "white-box/l0/5%"]
    big = config_from_dict(_cfg([3, 32, 32], eps=["1%", "5%"]))  # 1024 pixels, not 3072 numbers
    assert big.attacks[0].eps == [10.0, 51.0]


def test_l0_unit_feature_counts_single_numbers() -> None:
    cfg = config_from_dict(_cfg([3, 32, 32], eps=["1%"], l0_unit="feature"))
    assert cfg.attacks[0].norm == "l0-feature" and cfg.attacks[0].eps == [30.0]
    assert [t.key for t in cfg.threats()] == ["white-box/l0-feature/1%"]
    direct = config_from_dict(_cfg([3, 32, 32], eps=["1%"], norm="l0-feature"))
    assert direct.attacks[0].eps == [30.0]


def test_shares_wait_for_the_shape_from_the_data() -> None:
    cfg = config_from_dict(_cfg())
    assert cfg.attacks[0].eps is None and cfg.threats() == []
    fitted, inferred = fit_config(cfg, input_shape=(1, 16, 16))  # 256 pixels
    assert fitted.attacks[0].eps == [1.0, 5.0, 2.0, 12.0]
    assert [t.label for t in fitted.threats()][-1] == "5%"
    assert inferred.profile is None  # nothing came from the budget profile


def test_profile_gives_l0_shares() -> None:
    doc = _cfg([1, 8, 8])
    del doc["attacks"][0]["eps"]
    doc["gate"] = {"min_robust_accuracy": [{"norm": "l0", "value": 0.5}]}
    fitted, inferred = fit_config(config_from_dict(doc), input_shape=(1, 8, 8))
    assert fitted.attacks[0].eps == [1.0, 3.0] and inferred.profile == "digits"
    assert [t.label for t in fitted.threats()] == ["1%", "5%"]
    assert fitted.gate.min_robust_accuracy[0].eps == 1.0


def test_gate_threshold_as_a_share() -> None:
    doc = _cfg([1, 8, 8], eps=["5%"])
    doc["gate"] = {"min_robust_accuracy": [{"norm": "l0", "eps": "5%", "value": 0.5}]}
    cfg = config_from_dict(doc)
    assert cfg.gate.min_robust_accuracy[0].eps == 3.0
    unfitted = copy.deepcopy(doc)
    del unfitted["model"]["input_shape"]
    fitted, _ = fit_config(config_from_dict(unfitted), input_shape=(1, 8, 8))
    assert fitted.gate.min_robust_accuracy[0].eps == 3.0
    assert fitted.gate.min_robust_accuracy[0]._eps_label == "5%"
    doc["gate"]["min_robust_accuracy"][0]["eps"] = "10%"  # 6 pixels: no such threat
    with pytest.raises(ConfigError, match="min_robust_accuracy"):
        config_from_dict(doc)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"name": "pgd", "norm": "linf", "eps": ["5%"]}, "a share of the pixels is an L0 budget"),
        ({"eps": [2.5]}, "2.5: an l0 budget is a whole number of pixels"),
        ({"eps": ["0%"]}, "a share must be > 0% and at most 100%"),
        ({"eps": ["150%"]}, "a share must be > 0% and at most 100%"),
        ({"eps": ["x%"]}, "is no share like '5%'"),
        ({"name": "pgd", "norm": "linf", "eps": [0.1], "l0_unit": "feature"}, "l0 budgets only"),
        ({"norm": "l0-feature", "l0_unit": "pixel"}, "contradicts"),
        ({"eps": [65]}, "larger than the whole input range"),
    ],
)
def test_bad_budgets_are_one_line_errors(entry: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict(_cfg([1, 8, 8], **entry))
    text = str(info.value)
    assert message in text and "attacks[0]" in text and "\n" not in text


def test_scan_with_l0_threats_writes_a_valid_report(
    tmp_path: Path, tiny_config: Any, cli: Any, validate_report: Any, plain_model_path: Path
) -> None:
    """End to end: L0 budgets as counts and shares, both units, in the report as written."""
    attacks = [
        {"name": "pgd-l0", "norm": "l0", "eps": [1, "5%"]},
        {"name": "sparse-rs", "norm": "l0", "eps": ["5%"], "access": "score", "queries": 100},
        {"name": "pgd-l0", "norm": "l0", "l0_unit": "feature", "eps": [2]},
    ]
    model = {"input_shape": None}  # the shape, so the shares, come from the data
    cfg = tiny_config(tmp_path, attacks=attacks, model=model, report={"formats": ["json"]},
                      data={"samples": 20})  # fmt: skip
    out = tmp_path / "out"
    r = cli("scan", plain_model_path, "--config", cfg, "--out", out)
    assert r.exit_code == 0, r.output
    doc = json.loads((out / "report.json").read_text())
    validate_report(doc)
    keys = {t["key"] for t in doc["threats"]}
    assert {"white-box/l0/1", "white-box/l0/5%", "score/l0/5%", "white-box/l0-feature/2"} <= keys
    assert {t["eps"] for t in doc["threats"] if t["key"].endswith("5%")} == {3}


def test_api_finds_a_threat_by_its_share(
    digits_test: tuple[Any, Any], plain_model_path: Path
) -> None:
    import robaudit

    x, y = digits_test
    attack = {"name": "sparse-rs", "norm": "l0", "eps": ["5%"], "access": "score", "queries": 50}
    cfg = {"version": 1, "model": {}, "attacks": [attack], "engine": {"device": "cpu"},
           "report": {"examples": 0}, "gate": {"fail_on_findings": "none"}}  # fmt: skip
    report = robaudit.scan(plain_model_path, (x[:20].numpy(), y[:20].numpy()), config=cfg)
    share = report.robust_accuracy("l0", "5%", access="score")
    assert share.threat == "score/l0/5%"
    assert float(share) == float(report.robust_accuracy("l0", 3, access="score"))
    with pytest.raises(robaudit.UnknownThreatError, match="'10%'"):
        report.robust_accuracy("l0", "10%", access="score")
