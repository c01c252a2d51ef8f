"""Property tests: every registered attack, on random input shapes, bounds, eps and norms,
returns candidates inside the input bounds and (unless minimal-norm) inside the threat ball,
before the engine projects anything.

tests/unit/test_attack_contract.py checks this for one shape (24x1x8x8), [0, 1] bounds and one
eps per norm; here hypothesis draws batch 1-4, channels 1-3, H and W 1-9 (square images and
single pixels included), bounds other than [0, 1], eps from tiny to the whole box, inputs
sitting on the bounds, 2-6 classes, and labels
that are the model's predictions or random. Examples are derandomized (the same every run, so a
failure reproduces); ``ROBAUDIT_HYPOTHESIS_SCALE=20`` explores 20 times as many at random.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from robaudit import norms
from robaudit.attacks.base import ACCESS_FOR_REQUIRES, Attack, registry
from robaudit.attacks.projections import flat_norm
from robaudit.attacks.transfer import Transfer
from robaudit.classifier import Classifier
from robaudit.engine import attack_view
from robaudit.threat import Threat
from tests.helpers import one_thread

SCALE = int(os.environ.get("ROBAUDIT_HYPOTHESIS_SCALE", "1"))
PROFILE = settings(
    max_examples=10 * SCALE,
    deadline=None,
    derandomize=SCALE == 1,
    database=None,  # no .hypothesis folder in the repository
    suppress_health_check=[HealthCheck.too_slow],
)

# small budgets: the property holds for any budget, and each example must stay fast
CHEAP: dict[str, dict[str, object]] = {
    "apgd": {"steps": 8},
    "apgd-t": {"steps": 8, "targets": 3},
    "cw": {"steps": 8, "binary_search_steps": 2},
    "deepfool": {"steps": 8},
    "fab": {"steps": 8},
    "fab-t": {"steps": 8, "targets": 3},
    "pgd": {"steps": 5},
    "square": {"queries": 40},
    "simba": {"queries": 40},
    "hopskipjump": {"queries": 60, "init_evals": 10, "max_iter": 4},
    "noise": {"draws": 2},
    "transfer": {"steps": 5},
    "pgd-l0": {"steps": 5, "restarts": 2},
    "sigma-zero": {"steps": 8},
    "sparse-rs": {"queries": 40},
}
CASES = [(name, norm) for name, cls in registry().items() for norm in cls.norms]


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    yield from one_thread()


def _net(d: int, k: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(d, 16), nn.Tanh(), nn.Linear(16, k)).eval()


def _make(name: str, d: int, k: int, seed: int) -> Attack:
    params = CHEAP.get(name, {})
    if name == "transfer":  # the attacker's own model, of the same input shape
        return Transfer(Transfer.Params(**params), surrogate_module=_net(d, k, seed + 1))
    cls = registry()[name]
    return cls(cls.Params(**params))


@dataclass(frozen=True)
class Case:
    x: torch.Tensor
    lo: float
    hi: float
    eps: float
    classes: int
    seed: int
    true_labels: bool  # labels = predictions (all attacked), else random (some already wrong)


@st.composite
def cases(draw: st.DrawFn, norm: str) -> Case:
    n = draw(st.integers(1, 4))
    c = draw(st.integers(1, 3))
    h = draw(st.integers(1, 9))
    w = draw(st.sampled_from([h, *range(1, 10)]))  # square images more often
    lo = draw(st.sampled_from([0.0, -1.0, 0.5, -0.25]))
    span = draw(st.sampled_from([1.0, 2.0, 0.5, 255.0]))
    hi = lo + span
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    x = lo + span * torch.rand(n, c, h, w, generator=g)
    on_bounds = draw(st.sampled_from(["none", "some", "all_low", "all_high"]))
    if on_bounds == "some":  # pixels exactly at the bounds, where projections must not push
        mask = torch.rand(x.shape, generator=g)
        x = torch.where(mask < 0.25, torch.full_like(x, lo), torch.where(mask > 0.75, hi, x))
    elif on_bounds != "none":
        x = torch.full_like(x, lo if on_bounds == "all_low" else hi)
    # eps as a share of the largest budget the box allows, from tiny to all of it
    share = draw(st.sampled_from([1e-4, 0.01, 0.1, 0.3, 1.0]) | st.floats(1e-3, 1.0))
    full = norms.get(norm).covering(span, (c, h, w))  # the budget that covers the whole box
    eps = share * full
    if norm == "snr":  # a budget in dB, from no change to a lot
        eps = draw(st.sampled_from([0.0, 6.0, 20.0, 40.0, 80.0]))
    return Case(x, lo, hi, eps, draw(st.integers(2, 6)), seed, draw(st.booleans()))


@pytest.mark.parametrize(("name", "norm"), CASES)
def test_candidates_stay_in_bounds_and_ball(name: str, norm: str) -> None:
    cls = registry()[name]

    @PROFILE
    @given(case=cases(norm))
    def check(case: Case) -> None:
        n, d = case.x.shape[0], case.x[0].numel()
        model = _net(d, case.classes, case.seed)
        with torch.no_grad():
            y = model(case.x).argmax(1)
        if not case.true_labels:
            y = torch.randint(0, case.classes, (n,), generator=torch.Generator().manual_seed(n))
        clf = attack_view(
            Classifier(model, num_classes=case.classes, bounds=(case.lo, case.hi)),
            ACCESS_FOR_REQUIRES[cls.requires],
        )
        attack = _make(name, d, case.classes, case.seed)
        out = attack.run(clf, case.x.clone(), y.clone(), Threat(norm, case.eps),
                         torch.Generator().manual_seed(case.seed))
        xa = out.x_adv
        assert xa.shape == case.x.shape and xa.dtype == case.x.dtype
        assert torch.isfinite(xa).all(), "non-finite candidate"
        tol = 1e-6 * max(1.0, abs(case.lo), abs(case.hi))
        assert float(xa.min()) >= case.lo - tol, f"below the lower bound {case.lo}"
        assert float(xa.max()) <= case.hi + tol, f"above the upper bound {case.hi}"
        if not cls.minimal_norm and norm == "snr":
            # snr: each sample's L2 ball, its radius set by the clean input's energy in dB
            radius = norms.get(norm).radius(case.x, case.eps)
            dist = flat_norm(xa - case.x, "l2")
            assert bool((dist <= radius * (1 + 1e-5) + tol).all()), f"snr: {dist} > {radius}"
        elif not cls.minimal_norm:
            dist = float(flat_norm(xa - case.x, norm).max())
            assert dist <= case.eps * (1 + 1e-5) + tol, f"{norm} distance {dist} > eps {case.eps}"
        if out.queries is not None:
            assert out.queries.shape == (n,) and int(out.queries.min()) >= 0

    check()
