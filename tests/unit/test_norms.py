"""Norms as objects (robaudit/norms): each one's ball, projection, steepest step, random
starts and covering radius checked against its definition, not against itself."""

from __future__ import annotations

import pytest
import torch

from robaudit import norms
from robaudit.norms import get

# the Lp norms (homogeneous, real-valued budgets); the L0 counts have their own tests
# (tests/unit/test_l0_norm.py): their balls are not scaled copies of a unit ball
LP = sorted(n for n, v in norms.REGISTRY.items() if not v.counts)

@pytest.fixture
def batch() -> torch.Tensor:
    return torch.randn(64, 3, 5, 5, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", LP)
def test_projection_lands_in_the_ball_and_leaves_the_inside_alone(
    name: str, batch: torch.Tensor
) -> None:
    norm = get(name)
    eps = 0.7
    p = norm.project(batch, eps)
    assert (norm.measure(p) <= eps * (1 + 1e-5)).all()
    assert torch.allclose(norm.project(p, eps), p, atol=1e-6)  # idempotent
    small = batch / (norm.measure(batch).view(-1, 1, 1, 1) + 1e-9) * 0.5 * eps
    assert torch.equal(norm.project(small, eps), small)
    per = torch.linspace(0.1, 2.0, batch.shape[0])  # per-sample radii
    assert (norm.measure(norm.project(batch, per)) <= per * (1 + 1e-5)).all()


def test_l1_projection_is_the_closest_point(batch: torch.Tensor) -> None:
    """Against a bisection on the soft threshold: sum(max(|v| - t, 0)) = eps."""
    eps = 1.5
    got = get("l1").project(batch, eps).flatten(1)
    a = batch.flatten(1).abs().double()
    lo, hi = torch.zeros(a.shape[0], dtype=torch.float64), a.amax(dim=1)
    for _ in range(200):
        mid = (lo + hi) / 2
        over = (a - mid[:, None]).clamp(min=0).sum(dim=1) > eps
        lo, hi = torch.where(over, mid, lo), torch.where(over, hi, mid)
    want = batch.flatten(1).sign() * (a - hi[:, None]).clamp(min=0).float()
    assert torch.allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("name", LP)
def test_steepest_direction_is_unit_and_attains_the_dual_norm(
    name: str, batch: torch.Tensor
) -> None:
    norm = get(name)
    d = norm.steepest(batch)
    assert torch.allclose(norm.measure(d), torch.ones(batch.shape[0]), atol=1e-5)
    # max of g.d over the unit ball is the dual norm of g (Hoelder)
    gain = (batch.flatten(1) * d.flatten(1)).sum(dim=1)
    assert torch.allclose(gain, norm.dual(batch), rtol=1e-5)
    # and no other unit vector does better
    other = norm.project(torch.randn_like(batch), 1.0)
    assert ((batch.flatten(1) * other.flatten(1)).sum(dim=1) <= gain + 1e-4).all()


@pytest.mark.parametrize("name", LP)
def test_random_starts_are_in_the_ball_and_on_the_sphere(name: str, batch: torch.Tensor) -> None:
    norm = get(name)
    gen = torch.Generator().manual_seed(1)
    inside = norm.random_in_ball(batch, 0.3, gen)
    assert inside.shape == batch.shape and (norm.measure(inside) <= 0.3 * (1 + 1e-5)).all()
    assert norm.measure(inside).std() > 0  # not all on the sphere (or all at zero)
    on = norm.random_on_sphere(batch, 0.3, gen)
    assert torch.allclose(norm.measure(on), torch.full((batch.shape[0],), 0.3), atol=1e-5)


@pytest.mark.parametrize("name", sorted(norms.REGISTRY))
def test_covering_radius_reaches_the_far_corner_of_the_box(name: str) -> None:
    norm = get(name)
    dims, span = 75, 2.0
    corner = torch.full((1, dims), span)  # from one corner of [0, span]^d to the other
    assert norm.covering_radius(span, dims) == pytest.approx(float(norm.measure(corner)[0]))
    assert torch.allclose(norm.measure64(corner), norm.measure(corner).double())


def test_unknown_norm_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown norm 'l3'; valid: linf, l2, l1"):
        get("l3")
