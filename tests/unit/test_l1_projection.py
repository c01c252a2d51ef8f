"""The exact projection onto the L1 ball ∩ the input box (robaudit.norms.l1.project_box),
checked against solvers that do not share its sorting: a float64 bisection on the soft
threshold, and scipy's SLSQP on the quadratic program itself; then hypothesis properties."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from robaudit.norms import get
from robaudit.norms.l1 import project_box

PROFILE = settings(max_examples=60, deadline=None, derandomize=True, database=None)


def _bisect(v: torch.Tensor, x: torch.Tensor, eps: float, lo: float, hi: float) -> torch.Tensor:
    """Oracle 1: the nearest point by bisection on λ (float64, 200 halvings per sample)."""
    v64, x64 = v.double(), x.double()
    cap = torch.where(v64 > 0, hi - x64, x64 - lo).clamp(min=0)
    a = v64.abs()

    def size(lam: torch.Tensor) -> torch.Tensor:
        return torch.minimum((a - lam[:, None]).clamp(min=0), cap).sum(dim=1)

    left, right = torch.zeros(a.shape[0], dtype=torch.float64), a.amax(dim=1) + 1
    for _ in range(200):
        mid = (left + right) / 2
        over = size(mid) > eps
        left, right = torch.where(over, mid, left), torch.where(over, right, mid)
    lam = torch.where(size(torch.zeros_like(left)) <= eps, torch.zeros_like(right), right)
    return x64 + v64.sign() * torch.minimum((a - lam[:, None]).clamp(min=0), cap)


def _slsqp(v: torch.Tensor, x: torch.Tensor, eps: float, lo: float, hi: float) -> torch.Tensor:
    """Oracle 2: the quadratic program min ‖d − v‖² over d = p − q, p, q ≥ 0, Σ(p + q) ≤ eps,
    lo ≤ x + d ≤ hi, solved by scipy for one small sample."""
    import numpy as np
    from scipy.optimize import minimize

    vv, xx, n = v.double().numpy(), x.double().numpy(), v.numel()

    def objective(z: np.ndarray) -> float:
        return float(((z[:n] - z[n:] - vv) ** 2).sum())

    cons = [
        {"type": "ineq", "fun": lambda z: eps - z.sum()},
        {"type": "ineq", "fun": lambda z: hi - (xx + z[:n] - z[n:])},
        {"type": "ineq", "fun": lambda z: (xx + z[:n] - z[n:]) - lo},
    ]
    res = minimize(objective, np.zeros(2 * n), method="SLSQP", bounds=[(0, None)] * (2 * n),
                   constraints=cons, options={"ftol": 1e-14, "maxiter": 1000})  # fmt: skip
    return torch.from_numpy(xx + res.x[:n] - res.x[n:])


def _sample(seed: int, n: int, d: int, lo: float, hi: float, spread: float,
            on_faces: bool = True) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Clean points in the box (a quarter of their coordinates on a face) and points to
    project: inside, just outside and far outside the box."""
    g = torch.Generator().manual_seed(seed)
    x = lo + (hi - lo) * torch.rand(n, d, generator=g)
    if on_faces:
        r = torch.rand(n, d, generator=g)
        x = torch.where(r < 0.12, torch.full_like(x, lo), torch.where(r > 0.88, hi, x))
    v = spread * (hi - lo) * torch.randn(n, d, generator=g)
    return x, x + v


BOXES = [(0.0, 1.0), (-1.0, 1.0), (0.0, 255.0), (-0.25, 0.25)]


@pytest.mark.parametrize(("lo", "hi"), BOXES)
@pytest.mark.parametrize("spread", [0.05, 0.5, 3.0])
@pytest.mark.parametrize("share", [0.0, 1e-3, 0.05, 0.3, 1.0, 1e6])
def test_matches_the_bisection_oracle(lo: float, hi: float, spread: float, share: float) -> None:
    d = 50
    x, xa = _sample(int(1000 * spread + 7 * share) % 9973, 64, d, lo, hi, spread)
    eps = share * (hi - lo) * d  # 0, a sliver, ..., the whole box, far beyond (box only)
    got = project_box(xa, x, eps, (lo, hi)).double()
    want = _bisect(xa - x, x, eps, lo, hi)
    assert torch.allclose(got, want, rtol=0, atol=2e-6 * (hi - lo))
    if share == 0.0:
        assert torch.equal(got, x.double())
    if share >= 1.0:  # the ball holds the whole box: the answer is plain clipping
        assert torch.equal(got.float(), xa.clamp(lo, hi))


@pytest.mark.parametrize("seed", range(6))
def test_matches_a_quadratic_program_solver(seed: int) -> None:
    lo, hi = (0.0, 1.0) if seed % 2 else (-1.0, 2.0)
    x, xa = _sample(seed, 1, 8, lo, hi, spread=0.6)
    eps = [0.05, 0.4, 1.5][seed % 3] * (hi - lo)
    got = project_box(xa, x, eps, (lo, hi)).double()[0]
    want = _slsqp((xa - x)[0], x[0], eps, lo, hi)
    assert torch.allclose(got, want, atol=1e-5), (got, want)


def test_points_already_inside_are_returned_unchanged() -> None:
    x, xa = _sample(3, 32, 40, 0.0, 1.0, spread=0.02)
    xa = xa.clamp(0, 1)
    radius = (xa.double() - x.double()).abs().sum(dim=1)
    out = project_box(xa, x, radius + 1e-9, (0.0, 1.0))  # per-sample radii, each just enough
    assert torch.equal(out, xa)


def test_beats_clipping_after_the_ball_projection() -> None:
    """Clipping after the ball-only projection is feasible but not the nearest point: the
    exact projection is never farther and is strictly nearer where the box cuts in."""
    x, xa = _sample(5, 64, 30, 0.0, 1.0, spread=1.0)
    eps = 3.0
    exact = project_box(xa, x, eps, (0.0, 1.0))
    clipped = (x + get("l1").project(xa - x, eps)).clamp(0, 1)
    de, dc = (exact - xa).norm(dim=1), (clipped - xa).norm(dim=1)
    assert (de <= dc + 1e-5).all()
    assert (de < dc - 1e-3).float().mean() > 0.5
    # and it spends the budget the clipping throws away
    assert ((exact - x).abs().sum(dim=1) > (clipped - x).abs().sum(dim=1) + 1e-3).any()


@st.composite
def problems(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor, float, float, float]:
    lo = draw(st.sampled_from([0.0, -1.0, 0.5]))
    hi = lo + draw(st.sampled_from([1.0, 2.0, 255.0]))
    d = draw(st.integers(1, 40))
    x, xa = _sample(draw(st.integers(0, 2**16)), draw(st.integers(1, 6)), d, lo, hi,
                    draw(st.sampled_from([0.01, 0.3, 2.0])), draw(st.booleans()))  # fmt: skip
    eps = draw(st.sampled_from([0.0, 1e-4, 0.1, 1.0]) | st.floats(0.0, 2.0)) * (hi - lo) * d
    return x, xa, eps, lo, hi


@PROFILE
@given(problems())
def test_projection_properties(
    case: tuple[torch.Tensor, torch.Tensor, float, float, float],
) -> None:
    """In the ball (float64, as the engine measures) and the box; idempotent; and no feasible
    point is nearer: the variational inequality <xa − p, z − p> ≤ 0 for random feasible z."""
    x, xa, eps, lo, hi = case
    p = project_box(xa, x, eps, (lo, hi))
    size = (p.double() - x.double()).abs().sum(dim=1)
    assert (size <= eps + 1e-9 * max(1.0, eps)).all()
    assert float(p.min()) >= lo and float(p.max()) <= hi
    assert torch.equal(project_box(p, x, eps, (lo, hi)), p)
    g = torch.Generator().manual_seed(int(xa.numel()))
    z = lo + (hi - lo) * torch.rand((16, *x.shape), generator=g, dtype=torch.float64)
    dz = z - x.double()
    shrink = (eps / dz.abs().sum(dim=-1, keepdim=True).clamp(min=1e-300)).clamp(max=1.0)
    z = x.double() + dz * shrink  # feasible: toward x, which lies in the box
    pd, xd = p.double(), xa.double()
    assert ((xd - pd) * (z - pd)).sum(dim=-1).max() <= 1e-6 * (hi - lo) ** 2 * x.shape[1]
    assert ((z - xd).norm(dim=-1) >= (pd - xd).norm(dim=-1) - 1e-6 * (hi - lo)).all()
