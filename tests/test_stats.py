"""Statistics specs: the order-statistic CI of the median against scipy's exact binomial."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from devicelab.analysis import stats


def _exact_index(n: int, alpha: float) -> int:
    j = 0
    while sps.binom.cdf(j, n, 0.5) <= alpha / 2:
        j += 1
    return j


@pytest.mark.parametrize("n", [6, 7, 10, 25, 50, 101, 200, 999, 2000])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_order_statistic_index_is_exact(n: int, confidence: float) -> None:
    assert stats._order_statistic_index(n, 1 - confidence) == _exact_index(n, 1 - confidence)


def test_large_n_approximation_is_never_narrower() -> None:
    for n in (2171, 5000, 20001):
        assert stats._order_statistic_index(n, 0.05) in (_exact_index(n, 0.05), _exact_index(n, 0.05) - 1)


def test_median_ci() -> None:
    assert stats.median_ci([]) is None
    assert stats.median_ci([1.0, 2.0, 3.0, 4.0, 5.0]) is None  # 5 samples cannot reach 95 %
    assert stats.median_ci(list(range(1, 11))) == (2.0, 9.0)  # x(2), x(9) for n = 10
    lo, hi = stats.median_ci(list(range(200)))
    assert lo < 99.5 < hi


def test_ci_covers_the_true_median_at_its_level() -> None:
    rng = np.random.default_rng(7)
    hits = 0
    for _ in range(2000):
        x = rng.lognormal(0.0, 0.3, size=40)
        lo, hi = stats.median_ci(x, 0.95)
        hits += lo <= 1.0 <= hi
    assert 0.94 <= hits / 2000 <= 0.99  # exact coverage for n = 40 is 0.9615


def test_relative_halfwidth_and_percentiles() -> None:
    assert stats.relative_ci_halfwidth([1.0] * 30) == 0.0
    assert stats.relative_ci_halfwidth([1.0, 2.0]) is None
    assert stats.median([3.0, 1.0, 2.0]) == 2.0 and stats.median([]) is None
    assert stats.percentile(list(range(101)), 90) == 90.0


def _naive_resampled_medians(x: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """The textbook bootstrap: resamples × n indices, the median of each row (what devicelab did before)."""
    return np.median(x[rng.integers(0, len(x), size=(resamples, len(x)))], axis=1)


@pytest.mark.parametrize("n", [7, 8, 51, 200])
def test_resampled_medians_have_the_bootstrap_distribution(n: int) -> None:
    """Medians of bootstrap resamples drawn from order statistics (O(resamples) memory) follow the same
    distribution as the medians of resamples drawn whole: two-sample KS over 20 000 each, odd and even n."""
    x = np.random.default_rng(n).lognormal(0, 0.2, n)
    exact = stats.resampled_medians(x, 20_000, np.random.default_rng(1))
    naive = _naive_resampled_medians(x, 20_000, np.random.default_rng(2))
    assert exact.shape == (20_000,) and (n % 2 == 0 or np.isin(exact, x).all())  # odd n: a median is a sample
    assert sps.ks_2samp(exact, naive).pvalue > 0.001
    assert np.quantile(exact, [0.025, 0.5, 0.975]) == pytest.approx(np.quantile(naive, [0.025, 0.5, 0.975]), rel=0.01)


def test_bootstrap_memory_does_not_grow_with_resamples_times_samples() -> None:
    """A 20 µs model gives ~50 000 samples a process; a bootstrap of 2000 resamples drawn whole needs 2000 × n
    indices and values (1.6 GB at 50 000). Medians drawn from order statistics need O(n + resamples)."""
    import tracemalloc

    from devicelab.analysis.compare import hierarchical_ratio_ci, paired_ratio_ci

    rng = np.random.default_rng(5)
    sides = [[rng.lognormal(-9, 0.05, 20_000) for _ in range(3)] for _ in range(2)]  # 160 kB a process
    for run in (lambda: stats.median_bootstrap_ci(sides[0][0], resamples=2000),
                lambda: hierarchical_ratio_ci(*sides, resamples=2000),
                lambda: paired_ratio_ci(*sides, resamples=2000)):
        tracemalloc.start()
        try:
            run()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 8 * 2**20, f"peak {peak / 2**20:.0f} MiB"  # drawn whole: 2000 × 20 000 × 16 B = 610 MiB
