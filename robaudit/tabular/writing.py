"""A schema written as YAML with comments, for a person to review and edit.

An inferred schema is a draft: the bounds are only what the data showed, and nothing says
which features an attacker cannot change or how they are related. The comments say what each
field means and where the judgement calls are, so the file is useful without the docs open.
Plain text is written by hand (PyYAML drops comments); every value goes through JSON, which
YAML reads back unchanged, and the result loads with :func:`~robaudit.tabular.schema.load_schema`.
"""

from __future__ import annotations

import json

from robaudit.tabular.schema import Feature, LinearConstraint, TabularSchema

_HEAD = """\
# Feature schema for a tabular robustness audit (robaudit, issue 17).
# Check every entry: an attack may only produce rows this schema allows.
#   type:    continuous | integer | binary | categorical (a one-hot group of 'columns')
#   bounds:  [low, high] in the data's own units; inferred bounds are the observed min/max,
#            widen them to the range a real record may take
#   mutable: false for facts the attacker cannot change (age, account age, history)
"""

_RELATIONS = """\
# relations: 'a <= b' between two features, e.g.
#   - open_accounts <= total_accounts
"""

_LINEAR = """\
# linear: sum(coef * feature) <=, >= or == constant, in the data's units, e.g.
#   - {name: fee_cap, terms: {fee: 1, amount: -0.05}, op: "<=", constant: 0}
"""


def schema_yaml(schema: TabularSchema, header: str = "") -> str:
    """The YAML text; ``header`` (e.g. where the schema was inferred from) goes first."""
    lines = [f"# {h}" for h in header.splitlines()] if header else []
    lines += [_HEAD.rstrip("\n"), "features:"]
    lines += [_feature(f) for f in schema.features]
    lines.append(_RELATIONS.rstrip("\n"))
    if schema.relations:
        lines.append("relations:")
        lines += [f"  - {_q(f'{r.smaller} <= {r.larger}')}" for r in schema.relations]
    else:
        lines.append("relations: []")
    lines.append(_LINEAR.rstrip("\n"))
    if schema.linear:
        lines.append("linear:")
        lines += [_linear(lc) for lc in schema.linear]
    else:
        lines.append("linear: []")
    return "\n".join(lines) + "\n"


def _feature(f: Feature) -> str:
    parts = [f"name: {_q(f.name)}", f"type: {f.type}"]
    if f.columns:
        parts.append(f"columns: [{', '.join(_q(c) for c in f.columns)}]")
    if f.bounds is not None:
        parts.append(f"bounds: [{_n(f.bounds[0], f.type)}, {_n(f.bounds[1], f.type)}]")
    parts.append(f"mutable: {'true' if f.mutable else 'false'}")
    return "  - {" + ", ".join(parts) + "}"


def _linear(lc: LinearConstraint) -> str:
    terms = ", ".join(f"{_q(k)}: {_n(v)}" for k, v in lc.terms.items())
    name = f"name: {_q(lc.name)}, " if lc.name else ""
    return f"  - {{{name}terms: {{{terms}}}, op: {_q(lc.op)}, constant: {_n(lc.constant)}}}"


def _q(text: str) -> str:
    return json.dumps(text)


def _n(x: float, kind: str = "continuous") -> str:
    """A number as YAML reads it back exactly: integers without '.0', floats by repr."""
    if kind == "integer" or float(x).is_integer():
        return str(int(x))
    return repr(float(x))
