"""EAD (elastic-net attack): the shrinkage step, and the attack on models whose exact answer is
known.

On a multi-class affine model inside [0, 1] the smallest L1 change of label is a linear program
per other class (``tests.helpers.affine_l1_distance``, solved by scipy): EAD can never go
below it, and with its default settings it lands within a few percent of it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from pydantic import ValidationError

from robaudit.attacks.base import param_table, registry
from robaudit.attacks.ead import EAD, EADParams, shrink
from robaudit.attacks.projections import flat_norm
from robaudit.classifier import Classifier
from robaudit.engine import PlannedAttack, run_plan
from robaudit.models.digits import DigitsCNN
from robaudit.threat import Threat
from tests.helpers import Affine, affine_l1_distance, one_thread

C, D = 10, 16
INF = Threat("l1", float("inf"), label="inf")
FAST = EADParams(steps=50, binary_search_steps=6, initial_const=0.1)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    yield from one_thread()


def _affine(n: int = 24) -> tuple[Classifier, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    model = Affine(torch.randn(D, C, generator=g), 0.3 * torch.randn(C, generator=g))
    x = 0.5 + 0.05 * torch.randn(n, 1, 4, 4, generator=g)
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    return Classifier(model, num_classes=C), x, y


def _fooled(clf: Classifier, xa: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return clf.model(xa).argmax(dim=1) != y


def test_shrinkage_drops_small_changes_shrinks_large_ones_and_clips() -> None:
    x = torch.tensor([[0.5, 0.5, 0.5, 0.5, 0.95, 0.0]])
    z = torch.tensor([[0.505, 0.6, 0.3, 0.495, 1.2, -0.3]])
    got = shrink(z, x, 0.01, (0.0, 1.0))
    want = torch.tensor([[0.5, 0.59, 0.31, 0.5, 1.0, 0.0]])
    torch.testing.assert_close(got, want)


def test_registered_as_a_minimal_norm_l1_gradient_attack_with_documented_params() -> None:
    cls = registry()["ead"]
    assert cls is EAD
    assert cls.minimal_norm and cls.requires == "gradients" and cls.norms == ("l1",)
    assert "Chen" in cls.paper and "2018" in cls.paper
    rows = {r["name"]: r for r in param_table(EAD)}
    assert {"steps", "binary_search_steps", "beta", "decision_rule", "lr"} <= set(rows)
    assert all(r["description"] for r in rows.values())


@pytest.mark.parametrize(
    "values", [{"beta": -0.1}, {"decision_rule": "l2"}, {"lr": 0}, {"steps": 0}]
)
def test_bad_parameters_are_rejected(values: dict) -> None:
    with pytest.raises(ValidationError):
        EADParams(**values)


def test_refuses_other_norms() -> None:
    clf, x, y = _affine(2)
    with pytest.raises(ValueError, match="only the l1 norm"):
        EAD(FAST).run(clf, x, y, Threat("l2", 1.0), torch.Generator())


def test_never_below_and_within_a_few_percent_of_the_exact_l1_distance() -> None:
    clf, x, y = _affine()
    assert isinstance(clf.model, Affine)
    dist = affine_l1_distance(clf.model, x, y)
    out = EAD().run(clf, x, y, INF, torch.Generator())
    assert bool(_fooled(clf, out.x_adv, y).all())
    ratio = flat_norm(out.x_adv - x, "l1") / dist
    assert float(ratio.min()) >= 1 - 1e-5, "an L1 change smaller than the exact minimum"
    assert float(ratio.median()) <= 1.01 and float(ratio.max()) <= 1.05, ratio


def test_l1_rule_keeps_no_larger_l1_than_the_elastic_net_rule() -> None:
    """The rule only picks among the same iterates (the search over c sees successes alone),
    so per sample the L1 rule's answer is never larger in L1 than the EN rule's."""
    clf, x, y = _affine()
    by = {
        rule: EAD(FAST.model_copy(update={"decision_rule": rule})).run(
            clf, x, y, INF, torch.Generator()
        )
        for rule in ("l1", "en")
    }
    n1, ne = (flat_norm(by[r].x_adv - x, "l1") for r in ("l1", "en"))
    assert bool((n1 <= ne + 1e-6).all())
    assert bool((n1 < ne - 1e-4).any()), "the two rules should differ somewhere"


@pytest.fixture(scope="module")
def digits() -> tuple[Classifier, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = DigitsCNN().eval()
    x = torch.rand(16, 1, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    return Classifier(model, num_classes=10), x, y


def test_on_a_cnn_answers_are_real_in_the_box_and_deterministic(digits: tuple) -> None:
    clf, x, y = digits
    outs = [EAD(FAST).run(clf, x, y, Threat("l1", 2.0), torch.Generator()) for _ in "ab"]
    xa, claimed = outs[0].x_adv, outs[0].claimed
    assert torch.equal(xa, outs[1].x_adv)
    assert float(xa.min()) >= 0.0 and float(xa.max()) <= 1.0
    fooled = _fooled(clf, xa, y)  # a fresh forward pass outside the attack
    assert claimed is not None and torch.equal(fooled, claimed)
    assert float(fooled.float().mean()) >= 0.9
    moved = (xa != x).flatten(1).any(dim=1)
    assert torch.equal(moved, fooled), "a sample not fooled comes back unchanged"


def test_gradients_and_queries_counted_per_step() -> None:
    clf, x, y = _affine(4)
    EAD(EADParams(steps=7, binary_search_steps=3)).run(clf, x, y, INF, torch.Generator())
    assert clf.counters.grad_evals == 4 * 7 * 3
    assert clf.counters.queries == 2 * 4 * 7 * 3  # plus one forward pass per step


def test_engine_derives_every_eps_from_one_verified_run(digits: tuple) -> None:
    """Through the engine: the verified breaks at each eps are exactly the answers whose L1
    norm fits, and each is misclassified by a fresh forward pass."""
    clf, x, y = digits
    attack = EAD(FAST)
    plan = [PlannedAttack(0, attack, Threat("l1", e)) for e in (0.5, 2.0)]
    res = run_plan(clf, x, y, plan, seed=0, batch_size=8, examples=100)
    direct = attack.run(clf, x, y, INF, torch.Generator()).x_adv
    size = flat_norm(direct - x, "l1")
    fooled = _fooled(clf, direct, y)
    for cell, eps in zip(res.cells, (0.5, 2.0), strict=True):
        assert cell.budget_violations == 0 and cell.bounds_violations == 0
        assert torch.equal(cell.broken, fooled & (size <= eps + 1e-6))
    assert int(res.cells[0].broken.sum()) < int(res.cells[1].broken.sum())
    for e in res.examples:
        assert float(flat_norm((e.x_adv - e.x)[None], "l1")) <= 2.0 + 1e-6
        with torch.no_grad():
            assert int(clf.model(e.x_adv[None]).argmax(1)) != e.label
