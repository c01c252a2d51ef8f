"""A universal patch judged on the audited images (Brown et al. 2017's sticker threat).

:func:`evaluate_universal` pastes ONE trained patch (:mod:`robaudit.attacks.patch_universal`),
unscaled and unrotated, at ``placements`` random places on each audited image; each set of
candidates goes through the engine's :func:`~robaudit.verification.verify_batch` at the patch
threat (anywhere, the patch's share), so every pasted image is checked to change only one
region of the declared size and judged by a fresh forward pass. The numbers:

* ``accuracy`` — the share of (image, placement) pairs still classified correctly (clean-wrong
  images count as wrong): Brown et al.'s accuracy with the patch at a random place;
* ``tries`` — the share correct under each of the first k placements, k = 1, 2, 4, …: how the
  sticker fares when the attacker may try k places (a physical attacker can move it);
* ``robust_accuracy`` — images correct clean and under EVERY placement tried: the worst case
  over placements, the audit's robust accuracy at this threat (the number a gate uses).

In a scan (``universal: true`` on a patch-pgd entry: threat ``patch-universal``),
:func:`prepare_universal` trains each patch before the engine runs, on images the audit does
not judge (:mod:`robaudit.loading.holdout`), judges it and a random-noise patch of the same
size at the same places (a fresh noise patch at every place of every image: the baseline is
the expectation over noise, not one lucky or unlucky draw), and gives the engine the patch to paste
(:class:`~robaudit.attacks.patch_universal.PastedPatch`): the threat's row is the worst case
over those places, each verified like every other break. Each image has its own places, drawn
from its index in the source (:func:`~robaudit.attacks.patch_universal.placement_corners`):
a handful of places shared by every image made the numbers hinge on those few places (the
noise patch's worst case moved by 18 points between seeds on the 8×8 digits).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import torch

from robaudit.attacks.patch_pgd import PatchPGD
from robaudit.attacks.patch_universal import (
    PastedPatch,
    UniversalPatch,
    noise_patches,
    pasted_at,
    placement_corners,
    random_placements,
    train_universal,
)
from robaudit.classifier import Classifier
from robaudit.distributed import SINGLE, Shard
from robaudit.entries import NON_ADAPTIVE_ID
from robaudit.loading.data import DataSet
from robaudit.loading.holdout import Holdout, universal_training_data
from robaudit.norms.patch import UNIVERSAL
from robaudit.outcomes import PlannedAttack, cell_seed
from robaudit.progress import Progress, note
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

    def tries(self) -> list[tuple[int, float]]:
        """(k, share correct under each of the first k placements) for k = 1, 2, 4, … and P:
        the sticker's success as the attacker gets more tries (each image has its own places,
        nested, so k tries are the first k of them)."""
        ok = self.correct & self.clean[None, :]
        p = int(ok.shape[0])
        ks = sorted({min(p, 1 << i) for i in range(max(1, p).bit_length() + 1)} | {p})
        return [(k, _mean(ok[:k].all(dim=0))) for k in ks if k >= 1]


def evaluate_universal(
    clf: Classifier,
    x: torch.Tensor,
    y: torch.Tensor,
    patch: torch.Tensor | Callable[[int], torch.Tensor],
    size: float,
    generator: torch.Generator,
    placements: int = 8,
    corners: torch.Tensor | None = None,
    clean: torch.Tensor | None = None,
) -> UniversalResult:
    """The patch at ``placements`` random places per image (or at each image's ``corners``,
    N×P×2; ``patch`` may then be a function of the place k giving each image's own N×C×h×w
    patch there), each pasted image verified by the engine. ``clean``: the images' clean verdicts
    when the caller has them (one forward pass fewer)."""
    threat = Threat("patch", size)
    if clean is None:
        clean = clf.predict(x).to(y.device) == y
    rows, violations = [], 0
    cands: Iterable[torch.Tensor]
    if corners is None:
        assert isinstance(patch, torch.Tensor), "random places take one patch"
        cands = random_placements(x, patch, placements, generator)
    else:  # one place at a time: a lazy patch source makes each place's patches on demand
        cands = (pasted_at(x, patch(k) if callable(patch) else patch, corners[:, k])
                 for k in range(int(corners.shape[1])))  # fmt: skip
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
    corners: torch.Tensor  # N×P×2 top-left corners: each audited image's own places
    trained: UniversalPatch
    held_out: Holdout
    ours: UniversalResult
    noise: UniversalResult
    variant: str | None = None  # a defense variant's label: trained against the defended model

    def to_dict(self) -> dict[str, Any]:
        """The JSON section's numbers (the renderers add the picture)."""
        return {
            **({"variant": self.variant} if self.variant is not None else {}),
            "threat": self.threat.key, "attack_index": self.index, "size": self.threat.eps,
            "eps_label": self.threat.label, "patch_shape": list(self.patch.shape),
            "trained_on": {"split": self.held_out.split, "images": self.trained.trained_on,
                           "why": self.held_out.why},
            "train_steps": self.trained.steps,
            "final_loss": self.trained.loss_trace[-1] if self.trained.loss_trace else None,
            "eot": {"scale": EOT_SCALE, "rotation_degrees": EOT_ROTATION},
            "placements": int(self.corners.shape[1]),
            "placement_seed": "per image: its index in the source and the run seed",
            "tries": [
                {"tries": k, "accuracy": a, "noise_accuracy": b}
                for (k, a), (_, b) in zip(self.ours.tries(), self.noise.tries(), strict=True)
            ],
            "clean_accuracy": _mean(self.ours.clean),
            **_summary(self.ours),
            "noise": _summary(self.noise),
            "budget_violations": self.ours.budget_violations + self.noise.budget_violations,
        }  # fmt: skip


def _mean(mask: torch.Tensor) -> float:
    return float(mask.double().mean()) if mask.numel() else math.nan


def _summary(r: UniversalResult) -> dict[str, float]:
    return {"accuracy": r.accuracy, "robust_accuracy": r.robust_accuracy}


def prepare_universal(
    clf: Classifier, data: DataSet, cells: Sequence[PlannedAttack], *, input_shape: tuple[int, ...],
    seed: int, data_seed: int, variant: str | None = None, shard: Shard = SINGLE,
    progress: Progress | None = None,
) -> tuple[list[PlannedAttack], tuple[UniversalOutcome, ...]]:  # fmt: skip
    """Train each universal cell's patch on images the audit does not judge, judge it at random
    places on the audited ones (next to a noise patch), and hand the engine the trained patch
    in place of the per-sample search (:class:`PastedPatch`). ``variant``: ``clf`` is that
    defense variant (the patch is trained through the defense, as an adaptive attacker would).
    In a sharded run every rank trains, and rank 0's patch is the one all ranks use (GPU
    kernels need not give every rank the same bits)."""
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
        what = f"universal patch {p.threat.label}" + (f" on {variant}" if variant else "")
        note(progress, "universal_start", f"train {what}: {params.train_restarts} x "
             f"{params.train_steps} steps on {held.x.shape[0]} images", threat=p.threat.key,
             variant=variant)  # fmt: skip
        t0 = time.perf_counter()
        trained = _best_of(search, held, p.threat.eps, gen, params.train_steps,
                           params.train_restarts, dev)  # fmt: skip
        note(progress, "universal_done", f"done  {what} in {time.perf_counter() - t0:.1f} s",
             threat=p.threat.key, variant=variant, seconds=round(time.perf_counter() - t0, 3))
        if shard.active:  # one patch for the whole run
            trained = replace(trained, patch=shard.broadcast(trained.patch.cpu()).to(dev))
        corners = placement_corners(
            torch.tensor(data.indices, dtype=torch.int64), params.placements, trained.patch,
            (input_shape[-2], input_shape[-1]), cell_seed(seed, "universal places", p.threat.key),
        )  # fmt: skip
        ours_r = _judge(clf, data, p.threat.eps, corners, _Fixed(trained.patch))
        noise_r = _judge(clf, data, p.threat.eps, corners, _Noise(
            tuple(trained.patch.shape), clf.bounds, cell_seed(seed, "universal noise", p.threat.key)
        ), clean=ours_r.clean)  # fmt: skip
        outcomes.append(UniversalOutcome(p.threat, p.index, trained.patch.cpu(), corners, trained,
                                         held, ours_r, noise_r, variant))  # fmt: skip
        # the engine pastes each sample's first breaking place (judged above) and verifies it
        broke = ~ours_r.correct & ours_r.clean[None, :]
        out.append(replace(p, attack=PastedPatch(params, trained.patch, corners, broke)))
    return out, tuple(outcomes)


@dataclass
class VariantPatches:
    """Universal patches on the defense variants (:func:`robaudit.variants.run_variants`'s
    ``prepare``): the adaptive cell trains a patch through the defense, the non-adaptive twin
    pastes the bare model's patch (a sticker made for the undefended model), both at the
    bare model's places; ``made`` collects the variants' outcomes for the report."""

    data: DataSet
    input_shape: tuple[int, ...]
    seed: int
    data_seed: int
    bare: tuple[UniversalOutcome, ...]
    shard: Shard = SINGLE
    progress: Progress | None = None
    made: list[UniversalOutcome] = field(default_factory=list)

    def __call__(
        self, clf: Classifier, label: str, adaptive: list[PlannedAttack],
        naive: list[PlannedAttack],
    ) -> tuple[list[PlannedAttack], list[PlannedAttack]]:  # fmt: skip
        cells, outcomes = prepare_universal(
            clf, self.data, adaptive, input_shape=self.input_shape, seed=self.seed,
            data_seed=self.data_seed, variant=label, shard=self.shard, progress=self.progress,
        )  # fmt: skip
        self.made.extend(outcomes)
        return cells, [c for c in map(self._pasted, naive) if c is not None]

    def _pasted(self, p: PlannedAttack) -> PlannedAttack | None:
        """The twin of a universal cell pastes the bare model's patch (none trained: no twin)."""
        if p.threat.norm != UNIVERSAL or not isinstance(p.attack, PatchPGD):
            return p
        entry = p.index - NON_ADAPTIVE_ID
        bare = next((o for o in self.bare if o.index == entry and o.threat == p.threat), None)
        if bare is None:
            return None
        # the places are tries, not a search: each is judged on the defended model
        return replace(p, search=None, attack=PastedPatch(p.attack.params, bare.patch, bare.corners))


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


@dataclass(frozen=True)
class _Fixed:
    """The trained patch: the same at every place of every image."""

    patch: torch.Tensor

    def __call__(self, keys: torch.Tensor) -> torch.Tensor:
        return self.patch


@dataclass(frozen=True)
class _Noise:
    """The baseline: a fresh uniform patch at every place of every image, drawn from its key."""

    shape: tuple[int, ...]
    bounds: tuple[float, float]
    seed: int

    def __call__(self, keys: torch.Tensor) -> Callable[[int], torch.Tensor]:
        return partial(noise_patches, keys, shape=self.shape, bounds=self.bounds, seed=self.seed)


def _judge(
    clf: Classifier, data: DataSet, size: float, corners: torch.Tensor,
    patches: Callable[[torch.Tensor], torch.Tensor | Callable[[int], torch.Tensor]],
    clean: torch.Tensor | None = None,
) -> UniversalResult:  # fmt: skip
    """:func:`evaluate_universal` over the audited images, one batch at a time; ``patches``
    gives the patch for a batch's source keys (one C×h×w, or each place's N×C×h×w);
    ``clean``: the images' clean verdicts from an earlier judgement (no clean pass again)."""
    parts = []
    gen = torch.Generator()  # unused: the corners are given
    keys = torch.tensor(data.indices, dtype=torch.int64)
    for start in range(0, len(data.y), max(1, clf.batch_size)):
        stop = min(len(data.y), start + clf.batch_size)
        x = data.samples[start:stop].to(clf.device)
        y = data.y[start:stop].to(clf.device)
        patch = patches(keys[start:stop])
        known = None if clean is None else clean[start:stop].to(y.device)
        parts.append(evaluate_universal(clf, x, y, patch, size, gen, corners=corners[start:stop],
                                        clean=known))  # fmt: skip
    return UniversalResult(
        torch.cat([r.correct for r in parts], dim=1),
        torch.cat([r.clean for r in parts]),
        sum(r.budget_violations for r in parts),
    )
