"""Randomized smoothing (robaudit.certify) against cases whose answer is known exactly.

The main oracle is a linear binary classifier ``class 1 iff w·x + b > 0``: under Gaussian
noise ``P(class 1) = Φ((w·x + b) / (σ‖w‖))``, so the smoothed classifier is the same
half-space and the exact certified radius is the distance ``|w·x + b| / ‖w‖`` to it.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from scipy.stats import binomtest, norm
from torch import nn

from robaudit.certify import (
    ABSTAIN,
    Certificate,
    SmoothedModule,
    SmoothingParams,
    binomial_pvalue_half,
    certify,
    clopper_pearson_lower,
    clopper_pearson_upper,
    noise_counts,
    robust_under_attack,
    smoothed_classifier,
    smoothed_predict,
)
from robaudit.classifier import Classifier
from robaudit.errors import RuntimeFailure

D = 16  # inputs are N x 1 x 4 x 4


class Linear2(nn.Module):
    """Logits ``[0, w·x + b]``: class 1 exactly on the positive side of the hyperplane."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone(), requires_grad=False)
        self.b = b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1) @ self.w + self.b
        return torch.stack([torch.zeros_like(s), s], dim=1)


def _linear() -> tuple[Classifier, torch.Tensor, float]:
    w = torch.linspace(-1.0, 1.5, D)
    b = -0.2
    return Classifier(Linear2(w, b), num_classes=2, batch_size=100_000), w, b


def _at_distances(w: torch.Tensor, b: float, dist: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Points at signed distance ``dist`` from the hyperplane (positive: class 1)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(dist.shape[0], D, generator=g)
    u = w / w.norm()
    on_plane = base - ((base @ w + b) / w.norm())[:, None] * u  # projected onto the plane
    return (on_plane + dist[:, None] * u).view(-1, 1, 4, 4)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ params


def test_params_defaults_and_validation() -> None:
    p = SmoothingParams()
    assert (p.sigma, p.n0, p.n, p.alpha, p.batch_size) == (0.25, 100, 10_000, 0.001, 1000)
    assert p.radii == [0.0, 0.25, 0.5, 0.75, 1.0]
    for field_info in SmoothingParams.model_fields.values():
        assert field_info.description
    for bad in ({"sigma": 0}, {"n": 0}, {"alpha": 0.6}, {"radii": [-0.1]}, {"nope": 1}):
        with pytest.raises(ValidationError):
            SmoothingParams(**bad)
    with pytest.raises(ValidationError):
        p.sigma = 0.5  # type: ignore[misc]


# ------------------------------------------------------------------ statistics


@pytest.mark.parametrize("n", [1, 10, 100, 10_000])
@pytest.mark.parametrize("alpha", [0.001, 0.05])
def test_clopper_pearson_matches_scipy_exact_interval(n: int, alpha: float) -> None:
    ks = sorted({0, 1, n // 3, n // 2, n - 1, n})
    lo = clopper_pearson_lower(ks, n, alpha)
    hi = clopper_pearson_upper(ks, n, alpha)
    for k, lk, hk in zip(ks, lo, hi, strict=True):
        # a one-sided bound at 1 - alpha is one end of the two-sided interval at 1 - 2 alpha
        ci = binomtest(k, n).proportion_ci(confidence_level=1 - 2 * alpha, method="exact")
        assert lk == pytest.approx(ci.low, abs=1e-12)
        assert hk == pytest.approx(ci.high, abs=1e-12)
    assert clopper_pearson_lower([n], n, alpha)[0] == pytest.approx(alpha ** (1 / n))


def test_binomial_pvalue_matches_scipy() -> None:
    pairs = [(5, 5), (6, 4), (10, 0), (1, 0), (52, 48), (600, 400), (1000, 0), (7, 3)]
    ours = binomial_pvalue_half([a for a, _ in pairs], [b for _, b in pairs])
    for (a, b), p in zip(pairs, ours, strict=True):
        assert p == pytest.approx(binomtest(a, a + b, 0.5).pvalue, rel=1e-9, abs=1e-300)


# ------------------------------------------------------------------ sampling


def test_noise_counts_bookkeeping_across_mixed_batches() -> None:
    """Batches that split samples and hold several at once still count each draw once."""
    clf, w, b = _linear()
    dist = torch.tensor([3.0, -3.0, 2.0, -2.5, 4.0, -4.0])  # far: noise never flips them
    x = _at_distances(w, b, dist)
    p = SmoothingParams(sigma=0.01, batch_size=5)  # 7 draws per sample: batches straddle
    counts = noise_counts(clf, x, 7, p, _gen())
    assert counts.tolist() == [[0, 7], [7, 0], [0, 7], [7, 0], [0, 7], [7, 0]]
    assert clf.counters.queries == 6 * 7
    assert noise_counts(clf, x[:0], 7, p, _gen()).shape == (0, 2)


def test_empty_batches_and_wrong_logit_width() -> None:
    clf, _, _ = _linear()
    empty = certify(
        clf, torch.rand(0, 1, 4, 4), torch.zeros(0, dtype=torch.long), SmoothingParams(n=10), _gen()
    )
    assert empty.samples == 0 and empty.draws == 0 and math.isnan(empty.certified_accuracy(0))
    assert smoothed_predict(clf, torch.rand(0, 1, 4, 4), SmoothingParams(n=10), _gen()).shape == (
        0,
    )
    wide = Classifier(nn.Sequential(nn.Flatten(), nn.Linear(D, 5)), num_classes=2)
    with pytest.raises(RuntimeFailure, match="num_classes"):
        noise_counts(wide, torch.rand(3, 1, 4, 4), 10, SmoothingParams(), _gen())
    with pytest.raises(ValueError):
        certify(
            clf, torch.rand(3, 1, 4, 4), torch.zeros(2, dtype=torch.long), SmoothingParams(), _gen()
        )


def test_noise_counts_follow_the_gaussian_probability() -> None:
    clf, w, b = _linear()
    dist = torch.tensor([0.0, 0.1, -0.2, 0.4])
    sigma = 0.25
    counts = noise_counts(
        clf, _at_distances(w, b, dist), 20_000, SmoothingParams(sigma=sigma), _gen()
    )
    share = counts[:, 1].double() / 20_000
    expected = torch.from_numpy(norm.cdf(dist.numpy() / sigma))
    assert torch.allclose(share, expected, atol=0.015)


# ------------------------------------------------------------------ CERTIFY on the oracle


def test_certified_radius_never_exceeds_the_true_distance() -> None:
    clf, w, b = _linear()
    dist = torch.linspace(-1.0, 1.0, 200)
    x = _at_distances(w, b, dist)
    y = (dist > 0).long()
    p = SmoothingParams(sigma=0.25, n0=100, n=2000, batch_size=50_000)
    cert = certify(clf, x, y, p, _gen())
    ok = ~cert.abstained
    assert int(ok.sum()) > 150
    assert bool((cert.pred[ok] == y[ok]).all())  # the smoothed classifier is the half-space
    # each certificate is wrong with probability <= alpha = 0.001: 0.2 expected in 200
    too_big = cert.radius[ok] > dist.abs()[ok].double() + 1e-9
    assert int(too_big.sum()) <= 1
    assert torch.isnan(cert.radius[cert.abstained]).all()
    assert cert.draws == 200 * 2100 and clf.counters.queries == 200 * 2100


def test_certified_radius_is_tight_for_large_n() -> None:
    clf, w, b = _linear()
    dist = torch.tensor([0.05, 0.15, 0.3, 0.45, 0.6, -0.1, -0.3, -0.5])
    x = _at_distances(w, b, dist)
    y = (dist > 0).long()
    p = SmoothingParams(sigma=0.25, n0=100, n=200_000, batch_size=200_000)
    cert = certify(clf, x, y, p, _gen(1))
    assert not bool(cert.abstained.any())
    gap = dist.abs().double() - cert.radius
    assert bool((gap >= 0).all())
    assert float(gap.max()) < 0.02


def test_balanced_classes_abstain() -> None:
    """On the boundary p_A = 1/2 exactly: CERTIFY and PREDICT abstain (but w.p. alpha)."""
    clf, w, b = _linear()
    x = _at_distances(w, b, torch.zeros(30))
    p = SmoothingParams(sigma=0.25, n0=100, n=2000, batch_size=50_000)
    cert = certify(clf, x, torch.ones(30, dtype=torch.long), p, _gen())
    assert cert.abstentions == 30
    assert cert.certified_accuracy(0.0) == 0.0
    assert (smoothed_predict(clf, x, p, _gen()) == ABSTAIN).all()


def test_predict_returns_the_half_space_away_from_the_boundary() -> None:
    clf, w, b = _linear()
    dist = torch.tensor([0.3, -0.3, 0.8, -0.8, 0.2])
    pred = smoothed_predict(clf, _at_distances(w, b, dist), SmoothingParams(n=1000), _gen())
    assert pred.tolist() == [1, 0, 1, 0, 1]
    assert pred.dtype == torch.int64


def test_same_seed_same_certificate() -> None:
    clf, w, b = _linear()
    dist = torch.linspace(-0.5, 0.5, 40)
    x, y = _at_distances(w, b, dist), (dist > 0).long()
    p = SmoothingParams(n0=50, n=500, batch_size=333)
    a, b2, c = (certify(clf, x, y, p, _gen(s)) for s in (7, 7, 8))
    assert torch.equal(a.pred, b2.pred) and torch.equal(a.p_lower, b2.p_lower)
    assert torch.equal(a.radius.nan_to_num(-1.0), b2.radius.nan_to_num(-1.0))
    assert not torch.equal(a.p_lower, c.p_lower)


def test_curve_and_accuracy_at_zero() -> None:
    clf, w, b = _linear()
    dist = torch.linspace(-1.0, 1.0, 101)
    x = _at_distances(w, b, dist)
    y = (dist > 0).long()
    y[::10] = 1 - y[::10]  # some wrong labels: confidently certified, but not correct
    cert = certify(clf, x, y, SmoothingParams(n0=100, n=1000, batch_size=50_000), _gen())
    radii = [0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0]
    accs = [a for _, a in cert.curve(radii)]
    assert all(a1 >= a2 for a1, a2 in itertools.pairwise(accs))
    n_ok = int(((cert.pred == y) & (cert.pred != ABSTAIN)).sum())
    assert accs[0] == n_ok / 101 == cert.certified_accuracy(0.0)
    assert accs[-1] == 0.0
    assert cert.curve()[0] == [0.0, accs[0]]
    s = cert.summary()
    assert s["samples"] == 101 and s["abstentions"] == cert.abstentions
    assert [row["accuracy"] for row in s["curve"]] == [a for _, a in cert.curve()]


def test_certificate_accounting_by_hand() -> None:
    """Abstentions count as wrong; radius >= r certifies at r; r = 0 takes every radius."""
    nan = float("nan")
    cert = Certificate(
        pred=torch.tensor([ABSTAIN, 1, 2, 3, 4]),
        top=torch.tensor([0, 1, 2, 3, 4]),
        label=torch.tensor([0, 1, 2, 3, 0]),
        radius=torch.tensor([nan, 0.0, 0.3, 0.7, 0.9], dtype=torch.float64),
        p_lower=torch.tensor([0.4, 0.5, 0.8, 0.99, 0.999], dtype=torch.float64),
        count=torch.tensor([50, 60, 90, 100, 100]),
        params=SmoothingParams(),
    )
    assert cert.abstentions == 1
    assert cert.correct.tolist() == [False, True, True, True, False]
    assert [cert.certified_accuracy(r) for r in (0.0, 0.3, 0.5, 0.7, 0.71)] == [
        0.6,
        0.4,
        0.2,
        0.2,
        0.0,
    ]
    assert cert.mean_radius == pytest.approx((0.0 + 0.3 + 0.7) / 5)
    sub = cert.select(torch.tensor([0, 2]))
    assert sub.samples == 2 and sub.abstentions == 1 and sub.certified_accuracy(0.3) == 0.5


def test_robust_under_attack_counts_abstentions_as_unbroken() -> None:
    clf, w, b = _linear()
    dist = torch.tensor([0.6, 0.6, 0.6])
    x = _at_distances(w, b, dist)
    y = torch.ones(3, dtype=torch.long)
    p = SmoothingParams(n0=100, n=1000)
    cert = certify(clf, x, y, p, _gen())
    u = w / w.norm()
    moved = x.clone().view(3, D)
    moved[1] -= 0.6 * u  # onto the boundary: PREDICT abstains
    moved[2] -= 1.2 * u  # across it: PREDICT says 0
    ok = robust_under_attack(clf, cert, moved.view(3, 1, 4, 4), p, _gen(1))
    assert ok.tolist() == [True, True, False]


# ------------------------------------------------------------------ soft smoothing


def test_smoothed_module_is_a_differentiable_log_probability() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(D, 5))
    sm = SmoothedModule(model, sigma=0.25, draws=64, seed=3)
    x = torch.rand(4, 1, 4, 4, requires_grad=True)
    out = sm(x)
    assert out.shape == (4, 5)
    assert torch.allclose(out.exp().sum(dim=1), torch.ones(4), atol=1e-5)
    (g,) = torch.autograd.grad(out[:, 0].sum(), x)
    assert float(g.abs().sum()) > 0
    again = SmoothedModule(model, sigma=0.25, draws=64, seed=3)(x)
    assert torch.equal(out, again)
    # it is the mean softmax over draws: close to the exact smoothed soft output here
    big = SmoothedModule(model, sigma=0.25, draws=20_000, seed=1)(x.detach())
    small = SmoothedModule(model, sigma=0.25, draws=20_000, seed=2)(x.detach())
    assert torch.allclose(big.exp(), small.exp(), atol=0.01)


def test_smoothed_module_adds_noise_before_preprocessing() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(D, 3))
    mean, std = [0.4], [0.2]
    x = torch.rand(2, 1, 4, 4)
    sm = SmoothedModule(model, sigma=1e-6, draws=4, mean=mean, std=std, seed=0)
    expected = torch.log_softmax(model((x - 0.4) / 0.2), dim=1)
    assert torch.allclose(sm(x), expected, atol=1e-4)
    clf = Classifier(model, num_classes=3, mean=mean, std=std, batch_size=64)
    sclf = smoothed_classifier(clf, sigma=1e-6, draws=8, eot=2, seed=0)
    assert sclf.mean is None and sclf.std is None and sclf.bounds == clf.bounds
    assert sclf.batch_size == 8 and sclf.eot == 2
    assert torch.allclose(sclf.logits(x), expected, atol=1e-4)
    with pytest.raises(ValueError):
        SmoothedModule(model, sigma=0.0)


def test_smoothed_module_soft_probability_on_the_oracle() -> None:
    """A steep linear model votes like the half-space, so its soft output is Φ(d/σ)."""
    w = torch.linspace(-1.0, 1.5, D)
    model = Linear2(w * 1e4, -0.2 * 1e4)  # softmax is a step function at this scale
    dist = torch.tensor([0.0, 0.1, -0.25])
    x = _at_distances(w, -0.2, dist)
    out = SmoothedModule(model, sigma=0.25, draws=40_000, seed=0)(x).exp()[:, 1]
    expected = torch.from_numpy(norm.cdf(dist.numpy() / 0.25)).float()
    assert torch.allclose(out, expected, atol=0.01)
    assert math.isclose(float(out[0]), 0.5, abs_tol=0.01)
    assert np.isfinite(out.numpy()).all()
