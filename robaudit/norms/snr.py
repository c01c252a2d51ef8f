"""The SNR threat (audio): the perturbation's energy at least ``eps`` dB below the signal's.

The ball of budget ``db`` around a sample x is the L2 ball of radius ‖x‖₂·10^(−db/20): its
radius depends on x, so :meth:`Snr.radius` takes x, and every call that knows x (clip, the
engine's check, the attacks' projections and random starts) converts the budget into that
per-sample L2 radius. The methods that take no x (measure, project, steps, random draws,
covering radius) are L2's, in L2 lengths. A larger budget in dB is a *smaller* ball
(:meth:`Snr.ball_size`), and sizes are reported in dB: 20·log10(‖x‖/‖δ‖), +inf for δ = 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from robaudit.norms.base import per_sample
from robaudit.norms.l2 import L2

# clip aims this share inside the radius, so float32 rounding never leaves a projected point
# a hair outside (about 1e-4 dB: every counted break's SNR is then >= its budget exactly)
INSIDE = 1e-5


class Snr(L2):
    name = "snr"
    title = "SNR"
    scales_with_range = False

    def radius(self, x: torch.Tensor, eps: float) -> torch.Tensor:
        energy = x.detach().flatten(1).to(torch.float64).norm(dim=1)
        return (energy * 10.0 ** (-float(eps) / 20.0)).to(x.dtype)

    def size(self, delta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.size64(delta, x).to(torch.float32)  # +inf where delta is 0

    def size64(self, delta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        d = delta.detach().flatten(1).to(torch.float64).norm(dim=1)
        s = x.detach().flatten(1).to(torch.float64).norm(dim=1)
        db = 20.0 * (s.log10() - d.log10())
        return torch.where(d == 0, torch.full_like(db, float("inf")), db)  # no change: +inf dB

    def ball_size(self, eps: float) -> float:
        return -eps

    def fits(self, size: torch.Tensor, eps: float | torch.Tensor, tolerance: float) -> torch.Tensor:
        return size >= eps - tolerance

    def beyond_range(self, eps: float, span: float, shape: Sequence[int]) -> bool:
        del eps, span, shape
        return False  # every dB budget is a ball inside what covers the box

    def clip(
        self, x_adv: torch.Tensor, x: torch.Tensor, eps: float, bounds: tuple[float, float]
    ) -> torch.Tensor:
        delta = self.project(x_adv - x, self.radius(x, eps) * (1.0 - INSIDE))
        return (x + delta).clamp(bounds[0], bounds[1])

    def random_in_ball(
        self, like: torch.Tensor, eps: float | torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        return super().random_in_ball(like, _on_cpu(eps), generator)  # type: ignore[arg-type]

    def random_on_sphere(
        self, like: torch.Tensor, eps: float | torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        if not isinstance(eps, torch.Tensor):
            return super().random_on_sphere(like, eps, generator)
        unit = super().random_on_sphere(like, 1.0, generator)
        return unit * per_sample(eps.to(unit), unit)

    def describe(self, eps_label: str) -> str:
        return f"SNR {eps_label} dB"

    def budget_label(self, eps_label: str) -> str | None:
        return self.describe(eps_label)

    def chart_x(self, eps: float) -> float:
        """The ball's radius relative to the signal's norm, 10^(-dB/20): 0 for the clean input
        (+inf dB), growing as the budget in dB falls (the chart labels its ticks in dB)."""
        return float(10.0 ** (-eps / 20.0))


def _on_cpu(eps: float | torch.Tensor) -> float | torch.Tensor:
    """Per-sample radii beside draws made on the CPU (seeds agree across devices)."""
    return eps.detach().to("cpu", torch.float32) if isinstance(eps, torch.Tensor) else eps
