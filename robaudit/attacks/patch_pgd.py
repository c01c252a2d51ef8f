"""White-box patch attack: PGD on the patch's content with a search over its location.

The content of a patch is free inside the input bounds, so its update is a sign-gradient step
on the region's pixels clamped to the box (the Linf-PGD of Madry et al. 2018 with a budget
as wide as the box), the adversarial-patch optimization of Brown et al. 2017 and LaVAN
(Karmon et al. 2018) for one image. Where the threat lets the attacker place the patch
(``patch``, anywhere), each restart tries ``locations`` places per sample (half the windows
with the largest summed |gradient| of the loss at the clean input, LaVAN's saliency idea, on
the first restart, the rest at random), runs a short probe of PGD at each, and keeps the
place with the highest loss for the full run. A fixed-location threat (``patch@center``,
``patch@R,C``) has one place. Each sample stops at its first fooling iterate.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field

from robaudit.attacks.base import Attack, AttackOutput, AttackParams, register
from robaudit.attacks.common import mean_trace
from robaudit.attacks.losses import get_loss
from robaudit.attacks.patch_common import Region, paste, region_of, salient_corners
from robaudit.classifier import Classifier, LossFn
from robaudit.threat import Threat


class PatchPGDParams(AttackParams):
    steps: int = Field(100, ge=1, le=100_000, description="gradient steps at the chosen place")
    locations: int = Field(
        64, ge=1, le=10_000, description="places tried per sample and restart (anywhere only)"
    )
    probe_steps: int | None = Field(
        None, ge=1, le=10_000, description="PGD steps at each place tried (default steps/10)"
    )
    restarts: int = Field(1, ge=1, le=1000, description="fresh places and content, unbroken only")
    step_size: float = Field(
        0.3, gt=0, le=2, description="first step as a share of the input range (cosine decay)"
    )
    loss: Literal["ce", "margin", "dlr"] = Field("margin", description="loss to ascend")
    # universal: true (one patch for every image, robaudit.attacks.patch_universal)
    train_steps: int = Field(
        300, ge=1, le=100_000, description="universal: Adam steps of EOT training on held-out data"
    )
    train_restarts: int = Field(
        4, ge=1, le=100, description="universal: patches trained from fresh starts; the one "
        "the training images resist least is kept"
    )
    train_images: int = Field(
        5000, ge=1, le=10_000_000, description="universal: at most this many training images"
    )
    placements: int = Field(
        16, ge=1, le=1000,
        description="universal: places tried on each image (its own, drawn from its index)",
    )

    def probe(self) -> int:
        return self.probe_steps if self.probe_steps is not None else max(2, self.steps // 10)

    def cost(self) -> float:
        return float(self.restarts * (self.steps + self.locations * self.probe()))


class _Ascent:
    """PGD on the masked content of a batch; the best point per sample (+inf loss once fooled)."""

    def __init__(self, clf: Classifier, loss: LossFn, trace: list[torch.Tensor]) -> None:
        self.clf, self.loss, self.trace = clf, loss, trace

    def run(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, z: torch.Tensor,
            steps: int, step: float) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """``steps`` sign steps from content ``z``; returns (best point, its loss)."""
        lo, hi = self.clf.bounds
        best = paste(x, z, mask)
        best_loss = torch.full((x.shape[0],), -math.inf, device=x.device)
        z, active = z.clone(), torch.arange(x.shape[0], device=x.device)
        for t in range(steps + 1):  # the last pass only scores the final iterate
            if active.numel() == 0:
                break
            xa = paste(x[active], z[active], mask[active])
            loss, grad, logits = self.clf.loss_and_grad(xa, y[active], self.loss)
            self.trace.append(loss.mean())
            won = logits.argmax(dim=1) != y[active]
            better = (loss > best_loss[active]) | won
            best[active[better]] = xa[better]
            best_loss[active[better]] = torch.where(won, math.inf, loss)[better]
            if t == steps:
                break
            alpha = step * max(0.05, 0.5 * (1 + math.cos(math.pi * t / steps)))
            moved = z[active] + alpha * grad.sign() * mask[active]
            z[active] = moved.clamp(lo, hi)
            active = active[~won]
        return best, best_loss


@register("patch-pgd")
class PatchPGD(Attack[PatchPGDParams]):
    """Sign-gradient ascent on a patch's content, after a search over its place."""

    Params = PatchPGDParams

    def run(
        self,
        clf: Classifier,
        x: torch.Tensor,
        y: torch.Tensor,
        threat: Threat,
        generator: torch.Generator,
    ) -> AttackOutput:
        p = self.params
        region = region_of(threat, x)
        if region.empty or x.shape[0] == 0:
            return AttackOutput(x_adv=x.clone())
        trace: list[torch.Tensor] = []
        ascent = _Ascent(clf, get_loss(p.loss), trace)
        best = x.clone()
        best_loss = torch.full((x.shape[0],), -math.inf, device=x.device)
        standing = torch.arange(x.shape[0], device=x.device)
        span = clf.bounds[1] - clf.bounds[0]
        for r in range(p.restarts):
            if standing.numel() == 0:
                break
            xs, ys = x[standing], y[standing]
            mask, z = self._place(clf, ascent, xs, ys, region, generator, salient=r == 0)
            cand, loss = ascent.run(xs, ys, mask, z, p.steps, p.step_size * span)
            better = loss > best_loss[standing]
            best[standing[better]] = cand[better]
            best_loss[standing[better]] = loss[better]
            standing = standing[best_loss[standing] < math.inf]
        return AttackOutput(x_adv=best, loss_trace=mean_trace(trace), claimed=best_loss == math.inf)

    def _place(self, clf: Classifier, ascent: _Ascent, x: torch.Tensor, y: torch.Tensor,
               region: Region, generator: torch.Generator,
               salient: bool) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """Per sample the mask of the place kept and the content its probe reached."""
        p, n, dev = self.params, int(x.shape[0]), x.device
        lo, hi = clf.bounds
        k = 1 if region.fixed is not None else min(p.locations, math.prod(region.places))
        tops, lefts = region.random_corners(n * k, generator)
        tops, lefts = tops.view(n, k).to(dev), lefts.view(n, k).to(dev)
        if salient and region.fixed is None and k > 1:
            _, grad, _ = clf.loss_and_grad(x, y, ascent.loss)
            st, sl = salient_corners(grad, region, (k + 1) // 2)
            tops[:, : st.shape[1]], lefts[:, : sl.shape[1]] = st, sl
        if k == 1:
            z = lo + (hi - lo) * torch.rand(x.shape, generator=generator).to(x)
            return region.mask(tops[:, 0], lefts[:, 0], dev), z
        # k pasted copies of every sample, a few samples at a time: all n·k at once held 6,400
        # ResNet-18 activations on CPU (23 GiB, killed) and would take gigabytes of inputs at
        # ImageNet size; the probe's own steps stay out of the loss trace (the ascent's are it)
        probe = _Ascent(clf, ascent.loss, [])
        step = p.step_size * (hi - lo)
        kept_masks, kept = [], []
        for s in range(0, n, max(1, clf.batch_size // k)):
            part = slice(s, min(n, s + max(1, clf.batch_size // k)))
            m = int(x[part].shape[0])
            masks = region.mask(tops[part].flatten(), lefts[part].flatten(), dev)
            xr, yr = x[part].repeat_interleave(k, dim=0), y[part].repeat_interleave(k)
            zr = lo + (hi - lo) * torch.rand(xr.shape, generator=generator).to(x)
            cand, loss = probe.run(xr, yr, masks, zr, p.probe(), step)
            pick = loss.view(m, k).argmax(dim=1) + torch.arange(m, device=dev) * k
            kept_masks.append(masks[pick])
            kept.append(cand[pick])
        return torch.cat(kept_masks), torch.cat(kept)
