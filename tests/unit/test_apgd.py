"""APGD / APGD-T (Croce & Hein 2020): the DLR losses, the checkpoint schedule, and why DLR.

The registry-wide contract and oracle tests cover the budget, bounds, seeding and reach of
``apgd`` and ``apgd-t``; these tests pin the paper's definitions and PGD's new modes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from robaudit.attacks.apgd import APGD, APGDT, APGDParams, APGDTParams, checkpoints
from robaudit.attacks.base import Attack, registry
from robaudit.attacks.fgsm_pgd import PGD, PGDParams, pick_target
from robaudit.attacks.losses import dlr, dlr_targeted, get_loss, get_targeted_loss, margin
from robaudit.classifier import Classifier
from robaudit.engine import PlannedAttack, run_plan
from robaudit.loading.data import digits_arrays
from robaudit.loading.model import load_model
from robaudit.threat import Threat

ROOT = Path(__file__).resolve().parents[2]


# -- losses ------------------------------------------------------------------------------
def test_dlr_on_hand_made_logits() -> None:
    z = torch.tensor([[1.0, 3.0, 2.0, 0.0], [1.0, 3.0, 2.0, 0.0]])
    # sorted: 3, 2, 1, 0 -> z_pi1 - z_pi3 = 3 - 1 = 2
    # y=0 (misclassified): -(1 - 3) / 2 = 1 ; y=1 (correct): -(3 - 2) / 2 = -0.5
    out = dlr(z, torch.tensor([0, 1]))
    torch.testing.assert_close(out, torch.tensor([1.0, -0.5]))


def test_targeted_dlr_on_hand_made_logits() -> None:
    z = torch.tensor([[1.0, 3.0, 2.0, 0.0, -1.0]])
    # -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2) = -(3 - 2) / (3 - (1 + 0) / 2) = -0.4
    out = dlr_targeted(z, torch.tensor([1]), torch.tensor([2]))
    torch.testing.assert_close(out, torch.tensor([-0.4]))
    # reaching the target makes it positive
    out = dlr_targeted(z, torch.tensor([2]), torch.tensor([1]))
    torch.testing.assert_close(out, torch.tensor([0.4]))


@pytest.mark.parametrize("scale", [1e-3, 7.0, 1e4])
def test_dlr_losses_are_scale_and_shift_invariant(scale: float) -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(32, 10, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (32,), generator=g)
    t = (y + 1 + torch.randint(0, 9, (32,), generator=g)) % 10
    torch.testing.assert_close(dlr(scale * z + 3.0, y), dlr(z, y))
    torch.testing.assert_close(dlr_targeted(scale * z - 2.0, y, t), dlr_targeted(z, y, t))
    assert not torch.allclose(margin(scale * z, y), margin(z, y))


def test_dlr_with_too_few_classes_falls_back_to_the_margin() -> None:
    z = torch.tensor([[0.0, 2.0], [1.0, -1.0]])
    y = torch.tensor([0, 0])
    torch.testing.assert_close(dlr(z, y), margin(z, y))
    torch.testing.assert_close(dlr_targeted(z, y, 1 - y), z[:, 1] - z[:, 0])


def test_loss_lookup() -> None:
    assert get_loss("dlr") is dlr and get_targeted_loss("dlr") is dlr_targeted
    z = torch.tensor([[2.0, 0.0, -1.0]])
    # targeted CE ascends towards t: minus the cross-entropy of the target
    ce_t = get_targeted_loss("ce")(z, torch.tensor([0]), torch.tensor([1]))
    torch.testing.assert_close(ce_t, -torch.nn.functional.cross_entropy(z, torch.tensor([1]))[None])
    with pytest.raises(ValueError, match="unknown loss"):
        get_targeted_loss("hinge")


# -- the checkpoint schedule -------------------------------------------------------------
def test_checkpoints_for_100_steps() -> None:
    # p = 0, .22, .41, .57, .70, .80, .87, .93, .99 (then 1.05 > 1)
    assert checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]


@pytest.mark.parametrize("steps", [1, 2, 5, 10, 37, 1000])
def test_checkpoints_are_increasing_and_inside_the_run(steps: int) -> None:
    w = checkpoints(steps)
    assert w[0] == 0 and w == sorted(set(w)) and w[-1] < steps


# -- parameters and cost -------------------------------------------------------------------
def test_params_are_validated_and_cost_counts_every_pass() -> None:
    with pytest.raises(ValidationError):
        APGDParams.model_validate({"loss": "margin"})
    with pytest.raises(ValidationError):
        APGDTParams.model_validate({"step_size": 0.1})
    assert APGD(APGDParams(steps=50, restarts=2)).cost() == 100
    assert APGDT(APGDTParams(steps=50, restarts=2, targets=3)).cost() == 300
    assert APGDT().cost() == 900
    assert {"apgd", "apgd-t"} <= set(registry())
    PGDParams.model_validate({"loss": "dlr", "targeted": True, "target": "least-likely"})
    with pytest.raises(ValidationError):
        PGDParams.model_validate({"target": "random"})


def _linear(n: int = 40) -> tuple[Classifier, torch.Tensor, torch.Tensor]:
    """5 classes, each the sum of its own block of 3 pixels: every class is reachable in the box."""
    g = torch.Generator().manual_seed(3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 5, bias=False)).eval()
    with torch.no_grad():
        model[1].weight.zero_()
        for c in range(5):
            model[1].weight[c, 3 * c : 3 * c + 3] = 1.0
    x = torch.rand(n, 1, 4, 4, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    return Classifier(model, num_classes=5), x, y


def test_apgd_spends_exactly_steps_gradients_without_early_stop() -> None:
    clf, x, y = _linear()
    APGD(APGDParams(steps=30, early_stop=False)).run(
        clf, x, y, Threat("linf", 0.05), torch.Generator().manual_seed(0)
    )
    assert clf.counters.grad_evals == 30 * x.shape[0]
    assert clf.counters.queries == 31 * x.shape[0]  # plus one forward for the last iterate


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_without_early_stop_the_misclassified_point_is_kept(norm: str) -> None:
    """A sample misclassified on the way is returned misclassified even if the search moves on."""
    clf, x, y = _linear()
    eps = 0.3 if norm == "linf" else 1.5
    for attack in (APGD(APGDParams(steps=20)), APGD(APGDParams(steps=20, early_stop=False))):
        out = attack.run(clf, x, y, Threat(norm, eps), torch.Generator().manual_seed(0))
        assert out.loss_trace is not None and len(out.loss_trace) >= 1
        fooled = clf.predict(out.x_adv) != y
        assert fooled.float().mean() > 0.9


def test_apgd_t_first_target_is_the_most_likely_wrong_class() -> None:
    """With one target, APGD-T pushes each sample's most likely wrong class above its true one."""
    clf, x, y = _linear()
    out = APGDT(APGDTParams(steps=30, targets=1)).run(
        clf, x, y, Threat("linf", 0.5), torch.Generator().manual_seed(0)
    )
    logits = clf.logits(out.x_adv)
    target = pick_target(clf, x, y, "most-likely")
    assert bool((logits.argmax(1) != y).all())
    assert float((dlr_targeted(logits, y, target) > 0).float().mean()) >= 0.9


# -- PGD's new modes -----------------------------------------------------------------------
def test_pick_target() -> None:
    clf = Classifier(nn.Flatten(), num_classes=4)
    x = torch.tensor([[0.1, 0.9, 0.5, 0.0], [0.3, 0.2, 0.1, 0.0]])
    y = torch.tensor([1, 3])
    assert pick_target(clf, x, y, "most-likely").tolist() == [2, 0]
    assert pick_target(clf, x, y, "least-likely").tolist() == [3, 2]


@pytest.mark.parametrize("which", ["most-likely", "least-likely"])
@pytest.mark.parametrize("loss", ["ce", "margin", "dlr"])
def test_targeted_pgd_steers_to_its_target(loss: str, which: str) -> None:
    clf, x, y = _linear()
    params = PGDParams(steps=40, targeted=True, target=which, loss=loss, early_stop=False)
    out = PGD(params).run(clf, x, y, Threat("linf", 1.0), torch.Generator().manual_seed(0))
    target = pick_target(clf, x, y, which)
    logits = clf.logits(out.x_adv)
    if loss == "dlr":  # targeted DLR only asks z_t > z_y, not that t wins
        assert bool((dlr_targeted(logits, y, target) > 0).all())
    else:
        assert bool((logits.argmax(1) == target).all())


# -- why DLR: scale invariance in practice ----------------------------------------------------
class Scaled(nn.Module):
    """A model whose logits are multiplied by ``factor``: same decisions, saturated softmax."""

    def __init__(self, inner: nn.Module, factor: float) -> None:
        super().__init__()
        self.inner, self.factor = inner, factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) * self.factor


def test_apgd_dlr_breaks_a_model_with_huge_logits_where_pgd_ce_fails() -> None:
    """Logits ×1e4 make float32 cross-entropy gradients exactly zero; DLR does not care."""
    xs, ys = digits_arrays("test")
    x, y = torch.from_numpy(xs[:64]), torch.from_numpy(ys[:64])
    inner = load_model(ROOT / "sample_models" / "digits_cnn.pt").module
    clf = Classifier(Scaled(inner, 1e4), num_classes=10)
    threat = Threat("linf", 0.2)

    def robust(attack: Attack) -> float:
        res = run_plan(clf, x, y, [PlannedAttack(0, attack, threat)], seed=0, batch_size=64)
        return float((res.correct & ~res.cells[0].broken).float().mean())

    clean = float((clf.predict(x) == y).float().mean())
    pgd_ce = robust(PGD(PGDParams(steps=30)))
    apgd_dlr = robust(APGD(APGDParams(steps=50, loss="dlr")))
    assert clean >= 0.95
    assert pgd_ce >= 0.8, f"PGD-CE should be stuck on saturated logits, got {pgd_ce:.3f}"
    assert apgd_dlr <= 0.1, f"APGD-DLR should break the scaled model, got {apgd_dlr:.3f}"
