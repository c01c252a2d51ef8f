"""Norm balls: sizes, projections, steepest-ascent directions and random starts.

All functions work on whole batches (N×...) and treat each sample separately.
"""

from __future__ import annotations

import torch

_TINY = 1e-12


def flat_norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-sample ``linf`` or ``l2`` norm of a batch of perturbations."""
    flat = delta.flatten(1)
    if norm == "linf":
        return flat.abs().amax(dim=1) if flat.shape[1] else flat.new_zeros(flat.shape[0])
    if norm == "l2":
        return flat.norm(p=2, dim=1)
    raise ValueError(f"unknown norm {norm!r}")


def per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-sample vector shaped to broadcast over a batch like ``like`` (N x 1 x 1 ...)."""
    return v.view(-1, *([1] * (like.dim() - 1)))


def project(delta: torch.Tensor, norm: str, eps: float | torch.Tensor) -> torch.Tensor:
    """Project each perturbation onto the ``norm`` ball of radius ``eps``."""
    if norm == "linf":
        if isinstance(eps, torch.Tensor):
            e = per_sample(eps, delta)
            return torch.maximum(torch.minimum(delta, e), -e)
        return delta.clamp(-eps, eps)
    if norm == "l2":
        n = flat_norm(delta, "l2")
        e = eps if isinstance(eps, torch.Tensor) else torch.full_like(n, float(eps))
        factor = torch.clamp(e / (n + _TINY), max=1.0)
        return delta * per_sample(factor, delta)
    raise ValueError(f"unknown norm {norm!r}")


def clip_to_ball(
    x_adv: torch.Tensor, x: torch.Tensor, norm: str, eps: float, bounds: tuple[float, float]
) -> torch.Tensor:
    """Return the point inside both the ball around ``x`` and the input bounds.

    Clipping to the bounds after projecting can only shrink each coordinate of the
    perturbation (``x`` is inside the bounds), so the result stays in the ball.
    """
    delta = project(x_adv - x, norm, eps)
    return (x + delta).clamp(bounds[0], bounds[1])


def steepest_direction(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """The unit-norm direction of steepest ascent for the norm (sign for linf, normalized for l2)."""
    if norm == "linf":
        return grad.sign()
    if norm == "l2":
        n = flat_norm(grad, "l2")
        return grad / per_sample(n + _TINY, grad)
    raise ValueError(f"unknown norm {norm!r}")


def random_in_ball(
    like: torch.Tensor, norm: str, eps: float, generator: torch.Generator
) -> torch.Tensor:
    """A random start inside the ball (drawn on CPU, so seeds give the same start on any device)."""
    shape = like.shape
    if norm == "linf":
        u = torch.rand(shape, generator=generator, dtype=torch.float32)
        delta = (2 * u - 1) * eps
    elif norm == "l2":
        g = torch.randn(shape, generator=generator, dtype=torch.float32)
        # a uniform radius, not uniform volume: in high dimension a volume-uniform start sits
        # on the sphere, spending the whole budget on a random direction before the first step
        r = torch.rand(shape[0], generator=generator, dtype=torch.float32)
        delta = g / per_sample(flat_norm(g, "l2") + _TINY, g) * per_sample(r * eps, g)
    else:
        raise ValueError(f"unknown norm {norm!r}")
    return delta.to(device=like.device, dtype=like.dtype)


def random_on_sphere(
    like: torch.Tensor, norm: str, eps: float, generator: torch.Generator
) -> torch.Tensor:
    """A random perturbation of norm exactly ``eps`` (cube corners for linf)."""
    shape = like.shape
    if norm == "linf":
        s = torch.randint(0, 2, shape, generator=generator).to(torch.float32) * 2 - 1
        delta = s * eps
    elif norm == "l2":
        g = torch.randn(shape, generator=generator, dtype=torch.float32)
        delta = g / per_sample(flat_norm(g, "l2") + _TINY, g) * eps
    else:
        raise ValueError(f"unknown norm {norm!r}")
    return delta.to(device=like.device, dtype=like.dtype)
