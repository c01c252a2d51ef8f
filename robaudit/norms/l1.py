"""The L1 norm: the perturbation's absolute values sum to at most eps (sparse-ish changes).

The projection is exact: the Euclidean projection onto the L1 ball ∩ the input box, as the L1
attacks need it (Croce & Hein 2021, "Mind the box: l1-APGD"). Clipping to the box after a
ball-only projection (Duchi et al. 2008) gives a point of the set, but not the nearest one,
and it wastes budget on coordinates the box cuts off. Per coordinate the answer is the
soft-threshold clipped to the room the box leaves, ``|d_i| = min((|v_i| - λ)^+, cap_i)``, with
one threshold ``λ ≥ 0`` per sample that makes the sum exactly eps: found by sorting the 2D
breakpoints of that piecewise-linear sum (O(D log D), float64 inside).
"""

from __future__ import annotations

import torch

from robaudit.norms.base import Norm


def _threshold(a: torch.Tensor, cap: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Per row the λ ≥ 0 with ``sum_i min((a_i - λ)^+, cap_i) = eps`` (0 where λ = 0 fits).

    The sum φ(λ) is piecewise linear and non-increasing: coordinate i contributes cap_i up to
    λ = a_i - cap_i, then a_i - λ down to 0 at λ = a_i. Sorting those 2D breakpoints gives
    φ at each of them by a cumulative sum of (slope × gap); λ lies on the last segment that
    starts above eps, where φ is linear. All arguments float64, ``a, cap`` N×D, ``eps`` N.
    """
    n, d = a.shape
    start = (a - cap).clamp(min=0)
    points, order = torch.cat([start, a], dim=1).sort(dim=1)
    change = torch.cat([a.new_ones(n, d), -a.new_ones(n, d)], dim=1)
    active = change.gather(1, order).cumsum(dim=1)  # coordinates shrinking on [t_j, t_j+1)
    phi0 = torch.minimum(a, cap).sum(dim=1)
    drop = (active[:, :-1] * points.diff(dim=1)).cumsum(dim=1)
    phi = phi0[:, None] - torch.cat([a.new_zeros(n, 1), drop], dim=1)  # φ at each t_j
    j = ((phi > eps[:, None]).sum(dim=1) - 1).clamp(min=0)[:, None]
    slope = active.gather(1, j).squeeze(1).clamp(min=1)
    lam = points.gather(1, j).squeeze(1) + (phi.gather(1, j).squeeze(1) - eps) / slope
    return torch.where(phi0 > eps, lam, torch.zeros_like(lam))


def _radii(eps: float | torch.Tensor, n: int, like: torch.Tensor) -> torch.Tensor:
    """Per-sample radii as a float64 vector on ``like``'s device."""
    if isinstance(eps, torch.Tensor):
        return eps.to(device=like.device, dtype=torch.float64).expand(n)
    return torch.full((n,), float(eps), device=like.device, dtype=torch.float64)


def shrink(v: torch.Tensor, cap: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """The nearest point to ``v`` with L1 norm ≤ ``eps`` and ``|d_i| ≤ cap_i`` in the
    direction of ``v_i`` (float64 N×D in, float64 out)."""
    a = v.abs()
    lam = _threshold(a, cap, eps.clamp(min=0))
    mag = torch.minimum((a - lam[:, None]).clamp(min=0), cap)
    return torch.where(eps[:, None] > 0, v.sign() * mag, torch.zeros_like(v))


def project_box(
    x_adv: torch.Tensor,
    x: torch.Tensor,
    eps: float | torch.Tensor,
    bounds: tuple[float, float],
) -> torch.Tensor:
    """The Euclidean projection of ``x_adv`` onto ``{‖x' − x‖₁ ≤ eps, lo ≤ x' ≤ hi}``.

    Rounding to the working dtype goes toward ``x`` where nearest rounding would lengthen a
    coordinate, so the point's float64 distance never exceeds eps (the engine's check).
    """
    lo, hi = bounds
    x64 = x.detach().flatten(1).to(torch.float64)
    v = x_adv.detach().flatten(1).to(torch.float64) - x64
    cap = torch.where(v > 0, hi - x64, x64 - lo).clamp(min=0)
    d = shrink(v, cap, _radii(eps, v.shape[0], v))
    out = (x64 + d).to(x_adv.dtype)
    x_same = x.detach().flatten(1).to(x_adv.dtype)
    longer = (out.to(torch.float64) - x64).abs() > d.abs()
    out = torch.where(longer, torch.nextafter(out, x_same), out)
    return out.clamp(lo, hi).view_as(x_adv)


class L1(Norm):
    name = "l1"
    title = "L1"

    def measure(self, delta: torch.Tensor) -> torch.Tensor:
        return delta.flatten(1).abs().sum(dim=1)

    def _measure64(self, flat: torch.Tensor) -> torch.Tensor:
        return flat.abs().sum(dim=1)

    def project(self, delta: torch.Tensor, eps: float | torch.Tensor) -> torch.Tensor:
        flat = delta.flatten(1).to(torch.float64)
        cap = torch.full_like(flat, float("inf"))  # no box: the plain L1 ball
        out = shrink(flat, cap, _radii(eps, flat.shape[0], flat))
        return out.to(delta.dtype).view_as(delta)

    def clip(
        self, x_adv: torch.Tensor, x: torch.Tensor, eps: float, bounds: tuple[float, float]
    ) -> torch.Tensor:
        """The exact projection onto ball ∩ box (clipping after the ball is not the nearest
        point, and can leave budget unused)."""
        return project_box(x_adv, x, eps, bounds)

    def steepest(self, grad: torch.Tensor) -> torch.Tensor:
        flat = grad.flatten(1)
        top = flat.abs().argmax(dim=1, keepdim=True)
        d = torch.zeros_like(flat).scatter(1, top, flat.gather(1, top).sign())
        return d.view_as(grad)  # all the budget on the largest coordinate of the gradient

    def dual(self, w: torch.Tensor) -> torch.Tensor:
        flat = w.flatten(1)
        return flat.abs().amax(dim=1) if flat.shape[1] else flat.new_zeros(flat.shape[0])

    def random_in_ball(
        self, like: torch.Tensor, eps: float, generator: torch.Generator
    ) -> torch.Tensor:
        shape = like.shape
        n, d = shape[0], int(like[0].numel()) if shape[0] else 0
        # uniform in the ball: |coordinates| and the slack are a flat Dirichlet(1, ..., 1)
        e = -torch.rand(n, d + 1, generator=generator, dtype=torch.float32).clamp(min=1e-12).log()
        mags = (e / e.sum(dim=1, keepdim=True))[:, :d]
        signs = torch.randint(0, 2, (n, d), generator=generator).to(torch.float32) * 2 - 1
        delta = (mags * signs * eps).view(shape)
        return delta.to(device=like.device, dtype=like.dtype)

    def random_on_sphere(
        self, like: torch.Tensor, eps: float, generator: torch.Generator
    ) -> torch.Tensor:
        shape = like.shape
        n, d = shape[0], int(like[0].numel()) if shape[0] else 0
        e = -torch.rand(n, d, generator=generator, dtype=torch.float32).clamp(min=1e-12).log()
        signs = torch.randint(0, 2, (n, d), generator=generator).to(torch.float32) * 2 - 1
        delta = (e / e.sum(dim=1, keepdim=True) * signs * eps).view(shape)
        return delta.to(device=like.device, dtype=like.dtype)

    def covering_radius(self, span: float, dims: int) -> float:
        return span * dims
