#!/usr/bin/env python3
"""Are compare's verdicts right? False-positive rate and power, from sample distributions measured here.

1. Measures real distributions on the host, as a user runs an A/B: `devicelab run` of one engine under two
   labels (ONNX Runtime 1 thread, SqueezeNet-1.1 and MobileNet-v2, default adaptive protocol), REPEATS rounds —
   an A/A, so every round is two real processes that ran next to each other, with the machine's drift in them.
2. Simulates trials by drawing measured rounds (with replacement; which label plays base is a coin flip), the
   candidate's samples multiplied by (1 + effect); analysis.compare.verdict decides:
   * A/B with default settings: a suite with labels and no `repeats` runs adaptive rounds, {min: 3, max: 24}: a
     round at a time until compare (paired by round, as `compare RUN:a RUN:b` pairs them) decides;
   * A/B, `repeats: 3`: one run of exactly 3 rounds, paired;
   * two separate runs of 3, 5 and 8 processes each, compared unpaired (rounds drawn independently per side);
   * A/B sampled to a tighter CI: rounds measured with the TIGHT protocol, adaptive up to MAX rounds.
Prints the false-positive rate (A/A trials called slower or faster), the power per effect and the smallest
change detected with 0.9 power. Goals: FP ≤ 1 %; power ≥ 0.9 at +5 % by default; ≥ 0.9 at +3 % in an A/B mode.
The simulation resamples a pool of measured rounds, so it is only as representative as the time it was measured
in: the figures it prints say how noisy that was.

usage: python benchmarks/stats_validation.py [TRIALS] [REPEATS] [MAX]   (defaults 200, 40, 48)
env: STATS_VALIDATION_DATA=F.npz keeps the measured rounds (written once, then read), to rerun on the same data.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _common import devicelab_run, machine

from devicelab.analysis.compare import verdict
from devicelab.config import AB_DEFAULT_REPEATS


Rounds = list[tuple[int, np.ndarray, np.ndarray]]  # (model index, label a's samples, label b's samples), one per round


# The A/B mode that samples each process to a tighter CI (under lockstep, what is left of the noise within a round
# is mostly each process's own sampling error).
TIGHT = "{accuracy_inputs: 0, target_ci: 0.004, max_iterations: 1000, max_seconds: 12}"
DEFAULT = "{accuracy_inputs: 0}"


def measure(repeats: int, protocol: str = DEFAULT) -> Rounds:
    """Measured here, or read from STATS_VALIDATION_DATA (an .npz this script wrote; the tight protocol's rounds go
    next to it as F.tight.npz), to rerun the simulation on the same distributions."""
    saved = os.environ.get("STATS_VALIDATION_DATA")
    if saved and protocol != DEFAULT:
        saved = str(Path(saved).with_suffix(".tight.npz"))
    if saved and Path(saved).is_file():
        with np.load(saved) as d:
            if "lengths" in d:
                parts = np.split(d["samples"], np.cumsum(d["lengths"])[:-1])
                return [(int(m), parts[2 * i], parts[2 * i + 1]) for i, m in enumerate(d["models"])]
    rounds = _measure(repeats, protocol)
    if saved:
        flat = [x for _, a, b in rounds for x in (a, b)]
        np.savez(saved, samples=np.concatenate(flat), lengths=np.asarray([len(x) for x in flat]),
                 models=np.asarray([m for m, _, _ in rounds]))
    return rounds


def _measure(repeats: int, protocol: str) -> Rounds:
    """An A/A run as a user would run an A/B: one engine under two labels, interleaved in `repeats` rounds."""
    with tempfile.TemporaryDirectory() as tmp:
        suite = Path(tmp) / "s.yaml"
        suite.write_text("name: validation\nmodels: [squeezenet1_1, mobilenet_v2]\n"
                         "engines: [{name: onnxruntime, label: a}, {name: onnxruntime, label: b}]\n"
                         f"threads: [1]\nrepeats: {repeats}\nprotocol: {protocol}\n")
        results = devicelab_run(suite, {**os.environ, "DEVICELAB_DB": str(Path(tmp) / "db.sqlite")})["results"]
    models = sorted({r["model"] for r in results})
    by: dict[tuple[str, int], dict[str, np.ndarray]] = {}
    for r in results:
        if r["status"] == "ok":
            by.setdefault((r["model"], r["repeat"]), {})[r["label"]] = np.asarray(r["samples_s"])
    return [(models.index(m), pair["a"], pair["b"]) for (m, _), pair in sorted(by.items()) if len(pair) == 2]


def draw(rng: np.random.Generator, pool: Rounds, n: int, effect: float) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """n measured rounds of one model (with replacement; which label plays base is a coin flip, so A/A stays
    symmetric); the candidate's samples are multiplied by (1 + effect)."""
    base, cand = [], []
    for i in rng.integers(0, len(pool), size=n):
        _, a, b = pool[i]
        if rng.random() < 0.5:
            a, b = b, a
        base.append(a)
        cand.append(b * (1 + effect))
    return base, cand


def fixed(rng: np.random.Generator, pools: list[Rounds], effect: float, trials: int, n: int, paired: bool
          ) -> tuple[float, float]:
    """(fraction called slower, fraction called faster). Unpaired: two runs, n processes each, at different
    times (rounds drawn independently for each side); paired: one run of n rounds."""
    slower = faster = 0
    for t in range(trials):
        pool = pools[t % len(pools)]
        if paired:
            base, cand = draw(rng, pool, n, effect)
        else:
            base, cand = draw(rng, pool, n, 0.0)[0], draw(rng, pool, n, effect)[1]
        v = verdict(base, cand, seed=t, resamples=400, paired=paired)
        slower += v.verdict == "slower"
        faster += v.verdict == "faster"
    return slower / trials, faster / trials


def adaptive(rng: np.random.Generator, pools: list[Rounds], effect: float, trials: int, most: int, least: int = 3
             ) -> tuple[float, float, float]:
    """The sweep's adaptive A/B rounds, paired as compare pairs them: (slower, faster, mean rounds used)."""
    slower = faster = rounds = 0
    for t in range(trials):
        pool = pools[t % len(pools)]
        base: list[np.ndarray] = []
        cand: list[np.ndarray] = []
        for r in range(1, most + 1):
            b, c = draw(rng, pool, 1, effect)
            base += b
            cand += c
            if r < least:
                continue
            v = verdict(base, cand, seed=t * 1000 + r, resamples=400, paired=True)
            if v.verdict != "unknown":
                break
        slower += v.verdict == "slower"
        faster += v.verdict == "faster"
        rounds += r
    return slower / trials, faster / trials, rounds / trials


def report(name: str, run: Callable[[float], tuple[float, ...]], effects: tuple[float, ...], trials: int) -> None:
    out = run(0.0)
    extra = f"; {out[2]:.1f} rounds on average" if len(out) > 2 else ""
    print(f"\n{name}:\n  A/A false positives: {out[0] + out[1]:.1%} (slower {out[0]:.1%}, faster {out[1]:.1%}) "
          f"over {trials} trials{extra}")
    smallest = None
    for effect in effects:
        out = run(effect)
        extra = f" ({out[2]:.1f} rounds on average)" if len(out) > 2 else ""
        print(f"  power at +{effect:.0%}: {out[0]:.2f}{extra}")
        if smallest is None and out[0] >= 0.9:
            smallest = effect
    print(f"  smallest change detected with 0.9 power: "
          f"{'+' + format(smallest, '.0%') if smallest else '> +' + format(effects[-1], '.0%')}")


def describe(pools: list[Rounds]) -> None:
    for k, pool in enumerate(pools):
        logs = np.log([[np.median(a), np.median(b)] for _, a, b in pool])
        unpaired = logs.std(ddof=1)
        paired = np.std(logs[:, 1] - logs[:, 0], ddof=1) / np.sqrt(2)
        series = logs.mean(axis=1) - logs.mean()
        lag1 = float(np.corrcoef(series[:-1], series[1:])[0, 1])
        sizes = [len(x) for _, a, b in pool for x in (a, b)]
        print(f"model {k}: {len(pool)} rounds; process-to-process sd {unpaired:.2%}, within a round (paired) "
              f"{paired:.2%}; lag-1 autocorrelation of round medians {lag1:.2f}; samples per process "
              f"{min(sizes)}–{max(sizes)} (median {int(np.median(sizes))})")


def main() -> None:
    trials = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    most = int(sys.argv[3]) if len(sys.argv) > 3 else 48
    rng = np.random.default_rng(1)
    fixed_effects, adaptive_effects = (0.02, 0.03, 0.04, 0.05, 0.07, 0.10), (0.02, 0.03, 0.04, 0.05)
    print("rounds measured with the default protocol:")
    pools = pools_of(measure(repeats))
    describe(pools)
    default = AB_DEFAULT_REPEATS["max"]
    report(f"A/B with default settings (labels, no `repeats`: adaptive {{min: 3, max: {default}}}, paired)",
           lambda e: adaptive(rng, pools, e, trials, default), adaptive_effects, trials)
    report("A/B, repeats: 3 (one run, paired by round)", lambda e: fixed(rng, pools, e, trials, 3, True),
           fixed_effects, trials)
    for n in (3, 5, 8):
        report(f"two separate runs of {n} processes each (unpaired: nothing ran together)",
               lambda e, n=n: fixed(rng, pools, e, trials, n, False), fixed_effects, trials)
    print(f"\nrounds measured with the tight protocol {TIGHT}:")
    tight = pools_of(measure(repeats, TIGHT))
    describe(tight)
    report(f"A/B sampled to a tighter CI (that protocol, adaptive {{min: 3, max: {most}}}, paired)",
           lambda e: adaptive(rng, tight, e, trials, most), adaptive_effects, trials)
    print(f"\nmachine: {machine()}; threshold 2 %, p < 0.01, bootstrap CIs with 400 resamples in simulation")


def pools_of(rounds: Rounds) -> list[Rounds]:
    return [[r for r in rounds if r[0] == m] for m in sorted({r[0] for r in rounds})]


if __name__ == "__main__":
    main()
