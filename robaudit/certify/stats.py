"""The exact binomial statistics that CERTIFY and PREDICT rest on (scipy, imported lazily)."""

from __future__ import annotations

from typing import Any

import numpy as np


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


def norm_ppf(p: np.ndarray) -> np.ndarray:
    from scipy.stats import norm

    return np.asarray(norm.ppf(p), dtype=np.float64)
