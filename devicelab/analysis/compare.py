"""A/B verdicts (pure): is the candidate faster, slower, the same, or unknown?

Rules (design.md), threshold t (default 2 %):
  slower  — one-sided Mann-Whitney U p < 0.01 and the CI of the median ratio cand/base lies above 1 + t
  faster  — p < 0.01 the other way and the CI lies below 1 − t
  same    — the whole CI inside [1 − t, 1 + t]
  unknown — anything else: collect more samples rather than guess.

The statistic is the ratio of the medians of per-process medians: every process weighs the same (the adaptive
protocol samples a noisy process longer, which would otherwise let it dominate a pooled median), and one
odd process among three cannot move it. Its CI comes from a two-level bootstrap — processes resampled, then
samples within each — so process-to-process noise (1–3 % on these VMs, more while something else runs)
widens the interval instead of being mistaken for a change; and never narrower than a Welch t interval over the
processes (the bootstrap alone undercovers with 3 processes: measured, 2.7 % A/A false positives at 4.5 %
process-to-process noise).
Paired (A/B labels of one run, matched by round): the machine drifts over minutes (measured here: lag-1
autocorrelation 0.73 between 6-second processes, ±5 % swings), and the two labels' processes of one round ran
next to each other, so the statistic becomes the median of the per-round ratios and its CI comes from rounds
resampled whole, never narrower than a paired t interval of the per-round log ratios (n − 1 degrees of freedom).
Drift shared by a round then cancels instead of widening the interval.
Only MWU is used for p (no KS), so no multiple-testing correction is needed. A device's A/A noise floor,
when known, raises t: a change smaller than the floor is never called.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

ALPHA = 0.01
DEFAULT_THRESHOLD = 0.02


@dataclass(frozen=True)
class Verdict:
    verdict: str  # faster, slower, same, unknown
    ratio: float | None  # center(candidate) / center(base): medians of per-process medians
    ci: tuple[float, float] | None
    p_slower: float | None
    p_faster: float | None
    threshold: float  # the one applied (max of the asked threshold and the noise floor)
    n_base: int
    n_candidate: int
    processes_base: int
    processes_candidate: int
    reasons: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "ratio": self.ratio, "ci": list(self.ci) if self.ci else None,
                "p_slower": self.p_slower, "p_faster": self.p_faster, "threshold": self.threshold,
                "n_base": self.n_base, "n_candidate": self.n_candidate, "processes_base": self.processes_base,
                "processes_candidate": self.processes_candidate, "reasons": list(self.reasons)}


def center(processes: Sequence[Sequence[float]]) -> float:
    """The median of the per-process medians."""
    return float(np.median([np.median(p) for p in processes if len(p)]))


def hierarchical_ratio_ci(base: Sequence[Sequence[float]], cand: Sequence[Sequence[float]], confidence: float = 0.95,
                          resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile CI of center(cand)/center(base), resampling processes and then samples within them.

    Vectorized: each process's within-process resampled medians are drawn once per bootstrap replicate (one numpy
    call per process); a replicate then resamples processes and takes their replicate medians. A process drawn twice
    in one replicate contributes the same resampled median twice, which only widens the interval a little."""
    rng = np.random.default_rng(seed)
    sides = [[np.asarray(p, float) for p in side if len(p)] for side in (base, cand)]

    def replicates(side: list[np.ndarray]) -> np.ndarray:
        # medians[k, j]: replicate k's resampled median of process j
        medians = np.column_stack([np.median(p[rng.integers(0, len(p), size=(resamples, len(p)))], axis=1)
                                   for p in side])
        picks = rng.integers(0, len(side), size=(resamples, len(side)))
        return np.median(np.take_along_axis(medians, picks, axis=1), axis=1)

    ratios = replicates(sides[1]) / replicates(sides[0])
    a = (1 - confidence) / 2
    return float(np.quantile(ratios, a)), float(np.quantile(ratios, 1 - a))


def paired_ratio_ci(base: Sequence[Sequence[float]], cand: Sequence[Sequence[float]], confidence: float = 0.95,
                    resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile CI of the median per-round ratio: rounds (base[i], cand[i]) resampled whole, then samples within
    each process, so what a round's two processes shared (the machine's state then) stays shared."""
    rng = np.random.default_rng(seed)

    def medians(side: Sequence[Sequence[float]]) -> np.ndarray:  # [replicate, round]
        return np.column_stack([np.median(p[rng.integers(0, len(p), size=(resamples, len(p)))], axis=1)
                                for p in (np.asarray(x, float) for x in side)])

    ratios = medians(cand) / medians(base)
    picks = rng.integers(0, len(base), size=(resamples, len(base)))
    stats = np.median(np.take_along_axis(ratios, picks, axis=1), axis=1)
    a = (1 - confidence) / 2
    return float(np.quantile(stats, a)), float(np.quantile(stats, 1 - a))


def paired_t_ci(base: Sequence[Sequence[float]], cand: Sequence[Sequence[float]], confidence: float = 0.95
                ) -> tuple[float, float] | None:
    """t interval of the mean per-round log ratio of process medians (None below 2 rounds)."""
    from scipy.stats import t as student

    d = np.log([np.median(c) / np.median(b) for b, c in zip(base, cand, strict=True)])
    if len(d) < 2:
        return None
    se = float(np.std(d, ddof=1) / np.sqrt(len(d)))
    q = float(student.ppf(0.5 + confidence / 2, len(d) - 1))
    return float(np.exp(d.mean() - q * se)), float(np.exp(d.mean() + q * se))


def process_t_ci(base: Sequence[Sequence[float]], cand: Sequence[Sequence[float]], confidence: float = 0.95
                 ) -> tuple[float, float] | None:
    """Welch t interval of the ratio of geometric means of per-process medians (None below 2 processes a side)."""
    from scipy.stats import t as student

    logs = [np.log([np.median(p) for p in side if len(p)]) for side in (base, cand)]
    if min(len(x) for x in logs) < 2:
        return None
    vb, vc = (float(np.var(x, ddof=1)) / len(x) for x in logs)
    se = float(np.sqrt(vb + vc))
    diff = float(logs[1].mean() - logs[0].mean())
    if se == 0:
        return float(np.exp(diff)), float(np.exp(diff))
    df = se**4 / ((vb**2 / (len(logs[0]) - 1)) + (vc**2 / (len(logs[1]) - 1))) if vb or vc else 1.0
    q = float(student.ppf(0.5 + confidence / 2, df))
    return float(np.exp(diff - q * se)), float(np.exp(diff + q * se))


def verdict(base: Sequence[Sequence[float]], cand: Sequence[Sequence[float]], threshold: float = DEFAULT_THRESHOLD,
            noise_floor: float | None = None, confidence: float = 0.95, seed: int = 0,
            resamples: int = 2000, paired: bool = False) -> Verdict:
    """base and cand hold one list of samples per process (per Result). paired: base[i] and cand[i] ran in the
    same round of one run (an A/B of labels); a round where either side has no samples is left out."""
    from scipy.stats import mannwhitneyu

    if paired:
        if len(base) != len(cand):
            raise ValueError("paired verdict: base and candidate need one process per round each")
        rounds = [(b, c) for b, c in zip(base, cand, strict=True) if len(b) and len(c)]
        base, cand = [b for b, _ in rounds], [c for _, c in rounds]

    b = np.concatenate([np.asarray(p, float) for p in base]) if base else np.array([])
    c = np.concatenate([np.asarray(p, float) for p in cand]) if cand else np.array([])
    t = max(threshold, noise_floor or 0.0)
    reasons: list[str] = []
    if noise_floor and noise_floor > threshold:
        reasons.append(f"threshold raised to the device's A/A noise floor, {noise_floor:.1%}")
    counts = dict(n_base=len(b), n_candidate=len(c), processes_base=sum(1 for p in base if len(p)),
                  processes_candidate=sum(1 for p in cand if len(p)))
    if len(b) < 5 or len(c) < 5:
        return Verdict("unknown", None, None, None, None, t, reasons=tuple(reasons + ["fewer than 5 samples on a side"]),
                       **counts)
    if paired:
        ratio = float(np.median([np.median(c) / np.median(b) for b, c in zip(base, cand, strict=True)]))
        lo, hi = paired_ratio_ci(base, cand, confidence, resamples=resamples, seed=seed)
        t_ci = paired_t_ci(base, cand, confidence)
        reasons.append(f"paired by round ({len(base)} rounds)")
    else:
        ratio = center(cand) / center(base)
        lo, hi = hierarchical_ratio_ci(base, cand, confidence, resamples=resamples, seed=seed)
        # With few processes a bootstrap over them undercovers (three values have ten resamples), and the pooled
        # MWU treats samples of one process as independent; so the CI is widened to at least a Welch t interval over
        # the processes' log medians, which sees process-to-process noise with its honest degrees of freedom.
        t_ci = process_t_ci(base, cand, confidence)
    if t_ci is not None:
        lo, hi = min(lo, t_ci[0]), max(hi, t_ci[1])
    p_slower = float(mannwhitneyu(c, b, alternative="greater").pvalue)
    p_faster = float(mannwhitneyu(c, b, alternative="less").pvalue)
    if min(counts["processes_base"], counts["processes_candidate"]) < 3:
        reasons.append("fewer than 3 processes on a side: process-to-process noise is not fully in the CI")
    if p_slower < ALPHA and lo > 1 + t:
        v = "slower"
    elif p_faster < ALPHA and hi < 1 - t:
        v = "faster"
    elif 1 - t <= lo and hi <= 1 + t:
        v = "same"
    else:
        v = "unknown"
        reasons.append("the CI crosses the threshold or p is not below 0.01: collect more samples")
    return Verdict(v, ratio, (lo, hi), p_slower, p_faster, t, reasons=tuple(reasons), **counts)


@dataclass
class Comparison:
    """One matched config: its key, the verdict, and warnings about how the two sides were measured."""

    name: str
    key: str
    verdict: Verdict
    base_median_s: float | None
    candidate_median_s: float | None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "key": self.key, **self.verdict.to_dict(), "base_median_s": self.base_median_s,
                "candidate_median_s": self.candidate_median_s, "warnings": self.warnings}


def state_warnings(base: Sequence[Any], cand: Sequence[Any]) -> list[str]:
    """What differed between the sides' measurement conditions (Results of each side)."""
    out: list[str] = []

    def temps(results: Sequence[Any]) -> list[float]:
        return [t for r in results for s in (r.state_before, r.state_after) if s
                for t in (s.get("temperatures_c") or {}).values()]

    tb, tc = temps(base), temps(cand)
    if tb and tc and abs(max(tc) - max(tb)) > 5:
        out.append(f"temperatures differ: max {max(tb):.0f} °C (base) vs {max(tc):.0f} °C (candidate)")
    if any(r.throttled for r in base) != any(r.throttled for r in cand):
        out.append("one side was throttled (frequency cap below maximum)")

    def load(results: Sequence[Any]) -> list[float]:
        return [s["loadavg"][0] for r in results for s in (r.state_before, r.state_after) if s and s.get("loadavg")]

    lb, lc = load(base), load(cand)
    if lb and lc and abs(max(lc) - max(lb)) > 0.75:
        out.append(f"something else was running: 1-minute load average up to {max(lb):.1f} (base) vs "
                   f"{max(lc):.1f} (candidate)")

    def charging(results: Sequence[Any]) -> set[Any]:
        return {(r.state_before or {}).get("charging") for r in results}

    if charging(base) != charging(cand):
        out.append("charging state differs")
    for field_name, what in (("engine_version", "engine version"), ("model_sha256", "model file")):
        vb, vc = {getattr(r, field_name) for r in base}, {getattr(r, field_name) for r in cand}
        if vb != vc:
            out.append(f"{what} differs: {', '.join(sorted(x[:12] for x in vb))} vs {', '.join(sorted(x[:12] for x in vc))}")
    return out


def summarize(comparisons: Sequence[Comparison]) -> dict[str, int]:
    counts = {"slower": 0, "faster": 0, "same": 0, "unknown": 0}
    for c in comparisons:
        counts[c.verdict.verdict] += 1
    return counts
