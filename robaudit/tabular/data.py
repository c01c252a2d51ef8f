"""Tabular data in: CSV or Parquet rows as float32 features and int64 labels, and the min-max
scaling that puts every feature in [0, 1].

Budgets on tables are measured in scaled units, as TabularBench does (L2 0.5 on min-max scaled
features): a raw budget would let an attacker move a feature measured in dollars by 0.5 dollars
and one measured in years by half a year, which is no threat model at all. The scaler is fitted
on the training split (or built from the schema's bounds, which is better: then a test row
outside the training range is still inside [0, 1] when the schema says it is legal), and the
engine attacks ``scaler.scale(x)``; constraints are stated in raw units and
:mod:`robaudit.tabular.constraints` maps them through the same scaler.

Errors are :class:`robaudit.errors.DataError` with one line: a missing label column, a
non-numeric column (named, with its dtype and first offending value), a NaN (row and column).
Rows are numbered from 0 (for a CSV: the line number minus 2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd
import torch

from robaudit.errors import DataError
from robaudit.tabular.schema import TabularSchema, span_of

_PARQUET = (".parquet", ".pq")
_CSV = (".csv", ".csv.gz", ".csv.bz2", ".csv.zip", ".csv.xz", ".tsv")

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


@dataclass(frozen=True)
class TabularData:
    """Rows in raw units: ``x`` float32 N x F, ``y`` int64 N, the columns' names in order."""

    x: np.ndarray
    y: np.ndarray
    columns: tuple[str, ...]
    source: str = ""

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, index: np.ndarray) -> TabularData:
        return TabularData(self.x[index], self.y[index], self.columns, self.source)


def read_frame(source: str | Path) -> pd.DataFrame:
    """The file as a DataFrame; DataError when it is missing, unreadable or not CSV/Parquet."""
    path = Path(source)
    name = path.name.lower()
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        if name.endswith(_PARQUET):
            return pd.read_parquet(path)
        if name.endswith(_CSV):
            return pd.read_csv(path, sep="\t" if name.endswith(".tsv") else ",")
    except ImportError:
        raise DataError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)") from None
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: cannot read it ({first})") from None
    raise DataError(f"{path}: unsupported file type; use .csv (.csv.gz, .tsv) or .parquet")


def read_table(
    source: str | Path | pd.DataFrame,
    label: str,
    columns: Sequence[str] | None = None,
    *,
    name: str | None = None,
) -> TabularData:
    """Features and labels from a file (or a DataFrame already read).

    ``columns`` picks the features and their order (give ``schema.columns()`` so the model sees
    the columns the schema describes); by default every column but ``label``, in file order.
    ``name``: how errors name a DataFrame (the file it was read from); default ``data``.
    """
    frame = source if isinstance(source, pd.DataFrame) else read_frame(source)
    where = (name or "data") if isinstance(source, pd.DataFrame) else str(source)
    if label not in frame.columns:
        raise DataError(
            f"{where}: label column {label!r} is missing (columns: {_few(frame.columns)})"
        )
    names = [str(c) for c in frame.columns if c != label] if columns is None else list(columns)
    for c in names:
        if c == label:
            raise DataError(f"{where}: column {label!r} is the label; it cannot be a feature")
        if c not in frame.columns:
            raise DataError(f"{where}: column {c!r} is missing (columns: {_few(frame.columns)})")
    if not names:
        raise DataError(f"{where}: no feature columns besides the label {label!r}")
    x = np.stack([_numeric(frame[c], c, where) for c in names], axis=1)
    _no_nan(x, names, where)
    y = _labels(frame[label], label, where)
    return TabularData(x.astype(np.float32), y, tuple(names), where)


def _numeric(col: pd.Series, name: str, where: str) -> np.ndarray:
    """A feature column as float64; booleans count as 0/1, text is refused (robaudit never
    guesses an encoding: the model was trained on one the user knows)."""
    if col.dtype == bool:
        return col.to_numpy(dtype=np.float64)
    if not pd.api.types.is_numeric_dtype(col):
        bad = pd.to_numeric(col, errors="coerce").isna() & col.notna()
        i = int(np.argmax(bad.to_numpy())) if bad.any() else 0
        raise DataError(
            f"{where}: column {name!r} is not numeric ({col.dtype}; row {i} has "
            f"{str(col.iloc[i])[:40]!r}); encode it as numbers first"
        )
    return col.to_numpy(dtype=np.float64)


def _no_nan(x: np.ndarray, names: list[str], where: str) -> None:
    """Refuse the first NaN or inf: a model's answer on it means nothing, and it would
    poison the scaler's min and max."""
    with np.errstate(over="ignore"):  # what float32 cannot hold counts as non-finite too
        bad = ~np.isfinite(x.astype(np.float32))
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise DataError(f"{where}: row {i}, column {names[j]!r} is {x[i, j]} (not a finite number)")


def _labels(col: pd.Series, name: str, where: str) -> np.ndarray:
    """Class indices 0..K-1 as int64: a label is an index into the model's logits."""
    if col.dtype == bool:
        return col.to_numpy(dtype=np.int64)
    if not pd.api.types.is_numeric_dtype(col):
        raise DataError(
            f"{where}: label column {name!r} is not numeric ({col.dtype}); map the classes to "
            "0..K-1 first"
        )
    v = col.to_numpy(dtype=np.float64)
    bad = ~np.isfinite(v) | (v != np.round(v)) | (v < 0)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"{where}: label column {name!r}: row {i} has {v[i]}, not a class 0..K-1")
    return v.astype(np.int64)


def train_test_split(
    data: TabularData, test_fraction: float = 0.2, seed: int = 0
) -> tuple[TabularData, TabularData]:
    """A seeded split, stratified by label so the rare class (fraud) is in both parts."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    test: list[np.ndarray] = []
    for cls in np.unique(data.y):
        idx = rng.permutation(np.flatnonzero(data.y == cls))
        test.append(idx[: round(len(idx) * test_fraction)])
    is_test = np.zeros(len(data), dtype=bool)
    is_test[np.concatenate(test)] = True
    return data.subset(np.flatnonzero(~is_test)), data.subset(np.flatnonzero(is_test))


@dataclass(frozen=True)
class MinMaxScaler:
    """Per-column affine map raw -> scaled: ``(x - low) / span``; ``span`` is 1 for a constant
    column. Values outside ``[low, high]`` map outside ``[0, 1]``: nothing is clipped here."""

    low: np.ndarray
    high: np.ndarray
    columns: tuple[str, ...]

    def __post_init__(self) -> None:
        low, high = np.asarray(self.low, np.float64), np.asarray(self.high, np.float64)
        if low.shape != (len(self.columns),) or high.shape != low.shape:
            raise ValueError(f"low/high need {len(self.columns)} values, one per column")
        if not (np.isfinite(low).all() and np.isfinite(high).all() and (low <= high).all()):
            raise ValueError("scaler bounds must be finite with low <= high")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    @classmethod
    def fit(cls, x: np.ndarray, columns: Sequence[str]) -> MinMaxScaler:
        """Fitted on ``x`` (the training split: fitting on test rows leaks their range)."""
        arr = np.asarray(x, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[0] == 0:
            raise ValueError(f"fit needs a non-empty N x F array, got shape {list(arr.shape)}")
        return cls(arr.min(axis=0), arr.max(axis=0), tuple(columns))

    @classmethod
    def from_schema(
        cls,
        schema: TabularSchema,
        x: np.ndarray | None = None,
        columns: Sequence[str] | None = None,
    ) -> MinMaxScaler:
        """The schema's bounds (binary and categorical columns [0, 1]); a feature without bounds
        takes its range in ``x`` (columns in ``columns`` order, by default the schema's)."""
        names = list(columns) if columns is not None else schema.columns()
        known: dict[str, tuple[float, float]] = {}
        for f in schema.features:
            if f.type in ("binary", "categorical"):
                known.update({c: (0.0, 1.0) for c in f.column_names()})
            elif f.bounds is not None:
                known[f.name] = f.bounds
        low, high = np.zeros(len(names)), np.ones(len(names))
        for j, c in enumerate(names):
            if c in known:
                low[j], high[j] = known[c]
            elif x is None or len(x) == 0:
                raise ValueError(f"feature {c!r} has no bounds in the schema; pass data to fit it")
            else:
                col = np.asarray(x, dtype=np.float64)[:, j]
                low[j], high[j] = col.min(), col.max()
        return cls(low, high, tuple(names))

    @property
    def span(self) -> np.ndarray:
        return np.array([span_of(lo, hi) for lo, hi in zip(self.low, self.high, strict=True)])

    def scale(self, x: ArrayT) -> ArrayT:
        """Raw -> scaled, for a numpy array (float64 math, float32 out) or a tensor (its dtype
        and device)."""
        if isinstance(x, torch.Tensor):
            low, span = self._tensors(x)
            return (x - low) / span
        return ((np.asarray(x, np.float64) - self.low) / self.span).astype(np.float32)

    def unscale(self, x: ArrayT) -> ArrayT:
        """Scaled -> raw, the inverse of :meth:`scale`."""
        if isinstance(x, torch.Tensor):
            low, span = self._tensors(x)
            return x * span + low
        return (np.asarray(x, np.float64) * self.span + self.low).astype(np.float32)

    def _tensors(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = like.dtype if like.is_floating_point() else torch.float32
        low = torch.as_tensor(self.low, dtype=dtype, device=like.device)
        return low, torch.as_tensor(self.span, dtype=dtype, device=like.device)


def _few(items: Sequence[object] | pd.Index, limit: int = 8) -> str:
    shown = [str(i) for i in list(items)[:limit]]
    return ", ".join(shown) + (", ..." if len(items) > limit else "")
