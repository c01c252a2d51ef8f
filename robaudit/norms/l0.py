"""L0: how many pixels (or, as ``l0-feature``, single numbers) a perturbation changes.

A pixel is one position with all its channels: on a C x H x W image (or a C x T sequence) a
position counts once however many of its channels changed. A rank-1 feature vector has no
channel axis, so there a pixel is a feature. ``l0-feature`` (``l0_unit: feature`` in the
config, for tabular and multichannel sequence models) counts every number on its own.

A unit counts as changed when one of its values moved by more than CHANGED, the engine's float
slack (robaudit.verification.TOLERANCE, equal by test): the rounding of ``x + d - d`` is no
change. Budgets are whole counts (a config may write a share of the units, "5%").

L0 is no norm (not homogeneous): its ball holds arbitrarily large changes. So the steepest step
and the dual are those of the L0 ball intersected with the unit cube (each value moving by at
most 1, the span of a [0, 1] input), and random starts draw values in [-1, 1] that the
caller's box clips. The projection onto the L0 ball ∩ box is exact (Croce & Hein 2019): keep
the units whose clipped change removes the most squared distance, zero the rest.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from robaudit.norms.base import Norm

CHANGED = 1e-6  # a value moved by more than this changed (the engine's TOLERANCE)
L0_UNITS = {"pixel": "l0", "feature": "l0-feature"}  # the config's l0_unit -> the norm


def with_unit(norm: str, unit: str) -> str:
    """The L0 norm that counts ``unit`` (pixel or feature); ValueError off L0 or on a clash."""
    if norm not in L0_UNITS.values():
        raise ValueError(
            f"l0_unit {unit!r} applies to l0 budgets only; this entry's norm is {norm!r}"
        )
    if norm != "l0" and L0_UNITS[unit] != norm:
        raise ValueError(f"l0_unit {unit!r} contradicts norm {norm!r} (drop one of them)")
    return L0_UNITS[unit]


class L0(Norm):
    name = "l0"
    title = "L0"
    counts = True
    unit = "pixel"
    per_pixel = True  # channels of one position count once

    # -- the units: N x U x c (pixels with their channels, or single numbers) ---------------
    def group(self, t: torch.Tensor) -> torch.Tensor:
        """A batch as N x units x values-per-unit."""
        n = t.shape[0]
        if self.per_pixel and t.dim() >= 3:
            return t.reshape(n, t.shape[1], -1).transpose(1, 2)
        return t.reshape(n, -1, 1)

    def ungroup(self, v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`group`, shaped like ``like``."""
        if self.per_pixel and like.dim() >= 3:
            return v.transpose(1, 2).reshape(like.shape)
        return v.reshape(like.shape)

    def changed(self, delta: torch.Tensor) -> torch.Tensor:
        """N x U: which units the perturbation changes."""
        return (self.group(delta).abs() > CHANGED).any(dim=2)

    def budget(
        self, eps: float | torch.Tensor, n: int, units: int, device: torch.device
    ) -> torch.Tensor:
        """Per sample the whole number of units a budget allows (at most all of them)."""
        e = eps if isinstance(eps, torch.Tensor) else torch.full((n,), float(eps))
        e = e.to(device=device, dtype=torch.float64).clamp(max=units)
        return torch.floor(e + CHANGED).to(torch.int64)  # 2.9999999 from float arithmetic is 3

    def keep(self, gain: torch.Tensor, eps: float | torch.Tensor) -> torch.Tensor:
        """N x U: per sample the ``eps`` units of largest ``gain`` (ties by position)."""
        n, u = gain.shape
        k = self.budget(eps, n, u, gain.device)
        order = gain.argsort(dim=1, descending=True, stable=True)
        rank = torch.empty_like(order).scatter_(
            1, order, torch.arange(u, device=gain.device).expand(n, u)
        )
        return rank < k[:, None]

    # -- the Norm interface -------------------------------------------------------------------
    def measure(self, delta: torch.Tensor) -> torch.Tensor:
        dtype = delta.dtype if delta.is_floating_point() else torch.float32
        return self.changed(delta).sum(dim=1).to(dtype)

    def measure64(self, delta: torch.Tensor) -> torch.Tensor:
        return self.changed(delta.detach().to(torch.float64)).sum(dim=1).to(torch.float64)

    def _measure64(self, flat: torch.Tensor) -> torch.Tensor:
        return (flat.abs() > CHANGED).sum(dim=1).to(torch.float64)  # single numbers

    def project(self, delta: torch.Tensor, eps: float | torch.Tensor) -> torch.Tensor:
        v = self.group(delta)
        keep = self.keep(v.pow(2).sum(dim=2), eps)
        return self.ungroup(torch.where(keep[..., None], v, torch.zeros_like(v)), delta)

    def clip(
        self, x_adv: torch.Tensor, x: torch.Tensor, eps: float, bounds: tuple[float, float]
    ) -> torch.Tensor:
        """The exact projection onto the L0 ball ∩ box: each unit's change is clipped to the
        box, and the ``eps`` units whose clipped change removes the most squared distance to
        ``x_adv`` are kept (Croce & Hein 2019); the others are ``x`` exactly."""
        inside = x_adv.clamp(bounds[0], bounds[1])
        y, r = self.group(x_adv - x), self.group(x_adv - inside)
        keep = self.keep((y.pow(2) - r.pow(2)).sum(dim=2), eps)
        out = torch.where(keep[..., None], self.group(inside), self.group(x))
        return self.ungroup(out, x)

    def steepest(self, grad: torch.Tensor) -> torch.Tensor:
        """All of the unit cube's reach on the one unit with the largest gradient mass."""
        v = self.group(grad)
        top = v.abs().sum(dim=2).argmax(dim=1, keepdim=True)
        one = torch.zeros(v.shape[:2], dtype=torch.bool, device=v.device).scatter(1, top, True)
        return self.ungroup(torch.where(one[..., None], v.sign(), torch.zeros_like(v)), grad)

    def dual(self, w: torch.Tensor) -> torch.Tensor:
        """The largest gradient mass of one unit: a linear gap f needs about f/dual units."""
        v = self.group(w).abs().sum(dim=2)
        return v.amax(dim=1) if v.shape[1] else v.new_zeros(v.shape[0])

    def _draw(self, like: torch.Tensor, counts: torch.Tensor, values: torch.Tensor,
              generator: torch.Generator) -> torch.Tensor:  # fmt: skip
        """``counts[i]`` random units of sample i set to ``values`` (N x U x c), zeros elsewhere."""
        g = self.group(torch.zeros(like.shape, dtype=torch.float32))
        order = torch.rand(g.shape[:2], generator=generator).argsort(dim=1)
        rank = torch.empty_like(order).scatter_(1, order, torch.arange(g.shape[1]).expand_as(order))
        delta = torch.where((rank < counts[:, None])[..., None], values, g)
        return self.ungroup(delta, like).to(device=like.device, dtype=like.dtype)

    def random_in_ball(
        self, like: torch.Tensor, eps: float, generator: torch.Generator
    ) -> torch.Tensor:
        n, u = like.shape[0], self.group(like).shape[1]
        k = self.budget(eps, n, u, torch.device("cpu"))
        counts = (torch.rand(n, generator=generator, dtype=torch.float64) * (k + 1)).floor().long()
        shape = self.group(like).shape
        values = 2 * torch.rand(shape, generator=generator, dtype=torch.float32) - 1
        return self._draw(like, counts.clamp(max=k), values, generator)

    def random_on_sphere(
        self, like: torch.Tensor, eps: float, generator: torch.Generator
    ) -> torch.Tensor:
        n, u = like.shape[0], self.group(like).shape[1]
        k = self.budget(eps, n, u, torch.device("cpu"))
        shape = self.group(like).shape
        sign = torch.randint(0, 2, shape, generator=generator).to(torch.float32) * 2 - 1
        values = sign * (0.5 + 0.5 * torch.rand(shape, generator=generator, dtype=torch.float32))
        return self._draw(like, k, values, generator)

    def covering_radius(self, span: float, dims: int) -> float:
        return float(dims)  # every number changed (an upper bound on the pixels)

    def units(self, shape: Sequence[int]) -> int:
        if self.per_pixel and len(shape) >= 2:
            return math.prod(shape[1:])
        return math.prod(shape)

    def covering(self, span: float, shape: Sequence[int]) -> float:
        return float(self.units(shape))

    def describe(self, eps_label: str) -> str:
        return f"L0 {eps_label} ({self.unit}s)"

    def budget_label(self, eps_label: str) -> str | None:
        """``L0 5% of pixels``, ``L0 3 pixels``: a count, not a length."""
        label = eps_label.strip()
        if label.endswith("%"):
            return f"L0 {label} of {self.unit}s"
        return f"L0 {label} {self.unit}" + ("" if label == "1" else "s")


class L0Feature(L0):
    """L0 counting single numbers: every channel of every position on its own."""

    name = "l0-feature"
    title = "L0 (features)"
    unit = "feature"
    per_pixel = False
