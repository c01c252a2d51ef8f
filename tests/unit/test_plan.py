"""The plan stage alone: a frozen Plan with the config's cells in cheap-first order, integrity's
reactions, the access cap with each skip's reason, and the defense variants' cells."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from robaudit.classifier import Classifier
from robaudit.config import config_from_dict
from robaudit.errors import ConfigError
from robaudit.loading.data import dataset_from_arrays, digits_arrays
from robaudit.models.digits import DigitsCNN
from robaudit.plan import make_plan


def _setup(attacks: list[dict], access: str = "white-box", **extra: object):
    torch.manual_seed(0)
    xs, ys = digits_arrays("test")
    data = dataset_from_arrays(xs[:32], ys[:32], input_shape=(1, 8, 8), bounds=(0, 1),
                               num_classes=10, samples=None, seed=0)
    cfg = config_from_dict({"model": {"input_shape": [1, 8, 8], "num_classes": 10},
                            "attacks": attacks, **extra})
    clf = Classifier(DigitsCNN().eval(), num_classes=10, access=access)
    return clf, data, cfg


def test_cells_are_cheap_first_and_the_plan_is_frozen() -> None:
    clf, data, cfg = _setup([
        {"name": "apgd", "eps": [0.1, 0.2], "steps": 50},
        {"name": "noise", "eps": [0.1, 0.2]},
        {"name": "fgsm", "eps": [0.1]},
    ], integrity={"enabled": False})
    plan = make_plan(clf, data, cfg, "", None)
    names = [(p.attack.name, p.threat.eps) for p in plan.cells]
    cheap = [n for n, _ in names[:3]]
    assert sorted(cheap) == ["fgsm", "noise", "noise"] and names[-1][0] == "apgd"
    assert len(plan.cells) == 5 and plan.skipped == () and plan.access == "white-box"
    assert set(plan.attacks()) == {0, 1, 2} and plan.params()[0]["steps"] == 50
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.access = "score"  # type: ignore[misc]


def test_the_access_cap_skips_with_a_reason_and_an_empty_plan_is_refused() -> None:
    clf, data, cfg = _setup([{"name": "pgd", "eps": [0.1]}, {"name": "noise", "eps": [0.1]}],
                            access="score", integrity={"enabled": False})
    plan = make_plan(clf, data, cfg, "the run was limited with --access score", None)
    assert [p.attack.name for p in plan.cells] == ["noise"]
    assert plan.cells[0].threat.access == "score"
    (skip,) = plan.skipped
    assert skip.attack == "pgd" and skip.reason == (
        "needs white-box access; the run was limited with --access score")
    clf, data, cfg = _setup([{"name": "pgd", "eps": [0.1]}], access="score",
                            integrity={"enabled": False})
    with pytest.raises(ConfigError, match=r"cfg.yaml: no attack can run at score access .* add one of"):
        make_plan(clf, data, cfg, "why", "cfg.yaml")


def test_variants_get_the_configs_cells_without_integritys_reactions() -> None:
    clf, data, cfg = _setup([{"name": "fgsm", "eps": [0.1]}],
                            defenses=[{"name": "bit-depth", "bits": 3}])
    plan = make_plan(clf, data, cfg, "", None)
    assert [p.attack.name for p in plan.variant_cells] == ["fgsm"]
    assert len(plan.variants) == 1 and plan.variants[0].startswith("bit-depth")
    assert plan.preflight is not None
