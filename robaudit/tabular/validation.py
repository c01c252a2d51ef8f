"""Does a data set fit its schema? The first problem as one line, naming feature and row.

Run before an audit: repair falls back to the clean row whenever it cannot make a valid
candidate, so the clean rows themselves must satisfy every constraint. Values are raw (the
data's own units). Tolerances follow :data:`robaudit.tabular.schema.TOL`: a value may be off
by 1e-5 of its feature's span (the schema's bounds, else the observed range) before it counts,
so float32 storage of a valid row never reads as a violation. Rows are numbered from 0 in the
order given (for a CSV: the line number minus 2).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from robaudit.tabular.schema import TOL, Feature, TabularSchema, span_of


def first_problem(
    schema: TabularSchema, data: pd.DataFrame | np.ndarray, columns: Sequence[str] | None
) -> str | None:
    """The first problem in schema order (features, then relations, then linear constraints)."""
    table, problem = _as_columns(schema, data, columns)
    if problem:
        return problem
    spans: dict[str, float] = {}
    for f in schema.features:
        problem = _feature_problem(f, table)
        if problem:
            return problem
        if f.type != "categorical":
            v = table[f.name]
            low, high = f.bounds or (float(v.min(initial=0.0)), float(v.max(initial=0.0)))
            spans[f.name] = span_of(low, high)
    for r in schema.relations:
        a, b = table[r.smaller], table[r.larger]
        bad = a - b > TOL * max(spans[r.smaller], spans[r.larger])
        if bad.any():
            i = int(np.argmax(bad))
            return (
                f"relation {r.label}: row {i} has {r.smaller}={_num(a[i])} > "
                f"{r.larger}={_num(b[i])}"
            )
    for lc in schema.linear:
        total = sum(c * table[f] for f, c in lc.terms.items())
        tol = TOL * sum(abs(c) * spans[f] for f, c in lc.terms.items())
        gap = np.asarray(total, dtype=np.float64) - lc.constant
        bad = {"<=": gap > tol, ">=": gap < -tol, "==": np.abs(gap) > tol}[lc.op]
        if bad.any():
            i = int(np.argmax(bad))
            return (
                f"linear constraint {lc.label}: row {i} gives {_num(gap[i] + lc.constant)}, "
                f"needs {lc.op} {_num(lc.constant)}"
            )
    return None


def _as_columns(
    schema: TabularSchema, data: pd.DataFrame | np.ndarray, columns: Sequence[str] | None
) -> tuple[dict[str, np.ndarray], str | None]:
    """The schema's columns as float64 vectors, or why they cannot be had. A DataFrame names
    its own columns; an array's are ``columns``, else the schema's order."""
    if isinstance(data, pd.DataFrame):
        arrays: dict[str, Any] = {str(n): data[n].to_numpy() for n in data.columns}
    else:
        arr = np.asarray(data)
        names = list(columns) if columns is not None else schema.columns()
        if arr.ndim != 2 or arr.shape[1] != len(names):
            return {}, f"data has shape {list(arr.shape)}; expected N x {len(names)} columns"
        arrays = {n: arr[:, j] for j, n in enumerate(names)}
    table: dict[str, np.ndarray] = {}
    for c in schema.columns():
        if c not in arrays:
            return {}, f"column {c!r} of the schema is not in the data"
        try:
            table[c] = np.asarray(arrays[c], dtype=np.float64)
        except (TypeError, ValueError):
            return {}, f"column {c!r} is not numeric"
    return table, None


def _feature_problem(f: Feature, table: dict[str, np.ndarray]) -> str | None:
    """NaN, bounds, integrality, 0/1 and one-hot checks for one feature."""
    for c in f.column_names():
        nan = ~np.isfinite(table[c])
        if nan.any():
            return f"column {c!r}: row {int(np.argmax(nan))} is {_num(table[c][np.argmax(nan)])}"
    if f.type == "categorical":
        return _group_problem(f, table)
    v = table[f.name]
    if len(v) == 0:
        return None
    low, high = f.bounds or (float(v.min()), float(v.max()))
    tol = TOL * span_of(low, high)
    if f.type == "binary":
        bad = (np.abs(v) > tol) & (np.abs(v - 1) > tol)
        if bad.any():
            i = int(np.argmax(bad))
            return f"binary feature {f.name!r}: row {i} has {_num(v[i])}, not 0 or 1"
        return None
    for bad, what in ((v < low - tol, f"below its lower bound {_num(low)}"),
                      (v > high + tol, f"above its upper bound {_num(high)}")):
        if bad.any():
            i = int(np.argmax(bad))
            return f"feature {f.name!r}: row {i} has {_num(v[i])}, {what}"
    if f.type == "integer":
        bad = np.abs(v - np.round(v)) > tol
        if bad.any():
            i = int(np.argmax(bad))
            return f"integer feature {f.name!r}: row {i} has {_num(v[i])}, not an integer"
    return None


def _group_problem(f: Feature, table: dict[str, np.ndarray]) -> str | None:
    cols = f.column_names()
    block = np.stack([table[c] for c in cols], axis=1)
    off = (np.abs(block) > TOL) & (np.abs(block - 1) > TOL)
    if off.any():
        i, j = np.argwhere(off)[0]
        return f"categorical {f.name!r}: row {i} has {_num(block[i, j])} in {cols[j]!r}, not 0 or 1"
    hot = (np.abs(block - 1) <= TOL).sum(axis=1)
    bad = hot != 1
    if bad.any():
        i = int(np.argmax(bad))
        return f"categorical {f.name!r}: row {i} has {int(hot[i])} hot columns, not exactly one"
    return None


def _num(x: float) -> str:
    """A value as a short number: 3, 2.5, 0.1 (never 2.5000000001)."""
    return f"{float(x):.6g}"
