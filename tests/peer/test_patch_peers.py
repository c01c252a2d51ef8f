"""Patch attacks against ART's AdversarialPatchPyTorch (Brown et al. 2017), on both sample
models at the same patch size (10%: 3x3 of the 8x8 digits).

ART's patch is universal: one patch trained over a set of images. Both libraries train on
the same 600 images of the train split (robaudit: EOT over place, scale ±20%, rotation ±20°;
ART: random place, the same scale and rotation ranges) and both patches are judged the same
way by robaudit's engine on the test images: pasted at the same 16 places per image, every pasted image
verified (changes inside one 3x3 region, a fresh forward pass). robaudit's universal patch
must leave at most ART's robust accuracy + 1 point, and robaudit's per-sample patch search
(patch-pgd, anywhere) at most that too. ART's own pasting (apply_patch) is judged by
the engine too: its sub-pixel placement interpolates the patch over a 4x4 area, outside the
3x3 region, so the engine counts those and projects them before its fresh forward pass.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from robaudit.attacks.patch_pgd import PatchPGD, PatchPGDParams
from robaudit.attacks.patch_universal import placement_corners, train_universal
from robaudit.classifier import Classifier
from robaudit.engine import PlannedAttack, run_plan
from robaudit.loading.data import digits_arrays
from robaudit.loading.model import load_model
from robaudit.norms import get
from robaudit.threat import Threat
from robaudit.universal import evaluate_universal
from robaudit.verification import verify_batch
from tests.helpers import one_thread

pytestmark = [pytest.mark.peer, pytest.mark.filterwarnings("ignore::UserWarning")]
ROOT = Path(__file__).resolve().parents[2]
SIZE, N_TRAIN, N_TEST = 0.1, 300, 200


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    yield from one_thread()


def _art_patch(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, object]:
    from art.attacks.evasion import AdversarialPatchPyTorch
    from art.estimators.classification import PyTorchClassifier

    est = PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=(1, 8, 8),
                            nb_classes=10, clip_values=(0.0, 1.0))  # fmt: skip
    attack = AdversarialPatchPyTorch(
        est, rotation_max=20.0, scale_min=0.8, scale_max=1.0, distortion_scale_max=0.0,
        learning_rate=0.1, max_iter=150, batch_size=128, patch_shape=(1, 3, 3),
        patch_type="square", optimizer="Adam", targeted=False, verbose=False,
    )  # fmt: skip
    patch, _ = attack.generate(x=x, y=np.eye(10)[y])
    return patch, attack


@pytest.mark.parametrize("name", ["digits_cnn.pt", "digits_cnn_robust.pt"])
def test_universal_and_per_sample_patches_at_least_as_strong_as_art(name: str) -> None:
    model = load_model(ROOT / "sample_models" / name).module.eval()
    clf = Classifier(model, num_classes=10)
    xtr, ytr = (torch.from_numpy(a[:N_TRAIN].copy()) for a in digits_arrays("train"))
    x, y = (torch.from_numpy(a[:N_TEST].copy()) for a in digits_arrays("test"))
    t0 = time.perf_counter()
    ours = train_universal(clf, xtr, ytr, SIZE, torch.Generator().manual_seed(0), steps=150)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    art_patch, art = _art_patch(model, xtr.numpy(), ytr.numpy())
    t_art = time.perf_counter() - t0
    corners = placement_corners(torch.arange(len(y)), 16, ours.patch, (8, 8), seed=1)
    gen = torch.Generator()
    r_ours = evaluate_universal(clf, x, y, ours.patch, SIZE, gen, corners=corners)
    r_art = evaluate_universal(clf, x, y, torch.from_numpy(art_patch), SIZE, gen, corners=corners)
    assert r_ours.budget_violations == 0 and r_art.budget_violations == 0
    # ART's own pasting (a random, sub-pixel place): judged by the engine, which counts the
    # pasted images whose (interpolated) changes leave a 3x3 region and projects them first
    pasted = torch.from_numpy(art.apply_patch(x.numpy(), scale=1.0)).float()  # type: ignore[attr-defined]
    v = verify_batch(clf, x, pasted, y, Threat("patch", SIZE))
    inside = get("patch").measure(v.x_adv - x) <= SIZE + 1e-6
    assert v.bounds == 0 and bool(inside.all())  # after projection: all in one region
    # robaudit's per-sample search, anywhere, at the same size
    t0 = time.perf_counter()
    res = run_plan(clf, x, y, [PlannedAttack(0, PatchPGD(PatchPGDParams()), Threat("patch", SIZE))],
                   seed=0, batch_size=N_TEST)  # fmt: skip
    t_pgd = time.perf_counter() - t0
    per_sample = float((res.correct & ~res.cells[0].broken).double().mean())
    print(f"\n{name}: universal robust acc (16 places) robaudit {r_ours.robust_accuracy:.3f} "
          f"({t_ours:.1f} s) vs ART {r_art.robust_accuracy:.3f} ({t_art:.1f} s); mean "
          f"accuracy {r_ours.accuracy:.3f} vs {r_art.accuracy:.3f}; per-sample patch-pgd "
          f"{per_sample:.3f} ({t_pgd:.1f} s); ART's own pasting: {v.budget} of {N_TEST} "
          f"outside a 3x3 region, {int(v.broken.sum())} misclassified after projection")  # fmt: skip
    assert r_ours.robust_accuracy <= r_art.robust_accuracy + 0.01
    assert per_sample <= r_art.robust_accuracy + 0.01
