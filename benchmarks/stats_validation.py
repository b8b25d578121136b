#!/usr/bin/env python3
"""Are compare's verdicts right? False-positive rate and power, from sample distributions measured here.

1. Measures real distributions on the host: `devicelab run` of SqueezeNet-1.1 and MobileNet-v2 (ONNX Runtime,
   1 thread, default adaptive protocol), REPEATS processes each.
2. Splits them into process-to-process offsets (process median / config median) and within-process
   residuals (sample / process median), and records the sample sizes the adaptive protocol picked.
3. Simulates trials: each side draws P processes, each = a drawn offset × residuals resampled to a drawn
   sample size; the candidate is multiplied by (1 + effect). analysis.compare.verdict decides.
Prints the false-positive rate (A/A trials called slower or faster), the power for +3 % and +5 %, the
smallest change detected with 0.9 power, and the same for the A/B modes:
* fixed: suite `repeats: 8`, `protocol: {target_ci: 0.005, max_iterations: 400}` (8 processes a side, 2× samples);
* adaptive: suite `repeats: {min: 3, max: MAX}` — a round (one more process a side) at a time until compare
  decides (faster / slower / same), at most MAX rounds: what devicelab's sweep does with two labels.
Goals: FP ≤ 1 %; power ≥ 0.9 at +5 % by default; ≥ 0.9 at +3 % in an A/B mode.

usage: python benchmarks/stats_validation.py [TRIALS] [REPEATS] [MAX]   (defaults 300, 8, 24)
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from _common import devicelab_run, machine

from devicelab.analysis.compare import verdict


def measure(repeats: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Measured here, or read from STATS_VALIDATION_DATA (an .npz this script wrote), to rerun the simulation on the
    same distributions."""
    saved = os.environ.get("STATS_VALIDATION_DATA")
    if saved and Path(saved).is_file():
        with np.load(saved) as d:
            return d["offsets"], d["residuals"], [int(x) for x in d["sizes"]]
    data = _measure(repeats)
    if saved:
        np.savez(saved, offsets=data[0], residuals=data[1], sizes=np.asarray(data[2]))
    return data


def _measure(repeats: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
    with tempfile.TemporaryDirectory() as tmp:
        suite = Path(tmp) / "s.yaml"
        suite.write_text(f"name: validation\nmodels: [squeezenet1_1, mobilenet_v2]\nengines: [onnxruntime]\n"
                         f"threads: [1]\nrepeats: {repeats}\nprotocol: {{accuracy_inputs: 0}}\n")
        results = devicelab_run(suite, {**os.environ, "DEVICELAB_DB": str(Path(tmp) / "db.sqlite")})["results"]
    offsets, residuals, sizes = [], [], []
    for model in {r["model"] for r in results}:
        runs = [np.asarray(r["samples_s"]) for r in results if r["model"] == model and r["status"] == "ok"]
        overall = np.median(np.concatenate(runs))
        for s in runs:
            offsets.append(np.median(s) / overall)
            residuals.extend(s / np.median(s))
            sizes.append(len(s))
    return np.asarray(offsets), np.asarray(residuals), sizes


def side(rng: np.random.Generator, offsets: np.ndarray, residuals: np.ndarray, sizes: list[int], processes: int,
         scale: int, effect: float) -> list[np.ndarray]:
    return [rng.choice(offsets) * (1 + effect) * rng.choice(residuals, size=rng.choice(sizes) * scale)
            for _ in range(processes)]


def rate(rng: np.random.Generator, data: tuple[np.ndarray, np.ndarray, list[int]], effect: float, trials: int,
         processes: int = 3, scale: int = 1) -> tuple[float, float]:
    """(fraction called slower, fraction called faster)."""
    slower = faster = 0
    for t in range(trials):
        v = verdict(side(rng, *data, processes, scale, 0.0), side(rng, *data, processes, scale, effect),
                    seed=t, resamples=400)
        slower += v.verdict == "slower"
        faster += v.verdict == "faster"
    return slower / trials, faster / trials


def adaptive(rng: np.random.Generator, data: tuple[np.ndarray, np.ndarray, list[int]], effect: float, trials: int,
             most: int, least: int = 3) -> tuple[float, float, float]:
    """The sweep's adaptive A/B rounds: (fraction called slower, fraction called faster, mean rounds used)."""
    slower = faster = rounds = 0
    for t in range(trials):
        base: list[np.ndarray] = []
        cand: list[np.ndarray] = []
        for r in range(1, most + 1):
            base += side(rng, *data, 1, 1, 0.0)
            cand += side(rng, *data, 1, 1, effect)
            if r < least:
                continue
            v = verdict(base, cand, seed=t * 1000 + r, resamples=400)
            if v.verdict != "unknown":
                break
        slower += v.verdict == "slower"
        faster += v.verdict == "faster"
        rounds += r
    return slower / trials, faster / trials, rounds / trials


def main() -> None:
    trials = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    most = int(sys.argv[3]) if len(sys.argv) > 3 else 24
    data = measure(repeats)
    offsets, residuals, sizes = data
    print(f"measured: {len(offsets)} processes; process-to-process offsets sd {offsets.std():.2%} "
          f"(range {offsets.min():.3f}–{offsets.max():.3f}); within-process residual sd {residuals.std():.2%}; "
          f"samples per process {min(sizes)}–{max(sizes)} (median {int(np.median(sizes))})")
    rng = np.random.default_rng(1)
    for mode, processes, scale in (("default (3 processes a side)", 3, 1),
                                   ("A/B mode (repeats: 8, target_ci 0.5 %, max_iterations 400: 8 a side, 2x samples)", 8, 2)):
        s, f = rate(rng, data, 0.0, trials, processes, scale)
        print(f"\n{mode}:\n  A/A false positives: {s + f:.1%} (slower {s:.1%}, faster {f:.1%}) over {trials} trials")
        smallest = None
        for effect in (0.02, 0.03, 0.04, 0.05, 0.07, 0.10):
            power, _ = rate(rng, data, effect, trials, processes, scale)
            print(f"  power at +{effect:.0%}: {power:.2f}")
            if smallest is None and power >= 0.9:
                smallest = effect
        print(f"  smallest change detected with 0.9 power: {'+' + format(smallest, '.0%') if smallest else '> +10%'}")
    print(f"\nadaptive A/B mode (repeats: {{min: 3, max: {most}}}: one more process a side per round until decided):")
    s, f, used = adaptive(rng, data, 0.0, trials, most)
    print(f"  A/A false positives: {s + f:.1%} (slower {s:.1%}, faster {f:.1%}) over {trials} trials; "
          f"{used:.1f} rounds on average")
    smallest = None
    for effect in (0.02, 0.03, 0.04, 0.05):
        power, _, used = adaptive(rng, data, effect, trials, most)
        print(f"  power at +{effect:.0%}: {power:.2f} ({used:.1f} rounds on average)")
        if smallest is None and power >= 0.9:
            smallest = effect
    print(f"  smallest change detected with 0.9 power: {'+' + format(smallest, '.0%') if smallest else '> +5%'}")
    print(f"\nmachine: {machine()}; threshold 2 %, p < 0.01, two-level bootstrap CI (400 resamples in simulation)")


if __name__ == "__main__":
    main()
