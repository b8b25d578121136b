#!/usr/bin/env python3
"""Does the interval for one process against a history cover at its nominal level?

Monte Carlo: n history processes and one new process whose log medians are drawn from one normal distribution
(sd 3 %, as process-to-process noise on these VMs), each process given as a one-sample list so its median is that
value. Counts how often analysis.compare.process_t_ci (the prediction interval `regress` uses for the newest run)
holds the true ratio 1, and how often the new process lies above it (how often an A/A night can look slower).
Nominal: 95 % coverage, 2.5 % above.

usage: python benchmarks/prediction_coverage.py [TRIALS] [SEED]   (defaults 20000, 1; seed n + SEED for n processes)
"""

from __future__ import annotations

import sys

import numpy as np

from devicelab.analysis.compare import process_t_ci

SIZES = (3, 5, 10, 30, 50)


def main() -> None:
    trials = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    print(f"history n | coverage of 95 % | new above the interval | {trials} trials, seed n + {seed}")
    for n in SIZES:
        rng = np.random.default_rng(n + seed)
        covered = above = 0
        for x in np.exp(rng.normal(0, 0.03, (trials, n + 1))):
            lo, hi = process_t_ci([[v] for v in x[:n]], [[x[n]]])  # type: ignore[misc]
            covered += lo <= 1.0 <= hi
            above += lo > 1.0
        sd = np.sqrt(0.95 * 0.05 / trials)
        print(f"{n:9d} | {covered / trials:.3f} (± {2 * sd:.3f}) | {above / trials:.4f}")


if __name__ == "__main__":
    main()
