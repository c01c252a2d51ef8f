"""The engine owns the invariants: it never trusts an attack, and it records what attacks did."""

from __future__ import annotations

import torch

from robaudit.attacks.base import Attack, AttackOutput
from robaudit.attacks.fgsm_pgd import PGD, PGDParams
from robaudit.attacks.noise import Noise
from robaudit.classifier import Classifier
from robaudit.engine import PlannedAttack, run_plan
from robaudit.models.digits import DigitsCNN
from robaudit.tables import build_tables
from robaudit.threat import Threat


def _setup(n: int = 32) -> tuple[Classifier, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = DigitsCNN().eval()
    x = torch.rand(n, 1, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)
    return Classifier(model, num_classes=10), x, y


class Liar(Attack):
    """Returns the clean input unchanged (it would claim success if it were trusted)."""

    name = "liar"
    summary = "test double"
    paper = "-"
    norms = ("linf",)

    def run(self, clf, x, y, threat, generator):  # type: ignore[no-untyped-def]
        return AttackOutput(x_adv=x.clone())


class Cheat(Attack):
    """Returns far-away inputs (outside the ball and the bounds)."""

    name = "cheat"
    summary = "test double"
    paper = "-"
    norms = ("linf",)

    def run(self, clf, x, y, threat, generator):  # type: ignore[no-untyped-def]
        return AttackOutput(x_adv=x + 5.0)


def test_unchanged_inputs_are_never_counted_as_breaks() -> None:
    clf, x, y = _setup()
    res = run_plan(clf, x, y, [PlannedAttack(0, Liar(), Threat("linf", 0.3))], seed=0, batch_size=8)
    assert res.correct.all()
    assert not res.cells[0].broken.any()


def test_out_of_budget_candidates_are_recorded_then_projected() -> None:
    clf, x, y = _setup()
    res = run_plan(clf, x, y, [PlannedAttack(0, Cheat(), Threat("linf", 0.05))], seed=0, batch_size=8)
    cell = res.cells[0]
    assert cell.budget_violations == x.shape[0]
    assert cell.bounds_violations == x.shape[0]
    assert float(cell.norms.max()) <= 0.05 + 1e-6  # judged only after projection


def test_queries_and_grad_evals_are_counted_per_sample() -> None:
    clf, x, y = _setup(16)
    attack = PGD(PGDParams(steps=4, early_stop=False))
    res = run_plan(clf, x, y, [PlannedAttack(0, attack, Threat("linf", 0.01))], seed=0, batch_size=16)
    cell = res.cells[0]
    assert cell.grad_evals == 16 * 4
    assert cell.queries == 16 * 4  # the engine's own verification pass is not charged


def test_early_stopping_spends_fewer_gradients_and_finds_the_same() -> None:
    clf, x, y = _setup(64)
    plan_on = [PlannedAttack(0, PGD(PGDParams(steps=20)), Threat("linf", 0.3))]
    plan_off = [PlannedAttack(0, PGD(PGDParams(steps=20, early_stop=False)), Threat("linf", 0.3))]
    on = run_plan(clf, x, y, plan_on, seed=0, batch_size=64).cells[0]
    off = run_plan(clf, x, y, plan_off, seed=0, batch_size=64).cells[0]
    assert on.grad_evals < off.grad_evals
    assert int(on.broken.sum()) >= int(off.broken.sum())


def test_cascade_skips_broken_samples_and_keeps_the_worst_case() -> None:
    clf, x, y = _setup(64)
    t = Threat("linf", 0.2)
    plan = [PlannedAttack(0, Noise(), t), PlannedAttack(1, PGD(PGDParams(steps=10)), t)]
    full = run_plan(clf, x, y, plan, seed=0, batch_size=64)
    cas = run_plan(clf, x, y, plan, seed=0, batch_size=64, cascade=True)
    pgd_full = next(c for c in full.cells if c.attack == "pgd")
    pgd_cas = next(c for c in cas.cells if c.attack == "pgd")
    noise = next(c for c in cas.cells if c.attack == "noise")
    assert int(pgd_cas.attacked.sum()) == int(full.correct.sum()) - int(noise.broken.sum())
    assert not (pgd_cas.attacked & noise.broken).any()
    worst_full = (full.cells[0].broken | full.cells[1].broken).sum()
    worst_cas = (cas.cells[0].broken | cas.cells[1].broken).sum()
    assert abs(int(worst_full) - int(worst_cas)) <= 2  # same worst case up to random starts
    assert pgd_full.grad_evals > pgd_cas.grad_evals


def test_breaks_at_small_eps_carry_to_larger_eps_of_the_same_norm() -> None:
    clf, x, y = _setup(48)
    pgd = PGD(PGDParams(steps=10))
    plan = [PlannedAttack(0, pgd, Threat("linf", 0.1)), PlannedAttack(1, Noise(), Threat("linf", 0.2))]
    res = run_plan(clf, x, y, plan, seed=0, batch_size=48)
    threats, _, verdicts = build_tables(res, y, {}, cascade=False)
    small, large = threats  # sorted by eps
    assert large.robust <= small.robust  # nested balls: never more robust at a larger eps
    inherited = [v for v in verdicts[large.key].values() if v["eps_found"] == 0.1]
    assert len(inherited) == large.inherited > 0


def test_same_seed_same_result_and_batch_size_does_not_matter_for_clean() -> None:
    clf, x, y = _setup(40)
    plan = [PlannedAttack(0, PGD(PGDParams(steps=5)), Threat("l2", 0.5))]
    a = run_plan(clf, x, y, plan, seed=3, batch_size=16)
    b = run_plan(clf, x, y, plan, seed=3, batch_size=16)
    assert torch.equal(a.cells[0].broken, b.cells[0].broken)
    assert torch.equal(a.cells[0].norms.nan_to_num(-1), b.cells[0].norms.nan_to_num(-1))


class ExactLinear(Attack):
    """A minimal-norm test double: steps just past the boundary of a known linear model."""

    name = "exact-linear"
    summary = "test double"
    paper = "-"
    norms = ("l2",)
    minimal_norm = True

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = w

    def run(self, clf, x, y, threat, generator):  # type: ignore[no-untyped-def]
        z = x.flatten(1) @ self.w
        step = -(z / self.w.norm() ** 2 * 1.001)[:, None] * self.w[None, :]
        return AttackOutput(x_adv=(x.flatten(1) + step).view_as(x))


def test_minimal_norm_attacks_run_once_and_derive_every_eps() -> None:
    from torch import nn

    torch.manual_seed(0)
    w = torch.randn(16)

    class Bin(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            z = x.flatten(1) @ w
            return torch.stack([torch.zeros_like(z), z], 1)

    x = 0.5 + 0.02 * torch.randn(40, 1, 4, 4)
    y = ((x.flatten(1) @ w) > 0).long()
    dist = (x.flatten(1) @ w).abs() / w.norm()
    clf = Classifier(Bin(), num_classes=2)
    attack = ExactLinear(w)
    eps_list = [float(dist.quantile(q)) for q in (0.25, 0.5, 0.75)]
    plan = [PlannedAttack(0, attack, Threat("l2", e)) for e in eps_list]
    res = run_plan(clf, x, y, plan, seed=0, batch_size=16)
    assert len(res.cells) == 3
    assert res.cells[0].grad_evals == 0 and res.cells[0].queries == 0  # forward-only double
    assert [c.shared_cost for c in res.cells] == [False, True, True]
    for c in res.cells:
        expected = dist * 1.001 <= c.threat.eps + 1e-6
        assert torch.equal(c.broken, expected)
    (norms,) = res.min_norms.values()
    assert torch.allclose(norms, dist * 1.001, rtol=1e-4)
