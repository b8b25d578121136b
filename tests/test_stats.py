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
