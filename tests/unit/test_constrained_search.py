"""The gradient-free constrained search (robaudit/attacks/constrained_search.py) on the fraud
data: every queried point is a real record inside the ball, typed moves (integers whole,
binaries and categories only when one change fits), exact query counts, early stop, and the
engine's verification of what it claims."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from robaudit.attacks import get_attack
from robaudit.attacks.constrained_search import ConstrainedSearch, ConstrainedSearchParams
from robaudit.attacks.feasible import constrained_to
from robaudit.classifier import Classifier
from robaudit.engine import EngineControl, PlannedAttack, run_plan
from robaudit.loading.tabular import TabularInput, read_tabular
from robaudit.threat import Threat
from tests.helpers import RowCounter, fraud_mlp, one_thread

ROOT = Path(__file__).resolve().parents[2]
CSV = ROOT / "sample_models" / "data" / "fraud.csv"
SCHEMA = ROOT / "sample_models" / "data" / "fraud.yaml"

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    yield from one_thread()


@pytest.fixture(scope="module")
def fraud() -> tuple[TabularInput, torch.Tensor, torch.Tensor, nn.Module]:
    info, x, y = read_tabular(str(CSV), "is_fraud", str(SCHEMA))
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    return info, xt[:48], yt[:48], fraud_mlp(xt, yt)


class Recorder(nn.Module):
    """Keeps every row the model is asked about (what the attacker sent)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.rows = inner, []  # type: list[torch.Tensor]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows.append(x.detach().clone())
        return self.inner(x)


def test_registered_as_constrained_score_search() -> None:
    cls = get_attack("constrained-search")
    assert cls.requires == "scores" and cls.constrained and set(cls.norms) == {"linf", "l2"}


@pytest.mark.parametrize(("norm", "eps"), [("l2", 0.5), ("linf", 0.1), ("linf", 1.0)])
def test_every_query_is_a_real_record_inside_the_ball(
    fraud: tuple[TabularInput, torch.Tensor, torch.Tensor, nn.Module], norm: str, eps: float
) -> None:
    info, x, y, model = fraud
    rec = Recorder(model)
    clf = Classifier(rec, num_classes=2).restricted("score")
    attack = ConstrainedSearch(ConstrainedSearchParams(queries=40))
    with constrained_to(info.constraints):
        out = attack.run(clf, x, y, Threat(norm, eps, "score"), torch.Generator().manual_seed(0))
    sent = torch.cat(rec.rows)
    assert int(out.queries.sum()) == sent.shape[0]  # exact per-sample counts
    assert out.queries.max() <= 40
    # which clean row each query belongs to: replay the searching samples in order
    clean = _owners(x, out.queries)
    assert info.constraints.violations(sent, clean) == [[] for _ in range(len(sent))]
    size = (sent - clean).flatten(1)
    size = size.norm(dim=1) if norm == "l2" else size.abs().amax(dim=1)
    assert bool((size <= eps + 1e-5).all())
    cols = info.columns
    moved = (sent - clean).abs() > 1e-6
    binary = [cols.index(c) for c in ("is_foreign", "has_2fa")]
    group = [cols.index(c) for c in cols if c.startswith("channel=")]
    integer = [cols.index(c) for c in ("hour", "n_transactions_24h", "open_accounts")]
    if eps >= 1.0:  # a flip and a Linf category switch fit: the search tries them
        assert bool(moved[:, binary].any()) and bool(moved[:, group].any())
    else:  # neither fits in the ball: they never move
        assert not bool(moved[:, binary + group].any())
    assert bool(moved[:, integer].any())  # integers move by whole units (constraints hold)


def _owners(x: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """The clean row of each query, in the order the search sends them: every sample at the
    start, then each iteration the samples with queries left, in index order."""
    out, left = [], queries.clone()
    while bool((left > 0).any()):
        idx = (left > 0).nonzero().flatten()
        out.append(x[idx])
        left[idx] -= 1
    return torch.cat(out)


def test_stops_querying_a_fooled_sample_and_the_engine_verifies(
    fraud: tuple[TabularInput, torch.Tensor, torch.Tensor, nn.Module],
) -> None:
    info, x, y, model = fraud
    counter = RowCounter(model)
    clf = Classifier(counter, num_classes=2)
    ctl = EngineControl(constraints=info.constraints, attack_only=1)
    attack = ConstrainedSearch(ConstrainedSearchParams(queries=200))
    res = run_plan(clf, x, y, [PlannedAttack(0, attack, Threat("l2", 0.5, "score"))], seed=0,
                   batch_size=64, ctl=ctl)  # fmt: skip
    cell = res.cells[0]
    assert bool((cell.attacked == (res.correct & (y == 1))).all())
    assert int(cell.broken.sum()) > 0 and cell.constraint_violations == 0
    q = cell.sample_queries
    assert q is not None
    assert bool((q[cell.broken] < 200).all())  # a fooled sample leaves the search
    assert bool((q[cell.attacked & ~cell.broken] == 200).all())
    assert cell.queries == int(q[cell.attacked].sum())  # the engine counted the same


def test_linear_model_out_of_reach_is_never_broken() -> None:
    """Without constraints (a bare feature vector): nothing beyond the boundary's distance."""
    torch.manual_seed(0)
    lin = nn.Linear(6, 2)
    x = torch.rand(32, 6)
    with torch.no_grad():
        y = lin(x).argmax(1)
        w = lin.weight[1] - lin.weight[0]
        dist = (lin(x)[:, 1] - lin(x)[:, 0]).abs() / w.abs().sum()  # Linf distance
    clf = Classifier(lin.eval(), num_classes=2)
    eps = float(dist.min()) * 0.9
    attack = ConstrainedSearch(ConstrainedSearchParams(queries=100))
    res = run_plan(clf, x, y, [PlannedAttack(0, attack, Threat("linf", eps, "score"))], seed=0,
                   batch_size=32)  # fmt: skip
    assert not res.cells[0].broken.any()
    near = float(dist.median()) * 1.5
    res = run_plan(clf, x, y, [PlannedAttack(0, attack, Threat("linf", near, "score"))], seed=0,
                   batch_size=32)  # fmt: skip
    # the best point of the ball within the box: every coordinate eps against the true class
    sign = torch.where(y.unsqueeze(1) == 1, -w.sign(), w.sign())
    with torch.no_grad():
        best = lin((x + 0.9 * near * sign).clamp(0, 1))
    reach = best.argmax(1) != y  # reachable with room to spare: the search must find them
    assert int(reach.sum()) > 5 and bool(res.cells[0].broken[reach].all())
