"""verify_batch, the engine's invariant, tested directly: whatever an attack returns, only a
checked, projected, freshly judged candidate can count as a break."""

from __future__ import annotations

import torch
from torch import nn

from robaudit.classifier import Classifier
from robaudit.norms import get
from robaudit.threat import Threat
from robaudit.verification import verify_batch


class FirstPixel(nn.Module):
    """Class 1 when the first pixel exceeds 0.5, else class 0: easy to reason about."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = x.flatten(1)[:, :1]
        return torch.cat([0.5 - p, p - 0.5], dim=1) * 10


def _clf() -> Classifier:
    return Classifier(FirstPixel(), num_classes=2, bounds=(0.0, 1.0))


def test_out_of_ball_out_of_box_and_nan_candidates_are_counted_and_fixed() -> None:
    x = torch.full((4, 1, 2, 2), 0.45)
    y = torch.zeros(4, dtype=torch.long)
    cand = x.clone()
    cand[0, 0, 0, 0] = 0.9  # far outside the Linf ball of 0.1: would fool the model
    cand[1, 0, 0, 1] = 1.7  # outside the box and the ball
    cand[2, 0, 1, 1] = float("nan")
    cand[3, 0, 0, 0] = 0.54  # inside the ball, fools the model
    v = verify_batch(_clf(), x, cand, y, Threat("linf", 0.1))
    assert (v.nonfinite, v.bounds, v.budget) == (1, 1, 2)
    assert (get("linf").measure(v.x_adv - x) <= 0.1 + 1e-6).all()
    assert ((v.x_adv >= 0) & (v.x_adv <= 1)).all() and torch.isfinite(v.x_adv).all()
    assert torch.equal(v.x_adv[2], x[2])  # NaN: the clean input stands in
    # the far candidate was projected back to 0.55: still across the boundary, a fresh pass
    # says so; the NaN one (now clean) and the out-of-box one do not fool the model
    assert v.broken.tolist() == [True, False, False, True]
    assert torch.allclose(v.norms, torch.tensor([0.1, 0.1, 0.0, 0.09]), atol=1e-6)


def test_a_claim_is_never_trusted_the_fresh_forward_pass_decides() -> None:
    x = torch.full((2, 1, 2, 2), 0.3)
    y = torch.zeros(2, dtype=torch.long)
    v = verify_batch(_clf(), x, x + 0.05, y, Threat("l2", 1.0))  # looks like an attack, is not
    assert not v.broken.any() and v.verdict.right.all()


def test_minimal_norm_candidates_keep_their_size_and_break_only_within_eps() -> None:
    x = torch.full((2, 1, 2, 2), 0.45)
    y = torch.zeros(2, dtype=torch.long)
    cand = x.clone()
    cand[0, 0, 0, 0] = 0.52  # L2 size 0.07
    cand[1, 0, 0, 0] = 0.75  # L2 size 0.3: adversarial, but not within eps 0.1
    v = verify_batch(_clf(), x, cand, y, Threat("l2", 0.1), minimal=True)
    assert v.budget == 0 and v.adversarial.tolist() == [True, True]
    assert v.broken.tolist() == [True, False]
    assert torch.allclose(v.norms, torch.tensor([0.07, 0.3]), atol=1e-6)
