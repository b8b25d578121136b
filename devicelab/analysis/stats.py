"""Pure statistics over raw samples (seconds). No I/O; None where a figure cannot be had."""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from statistics import NormalDist

import numpy as np

# Exact binomial sums up to this n; beyond it the normal approximation is at most one order statistic
# wider (conservative) than the exact interval.
_EXACT_N = 2000


def median(samples: Sequence[float]) -> float | None:
    return float(np.median(samples)) if len(samples) else None


def percentile(samples: Sequence[float], q: float) -> float | None:
    return float(np.percentile(samples, q)) if len(samples) else None


def median_ci(samples: Sequence[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """Distribution-free confidence interval of the median from order statistics.

    The number of samples below the true median is Binomial(n, 1/2), so [x_(j), x_(n-j+1)] covers it
    with probability 1 - 2·P(B ≤ j-1). Exact, assumption-free and O(n log n), which is why the
    stopping rule can afford it after every batch (a bootstrap would cost ~1000 medians each time).
    None when n is too small for any pair of order statistics to reach the confidence.
    """
    n = len(samples)
    if n == 0:
        return None
    j = _order_statistic_index(n, 1.0 - confidence)
    if j < 1:
        return None
    ordered = np.sort(np.asarray(samples, dtype=float))
    return float(ordered[j - 1]), float(ordered[n - j])


def _order_statistic_index(n: int, alpha: float) -> int:
    """Largest j with P(Binomial(n, 1/2) <= j-1) <= alpha/2 (0 if none).

    Computed without scipy: the controller checks this after every batch, and importing scipy.stats
    costs ~1 s of start-up that every `devicelab` command would pay.
    """
    if n > _EXACT_N:
        z = NormalDist().inv_cdf(1.0 - alpha / 2.0)
        return max(0, math.floor(n / 2.0 - z * math.sqrt(n) / 2.0 + 0.5))
    limit = Fraction(alpha / 2.0) * (1 << n)  # compare counts exactly; floats overflow past n ≈ 1000
    total, j = 0, 0
    while True:
        total += math.comb(n, j)  # P(B <= j) * 2**n
        if total > limit:
            return j
        j += 1


def relative_ci_halfwidth(samples: Sequence[float], confidence: float = 0.95) -> float | None:
    """The larger distance from the median to an end of its CI, relative to the median."""
    ci = median_ci(samples, confidence)
    m = median(samples)
    if ci is None or m is None or m <= 0:
        return None
    return max(m - ci[0], ci[1] - m) / m


def ratio_ci(base: Sequence[float], cand: Sequence[float], confidence: float = 0.95,
             resamples: int = 2000, seed: int = 0) -> tuple[float, float, float] | None:
    """Median ratio cand/base with a percentile bootstrap CI (scipy.stats.bootstrap, independent samples)."""
    if len(base) < 2 or len(cand) < 2:
        return None
    from scipy import stats as _stats  # lazy: ~1 s to import, only analysis needs it

    point = float(np.median(cand) / np.median(base))
    res = _stats.bootstrap((np.asarray(cand, float), np.asarray(base, float)),
                           lambda c, b, axis=-1: np.median(c, axis=axis) / np.median(b, axis=axis),
                           confidence_level=confidence, n_resamples=resamples, method="percentile",
                           vectorized=True, paired=False, rng=np.random.default_rng(seed))
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if math.isnan(lo) or math.isnan(hi):
        return None
    return point, lo, hi
