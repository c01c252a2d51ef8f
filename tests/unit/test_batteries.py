"""The autoattack battery in each norm's version: its members, their AutoAttack settings, and
a config refused (one line) at a norm one of its members does not have."""

from __future__ import annotations

import pytest

from robaudit.attacks.base import registry
from robaudit.attacks.batteries import BatteryParams, battery_members
from robaudit.config import config_from_dict
from robaudit.errors import ConfigError


def _members(norm: str, **params: int) -> dict[str, dict]:
    return dict(battery_members("autoattack", BatteryParams(**params), norm))


def test_linf_and_l2_keep_the_standard_version() -> None:
    for norm in ("linf", "l2"):
        m = _members(norm)
        assert list(m) == ["apgd", "apgd-t", "fab-t", "square"]
        assert m["apgd"]["restarts"] == 1 and m["apgd-t"]["targets"] == 9
        assert m["fab-t"]["targets"] == 9 and m["square"]["queries"] == 5000


def test_l1_version_follows_autoattack() -> None:
    """AutoAttack at L1: APGD-CE with 5 restarts, APGD-T with 5 targets, FAB-T with 9,
    Square with 5,000 queries; the APGD members keep their 3·eps → eps schedule."""
    m = _members("l1")
    assert list(m) == ["apgd", "apgd-t", "fab-t", "square"]
    assert m["apgd"] == {"steps": 100, "restarts": 5, "loss": "ce"}
    assert m["apgd-t"] == {"steps": 100, "restarts": 1, "targets": 5}
    assert m["fab-t"]["targets"] == 9 and m["fab-t"]["restarts"] == 1
    assert m["square"] == {"queries": 5000}
    for name in ("apgd", "apgd-t"):
        assert registry()[name].Params(**m[name]).eps_schedule  # type: ignore[attr-defined]


def test_shared_parameters_given_override_the_standard() -> None:
    m = _members("l1", restarts=2, targets=3, steps=50)
    assert m["apgd"]["restarts"] == m["apgd-t"]["restarts"] == m["fab-t"]["restarts"] == 2
    assert m["apgd-t"]["targets"] == m["fab-t"]["targets"] == 3
    assert m["apgd"]["steps"] == 50


def _config(norm: str) -> dict:
    return {
        "model": {"input_shape": [1, 8, 8], "num_classes": 10},
        "attacks": [{"battery": "autoattack", "norm": norm, "eps": [1.0]}],
    }


def test_battery_refused_at_a_norm_a_member_lacks(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("fab-t", "square"):  # members without L1 (as before they had it)
        monkeypatch.setattr(registry()[name], "norms", ("linf", "l2"))
    with pytest.raises(ConfigError) as err:
        config_from_dict(_config("l1"), source="cfg.yaml")
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(
        "cfg.yaml: attacks[0].norm: battery autoattack's member fab-t supports linf, l2, not 'l1'"
    )
    assert "square supports linf, l2" in msg


def test_battery_accepted_once_every_member_has_the_norm(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("apgd", "apgd-t", "fab-t", "square"):
        monkeypatch.setattr(registry()[name], "norms", ("linf", "l2", "l1"))
    cfg = config_from_dict(_config("l1"))
    members = dict(cfg.attacks[0].members())
    assert members["apgd"]["restarts"] == 5 and members["apgd-t"]["targets"] == 5
