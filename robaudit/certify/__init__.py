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

Modules: :mod:`~robaudit.certify.stats` (binomial bounds), :mod:`~robaudit.certify.monte_carlo`
(PREDICT, CERTIFY), :mod:`~robaudit.certify.soft` (the soft smoothed classifier) and
:mod:`~robaudit.certify.section` (the audit's ``certify:`` section).
"""

from __future__ import annotations

from robaudit.certify.monte_carlo import (
    ABSTAIN,
    Certificate,
    certify,
    noise_counts,
    robust_under_attack,
    smoothed_predict,
)
from robaudit.certify.section import run_certification
from robaudit.certify.soft import SmoothedModule, smoothed_classifier
from robaudit.certify.stats import (
    binomial_pvalue_half,
    clopper_pearson_lower,
    clopper_pearson_upper,
)
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
    "run_certification",
    "smoothed_classifier",
    "smoothed_predict",
]
