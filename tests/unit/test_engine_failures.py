"""A model that breaks in the middle of a run: a clear error naming the attack and the batch,
never a NaN output silently counted as a break or as robust."""

from __future__ import annotations

import re

import torch
from torch import nn

from robaudit.attacks.fgsm_pgd import PGD, PGDParams
from robaudit.classifier import Classifier
from robaudit.engine import EngineResult, PlannedAttack, run_plan
from robaudit.models.digits import DigitsCNN
from robaudit.threat import Threat


class BreaksAfter(nn.Module):
    """Fine for ``calls`` forward passes, then NaN logits (or an exception)."""

    def __init__(self, calls: int, how: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.inner = DigitsCNN().eval()
        self.left = calls
        self.how = how

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.left -= 1
        out = self.inner(x)
        if self.left < 0:
            if self.how == "raise":
                raise RuntimeError("CUDA error: device-side assert triggered")
            return out * float("nan")
        return out


def _run(model: nn.Module) -> EngineResult:
    x = torch.rand(20, 1, 8, 8)
    with torch.no_grad():
        y = model.inner(x).argmax(1)
    plan = [PlannedAttack(0, PGD(PGDParams(steps=3)), Threat("linf", 0.1))]
    return run_plan(Classifier(model, num_classes=10), x, y, plan, seed=0, batch_size=8)


def test_nan_mid_run_names_the_attack_and_the_batch() -> None:
    # the clean pass and one attack step work, then NaN: the run stops with the failure
    # named and the cell listed as not run (never counted as broken or robust)
    er = _run(BreaksAfter(2, "nan"))
    assert er.failure is not None
    assert re.match(
        r"pgd linf eps=0.1: the model returned NaN or inf logits on \d+ candidate\(s\) "
        r"of batch 1",
        er.failure,
    )
    assert er.cells == []
    assert er.unrun == [{"attack": "pgd", "attack_index": 0, "threat": "white-box/linf/0.1"}]


def test_exception_mid_run_names_the_attack() -> None:
    er = _run(BreaksAfter(2, "raise"))
    assert er.failure is not None
    assert er.failure.startswith("pgd linf eps=0.1: the model raised during the attack: CUDA error")


class NaNOnSome(nn.Module):
    """Randomized (noise) and NaN on the samples whose first pixel is above 0.5."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.inner = DigitsCNN().eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x + 0.01 * torch.randn_like(x))
        hot = x.flatten(1)[:, 0] > 0.5
        return out + torch.where(hot, float("nan"), 0.0)[:, None]


def test_majority_vote_does_not_hide_nan_draws() -> None:
    x = torch.rand(6, 1, 8, 8)
    x[:2, 0, 0, 0] = 0.9
    x[2:, 0, 0, 0] = 0.1
    clf = Classifier(NaNOnSome(), num_classes=10, votes=5)
    logits = clf.verification_logits(x)
    assert bool(torch.isnan(logits[:2]).all()) and bool(torch.isfinite(logits[2:]).all())
