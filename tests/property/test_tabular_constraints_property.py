"""Property tests of tabular constraint repair: on random schemas and random valid rows, any
perturbation (Linf or L2, any eps, NaN entries included) comes out of ``repair`` breaking no
constraint, inside the ball and inside the bounds; and ``violations`` names each deliberately
broken constraint.

The random schemas, rows and the numpy oracle (independent of the code under test) are in
tests/tabular_cases.py. Examples are derandomized (the same every run); ``ROBAUDIT_HYPOTHESIS_SCALE=20`` explores 20
times as many at random.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robaudit import norms
from robaudit.tabular.constraints import Constraints
from robaudit.tabular.data import MinMaxScaler
from tests.helpers import one_thread
from tests.tabular_cases import Case, cases, oracle, setup

SCALE = int(os.environ.get("ROBAUDIT_HYPOTHESIS_SCALE", "1"))
PROFILE = settings(
    max_examples=60 * SCALE,
    deadline=None,
    derandomize=SCALE == 1,
    database=None,  # no .hypothesis folder in the repository
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    yield from one_thread()


@PROFILE
@given(
    case=cases(),
    norm=st.sampled_from(["linf", "l2"]),
    eps=st.one_of(st.just(0.0), st.floats(1e-4, 0.05), st.floats(0.05, 1.0), st.floats(1.0, 50.0)),
    size=st.floats(0.0, 100.0),
    seed=st.integers(0, 2**16),
    nan=st.booleans(),
)
def test_repair_gives_valid_rows_inside_the_ball(
    case: Case, norm: str, eps: float, size: float, seed: int, nan: bool
) -> None:
    cons, scaler, x = setup(case)
    assert not oracle(case.schema, case.raw, case.raw), "the drawn rows break their own schema"
    assert cons.violations(x, x) == [[] for _ in range(len(x))]
    g = torch.Generator().manual_seed(seed)
    x_adv = x + size * torch.randn(x.shape, generator=g) * torch.rand(x.shape, generator=g)
    if nan:
        x_adv[0, 0] = float("nan")
    out = cons.repair(x_adv, x, norm=norm, eps=eps)
    assert out.dtype == x.dtype and out.shape == x.shape
    assert cons.violations(out, x) == [[] for _ in range(len(x))]
    assert (norms.get(norm).measure(out.double() - x.double()) <= eps + 1e-6).all()
    raw = out.double().numpy() if scaler is None else scaler.unscale(out.double()).numpy()
    clean = case.raw
    assert oracle(case.schema, raw, clean) == []


@PROFILE
@given(case=cases(), which=st.sampled_from(["immutable", "integer", "onehot", "relation", "linear", "bounds"]))
def test_violations_name_each_broken_constraint(case: Case, which: str) -> None:
    schema = case.schema
    raw = case.raw.copy()
    cols = {c: j for j, c in enumerate(schema.columns())}
    feats = {f.name: f for f in schema.features}
    if which == "immutable":
        fixed = [f for f in schema.features if not f.mutable]
        if not fixed:
            return
        f = fixed[0]
        j = cols[f.column_names()[0]]
        raw[0, j] = 1 - raw[0, j] if f.type in ("binary", "categorical") else raw[0, j] + 1.0
        expected = f"immutable:{f.name}"
    elif which == "integer":
        ints = [f for f in schema.features if f.type == "integer"]
        if not ints:
            return
        f = ints[0]
        assert f.bounds is not None
        raw[0, cols[f.name]] += 0.5 if raw[0, cols[f.name]] < f.bounds[1] else -0.5
        expected = f"integer:{f.name}"
    elif which == "onehot":
        group = feats["cat"].column_names()
        raw[0, [cols[c] for c in group]] = 1.0
        expected = "onehot:cat"
    elif which == "relation":
        lo, hi = feats["f0"].bounds or (0.0, 1.0)
        raw[0, cols["f0"]], raw[0, cols["f1"]] = hi, lo
        expected = "relation:f0<=f1"
    elif which == "linear":
        lc = schema.linear[0]
        first, coef = next(iter(lc.terms.items()))
        gap = lc.constant - sum(c * raw[0, cols[g]] for g, c in lc.terms.items())
        raw[0, cols[first]] += (gap + 1.0) / coef  # the row's value now exceeds the constant by 1
        expected = "linear:ineq"
    else:
        f = feats["f1"]
        assert f.bounds is not None
        raw[0, cols["f1"]] = f.bounds[1] + 1.0
        expected = "bounds:f1"
    scaler = MinMaxScaler.from_schema(schema) if case.scaled else None
    x = torch.tensor(raw if scaler is None else scaler.scale(raw), dtype=torch.float64)
    clean = torch.tensor(case.raw if scaler is None else scaler.scale(case.raw), dtype=torch.float64)
    found = Constraints(schema, scaler).violations(x, clean)
    assert expected in found[0], (expected, found[0])
    assert all(not v for v in found[1:])
