"""The autoattack battery: a cascade of APGD-CE, APGD-T, FAB-T and Square, worst case per
sample."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import robaudit
from robaudit.loading.data import digits_arrays
from robaudit.loading.model import load_model

ROOT = Path(__file__).resolve().parents[2]
N = 100


def _cfg(norm: str, eps: float) -> dict:
    return {
        "model": {"input_shape": [1, 8, 8], "num_classes": 10},
        "attacks": [{"battery": "autoattack", "norm": norm, "eps": [eps]}],
        "report": {"examples": 0},
        "integrity": {"enabled": False},
    }


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = digits_arrays("test")
    return torch.from_numpy(x[:N]), torch.from_numpy(y[:N])


def test_battery_cascades_with_all_four_members() -> None:
    x, y = _data()
    report = robaudit.scan(ROOT / "sample_models" / "digits_cnn_robust.pt", (x, y), config=_cfg("linf", 0.2))
    rows = {r["attack"]: r for r in report.to_dict()["attacks"]}
    assert set(rows) == {"apgd", "apgd-t", "fab-t", "square"}
    apgd, apgdt = rows["apgd"], rows["apgd-t"]
    assert apgdt["attacked"] == apgd["attacked"] - apgd["broken"]  # a cascade
    assert apgdt["robust_accuracy"] is None  # alone is undefined in a cascade
    standing = apgd["attacked"] - apgd["broken"] - apgdt["broken"]
    # the later members only see what APGD-CE and APGD-T left standing
    assert rows["fab-t"]["attacked"] + rows["square"]["attacked"] <= 2 * standing
    assert rows["square"]["access_used"] == "score" and rows["square"]["query_budget"] == 5000
    assert "RA014" not in {f.id for f in report.findings}
    pgd = robaudit.scan(
        ROOT / "sample_models" / "digits_cnn_robust.pt", (x, y),
        config={**_cfg("linf", 0.2), "attacks": [{"name": "pgd", "norm": "linf", "eps": [0.2], "steps": 100}]},
    )
    assert report.robust_accuracy("linf", 0.2) <= pgd.robust_accuracy("linf", 0.2)


@pytest.mark.peer
@pytest.mark.parametrize(
    ("model_name", "norm", "eps"),
    [("digits_cnn", "linf", 0.1), ("digits_cnn_robust", "linf", 0.2), ("digits_cnn_robust", "l2", 1.0)],
)
def test_battery_at_least_as_strong_as_torchattacks_autoattack(model_name: str, norm: str, eps: float) -> None:
    torchattacks = pytest.importorskip("torchattacks")
    x, y = _data()
    path = ROOT / "sample_models" / f"{model_name}.pt"
    ours = robaudit.scan(path, (x, y), config=_cfg(norm, eps)).robust_accuracy(norm, eps)
    model = load_model(path).module
    peer = torchattacks.AutoAttack(model, norm="Linf" if norm == "linf" else "L2", eps=eps,
                                   version="standard", n_classes=10, seed=0)
    x_adv = peer(x, y)
    with torch.no_grad():
        theirs = float((model(x_adv).argmax(1) == y).float().mean())
    assert ours <= theirs + 0.01, f"robaudit autoattack {ours:.3f} vs torchattacks AutoAttack {theirs:.3f}"
