"""SimBA (score-based) and HopSkipJump (decision-based): the black-box protocol they must keep.

Query counts are exact per sample (checked against the classifier's counter and against an
independent count of the rows the model saw), budgets and bounds hold, a seed fixes the
output, each attack runs through a view that refuses more access than it declared, and what
HopSkipJump reports as adversarial really is. On an affine model HopSkipJump must come close
to the exact minimal L2 distance, which is known in closed form.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from robaudit.attacks.base import Attack, AttackOutput, registry
from robaudit.attacks.hopskipjump import HopSkipJump, HopSkipJumpParams
from robaudit.attacks.losses import margin
from robaudit.attacks.projections import flat_norm
from robaudit.attacks.simba import SimBA, SimBAParams
from robaudit.classifier import AccessDenied, Classifier
from robaudit.models.digits import DigitsCNN
from robaudit.threat import Threat
from tests.helpers import RowCounter as Counting
from tests.helpers import one_thread

EPS = {"l2": 1.0, "linf": 0.15}
N = 16


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    yield from one_thread()



@pytest.fixture(scope="module")
def digits() -> tuple[DigitsCNN, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = DigitsCNN().eval()
    x = torch.rand(N, 1, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)  # labels = predictions, so every sample starts correct
    return model, x, y


def _view(model: nn.Module, access: str) -> tuple[Classifier, Counting]:
    counting = Counting(model)
    return Classifier(counting, num_classes=10).restricted(access), counting


def _run(attack: Attack, model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: Threat,
         seed: int = 7) -> tuple[AttackOutput, int, int]:
    """Run through the view the attack's access level gives; (output, counter, rows seen)."""
    access = "score" if attack.requires == "scores" else "decision"
    clf, counting = _view(model, access)
    before = clf.counters.queries
    out = attack.run(clf, x.clone(), y.clone(), threat, torch.Generator().manual_seed(seed))
    return out, clf.counters.queries - before, counting.rows


def _predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(1)


CASES = [
    (SimBA(SimBAParams(basis="dct", queries=300)), "l2"),
    (SimBA(SimBAParams(basis="dct", queries=300)), "linf"),
    (SimBA(SimBAParams(basis="pixel", queries=300)), "l2"),
    (SimBA(SimBAParams(basis="pixel", queries=300)), "linf"),
    (HopSkipJump(HopSkipJumpParams(queries=400)), "l2"),
    (HopSkipJump(HopSkipJumpParams(queries=400)), "linf"),
]
IDS = [f"{a.name}-{getattr(a.params, 'basis', '')}-{norm}" for a, norm in CASES]


@pytest.mark.parametrize(("attack", "norm"), CASES, ids=IDS)
def test_queries_counted_exactly(attack: Attack, norm: str, digits: tuple) -> None:
    model, x, y = digits
    out, counted, rows = _run(attack, model, x, y, Threat(norm, EPS[norm]))
    assert out.queries is not None and out.queries.dtype == torch.int64
    assert out.queries.shape == (N,) and out.queries.device.type == "cpu"
    assert int(out.queries.sum()) == counted == rows
    budget = attack.params.queries  # type: ignore[attr-defined]
    assert int(out.queries.max()) <= budget and int(out.queries.min()) >= 1


@pytest.mark.parametrize(("attack", "norm"), CASES, ids=IDS)
def test_bounds_budget_and_seed(attack: Attack, norm: str, digits: tuple) -> None:
    model, x, y = digits
    eps = EPS[norm]
    a, _, _ = _run(attack, model, x, y, Threat(norm, eps))
    b, _, _ = _run(attack, model, x, y, Threat(norm, eps))
    c, _, _ = _run(attack, model, x, y, Threat(norm, eps), seed=8)
    assert a.x_adv.shape == x.shape and torch.isfinite(a.x_adv).all()
    assert float(a.x_adv.min()) >= 0.0 and float(a.x_adv.max()) <= 1.0
    if not attack.minimal_norm:
        assert float(flat_norm(a.x_adv - x, norm).max()) <= eps + 1e-6
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.queries, b.queries)  # type: ignore[arg-type]
    assert not torch.equal(a.x_adv, c.x_adv), "the seed should matter"


def test_views_refuse_more_access(digits: tuple) -> None:
    model, x, y = digits
    decision, _ = _view(model, "decision")
    score, _ = _view(model, "score")
    with pytest.raises(AccessDenied):
        decision.logits(x)
    for clf in (decision, score):
        with pytest.raises(AccessDenied):
            clf.loss_and_grad(x, y, margin)
    assert SimBA.requires == "scores" and HopSkipJump.requires == "labels"
    with pytest.raises(AccessDenied):  # SimBA needs scores: a labels-only view stops it
        SimBA().run(decision, x, y, Threat("l2", 1.0), torch.Generator().manual_seed(0))
    # HopSkipJump runs whole on the labels-only view (the other cases show it completes)
    assert {"simba", "hopskipjump"} <= set(registry())


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_hsj_trace_and_verified_breaks(norm: str, digits: tuple) -> None:
    model, x, y = digits
    budget = 600
    out, _, _ = _run(HopSkipJump(HopSkipJumpParams(queries=budget)), model, x, y,
                     Threat(norm, float("inf")))
    assert out.distance_trace is not None and out.claimed is not None
    marks = [q for q, _ in out.distance_trace]
    assert marks == sorted(marks) and marks[-1] == budget and len(set(marks)) == len(marks)
    dists = torch.stack([d for _, d in out.distance_trace])
    assert (dists[1:] <= dists[:-1]).all(), "best distance must not grow with the budget"
    found = out.claimed
    assert found.all(), "a random small CNN is easy to leave: every sample should start"
    # the final checkpoint is the returned point (up to the last 0.1% push outward), and every
    # claimed point is misclassified
    size = flat_norm(out.x_adv - x, norm)
    assert (size >= dists[-1] - 1e-6).all() and (size <= dists[-1] * 1.0011 + 1e-6).all()
    assert (_predict(model, out.x_adv)[found] != y[found]).all()
    # and it improved on the start: the last distances are well below the first finite ones
    first = torch.where(torch.isfinite(dists), dists, torch.nan).nanmean(dim=0)
    assert float(dists[-1].median()) < 0.8 * float(first.median())


def test_hsj_unstartable_sample_comes_back_clean() -> None:
    class Constant(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.zeros(x.shape[0], 3) + torch.tensor([1.0, 0.0, 0.0])

    clf = Classifier(Constant(), num_classes=3).restricted("decision")
    x = torch.rand(4, 1, 4, 4)
    y = torch.zeros(4, dtype=torch.long)
    p = HopSkipJumpParams(queries=500, init_tries=25)
    out = HopSkipJump(p).run(clf, x, y, Threat("l2", 1.0), torch.Generator().manual_seed(0))
    assert torch.equal(out.x_adv, x)
    assert out.queries is not None and out.queries.tolist() == [25] * 4
    assert out.claimed is not None and not out.claimed.any()
    assert out.distance_trace is not None
    assert all(torch.isinf(d).all() for _, d in out.distance_trace)


def test_tiny_budgets_hold(digits: tuple) -> None:
    model, x, y = digits
    for q in (1, 3, 12):
        for attack in (HopSkipJump(HopSkipJumpParams(queries=q)), SimBA(SimBAParams(queries=q))):
            out, counted, _ = _run(attack, model, x, y, Threat("l2", 1.0))
            assert out.queries is not None and int(out.queries.max()) <= q
            assert int(out.queries.sum()) == counted


class Affine(nn.Module):
    def __init__(self, w: torch.Tensor, b: torch.Tensor) -> None:
        super().__init__()
        self.w, self.b = nn.Parameter(w, requires_grad=False), nn.Parameter(b, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w + self.b


def test_hsj_reaches_the_exact_distance_on_an_affine_model() -> None:
    """min_k |z_k − z_y| / ‖w_k − w_y‖₂ is the true L2 distance (the box does not bind)."""
    g = torch.Generator().manual_seed(3)
    c, d = 5, 16
    model = Affine(torch.randn(d, c, generator=g), 0.3 * torch.randn(c, generator=g))
    x = 0.5 + 0.03 * torch.randn(12, 1, 4, 4, generator=g)
    with torch.no_grad():
        z = model(x)
    y = z.argmax(1)
    gaps = (z.gather(1, y[:, None]) - z).abs()
    diff = model.w.T[None, :, :] - model.w.T[y][:, None, :]  # w_k − w_y, N×C×D
    dist = (gaps / (diff.norm(dim=2) + 1e-12)).scatter(1, y[:, None], float("inf"))
    exact, k = dist.min(dim=1)
    step = diff[torch.arange(12), k]
    closest = x.flatten(1) + (exact / step.norm(dim=1))[:, None] * step
    assert closest.min() > 0 and closest.max() < 1  # inside the box: the formula holds there
    clf = Classifier(model, num_classes=c).restricted("decision")
    out = HopSkipJump(HopSkipJumpParams(queries=1500)).run(
        clf, x, y, Threat("l2", float("inf")), torch.Generator().manual_seed(1)
    )
    pred = _predict(model, out.x_adv)
    assert (pred != y).all()
    size = flat_norm(out.x_adv - x, "l2")
    assert float((size / exact).min()) >= 1 - 1e-4, "closer than the exact minimum: a bug"
    # HSJ walks the boundary of the class its start landed in; on that boundary it converges
    # to the binary search's resolution (θ = d^-1.5 = 1/64 of the blend: about 2%)
    reached = dist.gather(1, pred[:, None]).squeeze(1)
    assert float((size / reached).max()) < 1.05
    assert int((pred == k).sum()) >= 8  # and most starts lead to the closest class


def test_simba_more_queries_is_no_weaker(digits: tuple) -> None:
    model, x, y = digits
    threat = Threat("l2", 0.3)
    fooled = []
    for q in (40, 600):
        out, _, _ = _run(SimBA(SimBAParams(queries=q)), model, x, y, threat)
        f = _predict(model, out.x_adv) != y
        assert out.claimed is not None and torch.equal(out.claimed, f)
        assert out.queries is not None
        assert (out.queries[~f] == q).all(), "a standing sample spends its whole budget"
        fooled.append(f)
    assert (fooled[0] <= fooled[1]).all() and int(fooled[1].sum()) > int(fooled[0].sum())


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_simba_unbounded_eps_and_trace(norm: str, digits: tuple) -> None:
    model, x, y = digits
    out, _, _ = _run(SimBA(SimBAParams(queries=400)), model, x, y, Threat(norm, float("inf")))
    assert torch.isfinite(out.x_adv).all()
    assert float(out.x_adv.min()) >= 0.0 and float(out.x_adv.max()) <= 1.0
    assert out.loss_trace is not None and 2 <= len(out.loss_trace) <= 200
    assert out.loss_trace[-1] > out.loss_trace[0], "the log-odds against the true class rise"
    assert (_predict(model, out.x_adv) != y).float().mean() > 0.9


def test_params_are_validated() -> None:
    with pytest.raises(ValidationError):
        SimBAParams(basis="wavelet")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        SimBAParams(queries=0)
    with pytest.raises(ValidationError):
        HopSkipJumpParams(gamma=0)
    with pytest.raises(ValidationError):
        HopSkipJumpParams(steps=10)  # type: ignore[call-arg]
    assert SimBAParams().step_for("linf", 0.1, 1.0) == 0.1
    assert SimBAParams().step_for("l2", 0.2, 1.0) == pytest.approx(0.1)
    assert SimBAParams().step_for("l2", float("inf"), 1.0) == pytest.approx(0.2)


def test_degenerate_inputs(digits: tuple) -> None:
    """eps = 0 leaves SimBA nothing to search; an empty batch costs nothing."""
    model, x, y = digits
    out, counted, _ = _run(SimBA(), model, x, y, Threat("linf", 0.0))
    assert torch.equal(out.x_adv, x) and counted == 0
    assert out.queries is not None and not out.queries.any()
    for attack in (SimBA(), HopSkipJump()):
        out, counted, _ = _run(attack, model, x[:0], y[:0], Threat("l2", 1.0))
        assert out.x_adv.shape == (0, 1, 8, 8) and counted == 0
        assert out.queries is not None and out.queries.shape == (0,)
