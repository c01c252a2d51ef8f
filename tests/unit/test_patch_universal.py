"""Universal patches: trained with EOT on images the audit does not judge, then pasted at random
places on the audited ones and verified by the engine (robaudit/universal.py)."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from robaudit.attacks.base import AttackOutput
from robaudit.attacks.patch_pgd import PatchPGDParams
from robaudit.attacks.patch_universal import (
    PastedPatch,
    noise_patches,
    placement_corners,
    train_universal,
    transform_paste,
)
from robaudit.classifier import Classifier
from robaudit.loading.data import digits_arrays, load_data
from robaudit.loading.holdout import universal_training_data
from robaudit.loading.model import load_model
from robaudit.threat import Threat
from robaudit.universal import evaluate_universal
from tests.helpers import one_thread

ROOT = Path(__file__).resolve().parents[2]
DIGITS = {"input_shape": (1, 8, 8), "bounds": (0.0, 1.0), "num_classes": 10}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    yield from one_thread()


def test_digits_patch_trains_on_the_train_split_never_on_audited_samples() -> None:
    audited = load_data("builtin:digits", split="test", samples=100, seed=0, **DIGITS)
    held = universal_training_data("builtin:digits", "test", audited=audited.indices, **DIGITS)
    assert held.split == "train" and held.x.shape[0] == 1297
    test_rows = {r.tobytes() for r in digits_arrays("test")[0]}
    assert not any(r.numpy().tobytes() in test_rows for r in held.x)


def test_a_source_without_splits_trains_on_the_samples_left_out(tmp_path: Path) -> None:
    x, y = digits_arrays("test")
    path = tmp_path / "d.npz"
    np.savez(path, x=x[:60], y=y[:60])
    audited = load_data(str(path), split="test", samples=40, seed=1, **DIGITS)
    held = universal_training_data(str(path), "test", audited=audited.indices, **DIGITS)
    assert held.x.shape[0] == 20 and held.split == "test"
    audited_rows = {r.numpy().tobytes() for r in audited.x}
    assert not any(r.numpy().tobytes() in audited_rows for r in held.x)


def test_eot_paste_is_differentiable_in_the_patch_and_local() -> None:
    x = torch.zeros(16, 3, 16, 16)
    patch = torch.ones(3, 4, 4, requires_grad=True)
    out = transform_paste(x, patch, torch.Generator().manual_seed(0))
    out.sum().backward()
    assert patch.grad is not None and float(patch.grad.abs().sum()) > 0
    changed = (out.detach() != 0).any(1).flatten(1).sum(1)
    # up to +20% scale and 20 degrees of rotation, bilinear edges: far less than the image
    assert int(changed.max()) <= 49 and int(changed.min()) >= 4


def test_a_trained_patch_beats_random_noise_patches_by_30_points() -> None:
    """The issue's bar: a 10% (3x3) patch trained on the train split leaves held-out accuracy
    30+ points below random-noise patches of the same size at the same places (a fresh noise
    patch at every place), when the attacker may try 4 places per image (measured 35-39 over
    seeds 0-2; at 1 place 19-22, the most this 8x8 model allows is about 24)."""
    model = load_model(ROOT / "sample_models" / "digits_cnn.pt").module.eval()
    clf = Classifier(model, num_classes=10)
    audited = load_data("builtin:digits", split="test", samples=None, seed=0, **DIGITS)
    held = universal_training_data("builtin:digits", "test", audited=audited.indices, **DIGITS)
    trained = train_universal(clf, held.x, held.y, 0.1, torch.Generator().manual_seed(0), steps=200)
    assert trained.patch.shape == (1, 3, 3) and float(trained.patch.min()) >= 0
    x, y, keys = audited.x, audited.y, torch.tensor(audited.indices)
    corners = placement_corners(keys, 8, trained.patch, (8, 8), seed=1)
    gen = torch.Generator()
    ours = evaluate_universal(clf, x, y, trained.patch, 0.1, gen, corners=corners)
    noise = partial(noise_patches, keys, shape=(1, 3, 3), bounds=clf.bounds, seed=2)
    base = evaluate_universal(clf, x, y, noise, 0.1, gen, corners=corners)
    assert ours.budget_violations == 0 and base.budget_violations == 0
    gap = {k: b - a for (k, a), (_, b) in zip(ours.tries(), base.tries(), strict=True)}
    assert sorted(gap) == [1, 2, 4, 8]
    assert gap[4] >= 0.30 and gap[8] >= 0.25
    assert base.accuracy - ours.accuracy >= 0.15  # at one random place (measured 19-22)
    assert ours.robust_accuracy == dict(ours.tries())[8]


def test_each_image_gets_its_own_distinct_nested_places_in_any_batch() -> None:
    """Placements come from the image's key: the same in any subset or order, distinct, on
    the image, and the first k of P places are what a run with k places draws."""
    patch = torch.zeros(1, 3, 3)
    keys = torch.arange(40) * 7 + 3
    c = placement_corners(keys, 12, patch, (8, 8), seed=5)
    assert c.shape == (40, 12, 2) and int(c.min()) >= 0 and int(c.max()) <= 5
    flat = c[..., 0] * 6 + c[..., 1]
    assert all(len(set(row.tolist())) == 12 for row in flat)  # no place twice on one image
    assert not all(torch.equal(flat[0], row) for row in flat[1:])  # images differ
    perm = torch.randperm(40, generator=torch.Generator().manual_seed(0))
    assert torch.equal(placement_corners(keys[perm], 12, patch, (8, 8), seed=5), c[perm])
    assert torch.equal(placement_corners(keys, 5, patch, (8, 8), seed=5), c[:, :5])
    assert not torch.equal(placement_corners(keys, 12, patch, (8, 8), seed=6), c)
    assert placement_corners(keys, 100, patch, (8, 8), seed=5).shape[1] == 36  # all places
    # an ImageNet-sized image (23,716 places): drawn, not ranked; the same properties
    big, keys2 = torch.zeros(3, 71, 71), torch.arange(3000) * 13
    d = placement_corners(keys2, 16, big, (224, 224), seed=5)
    assert d.shape == (3000, 16, 2) and int(d.min()) >= 0 and int(d.max()) <= 153
    assert all(len(set((r[:, 0] * 154 + r[:, 1]).tolist())) == 16 for r in d)
    assert torch.equal(placement_corners(keys2[perm], 16, big, (224, 224), seed=5), d[perm])
    assert torch.equal(placement_corners(keys2, 3, big, (224, 224), seed=5), d[:, :3])
    # every place is drawn about equally often over many images
    many = placement_corners(torch.arange(3600), 1, patch, (8, 8), seed=0)[:, 0]
    counts = torch.bincount(many[:, 0] * 6 + many[:, 1], minlength=36)
    assert int(counts.min()) >= 60 and int(counts.max()) <= 140  # expected 100 each


def test_noise_patches_are_uniform_in_the_bounds_and_fixed_by_the_key() -> None:
    keys = torch.tensor([4, 9, 11])
    n = torch.stack([noise_patches(keys, k, (3, 2, 2), (-1.0, 2.0), seed=3) for k in range(6)], 1)
    assert n.shape == (3, 6, 3, 2, 2) and float(n.min()) >= -1 and float(n.max()) < 2
    assert torch.equal(noise_patches(keys[1:], 4, (3, 2, 2), (-1.0, 2.0), seed=3), n[1:, 4])
    assert not torch.equal(noise_patches(keys, 0, (3, 2, 2), (-1.0, 2.0), seed=4), n[:, 0])
    big = torch.stack([noise_patches(torch.arange(200), k, (1, 3, 3), (0.0, 1.0), seed=0)
                       for k in range(10)])  # fmt: skip
    assert abs(float(big.mean()) - 0.5) < 0.02 and abs(float(big.var()) - 1 / 12) < 0.005
    assert len(torch.unique(big)) > 0.99 * big.numel()  # fresh values, not repeated


def test_the_pasted_patch_judges_each_sample_at_its_own_places() -> None:
    """The engine hands the pasted patch each sample's position: a sample's verdict and
    candidate do not depend on which batch it is in; without positions it refuses to run."""
    model = load_model(ROOT / "sample_models" / "digits_cnn.pt").module.eval()
    clf = Classifier(model, num_classes=10)
    x, y = (torch.from_numpy(a[:60].copy()) for a in digits_arrays("test"))
    corners = placement_corners(torch.arange(60), 6, torch.zeros(1, 3, 3), (8, 8), seed=0)
    attack = PastedPatch(PatchPGDParams(), torch.ones(1, 3, 3), corners)
    threat, gen = Threat("patch", 0.1), torch.Generator()
    whole = attack.run_samples(clf, x, y, threat, gen, torch.arange(60))
    parts = [attack.run_samples(clf, x[i : i + 7], y[i : i + 7], threat, gen, torch.arange(i, min(60, i + 7)))
             for i in range(0, 60, 7)]  # fmt: skip
    assert torch.equal(torch.cat([p.x_adv for p in parts]), whole.x_adv)
    assert isinstance(whole, AttackOutput) and whole.claimed is not None
    fooled = whole.claimed
    assert torch.equal(clf.predict(whole.x_adv) != y, fooled)  # the claim is the verdict
    # a fooled sample carries the patch at one of its own places
    for i in fooled.nonzero().flatten().tolist():
        moved = (whole.x_adv[i] != x[i]).any(0) | (x[i] == 1).all(0)
        assert any(bool(moved[r : r + 3, c : c + 3].all()) for r, c in corners[i].tolist())
    with pytest.raises(RuntimeError, match="position"):
        attack.run(clf, x, y, threat, gen)
    # with the places judged already (as a scan has them), no queries: the same verdicts, and
    # each sample carries its first breaking place (the one the querying run also keeps)
    judged = evaluate_universal(clf, x, y, torch.ones(1, 3, 3), 0.1, gen, corners=corners)
    fast = PastedPatch(PatchPGDParams(), torch.ones(1, 3, 3), corners,
                       broke=~judged.correct & judged.clean[None, :])  # fmt: skip
    before = clf.counters.queries
    out = fast.run_samples(clf, x, y, threat, gen, torch.arange(60))
    assert clf.counters.queries == before and fast.cost() == 1.0
    assert out.claimed is not None and torch.equal(out.claimed, fooled & judged.clean)
    hit = fooled & judged.clean  # the engine attacks only samples classified right clean
    assert torch.equal(out.x_adv[hit], whole.x_adv[hit])
