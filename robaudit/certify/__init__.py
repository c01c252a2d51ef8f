"""Randomized-smoothing certification (Cohen, Rosenfeld & Kolter 2019).

The smoothed classifier ``g(x) = argmax_c P(f(x + δ) = c)``, ``δ ~ N(0, σ²I)``, is provably
constant on the L2 ball of radius ``σ·Φ⁻¹(p_A)`` around ``x`` whenever the top class has
probability ``p_A > 1/2``. It is evaluated by Monte Carlo:

- :func:`smoothed_predict` is the paper's PREDICT: ``n`` noisy draws, the two most frequent
  classes, a two-sided binomial test of their counts at ``p = 1/2``; the top class if the
  p-value is at most ``alpha``, else abstain (``-1``). It returns a class other than ``g(x)``
  with probability at most ``alpha``.
- :func:`certify` is CERTIFY: ``n0`` draws pick the candidate class, ``n`` fresh draws bound
  its probability from below (one-sided Clopper–Pearson at ``1 − alpha``); abstain if that
  bound is below 1/2, else certify the radius ``σ·Φ⁻¹(p_lower)``. A certified radius is wrong
  (``g`` is not constant on that ball) with probability at most ``alpha`` per sample.

Choices, and why:

- **Noise in pixel space, not clipped to the bounds.** The Classifier applies mean/std after
  the noise, so ``σ`` is in the same pixel units as every robaudit eps. The theorem holds for
  any base classifier, so clipping (making ``f∘clip`` the base classifier) would be sound too;
  it is not done because noise-trained models (Cohen et al.'s training) saw unclipped noise and
  because published certified accuracies are computed without it, so numbers stay comparable.
  The certificate covers the whole L2 ball, in or out of bounds, hence every attack point.
- **Randomness.** Every draw comes from the caller's seeded ``torch.Generator``: on the CPU
  directly; on an accelerator through a device generator seeded with one draw from it (noise
  is generated where the model runs, never copied over the bus). Same seed, inputs, params,
  device and a deterministic model give identical results; other devices give the same
  distribution, other numbers. Each call advances the caller's generator.
- **Batching.** The ``(sample, draw)`` pairs of a whole call are laid out in one sequence and
  cut into forward batches of ``batch_size`` noisy inputs, so a batch mixes samples when
  ``n0 < batch_size`` and no Python loop ever runs per draw or per sample. The Classifier may
  split a batch further by its own ``batch_size`` (a memory guard). Each noisy input is one
  counted query; only labels are used, so decision-access classifiers work too.
- **Statistics** come from scipy (installed with scikit-learn), imported lazily.
- Known limit: floating-point rounding of ``x + δ`` can in principle void a certificate
  (Voráček & Hein 2022); like every standard implementation, this one ignores it.

:class:`SmoothedModule` is the differentiable *soft* smoothed classifier (log of the mean
softmax over noise draws, Salman et al. 2019), for adaptive attacks on ``g``; attack points
must then be judged with :func:`smoothed_predict` (:func:`robust_under_attack`), since the soft
classifier is not the one certified.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robaudit.classifier import Classifier
from robaudit.errors import RuntimeFailure
from robaudit.loading.samples import Images
from robaudit.results import wilson_interval
from robaudit.smoothing import SmoothingParams

__all__ = [
    "ABSTAIN",
    "Certificate",
    "SmoothedModule",
    "SmoothingParams",
    "binomial_pvalue_half",
    "certify",
    "clopper_pearson_lower",
    "clopper_pearson_upper",
    "noise_counts",
    "robust_under_attack",
    "smoothed_classifier",
    "smoothed_predict",
]

ABSTAIN = -1


# ----------------------------------------------------------------------- statistics


def clopper_pearson_lower(k: Any, n: int, alpha: float) -> np.ndarray:
    """One-sided exact lower bound at level ``1 − alpha`` for ``k`` successes in ``n`` trials.

    Exact (not a normal approximation) because the certificate must hold for every ``k``,
    including ``k = n`` where Wald and Wilson bounds are too optimistic or ill-defined.
    """
    from scipy.stats import beta

    k = np.asarray(k, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        lo = beta.ppf(alpha, k, n - k + 1)
    return np.where(k <= 0, 0.0, lo).astype(np.float64)


def clopper_pearson_upper(k: Any, n: int, alpha: float) -> np.ndarray:
    """One-sided exact upper bound at level ``1 − alpha`` (the mirror of the lower bound)."""
    k = np.asarray(k, dtype=np.float64)
    return np.asarray(1.0 - clopper_pearson_lower(n - k, n, alpha), dtype=np.float64)


def binomial_pvalue_half(n_a: Any, n_b: Any) -> np.ndarray:
    """Two-sided binomial-test p-value of ``n_a`` vs ``n_b`` at ``p = 1/2``, vectorized.

    Equals ``scipy.stats.binomtest(n_a, n_a + n_b, 0.5).pvalue``: the null is symmetric, so
    the p-value is twice the smaller tail (capped at 1).
    """
    from scipy.stats import binom

    a = np.asarray(n_a, dtype=np.int64)
    b = np.asarray(n_b, dtype=np.int64)
    tail = binom.cdf(np.minimum(a, b), a + b, 0.5)
    p = np.minimum(1.0, 2.0 * tail)
    return np.where(a == b, 1.0, p).astype(np.float64)


def _norm_ppf(p: np.ndarray) -> np.ndarray:
    from scipy.stats import norm

    return np.asarray(norm.ppf(p), dtype=np.float64)


# ----------------------------------------------------------------------- sampling


def _device_generator(generator: torch.Generator, device: torch.device) -> torch.Generator:
    """The caller's generator where it can serve ``device``; else one seeded from it."""
    if generator.device.type == device.type and (
        device.type == "cpu" or generator.device.index == device.index
    ):
        return generator
    seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
    return torch.Generator(device=device).manual_seed(seed)


def noise_counts(
    clf: Classifier,
    x: Images,
    num: int,
    params: SmoothingParams,
    generator: torch.Generator,
) -> torch.Tensor:
    """``int64[N, num_classes]`` on ``clf.device``: class counts of ``num`` noisy copies each.

    The N·num (sample, draw) pairs are one sequence cut into batches of
    ``params.batch_size``, so batches stay full whatever ``num`` is (see the module docstring).
    """
    n_samples = int(x.shape[0])
    c = int(clf.num_classes)
    device = clf.device
    counts = torch.zeros(n_samples, c, dtype=torch.int64, device=device)
    if n_samples == 0 or num <= 0:
        return counts
    dtype = x.dtype if x.dtype.is_floating_point else torch.float32
    gen = _device_generator(generator, device)
    total = n_samples * num
    for start in range(0, total, params.batch_size):
        stop = min(start + params.batch_size, total)
        first, last = start // num, (stop - 1) // num
        # only this batch's samples on the device (streamed samples are decoded here)
        rows = x[first : last + 1].detach().to(device=device, dtype=dtype)
        owner = torch.arange(start, stop, device=device) // num
        noise = torch.randn(
            (stop - start, *rows.shape[1:]), generator=gen, device=device, dtype=dtype
        )
        pred = clf.predict(rows[owner - first] + params.sigma * noise)
        if start == 0 and bool((pred >= c).any()):  # the logits' width is the same every batch
            raise RuntimeFailure(
                f"model gives more than num_classes = {c} logits; counts would mix samples"
            )
        local = (owner - first) * c + pred
        counts[first : last + 1] += torch.bincount(local, minlength=(last - first + 1) * c).view(
            -1, c
        )
    return counts


# ----------------------------------------------------------------------- PREDICT / CERTIFY


def smoothed_predict(
    clf: Classifier,
    x: torch.Tensor,
    params: SmoothingParams,
    generator: torch.Generator,
) -> torch.Tensor:
    """PREDICT: ``int64[N]`` on the CPU, the smoothed class or ``ABSTAIN`` (−1).

    Wrong (a class other than ``g(x)``) with probability at most ``alpha`` per sample.
    """
    counts = noise_counts(clf, x, params.n, params, generator).cpu()
    if counts.shape[1] < 2:  # one class: nothing to test against
        counts = torch.cat([counts, torch.zeros_like(counts[:, :1])], dim=1)
    top2 = counts.topk(2, dim=1)
    n_a, n_b = top2.values[:, 0].numpy(), top2.values[:, 1].numpy()
    ok = torch.from_numpy(binomial_pvalue_half(n_a, n_b) <= params.alpha)
    return torch.where(ok, top2.indices[:, 0], torch.full_like(top2.indices[:, 0], ABSTAIN))


@dataclass
class Certificate:
    """CERTIFY's per-sample outcome (CPU tensors) and the curve the report shows.

    ``radius`` is NaN where the sample abstained; ``pred`` is then ``ABSTAIN`` while ``top``
    still holds the class the ``n0`` selection draws picked.
    """

    pred: torch.Tensor  # int64[N], the certified class or ABSTAIN
    top: torch.Tensor  # int64[N], the class the n0 draws picked (even where abstained)
    label: torch.Tensor  # int64[N], the true class
    radius: torch.Tensor  # float64[N], sigma * Phi^-1(p_lower); NaN where abstained
    p_lower: torch.Tensor  # float64[N], Clopper-Pearson lower bound on P(f(x+δ) = top)
    count: torch.Tensor  # int64[N], of the n estimation draws, how many gave ``top``
    params: SmoothingParams
    seconds: float = 0.0
    draws: int = 0  # noisy forward passes, n0 + n per sample

    @property
    def abstained(self) -> torch.Tensor:
        return self.pred == ABSTAIN

    @property
    def correct(self) -> torch.Tensor:
        """Certified (radius ≥ 0) and right: what certified accuracy counts at radius 0."""
        return (self.pred == self.label) & ~self.abstained

    @property
    def abstentions(self) -> int:
        return int(self.abstained.sum())

    @property
    def samples(self) -> int:
        return int(self.pred.shape[0])

    def select(self, idx: torch.Tensor) -> Certificate:
        """The certificate of a subset (index or mask), e.g. the samples an attack ran on."""
        return Certificate(
            pred=self.pred[idx],
            top=self.top[idx],
            label=self.label[idx],
            radius=self.radius[idx],
            p_lower=self.p_lower[idx],
            count=self.count[idx],
            params=self.params,
            seconds=self.seconds,
            draws=self.draws,
        )

    def certified_count(self, r: float) -> int:
        """Samples certified correct on the whole L2 ball of radius ``r`` (``radius ≥ r``)."""
        return int((self.correct & (self.radius >= r)).sum())

    def certified_accuracy(self, r: float) -> float:
        """Share of all samples (abstentions count as wrong) certified correct at radius ``r``.

        At ``r = 0`` this is every non-abstained correct sample; NaN when there are none.
        """
        return self.certified_count(r) / self.samples if self.samples else float("nan")

    def curve(self, radii: Sequence[float] | None = None) -> list[list[float]]:
        """``[[r, certified accuracy], ...]`` at ``radii`` (default: ``params.radii``)."""
        rs = self.params.radii if radii is None else radii
        return [[float(r), self.certified_accuracy(float(r))] for r in rs]

    @property
    def mean_radius(self) -> float:
        """Average certified radius (ACR, Zhai et al. 2020): radius if correct, else 0."""
        if not self.samples:
            return float("nan")
        r = torch.where(self.correct, self.radius, torch.zeros_like(self.radius))
        return float(r.mean())

    def summary(self) -> dict[str, Any]:
        """A JSON-safe digest for the report: settings, the curve with 95% Wilson intervals."""
        p = self.params
        rows = []
        for r in p.radii:
            k = self.certified_count(r)
            lo, hi = wilson_interval(k, self.samples)
            rows.append(
                {
                    "radius": float(r),
                    "certified": k,
                    "accuracy": self.certified_accuracy(r),
                    "ci95": [lo, hi],
                }
            )
        return {
            "sigma": p.sigma,
            "n0": p.n0,
            "n": p.n,
            "alpha": p.alpha,
            "samples": self.samples,
            "abstentions": self.abstentions,
            "mean_radius": self.mean_radius,
            "curve": rows,
            "seconds": self.seconds,
            "draws": self.draws,
        }


def certify(
    clf: Classifier,
    x: Images,
    y: torch.Tensor,
    params: SmoothingParams,
    generator: torch.Generator,
) -> Certificate:
    """CERTIFY on a batch: ``n0`` draws select, ``n`` fresh draws estimate, then bound.

    Selection and estimation use disjoint draws, as the Clopper–Pearson bound needs a class
    fixed before its counts are seen.
    """
    if y.dim() != 1 or x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} samples but y has shape {tuple(y.shape)}")
    import scipy.stats  # noqa: F401  (lazy; its first import is not certification time)

    t0 = time.perf_counter()
    top = noise_counts(clf, x, params.n0, params, generator).argmax(dim=1)
    counts = noise_counts(clf, x, params.n, params, generator)
    count = counts.gather(1, top[:, None]).squeeze(1).cpu()
    top = top.cpu()
    p_lower = clopper_pearson_lower(count.numpy(), params.n, params.alpha)
    certified = p_lower >= 0.5
    radius = np.where(certified, params.sigma * _norm_ppf(np.clip(p_lower, 0.5, 1.0)), np.nan)
    cert_t = torch.from_numpy(certified)
    return Certificate(
        pred=torch.where(cert_t, top, torch.full_like(top, ABSTAIN)),
        top=top,
        label=y.detach().to("cpu", torch.int64),
        radius=torch.from_numpy(radius.astype(np.float64)),
        p_lower=torch.from_numpy(p_lower),
        count=count,
        params=params,
        seconds=time.perf_counter() - t0,
        draws=int(x.shape[0]) * (params.n0 + params.n),
    )


def robust_under_attack(
    clf: Classifier,
    cert: Certificate,
    x_adv: torch.Tensor,
    params: SmoothingParams,
    generator: torch.Generator,
) -> torch.Tensor:
    """``bool[N]``: correct at the clean input and not shown wrong at ``x_adv`` by PREDICT.

    An attack *breaks* a sample when PREDICT returns a wrong class there; an abstention is not
    a break (near the edge of a certified ball ``p_A`` may be just above 1/2, where PREDICT
    abstains). With this rule the share of robust samples is at least the certified accuracy
    at any radius the attack stayed within, except with probability ``2·alpha`` per sample
    (a wrong certificate or a wrong PREDICT), which makes it a sound check on a certificate.
    """
    pred = smoothed_predict(clf, x_adv, params, generator)
    label = cert.label
    return cert.correct & ((pred == label) | (pred == ABSTAIN))


# ----------------------------------------------------------------------- soft smoothing


class SmoothedModule(nn.Module):
    """The soft smoothed classifier: ``log mean_draws softmax(model(x + δ))``, differentiable.

    For adaptive L2 attacks on a smoothed model (SmoothAdv, Salman et al. 2019): the hard
    ``g`` has no useful gradient, its soft twin does. ``draws`` noisy copies per input go
    through the model in one batch, so memory is ``draws`` times a plain forward. Pass the
    model's ``mean``/``std`` and any pixel-space ``transform`` (a defense) here, and none to
    the wrapping Classifier, so noise comes first, as in CERTIFY. ``seed`` makes the draws
    reproducible; without it the global RNG is used.
    """

    def __init__(
        self,
        model: nn.Module,
        sigma: float,
        draws: int = 32,
        *,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        seed: int | None = None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        if sigma <= 0 or draws < 1:
            raise ValueError(f"need sigma > 0 and draws >= 1, got {sigma}, {draws}")
        self.model = model
        self.sigma = float(sigma)
        self.draws = int(draws)
        self.mean = None if mean is None else tuple(float(m) for m in mean)
        self.std = None if std is None else tuple(float(s) for s in std)
        self.seed = seed
        self.transform = transform
        self._gens: dict[str, torch.Generator] = {}

    def _generator(self, device: torch.device) -> torch.Generator | None:
        if self.seed is None:
            return None
        key = str(device)
        if key not in self._gens:
            self._gens[key] = torch.Generator(device=device).manual_seed(self.seed)
        return self._gens[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, m = int(x.shape[0]), self.draws
        reps = x.repeat(m, *([1] * (x.dim() - 1)))  # draw-major: row d*n + i is sample i
        noise = torch.randn(
            reps.shape, generator=self._generator(x.device), device=x.device, dtype=x.dtype
        )
        z = reps + self.sigma * noise
        if self.transform is not None:
            z = self.transform(z)
        if self.mean is not None:
            z = z - torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        if self.std is not None:
            z = z / torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        logp = F.log_softmax(self.model(z), dim=-1)
        return torch.logsumexp(logp.view(m, n, -1), dim=0) - math.log(m)


def smoothed_classifier(
    clf: Classifier,
    sigma: float,
    draws: int = 32,
    *,
    eot: int = 1,
    votes: int = 1,
    seed: int | None = None,
) -> Classifier:
    """``clf``'s model as a soft smoothed Classifier, ready for robaudit's gradient attacks.

    Mean/std and a defense ``transform`` move into the :class:`SmoothedModule` (noise is
    added first, in pixel space); the batch size shrinks by ``draws`` so a forward batch
    holds as many noisy inputs as before.
    """
    module = SmoothedModule(
        clf.model,
        sigma,
        draws,
        mean=clf.mean,
        std=clf.std,
        seed=seed,
        transform=getattr(clf, "transform", None),
    )
    return clf.derive(  # the smoothed module applies the preprocessing itself
        model=module, mean=None, std=None, batch_size=max(1, clf.batch_size // draws), eot=eot,
        votes=votes, sequential=None, transform=None,
    )


# ----------------------------------------------------------------------- the audit's section


def run_certification(
    clf: Classifier,
    x: Images,
    y: torch.Tensor,
    section: Any,
    seed: int,
) -> dict[str, Any]:
    """CERTIFY every sample, then attack the smoothed classifier at each radius > 0.

    ``section`` is the config's ``certify:`` (SmoothingParams plus attack settings). The
    attack is PGD-L2 on the soft smoothed model (Salman et al. 2019), judged by PREDICT with
    ``attack_n`` draws: the share it leaves robust at radius r must not be below the certified
    accuracy at r (beyond the 2·alpha failure rate), or the certificate is unsound.
    """
    from robaudit.attacks.fgsm_pgd import PGD, PGDParams
    from robaudit.threat import Threat

    params = SmoothingParams(**{k: getattr(section, k) for k in SmoothingParams.model_fields})
    gen = torch.Generator().manual_seed(seed)
    cert = certify(clf, x, y, params, gen)
    out = cert.summary()
    empirical = []
    steps = int(getattr(section, "attack_steps", 0))
    n = cert.samples
    judge = params.model_copy(update={"n": int(getattr(section, "attack_n", params.n))})
    if steps > 0 and n and clf.access == "white-box":
        sclf = smoothed_classifier(clf, params.sigma, int(section.attack_draws), seed=seed)
        idx = cert.correct.nonzero().flatten()
        for r in params.radii:
            if r <= 0 or idx.numel() == 0:
                continue
            t0 = time.perf_counter()
            pgd = PGD(PGDParams(steps=steps, loss="ce", early_stop=False))
            xs, ys = x[idx].to(clf.device), y[idx].to(clf.device)
            gen_r = torch.Generator().manual_seed(seed + 1)
            xa = pgd.run(sclf, xs, ys, Threat("l2", float(r)), gen_r).x_adv
            robust = robust_under_attack(clf, cert.select(idx), xa, judge, gen_r)
            k = int(robust.sum())
            certified = cert.certified_count(r)
            # failures are allowed at rate 2 alpha per sample (a wrong certificate or PREDICT)
            slack = math.ceil(2 * params.alpha * n + 3 * math.sqrt(2 * params.alpha * n)) + 1
            empirical.append(
                {
                    "radius": float(r),
                    "robust": k,
                    "accuracy": k / n,
                    "ci95": list(wilson_interval(k, n)),
                    "certified": certified,
                    "consistent": certified <= k + slack,
                    "seconds": round(time.perf_counter() - t0, 3),
                }
            )
    out["empirical"] = empirical
    out["attack"] = {
        "name": "pgd",
        "norm": "l2",
        "steps": steps,
        "draws": int(getattr(section, "attack_draws", 0)),
        "judge_n": judge.n,
    }
    return out
