"""Regression detection over history (pure).

Per series, the history is one point per run: that run's median. Change points come from E-divisive means
(Matteson & James's divergence picks where to split, with the split's right end at the segment's end, as in
MongoDB's and Apache Otava's detectors) with Otava's replacement of the permutation test by a Welch t-test
(deterministic and fast), applied by binary segmentation with ≥ 5 points per segment and a magnitude gate of
max(threshold, the device's noise floor): a step the device cannot resolve is not a change point.

The newest run cannot wait for five more nights: it is compared at once, per-iteration samples against the
samples of the stable segment before it, with the A/B rules (analysis.compare). Slower → `suspected`; a
second slower run in a row (a re-run, or the next night) → `confirmed`, as is a change point.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from devicelab.analysis.compare import DEFAULT_THRESHOLD, Verdict, center, verdict

MIN_SEGMENT = 5
P_VALUE = 0.001


def energy_statistic(x: np.ndarray, y: np.ndarray) -> float:
    """E-divisive's divergence Q̂ (Matteson & James 2014, eqs. 5–6, alpha = 1): n·m/(n + m) times twice the mean
    distance between the samples minus each sample's mean distance over its C(n, 2) pairs of distinct points.
    The full double sum counts every pair twice (and the zero diagonal), hence the division by n(n − 1); dividing
    by n² (the V-statistic, as MongoDB's signal-processing-algorithms does) shrinks the within terms of short
    segments more than long ones and moves the split."""
    n, m = len(x), len(y)
    between = np.abs(x[:, None] - y[None, :]).mean()
    within_x = np.abs(x[:, None] - x[None, :]).sum() / (n * (n - 1))
    within_y = np.abs(y[:, None] - y[None, :]).sum() / (m * (m - 1))
    return float(n * m / (n + m) * (2 * between - within_x - within_y))


def welch_p(x: np.ndarray, y: np.ndarray) -> float:
    """Two-sided Welch t-test p; exact steps in noise-free data (zero variance) count as certain."""
    from scipy.stats import ttest_ind

    if x.var() == 0 and y.var() == 0:
        return 0.0 if x.mean() != y.mean() else 1.0
    return float(ttest_ind(x, y, equal_var=False).pvalue)


def change_points(values: Sequence[float], min_segment: int = MIN_SEGMENT, p_value: float = P_VALUE,
                  magnitude: float = DEFAULT_THRESHOLD) -> list[int]:
    """Indices i where a new segment starts (values[i] is the first point after the step)."""
    x = np.asarray(values, dtype=float)
    found: list[int] = []

    def split(lo: int, hi: int) -> None:
        if hi - lo < 2 * min_segment:
            return
        candidates = range(lo + min_segment, hi - min_segment + 1)
        best = max(candidates, key=lambda t: energy_statistic(x[lo:t], x[t:hi]))
        left, right = x[lo:best], x[best:hi]
        step = abs(right.mean() / left.mean() - 1) if left.mean() else float("inf")
        if welch_p(left, right) < p_value and step >= magnitude:
            found.append(best)
            split(lo, best)
            split(best, hi)

    split(0, len(x))
    return sorted(found)


@dataclass
class RunPoint:
    """One run of a series: its id, when, and the samples of each process (Result) it holds."""

    run_id: str
    created_at: str
    processes: list[list[float]]

    @property
    def median(self) -> float:
        return center(self.processes)


@dataclass
class SeriesReport:
    series: str
    status: str  # ok, improved, suspected, confirmed, insufficient, no data
    points: int
    change_points: list[dict[str, Any]] = field(default_factory=list)
    newest: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"series": self.series, "status": self.status, "points": self.points,
                "change_points": self.change_points, "newest": self.newest, "notes": self.notes}


def analyze(series: str, points: Sequence[RunPoint], threshold: float = DEFAULT_THRESHOLD,
            noise_floor: float | None = None, min_segment: int = MIN_SEGMENT) -> SeriesReport:
    if not points:
        return SeriesReport(series, "insufficient", 0)
    # A summary-only engine (tool:* printing min/avg/max) stores no samples: such a run has no centre to compare.
    empty = sum(1 for p in points if not any(len(x) for x in p.processes))
    if empty == len(points):
        return SeriesReport(series, "no data", len(points), notes=[
            f"no per-iteration samples in its {len(points)} run{'s' if len(points) != 1 else ''} (a summary-only "
            "engine, such as a tool:* engine that prints only min/avg/max): nothing to analyze"])
    total = len(points)
    points = [RunPoint(p.run_id, p.created_at, [x for x in p.processes if len(x)]) for p in points
              if any(len(x) for x in p.processes)]
    medians = [p.median for p in points]
    cps = change_points(medians, min_segment, magnitude=max(threshold, noise_floor or 0.0))
    report = SeriesReport(series, "ok", total)
    if empty:
        report.notes.append(f"left out {empty} run{'' if empty == 1 else 's'} without samples")
    bounds = [0, *cps, len(points)]
    for i, cp in enumerate(cps):
        before = float(np.mean(medians[bounds[i]:cp]))
        after = float(np.mean(medians[cp:bounds[i + 2]]))
        report.change_points.append({"index": cp, "run_id": points[cp].run_id, "before_s": before, "after_s": after,
                                     "ratio": after / before, "direction": "slower" if after > before else "faster"})
    last_cp = cps[-1] if cps else 0
    if report.change_points and report.change_points[-1]["direction"] == "slower":
        report.status = "confirmed"
        report.notes.append(f"step at run {report.change_points[-1]['run_id']} "
                            f"({report.change_points[-1]['ratio'] - 1:+.1%})")
    elif report.change_points:
        report.status = "improved"

    # The tail: the newest runs against the stable segment before them. A run in question is never part of that
    # segment: one slow night among the baseline runs would widen the prediction interval for the next night.
    def check(k: int) -> tuple[int, list[Verdict]] | None:
        """The k newest runs, each against the runs before all k of them (None below 2 such runs)."""
        baseline = points[last_cp:len(points) - k]
        if len(baseline) < 2:
            return None
        # The run is the unit: the processes of one night share that night's machine, so they are not independent of
        # each other, and the night-to-night spread is what a new night is judged by (each run's samples as one).
        def unit(run: RunPoint) -> list[float]:
            return [s for process in run.processes for s in process]

        history = [unit(run) for run in baseline]
        return len(baseline), [verdict(history, [unit(points[-j])], threshold, noise_floor) for j in range(1, k + 1)]

    one, two = check(1), check(2)
    newest = one
    if one and two and two[1][0].verdict == "slower" and one[1][0].verdict != "slower":
        newest = two  # slower than the segment before a slow second-newest, which hid it
    if newest:
        report.newest = {"run_id": points[-1].run_id, **newest[1][0].to_dict(), "baseline_runs": newest[0]}
    tail = two[1] if two and all(v.verdict == "slower" for v in two[1]) else []
    if not tail and newest and newest[1][0].verdict == "slower":
        tail = newest[1][:1]
    if report.newest is None:
        report.notes.append("fewer than 2 stable runs before the newest: it cannot be checked yet")
        if report.status == "ok" and len(points) < 3:
            report.status = "insufficient"
    if len(tail) >= 2:
        report.status = "confirmed"
        report.notes.append("the two newest runs are both slower than the stable segment before them")
    elif len(tail) == 1 and report.status != "confirmed":
        report.status = "suspected"
        report.notes.append("the newest run is slower than the stable segment before it: re-run to confirm")
    return report
