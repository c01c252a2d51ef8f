"""Universal adversarial patches: one sticker for every image (Brown, Mané, Roy, Abadi &
Gilmer 2017, "Adversarial Patch").

:func:`train_universal` optimizes ONE patch on training images the audit does not judge
(:func:`robaudit.loading.holdout.universal_training_data` picks them), by expectation over
transformation (Athalye et al. 2018): every image of every step gets the patch at a random
place, scaled by up to ±``scale`` and rotated by up to ±``rotation`` degrees (±20% and ±20°
by default, Brown et al.'s printable-sticker setting). The loss is the cross-entropy of the
true class (untargeted) or minus that of ``target``; Adam on the pixel values, clamped to the
bounds after each step.

:func:`robaudit.universal.evaluate_universal` judges the patch on the audited images.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from robaudit.attacks.base import AttackOutput
from robaudit.attacks.common import mean_trace
from robaudit.attacks.losses import LossFn, cross_entropy
from robaudit.attacks.patch_common import place, region_of
from robaudit.attacks.patch_pgd import PatchPGD, PatchPGDParams
from robaudit.classifier import Classifier
from robaudit.threat import Threat


@dataclass(frozen=True)
class UniversalPatch:
    """A trained patch (C×h×w inside the bounds) and how it was made."""

    patch: torch.Tensor
    size: float  # the threat's share of the image
    trained_on: int  # training images
    steps: int
    loss_trace: tuple[float, ...]


def transform_paste(
    x: torch.Tensor,
    patch: torch.Tensor,
    generator: torch.Generator,
    scale: float = 0.2,
    rotation: float = 20.0,
) -> torch.Tensor:
    """``x`` with ``patch`` pasted at a random place, scale and rotation per image (differentiable
    in ``patch``): the patch is drawn on a canvas, moved by an affine grid, blended by its mask."""
    n, c, height, width = x.shape
    _, h, w = patch.shape
    canvas = x.new_zeros(1, c + 1, height, width)
    top, left = (height - h) // 2, (width - w) // 2
    canvas[0, :c, top : top + h, left : left + w] = patch
    canvas[0, c, top : top + h, left : left + w] = 1.0
    s = 1 + scale * (2 * torch.rand(n, generator=generator) - 1)
    a = math.radians(rotation) * (2 * torch.rand(n, generator=generator) - 1)
    # room left for the centre so the scaled patch stays on the image (normalized coordinates)
    room_y = (1 - s * h / height).clamp(min=0)
    room_x = (1 - s * w / width).clamp(min=0)
    ty = room_y * (2 * torch.rand(n, generator=generator) - 1)
    tx = room_x * (2 * torch.rand(n, generator=generator) - 1)
    # output -> input coordinates: undo the translation, then the rotation and the scale
    cos, sin = torch.cos(a) / s, torch.sin(a) / s
    theta = torch.stack(
        [
            torch.stack([cos, -sin, -(cos * tx - sin * ty)], dim=1),
            torch.stack([sin, cos, -(sin * tx + cos * ty)], dim=1),
        ],
        dim=1,
    ).to(x)
    grid = F.affine_grid(theta, [n, c + 1, height, width], align_corners=False)
    moved = F.grid_sample(canvas.expand(n, -1, -1, -1), grid, align_corners=False)
    content, mask = moved[:, :c], moved[:, c : c + 1]
    return x * (1 - mask) + content * mask


def _towards(target: int) -> LossFn:
    """A loss that rises as the logits move towards class ``target``."""

    def loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return -F.cross_entropy(logits, torch.full_like(y, target), reduction="none")

    return loss


def train_universal(
    clf: Classifier,
    x: torch.Tensor,
    y: torch.Tensor,
    size: float,
    generator: torch.Generator,
    *,
    steps: int = 300,
    batch_size: int = 128,
    lr: float = 0.1,
    scale: float = 0.2,
    rotation: float = 20.0,
    target: int | None = None,
) -> UniversalPatch:
    """One patch of share ``size`` trained on ``x``, ``y`` with EOT (module docstring)."""
    lo, hi = clf.bounds
    c, height, width = (int(v) for v in x.shape[1:])
    h, w = region_of(Threat("patch", size), x[:1]).dims
    if h == 0 or w == 0:
        raise ValueError(f"a patch of {size:g} of a {height}x{width} image has no pixels")
    init = lo + (hi - lo) * torch.rand(c, h, w, generator=generator)
    patch = init.to(x).requires_grad_(True)
    opt = torch.optim.Adam([patch], lr=lr * (hi - lo))
    trace: list[torch.Tensor] = []  # on the device: one host read at the end
    loss_fn = cross_entropy if target is None else _towards(target)
    for _ in range(steps):
        idx = torch.randint(0, int(x.shape[0]), (min(batch_size, int(x.shape[0])),),
                            generator=generator).to(x.device)  # fmt: skip
        xb, yb = x[idx], y[idx]
        with torch.enable_grad():
            pasted = transform_paste(xb, patch, generator, scale, rotation)
            loss, grad, _ = clf.loss_and_grad(pasted.detach(), yb, loss_fn)
            opt.zero_grad()
            pasted.backward(-grad / len(idx))  # the chain rule into the patch; Adam descends
        opt.step()
        with torch.no_grad():
            patch.clamp_(lo, hi)
        trace.append(loss.mean().detach())
    return UniversalPatch(
        patch.detach().clone(), size, int(x.shape[0]), steps, tuple(mean_trace(trace) or ())
    )


def random_placements(
    x: torch.Tensor, patch: torch.Tensor, placements: int, generator: torch.Generator
) -> Iterator[torch.Tensor]:
    """``placements`` copies of ``x``, each with ``patch`` at a random place per image, made
    one at a time as they are consumed (not all held at once)."""
    n, _, height, width = x.shape
    _, h, w = patch.shape
    for _ in range(placements):
        tops = torch.randint(0, height - h + 1, (n,), generator=generator)
        lefts = torch.randint(0, width - w + 1, (n,), generator=generator)
        yield place(x, patch.to(x).expand(n, -1, -1, -1), tops, lefts)


# splitmix64's constants as signed 64-bit integers (torch's int64 arithmetic wraps like C's)
_GOLDEN, _MIX1, _MIX2 = -0x61C8864680B583EB, -0x40A7B892E31B1A47, -0x6B2FB644ECCEEE15
_CHUNK = 1 << 22  # keys × places hashed at once
_RANKED = 4096  # up to this many places, all are ranked; beyond, distinct draws are read


def _shr(z: torch.Tensor, s: int) -> torch.Tensor:
    """The logical right shift of int64 (torch's ``>>`` sign-extends)."""
    return (z >> s) & ((1 << (64 - s)) - 1)


def _mix(z: torch.Tensor) -> torch.Tensor:
    """splitmix64's finaliser on int64: a bijection that scatters nearby inputs."""
    z = (z ^ _shr(z, 30)) * _MIX1
    z = (z ^ _shr(z, 27)) * _MIX2
    return z ^ _shr(z, 31)


def placement_corners(
    keys: torch.Tensor, count: int, patch: torch.Tensor, image: tuple[int, int], seed: int
) -> torch.Tensor:
    """N×P×2 top-left corners: for each image, ``P = min(count, places)`` distinct places the
    patch fits at, drawn from a hash of ``seed``, the image's key (its index in its source) and
    the place. So an image gets the same places in any subset, batch, rank or device, and the
    first k of P places are the places a run with ``count = k`` draws (the tries are nested).

    Up to ``_RANKED`` places, every place is hashed and the P smallest hashes win; beyond
    (ImageNet has tens of thousands), each image's hashed sequence of places is read until P
    distinct ones came up: N×P work instead of N×places."""
    rows, cols = image[0] - int(patch.shape[-2]) + 1, image[1] - int(patch.shape[-1]) + 1
    places = rows * cols
    p = min(count, places)
    keys = keys.to(torch.int64).cpu()
    if places <= _RANKED:
        chunks = keys.split(max(1, _CHUNK // places))
        out = [_hashed(seed, c, places).topk(p, dim=1, largest=False).indices for c in chunks]
    else:
        out = [_distinct_draws(seed, c, p, places) for c in keys.split(max(1, _CHUNK // (4 * p)))]
    first = torch.cat(out) if out else torch.zeros(0, p, dtype=torch.int64)
    return torch.stack((first // cols, first % cols), dim=-1)


def _distinct_draws(seed: int, keys: torch.Tensor, p: int, places: int) -> torch.Tensor:
    """N×p: the first ``p`` distinct places in each key's hashed sequence of draws."""
    n = int(keys.shape[0])
    seq = torch.zeros(n, 0, dtype=torch.int64)
    while True:  # more draws until every row has p distinct ones (repeats are rare here)
        width = max(2 * p, int(seq.shape[1]))
        more = _shr(_hashed(seed, keys, width, start=int(seq.shape[1])), 1) % places
        seq = torch.cat((seq, more), dim=1)
        repeat = (seq[:, :, None] == seq[:, None, :]).tril(diagonal=-1).any(dim=2)
        fresh = ~repeat
        if bool((fresh.sum(dim=1) >= p).all()):
            break
    order = torch.cumsum(fresh.long(), dim=1)  # rank of each fresh draw in its row
    pick = fresh & (order <= p)
    return seq[pick].view(n, p)


def _hashed(seed: int, keys: torch.Tensor, width: int, start: int = 0) -> torch.Tensor:
    """N×width int64 hashes of (seed, each key, columns start…start+width−1): the same for a
    key in any batch."""
    base = _mix(torch.tensor(seed & 0x7FFF_FFFF_FFFF_FFFF, dtype=torch.int64) * _GOLDEN)
    at = torch.arange(start, start + width, dtype=torch.int64)
    return _mix(
        base + _mix(keys.to(torch.int64).cpu()[:, None] * _GOLDEN + 1) + at[None, :] * _GOLDEN
    )


def noise_patches(
    keys: torch.Tensor, place: int, shape: tuple[int, ...], bounds: tuple[float, float], seed: int
) -> torch.Tensor:
    """N×C×h×w uniform random patches inside ``bounds`` for each image's ``place``-th placement:
    a fresh one for each image and placement, drawn from the image's key, one placement at a
    time (a batch of ImageNet-sized patches at every place at once would take gigabytes). The
    noise baseline is the expectation over noise, not one draw: single noise patches of 3x3 on
    the 8x8 digits range from 74% to 87% accuracy at a random place."""
    m = math.prod(shape)
    keys = keys.to(torch.int64).cpu()
    parts = [_shr(_hashed(seed, c, m, start=place * m), 11)
             for c in keys.split(max(1, _CHUNK // max(1, m)))]  # fmt: skip
    bits = torch.cat(parts) if parts else torch.zeros(0, m, dtype=torch.int64)
    u = bits.double() * 2.0**-53  # 53 random bits in [0, 1)
    lo, hi = bounds
    return (lo + (hi - lo) * u).float().view(int(keys.shape[0]), *shape)


def pasted_at(x: torch.Tensor, patch: torch.Tensor, corners: torch.Tensor) -> torch.Tensor:
    """``x`` with ``patch`` (C×h×w, or N×C×h×w: one per image) at each image's corner
    (``corners``: N×2)."""
    n = int(x.shape[0])
    patches = patch.to(x).expand(n, -1, -1, -1) if patch.dim() == 3 else patch.to(x)
    return place(x, patches, corners[:, 0], corners[:, 1])


class PastedPatch(PatchPGD):
    """A trained universal patch as the engine runs it: per image, the first of its own
    placements (``corners[position]``, P×2) at which the model errs (else the last), for the
    engine to verify; so the threat's robust accuracy is the share correct under every
    placement tried (the worst case over P tries).

    ``broke``: P×N, where the patch at each place already broke each audited sample in a
    verified judgement of this same model (:func:`robaudit.universal.prepare_universal`
    judges every place for the report). The run then pastes each sample's first breaking
    place straight away instead of querying the model P times again; the engine still
    verifies that candidate with its own fresh forward pass."""

    def __init__(self, params: PatchPGDParams, patch: torch.Tensor, corners: torch.Tensor,
                 broke: torch.Tensor | None = None) -> None:  # fmt: skip
        super().__init__(params)
        self.patch, self.corners, self.broke = patch, corners, broke

    def cost(self) -> float:
        return 1.0 if self.broke is not None else float(self.corners.shape[1])

    def run(
        self,
        clf: Classifier,
        x: torch.Tensor,
        y: torch.Tensor,
        threat: Threat,
        generator: torch.Generator,
    ) -> AttackOutput:
        raise RuntimeError("a pasted universal patch needs each sample's position (run_samples)")

    def run_samples(
        self,
        clf: Classifier,
        x: torch.Tensor,
        y: torch.Tensor,
        threat: Threat,
        generator: torch.Generator,
        positions: torch.Tensor,
    ) -> AttackOutput:
        del threat, generator  # the patch and its places were fixed before the run
        corners = self.corners[positions.cpu()]
        if self.broke is not None:  # judged already: each sample's first breaking place
            broke = self.broke[:, positions.cpu()]  # P×n
            first = torch.where(broke.any(dim=0), broke.long().argmax(dim=0), broke.shape[0] - 1)
            at = corners[torch.arange(int(corners.shape[0])), first]
            return AttackOutput(x_adv=pasted_at(x, self.patch, at),
                                claimed=broke.any(dim=0).to(x.device))  # fmt: skip
        best = x.clone()
        fooled = torch.zeros(int(x.shape[0]), dtype=torch.bool, device=x.device)
        for k in range(int(corners.shape[1])):
            cand = pasted_at(x, self.patch, corners[:, k])
            take = ~fooled
            best[take] = cand[take]
            fooled |= clf.predict(cand).to(x.device) != y
        return AttackOutput(x_adv=best, claimed=fooled)
