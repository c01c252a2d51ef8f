"""The L2 norm: the perturbation's Euclidean length is at most eps."""

from __future__ import annotations

import math

import torch

from robaudit.norms.base import TINY, Norm, per_sample


class L2(Norm):
    name = "l2"
    title = "L2"

    def measure(self, delta: torch.Tensor) -> torch.Tensor:
        return delta.flatten(1).norm(p=2, dim=1)

    def _measure64(self, flat: torch.Tensor) -> torch.Tensor:
        return flat.pow(2).sum(dim=1).sqrt()

    def project(self, delta: torch.Tensor, eps: float | torch.Tensor) -> torch.Tensor:
        n = self.measure(delta)
        e = eps if isinstance(eps, torch.Tensor) else torch.full_like(n, float(eps))
        factor = torch.clamp(e / (n + TINY), max=1.0)
        return delta * per_sample(factor, delta)

    def steepest(self, grad: torch.Tensor) -> torch.Tensor:
        return grad / per_sample(self.measure(grad) + TINY, grad)

    def dual(self, w: torch.Tensor) -> torch.Tensor:
        return w.flatten(1).norm(p=2, dim=1)

    def random_in_ball(
        self, like: torch.Tensor, eps: float, generator: torch.Generator
    ) -> torch.Tensor:
        shape = like.shape
        g = torch.randn(shape, generator=generator, dtype=torch.float32)
        # a uniform radius, not uniform volume: in high dimension a volume-uniform start sits
        # on the sphere, spending the whole budget on a random direction before the first step
        r = torch.rand(shape[0], generator=generator, dtype=torch.float32)
        delta = g / per_sample(self.measure(g) + TINY, g) * per_sample(r * eps, g)
        return delta.to(device=like.device, dtype=like.dtype)

    def random_on_sphere(
        self, like: torch.Tensor, eps: float, generator: torch.Generator
    ) -> torch.Tensor:
        g = torch.randn(like.shape, generator=generator, dtype=torch.float32)
        delta = g / per_sample(self.measure(g) + TINY, g) * eps
        return delta.to(device=like.device, dtype=like.dtype)

    def covering_radius(self, span: float, dims: int) -> float:
        return span * math.sqrt(dims)
