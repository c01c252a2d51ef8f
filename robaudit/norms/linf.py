"""The L-infinity norm: every coordinate moves by at most eps (the field's default threat)."""

from __future__ import annotations

import torch

from robaudit.norms.base import Norm, per_sample


class Linf(Norm):
    name = "linf"
    title = "Linf"

    def measure(self, delta: torch.Tensor) -> torch.Tensor:
        flat = delta.flatten(1)
        return flat.abs().amax(dim=1) if flat.shape[1] else flat.new_zeros(flat.shape[0])

    def _measure64(self, flat: torch.Tensor) -> torch.Tensor:
        return flat.abs().amax(dim=1)

    def project(self, delta: torch.Tensor, eps: float | torch.Tensor) -> torch.Tensor:
        if isinstance(eps, torch.Tensor):
            e = per_sample(eps, delta)
            return torch.maximum(torch.minimum(delta, e), -e)
        return delta.clamp(-eps, eps)

    def steepest(self, grad: torch.Tensor) -> torch.Tensor:
        return grad.sign()

    def dual(self, w: torch.Tensor) -> torch.Tensor:
        return w.flatten(1).abs().sum(dim=1)

    def random_in_ball(
        self, like: torch.Tensor, eps: float, generator: torch.Generator
    ) -> torch.Tensor:
        u = torch.rand(like.shape, generator=generator, dtype=torch.float32)
        return ((2 * u - 1) * eps).to(device=like.device, dtype=like.dtype)

    def random_on_sphere(
        self, like: torch.Tensor, eps: float, generator: torch.Generator
    ) -> torch.Tensor:
        s = torch.randint(0, 2, like.shape, generator=generator).to(torch.float32) * 2 - 1
        return (s * eps).to(device=like.device, dtype=like.dtype)  # the cube's corners

    def covering_radius(self, span: float, dims: int) -> float:
        return span
