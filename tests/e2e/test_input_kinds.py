"""Models whose input is not an image: a 30-feature MLP and a 1x4000 Conv1d, scanned end to end.

Every shape-free attack runs at Linf and L2; every break the scan counts is checked again here
against the model, the ball and the bounds, and the report (JSON, HTML) is written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer
from torch import nn

import robaudit

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::FutureWarning")]

SHAPE_FREE = ["noise", "fgsm", "pgd", "apgd", "apgd-t", "deepfool", "fab", "fab-t",
              "hopskipjump", "simba", "transfer", "cw"]
FAST = {
    "pgd": {"steps": 10}, "apgd": {"steps": 20}, "apgd-t": {"steps": 20, "targets": 1},
    "fab": {"steps": 20}, "fab-t": {"steps": 20, "targets": 1}, "cw": {"steps": 30},
    "hopskipjump": {"queries": 300}, "simba": {"queries": 300},
}


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> nn.Module:
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


def _tabular() -> tuple[nn.Module, nn.Module, np.ndarray, np.ndarray]:
    """Breast cancer (30 features), min-max scaled onto [0, 1]."""
    d = load_breast_cancer()
    x = d.data.astype(np.float32)
    x = (x - x.min(0)) / (x.max(0) - x.min(0))
    xt, yt = torch.from_numpy(x), torch.from_numpy(d.target)

    def net(width: int) -> nn.Module:
        torch.manual_seed(width)
        return nn.Sequential(nn.Linear(30, width), nn.ReLU(), nn.Linear(width, 2))

    return _train(net(32), xt, yt, 150), _train(net(16), xt, yt, 100), x, d.target


def _waveform() -> tuple[nn.Module, nn.Module, np.ndarray, np.ndarray]:
    """Two tones (440 vs 660 Hz at 8 kHz) in noise, 1 x 4000 samples in [-1, 1]."""
    g = torch.Generator().manual_seed(0)
    n, t = 120, 4000
    y = torch.randint(0, 2, (n,), generator=g)
    time = torch.arange(t) / 8000.0
    freq = torch.where(y == 1, 440.0, 660.0)[:, None]
    phase = torch.rand(n, 1, generator=g) * 6.28
    x = 0.3 * torch.sin(2 * torch.pi * freq * time + phase) + 0.05 * torch.randn(n, t, generator=g)
    x = x.clamp(-1, 1)[:, None, :]

    def net(ch: int) -> nn.Module:
        torch.manual_seed(ch)
        return nn.Sequential(
            nn.Conv1d(1, ch, 64, stride=16), nn.ReLU(), nn.AdaptiveAvgPool1d(8), nn.Flatten(),
            nn.Linear(8 * ch, 2),
        )

    return _train(net(4), x, y, 60), _train(net(3), x, y, 40), x.numpy(), y.numpy()


CASES: dict[str, dict[str, Any]] = {
    "vector": {"make": _tabular, "shape": None, "bounds": [0.0, 1.0],
               "eps": {"linf": 0.1, "l2": 0.5}},
    "sequence": {"make": _waveform, "shape": [1, 4000], "bounds": [-1.0, 1.0],
                 "eps": {"linf": 0.3, "l2": 12.0}},
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_scan_of_non_image_model_verifies_every_break(kind: str, tmp_path: Path) -> None:
    case = CASES[kind]
    model, surrogate, x, y = case["make"]()
    sur_path = tmp_path / "surrogate.pt"
    torch.jit.trace(surrogate, torch.from_numpy(x[:2])).save(str(sur_path))
    attacks = []
    for name in SHAPE_FREE:
        for norm in ("linf", "l2"):
            if name == "cw" and norm == "linf":
                continue
            entry = {"name": name, "norm": norm, "eps": [case["eps"][norm]], **FAST.get(name, {})}
            if name == "transfer":
                entry["surrogate"] = str(sur_path)
            attacks.append(entry)
    model_section: dict[str, Any] = {"bounds": case["bounds"]}
    if case["shape"] is not None:
        model_section["input_shape"] = case["shape"]
    cfg = {"model": model_section, "attacks": attacks, "gate": {"fail_on_findings": "none"}}
    report = robaudit.scan(model, (x, y), config=cfg, samples=16, seed=0, save_adversarial=True)

    expected_shape = list(x.shape[1:])
    assert report.result.model.input_shape == expected_shape
    ran = {(a.attack, a.norm) for a in report.result.attacks if a.attacked > 0}
    assert ran == {(e["name"], e["norm"]) for e in attacks}
    assert not report.result.skipped

    ex = report.adversarial
    assert ex is not None
    broken = ex.broken.astype(bool)
    assert broken.sum() > 0, "the budgets are chosen so that some attacks break some samples"
    lo, hi = case["bounds"]
    xa = torch.from_numpy(ex.x_adv[broken])
    xc = torch.from_numpy(ex.x_clean[broken])
    assert list(xa.shape[1:]) == expected_shape
    assert float(xa.min()) >= lo and float(xa.max()) <= hi
    with torch.no_grad():
        pred = model(xa).argmax(1).numpy()
    assert (pred != ex.y[broken]).all(), "a counted break is classified correctly"
    d = (xa - xc).flatten(1)
    for i, (norm, eps) in enumerate(zip(ex.norm[broken], ex.eps[broken], strict=True)):
        size = float(d[i].abs().max()) if norm == "linf" else float(d[i].norm())
        assert size <= float(eps) * (1 + 1e-5) + 1e-6, (norm, eps, size)
    # the scan's break counts are exactly the exported breaks
    assert ex.counts() == {
        (a.attack, a.threat_key): a.broken for a in report.result.attacks if a.broken
    }

    paths = report.save(tmp_path / "out")
    doc = json.loads(Path(paths["json"]).read_text())
    shown = doc["examples"]
    assert shown and all(e["clean_png"] is None and e["changes"] for e in shown)
    assert "Largest changes" in Path(paths["html"]).read_text()


def test_certification_of_a_tabular_model(tmp_path: Path) -> None:
    """Randomized smoothing on a 30-feature vector: the certificate never claims more than the
    smoothed model's own accuracy and falls with the radius."""
    model, _, x, y = _tabular()
    cfg = {
        "model": {"bounds": [0.0, 1.0]},
        "attacks": [{"name": "pgd", "norm": "l2", "eps": [0.5], "steps": 5}],
        "certify": {"sigma": 0.25, "n0": 50, "n": 300, "radii": [0, 0.25, 0.5],
                    "attack_steps": 5, "attack_draws": 8, "attack_n": 100},
        "gate": {"fail_on_findings": "none"},
        "integrity": {"sanity": False},
    }
    report = robaudit.scan(model, (x, y), config=cfg, samples=24, seed=0)
    c = report.result.certification
    assert c is not None
    accs = [p["accuracy"] for p in c["curve"]]
    assert accs == sorted(accs, reverse=True) and accs[0] > 0.5


def test_harden_a_tabular_model(tmp_path: Path) -> None:
    """PGD adversarial training of the 30-feature MLP: trains, saves and audits both models."""
    from robaudit.harden.api import harden_model
    from robaudit.harden.options import HardenOptions

    model, _, x, y = _tabular()
    data = tmp_path / "cancer.npz"
    np.savez(data, x=x, y=y)
    cfg = {
        "model": {"bounds": [0.0, 1.0]},
        "data": {"source": str(data), "samples": 60},
        "attacks": [{"name": "pgd", "norm": "linf", "eps": [0.1], "steps": 10}],
        "gate": {"fail_on_findings": "none"},
        "integrity": {"sanity": False},
    }
    out = harden_model(
        model, config=cfg, out=tmp_path / "hardened", train_data=str(data), seed=0,
        options=HardenOptions(method="pgd-at", epochs=3, eps=0.1, steps=5, batch_size=64),
    )
    assert out.original is not None and out.hardened is not None
    assert out.hardened.result.model.input_shape == [30]
    assert (tmp_path / "hardened" / "model.pt").exists()
    assert out.robust_gain("linf", 0.1) > 0  # trained against this threat: it must help
