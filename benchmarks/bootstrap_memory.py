#!/usr/bin/env python3
"""How much memory do compare's bootstraps take for a fast model's long processes?

A 20 µs model gives ~50 000 samples a process. Prints the peak memory numpy allocates (tracemalloc traces numpy's
buffers) and the time of: the percentile bootstrap CI of one process's median, and compare's two-level and paired
bootstrap CIs over 3 processes a side — 2000 resamples each, as `compare` uses — at N samples a process.

usage: python benchmarks/bootstrap_memory.py [N]   (default 100000)
"""

from __future__ import annotations

import sys
import time
import tracemalloc
from collections.abc import Callable

import numpy as np
from _common import machine

from devicelab.analysis.compare import hierarchical_ratio_ci, paired_ratio_ci
from devicelab.analysis.stats import median_bootstrap_ci


def measure(run: Callable[[], object]) -> tuple[float, float]:
    tracemalloc.start()
    start = time.perf_counter()
    try:
        run()
        return tracemalloc.get_traced_memory()[1], time.perf_counter() - start
    finally:
        tracemalloc.stop()


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    rng = np.random.default_rng(1)
    base = [rng.lognormal(np.log(20e-6), 0.05, n) for _ in range(3)]
    cand = [rng.lognormal(np.log(20e-6), 0.05, n) for _ in range(3)]
    print(f"{n} samples a process ({n * 8 / 2**20:.1f} MiB of float64), 2000 resamples; machine: {machine()}")
    for name, run in (("median_bootstrap_ci, 1 process", lambda: median_bootstrap_ci(base[0], resamples=2000)),
                      ("hierarchical_ratio_ci, 3 + 3 processes", lambda: hierarchical_ratio_ci(base, cand)),
                      ("paired_ratio_ci, 3 rounds", lambda: paired_ratio_ci(base, cand))):
        peak, seconds = measure(run)
        print(f"  {name:40s} peak {peak / 2**20:9.1f} MiB   {seconds:6.2f} s")


if __name__ == "__main__":
    main()
