"""l1-APGD (Croce & Hein 2021) inside ``apgd`` / ``apgd-t`` at L1: the sparse box-aware step,
the schedules, and an exact oracle — on a linear model the smallest L1 change that flips a
sample inside the box is a fractional knapsack, so reach and the engine's verification are
both checked against the true distance."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from robaudit.attacks.apgd import APGD, APGDT, APGDParams, APGDTParams
from robaudit.attacks.apgd_l1 import marks, phases, sparse_direction
from robaudit.classifier import Classifier
from robaudit.engine import PlannedAttack, run_plan
from robaudit.loading.data import digits_arrays
from robaudit.loading.model import load_model
from robaudit.threat import Threat
from robaudit.verification import verify_batch
from tests.helpers import one_thread
from tests.unit.test_attacks_oracle import BinaryLinear

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    yield from one_thread()


# -- the step ------------------------------------------------------------------------------
def test_sparse_direction_moves_the_top_k_free_coordinates_evenly() -> None:
    g = torch.tensor([[5.0, -4.0, 3.0, -2.0, 1.0, 0.5, -0.25, 0.1, 0.05, 0.0]])
    x = torch.full_like(g, 0.5)
    x[0, 0] = 1.0  # at the upper face with a positive gradient: cannot move, left out
    x[0, 1] = 1.0  # at the upper face, gradient pushes down: free
    d = sparse_direction(g, x, (0.0, 1.0), torch.tensor([0.3]))
    # 30% of 10 coordinates: the three largest free |g| (-4, 3, -2), each a third of the step
    want = torch.tensor([[0.0, -1, 1, -1, 0, 0, 0, 0, 0, 0]]) / 3
    torch.testing.assert_close(d, want)
    assert float(d.abs().sum()) == pytest.approx(1.0)
    assert float((g * d).sum()) > 0  # an ascent direction


def test_sparse_direction_never_pushes_a_coordinate_out_of_the_box() -> None:
    gen = torch.Generator().manual_seed(0)
    g = torch.randn(16, 200, generator=gen)
    x = torch.rand(16, 200, generator=gen).round()  # every coordinate on a face
    d = sparse_direction(g, x, (0.0, 1.0), torch.full((16,), 0.5))
    assert ((x == 1) & (d > 0)).sum() == 0 and ((x == 0) & (d < 0)).sum() == 0
    assert torch.allclose(d.abs().sum(dim=1), torch.ones(16))


def test_eps_schedule_and_checkpoints() -> None:
    assert phases(2.0, 100, True) == [(6.0, 30), (4.0, 30), (2.0, 40)]
    assert phases(2.0, 7, True) == [(6.0, 3), (4.0, 3), (2.0, 1)]
    assert phases(2.0, 2, True) == [(2.0, 2)]  # too few steps to split
    assert phases(2.0, 100, False) == [(2.0, 100)]
    assert marks(100) == list(range(4, 100, 4)) and marks(10) == list(range(1, 10))


# -- a linear model: the exact L1 distance inside the box ----------------------------------
def _knapsack_distance(w: torch.Tensor, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Smallest L1 change that moves w·x across 0 inside [0, 1]^D: spend on the coordinates
    with the largest |w_i| first, each up to its room; inf where the box does not allow it."""
    w64, out = w.double(), []
    for xi, zi in zip(x.flatten(1).double(), z.double(), strict=True):
        down = -torch.sign(zi) * torch.sign(w64)  # each coordinate's useful direction
        room = torch.where(down > 0, 1 - xi, xi)
        need, spent = float(zi.abs()), 0.0
        for i in w64.abs().argsort(descending=True).tolist():
            gain = float(w64[i].abs() * room[i])
            if gain >= need:
                spent += need / float(w64[i].abs())
                need = 0.0
                break
            need, spent = need - gain, spent + float(room[i])
        out.append(spent if need == 0.0 else float("inf"))
    return torch.tensor(out)


@pytest.fixture(scope="module")
def linear() -> tuple[Classifier, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(16, generator=g)
    model = BinaryLinear(w, 0.0)
    x = (0.5 + 0.25 * torch.randn(96, 1, 4, 4, generator=g)).clamp(0, 1)
    z = x.flatten(1) @ w
    return Classifier(model, num_classes=2), x, (z > 0).long(), _knapsack_distance(w, x, z)


@pytest.mark.parametrize("schedule", [True, False])
@pytest.mark.parametrize("targeted", [False, True])
def test_reaches_the_exact_distance_inside_the_box(linear: tuple, targeted: bool,
                                                   schedule: bool) -> None:  # fmt: skip
    """Everything a little inside the ball is found (the box forces most samples to spread
    over several pixels); nothing beyond it counts, because the engine verifies."""
    clf, x, y, dist = linear
    eps = float(dist[dist.isfinite()].median())
    attack = (
        APGDT(APGDTParams(targets=1, eps_schedule=schedule))
        if targeted
        else APGD(APGDParams(eps_schedule=schedule))
    )
    res = run_plan(clf, x, y, [PlannedAttack(0, attack, Threat("l1", eps))], seed=0,
                   batch_size=96)  # fmt: skip
    cell, broken = res.cells[0], res.cells[0].broken
    inside, outside = dist < 0.95 * eps, dist > 1.0001 * eps
    assert inside.sum() > 20 and outside.sum() > 20
    assert broken[inside].all(), f"missed {int((~broken[inside]).sum())} reachable samples"
    assert not broken[outside].any()
    assert cell.budget_violations == 0 and cell.bounds_violations == 0


def test_spends_exactly_steps_gradients_over_the_three_phases(linear: tuple) -> None:
    clf, x, y, _ = linear
    clf = Classifier(clf.model, num_classes=2)  # fresh counters
    APGD(APGDParams(steps=30, early_stop=False)).run(
        clf, x, y, Threat("l1", 0.05), torch.Generator().manual_seed(0)
    )
    assert clf.counters.grad_evals == 30 * x.shape[0]
    assert clf.counters.queries == 33 * x.shape[0]  # plus each phase's last iterate


# -- the sample model: in ball ∩ box, verified fooled ---------------------------------------
@pytest.mark.parametrize("name", ["apgd", "apgd-t"])
def test_fools_the_robust_digits_model_inside_ball_and_box(name: str) -> None:
    xs, ys = digits_arrays("test")
    x, y = torch.from_numpy(xs[:60].copy()), torch.from_numpy(ys[:60].copy())
    module = load_model(ROOT / "sample_models" / "digits_cnn_robust.pt").module
    clf = Classifier(module, num_classes=10)
    attack = (
        APGD(APGDParams(steps=40)) if name == "apgd" else APGDT(APGDTParams(steps=40, targets=3))
    )
    threat = Threat("l1", 2.0)
    out = attack.run(clf, x, y, threat, torch.Generator().manual_seed(0))
    size = (out.x_adv.double() - x.double()).abs().flatten(1).sum(dim=1)
    assert float(size.max()) <= 2.0 + 1e-9 and float(out.x_adv.min()) >= 0
    assert float(out.x_adv.max()) <= 1
    v = verify_batch(clf, x, out.x_adv, y, threat)
    assert v.budget == 0 and v.bounds == 0
    assert torch.equal(v.x_adv, out.x_adv)  # the engine's projection left every point alone
    clean = clf.predict(x) == y
    # the sample model keeps ~100% clean; at L1 2 l1-APGD breaks well over half of it
    assert float((v.broken & clean).sum()) >= 0.5 * float(clean.sum())
    assert out.claimed is not None and torch.equal(out.claimed, v.verdict.wrong)


def test_sanity_check_at_l1_catches_an_l1_attack_that_does_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """RA008 at L1: APGD with its L1 rules at a budget covering the box breaks (almost) all of
    the robust model's samples; with the L1 search doing nothing the check fires, while the
    Linf check alone (no L1 threat) still passes."""
    from robaudit.attacks.base import AttackOutput
    from robaudit.integrity.unbounded import sanity

    model = load_model(ROOT / "sample_models" / "digits_cnn_robust.pt").module.eval()
    x, y = (torch.from_numpy(a[:64].copy()) for a in digits_arrays("test"))
    clf = Classifier(model, num_classes=10)
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    assert sanity(clf, x, y, correct, 0, None, ["linf", "l1"]) is None
    monkeypatch.setattr(APGD, "run", lambda self, clf, x, y, t, g: AttackOutput(x_adv=x))
    assert sanity(clf, x, y, correct, 0, None, ["linf"]) is None
    found = sanity(clf, x, y, correct, 0, None, ["linf", "l1"])
    assert found is not None and found.id == "RA008"
    assert "APGD-L1" in found.detail and "at L1 eps 64" in found.detail
