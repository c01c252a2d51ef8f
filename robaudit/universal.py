"""A universal patch judged on the audited images (Brown et al. 2017's sticker threat).

:func:`evaluate_universal` pastes ONE trained patch (:mod:`robaudit.attacks.patch_universal`),
unscaled and unrotated, at ``placements`` random places on each audited image; each set of
candidates goes through the engine's :func:`~robaudit.verification.verify_batch` at the patch
threat (anywhere, the patch's share), so every pasted image is checked to change only one
region of the declared size and judged by a fresh forward pass. Two numbers:

* ``accuracy`` — the share of (image, placement) pairs still classified correctly (clean-wrong
  images count as wrong): Brown et al.'s accuracy with the patch at a random place;
* ``robust_accuracy`` — images correct clean and under EVERY placement tried: the worst case
  over placements, the audit's robust accuracy at this threat (the number a gate uses).

In a scan (``universal: true`` on a patch-pgd entry: threat ``patch-universal``),
:func:`prepare_universal` trains each patch before the engine runs, on images the audit does
not judge (:mod:`robaudit.loading.holdout`), judges it and a random-noise patch of the same
size at the same random places (the same on every image), and gives the engine the patch to
paste (:class:`~robaudit.attacks.patch_universal.PastedPatch`): the threat's row is the worst
case over those places, each verified like every other break.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from robaudit.attacks.patch_pgd import PatchPGD
from robaudit.attacks.patch_universal import (
    Corner,
    PastedPatch,
    UniversalPatch,
    noise_patch,
    pasted,
    random_corners,
    random_placements,
    train_universal,
)
from robaudit.classifier import Classifier
from robaudit.loading.data import DataSet
from robaudit.loading.holdout import Holdout, universal_training_data
from robaudit.norms.patch import UNIVERSAL
from robaudit.outcomes import PlannedAttack, cell_seed
from robaudit.threat import Threat
from robaudit.verification import verify_batch

# EOT ranges of the printable-sticker threat (Brown et al. 2017): scale ±20%, rotation ±20°
EOT_SCALE, EOT_ROTATION = 0.2, 20.0


@dataclass(frozen=True)
class UniversalResult:
    """The patch on the audited images: per-image and per-placement outcomes."""

    correct: torch.Tensor  # bool[P, N]: still correct with the patch at placement p
    clean: torch.Tensor  # bool[N]: correct without the patch
    budget_violations: int  # placements the engine found outside the region (must be 0)

    @property
    def accuracy(self) -> float:
        """Share of (image, placement) pairs classified correctly (random placement)."""
        ok = self.correct & self.clean[None, :]
        return float(ok.double().mean()) if ok.numel() else math.nan

    @property
    def robust(self) -> torch.Tensor:
        """bool[N]: correct clean and under every placement tried."""
        return self.clean & self.correct.all(dim=0)

    @property
    def robust_accuracy(self) -> float:
        return float(self.robust.double().mean()) if self.robust.numel() else math.nan

    def per_placement(self) -> list[float]:
        """Accuracy with the patch at each placement (clean-wrong images count as wrong)."""
        ok = self.correct & self.clean[None, :]
        return [float(row.double().mean()) for row in ok] if ok.shape[1] else []


def evaluate_universal(
    clf: Classifier,
    x: torch.Tensor,
    y: torch.Tensor,
    patch: torch.Tensor,
    size: float,
    generator: torch.Generator,
    placements: int = 8,
    corners: tuple[Corner, ...] | None = None,
    clean: torch.Tensor | None = None,
) -> UniversalResult:
    """The patch at ``placements`` random places per image (or at each of ``corners`` on every
    image), each verified by the engine. ``clean``: the images' clean verdicts when the caller
    has them (one forward pass fewer)."""
    threat = Threat("patch", size)
    if clean is None:
        clean = clf.predict(x).to(y.device) == y
    rows, violations = [], 0
    if corners is None:
        cands = random_placements(x, patch, placements, generator)
    else:
        cands = [pasted(x, patch, c) for c in corners]
    for cand in cands:
        v = verify_batch(clf, x, cand, y, threat)
        violations += v.budget + v.bounds
        rows.append(~v.broken.to(clean.device))
    return UniversalResult(torch.stack(rows), clean, violations)


@dataclass(frozen=True)
class UniversalOutcome:
    """One universal-patch threat of a scan: the patch, what it trained on, and its accuracy
    on the audited images at each placement, next to a random-noise patch of the same size."""

    threat: Threat
    index: int  # the config's attack entry
    patch: torch.Tensor  # C×h×w, inside the bounds
    corners: tuple[Corner, ...]  # top-left corners, the same on every image
    trained: UniversalPatch
    held_out: Holdout
    ours: UniversalResult
    noise: UniversalResult

    def to_dict(self) -> dict[str, Any]:
        """The JSON section's numbers (the renderers add the picture)."""
        return {
            "threat": self.threat.key, "attack_index": self.index, "size": self.threat.eps,
            "eps_label": self.threat.label, "patch_shape": list(self.patch.shape),
            "trained_on": {"split": self.held_out.split, "images": self.trained.trained_on,
                           "why": self.held_out.why},
            "train_steps": self.trained.steps,
            "final_loss": self.trained.loss_trace[-1] if self.trained.loss_trace else None,
            "eot": {"scale": EOT_SCALE, "rotation_degrees": EOT_ROTATION},
            "placements": [
                {"corner": list(c), "accuracy": a, "noise_accuracy": b}
                for c, a, b in zip(self.corners, self.ours.per_placement(),
                                   self.noise.per_placement(), strict=True)
            ],
            "clean_accuracy": _mean(self.ours.clean),
            **_summary(self.ours),
            "noise": _summary(self.noise),
            "budget_violations": self.ours.budget_violations + self.noise.budget_violations,
        }  # fmt: skip


def _mean(mask: torch.Tensor) -> float:
    return float(mask.double().mean()) if mask.numel() else math.nan


def _summary(r: UniversalResult) -> dict[str, float]:
    per = r.per_placement()
    return {"accuracy": r.accuracy, "worst_placement_accuracy": min(per, default=math.nan),
            "robust_accuracy": r.robust_accuracy}  # fmt: skip


def prepare_universal(
    clf: Classifier, data: DataSet, cells: Sequence[PlannedAttack], *, input_shape: tuple[int, ...],
    seed: int, data_seed: int,
) -> tuple[list[PlannedAttack], tuple[UniversalOutcome, ...]]:  # fmt: skip
    """Train each universal cell's patch on images the audit does not judge, judge it at random
    places on the audited ones (next to a noise patch), and hand the engine the trained patch
    in place of the per-sample search (:class:`PastedPatch`)."""
    out, outcomes = [], []
    for p in cells:
        if p.threat.norm != UNIVERSAL or not isinstance(p.attack, PatchPGD):
            out.append(p)
            continue
        params = p.attack.params
        held = universal_training_data(
            data.source, data.split, input_shape=input_shape, bounds=clf.bounds,
            num_classes=clf.num_classes, audited=data.indices, limit=params.train_images,
            seed=data_seed,
        )  # fmt: skip
        gen = torch.Generator().manual_seed(cell_seed(seed, "universal", p.index, p.threat.key))
        search = p.search or clf
        dev = search.device
        trained = _best_of(search, held, p.threat.eps, gen, params.train_steps,
                           params.train_restarts, dev)  # fmt: skip
        corners = random_corners(
            params.placements, trained.patch, (input_shape[-2], input_shape[-1]), gen
        )
        noise = noise_patch(trained.patch, gen, clf.bounds)
        ours_r, noise_r = (_judge(clf, data, patch, p.threat.eps, corners)
                           for patch in (trained.patch, noise))  # fmt: skip
        outcomes.append(UniversalOutcome(p.threat, p.index, trained.patch.cpu(), corners, trained,
                                         held, ours_r, noise_r))  # fmt: skip
        out.append(replace(p, attack=PastedPatch(params, trained.patch, corners)))
    return out, tuple(outcomes)


def _best_of(clf: Classifier, held: Holdout, size: float, gen: torch.Generator, steps: int,
             restarts: int, dev: torch.device) -> UniversalPatch:  # fmt: skip
    """The best of ``restarts`` patches trained from fresh random starts: the one with the
    lowest accuracy on the training images at random places (Adam saturates a small patch's
    pixels at the bounds within a few steps, so one start can settle on a weak pattern)."""
    x, y = held.x.to(dev), held.y.to(dev)
    bs = max(1, clf.batch_size)
    chunks = [(x[i : i + bs], y[i : i + bs]) for i in range(0, len(y), bs)]
    clean = [clf.predict(xb).to(yb.device) == yb for xb, yb in chunks]  # once, for every start
    best, best_acc = None, math.inf
    for _ in range(restarts):
        cand = train_universal(clf, x, y, size, gen, steps=steps, scale=EOT_SCALE,
                               rotation=EOT_ROTATION)  # fmt: skip
        # judged a batch at a time: 8 pasted copies of every training image at once can
        # exceed the device's memory at ImageNet size
        parts = [evaluate_universal(clf, xb, yb, cand.patch, size, gen, clean=cb)
                 for (xb, yb), cb in zip(chunks, clean, strict=True)]  # fmt: skip
        right = sum(int((r.correct & r.clean[None, :]).sum()) for r in parts)
        acc = right / max(1, sum(r.correct.numel() for r in parts))
        if acc < best_acc:
            best, best_acc = cand, acc
    assert best is not None
    return best


def _judge(clf: Classifier, data: DataSet, patch: torch.Tensor, size: float,
           corners: tuple[Corner, ...]) -> UniversalResult:  # fmt: skip
    """:func:`evaluate_universal` over the audited images, one batch at a time."""
    parts = []
    gen = torch.Generator()  # unused: the corners are given
    for start in range(0, len(data.y), max(1, clf.batch_size)):
        stop = min(len(data.y), start + clf.batch_size)
        x = data.samples[start:stop].to(clf.device)
        y = data.y[start:stop].to(clf.device)
        parts.append(evaluate_universal(clf, x, y, patch, size, gen, corners=corners))
    return UniversalResult(
        torch.cat([r.correct for r in parts], dim=1),
        torch.cat([r.clean for r in parts]),
        sum(r.budget_violations for r in parts),
    )
