"""CSV and Parquet sources: a table read with its feature schema, scaled to [0, 1].

``data.source: fraud.csv`` with ``data.label: is_fraud`` and ``data.schema`` (a YAML path, or
the schema inline as a mapping). The rows are read in the schema's column order, checked
against the schema (the first problem names the feature and the row), and min-max scaled with
the schema's bounds (:meth:`~robaudit.tabular.data.MinMaxScaler.from_schema`): the model under
audit takes the *scaled* features, ``model.input_shape`` is ``[F]`` and ``model.bounds`` is
``[0, 1]``, and budgets are in scaled units, as TabularBench measures them.

Without ``data.schema`` a schema is inferred from the data (types and observed ranges, every
feature mutable, no relations); the run writes it next to the report as
``schema.inferred.yaml`` for the user to check and pass back as ``data.schema``.

The constraints then reach the engine with the data set (:attr:`DataSet.tabular`): every
candidate an attack returns is checked against them before it may count as a break.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robaudit.errors import ConfigError, DataError

_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.zip", ".csv.xz", ".tsv", ".parquet", ".pq")
INFERRED_SCHEMA_FILE = "schema.inferred.yaml"


def is_tabular(source: str) -> bool:
    """Whether ``source`` names a CSV or Parquet file (by its suffix)."""
    return source.lower().endswith(_SUFFIXES)


@dataclass(frozen=True)
class TabularInput:
    """A table's schema, its scaler and the compiled constraints the engine checks.

    ``inferred_yaml``: the schema as YAML when it was inferred from the data (written next to
    the report), else None.
    """

    schema: Any  # robaudit.tabular.TabularSchema
    scaler: Any  # robaudit.tabular.MinMaxScaler
    constraints: Any  # robaudit.tabular.Constraints
    label: str
    inferred_yaml: str | None = None

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(self.scaler.columns)


def read_tabular(
    source: str,
    label: str | None,
    schema: str | Mapping[str, Any] | None,
    config_path: str | None = None,
) -> tuple[TabularInput, np.ndarray, np.ndarray]:
    """The table's :class:`TabularInput`, its scaled features (float32 N x F) and labels.

    DataError (one line, naming the file) on a missing label, a missing column, or a value the
    schema does not allow; ConfigError on a schema that does not parse.
    """
    from robaudit.tabular import Constraints, MinMaxScaler, infer_schema, read_table
    from robaudit.tabular.data import read_frame

    path = Path(source).expanduser()
    frame = read_frame(path)
    columns = ", ".join(str(c) for c in frame.columns)
    if label is None:
        raise DataError(
            f"{path}: a CSV/Parquet source needs data.label, the label column (columns: {columns})"
        )
    if label not in frame.columns:
        raise DataError(f"{path}: data.label {label!r} is not a column (columns: {columns})")
    if schema is None:
        sch = infer_schema(frame, label)
        inferred: str | None = sch.to_yaml(
            f"Inferred by robaudit from {path} (label column: {label}).\n"
            "Check it, then pass it back as data.schema."
        )
    else:
        sch, inferred = _schema(schema, config_path), None
    table = read_table(frame, label, sch.columns(), name=str(path))
    problem = sch.validate_against(frame)
    if problem is not None:
        raise DataError(f"{path}: {problem}")
    scaler = MinMaxScaler.from_schema(sch, table.x, table.columns)
    info = TabularInput(sch, scaler, Constraints(sch, scaler), label, inferred)
    return info, scaler.scale(table.x), table.y


def _schema(spec: str | Mapping[str, Any], config_path: str | None) -> Any:
    """``data.schema``: an inline mapping, or a YAML path (relative to the working directory,
    else to the config's folder)."""
    from robaudit.tabular import load_schema, schema_from_dict

    if isinstance(spec, Mapping):
        return schema_from_dict(dict(spec), "data.schema")
    path = Path(spec).expanduser()
    if not path.exists() and config_path is not None and not path.is_absolute():
        beside = Path(config_path).parent / path
        if beside.exists():
            path = beside
    if not path.exists():
        raise ConfigError(f"data.schema: {spec}: no such file")
    return load_schema(path)
