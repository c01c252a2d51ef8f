"""Randomized-smoothing certification of the plain digits sample model, end to end.

sigma 0.25, the first 100 test digits, n0 = 100, n = 1000, alpha = 0.001, seed 0 (~7 s of
CERTIFY on one thread). With n = 1000 no radius can exceed 0.25·Φ⁻¹(0.001^(1/1000)) ≈ 0.615,
so the curve is zero from 0.75 on by construction.

The Monte-Carlo property test attacks every certified sample with PGD-L2 on the soft smoothed
classifier (SmoothAdv-style gradients through :class:`SmoothedModule`), each inside 0.9 × its
own certified radius, then judges the attack point with PREDICT (n = 1000, fresh seed). A
*flip* is PREDICT returning a class other than the certified one; an abstention is not a flip
(near the edge of the ball p_A may be just above 1/2). A flip needs a wrong certificate or a
wrong PREDICT, each of probability at most alpha, so at most 2·alpha·95 ≈ 0.2 flips are
expected; the test allows 1. The certificate also bounds the top class's probability at
distance d: p_A(x') ≥ Φ(Φ⁻¹(p_lower) − d/σ) (Cohen et al., Theorem 1 proof); its estimate at
the attack point must not fall significantly below that (one-sided Clopper–Pearson at
1 − alpha, again ≤ 1 violation). To show the attack is not vacuous: it lowers the top class's
share a lot at 0.9 × radius, and at 2 × radius it flips most samples (73 of 95 measured).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import norm

from robaudit.certify import (
    ABSTAIN,
    Certificate,
    SmoothedModule,
    SmoothingParams,
    certify,
    clopper_pearson_upper,
    noise_counts,
    robust_under_attack,
    smoothed_predict,
)
from robaudit.classifier import Classifier
from robaudit.loading.data import digits_arrays
from robaudit.loading.model import load_model

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SIGMA = 0.25
PARAMS = SmoothingParams(sigma=SIGMA, n0=100, n=1000, alpha=0.001, batch_size=1000)
RADII = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0]


@pytest.fixture(scope="module")
def clf() -> Classifier:
    model = load_model(ROOT / "sample_models" / "digits_cnn.pt").module
    return Classifier(model, num_classes=10, batch_size=1000)


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = digits_arrays("test")
    return torch.from_numpy(x[:100]), torch.from_numpy(y[:100])


@pytest.fixture(scope="module")
def cert(clf: Classifier, data: tuple[torch.Tensor, torch.Tensor]) -> Certificate:
    x, y = data
    return certify(clf, x, y, PARAMS, torch.Generator().manual_seed(0))


def _pgd_l2(
    module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: torch.Tensor, steps: int
) -> torch.Tensor:
    """Plain PGD-L2 from the clean point, per-sample eps, normalized gradient, Madry's step."""
    e = eps.float().view(-1, 1, 1, 1)
    step = 2.5 * e / steps
    xa = x.clone()
    for _ in range(steps):
        xa.requires_grad_(True)
        loss = F.nll_loss(module(xa), y, reduction="sum")
        (g,) = torch.autograd.grad(loss, xa)
        g = g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        d = xa.detach() + step * g - x
        d = d * (e / d.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)).clamp(max=1)
        xa = (x + d).clamp(0.0, 1.0)
    return xa.detach()


def test_curve_abstentions_and_accuracy_at_zero(
    clf: Classifier, cert: Certificate, data: tuple[torch.Tensor, torch.Tensor]
) -> None:
    _, y = data
    assert cert.samples == 100 and cert.draws == 100 * 1100
    # The Monte-Carlo smoothed classifier's clean accuracy is that of the class the n0
    # selection draws pick (``top``); certified accuracy at radius 0 drops exactly the
    # samples among those that CERTIFY then abstained on.
    smoothed_clean = float((cert.top == y).float().mean())
    abstained_right = int((cert.abstained & (cert.top == y)).sum())
    assert cert.certified_accuracy(0.0) == pytest.approx(smoothed_clean - abstained_right / 100)
    assert cert.certified_accuracy(0.0) == int(cert.correct.sum()) / 100
    assert 0.9 <= cert.certified_accuracy(0.0) <= smoothed_clean  # measured 0.95 of 0.99
    assert 0 < cert.abstentions <= 10  # measured 5
    accs = [a for _, a in cert.curve(RADII)]
    assert all(a >= b for a, b in itertools.pairwise(accs))
    assert accs[0] > accs[3] > accs[5] > 0  # really decreasing: 0.95, 0.62, 0.23 measured
    assert accs[-2] == accs[-1] == 0.0  # beyond the n = 1000 ceiling of ~0.615
    assert float(cert.radius.nan_to_num(0).max()) <= SIGMA * norm.ppf(0.001 ** (1 / 1000))
    # PREDICT (a different test on the same smoothed classifier) agrees where both answer
    pred = smoothed_predict(clf, data[0][:40], PARAMS, torch.Generator().manual_seed(9))
    both = (pred != ABSTAIN) & ~cert.abstained[:40]
    assert int(both.sum()) >= 35
    assert int((pred[both] != cert.pred[:40][both]).sum()) <= 1


def test_reproducible_with_the_same_seed(
    clf: Classifier, data: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = data
    p = PARAMS.model_copy(update={"n": 300})  # the property does not depend on n; time does
    again = certify(clf, x[:20], y[:20], p, torch.Generator().manual_seed(0))
    twice = certify(clf, x[:20], y[:20], p, torch.Generator().manual_seed(0))
    assert torch.equal(again.pred, twice.pred)
    assert torch.equal(again.count, twice.count)
    assert torch.equal(again.radius.nan_to_num(-1), twice.radius.nan_to_num(-1))
    other = certify(clf, x[:20], y[:20], p, torch.Generator().manual_seed(1))
    assert not torch.equal(again.count, other.count)


def test_pgd_inside_the_certified_radius_does_not_flip_predict(
    clf: Classifier, data: tuple[torch.Tensor, torch.Tensor], cert: Certificate
) -> None:
    x, _ = data
    idx = (cert.correct & (cert.radius > 0)).nonzero().squeeze(1)
    assert idx.numel() >= 80
    torch.manual_seed(0)
    soft = SmoothedModule(clf.model, sigma=SIGMA, draws=32, seed=1)
    x0, top, radius = x[idx], cert.top[idx], cert.radius[idx]
    xa = _pgd_l2(soft, x0, top, 0.9 * radius, steps=20)
    dist = (xa - x0).flatten(1).norm(dim=1).double()
    assert bool((dist <= 0.9 * radius + 1e-5).all())

    # a flip: PREDICT at the attack point says a class other than the certified (right) one
    sub = cert.select(idx)
    robust = robust_under_attack(clf, sub, xa, PARAMS, torch.Generator().manual_seed(5))
    flips = int((~robust).sum())
    assert flips <= 1  # expected <= 2 * alpha * len(idx) ~ 0.2; measured 0

    # the certificate's bound on p_A at distance d holds at the attack points
    counts = noise_counts(clf, xa, PARAMS.n, PARAMS, torch.Generator().manual_seed(6))
    share = counts.gather(1, top[:, None].to(counts.device)).squeeze(1).cpu().numpy()
    bound = norm.cdf(norm.ppf(cert.p_lower[idx].numpy()) - dist.numpy() / SIGMA)
    upper = clopper_pearson_upper(share, PARAMS.n, PARAMS.alpha)
    assert int((upper < bound).sum()) <= 1
    # ...and the attack did real work: the top class lost much of its share (0.91 -> 0.73)
    before = float(cert.count[idx].double().mean()) / PARAMS.n
    assert float(np.mean(share)) / PARAMS.n < before - 0.1


def test_pgd_well_beyond_the_radius_does_flip(
    clf: Classifier, data: tuple[torch.Tensor, torch.Tensor], cert: Certificate
) -> None:
    """Control: the same attack at 2 × the radius flips most samples, so the radius is not
    loose by a large factor and the attack above was capable of flipping."""
    x, _ = data
    idx = (cert.correct & (cert.radius > 0)).nonzero().squeeze(1)[:30]
    soft = SmoothedModule(clf.model, sigma=SIGMA, draws=32, seed=2)
    xa = _pgd_l2(soft, x[idx], cert.top[idx], 2.0 * cert.radius[idx], steps=20)
    pred = smoothed_predict(clf, xa, PARAMS, torch.Generator().manual_seed(7))
    flips = int(((pred != cert.top[idx]) & (pred != ABSTAIN)).sum())
    assert flips >= 15  # 73 of 95 measured on all certified samples
