"""Tabular data in: CSV/Parquet reading with one-line errors, the stratified split, the
min-max scaler (fitted or from the schema's bounds), and the generated fraud sample data."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from robaudit.errors import DataError
from robaudit.tabular.data import MinMaxScaler, read_table, train_test_split
from robaudit.tabular.schema import Feature, TabularSchema, load_schema
from tests.conftest import REPO_ROOT

FRAUD = REPO_ROOT / "sample_models" / "data"


def write(tmp_path: Path, df: pd.DataFrame, name: str = "t.csv") -> Path:
    path = tmp_path / name
    df.to_csv(path, index=False)
    return path


def test_read_table_gives_float32_features_int64_labels_and_names(tmp_path: Path) -> None:
    path = write(tmp_path, pd.DataFrame({"a": [1, 2], "b": [0.5, 1.5], "ok": [True, False], "y": [1, 0]}))
    data = read_table(path, "y")
    assert data.x.dtype == np.float32 and data.x.shape == (2, 3)
    assert data.y.dtype == np.int64 and data.y.tolist() == [1, 0]
    assert data.columns == ("a", "b", "ok") and data.x[:, 2].tolist() == [1.0, 0.0]
    picked = read_table(path, "y", columns=["b", "a"])
    assert picked.columns == ("b", "a") and picked.x[0].tolist() == [0.5, 1.0]


@pytest.mark.parametrize(
    ("df", "label", "columns", "needle"),
    [
        (pd.DataFrame({"a": [1]}), "y", None, "label column 'y' is missing (columns: a)"),
        (pd.DataFrame({"a": [1], "y": [0]}), "y", ["b"], "column 'b' is missing"),
        (pd.DataFrame({"a": [1], "y": [0]}), "y", ["y"], "column 'y' is the label"),
        (pd.DataFrame({"a": [1, 2], "c": ["7", "zz"], "y": [0, 1]}), "y", None,
         "row 1 has 'zz'); encode it as numbers first"),
        (pd.DataFrame({"a": [1.0, np.nan], "y": [0, 1]}), "y", None, "row 1, column 'a' is nan"),
        (pd.DataFrame({"a": [1e39, 1], "y": [0, 1]}), "y", None, "row 0, column 'a' is 1e+39"),
        (pd.DataFrame({"a": [1, 2], "y": [0, 0.5]}), "y", None, "row 1 has 0.5, not a class"),
        (pd.DataFrame({"a": [1], "y": ["fraud"]}), "y", None, "map the classes to 0..K-1"),
    ],
)
def test_read_table_errors_are_one_line(
    tmp_path: Path, df: pd.DataFrame, label: str, columns: list[str] | None, needle: str
) -> None:
    with pytest.raises(DataError) as err:
        read_table(write(tmp_path, df), label, columns)
    assert "\n" not in str(err.value) and needle in str(err.value), str(err.value)


def test_files_that_cannot_be_read_are_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        read_table(tmp_path / "none.csv", "y")
    other = tmp_path / "t.json"
    other.write_text("{}")
    with pytest.raises(DataError, match="unsupported file type"):
        read_table(other, "y")
    parquet = tmp_path / "t.parquet"
    try:
        pd.DataFrame({"a": [1.0], "y": [1]}).to_parquet(parquet)
    except ImportError:  # no pyarrow here: the reader must say what to install
        parquet.write_bytes(b"PAR1")
        with pytest.raises(DataError, match="pyarrow"):
            read_table(parquet, "y")
    else:
        assert read_table(parquet, "y").x.tolist() == [[1.0]]


def test_the_split_is_seeded_and_keeps_the_rare_class_in_both_parts() -> None:
    y = np.array([1] * 10 + [0] * 100)
    data = read_table(pd.DataFrame({"a": np.arange(110.0), "y": y}), "y")
    train, test = train_test_split(data, 0.2, seed=3)
    assert len(train) + len(test) == 110 and int(test.y.sum()) == 2 and int(train.y.sum()) == 8
    again, _ = train_test_split(data, 0.2, seed=3)
    assert np.array_equal(train.x, again.x)
    assert not set(train.x[:, 0]) & set(test.x[:, 0])


def test_the_scaler_maps_to_the_unit_box_and_back() -> None:
    x = np.array([[0.0, 5.0, 2.0], [10.0, 7.0, 2.0]], dtype=np.float32)
    sc = MinMaxScaler.fit(x, ["a", "b", "const"])
    assert sc.scale(x).tolist() == [[0.0, 0.0, 0.0], [1.0, 1.0, 0.0]]  # a constant column: span 1
    assert np.allclose(sc.unscale(sc.scale(x)), x)
    t = torch.tensor(x, dtype=torch.float64)
    assert torch.allclose(sc.unscale(sc.scale(t)), t) and sc.scale(t).dtype == torch.float64
    assert sc.scale(np.array([[20.0, 6.0, 3.0]])).tolist() == [[2.0, 0.5, 1.0]]  # no clipping


def test_a_scaler_from_the_schema_uses_its_bounds_and_fits_the_rest() -> None:
    s = TabularSchema(features=[
        Feature(name="a", bounds=(0, 100)), Feature(name="free"), Feature(name="b", type="binary"),
        Feature(name="c", type="categorical", columns=["c=1", "c=2"]),
    ])
    x = np.array([[50, 3, 0, 1, 0], [60, 7, 1, 0, 1]], dtype=np.float32)
    sc = MinMaxScaler.from_schema(s, x)
    assert sc.low.tolist() == [0, 3, 0, 0, 0] and sc.high.tolist() == [100, 7, 1, 1, 1]
    with pytest.raises(ValueError, match="'free' has no bounds"):
        MinMaxScaler.from_schema(s)


def test_the_fraud_sample_data_matches_its_script_and_schema() -> None:
    spec = importlib.util.spec_from_file_location("make_fraud_data", REPO_ROOT / "sample_models" / "make_fraud_data.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_fraud_data"] = module
    spec.loader.exec_module(module)
    df = module.make()
    assert (FRAUD / "fraud.csv").read_text() == df.to_csv(index=False), "re-run make_fraud_data.py"
    schema = load_schema(FRAUD / "fraud.yaml")
    assert schema == module.SCHEMA and schema.validate_against(df) is None
    assert 9 <= (df.is_fraud == 0).sum() / df.is_fraud.sum() <= 11  # 10:1
    assert not schema.feature("age").mutable and not schema.feature("account_age_days").mutable
    data = read_table(FRAUD / "fraud.csv", "is_fraud", schema.columns())
    assert data.x.shape == (4000, 13)
