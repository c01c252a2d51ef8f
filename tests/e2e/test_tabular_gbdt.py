"""Gradient-boosted trees through ONNX (issue 17): a scikit-learn GradientBoostingClassifier
trained here on sample_models/data/fraud.csv, exported with skl2onnx (``label`` and
``probabilities`` outputs) and audited by ``robaudit scan model.onnx`` at score access with
the gradient-free constrained search, only true frauds attacked.

Every counted break is checked again by scikit-learn itself (the tree ensemble the ONNX file
was converted from) and against every constraint; white-box attacks are skipped by the access
rules; the search breaks at least as many frauds as random draws of the same query budget.
(HistGradientBoostingClassifier does not convert with skl2onnx 1.20 on numpy 2: the converter
passes numpy booleans where ONNX wants ints.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from robaudit.loading.onnx import load_onnx
from robaudit.loading.tabular import read_tabular

pytest.importorskip("onnxruntime")
skl2onnx = pytest.importorskip("skl2onnx")

ROOT = Path(__file__).resolve().parents[2]
CSV = ROOT / "sample_models" / "data" / "fraud.csv"
SCHEMA = ROOT / "sample_models" / "data" / "fraud.yaml"
QUERIES = 150

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


@pytest.fixture(scope="module")
def gbdt(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """30 depth-3 trees on 3,000 rows (well under a second), fraud weighted 4:1."""
    from sklearn.ensemble import GradientBoostingClassifier

    _, x, y = read_tabular(str(CSV), "is_fraud", str(SCHEMA))
    model = GradientBoostingClassifier(n_estimators=30, max_depth=3, random_state=0)
    model.fit(x[:3000], y[:3000], sample_weight=np.where(y[:3000] == 1, 4.0, 1.0))
    onx = skl2onnx.to_onnx(
        model, x[:1].astype(np.float32), options={id(model): {"zipmap": False}}, target_opset=17
    )
    path = tmp_path_factory.mktemp("gbdt") / "gbdt.onnx"
    path.write_bytes(onx.SerializeToString())
    return model, path


def test_loader_takes_the_probabilities_as_logits(gbdt: tuple[Any, Path]) -> None:
    model, path = gbdt
    _, x, _ = read_tabular(str(CSV), "is_fraud", str(SCHEMA))
    module = load_onnx(path)
    logits = module(torch.from_numpy(x[3000:3400]))
    assert logits.shape == (400, 2)
    expected = model.predict_proba(x[3000:3400])
    np.testing.assert_allclose(logits.softmax(1).numpy(), expected, atol=1e-5)


def test_scan_gbdt_onnx_at_score_access(gbdt: tuple[Any, Path], tmp_path: Path, cli: Any) -> None:
    model, path = gbdt
    budgets = [("l2", 0.5), ("linf", 0.1)]
    attacks: list[dict[str, Any]] = [
        {"name": "constrained-search", "norm": n, "eps": [e], "access": "score",
         "queries": QUERIES} for n, e in budgets
    ]  # fmt: skip
    attacks += [{"name": "noise", "norm": n, "eps": [e], "access": "score", "draws": QUERIES}
                for n, e in budgets]  # fmt: skip
    attacks.append({"name": "pgd", "norm": "l2", "eps": [0.5], "steps": 10})  # white-box
    cfg = {
        "model": {},
        "data": {"source": str(CSV), "label": "is_fraud", "schema": str(SCHEMA),
                 "attack_only_class": 1},
        "attacks": attacks,
        "gate": {"fail_on_findings": "none"},
    }  # fmt: skip
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    res = cli("scan", path, "--config", tmp_path / "cfg.yaml", "--out", out, "--samples", "400",
              "--save-adversarial")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    doc = json.loads((out / "report.json").read_text())
    assert doc["model"]["format"] == "onnx"
    assert [s["attack"] for s in doc["skipped"]] == ["pgd"]  # no gradients through onnxruntime
    rows = {(a["attack"], a["norm"]): a for a in doc["attacks"]}
    for norm, _ in budgets:
        search, noise = rows[("constrained-search", norm)], rows[("noise", norm)]
        assert search["attacked"] > 0 and search["constraint_violations"] == 0
        assert search["broken"] >= noise["broken"]  # at least random draws of the same budget
        assert search["queries"] <= QUERIES * search["attacked"]
    assert rows[("constrained-search", "l2")]["broken"] > 0
    pc = doc["positive_class"]
    assert pc["attacked_only"] and set(pc["threats"]) == {"score/l2/0.5", "score/linf/0.1"}

    saved = np.load(next(out.glob("adversarial*.npz")))
    broken = saved["broken"].astype(bool)
    assert broken.any()
    xa, xc, y = saved["x_adv"][broken], saved["x_clean"][broken], saved["y"][broken]
    assert (y == 1).all()  # only frauds were attacked
    # the tree ensemble itself lets every counted fraud pass; and each is a real record
    assert (model.predict(xa) != y).all()
    info, _, _ = read_tabular(str(CSV), "is_fraud", str(SCHEMA))
    found = info.constraints.violations(torch.from_numpy(xa), torch.from_numpy(xc))
    assert found == [[] for _ in range(len(xa))]
