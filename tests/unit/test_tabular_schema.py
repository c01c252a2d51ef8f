"""The tabular feature schema: its YAML form and one-line errors, checking data against it
(the first problem, naming feature and row), inferring it from data, and writing it back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from robaudit.errors import ConfigError, DataError
from robaudit.tabular.schema import (
    Feature,
    LinearConstraint,
    Relation,
    TabularSchema,
    infer_schema,
    load_schema,
    schema_from_dict,
)

DOC = """
features:
  - {name: age, type: integer, bounds: [18, 90], mutable: false}
  - {name: amount, type: continuous, bounds: [0.5, 5000]}
  - {name: open_accounts, type: integer, bounds: [0, 12]}
  - {name: total_accounts, type: integer, bounds: [1, 12]}
  - {name: is_foreign, type: binary}
  - {name: channel, type: categorical, columns: [channel=web, channel=app, channel=pos]}
relations:
  - open_accounts <= total_accounts
linear:
  - {name: cap, terms: {amount: 1, age: -100}, op: "<=", constant: 0}
"""
COLUMNS = ["age", "amount", "open_accounts", "total_accounts", "is_foreign",
           "channel=web", "channel=app", "channel=pos"]


def schema() -> TabularSchema:
    return schema_from_dict(yaml.safe_load(DOC), "s.yaml")


def frame() -> pd.DataFrame:
    return pd.DataFrame(
        [[30, 120.5, 2, 3, 0, 1, 0, 0], [45, 99.0, 0, 1, 1, 0, 0, 1], [18, 1800.0, 4, 4, 0, 0, 1, 0]],
        columns=COLUMNS,
    )


def test_the_yaml_form_loads_with_columns_in_order() -> None:
    s = schema()
    assert s.columns() == COLUMNS
    assert s.feature("age").mutable is False and s.feature("amount").mutable is True
    assert s.relations == [Relation(smaller="open_accounts", larger="total_accounts")]
    assert s.relations[0].label == "open_accounts<=total_accounts"
    assert s.linear[0].label == "cap"


@pytest.mark.parametrize("text", ["a <= b", " a<=b ", "b >= a", {"smaller": "a", "larger": "b"}])
def test_a_relation_is_written_either_way(text: object) -> None:
    assert Relation.model_validate(text) == Relation(smaller="a", larger="b")


def test_an_unnamed_linear_constraint_is_labelled_by_its_formula() -> None:
    lc = LinearConstraint(terms={"fee": 1, "amount": -0.05}, op="<=", constant=0)
    assert lc.label == "1*fee-0.05*amount<=0"


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ({"features": [{"name": "a", "typ": "integer"}]}, "features[0].typ: unknown key, did you mean 'type'"),
        ({"features": [{"name": "c", "type": "categorical"}]}, "needs 'columns'"),
        ({"features": [{"name": "c", "type": "categorical", "columns": ["x"]}]}, "two or more"),
        ({"features": [{"name": "a", "columns": ["x", "y"]}]}, "only a categorical"),
        ({"features": [{"name": "a", "bounds": [3, 1]}]}, "low <= high"),
        ({"features": [{"name": "a", "bounds": [0, float("inf")]}]}, "finite"),
        ({"features": [{"name": "b", "type": "binary", "bounds": [0, 2]}]}, "[0, 1]"),
        ({"features": [{"name": "a"}, {"name": "a"}]}, "feature 'a' appears twice"),
        ({"features": [{"name": "a"}, {"name": "c", "type": "categorical", "columns": ["a", "b"]}]},
         "column 'a' appears twice"),
        ({"features": [{"name": "a"}], "relations": ["a <= z"]}, "no feature 'z'"),
        ({"features": [{"name": "a"}], "relations": ["a <= a"]}, "same feature"),
        ({"features": [{"name": "a"}], "relations": ["a < b"]}, "'a <= b'"),
        ({"features": [{"name": "a"}, {"name": "c", "type": "categorical", "columns": ["x", "y"]}],
          "linear": [{"terms": {"c": 1}, "op": "<="}]}, "'c' is categorical"),
        ({"features": [{"name": "a"}], "linear": [{"terms": {"a": 0}}]}, "non-zero"),
        ({"features": []}, "features"),
        (["a"], "a schema is a mapping"),
    ],
)
def test_a_bad_schema_is_one_line_naming_the_problem(doc: object, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        schema_from_dict(doc, "s.yaml")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("s.yaml")
    assert needle in msg, msg


def test_load_schema_reads_a_file_and_refuses_bad_yaml(tmp_path: Path) -> None:
    good = tmp_path / "s.yaml"
    good.write_text(DOC)
    assert load_schema(good) == schema()
    bad = tmp_path / "bad.yaml"
    bad.write_text("features: [\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_schema(bad)
    with pytest.raises(ConfigError, match="cannot read the schema"):
        load_schema(tmp_path / "missing.yaml")


def test_valid_data_fits_also_as_float32_arrays() -> None:
    s, df = schema(), frame()
    assert s.validate_against(df) is None
    assert s.validate_against(df.to_numpy(np.float32)) is None  # columns default to the schema's
    shuffled = df[COLUMNS[::-1]]
    assert s.validate_against(shuffled.to_numpy(), list(shuffled.columns)) is None


@pytest.mark.parametrize(
    ("column", "row", "value", "needle"),
    [
        ("age", 1, 17, "feature 'age': row 1 has 17, below its lower bound 18"),
        ("amount", 2, 6000.0, "feature 'amount': row 2 has 6000, above its upper bound 5000"),
        ("open_accounts", 0, 1.5, "integer feature 'open_accounts': row 0 has 1.5, not an integer"),
        ("is_foreign", 2, 0.5, "binary feature 'is_foreign': row 2 has 0.5, not 0 or 1"),
        ("channel=app", 0, 1, "categorical 'channel': row 0 has 2 hot columns, not exactly one"),
        ("channel=pos", 1, 0, "categorical 'channel': row 1 has 0 hot columns"),
        ("channel=web", 1, 0.3, "categorical 'channel': row 1 has 0.3 in 'channel=web', not 0 or 1"),
        ("open_accounts", 1, 3, "relation open_accounts<=total_accounts: row 1 has open_accounts=3 > total_accounts=1"),
        ("amount", 0, 4000.0, "linear constraint cap: row 0 gives 1000, needs <= 0"),
        ("amount", 1, float("nan"), "column 'amount': row 1 is nan"),
    ],
)
def test_the_first_problem_names_feature_and_row(column: str, row: int, value: float, needle: str) -> None:
    df = frame()
    df[column] = df[column].astype(float)
    df.loc[row, column] = value
    msg = schema().validate_against(df)
    assert msg is not None and "\n" not in msg
    assert needle in msg, msg


def test_missing_or_misshaped_data_is_named() -> None:
    s = schema()
    assert s.validate_against(frame().drop(columns="amount")) == "column 'amount' of the schema is not in the data"
    assert "expected N x 8 columns" in (s.validate_against(np.zeros((2, 3))) or "")
    text = frame().astype({"amount": object})
    text.loc[0, "amount"] = "lots"
    assert s.validate_against(text) == "column 'amount' is not numeric"


def test_bounds_allow_float32_rounding_but_not_more() -> None:
    s = TabularSchema(features=[Feature(name="a", bounds=(0.1, 0.3))])
    assert s.validate_against(np.array([[np.float32(0.1)], [np.float32(0.3)]])) is None
    assert s.validate_against(np.array([[0.1 - 1e-4]])) is not None


def test_infer_schema_reads_types_bounds_and_one_hot_groups() -> None:
    df = pd.DataFrame({
        "amount": [1.5, 20.0, 7.25, 3.0],
        "n": [0, 5, 2, 9],
        "flag": [0, 1, 1, 0],
        "color=red": [1, 0, 0, 0], "color=green": [0, 1, 0, 1], "color=blue": [0, 0, 1, 0],
        "pay_type_card": [1, 0, 1, 0], "pay_type_cash": [0, 1, 0, 1],
        "is_a": [1, 1, 0, 0], "is_b": [1, 0, 0, 1],  # both 0/1 but not one-hot: two binaries
        "ok": [True, False, True, True],
        "y": [0, 1, 0, 1],
    })
    s = infer_schema(df, "y")
    kinds = {f.name: (f.type, f.bounds) for f in s.features}
    assert kinds["amount"] == ("continuous", (1.5, 20.0))
    assert kinds["n"] == ("integer", (0.0, 9.0))
    assert kinds["flag"] == ("binary", None) and kinds["ok"] == ("binary", None)
    assert kinds["is_a"] == ("binary", None) and kinds["is_b"] == ("binary", None)
    assert s.feature("color").columns == ["color=red", "color=green", "color=blue"]
    assert s.feature("pay_type").columns == ["pay_type_card", "pay_type_cash"]
    assert "y" not in s.columns() and all(f.mutable for f in s.features)
    assert s.validate_against(df) is None


def test_infer_schema_refuses_text_nan_and_a_missing_label() -> None:
    with pytest.raises(DataError, match="label column 'y' is not in the data"):
        infer_schema(pd.DataFrame({"a": [1]}), "y")
    with pytest.raises(DataError, match="column 'c' is not numeric"):
        infer_schema(pd.DataFrame({"a": [1], "c": ["x"]}))
    with pytest.raises(DataError, match="column 'a': row 1 is nan"):
        infer_schema(pd.DataFrame({"a": [1.0, float("nan")]}))


def test_to_yaml_round_trips_with_comments(tmp_path: Path) -> None:
    s = schema()
    text = s.to_yaml("made for a test")
    assert text.startswith("# made for a test\n")
    assert "# relations: 'a <= b'" in text and "mutable: false" in text
    path = tmp_path / "s.yaml"
    path.write_text(text)
    assert load_schema(path) == s
    inferred = infer_schema(frame())
    assert schema_from_dict(yaml.safe_load(inferred.to_yaml())) == inferred
    assert "relations: []" in inferred.to_yaml()


def test_odd_names_and_numbers_survive_the_round_trip() -> None:
    s = TabularSchema(
        features=[Feature(name="a: b", bounds=(0.1, 1e-7 + 2)), Feature(name="#n", type="integer", bounds=(-3, 4))],
        linear=[LinearConstraint(terms={"a: b": 0.1, "#n": -2}, op=">=", constant=-1.5)],
    )
    assert schema_from_dict(yaml.safe_load(s.to_yaml())) == s
