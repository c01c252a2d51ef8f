"""The feasible set of the run's inputs, for the attacks that search inside it.

On a tabular model not every point of the ball is a real record (immutable features, integers,
one-hot groups, relations: :mod:`robaudit.tabular.constraints`). While a cell runs an attack,
the engine makes the run's constraints *active* here; a constrained attack (``constrained =
True``: PGD and APGD) then projects every iterate with :func:`project` (the ball, the bounds
and the constraints, CAPGD-style: Simonetto et al. 2022) and masks the gradient of the
immutable features with :func:`mask_gradient`. Other attacks search the plain ball and the
engine repairs their candidates once, at the end. Either way the engine checks every
candidate against the constraints before it may count, so an attack that claims to be
constrained and is not is caught, not trusted.

Without active constraints (every non-tabular run) both functions are the plain ball
projection and the identity: attacks behave exactly as before.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Protocol

import torch

from robaudit.attacks.projections import clip_to_ball


class FeasibleSet(Protocol):
    """What the attacks need of the constraints (:class:`robaudit.tabular.Constraints`)."""

    def repair(
        self, x_adv: torch.Tensor, x_clean: torch.Tensor, *, norm: str, eps: float | None
    ) -> torch.Tensor: ...

    def mutable(self, device: torch.device) -> torch.Tensor: ...


_ACTIVE: ContextVar[FeasibleSet | None] = ContextVar("robaudit_feasible", default=None)


def active() -> FeasibleSet | None:
    """The constraints of the cell running now, or None."""
    return _ACTIVE.get()


@contextmanager
def constrained_to(feasible: FeasibleSet | None) -> Iterator[None]:
    """Make ``feasible`` the active constraints for the attack run inside this block."""
    token = _ACTIVE.set(feasible)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def project(
    x_adv: torch.Tensor, x: torch.Tensor, norm: str, eps: float, bounds: tuple[float, float]
) -> torch.Tensor:
    """The point inside the ball around ``x``, the bounds and (when active) the constraints."""
    inside = clip_to_ball(x_adv, x, norm, eps, bounds)
    feasible = active()
    if feasible is None or inside.dim() != 2:
        return inside
    return feasible.repair(inside, x, norm=norm, eps=eps)


def restrict(x_adv: torch.Tensor, x: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    """A point already in the ball and the bounds, repaired into the active constraints (the
    identity when none are active: a random start stays bit-identical)."""
    feasible = active()
    if feasible is None or x_adv.dim() != 2:
        return x_adv
    return feasible.repair(x_adv, x, norm=norm, eps=eps)


def mask_gradient(grad: torch.Tensor) -> torch.Tensor:
    """``grad`` with the immutable features' entries zeroed (when constraints are active)."""
    feasible = active()
    if feasible is None or grad.dim() != 2:
        return grad
    return grad * feasible.mutable(grad.device).to(grad.dtype)
