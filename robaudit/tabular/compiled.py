"""A schema turned into index tensors and linear rows in working units, once per input layout.

Working units are the scaler's scaled units (what the engine attacks, [0, 1] per feature with a
schema-bounds scaler); without a scaler they are the raw units. Every constraint the schema
states in raw units is rewritten here so that repair and checks never leave working units:

- bounds ``[low, high]`` become ``[(low - l) / s, (high - l) / s]`` per column (l, s: the
  scaler's low and span); a feature without bounds takes the scaler's [0, 1], or none at all
  without a scaler;
- a relation ``a <= b`` becomes the row ``s_a x_a - s_b x_b <= l_b - l_a``, and a linear
  constraint ``sum c_i raw_i op k`` the row ``sum (c_i s_i) x_i op k - sum c_i l_i`` (``>=`` is
  negated into ``<=``): both stay linear, so one half-space projection repairs either;
- tolerances are :data:`~robaudit.tabular.schema.TOL` of a feature's span in working units per
  column, and for a row the sum of ``|w_i|`` times its columns' tolerances (how far the row's
  value moves when each column is off by its own tolerance).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from robaudit.tabular.data import MinMaxScaler
from robaudit.tabular.schema import TOL, TabularSchema, span_of

# 0: the half-space w.x <= b; 1: the hyperplane w.x == b
LESS, EQUAL = 0, 1


@dataclass(frozen=True)
class Layout:
    """The compiled schema on one device, float64 throughout (repair needs the digits)."""

    columns: tuple[str, ...]
    low: torch.Tensor  # F: the scaler's raw low (0 without a scaler)
    span: torch.Tensor  # F: the scaler's raw span (1 without a scaler)
    lo: torch.Tensor  # F: lower bound in working units (-inf: none)
    hi: torch.Tensor  # F: upper bound in working units (+inf: none)
    tol: torch.Tensor  # F: per-column tolerance in working units
    mutable: torch.Tensor  # F bool
    continuous: torch.Tensor  # F bool: neither integer, binary nor one-hot
    integer: torch.Tensor  # index of integer columns
    binary: torch.Tensor  # index of binary columns
    groups: tuple[tuple[str, torch.Tensor], ...]  # one-hot groups: name, column index
    immutables: tuple[tuple[str, torch.Tensor], ...]  # immutable features: name, column index
    bounded: tuple[tuple[str, int], ...]  # continuous/integer features: name, column
    integers: tuple[tuple[str, int], ...]
    binaries: tuple[tuple[str, int], ...]
    w: torch.Tensor  # K x F linear rows (relations first, then linear constraints)
    b: torch.Tensor  # K
    kind: torch.Tensor  # K: LESS or EQUAL
    row_tol: torch.Tensor  # K
    row_names: tuple[str, ...]  # relation:a<=b, linear:name
    # each row's repair direction: its mutable continuous features when it has any (rounding
    # cannot undo the fix), and all its mutable features; their squared lengths; == rows
    move_first: torch.Tensor  # K x F
    move_any: torch.Tensor  # K x F
    size_first: tuple[float, ...]
    size_any: tuple[float, ...]
    equal: tuple[bool, ...]

    def to(self, device: torch.device) -> Layout:
        """The same layout with its tensors on ``device`` (built once per device by the caller)."""
        moved: dict[str, Any] = {
            k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in vars(self).items()
        }
        moved["groups"] = tuple((n, i.to(device)) for n, i in self.groups)
        moved["immutables"] = tuple((n, i.to(device)) for n, i in self.immutables)
        return Layout(**moved)


def compile_layout(
    schema: TabularSchema, scaler: MinMaxScaler | None, columns: Sequence[str] | None = None
) -> Layout:
    """The layout of ``columns`` (default: the scaler's, else the schema's order).

    ValueError (one line) when the columns and the schema do not describe the same input.
    """
    names = _columns(schema, scaler, columns)
    index = {c: j for j, c in enumerate(names)}
    n = len(names)
    low = scaler.low if scaler is not None else np.zeros(n)
    span = scaler.span if scaler is not None else np.ones(n)
    lo, hi, tol = np.full(n, -math.inf), np.full(n, math.inf), np.full(n, TOL)
    mutable, continuous = np.ones(n, bool), np.ones(n, bool)
    integer: list[int] = []
    binary: list[int] = []
    groups: list[tuple[str, torch.Tensor]] = []
    immutables: list[tuple[str, torch.Tensor]] = []
    bounded: list[tuple[str, int]] = []
    ints: list[tuple[str, int]] = []
    bins: list[tuple[str, int]] = []
    for f in schema.features:
        cols = [index[c] for c in f.column_names()]
        if not f.mutable:
            mutable[cols] = False
            immutables.append((f.name, torch.tensor(cols)))
        if f.type in ("binary", "categorical"):
            raw_bounds: tuple[float, float] | None = (0.0, 1.0)
        else:
            raw_bounds = f.bounds if f.bounds is not None else (
                (float(low[cols[0]]), float(low[cols[0]] + span[cols[0]])) if scaler else None
            )
        for j in cols:
            if raw_bounds is not None:
                lo[j] = (raw_bounds[0] - low[j]) / span[j]
                hi[j] = (raw_bounds[1] - low[j]) / span[j]
            # scaled: TOL of a scaled unit; raw: TOL of the feature's span (1 without bounds)
            unit = span[j] if scaler is not None else span_of(*(raw_bounds or (0.0, 1.0)))
            tol[j] = TOL * unit / span[j]
        if f.type == "categorical":
            continuous[cols] = False
            groups.append((f.name, torch.tensor(cols)))
        elif f.type == "binary":
            continuous[cols] = False
            binary.append(cols[0])
            bins.append((f.name, cols[0]))
        else:
            bounded.append((f.name, cols[0]))
            if f.type == "integer":
                continuous[cols] = False
                integer.append(cols[0])
                ints.append((f.name, cols[0]))
    w, b, kind, row_names = _rows(schema, index, low, span)
    rows = np.asarray(w, dtype=np.float64).reshape(-1, n)
    move_any = rows * mutable
    first = move_any * continuous
    move_first = np.where((first != 0).any(axis=1, keepdims=True), first, move_any)
    t = torch.float64
    return Layout(
        columns=tuple(names),
        low=torch.tensor(low, dtype=t), span=torch.tensor(span, dtype=t),
        lo=torch.tensor(lo, dtype=t), hi=torch.tensor(hi, dtype=t), tol=torch.tensor(tol, dtype=t),
        mutable=torch.tensor(mutable), continuous=torch.tensor(continuous),
        integer=torch.tensor(integer, dtype=torch.long),
        binary=torch.tensor(binary, dtype=torch.long),
        groups=tuple(groups), immutables=tuple(immutables),
        bounded=tuple(bounded), integers=tuple(ints), binaries=tuple(bins),
        w=torch.tensor(w, dtype=t).reshape(-1, n), b=torch.tensor(b, dtype=t),
        kind=torch.tensor(kind, dtype=torch.long),
        row_tol=torch.tensor(np.abs(rows) @ tol, dtype=t),
        row_names=tuple(row_names),
        move_first=torch.tensor(move_first, dtype=t), move_any=torch.tensor(move_any, dtype=t),
        size_first=tuple(float(v) for v in (move_first**2).sum(axis=1)),
        size_any=tuple(float(v) for v in (move_any**2).sum(axis=1)),
        equal=tuple(k == EQUAL for k in kind),
    )


def _columns(
    schema: TabularSchema, scaler: MinMaxScaler | None, columns: Sequence[str] | None
) -> list[str]:
    """The input's column order, which must hold exactly the schema's columns (a column the
    schema does not describe would be unconstrained, silently)."""
    names = list(columns) if columns is not None else (
        list(scaler.columns) if scaler is not None else schema.columns()
    )
    if scaler is not None and list(scaler.columns) != names:
        raise ValueError("the scaler's columns differ from the input's (same names, same order)")
    wanted = schema.columns()
    if sorted(names) != sorted(wanted) or len(set(names)) != len(names):
        missing = [c for c in wanted if c not in names]
        extra = [c for c in names if c not in wanted]
        what = f"column {missing[0]!r} of the schema is not in the input" if missing else (
            f"column {extra[0]!r} is not in the schema" if extra else "a column appears twice"
        )
        raise ValueError(what)
    return names


def _rows(
    schema: TabularSchema, index: dict[str, int], low: np.ndarray, span: np.ndarray
) -> tuple[list[list[float]], list[float], list[int], list[str]]:
    """Relations and linear constraints as rows ``w.x (<= | ==) b`` in working units."""
    n = len(index)
    w: list[list[float]] = []
    b: list[float] = []
    kind: list[int] = []
    names: list[str] = []

    def add(terms: dict[str, float], op: str, constant: float, name: str) -> None:
        row = np.zeros(n)
        k = constant
        for feat, coef in terms.items():
            j = index[feat]
            row[j] += coef * span[j]
            k -= coef * low[j]
        sign = -1.0 if op == ">=" else 1.0
        w.append(list(sign * row))
        b.append(sign * k)
        kind.append(EQUAL if op == "==" else LESS)
        names.append(name)

    for r in schema.relations:
        add({r.smaller: 1.0, r.larger: -1.0}, "<=", 0.0, f"relation:{r.label}")
    for lc in schema.linear:
        add(dict(lc.terms), lc.op, lc.constant, f"linear:{lc.label}")
    return w, b, kind, names
