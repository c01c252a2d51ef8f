"""The L0 attacks (PGD-L0, σ-zero, Sparse-RS): budgets, verified breaks, query accounting, and
the oracle: on the 8x8 digits model, an exhaustive search of every one-pixel change over a grid
of 17 values gives the true one-pixel robust accuracy (up to the grid), and the L0 battery
lands on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from robaudit.attacks.base import Attack, get_attack
from robaudit.attacks.sparse_rs import SparseRS, SparseRSParams, resample_share
from robaudit.classifier import Classifier
from robaudit.engine import PlannedAttack, run_plan
from robaudit.loading.model import load_model
from robaudit.norms import get
from robaudit.threat import Threat
from tests.helpers import RowCounter, one_thread

ROOT = Path(__file__).resolve().parents[2]
L0_ATTACKS = ("pgd-l0", "sigma-zero", "sparse-rs")
CHEAP: dict[str, dict[str, Any]] = {"sigma-zero": {"steps": 200}, "sparse-rs": {"queries": 1000}}
ACCESS = {"pgd-l0": "white-box", "sigma-zero": "white-box", "sparse-rs": "score"}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    yield from one_thread()


def _model(name: str) -> nn.Module:
    return load_model(ROOT / "sample_models" / name).module


def _attack(name: str, **params: Any) -> Attack:
    cls = get_attack(name)
    return cls(cls.Params(**{**CHEAP.get(name, {}), **params}))


@pytest.fixture(scope="module")
def digits(digits_test: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = digits_test
    return x[:150], y[:150]


def test_catalogue_rows() -> None:
    for name in L0_ATTACKS:
        cls = get_attack(name)
        assert cls.norms == ("l0", "l0-feature")
    assert get_attack("sparse-rs").requires == "scores"
    assert get_attack("sigma-zero").minimal_norm and not get_attack("pgd-l0").minimal_norm


def test_sparse_rs_schedule_is_the_papers() -> None:
    # α_init / 2 up to iteration 50 of 10 000, / 20 after 8000; rescaled to the budget
    assert resample_share(1, 10_000, 0.3) == pytest.approx(0.15)
    assert resample_share(51, 10_000, 0.3) == pytest.approx(0.075)
    assert resample_share(9000, 10_000, 0.3) == pytest.approx(0.015)
    assert resample_share(900, 1000, 0.3) == pytest.approx(0.015)


@pytest.mark.parametrize("name", L0_ATTACKS)
@pytest.mark.parametrize("norm", ["l0", "l0-feature"])
def test_breaks_are_verified_and_within_budget(name: str, norm: str, digits: tuple) -> None:
    """Through the engine: no budget or bounds violation, every break misclassified by an
    independent forward pass with at most eps changed pixels, and most samples broken at 5
    pixels (the plain model's 5-pixel robust accuracy is near zero)."""
    x, y = digits[0][:40], digits[1][:40]
    model = _model("digits_cnn.pt")
    threat = Threat(norm, 5, ACCESS[name])
    res = run_plan(Classifier(model, num_classes=10), x, y, [PlannedAttack(0, _attack(name), threat)],
                   seed=0, batch_size=40, examples=100)  # fmt: skip
    cell = res.cells[0]
    assert cell.budget_violations == 0 and cell.bounds_violations == 0 and cell.nonfinite == 0
    assert int(cell.broken.sum()) >= 0.8 * int(res.correct.sum())
    for e in res.examples:
        assert float(get(norm).measure((e.x_adv - e.x)[None])) <= 5
        assert float(e.x_adv.min()) >= 0.0 and float(e.x_adv.max()) <= 1.0
        with torch.no_grad():
            assert int(model(e.x_adv[None]).argmax(1)) != e.label


def test_feature_unit_changes_single_numbers() -> None:
    """At l0-feature a budget of 2 allows two numbers, not two pixels of three channels."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 5)).eval()
    x = torch.rand(8, 3, 4, 4)
    y = model(x).argmax(1).detach()
    clf = Classifier(model, num_classes=5)
    for name in L0_ATTACKS:
        view = clf.restricted(ACCESS[name])
        out = _attack(name).run(
            view, x, y, Threat("l0-feature", 2), torch.Generator().manual_seed(0)
        )
        if not get_attack(name).minimal_norm:
            assert (get("l0-feature").measure(out.x_adv - x) <= 2).all()
        assert float(out.x_adv.min()) >= 0.0 and float(out.x_adv.max()) <= 1.0


@pytest.mark.parametrize("restarts", [1, 2])
def test_sparse_rs_counts_every_query(restarts: int, digits: tuple) -> None:
    x, y = digits[0][:30], digits[1][:30]
    counted = RowCounter(_model("digits_cnn_robust.pt"))
    clf = Classifier(counted, num_classes=10).restricted("score")
    out = SparseRS(SparseRSParams(queries=200, restarts=restarts)).run(
        clf, x, y, Threat("l0", 2, "score"), torch.Generator().manual_seed(0)
    )
    q, claimed = out.queries, out.claimed
    assert q is not None and claimed is not None and q.dtype == torch.int64
    assert int(q.sum()) == clf.counters.queries == counted.rows
    assert bool((q[~claimed] == 200).all()) and int(q.max()) <= 200 and int(q.min()) >= 1
    assert (get("l0").measure(out.x_adv - x) <= 2).all()
    with torch.no_grad():  # what it claims, a fresh pass confirms; it stopped once fooled
        assert bool((counted.inner(out.x_adv[claimed]).argmax(1) != y[claimed]).all())
    assert bool(claimed.any()) and bool((q[claimed] < 200).any())


def test_sparse_rs_edges_no_budget_and_every_pixel(digits: tuple) -> None:
    x, y = digits[0][:10], digits[1][:10]
    clf = Classifier(_model("digits_cnn.pt"), num_classes=10).restricted("score")
    none = SparseRS(SparseRSParams(queries=50)).run(clf, x, y, Threat("l0", 0, "score"),
                                                     torch.Generator().manual_seed(0))  # fmt: skip
    assert torch.equal(none.x_adv, x) and none.queries is not None
    assert none.queries.tolist() == [1] * 10
    full = SparseRS(SparseRSParams(queries=50)).run(clf, x, y, Threat("l0", 64, "score"),
                                                     torch.Generator().manual_seed(0))  # fmt: skip
    assert float(full.x_adv.min()) >= 0.0 and float(full.x_adv.max()) <= 1.0
    assert full.claimed is not None and bool(full.claimed.all())  # every pixel: all fooled


def test_sigma_zero_answers_with_its_sparsest_break(digits: tuple) -> None:
    """Minimal-norm: the engine reads off every eps from one run; the count grows with eps."""
    x, y = digits[0][:40], digits[1][:40]
    clf = Classifier(_model("digits_cnn.pt"), num_classes=10)
    attack = _attack("sigma-zero")
    plan = [PlannedAttack(0, attack, Threat("l0", e)) for e in (1, 2, 4)]
    res = run_plan(clf, x, y, plan, seed=0, batch_size=40)
    broken = [int(c.broken.sum()) for c in res.cells]
    assert broken == sorted(broken) and broken[-1] >= 0.8 * int(res.correct.sum())
    assert all(c.budget_violations == 0 for c in res.cells)


def _one_pixel_robust(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per sample: correct and no single pixel set to any of 0, 1/16, ..., 1 fools the model."""
    grid = torch.arange(17) / 16
    out = torch.zeros(len(x), dtype=torch.bool)
    with torch.no_grad():
        ok = model(x).argmax(1) == y
        for i in ok.nonzero().flatten().tolist():
            cand = x[i].reshape(1, 1, 64).repeat(64, 17, 1)
            cand[torch.arange(64)[:, None], torch.arange(17), torch.arange(64)[:, None]] = grid
            out[i] = bool((model(cand.view(-1, 1, 8, 8)).argmax(1) == y[i]).all())
    return out


@pytest.mark.parametrize("model_name", ["digits_cnn.pt", "digits_cnn_robust.pt"])
def test_one_pixel_oracle(model_name: str, digits: tuple) -> None:
    """The L0 battery (PGD-L0, σ-zero, Sparse-RS; worst case per sample) at one pixel lands
    within 2 points of the exhaustive grid search, and below it by at most one sample (an
    attack may find a value between the grid's points)."""
    x, y = digits
    model = _model(model_name)
    truth = int(_one_pixel_robust(model, x, y).sum())
    plan = [
        PlannedAttack(i, _attack(n), Threat("l0", 1, ACCESS[n])) for i, n in enumerate(L0_ATTACKS)
    ]
    res = run_plan(Classifier(model, num_classes=10), x, y, plan, seed=0, batch_size=len(x),
                   cascade=True)  # fmt: skip
    broken = torch.zeros_like(res.correct)
    for c in res.cells:
        assert c.budget_violations == 0
        broken |= c.broken
    robust = int((res.correct & ~broken).sum())
    assert truth - 1 <= robust <= truth + 0.02 * len(x), (robust, truth)


def test_sanity_check_at_every_pixel(digits: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    """RA008 at L0: PGD-L0 with a budget of every pixel breaks (almost) everything; an L0
    search that does nothing there is caught, even though the Linf check passes."""
    from robaudit.attacks.base import AttackOutput
    from robaudit.attacks.pgd_l0 import PGDL0
    from robaudit.integrity.unbounded import sanity

    x, y = digits[0][:64], digits[1][:64]
    model = _model("digits_cnn_robust.pt")
    clf = Classifier(model, num_classes=10)
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    assert sanity(clf, x, y, correct, 0, None, ["linf", "l0"]) is None
    monkeypatch.setattr(PGDL0, "run", lambda self, clf, x, y, t, g: AttackOutput(x_adv=x))
    assert sanity(clf, x, y, correct, 0, None, ["linf"]) is None
    found = sanity(clf, x, y, correct, 0, None, ["linf", "l0"])
    assert found is not None and found.id == "RA008"
    assert "PGD-L0 at l0 eps 64 (every pixel)" in found.detail
