"""The L0 norms (robaudit/norms/l0.py) against their definitions: a pixel counts once whatever
its channels do, the projection onto the L0 ball ∩ box is the closest point (brute force),
and the engine counts and removes L0 budget violations through them."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from robaudit.classifier import Classifier
from robaudit.norms import get
from robaudit.norms.l0 import CHANGED, with_unit
from robaudit.threat import Threat
from robaudit.verification import TOLERANCE, verify_batch
from tests.helpers import Affine

PROFILE = settings(max_examples=40, deadline=None, derandomize=True, database=None)


def test_counts_pixels_not_channels_and_ignores_float_noise() -> None:
    d = torch.zeros(2, 3, 4, 4)
    d[0, :, 0, 0] = 0.5  # one pixel, all three channels
    d[0, 1, 2, 3] = -0.2  # a second pixel, one channel
    d[0, 0, 1, 1] = CHANGED / 2  # rounding noise: no change
    d[1, 2, 3, 3] = 1.0
    assert get("l0").measure(d).tolist() == [2.0, 1.0]
    assert get("l0-feature").measure(d).tolist() == [4.0, 1.0]
    assert get("l0").measure64(d).dtype == torch.float64
    assert get("l0").measure64(d).tolist() == [2.0, 1.0]


def test_a_feature_vector_counts_features() -> None:
    d = torch.tensor([[0.0, 0.3, -0.1, 0.0], [1.0, 1.0, 1.0, 1.0]])
    assert get("l0").measure(d).tolist() == [2.0, 4.0]
    assert get("l0").units((4,)) == 4 and get("l0").units((3, 8, 8)) == 64
    assert get("l0-feature").units((3, 8, 8)) == 192
    assert get("l0").covering(1.0, (3, 8, 8)) == 64.0


def test_engine_tolerance_is_the_l0_change_threshold() -> None:
    assert CHANGED == TOLERANCE


def _brute_force(xa: torch.Tensor, x: torch.Tensor, k: int, name: str) -> torch.Tensor:
    """The closest point of the L0 ball ∩ [0, 1] box, by trying every set of k units."""
    norm = get(name)
    g, c = norm.group(xa[None] - x[None])[0], norm.group(xa[None].clamp(0, 1))[0]
    units = g.shape[0]
    best, best_d = None, float("inf")
    for keep in itertools.combinations(range(units), min(k, units)):
        mask = torch.zeros(units, dtype=torch.bool)
        mask[list(keep)] = True
        cand = torch.where(mask[:, None], c, norm.group(x[None])[0])
        dist = float((cand - norm.group(xa[None])[0]).pow(2).sum())
        if dist < best_d - 1e-9:
            best, best_d = cand, dist
    assert best is not None
    return norm.ungroup(best[None], x[None])[0]


@pytest.mark.parametrize("name", ["l0", "l0-feature"])
@PROFILE
@given(seed=st.integers(0, 2**16), k=st.integers(0, 4), c=st.integers(1, 2))
def test_clip_is_the_closest_point_of_ball_and_box(name: str, seed: int, k: int, c: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, c, 2, 2, generator=g)
    xa = x + 1.5 * torch.randn(1, c, 2, 2, generator=g)
    norm = get(name)
    got = norm.clip(xa, x, k, (0.0, 1.0))
    want = _brute_force(xa[0], x[0], k, name)
    assert float(norm.measure(got - x)) <= k
    assert float((got[0] - xa[0]).pow(2).sum()) == pytest.approx(
        float((want - xa[0]).pow(2).sum()), abs=1e-5
    )


@pytest.mark.parametrize("name", ["l0", "l0-feature"])
@PROFILE
@given(
    seed=st.integers(0, 2**16),
    eps=st.integers(0, 20) | st.floats(0, 20),
    shape=st.sampled_from([(3, 4, 4), (1, 5, 3), (2, 7), (9,)]),
    lo=st.sampled_from([0.0, -1.0]),
    span=st.sampled_from([1.0, 255.0]),
)
def test_clip_is_in_ball_and_box_and_idempotent(
    name: str, seed: int, eps: float, shape: tuple[int, ...], lo: float, span: float
) -> None:
    norm = get(name)
    g = torch.Generator().manual_seed(seed)
    x = lo + span * torch.rand(3, *shape, generator=g)
    xa = x + span * torch.randn(3, *shape, generator=g)
    out = norm.clip(xa, x, eps, (lo, lo + span))
    assert float(out.min()) >= lo and float(out.max()) <= lo + span
    assert (norm.measure(out - x) <= int(eps + 1e-6)).all()
    assert torch.equal(norm.clip(out, x, eps, (lo, lo + span)), out)
    p = norm.project(xa - x, eps)
    assert (norm.measure(p) <= int(eps + 1e-6)).all() and torch.equal(norm.project(p, eps), p)
    unchanged = ~norm.changed(out - x)  # a unit not kept is the clean input exactly
    assert torch.equal(norm.group(out)[unchanged], norm.group(x)[unchanged])


def test_projection_keeps_the_largest_changes() -> None:
    d = torch.zeros(1, 2, 2, 2)
    d[0, 0, 0, 0], d[0, 1, 0, 0] = 0.3, 0.3  # pixel (0,0): squared change 0.18
    d[0, 0, 1, 1] = 0.4  # pixel (1,1): 0.16
    d[0, 1, 0, 1] = -0.5  # pixel (0,1): 0.25
    p = get("l0").project(d, 2)
    assert torch.equal(p[0, :, 0, 1], d[0, :, 0, 1]) and torch.equal(p[0, :, 0, 0], d[0, :, 0, 0])
    assert float(p[0, :, 1, 1].abs().sum()) == 0.0
    per = get("l0").project(torch.ones(3, 1, 2, 2), torch.tensor([0.0, 1.0, 4.0]))
    assert get("l0").measure(per).tolist() == [0.0, 1.0, 4.0]


def test_steepest_step_and_dual_on_the_unit_cube() -> None:
    grad = torch.randn(16, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    norm = get("l0")
    d = norm.steepest(grad)
    assert (norm.measure(d) == 1).all() and float(d.abs().max()) == 1.0
    # the best one-pixel change inside the unit cube gains the largest pixel's gradient mass
    gain = (grad * d).flatten(1).sum(dim=1)
    assert torch.allclose(gain, norm.dual(grad))
    brute = grad.abs().sum(dim=1).flatten(1).amax(dim=1)
    assert torch.allclose(norm.dual(grad), brute)


@pytest.mark.parametrize("name", ["l0", "l0-feature"])
def test_random_starts_hold_their_counts(name: str) -> None:
    like = torch.zeros(200, 3, 4, 4)
    norm = get(name)
    gen = torch.Generator().manual_seed(0)
    inside = norm.measure(norm.random_in_ball(like, 5, gen))
    assert (inside <= 5).all() and len(set(inside.tolist())) > 3  # spread over 0..5
    assert (norm.measure(norm.random_on_sphere(like, 5, gen)) == 5).all()
    assert (norm.measure(norm.random_on_sphere(like, 1000, gen)) == norm.units((3, 4, 4))).all()


def test_units_of_the_config() -> None:
    assert with_unit("l0", "feature") == "l0-feature" and with_unit("l0", "pixel") == "l0"
    with pytest.raises(ValueError, match="applies to l0 budgets only"):
        with_unit("linf", "feature")
    with pytest.raises(ValueError, match="contradicts"):
        with_unit("l0-feature", "pixel")
    assert get("l0").describe("5%") == "L0 5% (pixels)"


def test_verify_batch_counts_and_projects_l0_violations() -> None:
    """Candidates changing too many pixels are counted and projected onto ball ∩ box."""
    torch.manual_seed(0)
    clf = Classifier(Affine(torch.randn(12, 3), torch.zeros(3)), num_classes=3)
    x = torch.rand(4, 3, 2, 2)
    y = torch.zeros(4, dtype=torch.long)
    xa = x.clone()
    xa[0, :, 0, 0] = 1.0  # one pixel, three channels: inside a 1-pixel ball
    xa[1, 0, :, :] = 0.0  # four pixels: outside
    xa[2, 0, 0, 0] = 1.5  # one pixel, outside the box
    v = verify_batch(clf, x, xa, y, Threat("l0", 1))
    assert v.budget == 1 and v.bounds == 1
    assert (get("l0").measure(v.x_adv - x) <= 1).all()
    assert float(v.x_adv.max()) <= 1.0
    assert torch.equal(v.x_adv[0], xa[0]) and torch.equal(v.x_adv[3], x[3])
    # counted in features, the first candidate is three changes
    assert verify_batch(clf, x, xa, y, Threat("l0-feature", 1)).budget == 2
