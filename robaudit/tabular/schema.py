"""The feature schema of a tabular model: what each column is and what an attacker may change.

A tabular input is not an image: a column can be an integer count, a 0/1 flag, one column of a
one-hot group, or a fact the attacker cannot touch (age, account age); and columns are tied to
each other (``open_accounts <= total_accounts``, linear budgets). A break that ignores any of
this describes a customer who cannot exist, so TabularBench (Simonetto et al. 2024) counts a
break only when every constraint holds. This module is the schema as a config (or a YAML file
it names) spells it; :mod:`robaudit.tabular.constraints` enforces it on tensors.

YAML form::

    features:
      - {name: age, type: integer, bounds: [18, 90], mutable: false}
      - {name: amount, type: continuous, bounds: [0.5, 5000]}
      - {name: is_foreign, type: binary}
      - {name: channel, type: categorical, columns: [channel=web, channel=app, channel=pos]}
    relations:
      - open_accounts <= total_accounts          # or {smaller: ..., larger: ...}
    linear:
      - {name: fee_cap, terms: {fee: 1, amount: -0.05}, op: "<=", constant: 0}

Bounds are in the data's own (raw) units; a feature without bounds takes the scaler's range
(:class:`robaudit.tabular.data.MinMaxScaler`). Binary and categorical columns are 0/1.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from robaudit.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

FeatureType = Literal["continuous", "integer", "binary", "categorical"]
FEATURE_TYPES: tuple[FeatureType, ...] = ("continuous", "integer", "binary", "categorical")
LinearOp = Literal["<=", ">=", "=="]

# Every check allows 1e-5 of a feature's span (its scaled unit): float32 model inputs hold
# about 7 digits, so a value that round-trips raw -> scaled -> raw lands within this of where
# it was; anything further off is a real violation, not rounding.
TOL = 1e-5


def span_of(low: float, high: float) -> float:
    """A feature's range for scaling and tolerances; 1 for a constant feature (no division by
    zero, and its tolerance stays absolute)."""
    span = high - low
    return span if span > 0 else 1.0


class Feature(BaseModel):
    """One feature: a column, or for ``categorical`` a one-hot group of columns."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    type: FeatureType = "continuous"
    bounds: tuple[float, float] | None = None
    mutable: bool = True
    columns: list[str] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Feature:
        if self.type == "categorical":
            if not self.columns or len(self.columns) < 2:
                raise ValueError(f"categorical {self.name!r} needs 'columns': two or more names")
            if len(set(self.columns)) != len(self.columns):
                raise ValueError(f"categorical {self.name!r} lists a column twice")
            if self.bounds is not None:
                raise ValueError(f"categorical {self.name!r}: its columns are 0/1, drop 'bounds'")
        elif self.columns is not None:
            raise ValueError(f"{self.name!r}: only a categorical feature has 'columns'")
        if self.bounds is not None:
            low, high = self.bounds
            if not (math.isfinite(low) and math.isfinite(high)) or low > high:
                raise ValueError(f"{self.name!r}: bounds must be finite [low, high], low <= high")
            if self.type == "binary" and (low, high) != (0.0, 1.0):
                raise ValueError(f"binary {self.name!r}: bounds are [0, 1] or left out")
        return self

    def column_names(self) -> list[str]:
        """The columns this feature occupies, in order."""
        return list(self.columns) if self.columns else [self.name]


class Relation(BaseModel):
    """``smaller <= larger`` between two non-categorical features, in raw units."""

    model_config = ConfigDict(extra="forbid")

    smaller: str = Field(min_length=1)
    larger: str = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        """``"a <= b"`` or ``"b >= a"``: how a person writes it in YAML."""
        if not isinstance(value, str):
            return value
        m = re.fullmatch(r"\s*(\S+)\s*(<=|>=)\s*(\S+)\s*", value)
        if not m:
            raise ValueError(f"a relation is 'a <= b' or 'a >= b', got {value!r}")
        a, op, b = m.groups()
        return {"smaller": a, "larger": b} if op == "<=" else {"smaller": b, "larger": a}

    @property
    def label(self) -> str:
        return f"{self.smaller}<={self.larger}"


class LinearConstraint(BaseModel):
    """``sum(coef * feature) op constant`` over non-categorical features, in raw units."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    terms: dict[str, float] = Field(min_length=1)
    op: LinearOp = "<="
    constant: float = 0.0

    @model_validator(mode="after")
    def _finite(self) -> LinearConstraint:
        values = [*self.terms.values(), self.constant]
        if not all(math.isfinite(v) for v in values):
            raise ValueError("linear constraint: coefficients and constant must be finite")
        if all(v == 0 for v in self.terms.values()):
            raise ValueError("linear constraint: at least one coefficient must be non-zero")
        return self

    @property
    def label(self) -> str:
        """The name, or the constraint written out (``1*fee-0.05*amount<=0``)."""
        if self.name:
            return self.name
        body = "".join(f"{c:+g}*{f}" for f, c in self.terms.items()).lstrip("+")
        return f"{body}{self.op}{self.constant:g}"


class TabularSchema(BaseModel):
    """Every feature of the model's input in column order, and the constraints between them."""

    model_config = ConfigDict(extra="forbid")

    features: list[Feature] = Field(min_length=1)
    relations: list[Relation] = Field(default_factory=list)
    linear: list[LinearConstraint] = Field(default_factory=list)

    @model_validator(mode="after")
    def _references(self) -> TabularSchema:
        """Names are unique and constraints name plain features: a constraint on a one-hot
        group has no single value to compare."""
        names = [f.name for f in self.features]
        _no_duplicates(names, "feature")
        _no_duplicates([c for f in self.features for c in f.column_names()], "column")
        plain = {f.name for f in self.features if f.type != "categorical"}
        for r in self.relations:
            for side in (r.smaller, r.larger):
                _known(side, plain, names, f"relation {r.label}")
            if r.smaller == r.larger:
                raise ValueError(f"relation {r.label}: both sides are the same feature")
        for lc in self.linear:
            for feat in lc.terms:
                _known(feat, plain, names, f"linear constraint {lc.label}")
        return self

    def columns(self) -> list[str]:
        """The input's columns in order: the model sees them this way."""
        return [c for f in self.features for c in f.column_names()]

    def feature(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)

    def validate_against(
        self, data: pd.DataFrame | np.ndarray, columns: Sequence[str] | None = None
    ) -> str | None:
        """The first way ``data`` breaks this schema as one line, or None when it fits.

        A DataFrame names its own columns; for an array ``columns`` names them (default: the
        schema's order). Values are raw; see :mod:`robaudit.tabular.validation`.

        Clean data must satisfy every constraint: repair falls back to the clean point, and a
        clean row that is already invalid would make that fallback invalid too.
        """
        from robaudit.tabular.validation import first_problem

        return first_problem(self, data, columns)

    def to_yaml(self, header: str = "") -> str:
        """This schema as YAML with comments a person can edit (see :func:`schema_yaml`)."""
        from robaudit.tabular.writing import schema_yaml

        return schema_yaml(self, header)


def _no_duplicates(names: list[str], what: str) -> None:
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise ValueError(f"{what} {n!r} appears twice")
        seen.add(n)


def _known(name: str, plain: set[str], names: list[str], where: str) -> None:
    if name in plain:
        return
    if name in names:
        raise ValueError(f"{where}: {name!r} is categorical; constraints take plain features")
    raise ValueError(f"{where}: no feature {name!r}")


def schema_from_dict(data: Any, source: str = "<schema>") -> TabularSchema:
    """A schema from parsed YAML; ConfigError with one line (path, problem) otherwise."""
    from robaudit.config.messages import format_errors  # deferred: config imports this module

    if not isinstance(data, dict):
        got = type(data).__name__
        raise ConfigError(f"{source}: a schema is a mapping with 'features', got {got}")
    try:
        return TabularSchema.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_errors(source, exc, (), TabularSchema)) from None


def load_schema(path: str | Path) -> TabularSchema:
    """Read a schema YAML file (a config's ``schema: path.yaml``); ConfigError on any problem."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the schema ({exc.strerror or exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{p}: not valid YAML{where}") from None
    return schema_from_dict(data, str(p))


def infer_schema(df: pd.DataFrame, label: str | None = None) -> TabularSchema:
    """A schema inferred from data, for a person to check (see :mod:`.inference`)."""
    from robaudit.tabular.inference import infer

    return infer(df, label)


__all__ = [
    "FEATURE_TYPES",
    "TOL",
    "Feature",
    "FeatureType",
    "LinearConstraint",
    "Relation",
    "TabularSchema",
    "infer_schema",
    "load_schema",
    "schema_from_dict",
    "span_of",
]
