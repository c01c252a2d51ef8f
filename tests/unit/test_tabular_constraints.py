"""Tabular constraints on tensors: ``violations`` names what a candidate breaks (scaled or raw
units, documented tolerances), and ``repair`` turns candidates into valid rows inside the ball,
step by step: immutables, bounds, integers, binaries, one-hot groups, relations, linear rows,
the budget, and the clean row when nothing else fits."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from robaudit import norms
from robaudit.tabular.constraints import Constraints, repair, violations
from robaudit.tabular.data import MinMaxScaler
from robaudit.tabular.schema import Feature, LinearConstraint, Relation, TabularSchema
from tests.helpers import one_thread

SCHEMA = TabularSchema(
    features=[
        Feature(name="age", type="integer", bounds=(18, 90), mutable=False),
        Feature(name="amount", type="continuous", bounds=(0, 1000)),
        Feature(name="open", type="integer", bounds=(0, 10)),
        Feature(name="total", type="integer", bounds=(0, 10)),
        Feature(name="foreign", type="binary"),
        Feature(name="channel", type="categorical", columns=["ch=web", "ch=app", "ch=pos"]),
    ],
    relations=[Relation(smaller="open", larger="total")],
    linear=[LinearConstraint(name="cap", terms={"amount": 1, "age": -20}, op="<=", constant=0)],
)
# age, amount, open, total, foreign, web, app, pos
ROWS = np.array([[30, 400.0, 2, 5, 0, 1, 0, 0], [50, 10.0, 4, 4, 1, 0, 0, 1]])
SCALER = MinMaxScaler.from_schema(SCHEMA)
CONS = Constraints(SCHEMA, SCALER)


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    yield from one_thread()


def scaled(raw: np.ndarray) -> torch.Tensor:
    return torch.tensor(SCALER.scale(raw), dtype=torch.float32)


def raw_of(x: torch.Tensor) -> np.ndarray:
    """Raw values to 3 decimals (float32 scaled values carry about 7 digits)."""
    return np.round(SCALER.unscale(x.double()).numpy(), 3)


CLEAN = scaled(ROWS)


def test_clean_rows_break_nothing() -> None:
    assert CONS.violations(CLEAN, CLEAN) == [[], []]
    assert not CONS.violated(CLEAN, CLEAN).any()
    assert CONS.columns == tuple(SCHEMA.columns())


@pytest.mark.parametrize(
    ("column", "value", "name"),
    [
        (0, 31, "immutable:age"),
        (1, 1200.0, "bounds:amount"),
        (2, 2.5, "integer:open"),
        (2, 6, "relation:open<=total"),
        (4, 0.5, "binary:foreign"),
        (6, 1, "onehot:channel"),  # two hot
        (5, 0, "onehot:channel"),  # none hot
        (1, 700.0, "linear:cap"),  # 700 > 20 * 30
    ],
)
def test_each_broken_constraint_is_named(column: int, value: float, name: str) -> None:
    bad = ROWS.copy()
    bad[0, column] = value
    found = CONS.violations(scaled(bad), CLEAN)
    assert name in found[0] and found[1] == [], found


def test_immutables_need_the_clean_rows_and_nan_is_named() -> None:
    bad = ROWS.copy()
    bad[0, 0] = 31
    assert CONS.violations(scaled(bad)) == [[], []]
    x = CLEAN.clone()
    x[1, 3] = float("nan")
    assert "nonfinite" in CONS.violations(x)[1]


def test_raw_units_without_a_scaler_give_the_same_answers() -> None:
    bad = ROWS.copy()
    bad[0, 2] = 6
    raw = torch.tensor(bad)
    assert violations(raw, SCHEMA, x_clean=torch.tensor(ROWS)) == [["relation:open<=total"], []]


def test_tolerance_is_a_hundred_thousandth_of_a_feature_span() -> None:
    x = CLEAN.clone().double()
    x[0, 2] += 0.5e-5  # open: half the tolerance off an integer (scaled units)
    assert CONS.violations(x, CLEAN) == [[], []]
    x[0, 2] += 1e-5
    assert CONS.violations(x, CLEAN)[0] == ["integer:open"]


def test_repair_resets_immutables_rounds_and_projects_one_hot() -> None:
    x = CLEAN.clone()
    x[:, 0] += 0.3  # age (immutable)
    x[:, 2] += 0.26  # open: 2 -> 4.6, 4 -> 6.6; rounded, then the relation caps it
    x[:, 4] = 0.8  # foreign -> 1
    x[:, 5:] = torch.tensor([0.2, 0.9, 0.3])  # channel -> app
    out = CONS.repair(x, CLEAN, norm="linf", eps=1.0)
    raw = raw_of(out)
    assert CONS.violations(out, CLEAN) == [[], []]
    assert raw[:, 0].tolist() == [30, 50]
    assert raw[:, 4].tolist() == [1, 1] and raw[:, 5:].tolist() == [[0, 1, 0], [0, 1, 0]]
    assert raw[0, 2] == 5 and raw[0, 3] == 5  # open 5 (4.6 -> 5), total untouched
    assert raw[1, 2] <= raw[1, 3]


def test_a_category_switch_that_does_not_fit_the_ball_keeps_the_clean_category() -> None:
    x = CLEAN.clone()
    x[:, 5:] = torch.tensor([0.1, 0.9, 0.0])
    out = CONS.repair(x, CLEAN, norm="l2", eps=0.5)  # a switch costs sqrt(2)
    assert torch.equal(out[:, 5:], CLEAN[:, 5:])
    out = CONS.repair(x, CLEAN, norm="l2", eps=1.5)
    assert out[:, 5:].tolist() == [[0, 1, 0], [0, 1, 0]]


def test_a_relation_moves_the_mutable_side() -> None:
    schema = TabularSchema(
        features=[Feature(name="a", bounds=(0, 10)), Feature(name="b", bounds=(0, 10), mutable=False)],
        relations=[Relation(smaller="a", larger="b")],
    )
    clean, x = torch.tensor([[2.0, 5.0]]), torch.tensor([[8.0, 9.0]])
    out = repair(x, clean, schema, eps=None)
    assert out.tolist() == [[5.0, 5.0]]


def test_linear_rows_are_projected_on_mutable_features_only() -> None:
    schema = TabularSchema(
        features=[Feature(name=n, bounds=(0, 100), mutable=n != "c") for n in "abcd"],
        linear=[
            LinearConstraint(name="le", terms={"a": 1, "b": 1, "c": 1}, op="<=", constant=60),
            LinearConstraint(name="eq", terms={"d": 2, "a": -1}, op="=="),
        ],
    )
    clean = torch.tensor([[10.0, 10.0, 30.0, 5.0]], dtype=torch.float64)
    x = torch.tensor([[40.0, 30.0, 99.0, 0.0]], dtype=torch.float64)
    out = repair(x, clean, schema, eps=None)
    a, b, c, d = out[0].tolist()
    assert c == 30.0 and a + b + c <= 60 + 1e-6 and abs(2 * d - a) < 1e-6
    assert violations(out, schema, x_clean=clean) == [[]]


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_repair_stays_in_the_ball_with_per_sample_budgets(norm: str) -> None:
    g = torch.Generator().manual_seed(0)
    clean = CLEAN.repeat(50, 1)
    x = clean + torch.randn(clean.shape, generator=g)
    eps = torch.linspace(0.0, 1.0, 100)
    out = CONS.repair(x, clean, norm=norm, eps=eps)
    assert (norms.get(norm).measure(out - clean) <= eps + 1e-6).all()
    assert not CONS.violated(out, clean).any()
    assert torch.equal(out[0], clean[0])  # eps 0: nothing may move
    assert (out != clean).any(dim=1).float().mean() > 0.8  # and repair keeps most attacks alive


def test_a_valid_candidate_comes_back_unchanged_and_the_dtype_is_kept() -> None:
    x = CLEAN.clone()
    x[0, 1] += 0.05  # amount 400 -> 450 (cap 600)
    out = CONS.repair(x, CLEAN, norm="linf", eps=0.1)
    assert out.dtype == torch.float32 and torch.equal(out, x)
    assert CONS.repair(x.double(), CLEAN.double(), eps=0.1).dtype == torch.float64


def test_what_cannot_be_repaired_in_the_ball_falls_back_to_the_clean_row() -> None:
    """An integer feature cannot move by 1 within Linf 0.05 of a span of 10: rounding toward the
    clean row keeps it there, and NaN candidates become the clean row."""
    schema = TabularSchema(features=[Feature(name="n", type="integer", bounds=(0, 10))])
    cons = Constraints(schema, MinMaxScaler.from_schema(schema))
    clean = torch.tensor([[0.3], [0.5]])
    x = torch.tensor([[0.34], [float("nan")]])
    assert torch.equal(cons.repair(x, clean, norm="linf", eps=0.05), clean)


def test_shapes_and_layouts_are_checked() -> None:
    with pytest.raises(ValueError, match="expected a batch N x 8"):
        CONS.violations(torch.zeros(2, 7))
    with pytest.raises(ValueError, match="differ"):
        CONS.repair(torch.zeros(2, 8), torch.zeros(3, 8))
    with pytest.raises(ValueError, match="column 'age' of the schema is not in the input"):
        Constraints(SCHEMA, None, columns=SCHEMA.columns()[1:])
    other = MinMaxScaler(SCALER.low[::-1].copy(), SCALER.high[::-1].copy(), tuple(SCHEMA.columns()[::-1]))
    with pytest.raises(ValueError, match="scaler's columns differ"):
        Constraints(SCHEMA, other, columns=SCHEMA.columns())


def test_another_column_order_is_followed() -> None:
    order = SCHEMA.columns()[::-1]
    cons = Constraints(SCHEMA, None, columns=order)
    raw = torch.tensor(ROWS[:, ::-1].copy())
    assert cons.violations(raw, raw) == [[], []]
    bad = raw.clone()
    bad[0, order.index("open")] = 6
    assert cons.violations(bad, raw)[0] == ["relation:open<=total"]
