"""What every norm provides: size, projection, steepest ascent, random starts, extent.

All methods work on whole batches (N x ...) and treat each sample separately; per-sample
radii may be a float or an N-vector.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch

TINY = 1e-12  # keeps a division by a zero norm finite


def per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-sample vector shaped to broadcast over a batch like ``like`` (N x 1 x 1 ...)."""
    return v.view(-1, *([1] * (like.dim() - 1)))


class Norm(ABC):
    """One Lp norm as the attacks, the engine and the config use it."""

    name: str  # the config's spelling: linf, l2, l1
    title: str  # how a report prints it: Linf, L2, L1
    # budgets are lengths in input units, so a profile's budgets scale with the input range
    # (False for budgets in other units, such as snr's dB)
    scales_with_range: bool = True

    def radius(self, x: torch.Tensor, eps: float) -> float | torch.Tensor:
        """The radius, in :meth:`measure`'s units, of the budget-``eps`` ball around each ``x``:
        ``eps`` itself for an Lp ball, a per-sample vector where the ball depends on x (snr)."""
        del x
        return eps

    def size(self, delta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Per-sample size of ``delta`` at clean inputs ``x`` in budget units (what the report
        prints): the norm itself for an Lp ball."""
        del x
        return self.measure(delta)

    def ball_size(self, eps: float) -> float:
        """A key that grows with the ball: larger for a larger ball (``eps`` for an Lp norm;
        snr's balls shrink as the budget in dB grows)."""
        return eps

    def fits(
        self, size: torch.Tensor, eps: float | torch.Tensor, tolerance: float
    ) -> torch.Tensor:
        """Which sizes (:meth:`size`) lie within the budget ``eps``."""
        return size <= eps + tolerance

    def beyond_range(self, eps: float, span: float, shape: Sequence[int]) -> bool:
        """Whether a budget exceeds what covers the whole input box (a config error)."""
        return eps > self.covering(span, shape) + 1e-12

    # a budget is a whole number of changed units (L0), so a config may also write it as a
    # share of the input's units ("5%"); False: a length in the units of the input range
    counts: bool = False

    @abstractmethod
    def measure(self, delta: torch.Tensor) -> torch.Tensor:
        """Per-sample norm of a batch of perturbations (the engine's budget check)."""

    def measure64(self, delta: torch.Tensor) -> torch.Tensor:
        """The same in float64: an exported example's own verification arithmetic."""
        flat = delta.detach().to(torch.float64).flatten(1)
        if flat.shape[1] == 0:
            return flat.new_zeros(flat.shape[0])
        return self._measure64(flat)

    @abstractmethod
    def _measure64(self, flat: torch.Tensor) -> torch.Tensor: ...

    def size64(self, delta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """:meth:`size` in float64 (an exported example's own check): the norm for an Lp ball."""
        del x
        return self.measure64(delta)

    @abstractmethod
    def project(self, delta: torch.Tensor, eps: float | torch.Tensor) -> torch.Tensor:
        """Each perturbation projected onto the ball of radius ``eps``."""

    def clip(
        self, x_adv: torch.Tensor, x: torch.Tensor, eps: float, bounds: tuple[float, float]
    ) -> torch.Tensor:
        """A point inside both the ball around ``x`` and the input box.

        Clipping to the box after projecting only shrinks each coordinate of the perturbation
        (``x`` is inside the box), so for any Lp norm the result stays in the ball.
        """
        delta = self.project(x_adv - x, self.radius(x, eps))
        return (x + delta).clamp(bounds[0], bounds[1])

    @abstractmethod
    def steepest(self, grad: torch.Tensor) -> torch.Tensor:
        """The unit-norm direction of steepest ascent of a linear function with gradient
        ``grad`` (argmax of grad·d over the unit ball)."""

    @abstractmethod
    def dual(self, w: torch.Tensor) -> torch.Tensor:
        """Per-sample dual norm of ``w``: the distance scale of a linearized gap f/‖w‖*."""

    @abstractmethod
    def random_in_ball(
        self, like: torch.Tensor, eps: float, generator: torch.Generator
    ) -> torch.Tensor:
        """A random start inside the ball (drawn on the CPU: seeds agree across devices)."""

    @abstractmethod
    def random_on_sphere(
        self, like: torch.Tensor, eps: float, generator: torch.Generator
    ) -> torch.Tensor:
        """A random perturbation of norm exactly ``eps``."""

    @abstractmethod
    def covering_radius(self, span: float, dims: int) -> float:
        """The smallest radius whose ball covers a box of side ``span`` in ``dims`` dimensions:
        a larger budget gives nothing more (the sanity check's "unbounded" attack)."""

    def units(self, shape: Sequence[int]) -> int:
        """How many units one input of ``shape`` has: what a share budget ("5%") is of."""
        return math.prod(shape)

    def covering(self, span: float, shape: Sequence[int]) -> float:
        """:meth:`covering_radius` for one input of ``shape`` (L0 counts pixels, not numbers)."""
        return self.covering_radius(span, math.prod(shape))

    def describe(self, eps_label: str) -> str:
        """A budget as a report prints it: ``Linf 8/255``."""
        return f"{self.title} {eps_label}"

    def budget_label(self, eps_label: str) -> str | None:
        """How report tables label a budget whose units are not the input's (snr: ``SNR 40
        dB``); None: the tables' plain ``linf ε=8/255``."""
        del eps_label
        return None

    def chart_x(self, eps: float) -> float:
        """Where a budget sits on a robust-accuracy chart whose x grows with the ball from the
        clean input at 0: the budget itself for a length."""
        return eps
