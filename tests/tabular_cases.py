"""Random tabular schemas and rows that satisfy them, and an independent oracle for their
constraints: shared by the property tests of ``repair`` (tests/property/
test_tabular_constraints_property.py) and of the tabular attacks (tests/property/
test_tabular_attacks_property.py), and by recounts on the fraud sample.

Schemas are drawn with 2-6 plain features (continuous, integer or binary, some immutable), a
one-hot group of 2-4 columns (sometimes immutable), a relation ``a <= b``, a linear inequality
over 2-3 features and sometimes a linear equality ``d == a + b``; rows are drawn to satisfy them.
Half the cases work in scaled units (a schema-bounds scaler), half in raw units. The oracle is
written here in numpy on raw values, independent of robaudit.tabular.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from hypothesis import strategies as st

from robaudit.tabular.constraints import Constraints
from robaudit.tabular.data import MinMaxScaler
from robaudit.tabular.schema import Feature, LinearConstraint, Relation, TabularSchema

SLACK = 1e-4  # the oracle's tolerance, in fractions of a feature's span (the code uses 1e-5)


@dataclass
class Case:
    schema: TabularSchema
    raw: np.ndarray  # N x F valid rows, raw units, schema column order
    scaled: bool  # work in a schema-bounds scaler's units, else raw


@st.composite
def cases(draw: st.DrawFn) -> Case:
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n_rows = draw(st.integers(1, 6))
    kinds = draw(st.lists(st.sampled_from(["continuous", "integer", "binary"]), min_size=2, max_size=6))
    kinds[:2] = [draw(st.sampled_from(["continuous", "integer"])) for _ in range(2)]  # a, b
    features, cols = [], []
    shared = _bounds(rng, "integer")  # a and b share bounds, so a <= b is always satisfiable
    for i, kind in enumerate(kinds):
        bounds = None if kind == "binary" else (shared if i < 2 else _bounds(rng, kind))
        features.append(Feature(name=f"f{i}", type=kind, bounds=bounds, mutable=bool(rng.random() > 0.3)))
        cols.append(_draw_values(rng, kind, bounds, n_rows))
    a, b = cols[0], cols[1]
    bad = a > b
    a[bad] = np.floor(b[bad]) if kinds[0] == "integer" else shared[0] + rng.random(int(bad.sum())) * (b[bad] - shared[0])
    k = draw(st.integers(2, 4))
    features.append(Feature(name="cat", type="categorical", columns=[f"cat={j}" for j in range(k)],
                            mutable=bool(rng.random() > 0.3)))
    cols += list(np.eye(k)[rng.integers(0, k, n_rows)].T)
    terms = {f"f{j}": float(rng.choice([-1, 1]) * rng.uniform(0.2, 3.0))
             for j in rng.choice(len(kinds), size=min(len(kinds), draw(st.integers(2, 3))), replace=False)}
    total = np.sum([c * cols[int(f[1:])] for f, c in terms.items()], axis=0)
    linear = [LinearConstraint(name="ineq", terms=terms, op="<=", constant=float(total.max() + rng.uniform(0, 5)))]
    if draw(st.booleans()):  # d == f0 + f1: an equality, d continuous (sometimes immutable)
        lo, hi = shared
        features.append(Feature(name="d", bounds=(2 * lo, 2 * hi), mutable=bool(rng.random() > 0.3)))
        cols.append(a + b)
        linear.append(LinearConstraint(name="eq", terms={"d": 1, "f0": -1, "f1": -1}, op="=="))
    schema = TabularSchema(features=features, relations=[Relation(smaller="f0", larger="f1")], linear=linear)
    raw = np.stack(cols, axis=1)
    order = [_column_of(schema, c) for c in schema.columns()]
    return Case(schema, raw[:, order], draw(st.booleans()))


def _bounds(rng: np.random.Generator, kind: str) -> tuple[float, float]:
    low = float(rng.integers(-50, 50)) if kind == "integer" else float(rng.uniform(-50, 50))
    span = float(rng.integers(1, 200)) if kind == "integer" else float(rng.uniform(0.5, 200))
    return low, low + span


def _draw_values(rng: np.random.Generator, kind: str, bounds: tuple[float, float] | None, n: int) -> np.ndarray:
    if kind == "binary":
        return rng.integers(0, 2, n).astype(np.float64)
    assert bounds is not None
    if kind == "integer":
        return rng.integers(int(bounds[0]), int(bounds[1]) + 1, n).astype(np.float64)
    return rng.uniform(bounds[0], bounds[1], n)


def _column_of(schema: TabularSchema, column: str) -> int:
    """Where ``column`` sits in the drawing order (plain features, the group, then d)."""
    drawn = [c for f in schema.features if f.type != "categorical" and f.name != "d" for c in f.column_names()]
    drawn += [c for f in schema.features if f.type == "categorical" for c in f.column_names()]
    drawn += ["d"] if "d" in schema.columns() else []
    return drawn.index(column)


def oracle(schema: TabularSchema, raw: np.ndarray, clean: np.ndarray) -> list[str]:
    """Every broken constraint of any row, from the schema alone (raw units, float64)."""
    cols = {c: j for j, c in enumerate(schema.columns())}
    spans = {f.name: (f.bounds[1] - f.bounds[0] if f.bounds else 1.0) or 1.0
             for f in schema.features if f.type != "categorical"}
    problems = []
    for f in schema.features:
        idx = [cols[c] for c in f.column_names()]
        v, c0 = raw[:, idx], clean[:, idx]
        tol = SLACK * spans.get(f.name, 1.0)
        if not f.mutable and (np.abs(v - c0) > tol).any():
            problems.append(f"immutable {f.name}")
        if f.type in ("binary", "categorical") and (np.minimum(np.abs(v), np.abs(v - 1)) > tol).any():
            problems.append(f"not 0/1 {f.name}")
        if f.type == "categorical" and (np.round(v).sum(axis=1) != 1).any():
            problems.append(f"one-hot {f.name}")
        if f.bounds and ((v < f.bounds[0] - tol) | (v > f.bounds[1] + tol)).any():
            problems.append(f"bounds {f.name}")
        if f.type == "integer" and (np.abs(v - np.round(v)) > tol).any():
            problems.append(f"integer {f.name}")
    for r in schema.relations:
        if (raw[:, cols[r.smaller]] - raw[:, cols[r.larger]] > SLACK * max(spans[r.smaller], spans[r.larger])).any():
            problems.append(f"relation {r.label}")
    for lc in schema.linear:
        gap = np.sum([c * raw[:, cols[f]] for f, c in lc.terms.items()], axis=0) - lc.constant
        tol = SLACK * sum(abs(c) * spans[f] for f, c in lc.terms.items())
        if ((np.abs(gap) if lc.op == "==" else gap) > tol).any():
            problems.append(f"linear {lc.label}")
    return problems


def setup(case: Case) -> tuple[Constraints, MinMaxScaler | None, torch.Tensor]:
    scaler = MinMaxScaler.from_schema(case.schema) if case.scaled else None
    x = case.raw if scaler is None else scaler.scale(case.raw)
    return Constraints(case.schema, scaler), scaler, torch.tensor(np.asarray(x), dtype=torch.float32)
