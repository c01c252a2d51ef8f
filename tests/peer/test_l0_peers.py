"""robaudit's L0 battery against foolbox's L0 attacks on both sample models, at equal budgets.

Foolbox's minimal-L0 attacks (PointwiseAttack, decision-based; L0FMNAttack, white-box; and
L0BrendelBethgeAttack where numba is installed) answer with one point per sample; their robust
accuracy at each pixel budget is read off after checking each point ourselves: inside the box,
misclassified by a fresh forward pass, and at most eps pixels changed (foolbox counts single
numbers, the same as pixels on these one-channel digits). robaudit's L0 battery (PGD-L0,
σ-zero, Sparse-RS; worst case per sample, smaller budgets included) must be within one point
of the strongest peer or lower at every budget. Numbers and timings print with ``pytest -s``.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from robaudit.attacks.base import get_attack
from robaudit.classifier import Classifier
from robaudit.engine import PlannedAttack, run_plan
from robaudit.loading.model import load_model
from robaudit.norms import get
from robaudit.threat import Threat
from tests.helpers import one_thread

pytestmark = pytest.mark.peer

ROOT = Path(__file__).resolve().parents[2]
N = 100
EPS = (1, 2, 3, 5)
BATTERY = (("pgd-l0", "white-box", {}), ("sigma-zero", "white-box", {"steps": 200}),
           ("sparse-rs", "score", {"queries": 1000}))  # fmt: skip


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    yield from one_thread()


def _peers() -> dict[str, object]:
    fb = pytest.importorskip("foolbox")
    out: dict[str, object] = {
        "PointwiseAttack": fb.attacks.PointwiseAttack(),
        "L0FMNAttack": fb.attacks.L0FMNAttack(steps=100),
    }
    if importlib.util.find_spec("numba") is not None:  # foolbox's BB needs numba
        out["L0BrendelBethgeAttack"] = fb.attacks.L0BrendelBethgeAttack(steps=100)
    return out


def _peer_robust(model: nn.Module, x: torch.Tensor, y: torch.Tensor, ok: torch.Tensor,
                 attack: object) -> list[int]:  # fmt: skip
    """Robust samples per budget from a peer's points, each checked here."""
    import foolbox as fb

    torch.manual_seed(0)
    raw, _, _ = attack(fb.PyTorchModel(model, bounds=(0, 1)), x, y, epsilons=None)  # type: ignore[operator]
    xa = raw.float()
    inside = ((xa >= 0) & (xa <= 1)).flatten(1).all(dim=1)
    with torch.no_grad():
        fooled = (model(xa).argmax(dim=1) != y) & inside
    size = get("l0").measure(xa - x)
    return [int((ok & ~(fooled & (size <= e))).sum()) for e in EPS]


def _robaudit_robust(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[int]:
    plan = [
        PlannedAttack(
            i, get_attack(name)(get_attack(name).Params(**params)), Threat("l0", e, access)
        )
        for i, (name, access, params) in enumerate(BATTERY)
        for e in EPS
    ]
    res = run_plan(Classifier(model, num_classes=10), x, y, plan, seed=0, batch_size=len(x),
                   cascade=True)  # fmt: skip
    assert all(c.budget_violations == 0 and c.bounds_violations == 0 for c in res.cells)
    broken, out = torch.zeros_like(res.correct), []
    for e in EPS:
        for c in res.cells:
            if c.threat.eps == e:
                broken |= c.broken
        out.append(int((res.correct & ~broken).sum()))
    return out


@pytest.mark.parametrize("model_name", ["digits_cnn.pt", "digits_cnn_robust.pt"])
def test_l0_battery_at_least_as_strong_as_foolbox(
    model_name: str, digits_test: tuple[torch.Tensor, torch.Tensor]
) -> None:
    model = load_model(ROOT / "sample_models" / model_name).module.eval()
    x, y = digits_test[0][:N], digits_test[1][:N]
    with torch.no_grad():
        ok = model(x).argmax(dim=1) == y
    t0 = time.perf_counter()
    ours = _robaudit_robust(model, x, y)
    print(f"\n{model_name} robaudit L0 battery robust at {EPS} px: {ours} "
          f"({time.perf_counter() - t0:.1f} s)")  # fmt: skip
    best = [N] * len(EPS)
    for name, attack in _peers().items():
        t0 = time.perf_counter()
        peer = _peer_robust(model, x, y, ok, attack)
        print(f"{model_name} foolbox {name} robust: {peer} ({time.perf_counter() - t0:.1f} s)")
        best = [min(a, b) for a, b in zip(best, peer, strict=True)]
    for e, mine, theirs in zip(EPS, ours, best, strict=True):
        assert mine <= theirs + 0.01 * N, f"eps {e}: robaudit {mine} vs peer {theirs}"
