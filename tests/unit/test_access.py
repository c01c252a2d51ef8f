"""Access levels: restricted views refuse what their level does not allow, query counts are
exact against an independent counter, and a capped run skips (and says so) what it cannot do."""

from __future__ import annotations

import pytest
import torch

from robaudit.attacks.base import ACCESS_FOR_REQUIRES, registry
from robaudit.attacks.fgsm_pgd import PGD
from robaudit.attacks.losses import cross_entropy
from robaudit.attacks.noise import Noise, NoiseParams
from robaudit.classifier import AccessDenied, Classifier
from robaudit.config import config_from_dict
from robaudit.engine import PlannedAttack, attack_access, run_plan
from robaudit.errors import ConfigError
from robaudit.models.digits import DigitsCNN
from robaudit.plan import cap_access
from robaudit.threat import Threat
from tests.helpers import RowCounter


@pytest.fixture()
def data() -> tuple[DigitsCNN, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = DigitsCNN().eval()
    x = torch.rand(30, 1, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


@pytest.mark.parametrize("level", ["score", "decision"])
def test_restricted_views_refuse_gradients(level: str, data: tuple) -> None:
    model, x, y = data
    view = Classifier(model, num_classes=10).restricted(level)
    with pytest.raises(AccessDenied):
        view.loss_and_grad(x, y, cross_entropy)
    assert view.predict(x).shape == (30,)  # labels are allowed at every level
    if level == "decision":
        with pytest.raises(AccessDenied):
            view.logits(x)
    else:
        assert view.logits(x).shape == (30, 10)


def test_access_cannot_be_raised(data: tuple) -> None:
    model, _, _ = data
    score = Classifier(model, num_classes=10, access="score")
    with pytest.raises(AccessDenied):
        score.restricted("white-box")
    assert score.restricted("decision").access == "decision"


def test_gradient_attack_fails_loudly_through_a_score_view(data: tuple) -> None:
    model, x, y = data
    view = Classifier(model, num_classes=10).restricted("score")
    with pytest.raises(AccessDenied):
        PGD().run(view, x, y, Threat("linf", 0.1), torch.Generator().manual_seed(0))


def test_each_attack_runs_at_exactly_the_access_it_needs() -> None:
    for name, cls in registry().items():
        need = ACCESS_FOR_REQUIRES[cls.requires]
        assert attack_access(cls(), Threat("linf", 0.1, "white-box")) == need, name


def test_engine_query_counts_match_an_independent_counter(data: tuple) -> None:
    model, x, y = data
    counter = RowCounter(model)
    clf = Classifier(counter, num_classes=10)
    plan = [PlannedAttack(0, Noise(NoiseParams(draws=7)), Threat("linf", 0.3))]
    before = counter.rows
    res = run_plan(clf, x, y, plan, seed=0, batch_size=8, examples=0)
    cell = res.cells[0]
    clean_and_verify = x.shape[0] + int(cell.attacked.sum())  # the engine's own passes
    assert cell.queries == counter.rows - before - clean_and_verify
    assert cell.sample_queries is not None
    assert int(cell.sample_queries[cell.attacked].sum()) == cell.queries
    assert cell.access_used == "decision" and cell.query_mismatch == 0
    # a sample broken at draw k was queried exactly k times; unbroken ones all 7 times
    assert bool((cell.sample_queries[cell.attacked & ~cell.broken] == 7).all())
    assert bool((cell.sample_queries[cell.broken] <= 7).all())


def _cfg(attacks: list[dict]) -> dict:
    return {"model": {"input_shape": [1, 8, 8], "num_classes": 10}, "attacks": attacks}


def test_config_refuses_an_attack_stronger_than_its_threat_access() -> None:
    with pytest.raises(ConfigError, match=r"attacks\[0\]\.access: pgd needs white-box access"):
        config_from_dict(_cfg([{"name": "pgd", "eps": 0.1, "access": "score"}]))
    cfg = config_from_dict(_cfg([{"name": "noise", "eps": 0.1, "access": "decision"}]))
    assert cfg.threats()[0].access == "decision"


def test_capped_plan_relabels_threats_and_lists_what_it_skipped() -> None:
    t = Threat("linf", 0.1)
    plan = [PlannedAttack(0, PGD(), t), PlannedAttack(1, Noise(), t)]
    kept, skipped = cap_access(plan, "score", "because")
    assert [p.attack.name for p in kept] == ["noise"]
    assert kept[0].threat.access == "score"  # no row claims a stronger attacker than ran
    assert [s.to_dict() for s in skipped] == [
        {"attack": "pgd", "attack_index": 0, "threats": [t.key], "reason": "needs white-box access; because"}
    ]
    same, none = cap_access(plan, "white-box", "")
    assert same == plan and none == []


def test_access_levels_are_defined_once_and_agree() -> None:
    """robaudit.access is the one definition: the config's type, the order and the enum."""
    from typing import get_args

    from robaudit import access

    assert set(get_args(access.AccessName)) == set(access.LEVELS) == {a.value for a in access.Access}
    assert sorted(access.LEVELS, key=access.RANK.__getitem__) == ["decision", "score", "white-box"]
    assert access.RANK[access.Access.SCORE] == 1 and f"{access.Access.WHITE_BOX}" == "white-box"
    assert access.weakest("white-box", "decision", "score") == "decision"
    assert access.allows("score", "decision") and not access.allows("score", "white-box")
