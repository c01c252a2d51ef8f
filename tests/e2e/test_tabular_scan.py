"""Tabular models end to end (issue 17): a CSV with its feature schema, scaled to [0, 1], and
every counted break checked against the schema's constraints.

A small MLP is trained here on sample_models/data/fraud.csv (a second) and scanned with PGD
and APGD at L2 0.5 and Linf 0.1 in scaled units: every break the report counts must be a real
record (no constraint broken, immutable features unchanged). An attack that claims to search
inside the constraints and does not is caught: its candidates are not counted and RA019 names
it. A value outside the schema's bounds, a missing label and an inferred schema are checked too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from torch import nn

import robaudit
from robaudit.attacks.base import Attack, AttackOutput
from robaudit.classifier import Classifier
from robaudit.engine import EngineControl, PlannedAttack, run_plan
from robaudit.errors import DataError
from robaudit.findings import CATALOG
from robaudit.integrity.run_findings import preflight_findings
from robaudit.loading.tabular import read_tabular
from robaudit.tabular import load_schema
from robaudit.threat import Threat
from tests.helpers import fraud_mlp

ROOT = Path(__file__).resolve().parents[2]
CSV = ROOT / "sample_models" / "data" / "fraud.csv"
SCHEMA = ROOT / "sample_models" / "data" / "fraud.yaml"

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """A 13-feature MLP trains in a second on one thread, far slower on a busy shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def fraud_model(one_thread: None) -> nn.Module:
    """An MLP on the scaled features (what the audited model takes)."""
    _, x, y = read_tabular(str(CSV), "is_fraud", str(SCHEMA))
    return fraud_mlp(torch.from_numpy(x), torch.from_numpy(y))


def _config(schema: object = None, **data: object) -> dict[str, object]:
    attacks = [
        {"name": name, "norm": norm, "eps": [eps], "steps": steps}
        for name, steps in (("pgd", 10), ("apgd", 20))
        for norm, eps in (("l2", 0.5), ("linf", 0.1))
    ]
    section: dict[str, object] = {"source": str(CSV), "label": "is_fraud", **data}
    if schema is not None:
        section["schema"] = schema
    return {"model": {}, "data": section, "attacks": attacks,
            "gate": {"fail_on_findings": "none"}}  # fmt: skip


def test_every_counted_break_is_a_real_record(
    fraud_model: nn.Module, tmp_path: Path, validate_report: Any
) -> None:
    report = robaudit.scan(
        fraud_model, config=_config(str(SCHEMA)), samples=120, seed=0, save_adversarial=True
    )
    assert report.result.model.input_shape == [13]
    rows = report.result.attacks
    assert {(a.attack, a.norm) for a in rows if a.attacked} == {
        (n, m) for n in ("pgd", "apgd") for m in ("l2", "linf")
    }
    # PGD and APGD search inside the constraints: nothing they return breaks one
    assert all(a.constraint_violations == 0 for a in rows)
    assert "RA019" not in {f.id for f in report.findings}

    ex = report.adversarial
    assert ex is not None
    broken = ex.broken.astype(bool)
    assert broken.sum() > 0, "L2 0.5 and Linf 0.1 break some samples of this small MLP"
    xa, xc = torch.from_numpy(ex.x_adv[broken]), torch.from_numpy(ex.x_clean[broken])
    info, _, _ = read_tabular(str(CSV), "is_fraud", str(SCHEMA))
    assert info.constraints.violations(xa, xc) == [[] for _ in range(len(xa))]
    immutable = [info.columns.index(c) for c in ("age", "account_age_days")]
    assert torch.equal(xa[:, immutable], xc[:, immutable])
    assert not torch.equal(xa, xc)
    with torch.no_grad():  # each counted break is misclassified by the model itself
        assert bool((fraud_model(xa).argmax(1) != torch.from_numpy(ex.y[broken])).all())

    written = report.save(tmp_path)
    doc = json.loads(Path(written["json"]).read_text())
    validate_report(doc)
    assert all(a["constraint_violations"] == 0 for a in doc["attacks"])
    assert doc["config"]["data"]["schema"] == str(SCHEMA)
    assert not (tmp_path / "schema.inferred.yaml").exists()


class Unconstrained(Attack):
    """Claims to search inside the constraints, but moves an immutable feature (age)."""

    name = "unconstrained"
    summary = "test double"
    paper = "-"
    norms = ("linf",)
    constrained = True

    def run(self, clf, x, y, threat, generator):  # type: ignore[no-untyped-def]
        out = x.clone()
        step = torch.where(x[:, 0] < 0.5, threat.eps, -threat.eps)
        out[:, 0] = x[:, 0] + step  # age: immutable in the schema
        return AttackOutput(x_adv=out)


def test_attack_breaking_the_constraints_is_caught() -> None:
    info, x, _ = read_tabular(str(CSV), "is_fraud", str(SCHEMA))
    age = nn.Linear(13, 2)  # a model that decides on age alone: moving it fools the model
    with torch.no_grad():
        age.weight.zero_()
        age.bias.zero_()
        age.weight[1, 0] = 100.0
    xs = torch.from_numpy(x[:64])
    cut = float(xs[:, 0].median())
    with torch.no_grad():
        age.bias[1] = -100.0 * (cut + 0.01)
        ys = age(xs).argmax(1)
    clf = Classifier(age.eval(), num_classes=2)
    ctl = EngineControl(constraints=info.constraints)
    plan = [PlannedAttack(0, Unconstrained(), Threat("linf", 0.1))]
    res = run_plan(clf, xs, ys, plan, seed=0, batch_size=16, ctl=ctl)
    cell = res.cells[0]
    moved = Unconstrained().run(clf, xs, ys, Threat("linf", 0.1), torch.Generator()).x_adv
    with torch.no_grad():
        would_fool = int((age(moved).argmax(1) != ys).sum())
    assert would_fool > 0, "the candidates do fool the model"
    assert cell.broken.sum() == 0  # ... but none is a real record
    assert cell.constraint_violations == int(cell.attacked.sum())
    assert "immutable:age" in cell.broken_constraints
    found = [f for f in preflight_findings(res, _fitted()) if f.id == "RA019"]
    assert len(found) == 1 and "unconstrained" in found[0].detail
    assert "immutable:age" in found[0].detail and not found[0].resolved
    assert CATALOG["RA019"].title.startswith("Attack returned candidates that break")
    # without a schema nothing is checked, and the same candidates count
    plain = run_plan(clf, xs, ys, plan, seed=0, batch_size=16).cells[0]
    assert int(plain.broken.sum()) == would_fool and plain.constraint_violations is None


def _fitted() -> robaudit.Config:
    from robaudit.config import config_from_dict

    model = {"input_shape": [13], "num_classes": 2}
    return config_from_dict({"model": model, "attacks": [{"name": "pgd", "eps": [0.1]}]})


def test_value_outside_the_schema_is_one_line_naming_feature_and_row(
    fraud_model: nn.Module, tmp_path: Path
) -> None:
    frame = pd.read_csv(CSV)
    frame.loc[3, "age"] = 150
    bad = tmp_path / "bad.csv"
    frame.to_csv(bad, index=False)
    cfg = _config(str(SCHEMA))
    cfg["data"]["source"] = str(bad)  # type: ignore[index]
    with pytest.raises(DataError) as err:
        robaudit.scan(fraud_model, config=cfg, samples=8)
    msg = str(err.value)
    assert "\n" not in msg and str(bad) in msg and "'age'" in msg and "row 3" in msg


def test_missing_label_names_the_file_and_the_columns(fraud_model: nn.Module) -> None:
    cfg = _config(str(SCHEMA))
    del cfg["data"]["label"]  # type: ignore[attr-defined]
    with pytest.raises(DataError) as err:
        robaudit.scan(fraud_model, config=cfg, samples=8)
    msg = str(err.value)
    assert "\n" not in msg and str(CSV) in msg and "data.label" in msg and "is_fraud" in msg


def test_without_a_schema_one_is_inferred_and_written(
    fraud_model: nn.Module, tmp_path: Path
) -> None:
    cfg = _config()
    cfg["attacks"] = [{"name": "pgd", "norm": "l2", "eps": [0.5], "steps": 5}]
    report = robaudit.scan(fraud_model, config=cfg, samples=40, seed=0)
    inferred = report.result.meta.inferred
    assert inferred is not None and inferred["data.schema"]["value"] == "schema.inferred.yaml"
    assert "data.schema" not in report.result.config["data"]
    written = report.save(tmp_path)
    path = tmp_path / "schema.inferred.yaml"
    assert written["schema.inferred.yaml"] == path
    schema = load_schema(path)
    assert schema.columns() == load_schema(SCHEMA).columns()  # channel=... is one group
    assert "Inferred by robaudit" in path.read_text()
    md = (tmp_path / "summary.md").read_text()
    assert "schema.inferred.yaml" in md


def test_schema_keys_need_a_table(fraud_model: nn.Module) -> None:
    cfg = {"model": {"input_shape": [13]}, "data": {"label": "y"},
           "attacks": [{"name": "pgd", "eps": [0.1]}]}  # fmt: skip
    x, y = torch.rand(8, 13), torch.zeros(8, dtype=torch.long)
    with pytest.raises(DataError, match=r"data\.label apply to a CSV or Parquet source"):
        robaudit.scan(fraud_model, (x, y), config=cfg)
