"""PREDICT and CERTIFY by Monte Carlo: counting the base classifier's classes under noise,
then bounding them (see :mod:`robaudit.certify` for the choices made and why)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from robaudit.certify.stats import binomial_pvalue_half, clopper_pearson_lower, norm_ppf
from robaudit.classifier import Classifier
from robaudit.errors import RuntimeFailure
from robaudit.loading.samples import Images
from robaudit.results import wilson_interval
from robaudit.smoothing import SmoothingParams

ABSTAIN = -1


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
    radius = np.where(certified, params.sigma * norm_ppf(np.clip(p_lower, 0.5, 1.0)), np.nan)
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
