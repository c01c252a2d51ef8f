"""Square Attack: query accounting, the ball and the box, determinism, access, strength."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import nn

from robaudit.attacks.base import ACCESS_FOR_REQUIRES, AttackOutput, get_attack
from robaudit.attacks.projections import flat_norm
from robaudit.attacks.square import (
    HALVINGS,
    Square,
    SquareParams,
    bump,
    l1_pattern,
    l2_pattern,
    propose,
    propose_l2,
    propose_linf,
    square_fraction,
    square_side,
)
from robaudit.classifier import AccessDenied, Classifier
from robaudit.engine import PlannedAttack, run_plan
from robaudit.models.digits import DigitsCNN
from robaudit.threat import Threat
from tests.helpers import RowCounter, one_thread

EPS = {"linf": 0.15, "l2": 0.8, "l1": 2.0}
NORMS = ("linf", "l2", "l1")


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    yield from one_thread()


@pytest.fixture(scope="module")
def model_and_data() -> tuple[DigitsCNN, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = DigitsCNN().eval()
    x = torch.rand(24, 1, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)  # labels = predictions, so every sample starts correct
    return model, x, y


def _score_view(model: nn.Module) -> Classifier:
    return Classifier(model, num_classes=10).restricted("score")


def _run(clf: Classifier, x: torch.Tensor, y: torch.Tensor, norm: str, seed: int = 0,
         eps: float | None = None, **params: Any) -> AttackOutput:  # fmt: skip
    threat = Threat(norm, EPS[norm] if eps is None else eps, "score")
    attack = Square(SquareParams(**params))
    return attack.run(clf, x.clone(), y.clone(), threat, torch.Generator().manual_seed(seed))


def test_registered_as_score_based() -> None:
    cls = get_attack("square")
    assert cls is Square and cls.requires == "scores" and cls.strength == "strong"
    assert ACCESS_FOR_REQUIRES[cls.requires] == "score"
    assert set(cls.norms) == {"linf", "l2", "l1"}


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("restarts", [1, 3])
def test_query_counts_are_exact_and_within_budget(
    norm: str, restarts: int, model_and_data: tuple
) -> None:
    model, x, y = model_and_data
    counted = RowCounter(model)
    clf = _score_view(counted)
    before = clf.counters.queries
    out = _run(clf, x, y, norm, queries=60, restarts=restarts)
    q = out.queries
    assert q is not None and q.dtype == torch.int64 and q.shape == (x.shape[0],)
    assert int(q.sum()) == clf.counters.queries - before == counted.rows
    assert int(q.min()) >= 1 and int(q.max()) <= 60
    assert out.claimed is not None
    # a sample the attack did not fool spent the whole budget; a fooled one stopped there
    assert bool((q[~out.claimed] == 60).all())


@pytest.mark.parametrize("norm", NORMS)
def test_inside_ball_and_bounds(norm: str, model_and_data: tuple) -> None:
    model, x, y = model_and_data
    out = _run(_score_view(model), x, y, norm, queries=80)
    xa = out.x_adv
    assert xa.shape == x.shape and torch.isfinite(xa).all()
    assert float(xa.min()) >= 0.0 and float(xa.max()) <= 1.0
    assert float(flat_norm(xa - x, norm).max()) <= EPS[norm] + 1e-6


@pytest.mark.parametrize("norm", NORMS)
def test_infinite_eps_stays_in_bounds(norm: str, model_and_data: tuple) -> None:
    model, x, y = model_and_data
    out = _run(_score_view(model), x, y, norm, eps=float("inf"), queries=30)
    assert torch.isfinite(out.x_adv).all()
    assert float(out.x_adv.min()) >= 0.0 and float(out.x_adv.max()) <= 1.0


@pytest.mark.parametrize("norm", NORMS)
def test_deterministic_per_seed(norm: str, model_and_data: tuple) -> None:
    model, x, y = model_and_data
    a = _run(_score_view(model), x, y, norm, seed=3, queries=50)
    b = _run(_score_view(model), x, y, norm, seed=3, queries=50)
    c = _run(_score_view(model), x, y, norm, seed=4, queries=50)
    assert torch.equal(a.x_adv, b.x_adv)
    assert a.queries is not None and b.queries is not None
    assert torch.equal(a.queries, b.queries)
    assert not torch.equal(a.x_adv, c.x_adv)


def test_score_view_refuses_gradients_and_decision_view_refuses_scores(
    model_and_data: tuple,
) -> None:
    model, x, y = model_and_data
    clf = _score_view(model)
    with pytest.raises(AccessDenied):
        clf.loss_and_grad(x, y, lambda logits, yy: logits.sum(dim=1))
    _run(clf, x, y, "linf", queries=5)  # scores are all it needs
    with pytest.raises(AccessDenied):
        _run(Classifier(model, num_classes=10).restricted("decision"), x, y, "linf", queries=5)


@pytest.mark.parametrize("norm", NORMS)
def test_claimed_samples_are_really_misclassified(norm: str, model_and_data: tuple) -> None:
    model, x, y = model_and_data
    out = _run(_score_view(model), x, y, norm, queries=150)
    assert out.claimed is not None and bool(out.claimed.any())
    with torch.no_grad():
        pred = model(out.x_adv).argmax(1)
    # a deterministic model: what the attack saw is exactly what a fresh pass sees
    assert torch.equal(pred != y, out.claimed)


@pytest.mark.parametrize("norm", NORMS)
def test_more_queries_are_no_weaker(norm: str, model_and_data: tuple) -> None:
    model, x, y = model_and_data
    eps = EPS[norm] / 2  # small enough that the budget matters
    fooled = {}
    for budget in (10, 300):
        total = 0
        for seed in range(3):
            out = _run(_score_view(model), x, y, norm, seed=seed, eps=eps, queries=budget)
            with torch.no_grad():
                total += int((model(out.x_adv).argmax(1) != y).sum())
        fooled[budget] = total
    assert fooled[300] >= fooled[10]
    assert fooled[300] > 0


@pytest.mark.parametrize("norm", NORMS)
def test_loss_trace_is_short_and_never_falls(norm: str, model_and_data: tuple) -> None:
    model, x, y = model_and_data
    out = _run(_score_view(model), x, y, norm, eps=EPS[norm] / 3, queries=500)
    tr = out.loss_trace
    assert tr is not None and 2 <= len(tr) <= 200
    assert all(b >= a - 1e-6 for a, b in itertools.pairwise(tr))


@pytest.mark.parametrize("norm", NORMS)
def test_targeted_hits_only_wrong_classes(norm: str, model_and_data: tuple) -> None:
    model, x, y = model_and_data
    counted = RowCounter(model)
    clf = _score_view(counted)
    out = _run(clf, x, y, norm, queries=150, targeted=True, loss="ce")
    assert out.queries is not None and int(out.queries.sum()) == counted.rows
    assert out.claimed is not None
    with torch.no_grad():
        assert torch.equal(model(out.x_adv).argmax(1) != y, out.claimed)


@pytest.mark.parametrize("norm", NORMS)
def test_color_images(norm: str) -> None:
    """3×32×32 inputs: squares cover all channels, per-channel signs, same guarantees."""
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 15 * 15, 10)
    ).eval()
    x = torch.rand(6, 3, 32, 32)
    with torch.no_grad():
        y = model(x).argmax(1)
    eps = {"linf": 8 / 255, "l2": 0.5, "l1": 8.0}[norm]
    clf = _score_view(model)
    out = _run(clf, x, y, norm, eps=eps, queries=40)
    assert out.x_adv.shape == x.shape
    assert float(flat_norm(out.x_adv - x, norm).max()) <= eps + 1e-6
    assert out.queries is not None and int(out.queries.sum()) == clf.counters.queries


def test_schedule_halves_at_the_papers_iterations() -> None:
    assert square_fraction(0, 10_000, 0.8) == 0.8
    for j, t in enumerate(HALVINGS):
        assert square_fraction(t, 10_000, 0.8) == 0.8 / 2**j
        assert square_fraction(t + 1, 10_000, 0.8) == 0.8 / 2 ** (j + 1)
    assert square_fraction(9_999, 10_000, 0.8) == 0.8 / 2**9
    # rescaled to a 1000-query budget: iteration 1 is iteration 10 of the long run
    assert square_fraction(1, 1000, 0.8) == 0.8 and square_fraction(2, 1000, 0.8) == 0.4
    assert square_side(0.8, 8, 8) == 7 and square_side(1e-4, 8, 8) == 1
    assert square_side(1.0, 8, 6) == 6


def test_bump_and_l2_pattern_shapes() -> None:
    b = bump(5, 5)
    assert b.shape == (5, 5) and float(b[2, 2]) == float(b.max()) and float(b.min()) > 0
    assert torch.equal(b, b.t()) and torch.equal(b, b.flip(0))
    for h in (1, 2, 3, 6, 7):
        eta = l2_pattern(h)
        assert eta.shape == (h, h)
        assert abs(float(eta.norm()) - 1.0) < 1e-5
    eta = l2_pattern(6)
    assert float(eta[:, :3].min()) >= 0 and float(eta[:, 3:].max()) <= 0


def test_l2_update_keeps_norm_at_eps_and_changes_one_region() -> None:
    """Without the box in the way the mass moves but the norm stays eps (Algorithm 3)."""
    g = torch.Generator().manual_seed(0)
    x0 = torch.zeros(16, 3, 12, 12)
    xcur = torch.randn(16, 3, 12, 12, generator=g)
    xcur = xcur / flat_norm(xcur, "l2").view(-1, 1, 1, 1) * 0.5  # norm 0.5 of eps 2.0: slack
    cand = propose_l2(x0, xcur, 2.0, 4, (-100.0, 100.0), g)
    assert torch.allclose(flat_norm(cand - x0, "l2"), torch.full((16,), 2.0), atol=1e-4)
    changed = (cand != xcur).any(dim=1).flatten(1).sum(dim=1)
    assert int(changed.max()) <= 2 * 16  # at most the two 4×4 squares


def test_l1_pattern_is_a_unit_l1_pair_of_sharper_bumps() -> None:
    for h in (3, 5, 7):
        eta = l1_pattern(h)
        assert eta.shape == (h, h) and abs(float(eta.abs().sum()) - 1.0) < 1e-6
        k = h // 2
        assert float(eta[:, :k].min()) >= 0 and float(eta[:, k:].max()) <= 0
    # power 4 puts more of the mass at the centre than the L2 pattern's power 2
    peak = {p: float(bump(5, 5, p).max() / bump(5, 5, p).sum()) for p in (2, 4)}
    assert peak[4] > peak[2]


def test_l1_update_spends_the_whole_budget_and_changes_two_squares_at_most() -> None:
    """Without the box in the way, each L1 candidate carries exactly eps (the mass of W1 ∪ W2
    moves into W1, the unused budget with it), and only the two squares change."""
    g = torch.Generator().manual_seed(0)
    x0 = torch.zeros(16, 1, 12, 12)
    xcur = torch.randn(16, 1, 12, 12, generator=g)
    xcur = xcur / flat_norm(xcur, "l1").view(-1, 1, 1, 1) * 1.0  # norm 1 of eps 3: slack
    cand = propose("l1", x0, xcur, 3.0, 5, (-100.0, 100.0), g)
    assert torch.allclose(flat_norm(cand - x0, "l1"), torch.full((16,), 3.0), rtol=1e-5)
    changed = (cand != xcur).flatten(1).sum(dim=1)
    assert int(changed.max()) <= 2 * 25


def test_l1_candidates_stay_in_the_ball_and_box_on_saturated_digits() -> None:
    """Digits sit mostly at 0 or 1: many proposals push out of the box; every candidate is
    still inside both the L1 ball and [0, 1]."""
    g = torch.Generator().manual_seed(1)
    x0 = (torch.rand(32, 1, 8, 8, generator=g) > 0.5).float()
    xcur = x0.clone()
    for h in (7, 5, 3, 3):
        cand = propose("l1", x0, xcur, 1.5, h, (0.0, 1.0), g)
        assert float(cand.min()) >= 0.0 and float(cand.max()) <= 1.0
        assert float(flat_norm(cand - x0, "l1").max()) <= 1.5
        xcur = cand


def test_linf_update_sets_one_square_to_a_vertex() -> None:
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((32, 3, 10, 10), 0.5)
    xcur = x0 + 0.1 * (torch.randint(0, 2, x0.shape, generator=g) * 2 - 1)
    cand = propose_linf(x0, xcur, 0.1, 3, (0.0, 1.0), g)
    diff = (cand - x0).abs()
    assert torch.allclose(diff, torch.full_like(diff, 0.1), atol=1e-6)
    changed = (cand != xcur).any(dim=1).flatten(1)
    assert bool((changed.sum(dim=1) >= 1).all()) and int(changed.sum(dim=1).max()) <= 9


@pytest.mark.parametrize("norm", NORMS)
def test_engine_sees_exact_per_sample_queries(norm: str, model_and_data: tuple) -> None:
    model, x, y = model_and_data
    clf = Classifier(model, num_classes=10)
    threat = Threat(norm, EPS[norm], "score")
    plan = [PlannedAttack(0, Square(SquareParams(queries=40)), threat)]
    res = run_plan(clf, x, y, plan, seed=0, batch_size=10)
    cell = res.cells[0]
    assert cell.query_mismatch == 0 and cell.access_used == "score"
    assert cell.sample_queries is not None
    assert int(cell.sample_queries.clamp(min=0).sum()) == cell.queries
    assert cell.budget_violations == 0 and cell.bounds_violations == 0


@pytest.mark.parametrize("norm", NORMS)
def test_zero_eps_spends_one_query(norm: str, model_and_data: tuple) -> None:
    model, x, y = model_and_data
    out = _run(_score_view(model), x, y, norm, eps=0.0, queries=50, restarts=2)
    assert out.queries is not None and bool((out.queries == 1).all())
    assert torch.equal(out.x_adv, x)
