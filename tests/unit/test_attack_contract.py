"""Contract test over every registered attack × norm: what any attack must guarantee."""

from __future__ import annotations

import pytest
import torch

from robaudit.attacks.base import ACCESS_FOR_REQUIRES, Attack, registry
from robaudit.attacks.projections import flat_norm
from robaudit.attacks.transfer import Transfer
from robaudit.classifier import Classifier
from robaudit.engine import PlannedAttack, attack_view, run_plan
from robaudit.models.digits import DigitsCNN
from robaudit.threat import Threat

CASES = [(name, norm) for name, cls in registry().items() for norm in cls.norms]
EPS = {"linf": 0.15, "l2": 0.8, "l1": 2.0}


# the contract holds for any budget: expensive attacks run with fewer steps here
CHEAP: dict[str, dict[str, int]] = {
    "fab": {"steps": 15},
    "fab-t": {"steps": 15, "targets": 3},
    "cw": {"steps": 30, "binary_search_steps": 3},
    "apgd-t": {"steps": 30, "targets": 3},
    "square": {"queries": 300},
    "simba": {"queries": 300},
    "hopskipjump": {"queries": 300},
}


def _make(name: str) -> Attack:
    """Default parameters, except what has no default (the transfer attack's surrogate) and
    smaller budgets for the expensive attacks (CHEAP)."""
    if name == "transfer":
        torch.manual_seed(1)
        return Transfer(surrogate_module=DigitsCNN().eval())
    cls = registry()[name]
    return cls(cls.Params(**CHEAP.get(name, {})))


@pytest.fixture(scope="module")
def model_and_data() -> tuple[DigitsCNN, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = DigitsCNN().eval()
    x = torch.rand(24, 1, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)  # labels = predictions, so every sample starts correct
    return model, x, y


@pytest.mark.parametrize(("name", "norm"), CASES)
def test_attack_contract(name: str, norm: str, model_and_data: tuple) -> None:
    model, x, y = model_and_data
    before = {k: v.clone() for k, v in model.state_dict().items()}
    attack = _make(name)
    # the view the engine hands it: black-box attacks get a restricted, separately counted one
    clf = attack_view(Classifier(model, num_classes=10), ACCESS_FOR_REQUIRES[attack.requires])
    eps = EPS[norm]
    threat = Threat(norm, eps)
    outs = []
    for _ in range(2):
        q0 = clf.counters.queries
        out = attack.run(clf, x.clone(), y.clone(), threat, torch.Generator().manual_seed(7))
        outs.append(out.x_adv)
        if attack.requires != "gradients":  # query accounting must be exact, per sample
            assert out.queries is not None, "a black-box attack must report queries per sample"
            assert int(out.queries.sum()) == clf.counters.queries - q0
            assert out.queries.shape == (x.shape[0],) and int(out.queries.min()) >= 0
    xa = outs[0]
    assert xa.shape == x.shape
    assert torch.isfinite(xa).all()
    assert float(xa.min()) >= -1e-6 and float(xa.max()) <= 1 + 1e-6, "left the input bounds"
    if not attack.minimal_norm:  # a minimal-norm answer may lie beyond eps by design
        assert float(flat_norm(xa - x, norm).max()) <= eps + 1e-6, "left the eps ball before projection"
    assert torch.equal(outs[0], outs[1]), "same seed must give the same output"
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"attack changed model parameter {k}"
    assert not model.training


@pytest.mark.parametrize(("name", "norm"), CASES)
def test_engine_breaks_are_real(name: str, norm: str, model_and_data: tuple) -> None:
    """Every sample reported broken is misclassified by an independent forward pass."""
    model, x, y = model_and_data
    clf = Classifier(model, num_classes=10)
    threat = Threat(norm, EPS[norm])
    res = run_plan(clf, x, y, [PlannedAttack(0, _make(name), threat)], seed=0, batch_size=10,
                   examples=100)
    cell = res.cells[0]
    assert cell.budget_violations == 0 and cell.bounds_violations == 0 and cell.nonfinite == 0
    assert cell.access_used == ACCESS_FOR_REQUIRES[registry()[name].requires]
    assert cell.query_mismatch == 0
    if cell.sample_queries is not None:  # black-box: per-sample counts add up to the cell total
        assert int(cell.sample_queries[cell.attacked].sum()) == cell.queries
        assert bool((cell.sample_queries[~cell.attacked] == -1).all())
    broken_idx = {e.sample for e in res.examples}
    assert broken_idx == set(cell.broken.nonzero().flatten().tolist())
    for e in res.examples:
        assert float(flat_norm((e.x_adv - e.x)[None], norm)) <= threat.eps + 1e-6
        assert float(e.x_adv.min()) >= 0.0 and float(e.x_adv.max()) <= 1.0
        with torch.no_grad():
            assert int(model(e.x_adv[None]).argmax(1)) != e.label
        assert torch.equal(e.x, x[e.sample])
