"""Tabular models (issue 17): feature schemas, CSV/Parquet data, min-max scaling, constraints.

An attack on a fraud or credit model is only a finding when the row it produces could be a
real record: immutable facts unchanged, integers whole, one category per one-hot group,
relations between features kept. :mod:`.schema` states those rules, :mod:`.data` reads tables
and scales them to [0, 1] (budgets are in scaled units, as TabularBench), and
:mod:`.constraints` checks candidates and repairs them into the ball.
"""

from __future__ import annotations

from robaudit.tabular.constraints import Constraints, repair, violations
from robaudit.tabular.data import MinMaxScaler, TabularData, read_table, train_test_split
from robaudit.tabular.schema import (
    Feature,
    LinearConstraint,
    Relation,
    TabularSchema,
    infer_schema,
    load_schema,
    schema_from_dict,
)

__all__ = [
    "Constraints",
    "Feature",
    "LinearConstraint",
    "MinMaxScaler",
    "Relation",
    "TabularData",
    "TabularSchema",
    "infer_schema",
    "load_schema",
    "read_table",
    "repair",
    "schema_from_dict",
    "train_test_split",
    "violations",
]
