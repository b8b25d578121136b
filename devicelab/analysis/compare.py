"""A/B verdicts (pure): is the candidate faster, slower, the same, or unknown?

Rules (README, "Trusting the numbers"), threshold t (default 2 %):
  slower  — one-sided p < 0.01 (from a test whose unit is the process or the round, below) and the CI of the
            median ratio cand/base lies above 1 + t
  faster  — p < 0.01 the other way and the CI lies below 1 − t
  same    — the whole CI inside [1 − t, 1 + t]
  unknown — anything else: collect more samples rather than guess.

The statistic is the ratio of the medians of per-process medians: every process weighs the same (the adaptive
protocol samples a noisy process longer, which would otherwise let it dominate a pooled median), and one
odd process among three cannot move it. Its CI comes from a two-level bootstrap — processes resampled, then
samples within each — so process-to-process noise (1–3 % on these VMs, more while something else runs)
widens the interval instead of being mistaken for a change; and never narrower than a Welch t interval over the
processes (the bootstrap alone undercovers with 3 processes: measured, 2.7 % A/A false positives at 4.5 %
process-to-process noise); from 5 processes on, Yuen's 20 %-trimmed version, so one odd process cannot hide a step.
One process against a history (regress's newest run) gets the t prediction interval of a new process,
s²(1 + 1/n) with n − 1 degrees of freedom: 95 % coverage under normality (Yuen's variance there gave 0.90).
Paired (A/B labels of one run, matched by round): the machine drifts over minutes (measured here: lag-1
autocorrelation 0.73 between 6-second processes, ±5 % swings), and the two labels' processes of one round ran
next to each other, so the statistic becomes the median of the per-round ratios and its CI comes from rounds
resampled whole, never narrower than a paired (Yuen 20 %-trimmed) t interval of the per-round log ratios.
Drift shared by a round then cancels instead of widening the interval.
p comes from one test per mode (no KS, so no multiple-testing correction), never from samples pooled over processes
(the samples of one process share its machine state: p ≈ 1e-100 for a few percent between processes): separate runs,
an exact MWU over process medians (so 5 processes a side are needed); paired rounds, the (Yuen-trimmed) paired
t-test of the per-round log ratios, the CI's t floor; one process against a history, the t statistic of the
prediction interval.
A device's A/A noise floor f, when known, can stop a call: slower/faster also need the CI beyond 1 ± f, else the
verdict is unknown, "smaller than the device's noise floor". It never makes one 'same' (always the CI inside 1 ± t):
a CI that excludes 1 ± t is not the same, whatever the floor. The caller passes a floor measured the way the
comparison is made (verdicts.compare_sides: paired comparisons only a floor measured paired, or none).
"""

from __future__ import annotations

import math

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from devicelab.analysis.stats import resampled_medians

ALPHA = 0.01
DEFAULT_THRESHOLD = 0.02


@dataclass(frozen=True)
class Verdict:
    verdict: str  # faster, slower, same, unknown
    ratio: float | None  # center(candidate) / center(base): medians of per-process medians
    ci: tuple[float, float] | None
    p_slower: float | None
    p_faster: float | None
    threshold: float  # the asked threshold t: 'same' means the CI lies inside 1 ± t
    n_base: int
    n_candidate: int
    processes_base: int
    processes_candidate: int
    reasons: tuple[str, ...] = ()
    noise_floor: float | None = None  # the device's A/A floor applied: slower/faster need the CI beyond 1 ± it too

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "ratio": self.ratio, "ci": list(self.ci) if self.ci else None,
                "p_slower": self.p_slower, "p_faster": self.p_faster, "threshold": self.threshold,
                "noise_floor": self.noise_floor,
                "n_base": self.n_base, "n_candidate": self.n_candidate, "processes_base": self.processes_base,
                "processes_candidate": self.processes_candidate, "reasons": list(self.reasons)}


def center(processes: Sequence[Sequence[float]]) -> float:
    """The median of the per-process medians."""
    return float(np.median([np.median(p) for p in processes if len(p)]))


def _resampled_medians(side: Sequence[Sequence[float]], rng: np.random.Generator, resamples: int) -> np.ndarray:
    """[replicate k, process j]: the median of process j's samples resampled with replacement, drawn from order
    statistics (stats.resampled_medians: memory O(samples + resamples), not resamples × samples)."""
    return np.column_stack([resampled_medians(p, resamples, rng) for p in side])


def hierarchical_ratio_ci(base: Sequence[Sequence[float]], cand: Sequence[Sequence[float]], confidence: float = 0.95,
                          resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile CI of center(cand)/center(base), resampling processes and then samples within them.

    Vectorized: each process's within-process resampled medians are drawn once per bootstrap replicate (one numpy
    call per process); a replicate then resamples processes and takes their replicate medians. A process drawn twice
    in one replicate contributes the same resampled median twice, which only widens the interval a little."""
    rng = np.random.default_rng(seed)
    sides = [[np.asarray(p, float) for p in side if len(p)] for side in (base, cand)]

    def replicates(side: list[np.ndarray]) -> np.ndarray:
        medians = _resampled_medians(side, rng, resamples)
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
    ratios = _resampled_medians(cand, rng, resamples) / _resampled_medians(base, rng, resamples)
    picks = rng.integers(0, len(base), size=(resamples, len(base)))
    stats = np.median(np.take_along_axis(ratios, picks, axis=1), axis=1)
    a = (1 - confidence) / 2
    return float(np.quantile(stats, a)), float(np.quantile(stats, 1 - a))


TRIM = 0.2  # Yuen's trimmed t: the usual 20 %


def _trimmed(x: np.ndarray) -> tuple[float, float, int]:
    """Yuen's pieces for log medians x: the 20 % trimmed mean, a variance σ² such that σ²/h is the trimmed mean's
    variance (from the winsorized variance), and h, the values kept. Below 5 values nothing is trimmed: the mean,
    the sample variance and n."""
    x = np.sort(np.asarray(x, float))
    n = len(x)
    g = int(TRIM * n)
    h = n - 2 * g
    winsorized = np.clip(x, x[g], x[n - g - 1])
    return float(x[g:n - g].mean()), float((n - 1) * np.var(winsorized, ddof=1) / (h - 1)) if h > 1 else 0.0, h


def _interval(diff: float, se: float, df: float, confidence: float) -> tuple[float, float]:
    from scipy.stats import t as student

    if se == 0:
        return float(np.exp(diff)), float(np.exp(diff))
    q = float(student.ppf(0.5 + confidence / 2, df))
    return float(np.exp(diff - q * se)), float(np.exp(diff + q * se))


def _t_p(diff: float, se: float, df: float) -> tuple[float, float]:
    """One-sided p-values (cand slower, cand faster) of a t statistic diff/se with df degrees of freedom."""
    from scipy.stats import t as student

    if se == 0:
        return (0.0 if diff > 0 else 1.0), (0.0 if diff < 0 else 1.0)
    return float(student.sf(diff / se, df)), float(student.cdf(diff / se, df))


def paired_t_ci(base: Sequence[Sequence[float]], cand: Sequence[Sequence[float]], confidence: float = 0.95
                ) -> tuple[float, float] | None:
    """Yuen's trimmed t interval of the per-round log ratios of process medians (None below 2 rounds). One round
    that met a burst (measured here: ±11 % in a round whose neighbours agree within 1 %) cannot widen it the way it
    widens a plain t interval; with fewer than 5 rounds nothing is trimmed and it is the paired t."""
    d = np.log([np.median(c) / np.median(b) for b, c in zip(base, cand, strict=True)])
    if len(d) < 2:
        return None
    center_, var, h = _trimmed(d)
    return _interval(center_, float(np.sqrt(var / h)), h - 1, confidence)


def _prediction(base: Sequence[Sequence[float]], cand: Sequence[Sequence[float]]) -> tuple[float, float, int]:
    """One process against a history of n ≥ 2 (either side): the log ratio one/history-mean, the standard error of a
    new observation, s·√(1 + 1/n), and its n − 1 degrees of freedom — the t prediction interval, exact for normal
    log medians. (Yuen's winsorized variance, which was used here from 5 processes on, is the variance of the
    trimmed mean times h, ~0.69 σ² under normality, not the variance of a new process: 0.90 coverage at 95 %.)"""
    logs = [np.log([np.median(p) for p in side if len(p)]) for side in (base, cand)]
    ref, one = (logs[0], logs[1]) if len(logs[1]) == 1 else (logs[1], logs[0])
    n = len(ref)
    diff = float(one[0] - ref.mean()) if len(logs[1]) == 1 else float(ref.mean() - one[0])
    return diff, float(np.sqrt(np.var(ref, ddof=1) * (1 + 1 / n))), n - 1


def process_t_ci(base: Sequence[Sequence[float]], cand: Sequence[Sequence[float]], confidence: float = 0.95
                 ) -> tuple[float, float] | None:
    """Yuen–Welch (trimmed) t interval of the ratio of per-process medians' centres, unpaired. With one process on
    a side (a nightly run against its history), the other side's spread stands for both: the t prediction interval
    of a new process (_prediction), at its nominal coverage. None when neither side has two processes: their
    spread is unknowable."""
    logs = [np.log([np.median(p) for p in side if len(p)]) for side in (base, cand)]
    nb, nc = len(logs[0]), len(logs[1])
    if max(nb, nc) < 2 or min(nb, nc) < 1:
        return None
    if min(nb, nc) < 2:
        diff, se, df = _prediction(base, cand)
        return _interval(diff, se, df, confidence)
    (mb, var_b, hb), (mc, var_c, hc) = _trimmed(logs[0]), _trimmed(logs[1])
    db, dc = var_b / hb, var_c / hc
    se = float(np.sqrt(db + dc))
    df = (db + dc) ** 2 / (db**2 / (hb - 1) + dc**2 / (hc - 1)) if db or dc else 1.0
    return _interval(mc - mb, se, df, confidence)


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
    t = threshold
    gate = max(threshold, noise_floor or 0.0)  # how far beyond 1 a CI must lie to be called slower or faster
    reasons: list[str] = []
    counts = dict(n_base=len(b), n_candidate=len(c), processes_base=sum(1 for p in base if len(p)),
                  processes_candidate=sum(1 for p in cand if len(p)), noise_floor=noise_floor or None)
    empty = [name for name, side in (("base", b), ("candidate", c)) if not len(side)]
    if empty:
        # A summary-only engine (a tool:* engine that prints only min/avg/max) stores a figure per process, no samples.
        return Verdict("unknown", None, None, None, None, t, reasons=tuple(reasons + [
            f"the {' and '.join(empty)} side{'s have' if len(empty) > 1 else ' has'} no per-iteration samples "
            "(summary-only results, as tool:* engines that print only min/avg/max give): a verdict needs the "
            "samples; use an engine that reports every iteration"]), **counts)
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
    if t_ci is None:
        # One process a side (or one round): the CI above sees only noise within a process, and the spread between
        # processes (1–6 % on these VMs) is unknowable, so nothing can be called.
        return Verdict("unknown", ratio, (lo, hi), None, None, t, reasons=tuple(reasons + [
            "one process a side: process-to-process noise cannot be estimated; use repeats of 3 or more, or pool "
            "runs per side (RUN_A,RUN_B)"]), **counts)
    lo, hi = min(lo, t_ci[0]), max(hi, t_ci[1])
    few = min(counts["processes_base"], counts["processes_candidate"])
    if paired:
        # The unit is the round (samples of one process share its machine state, so a test over pooled samples
        # gives p ≈ 1e-100 for a few percent between processes): the paired t-test of the per-round log ratios,
        # Yuen-trimmed from 5 rounds on — the statistic of the CI's t floor. Unlike a sign or Wilcoxon test
        # (smallest p 2⁻ⁿ: 7 rounds before p < 0.01 is possible) it can decide from 3 rounds.
        d = np.log([np.median(y) / np.median(x) for x, y in zip(base, cand, strict=True)])
        center_, var, h = _trimmed(d)
        p_slower, p_faster = _t_p(center_, float(np.sqrt(var / h)), h - 1)
    elif few < 2:
        # One process against a history: the t statistic of its prediction interval, the history's spread for both.
        p_slower, p_faster = _t_p(*_prediction(base, cand))
    else:
        # Unpaired runs: the processes are the independent units (samples of one process share its machine state,
        # so a test over samples gives p = 1e-100 for a 5 % difference between two sets of processes). Exact MWU over
        # the process medians: at most 1 % of A/A comparisons get p < 0.01, whatever the noise looks like (measured:
        # three processes a side from a machine switching between speed regimes were called changed in 1.75 % of
        # A/A trials by the t interval and sample MWU). Its smallest one-sided p is 1/C(n+m, n): 5 processes a side
        # reach p < 0.01 (1/252), so do 4 and 5 (1/126) or 3 and 7 (1/120), never 3 and 3 (1/20).
        mb, mc = [float(np.median(x)) for x in base], [float(np.median(x)) for x in cand]
        p_slower = float(mannwhitneyu(mc, mb, alternative="greater", method="exact").pvalue)
        p_faster = float(mannwhitneyu(mc, mb, alternative="less", method="exact").pvalue)
        if 1 / math.comb(len(mb) + len(mc), len(mb)) >= ALPHA:
            reasons.append(f"{len(mb)} and {len(mc)} processes: separate runs this small cannot reach p < {ALPHA:g} "
                           "(5 a side can): pool runs (RUN_A,RUN_B), or run the two builds as labels of one run "
                           "(paired)")
    if few < 3:
        reasons.append("fewer than 3 processes on a side: process-to-process noise is not fully in the CI")
    # A floor can stop a change from being called, never make it 'same': 'same' is the CI inside 1 ± t, floor or not.
    called = ("slower" if p_slower < ALPHA and lo > 1 + t else "faster" if p_faster < ALPHA and hi < 1 - t else None)
    if called and (lo > 1 + gate if called == "slower" else hi < 1 - gate):
        v = called
    elif called:
        v = "unknown"
        reasons.append(f"the change is smaller than the device's noise floor ({noise_floor:.1%}): not called")
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
        out.append("one side was throttled (a frequency cap below maximum, or the device's own thermal status)")

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
