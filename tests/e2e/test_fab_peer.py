"""FAB and FAB-T against torchattacks.FAB on the committed sample models.

Same images (the first 100 digits of the test split), steps, one restart, alpha_max, eta and
beta. Two comparisons per model × norm × version, on the samples both sides break:

* the median minimal norm: ours within 10% of theirs, or lower (theirs runs with an eps no
  sample needs, so it returns its smallest adversarial; its FAB-T then stops at the first
  target that fools a sample, ours keeps the smallest over all targets);
* robust accuracy at Linf 0.1 / 0.2 and L2 1.0: ours (derived from the norms, as the engine
  does) at most 1 point above theirs (success: misclassified with norm ≤ eps). FAB-T is run at
  each eps, since theirs tries the next target only on samples not yet broken within eps.
  Untargeted FAB with one restart uses eps only in the final ``norm ≤ eps`` test (its single
  run starts at the clean input; eps sizes the random starts of later restarts alone), so
  its one run at the large eps, counted at each eps, is exactly its run at that eps.

The step count is cut to 20 (AutoAttack's FAB-T uses 100) so the file fits its time budget on
one thread; both sides get the same. The measured figures are printed (run with ``-s``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from robaudit.attacks.fab import FAB, FABT, FABParams, FABTParams
from robaudit.attacks.projections import flat_norm
from robaudit.classifier import Classifier
from robaudit.loading.data import digits_arrays
from robaudit.loading.model import load_model
from robaudit.threat import Threat
from tests.helpers import one_thread

pytestmark = pytest.mark.peer

ROOT = Path(__file__).resolve().parents[2]
N = 100
STEPS = 20
MODELS = ("digits_cnn", "digits_cnn_robust")
EPS = {"linf": (0.1, 0.2), "l2": (1.0,)}
TA_NORM = {"linf": "Linf", "l2": "L2"}
HUGE = 1e6  # an eps no digit needs: torchattacks then returns its smallest adversarial
Key = tuple[str, str, bool]  # (model, norm, targeted)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    yield from one_thread()


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = digits_arrays("test")
    return torch.from_numpy(x[:N].copy()), torch.from_numpy(y[:N].copy())


def _module(name: str) -> torch.nn.Module:
    return load_model(ROOT / "sample_models" / f"{name}.pt").module


def _norms(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, xa: torch.Tensor, norm: str
) -> torch.Tensor:
    """Per-sample norm of an adversarial confirmed by a fresh forward pass; inf where none."""
    with torch.no_grad():
        fooled = (model(xa).argmax(dim=1) != y) & (model(x).argmax(dim=1) == y)
    size = flat_norm(xa - x, norm)
    return torch.where(fooled, size, torch.full_like(size, float("inf")))


def _robust_acc(norms: torch.Tensor, correct: torch.Tensor, eps: float) -> float:
    """Share of all samples still classified right after every adversarial within eps."""
    return float((correct & ~(norms <= eps)).float().mean())


def _theirs(
    ta: Any,
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    norm: str,
    eps: float,
    targeted: bool,
) -> torch.Tensor:
    """torchattacks.FAB's verified norms at ``eps`` (inf where it reports no success)."""
    fab = ta.FAB(
        model, norm=TA_NORM[norm], eps=eps, steps=STEPS, n_restarts=1,
        multi_targeted=targeted, n_classes=10,
    )  # fmt: skip
    return _norms(model, x, y, fab(x, y), norm)


@pytest.fixture(scope="module")
def runs() -> dict[Key, dict[str, Any]]:
    ta = pytest.importorskip("torchattacks")
    x, y = _data()
    out: dict[Key, dict[str, Any]] = {}
    for name in MODELS:
        model = _module(name)
        with torch.no_grad():
            correct = model(x).argmax(dim=1) == y
        clf = Classifier(model, num_classes=10)
        for norm in ("linf", "l2"):
            for targeted in (False, True):
                attack = FABT(FABTParams(steps=STEPS)) if targeted else FAB(FABParams(steps=STEPS))
                t0 = time.perf_counter()
                threat = Threat(norm, float("inf"), label="inf")
                xa = attack.run(clf, x, y, threat, torch.Generator().manual_seed(0)).x_adv
                ours_s = time.perf_counter() - t0
                ours = _norms(model, x, y, xa, norm)

                t0 = time.perf_counter()
                theirs = _theirs(ta, model, x, y, norm, HUGE, targeted)
                theirs_s = time.perf_counter() - t0
                acc = {}
                for eps in EPS[norm]:
                    at_eps = _theirs(ta, model, x, y, norm, eps, targeted) if targeted else theirs
                    acc[eps] = (_robust_acc(ours, correct, eps), _robust_acc(at_eps, correct, eps))
                theirs_all_s = time.perf_counter() - t0
                out[(name, norm, targeted)] = {
                    "ours": ours, "theirs": theirs, "acc": acc, "correct": correct,
                    "seconds": (ours_s, theirs_s, theirs_all_s),
                }  # fmt: skip
                both = torch.isfinite(ours) & torch.isfinite(theirs)
                print(
                    f"\n{name} {norm} {'fab-t' if targeted else 'fab'}: median "
                    f"{float(ours[both].median()):.4f} ours vs {float(theirs[both].median()):.4f} "
                    f"torchattacks ({int(both.sum())} samples), robust acc "
                    + ", ".join(f"@{e}: {a:.2f} vs {b:.2f}" for e, (a, b) in acc.items())
                    + f", time {ours_s:.1f}s vs {theirs_s:.1f}s"
                    + f" ({theirs_all_s:.1f}s with the eps runs)"
                )
    return out


def test_both_break_nearly_every_correct_digit(runs: dict[Key, dict[str, Any]]) -> None:
    for key, r in runs.items():
        correct = r["correct"]
        found = torch.isfinite(r["ours"])
        assert not (found & ~correct).any(), key
        assert int(found.sum()) >= int(torch.isfinite(r["theirs"]).sum()), key
        assert float(found.sum() / correct.sum()) >= 0.95, key


def test_median_minimal_norm_is_within_10_percent_of_torchattacks(
    runs: dict[Key, dict[str, Any]],
) -> None:
    for key, r in runs.items():
        both = torch.isfinite(r["ours"]) & torch.isfinite(r["theirs"])
        assert int(both.sum()) >= 90, key
        ours, theirs = float(r["ours"][both].median()), float(r["theirs"][both].median())
        assert ours <= 1.10 * theirs, f"{key}: median {ours:.4f} vs torchattacks {theirs:.4f}"


def test_fab_t_keeps_the_smallest_over_targets(runs: dict[Key, dict[str, Any]]) -> None:
    """Ours tries every target on every sample; theirs stops at the first that fools it."""
    for name in MODELS:
        for norm in ("linf", "l2"):
            r = runs[(name, norm, True)]
            both = torch.isfinite(r["ours"]) & torch.isfinite(r["theirs"])
            assert float(r["ours"][both].median()) <= float(r["theirs"][both].median()) * 1.001


def test_robust_accuracy_is_at_most_one_point_above_torchattacks(
    runs: dict[Key, dict[str, Any]],
) -> None:
    for key, r in runs.items():
        for eps, (ours, theirs) in r["acc"].items():
            assert ours <= theirs + 0.01, f"{key} eps={eps}: robust acc {ours:.2f} vs {theirs:.2f}"
