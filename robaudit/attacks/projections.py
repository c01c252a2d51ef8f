"""Norm balls by name, for the attacks: thin calls into :mod:`robaudit.norms`.

All functions work on whole batches (N×...) and treat each sample separately. The norm
objects own the arithmetic; these keep the attacks' call sites short.
"""

from __future__ import annotations

import torch

from robaudit.norms import get, per_sample

__all__ = [
    "ball_scale",
    "clip_to_ball",
    "flat_norm",
    "per_sample",
    "project",
    "random_in_ball",
    "random_on_sphere",
    "random_point",
    "steepest_direction",
]


def flat_norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-sample ``norm`` of a batch of perturbations."""
    return get(norm).measure(delta)


def project(delta: torch.Tensor, norm: str, eps: float | torch.Tensor) -> torch.Tensor:
    """Project each perturbation onto the ``norm`` ball of radius ``eps``."""
    return get(norm).project(delta, eps)


def clip_to_ball(
    x_adv: torch.Tensor, x: torch.Tensor, norm: str, eps: float, bounds: tuple[float, float]
) -> torch.Tensor:
    """The point inside both the ball around ``x`` and the input bounds."""
    return get(norm).clip(x_adv, x, eps, bounds)


def ball_scale(x: torch.Tensor, norm: str, eps: float) -> float | torch.Tensor:
    """The ball's radius around each ``x``, to scale steps relative to the budget: ``eps``
    for an Lp ball; at snr a per-sample N×1×… L2 radius (the budget in dB is no length)."""
    r = get(norm).radius(x, eps)
    return r if not isinstance(r, torch.Tensor) else per_sample(r, x)


def steepest_direction(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """The unit-norm direction of steepest ascent for the norm (sign for linf, normalized for l2)."""
    return get(norm).steepest(grad)


def random_in_ball(
    like: torch.Tensor, norm: str, eps: float, generator: torch.Generator
) -> torch.Tensor:
    """A random start inside the ball (drawn on CPU, so seeds give the same start on any device)."""
    return get(norm).random_in_ball(like, eps, generator)


def random_on_sphere(
    like: torch.Tensor, norm: str, eps: float, generator: torch.Generator
) -> torch.Tensor:
    """A random perturbation of norm exactly ``eps`` (cube corners for linf)."""
    return get(norm).random_on_sphere(like, eps, generator)


def random_point(
    x: torch.Tensor,
    norm: str,
    eps: float,
    bounds: tuple[float, float],
    generator: torch.Generator,
    *,
    on_sphere: bool = False,
) -> torch.Tensor:
    """A random point of the ball around each ``x`` (of its sphere: ``on_sphere``), in bounds."""
    n = get(norm)
    radius = n.radius(x, eps)  # eps itself for an Lp ball; per sample at snr
    delta = (n.random_on_sphere if on_sphere else n.random_in_ball)(x, radius, generator)  # type: ignore[arg-type]
    return clip_to_ball(x + delta, x, norm, eps, bounds)
