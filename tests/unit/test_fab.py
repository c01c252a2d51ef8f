"""FAB and FAB-T: the hyperplane-and-box projection, and the attack on models whose exact
answer is known.

On a multi-class affine model away from the box the smallest perturbation that changes the
label is ``min_k |z_k − z_y| / ‖w_k − w_y‖_dual``. FAB's overshoot (eta) and backward step
(beta) make it settle a fraction of a percent above that, never below. The projection is
checked against an independent bisection of its one-dimensional dual problem.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from pydantic import ValidationError

from robaudit.attacks.base import param_table, registry
from robaudit.attacks.fab import (
    FAB,
    FABT,
    FABParams,
    FABTParams,
    _random_start,
    project_hyperplane_box,
)
from robaudit.attacks.projections import flat_norm
from robaudit.classifier import Classifier
from robaudit.models.digits import DigitsCNN
from robaudit.threat import Threat
from tests.helpers import Affine, affine_l1_distance, l1_lp, one_thread

C, D = 10, 16
NORMS = ("l2", "linf", "l1")
INF = {norm: Threat(norm, float("inf"), label="inf") for norm in NORMS}
FAST = FABParams(steps=40)
FAST_T = FABTParams(steps=40)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    yield from one_thread()


def _affine(n: int = 24, classes: int = C) -> tuple[Classifier, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    model = Affine(torch.randn(D, classes, generator=g), 0.3 * torch.randn(classes, generator=g))
    x = 0.5 + 0.05 * torch.randn(n, 1, 4, 4, generator=g)  # away from the box's faces
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    return Classifier(model, num_classes=classes), x, y


def _exact_distance(clf: Classifier, x: torch.Tensor, y: torch.Tensor, norm: str) -> torch.Tensor:
    """Distance to the nearest decision boundary of the affine model (no box in reach)."""
    model = clf.model
    assert isinstance(model, Affine)
    with torch.no_grad():
        z = model(x)
    gaps = (z.gather(1, y[:, None]) - z).abs()
    dirs = model.w.T[None] - model.w.T[y][:, None]  # N×C×D, w_k − w_y
    dual = {"l2": dirs.norm(dim=2), "linf": dirs.abs().sum(dim=2), "l1": dirs.abs().amax(dim=2)}[
        norm
    ]
    dist = gaps / dual
    dist[torch.arange(x.shape[0]), y] = float("inf")
    return dist.amin(dim=1)


def _fooled(clf: Classifier, xa: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return clf.model(xa).argmax(dim=1) != y


# -- the projection ----------------------------------------------------------------------


def _bisect(
    w: torch.Tensor, r: torch.Tensor, low: torch.Tensor, high: torch.Tensor, norm: str
) -> torch.Tensor:
    """Independent oracle: δ(λ) = clip(λ·v) with g(λ) = w·δ(λ) = r found by bisection."""
    v = w if norm == "l2" else w.sign()

    def delta(lam: torch.Tensor) -> torch.Tensor:
        return torch.minimum(torch.maximum(lam[:, None] * v, low), high)

    a = torch.full_like(r, -1e6)
    b = torch.full_like(r, 1e6)
    for _ in range(200):
        mid = (a + b) / 2
        up = (w * delta(mid)).sum(dim=1) < r
        a, b = torch.where(up, mid, a), torch.where(up, b, mid)
    return delta((a + b) / 2)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_projection_matches_an_independent_bisection(norm: str) -> None:
    g = torch.Generator().manual_seed(0)
    m, d = 300, 20
    w = torch.randn(m, d, generator=g, dtype=torch.float64)
    w[:10, :5] = 0  # coordinates the hyperplane ignores
    z = torch.rand(m, d, generator=g, dtype=torch.float64)
    z[:, :3] = 0.0  # points on the box's faces
    r = 6 * torch.randn(m, generator=g, dtype=torch.float64)  # some rows out of reach
    low, high = -z, 1 - z
    got = project_hyperplane_box(w, r, low, high, norm)
    assert bool(((got >= low) & (got <= high)).all())
    torch.testing.assert_close(got, _bisect(w, r, low, high, norm), atol=1e-7, rtol=0)
    reach = torch.where(w * r.sign()[:, None] > 0, high, low)
    feasible = (w * reach).sum(dim=1).abs() >= r.abs()
    assert 50 < int(feasible.sum()) < m, "both reachable and unreachable hyperplanes are tested"
    torch.testing.assert_close((w * got).sum(dim=1)[feasible], r[feasible])
    # out of reach: the box corner closest to the hyperplane
    corner = torch.where(w * r.sign()[:, None] > 0, high, torch.where(w == 0, 0.0, low))
    torch.testing.assert_close(got[~feasible], corner[~feasible])


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_projection_without_the_box_is_the_closed_form(norm: str) -> None:
    g = torch.Generator().manual_seed(1)
    w = torch.randn(8, 30, generator=g, dtype=torch.float64)
    r = 0.01 * torch.randn(8, generator=g, dtype=torch.float64)
    big = torch.full_like(w, 100.0)
    got = project_hyperplane_box(w, r, -big, big, norm)
    if norm == "l2":
        want = r[:, None] * w / (w * w).sum(dim=1, keepdim=True)
    else:
        want = r[:, None] * w.sign() / w.abs().sum(dim=1, keepdim=True)
    torch.testing.assert_close(got, want)


def test_l1_projection_is_optimal_against_a_linear_program() -> None:
    g = torch.Generator().manual_seed(0)
    m, d = 60, 12
    w = torch.randn(m, d, generator=g, dtype=torch.float64)
    w[:8, :4] = 0  # coordinates the hyperplane ignores
    z = torch.rand(m, d, generator=g, dtype=torch.float64)
    z[:, :2] = 0.0  # points on the box's faces
    r = 3 * torch.randn(m, generator=g, dtype=torch.float64)  # some rows out of reach
    low, high = -z, 1 - z
    got = project_hyperplane_box(w, r, low, high, "l1")
    assert bool(((got >= low) & (got <= high)).all())
    reach = torch.where(w * r.sign()[:, None] > 0, high, low)
    feasible = (w * reach).sum(dim=1).abs() >= r.abs()
    assert 10 < int(feasible.sum()) < m, "both reachable and unreachable hyperplanes are tested"
    for i in range(m):
        best = l1_lp(w[i], float(r[i]), low[i], high[i])
        assert (best is not None) == bool(feasible[i])
        if best is not None:
            assert abs(float((w[i] * got[i]).sum()) - float(r[i])) < 1e-9
            assert abs(float(got[i].abs().sum()) - best) < 1e-7, f"row {i}: not the L1 optimum"
    corner = torch.where(w * r.sign()[:, None] > 0, high, torch.where(w == 0, 0.0, low))
    torch.testing.assert_close(got[~feasible], corner[~feasible])


def test_l1_projection_without_the_box_moves_the_largest_weight() -> None:
    """Far from the box the L1 answer is one coordinate, the largest |w_i|, by r / w_i."""
    g = torch.Generator().manual_seed(1)
    w = torch.randn(8, 30, generator=g, dtype=torch.float64)
    r = 0.01 * torch.randn(8, generator=g, dtype=torch.float64)
    big = torch.full_like(w, 100.0)
    got = project_hyperplane_box(w, r, -big, big, "l1")
    top = w.abs().argmax(dim=1, keepdim=True)
    want = torch.zeros_like(w).scatter(1, top, r[:, None] / w.gather(1, top))
    torch.testing.assert_close(got, want)


# -- the attack --------------------------------------------------------------------------


def test_registered_as_minimal_norm_gradient_attacks_with_documented_params() -> None:
    reg = registry()
    assert reg["fab"] is FAB and reg["fab-t"] is FABT
    for cls in (FAB, FABT):
        assert cls.minimal_norm and cls.requires == "gradients" and cls.strength == "strong"
        assert set(cls.norms) == {"linf", "l2", "l1"}
        rows = param_table(cls)
        assert rows and all(r["description"] for r in rows), cls.name
    p, t = FABParams(), FABTParams()
    assert (p.steps, p.restarts, p.alpha_max, p.eta, p.beta) == (100, 1, 0.1, 1.05, 0.9)
    assert t.targets == 9 and t.steps == 100
    assert "targets" not in FABParams.model_fields
    assert 0 < FAB().cost() < FABT().cost()


@pytest.mark.parametrize(
    ("params", "values"),
    [
        (FABParams, {"steps": 0}),
        (FABParams, {"beta": 1.0}),
        (FABParams, {"eta": 0.9}),
        (FABParams, {"alpha_max": -0.1}),
        (FABParams, {"targets": 3}),
        (FABTParams, {"targets": 0}),
    ],
)
def test_bad_parameters_are_rejected(params: type, values: dict) -> None:
    with pytest.raises(ValidationError):
        params(**values)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("cls", [FAB, FABT])
def test_within_a_percent_of_the_exact_distance_on_an_affine_model(cls: type, norm: str) -> None:
    clf, x, y = _affine()
    dist = _exact_distance(clf, x, y, norm)
    attack = cls(FAST if cls is FAB else FAST_T)
    out = attack.run(clf, x, y, INF[norm], torch.Generator().manual_seed(0))
    assert _fooled(clf, out.x_adv, y).all()
    assert out.claimed is not None and bool(out.claimed.all())
    ratio = flat_norm(out.x_adv - x, norm) / dist
    assert float(ratio.min()) >= 1 - 1e-5 and float(ratio.max()) <= 1.01, ratio


@pytest.mark.parametrize("norm", NORMS)
def test_fab_t_with_one_target_follows_that_target(norm: str) -> None:
    """Guided by the top wrong class only, the answer is never below the exact distance and
    reaches it where that class's boundary is the closest one."""
    clf, x, y = _affine()
    dist = _exact_distance(clf, x, y, norm)
    xa = FABT(FABTParams(steps=40, targets=1)).run(clf, x, y, INF[norm], torch.Generator()).x_adv
    assert _fooled(clf, xa, y).all()
    ratio = flat_norm(xa - x, norm) / dist
    assert float(ratio.min()) >= 1 - 1e-5
    assert float(ratio.median()) <= 1.01


def test_fab_t_targets_are_capped_at_the_other_classes() -> None:
    clf, x, y = _affine(8, classes=3)
    before = clf.counters.grad_evals
    xa = FABT(FABTParams(steps=5, targets=9)).run(clf, x, y, INF["l2"], torch.Generator()).x_adv
    assert clf.counters.grad_evals - before == 8 * 2 * 5  # 2 targets × 5 steps, one each
    assert _fooled(clf, xa, y).all()


@pytest.mark.parametrize("cls", [FAB, FABT])
def test_gradients_counted_per_class_and_step(cls: type) -> None:
    """fab: C − 1 gradients per step; fab-t: one per step and target; the classifier counts."""
    clf, x, y = _affine(6)
    params = FABParams(steps=7, restarts=2) if cls is FAB else FABTParams(steps=7, targets=3)
    cls(params).run(clf, x, y, Threat("l2", 0.5), torch.Generator().manual_seed(0))
    per_sample = 7 * 2 * (C - 1) if cls is FAB else 7 * 3
    assert clf.counters.grad_evals == 6 * per_sample
    assert clf.counters.queries > clf.counters.grad_evals  # plus the forward checks


def test_box_constraint_is_respected_when_active() -> None:
    """Digits-like inputs sitting on the box's faces: every answer stays in [0, 1], is
    misclassified, and is no closer than the unconstrained exact distance."""
    clf, _, _ = _affine()
    g = torch.Generator().manual_seed(5)
    x = (torch.rand(24, 1, 4, 4, generator=g) > 0.5).float()
    with torch.no_grad():
        y = clf.model(x).argmax(dim=1)
    for norm in NORMS:
        dist = _exact_distance(clf, x, y, norm)
        xa = FAB(FAST).run(clf, x, y, INF[norm], torch.Generator()).x_adv
        assert float(xa.min()) >= 0.0 and float(xa.max()) <= 1.0
        fooled = _fooled(clf, xa, y)
        assert float(fooled.float().mean()) >= 0.9
        assert bool((flat_norm(xa - x, norm)[fooled] >= dist[fooled] * (1 - 1e-5)).all())


def test_binary_model_has_one_class_to_linearize() -> None:
    clf, x, y = _affine(16, classes=2)
    for norm in NORMS:
        dist = (
            affine_l1_distance(clf.model, x, y)
            if norm == "l1"
            else _exact_distance(clf, x, y, norm)
        )
        xa = FAB(FAST).run(clf, x, y, INF[norm], torch.Generator()).x_adv
        assert _fooled(clf, xa, y).all()
        assert float((flat_norm(xa - x, norm) / dist).max()) <= 1.01


@pytest.fixture(scope="module")
def digits() -> tuple[Classifier, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = DigitsCNN().eval()
    x = torch.rand(16, 1, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    return Classifier(model, num_classes=10), x, y


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("cls", [FAB, FABT])
def test_on_a_cnn_answers_are_real_bounded_and_deterministic(
    cls: type, norm: str, digits: tuple
) -> None:
    clf, x, y = digits
    params = FABParams(steps=20, restarts=2) if cls is FAB else FABTParams(steps=10, restarts=2)
    threat = Threat(norm, {"linf": 0.3, "l2": 1.0, "l1": 3.0}[norm])
    outs = [cls(params).run(clf, x, y, threat, torch.Generator().manual_seed(7)) for _ in "ab"]
    xa, claimed = outs[0].x_adv, outs[0].claimed
    assert torch.equal(xa, outs[1].x_adv), "same seed, same answer"
    assert float(xa.min()) >= 0.0 and float(xa.max()) <= 1.0
    assert claimed is not None
    fooled = _fooled(clf, xa, y)  # a fresh forward pass outside the attack
    assert torch.equal(fooled, claimed)
    assert float(fooled.float().mean()) >= 0.9
    moved = (xa != x).flatten(1).any(dim=1)
    assert torch.equal(moved, fooled), "a sample not fooled comes back unchanged"


def test_restarts_only_ever_shrink_the_answer(digits: tuple) -> None:
    """The first restart starts at the clean input whatever the seed; later ones can only
    replace an answer by a smaller one."""
    clf, x, y = digits
    threat = Threat("linf", 0.3)
    one = FAB(FABParams(steps=20)).run(clf, x, y, threat, torch.Generator().manual_seed(1))
    three = FAB(FABParams(steps=20, restarts=3)).run(
        clf, x, y, threat, torch.Generator().manual_seed(1)
    )
    n1, n3 = flat_norm(one.x_adv - x, "linf"), flat_norm(three.x_adv - x, "linf")
    f1, f3 = _fooled(clf, one.x_adv, y), _fooled(clf, three.x_adv, y)
    assert bool((f3 >= f1).all())
    assert bool((n3[f1] <= n1[f1] + 1e-7).all())


def test_eps_is_not_a_cap() -> None:
    """With one restart eps plays no part: the same answer at any eps, beyond it if need be."""
    clf, x, y = _affine(8)
    small = FAB(FAST).run(clf, x, y, Threat("l2", 0.01), torch.Generator()).x_adv
    unbounded = FAB(FAST).run(clf, x, y, INF["l2"], torch.Generator()).x_adv
    assert torch.equal(small, unbounded)
    assert float(flat_norm(small - x, "l2").min()) > 0.01


@pytest.mark.parametrize("norm", NORMS)
def test_random_starts_lie_at_the_radius_and_follow_the_seed(norm: str) -> None:
    x0 = torch.full((5, 1, 4, 4), 0.5)
    radius = torch.tensor([0.0, 0.01, 0.05, 0.1, 0.2])
    a = _random_start(x0, radius, norm, (0.0, 1.0), torch.Generator().manual_seed(3))
    b = _random_start(x0, radius, norm, (0.0, 1.0), torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    torch.testing.assert_close(flat_norm(a - x0, norm), radius)


def test_misclassified_inputs_come_back_unchanged_and_claimed() -> None:
    clf, x, y = _affine(8)
    wrong = y.clone()
    wrong[:3] = (y[:3] + 1) % C  # labels the model disagrees with: already "fooled"
    out = FAB(FAST).run(clf, x, wrong, INF["l2"], torch.Generator())
    assert torch.equal(out.x_adv[:3], x[:3])
    assert out.claimed is not None and bool(out.claimed.all())
    assert bool((flat_norm(out.x_adv[3:] - x[3:], "l2") > 0).all())


@pytest.mark.parametrize("cls", [FAB, FABT])
def test_nothing_found_gives_the_clean_input_back(cls: type) -> None:
    """A model with zero gradients everywhere: no step can move, the clean input returns."""
    model = Affine(torch.zeros(D, C), torch.arange(C, dtype=torch.float32))
    clf = Classifier(model, num_classes=C)
    x = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    y = torch.full((6,), C - 1)
    params = FABParams(steps=5, restarts=2) if cls is FAB else FABTParams(steps=5, restarts=2)
    out = cls(params).run(clf, x, y, INF["linf"], torch.Generator())
    # restarts move the start, but nothing there is misclassified: nothing to return
    assert torch.equal(out.x_adv, x)
    assert out.claimed is not None and not bool(out.claimed.any())


def test_empty_batch() -> None:
    clf, x, y = _affine(4)
    out = FAB(FAST).run(clf, x[:0], y[:0], INF["l2"], torch.Generator())
    assert out.x_adv.shape == (0, 1, 4, 4)


def test_refuses_other_norms() -> None:
    clf, x, y = _affine(2)
    with pytest.raises(ValueError, match="supports linf and l2 and l1"):
        FAB(FAST).run(clf, x, y, Threat("l0", 1.0), torch.Generator())
