"""Property test of the tabular attacks (issue 17): on random schemas and rows (the strategies of
tests/tabular_cases.py, in a schema-bounds scaler's units) and a random small model on those
scaled features (linear, or one hidden layer), every candidate that constrained PGD, APGD,
APGD-T and the constrained search return through the engine, at a random Linf or L2 budget, is
a real record: finite, in the box, in the ball and breaking no constraint by the numpy oracle
(independent of robaudit.tabular). The engine agrees: no candidate broke a constraint, all of
them satisfied every constraint as returned (``feasible_candidates``), none needed repair, and
each sample it counts broken is one whose candidate the model itself misclassifies.

The candidates are captured as the attack returns them, before the engine checks, projects or
judges them; the engine's own rerun of the gradient attacks without the constraints (the naive
comparison, robaudit.naive) is not captured. That the engine catches an attack that claims to
search inside the constraints and does not is
tests/e2e/test_tabular_scan.py::test_attack_breaking_the_constraints_is_caught.

Examples are derandomized (the same every run); ``ROBAUDIT_HYPOTHESIS_SCALE=20`` explores 20
times as many at random.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from torch import nn

from robaudit import norms
from robaudit.attacks.base import Attack, AttackOutput, get_attack
from robaudit.attacks.feasible import active
from robaudit.classifier import Classifier
from robaudit.engine import EngineControl, PlannedAttack, run_plan
from robaudit.tabular.constraints import Constraints
from robaudit.tabular.data import MinMaxScaler
from robaudit.threat import Threat
from tests.helpers import one_thread
from tests.tabular_cases import Case, cases, oracle

SCALE = int(os.environ.get("ROBAUDIT_HYPOTHESIS_SCALE", "1"))
PROFILE = settings(
    max_examples=30 * SCALE,
    deadline=None,
    derandomize=SCALE == 1,
    database=None,  # no .hypothesis folder in the repository
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# the constrained attacks, with few steps or queries (the property holds at every iterate)
ATTACKS: dict[str, dict[str, Any]] = {
    "pgd": {"steps": 5},
    "apgd": {"steps": 5},
    "apgd-t": {"steps": 5, "targets": 1},
    "constrained-search": {"queries": 25},
}
SLACK = 1e-5  # float32 slack on the ball and the box, in scaled units


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    yield from one_thread()


def _model(features: int, classes: int, hidden: int, seed: int) -> nn.Module:
    """A random classifier on the scaled features, steep enough that small moves matter."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = (
        [nn.Linear(features, classes)]
        if hidden == 0
        else [nn.Linear(features, hidden), nn.Tanh(), nn.Linear(hidden, classes)]
    )
    net = nn.Sequential(*layers)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(8.0)
    return net.eval()


def _recorded(name: str, seen: list[tuple[str, torch.Tensor, torch.Tensor]]) -> Attack:
    """The registered attack, with every candidate it returns while the constraints are
    active kept as returned (with its clean inputs)."""
    cls = get_attack(name)
    attack = cls(cls.Params(**ATTACKS[name]))
    inner = attack.run

    def run(*args: Any) -> AttackOutput:
        out = inner(*args)
        if active() is not None:  # not the naive rerun (constraints off)
            seen.append((name, args[1].detach().clone(), out.x_adv.detach().clone()))
        return out

    attack.run = run  # type: ignore[method-assign]
    return attack


@PROFILE
@given(
    case=cases(),
    norm=st.sampled_from(["linf", "l2"]),
    eps=st.one_of(st.floats(0.01, 0.2), st.floats(0.2, 1.5)),
    classes=st.integers(2, 3),
    hidden=st.sampled_from([0, 8]),
    seed=st.integers(0, 2**16),
)
def test_constrained_attacks_return_only_real_records(
    case: Case, norm: str, eps: float, classes: int, hidden: int, seed: int
) -> None:
    scaler = MinMaxScaler.from_schema(case.schema)
    cons = Constraints(case.schema, scaler)
    x = torch.tensor(np.asarray(scaler.scale(case.raw)), dtype=torch.float32)
    model = _model(int(x.shape[1]), classes, hidden, seed)
    with torch.no_grad():
        y = model(x).argmax(1)  # every sample starts classified correctly: all are attacked
    clf = Classifier(model, num_classes=classes)
    seen: list[tuple[str, torch.Tensor, torch.Tensor]] = []
    threat = Threat(norm, eps)
    plan = [PlannedAttack(i, _recorded(name, seen), threat) for i, name in enumerate(ATTACKS)]
    res = run_plan(
        clf, x, y, plan, seed=seed, batch_size=4, ctl=EngineControl(constraints=cons)
    )  # fmt: skip

    assert sorted({name for name, _, _ in seen}) == sorted(ATTACKS)
    measure = norms.get(norm).measure
    for name, xc, xa in seen:
        assert xa.shape == xc.shape and bool(torch.isfinite(xa).all()), name
        assert float(xa.min()) >= -SLACK and float(xa.max()) <= 1 + SLACK, name
        assert bool((measure(xa.double() - xc.double()) <= eps + SLACK).all()), name
        raw, clean = scaler.unscale(xa.double()).numpy(), scaler.unscale(xc.double()).numpy()
        assert oracle(case.schema, raw, clean) == [], name
    for cell in res.cells:
        attacked = int(cell.attacked.sum())
        assert attacked == len(y), cell.attack
        assert cell.constraint_violations == 0, (cell.attack, cell.broken_constraints)
        assert (cell.feasible_candidates, cell.repaired) == (attacked, 0), cell.attack
        mine = [xa for name, _, xa in seen if name == cell.attack]
        with torch.no_grad():  # the engine's breaks are the model's own misclassifications
            wrong = model(torch.cat(mine)).argmax(1) != y
        assert torch.equal(cell.broken, wrong), cell.attack
        moved = bool((torch.cat(mine) != x).any())
        event(f"{cell.attack}: moved {'some' if moved else 'none'}, broke {int(wrong.sum()) > 0}")
