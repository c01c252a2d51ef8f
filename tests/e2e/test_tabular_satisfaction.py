"""The constraint-satisfaction rate of the attacks' candidates (issue 17), on the committed fraud
MLP and its held-out transactions (sample_models/fraud_mlp.pt, sample_models/data/fraud_test.csv).

For each attack row of a tabular run the report gives the share of the attack's own candidates
(projected into the ball and the box, before the engine repairs them) that break no feature
constraint, and how many the engine repaired. Attacks that search inside the constraints must
reach 100% with nothing repaired. For the plain-ball attacks (noise, SimBA) the share is
recounted here: the attack is run again on the cell's batch with the engine's seed, its
candidates projected like the engine does, and each judged by the numpy oracle of
tests/tabular_cases.py (independent of robaudit.tabular). The rows survive a stop mid-cell and
``--resume`` unchanged. An attack that claims to search inside the constraints and does not is
caught by tests/e2e/test_tabular_scan.py::test_attack_breaking_the_constraints_is_caught.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch import nn

import robaudit
from robaudit.attacks.base import get_attack
from robaudit.classifier import Classifier
from robaudit.control import RunControl
from robaudit.loading.tabular import read_tabular
from robaudit.norms import get as get_norm
from robaudit.outcomes import attack_access, attack_view, cell_seed
from robaudit.threat import Threat
from tests.helpers import one_thread, without_timing
from tests.tabular_cases import oracle
from tests.unit.test_resilience import StopAfterBatches

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "sample_models" / "fraud_mlp.pt"
CSV = ROOT / "sample_models" / "data" / "fraud_test.csv"
SCHEMA = ROOT / "sample_models" / "data" / "fraud.yaml"
ATTACKS: list[dict[str, Any]] = [
    {"name": "noise", "norm": "l2", "eps": [0.5]},
    {"name": "simba", "norm": "l2", "eps": [0.5], "queries": 200},
    {"name": "pgd", "norm": "linf", "eps": [0.1], "steps": 10},
    {"name": "apgd", "norm": "l2", "eps": [0.5], "steps": 10},
    {"name": "constrained-search", "norm": "l2", "eps": [0.5], "queries": 100},
]
PLAIN = ("noise", "simba")  # search the plain ball; the engine repairs their candidates

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    yield from one_thread()


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return torch.jit.load(str(MODEL)).eval()


def _config(batch_size: int) -> dict[str, Any]:
    data = {"source": str(CSV), "label": "is_fraud", "schema": str(SCHEMA),
            "attack_only_class": 1, "batch_size": batch_size}  # fmt: skip
    return {"model": {}, "data": data, "attacks": ATTACKS, "gate": {"fail_on_findings": "none"}}


def _recount(model: nn.Module, index: int, targets: torch.Tensor) -> int:
    """The attack of config entry ``index`` run again on the cell's one batch with the engine's
    seed; how many of its candidates, projected into the ball and the box as the engine does,
    the oracle finds breaking no constraint."""
    info, x, y = read_tabular(str(CSV), "is_fraud", str(SCHEMA))
    entry = ATTACKS[index]
    threat = Threat(entry["norm"], entry["eps"][0])
    cls = get_attack(entry["name"])
    attack = cls(cls.Params(**{k: v for k, v in entry.items() if k not in ("name", "norm", "eps")}))
    idx = targets.nonzero().flatten()
    xb, yb = torch.from_numpy(x)[idx], torch.from_numpy(y)[idx]
    seed = cell_seed(0, index, attack.name, threat.key, int(idx[0]))
    torch.manual_seed(seed)
    view = attack_view(Classifier(model, num_classes=2), attack_access(attack, threat))
    xa = attack.run(view, xb, yb, threat, torch.Generator().manual_seed(seed)).x_adv
    assert bool(torch.isfinite(xa).all())
    xa = get_norm(threat.norm).clip(xa, xb, threat.eps, (0.0, 1.0))
    raw, clean = info.scaler.unscale(xa.double()).numpy(), info.scaler.unscale(xb.double()).numpy()
    return sum(not oracle(info.schema, raw[j : j + 1], clean[j : j + 1]) for j in range(len(idx)))


def test_satisfaction_rate_is_a_recount(
    model: nn.Module, validate_report: Any, tmp_path: Path
) -> None:
    report = robaudit.scan(model, config=_config(2000), seed=0)  # one batch per cell
    r = report.result
    _, _, labels = read_tabular(str(CSV), "is_fraud", str(SCHEMA))
    y = torch.from_numpy(labels)
    targets = torch.tensor([s["correct"] for s in r.samples]) & (y == 1)
    rows = {a.attack: a for a in r.attacks}
    assert set(rows) == {e["name"] for e in ATTACKS}
    for name, a in rows.items():
        assert a.attacked == int(targets.sum()) > 0 and a.constraint_violations == 0
        if name in PLAIN:
            feasible = _recount(model, a.attack_index, targets)
            assert a.constraint_satisfaction == pytest.approx(feasible / a.attacked, abs=1e-12)
            assert a.repaired == a.attacked - feasible, name
        else:  # searching inside the constraints: every candidate already a real record
            assert (a.constraint_satisfaction, a.repaired) == (1.0, 0), name
    assert rows["noise"].constraint_satisfaction < 1, "noise moves the immutable features"

    written = report.save(tmp_path, ["json", "md", "html"])
    doc = json.loads(Path(written["json"]).read_text())
    validate_report(doc)
    assert [(a["constraint_satisfaction"], a["repaired"]) for a in doc["attacks"]] == [
        (a.constraint_satisfaction, a.repaired) for a in r.attacks
    ]
    md = Path(written["md"]).read_text()
    assert "**Constraint satisfaction of the attacks' candidates**" in md
    noise = rows["noise"]
    line = next(ln for ln in md.splitlines() if ln.startswith("| noise |"))
    assert f"| {100 * noise.constraint_satisfaction:.1f}% | {noise.repaired} | 0 |" in line
    html = Path(written["html"]).read_text()
    assert '<section id="constraint-satisfaction">' in html


def test_rates_survive_a_stop_mid_cell_and_resume(
    model: nn.Module, tmp_path: Path, validate_report: Any
) -> None:
    """A partial cell's counts and its breaks' candidates (feature_changes) are saved with it and
    added to what --resume runs."""
    cfg = _config(8)
    full = robaudit.scan(model, config=cfg, seed=0)
    state = tmp_path / ".robaudit"
    control = RunControl()
    part = robaudit.scan(
        model, config=cfg, seed=0, checkpoint_dir=state, control=control,
        progress=StopAfterBatches(control, cell=5, after=2),  # SimBA, the last cell
    )  # fmt: skip
    inc = part.incomplete
    assert inc is not None and inc.unrun[0]["attack"] == "simba"
    stopped = next(a for a in part.result.attacks if a.attack == "simba")
    whole = next(a for a in full.result.attacks if a.attack == "simba")
    assert 0 < stopped.attacked < whole.attacked
    assert stopped.repaired is not None and whole.repaired is not None
    assert 0 < stopped.repaired < whole.repaired  # the saved share holds the finished batches
    shutil.copytree(state, tmp_path / "old")
    resumed = robaudit.scan(model, config=cfg, seed=0, checkpoint_dir=state, resume=True)
    assert resumed.incomplete is None
    # feature_changes included: the breaks' candidates are saved with the cells, so the cells
    # loaded whole and the partial SimBA cell's finished batches are counted too
    fc = resumed.result.feature_changes
    assert fc is not None and "not_tallied" not in fc
    assert fc["breaks"] == sum(a.broken for a in full.result.attacks) > 0
    assert without_timing(resumed.to_dict()) == without_timing(full.to_dict())

    # saved cells without their candidates (written before they were kept): those cells'
    # breaks are listed as not tallied, never silently left out of the counts
    for f in (tmp_path / "old" / "cells").glob("*.pt"):
        saved = torch.load(f, weights_only=True)
        if saved["cell"]["cell"]["attack"] in ("pgd", "simba"):  # simba: the partial cell
            del saved["cell"]["cell"]["candidates"]
            torch.save(saved, f)
    old = robaudit.scan(model, config=cfg, seed=0, checkpoint_dir=tmp_path / "old", resume=True)
    fc, rows = old.result.feature_changes, {a.attack: a for a in full.result.attacks}
    assert fc is not None
    missing = {c["attack"]: c["breaks"] for c in fc["not_tallied"]}
    assert missing == {"pgd": rows["pgd"].broken, "simba": rows["simba"].broken}
    assert fc["breaks"] + sum(missing.values()) == sum(a.broken for a in full.result.attacks)
    assert "white-box/linf/0.1" not in fc["by_threat"]  # pgd's, its only cell
    got, want = (without_timing(r.to_dict()) for r in (old, full))
    assert isinstance(got, dict) and isinstance(want, dict)
    got.pop("feature_changes"), want.pop("feature_changes")
    assert got == want  # nothing else depends on the candidates
    written = old.save(tmp_path / "report", ["json", "html"])
    validate_report(json.loads(Path(written["json"]).read_text()))
    html = Path(written["html"]).read_text()
    alert = html[html.index('id="feature-changes-incomplete"') : html.index('id="gallery"')]
    assert f"{sum(missing.values())} break(s) are not tallied" in alert and "simba at" in alert


@pytest.mark.slow
def test_two_process_scan_equals_one_process(tmp_path: Path) -> None:
    """``torchrun --nproc-per-node 2`` (Gloo on CPU): the batches are dealt over the ranks and
    merged per cell, feature_changes included (a minimal-norm attack read off at two budgets
    too); the report equals a single process's, timings aside."""
    cfg = {**_config(8), "seed": 0, "engine": {"device": "cpu"}}
    cfg["attacks"] = [*ATTACKS, {"name": "deepfool", "norm": "l2", "eps": [0.25, 0.5]}]
    path = tmp_path / "fraud.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    scan = ["-m", "robaudit", "scan", str(MODEL), "-c", str(path), "--quiet", "--out"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_COLOR": "1"}
    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    docs = []
    for name, launch in (("one", []), ("two", torchrun)):
        out = tmp_path / name
        proc = subprocess.run(
            [sys.executable, *launch, *scan, str(out)],
            env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert proc.returncode in (0, 1), proc.stderr[-3000:]
        docs.append(json.loads((out / "report.json").read_text(encoding="utf-8")))
    one, two = docs
    assert two["meta"]["execution"]["processes"] == 2
    fc = two["feature_changes"]
    assert fc["breaks"] == sum(a["broken"] for a in one["attacks"]) > 0
    assert "white-box/l2/0.25" in fc["by_threat"]  # deepfool's smaller budget
    assert without_timing(two) == without_timing(one)
