"""Square Attack against torchattacks' Square and robaudit's PGD on the plain sample model.

The first 200 images of the digits test split, 1000 queries, p_init 0.8 (both libraries'
default), margin loss, one restart. Linf eps 0.2 (nearly everything breaks) against both
peers; Linf eps 0.1 (about half survives, so the search's strength shows) against PGD only,
to keep the file under a minute (torchattacks there measured 0.600 robust accuracy against
our 0.535); L2 eps 1.0 against torchattacks. Ours must be at least as strong as the peer
implementation (one point of slack for the random search's seed noise), and at Linf within
10 points of 50-step white-box PGD: 1000 queries should not trail far on a small undefended
model. At L2 the black-box search does trail PGD (0.105 vs 0.020 measured), so that gap is
printed, not asserted.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from robaudit.attacks.fgsm_pgd import PGD, PGDParams
from robaudit.attacks.square import Square, SquareParams
from robaudit.classifier import Classifier
from robaudit.loading.data import digits_arrays
from robaudit.loading.model import load_model
from robaudit.threat import Threat
from tests.helpers import one_thread

pytestmark = pytest.mark.peer
torchattacks = pytest.importorskip("torchattacks")

ROOT = Path(__file__).resolve().parents[2]
N = 200
QUERIES = 1000
P_INIT = 0.8
SEED_SLACK = 0.01  # one robust-accuracy point on 200 images: two seeds of one attack differ so
PGD_GAP = 0.10


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    yield from one_thread()


@pytest.fixture(scope="module")
def setup() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    model = load_model(ROOT / "sample_models" / "digits_cnn.pt").module.eval()
    xs, ys = digits_arrays("test")
    return model, torch.from_numpy(xs[:N].copy()), torch.from_numpy(ys[:N].copy())


def _robust_acc(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, xa: torch.Tensor
) -> float:
    with torch.no_grad():
        return float((model(xa).argmax(1) == y).float().mean())


def _ours(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, threat: Threat) -> float:
    clf = Classifier(model, num_classes=10).restricted("score")
    attack = Square(SquareParams(queries=QUERIES, p_init=P_INIT, loss="margin"))
    t0 = time.perf_counter()
    out = attack.run(clf, x, y, threat, torch.Generator().manual_seed(0))
    ra = _robust_acc(model, x, y, out.x_adv)
    assert out.queries is not None and int(out.queries.sum()) == clf.counters.queries
    print(f"robaudit square {threat.key}: robust acc {ra:.3f}, {time.perf_counter() - t0:.1f}s, "
          f"mean queries {float(out.queries.double().mean()):.0f}")  # fmt: skip
    return ra


def _peer(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, threat: Threat) -> float:
    norm = {"linf": "Linf", "l2": "L2"}[threat.norm]
    attack = torchattacks.Square(model, norm=norm, eps=threat.eps, n_queries=QUERIES,
                                 n_restarts=1, p_init=P_INIT, loss="margin", seed=0)  # fmt: skip
    t0 = time.perf_counter()
    ra = _robust_acc(model, x, y, attack(x, y))
    print(f"torchattacks square {threat.key}: robust acc {ra:.3f}, "
          f"{time.perf_counter() - t0:.1f}s")  # fmt: skip
    return ra


def _pgd(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, threat: Threat) -> float:
    clf = Classifier(model, num_classes=10)
    t0 = time.perf_counter()
    out = PGD(PGDParams(steps=50)).run(clf, x, y, Threat(threat.norm, threat.eps),
                                       torch.Generator().manual_seed(0))  # fmt: skip
    ra = _robust_acc(model, x, y, out.x_adv)
    print(f"robaudit pgd-50 {threat.key}: robust acc {ra:.3f}, {time.perf_counter() - t0:.1f}s")
    return ra


def test_linf_at_least_as_strong_as_torchattacks_and_near_pgd(setup: tuple) -> None:
    model, x, y = setup
    threat = Threat("linf", 0.2, "score")
    ours, peer = _ours(model, x, y, threat), _peer(model, x, y, threat)
    pgd = _pgd(model, x, y, threat)
    assert ours <= peer + SEED_SLACK, f"square {ours:.3f} weaker than torchattacks {peer:.3f}"
    assert ours <= pgd + PGD_GAP, f"square {ours:.3f} far behind pgd {pgd:.3f}"


def test_linf_near_pgd_where_half_survive(setup: tuple) -> None:
    """At eps 0.1 about half the digits survive PGD, so a weak search would show here."""
    model, x, y = setup
    threat = Threat("linf", 0.1, "score")
    ours, pgd = _ours(model, x, y, threat), _pgd(model, x, y, threat)
    assert ours <= pgd + PGD_GAP, f"square {ours:.3f} far behind pgd {pgd:.3f}"


def test_l2_at_least_as_strong_as_torchattacks(setup: tuple) -> None:
    model, x, y = setup
    threat = Threat("l2", 1.0, "score")
    ours, peer = _ours(model, x, y, threat), _peer(model, x, y, threat)
    _pgd(model, x, y, threat)  # for the record: black-box L2 trails white-box PGD here
    assert ours <= peer + SEED_SLACK, f"square {ours:.3f} weaker than torchattacks {peer:.3f}"
