"""The L1 norm: the perturbation's absolute values sum to at most eps (sparse-ish changes).

Registered for measurement and projection now; config budgets at L1 arrive with the L1
attacks (issue 16). The projection is the exact Euclidean projection onto the L1 ball by
sorting (Duchi, Shalev-Shwartz, Singer & Chandra 2008), O(D log D) per sample.
"""

from __future__ import annotations

import torch

from robaudit.norms.base import Norm


class L1(Norm):
    name = "l1"
    title = "L1"

    def measure(self, delta: torch.Tensor) -> torch.Tensor:
        return delta.flatten(1).abs().sum(dim=1)

    def _measure64(self, flat: torch.Tensor) -> torch.Tensor:
        return flat.abs().sum(dim=1)

    def project(self, delta: torch.Tensor, eps: float | torch.Tensor) -> torch.Tensor:
        flat = delta.flatten(1)
        n, d = flat.shape
        e = eps.to(flat) if isinstance(eps, torch.Tensor) else torch.full((n,), float(eps))
        e = e.to(device=flat.device, dtype=flat.dtype)
        a = flat.abs()
        inside = a.sum(dim=1) <= e
        u, _ = a.sort(dim=1, descending=True)
        css = u.cumsum(dim=1) - e[:, None]
        j = torch.arange(1, d + 1, device=flat.device, dtype=flat.dtype)
        # the largest j with u_j > (sum_{i<=j} u_i - eps) / j: the coordinates kept non-zero
        rho = ((u * j) > css).to(flat.dtype).mul(j).argmax(dim=1)
        theta = css.gather(1, rho[:, None]).squeeze(1) / (rho + 1).to(flat.dtype)
        shrunk = flat.sign() * (a - theta[:, None]).clamp(min=0)
        out = torch.where(inside[:, None], flat, shrunk)
        return out.view_as(delta)

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

