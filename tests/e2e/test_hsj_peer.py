"""HopSkipJump and SimBA against peer implementations at equal counted queries.

On the committed plain digits model, each peer runs first; a wrapper module counts the rows
its model sees, and ours then gets the same number of queries per sample (the peer's mean).
HopSkipJump's median L2 distance must be within 20% of the peer's or lower; SimBA must fool
at least as many digits as ART's SimBA within ART's query count, and clearly more than random
noise given the same number of queries. The figures are printed (``pytest -s``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from robaudit.attacks.hopskipjump import HopSkipJump, HopSkipJumpParams
from robaudit.attacks.noise import Noise, NoiseParams
from robaudit.attacks.projections import flat_norm
from robaudit.attacks.simba import SimBA, SimBAParams
from robaudit.classifier import Classifier
from robaudit.loading.data import digits_arrays
from robaudit.loading.model import load_model
from robaudit.threat import Threat
from tests.helpers import one_thread

pytestmark = pytest.mark.peer

ROOT = Path(__file__).resolve().parents[2]
N = 100
UNBOUNDED = Threat("l2", float("inf"), label="inf")


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    yield from one_thread()


class Counting(nn.Module):
    """Counts the rows the model sees (float32 in, whatever dtype the peer passes)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.rows = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += int(x.shape[0])
        return self.inner(x.float())


class Softmax(nn.Module):
    """ART's SimBA asks for probabilities."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x).softmax(dim=1)


def _predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x.float()).argmax(dim=1)


@pytest.fixture(scope="module")
def digits() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The plain sample model and the first N test digits it classifies correctly."""
    model = load_model(ROOT / "sample_models" / "digits_cnn.pt").module.eval()
    x, y = digits_arrays("test")
    x_t, y_t = torch.from_numpy(x[: 2 * N].copy()), torch.from_numpy(y[: 2 * N].copy())
    ok = _predict(model, x_t) == y_t
    return model, x_t[ok][:N], y_t[ok][:N]


def _distances(model: nn.Module, x: torch.Tensor, y: torch.Tensor, xa: torch.Tensor) -> torch.Tensor:
    """L2 norm of each verified adversarial; inf where the point is not misclassified."""
    size = flat_norm(xa.float() - x, "l2")
    return torch.where(_predict(model, xa) != y, size, torch.full_like(size, float("inf")))


def _ours_hsj(model: nn.Module, x: torch.Tensor, y: torch.Tensor, queries: int) -> torch.Tensor:
    counting = Counting(model)
    clf = Classifier(counting, num_classes=10).restricted("decision")
    t0 = time.perf_counter()
    out = HopSkipJump(HopSkipJumpParams(queries=queries)).run(
        clf, x, y, UNBOUNDED, torch.Generator().manual_seed(0)
    )
    assert out.queries is not None and int(out.queries.sum()) == counting.rows
    d = _distances(model, x, y, out.x_adv)
    print(f"  ours: {queries} queries/sample, median L2 {float(d.median()):.4f}, "
          f"{time.perf_counter() - t0:.1f}s")
    return d


def _compare(ours: torch.Tensor, peer: torch.Tensor, name: str) -> None:
    mo, mp = float(ours.median()), float(peer.median())
    print(f"  median L2 ours {mo:.4f} vs {name} {mp:.4f} (ratio {mo / mp:.3f})")
    assert mo <= 1.2 * mp, f"HopSkipJump median {mo:.4f} is over 20% above {name}'s {mp:.4f}"


def test_hsj_l2_vs_foolbox(digits: tuple) -> None:
    fb = pytest.importorskip("foolbox")
    model, x, y = digits
    counting = Counting(model).eval()
    torch.manual_seed(0)
    t0 = time.perf_counter()
    _, xa, _ = fb.attacks.HopSkipJumpAttack(steps=5)(
        fb.PyTorchModel(counting, bounds=(0, 1)), x, y, epsilons=None
    )
    q = counting.rows // len(x)
    peer = _distances(model, x, y, xa)
    print(f"\nfoolbox HSJ (5 steps): {q} queries/sample, median L2 {float(peer.median()):.4f}, "
          f"{time.perf_counter() - t0:.1f}s")
    _compare(_ours_hsj(model, x, y, q), peer, "foolbox")


def test_hsj_l2_vs_art(digits: tuple) -> None:
    pytest.importorskip("art")
    from art.attacks.evasion import HopSkipJump as ArtHSJ
    from art.estimators.classification import PyTorchClassifier

    model, x, y = digits
    x, y = x[:50], y[:50]  # ART attacks one sample at a time: slower
    counting = Counting(model).eval()
    est = PyTorchClassifier(model=counting, loss=nn.CrossEntropyLoss(), input_shape=(1, 8, 8),
                            nb_classes=10, clip_values=(0.0, 1.0))
    attack = ArtHSJ(est, targeted=False, norm=2, max_iter=4, max_eval=10_000, init_eval=100,
                    init_size=100, verbose=False)
    np.random.seed(0)
    t0 = time.perf_counter()
    xa = torch.from_numpy(attack.generate(x.numpy(), y=y.numpy()))
    q = counting.rows // len(x)
    peer = _distances(model, x, y, xa)
    print(f"\nART HSJ (4 iterations): {q} queries/sample, median L2 {float(peer.median()):.4f}, "
          f"{time.perf_counter() - t0:.1f}s")
    _compare(_ours_hsj(model, x, y, q), peer, "ART")


def _ours_simba(model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: Threat,
                params: SimBAParams) -> tuple[float, int]:
    """Share of verified breaks and the total queries spent."""
    counting = Counting(model)
    clf = Classifier(counting, num_classes=10).restricted("score")
    out = SimBA(params).run(clf, x, y, threat, torch.Generator().manual_seed(0))
    assert out.queries is not None and int(out.queries.sum()) == counting.rows
    assert float(flat_norm(out.x_adv - x, threat.norm).max()) <= threat.eps + 1e-6
    return float((_predict(model, out.x_adv) != y).float().mean()), counting.rows


def test_simba_vs_art(digits: tuple) -> None:
    pytest.importorskip("art")
    from art.attacks.evasion import SimBA as ArtSimBA
    from art.estimators.classification import PyTorchClassifier

    model, x, y = digits
    x, y = x[:30], y[:30]  # ART's SimBA runs one sample at a time, in numpy: slow
    counting = Counting(model).eval()
    est = PyTorchClassifier(model=Softmax(counting), loss=nn.CrossEntropyLoss(),
                            input_shape=(1, 8, 8), nb_classes=10, clip_values=(0.0, 1.0))
    # ART's SimBA is unbounded L2 with step 0.2 and a 4x4 low-frequency block: ours alike
    attack = ArtSimBA(est, attack="dct", max_iter=100, epsilon=0.2, freq_dim=4, stride=1,
                      verbose=False)
    np.random.seed(0)
    t0 = time.perf_counter()
    xa = torch.from_numpy(attack.generate(x.numpy(), y=np.eye(10)[y.numpy()])).float()
    q = counting.rows // len(x)
    peer = float((_predict(model, xa) != y).float().mean())
    print(f"\nART SimBA-DCT: {q} queries/sample, fooled {peer:.2f}, "
          f"{time.perf_counter() - t0:.1f}s")
    ours, spent = _ours_simba(model, x, y, UNBOUNDED,
                              SimBAParams(basis="dct", step=0.2, freq_dims=4, queries=q))
    print(f"  ours: {q} queries/sample budget ({spent / len(x):.0f} spent), fooled {ours:.2f}")
    assert ours >= peer


@pytest.mark.parametrize(("norm", "eps", "basis"), [("l2", 1.0, "dct"), ("linf", 0.1, "pixel")])
def test_simba_beats_noise(norm: str, eps: float, basis: str, digits: tuple) -> None:
    model, x, y = digits
    x, y = x[:50], y[:50]
    threat = Threat(norm, eps)
    budget = 1000
    clf = Classifier(model, num_classes=10).restricted("decision")
    noise_out = Noise(NoiseParams(draws=budget)).run(clf, x, y, threat,
                                                    torch.Generator().manual_seed(0))
    noise = float((_predict(model, noise_out.x_adv) != y).float().mean())
    ours, _ = _ours_simba(model, x, y, threat, SimBAParams(basis=basis, queries=budget))
    print(f"\n{norm} eps={eps}, {budget} queries: SimBA-{basis} fooled {ours:.2f}, "
          f"noise {noise:.2f}")
    assert ours >= noise + 0.25
