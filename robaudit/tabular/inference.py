"""A first schema from data, for a person to correct: robaudit cannot know what is mutable.

Types come from the values: a column holding only 0 and 1 is binary, one holding only whole
numbers is integer, anything else continuous. Bounds are the observed min and max (a guess: the
real range is often wider). Columns named ``prefix=value`` or ``prefix_value`` that are 0/1 and
have exactly one 1 in every row form a categorical group named ``prefix``; when several
prefixes would fit, the one grouping most columns wins. Every feature is marked mutable and no
relation is guessed: which facts an attacker controls is a judgement about the threat, which
``to_yaml``'s comments ask the user to make.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from robaudit.errors import DataError
from robaudit.tabular.schema import Feature, TabularSchema


def infer(df: pd.DataFrame, label: str | None = None) -> TabularSchema:
    """The inferred schema of every column of ``df`` but ``label``."""
    if label is not None and label not in df.columns:
        raise DataError(f"label column {label!r} is not in the data (columns: {_few(df.columns)})")
    names = [str(c) for c in df.columns if c != label]
    if not names:
        raise DataError("the data has no feature columns besides the label")
    values = {n: _numeric(df, n) for n in names}
    groups = _one_hot_groups(names, values)
    grouped = {c: prefix for prefix, cols in groups.items() for c in cols}
    features: list[Feature] = []
    for n in names:
        if n in grouped:
            prefix = grouped[n]
            if groups[prefix][0] == n:
                features.append(Feature(name=prefix, type="categorical", columns=groups[prefix]))
            continue
        features.append(_plain(n, values[n]))
    return TabularSchema(features=features)


def _numeric(df: pd.DataFrame, name: str) -> np.ndarray:
    col = df[name]
    if col.dtype == bool:
        return col.to_numpy(dtype=np.float64)
    if not pd.api.types.is_numeric_dtype(col):
        raise DataError(f"column {name!r} is not numeric ({col.dtype}); encode it first")
    v = col.to_numpy(dtype=np.float64)
    nan = ~np.isfinite(v)
    if nan.any():
        raise DataError(f"column {name!r}: row {int(np.argmax(nan))} is {v[np.argmax(nan)]}")
    return v


def _plain(name: str, v: np.ndarray) -> Feature:
    """The narrowest type the values allow: binary, else integer, else continuous."""
    if len(v) and np.isin(v, (0.0, 1.0)).all():
        return Feature(name=name, type="binary")
    low, high = (float(v.min()), float(v.max())) if len(v) else (0.0, 0.0)
    if len(v) and (v == np.round(v)).all():
        return Feature(name=name, type="integer", bounds=(low, high))
    return Feature(name=name, type="continuous", bounds=(low, high))


def _prefixes(name: str) -> list[str]:
    """Every prefix before a ``=`` or ``_`` in ``name`` (``a_b=c`` gives ``a`` and ``a_b``)."""
    return [name[:i] for i, ch in enumerate(name) if ch in "=_" and 0 < i < len(name) - 1]


def _one_hot_groups(names: list[str], values: dict[str, np.ndarray]) -> dict[str, list[str]]:
    """Prefix -> its columns (data order) for every group that is one-hot in every row."""
    flags = {n for n in names if np.isin(values[n], (0.0, 1.0)).all()}
    candidates: dict[str, list[str]] = {}
    for n in names:
        if n in flags:
            for p in _prefixes(n):
                candidates.setdefault(p, []).append(n)
    taken: set[str] = set()
    groups: dict[str, list[str]] = {}
    # largest groups first; for equal sizes the longer (more specific) prefix, then by name
    order = sorted(candidates.items(), key=lambda kv: (-len(kv[1]), -len(kv[0]), kv[0]))
    for prefix, cols in order:
        if len(cols) < 2 or taken & set(cols) or prefix in names:
            continue
        rows = np.sum([values[c] for c in cols], axis=0)
        if (rows == 1).all():
            groups[prefix] = cols
            taken |= set(cols)
    return groups


def _few(items: Sequence[object], limit: int = 8) -> str:
    shown = [str(i) for i in list(items)[:limit]]
    return ", ".join(shown) + (", ..." if len(items) > limit else "")
