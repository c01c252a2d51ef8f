"""Sequential verdicts on randomized models (robaudit.verdicts): the Clopper–Pearson bound
against exact binomial sums, and the engine's verdicts on a model whose misclassification
probability per input is known exactly."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import ClassVar

import pytest
import torch
from torch import nn

from robaudit.attacks.base import Attack, AttackOutput
from robaudit.classifier import Classifier
from robaudit.engine import PlannedAttack, run_plan
from robaudit.tables import build_tables
from robaudit.threat import Threat
from robaudit.verdicts import (
    SequentialTest,
    binomial_cdf,
    binomial_tail,
    clopper_pearson,
    critical_count,
)

C = 10


def _exact_tail(k: int, n: int, p: Fraction) -> Fraction:
    return sum((math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1)), Fraction(0))


@pytest.mark.parametrize(("n", "p"), [(10, Fraction(1, 2)), (37, Fraction(3, 10)), (200, Fraction(1, 2))])
def test_binomial_tail_and_cdf_match_exact_sums(n: int, p: Fraction) -> None:
    for k in range(0, n + 2):
        exact = float(_exact_tail(k, n, p))
        assert binomial_tail(k, n, float(p)) == pytest.approx(exact, rel=1e-9, abs=1e-300)
        assert binomial_cdf(k - 1, n, float(p)) == pytest.approx(1 - exact, rel=1e-9, abs=1e-12)


def test_clopper_pearson_known_values() -> None:
    # the textbook exact 95% interval for 5 of 10 is (0.1871, 0.8129): two one-sided 2.5% bounds
    lo, hi = clopper_pearson(5, 10, 0.025)
    assert lo == pytest.approx(0.187086, abs=1e-6) and hi == pytest.approx(0.812914, abs=1e-6)
    # closed forms at the ends: k = 0 -> U = 1 - α^(1/n); k = n -> L = α^(1/n)
    assert clopper_pearson(0, 50, 0.01) == pytest.approx((0.0, 1 - 0.01 ** (1 / 50)), abs=1e-9)
    assert clopper_pearson(50, 50, 0.01) == pytest.approx((0.01 ** (1 / 50), 1.0), abs=1e-9)
    # the defining equations, checked with exact rational sums
    lo, hi = clopper_pearson(17, 40, 1e-3)
    assert float(_exact_tail(17, 40, Fraction(lo))) == pytest.approx(1e-3, rel=1e-6)
    assert float(1 - _exact_tail(18, 40, Fraction(hi))) == pytest.approx(1e-3, rel=1e-6)


@pytest.mark.parametrize("alpha", [1e-2, 2.5e-4, 1e-6])
@pytest.mark.parametrize("n", [32, 64, 128])
def test_critical_count_is_the_clopper_pearson_decision(n: int, alpha: float) -> None:
    crit = critical_count(n, alpha)
    for k in range(n + 1):
        lo, hi = clopper_pearson(k, n, alpha)
        assert (k >= crit) == (lo > 0.5), (k, lo)
        assert (k <= n - crit) == (hi < 0.5), (k, hi)


def test_schedule_doubles_to_the_cap() -> None:
    t = SequentialTest()
    assert t.schedule()[0] == 32 and t.schedule()[-1] == t.max_draws
    assert all(b == 2 * a for a, b in zip(t.schedule(), t.schedule()[1:], strict=False))
    assert sum(t.per_look(1e-3)) == pytest.approx(1e-3)
    assert SequentialTest(first=5, max_draws=12).schedule() == (5, 10, 12)


class Flip(nn.Module):
    """Misclassifies each input with an exactly known probability, drawn afresh per call.

    Input ``[N, 2]``: column 0 holds the label as label/10, column 1 the probability of a wrong
    answer in hundredths (rounded, so a small perturbation of the input cannot change it).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        label = (x[:, 0] * 10).round().long()
        p = (x[:, 1] * 100).round() / 100
        flip = torch.rand(x.shape[0], device=x.device) < p
        pred = torch.where(flip, (label + 1) % C, label)
        return nn.functional.one_hot(pred, C).float() * 5


def _inputs(n: int, p: float) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.arange(n) % C
    return torch.stack([y / 10, torch.full((n,), p)], dim=1), y


def _clf(max_draws: int | None = None) -> Classifier:
    """A randomized model: the default test (votes > 1), or one capped at ``max_draws`` (a
    coin flip runs every sample to the cap; the cap does not change what is tested)."""
    test = SequentialTest(max_draws=max_draws) if max_draws else None
    return Classifier(Flip(), num_classes=C, votes=9, batch_size=8192, sequential=test)


# α of one verdict when a sample is judged clean and in 4 cells, as run_plan computes it
ALPHA_5 = SequentialTest().alpha_for(5)


@pytest.mark.parametrize(("p", "expect_wrong"), [(0.45, False), (0.55, True)])
def test_verdicts_on_a_known_probability(p: float, expect_wrong: bool) -> None:
    """The call the engine makes on each batch of candidates (Classifier.verdict)."""
    torch.manual_seed(0)
    x, y = _inputs(200, p)
    clf = _clf()
    v = clf.verdict(x, y, ALPHA_5)
    settled = v.wrong if expect_wrong else v.right
    assert int(settled.sum()) >= 198, f"{int(v.undecided.sum())} undecided"
    assert int((v.right if expect_wrong else v.wrong).sum()) == 0
    # one verdict is one query, whatever it drew; the draws were many (and batched)
    assert clf.counters.queries == 200 and int(v.draws.max()) > 32
    assert bool(((v.pred != y) == ~v.right).all())


def test_a_coin_flip_stays_undecided() -> None:
    torch.manual_seed(1)
    x, y = _inputs(200, 0.5)
    v = _clf(1024).verdict(x, y, ALPHA_5)
    # each wrong verdict has probability at most α_verdict (2e-3): expected 0.4 of 200
    assert int(v.wrong.sum()) <= 3 and int(v.right.sum()) <= 3
    assert int(v.undecided.sum()) >= 190
    assert int(v.draws.min()) == 1024
    # with the default cap too (fewer samples: each one costs every draw)
    x, y = _inputs(16, 0.5)
    v = _clf().verdict(x, y, ALPHA_5)
    assert int(v.undecided.sum()) >= 15 and int(v.draws.min()) == SequentialTest().max_draws


def test_confident_samples_stop_at_the_first_look() -> None:
    torch.manual_seed(2)
    x, y = _inputs(100, 0.0)
    v = _clf().verdict(x, y, ALPHA_5)
    assert bool(v.right.all()) and int(v.draws.max()) == 32


class Shift(Attack):
    """Adds ``delta`` to the probability column: the candidate's P(misclassified) is known."""

    name = "shift"
    summary = "test attack"
    paper = "-"
    norms: ClassVar[tuple[str, ...]] = ("linf",)
    delta = 0.1

    def run(
        self, clf: Classifier, x: torch.Tensor, y: torch.Tensor, threat: Threat, generator: torch.Generator
    ) -> AttackOutput:
        out = x.clone()
        out[:, 1] += self.delta
        return AttackOutput(out)


@pytest.mark.parametrize(
    ("clean_p", "broken_min", "broken_max", "undecided_min", "cap"),
    [(0.45, 0.99, 1.0, 0, None), (0.35, 0.0, 0.0, 0, None), (0.40, 0.0, 0.03, 0.9, 1024)],
)
def test_engine_verdicts_and_interval(
    clean_p: float, broken_min: float, broken_max: float, undecided_min: float, cap: int | None
) -> None:
    """Through run_plan: clean verdicts at P(wrong) 0.35–0.45 are correct, candidates at 0.55
    are broken, at 0.45 not, and at exactly 0.5 undecided; the threat row's interval and
    undecided count follow."""
    n = 200
    x, y = _inputs(n, clean_p)
    clf = _clf(cap)
    t = Threat("linf", 0.1)
    attacks = [PlannedAttack(0, Shift(), t)]
    er = run_plan(clf, x, y, attacks, seed=0, batch_size=n)
    assert er.verdict_alpha == pytest.approx(SequentialTest().alpha_for(2))
    assert int(er.correct.sum()) >= 198
    (cell,) = er.cells
    assert cell.undecided is not None
    attacked = int(cell.attacked.sum())
    broken, undecided = int(cell.broken.sum()), int(cell.undecided.sum())
    assert broken_min * attacked <= broken <= broken_max * attacked
    assert undecided >= undecided_min * attacked
    (row,), _, verdicts = build_tables(er, y, {}, cascade=False)
    assert row.robust == int(er.correct.sum()) - broken - undecided
    assert row.robust_accuracy == pytest.approx(row.robust / n)
    clean_open = int(er.clean_undecided.sum()) if er.clean_undecided is not None else 0
    assert row.undecided == undecided + clean_open
    assert row.robust_accuracy_upper == pytest.approx((row.robust + row.undecided) / n)
    # open verdicts are listed per sample (not as breaks) and count against the headline
    assert sum(1 for v in verdicts[t.key].values() if v.get("undecided")) == undecided


class Still(Shift):
    delta = 0.0


def test_deterministic_model_has_no_interval() -> None:
    x, y = _inputs(50, 0.0)  # P(wrong) = 0 clean and on the candidate: a deterministic model
    clf = Classifier(Flip(), num_classes=C)
    er = run_plan(clf, x, y, [PlannedAttack(0, Still(), Threat("linf", 0.1))], seed=0, batch_size=50)
    assert er.clean_undecided is None and er.verdict_alpha is None
    assert er.cells[0].undecided is not None and not bool(er.cells[0].undecided.any())
    (row,), _, _ = build_tables(er, y, {}, cascade=False)
    assert row.undecided == 0 and row.robust_accuracy_upper == row.robust_accuracy


def test_reports_show_the_interval_only_for_open_verdicts() -> None:
    """Deterministic reports look unchanged; a run with undecided samples shows the interval
    and the count in the HTML threat table and the terminal table."""
    import io
    import json
    from pathlib import Path

    from rich.console import Console

    from robaudit.report.console import print_summary
    from robaudit.report.html import render_html

    fixture = Path(__file__).resolve().parents[1] / "data" / "sample_report.json"
    doc = json.loads(fixture.read_text(encoding="utf-8"))

    def terminal(d: dict[str, object]) -> str:
        out = io.StringIO()
        print_summary(d, Console(file=out, width=200, color_system=None), {})
        return out.getvalue()

    plain_html, plain_term = render_html(doc), terminal(doc)
    assert "undecided-note" not in plain_html and "undecided" not in plain_term
    t = doc["threats"][0]
    t["robust_accuracy_upper"], t["undecided"] = t["robust_accuracy"] + 0.05, 7
    html, term = render_html(doc), terminal(doc)
    assert "undecided-note" in html and ">7</td>" in html
    assert "undecided" in term and f"{100 * t['robust_accuracy_upper']:.1f}%" in term


def test_verify_judges_exported_rows_by_the_sequential_test() -> None:
    """``robaudit verify`` on a randomized classifier: a claimed break at P(wrong) 0.55 holds,
    one at 0.45 does not, and one at exactly 0.5 fails as undecided."""
    import numpy as np

    from robaudit.export import AdversarialExamples, verify_examples

    k = 30
    clean, y = _inputs(3 * k, 0.35)
    adv = clean.clone()
    adv[:, 1] = torch.tensor([0.55] * k + [0.45] * k + [0.50] * k)
    rows = 3 * k

    def strs(v: str) -> np.ndarray:
        return np.asarray([v] * rows, dtype=np.str_)

    ex = AdversarialExamples(
        x_adv=adv.numpy(), x_clean=clean.numpy(), y=y.numpy(), y_adv_pred=((y + 1) % C).numpy(),
        broken=np.ones(rows, dtype=bool), x_clean_index=np.arange(rows), source_index=np.arange(rows),
        attack=strs("shift"), attack_index=np.zeros(rows, dtype=np.int64), access=strs("white-box"),
        norm=strs("linf"), eps=np.full(rows, 0.25), eps_label=strs("0.25"), threat=strs("linf-0.25"),
        distance=np.full(rows, 0.2),
    )
    torch.manual_seed(3)
    res = verify_examples(ex, _clf(4096), None)
    failed = {v.row: v for v in res.violations}
    assert all(v.check == "not_misclassified" for v in failed.values())
    held = [r for r in range(rows) if r not in failed]
    assert sum(1 for r in held if r < k) >= k - 1 and all(r < k for r in held)
    assert sum("undecided" in failed[r].detail for r in range(2 * k, rows)) >= k - 1
