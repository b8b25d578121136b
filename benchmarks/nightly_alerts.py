#!/usr/bin/env python3
"""Can nightly alerts be trusted on a drifting machine? Precision and recall of the paired nightly rules
(devicelab.analysis.nightly), from lockstep rounds measured here under real drift.

1. Measures A/A lockstep rounds on the host, as a nightly A/B run times them: `devicelab run` of ONNX Runtime under
   two labels (SqueezeNet-1.1, 1 thread, pinned by `affinity: big`), while a *neighbour* process pinned to the same
   CPU burns a duty cycle of each 20 ms (0 %, 35 %, 70 %): three pools of rounds, three machine speeds.
2. Simulates HISTORIES histories of NIGHTS nights. Each night's machine is one of the pools (a random walk between
   them: the drift), and its rounds are drawn from that pool adaptively as an A/B suite's rounds are (3 to 24, until
   the night is decided). One history in three gets a real +5 % step in the candidate on a random night, one in
   three +3 %, one in three none: the candidate's samples are multiplied from that night on. An operator
   acknowledges each confirmed alert the morning after (keeping the reference), as `regress ack` does.
Prints, per step size, the share of steps caught the night they land (caught = an alert listed as suspected or
confirmed that night) and within two nights, the alerts' precision (an alert is true when the candidate really was
slower than the level it was judged at), and false alerts per 100 nights without a change. Goals: precision ≥ 95 %,
≥ 90 % of +5 % steps caught the night they land. The last line is the +5 % same-night recall alone.

usage: python benchmarks/nightly_alerts.py [HISTORIES] [NIGHTS] [ROUNDS]   (defaults 150, 24, 20 per pool)
env: NIGHTLY_ALERTS_DATA=F.npz keeps the measured pools (written once, then read) to rerun on the same data.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import devicelab_run, machine

from devicelab.analysis import nightly as nt

DUTIES = (0.0, 0.35, 0.7)
PERIOD_S = 0.02
Pool = list[tuple[np.ndarray, np.ndarray]]  # (label a's samples, label b's samples), one per round

NEIGHBOUR = """
import os, sys, time
os.sched_setaffinity(0, {int(sys.argv[1])})
duty, period = float(sys.argv[2]), float(sys.argv[3])
while True:
    end = time.perf_counter() + duty * period
    while time.perf_counter() < end:
        pass
    time.sleep((1 - duty) * period)
"""


def measure_pool(rounds: int, duty: float) -> Pool:
    cpu = max(os.sched_getaffinity(0))  # `affinity: big` with 1 thread pins to the highest-numbered CPU
    neighbour = None
    if duty > 0:
        neighbour = subprocess.Popen([sys.executable, "-c", NEIGHBOUR, str(cpu), str(duty), str(PERIOD_S)])
    try:
        with tempfile.TemporaryDirectory() as tmp:
            suite = Path(tmp) / "s.yaml"
            suite.write_text("name: nightly-aa\nmodels: [squeezenet1_1]\n"
                             "engines: [{name: onnxruntime, label: a}, {name: onnxruntime, label: b}]\n"
                             f"threads: [1]\naffinity: big\nrepeats: {rounds}\nprotocol: {{accuracy_inputs: 0}}\n")
            results = devicelab_run(suite, {**os.environ, "DEVICELAB_DB": str(Path(tmp) / "db.sqlite")})["results"]
    finally:
        if neighbour is not None:
            neighbour.kill()
            neighbour.wait()
    by: dict[int, dict[str, np.ndarray]] = {}
    for r in results:
        if r["status"] == "ok":
            by.setdefault(r["repeat"], {})[r["label"]] = np.asarray(r["samples_s"])
    return [(p["a"], p["b"]) for _, p in sorted(by.items()) if len(p) == 2]


def pools(rounds: int) -> list[Pool]:
    saved = os.environ.get("NIGHTLY_ALERTS_DATA")
    if saved and Path(saved).is_file():
        with np.load(saved) as d:
            parts = np.split(d["samples"], np.cumsum(d["lengths"])[:-1])
            out: list[Pool] = [[] for _ in DUTIES]
            for i, k in enumerate(d["pool"]):
                out[int(k)].append((parts[2 * i], parts[2 * i + 1]))
            return out
    measured = []
    for duty in DUTIES:
        t = time.perf_counter()
        measured.append(measure_pool(rounds, duty))
        print(f"measured {len(measured[-1])} rounds with the neighbour at {duty:.0%} in {time.perf_counter() - t:.0f} s",
              flush=True)
    if saved:
        flat = [x for pool in measured for pair in pool for x in pair]
        np.savez(saved, samples=np.concatenate(flat), lengths=np.asarray([len(x) for x in flat]),
                 pool=np.asarray([k for k, pool in enumerate(measured) for _ in pool]))
    return measured


def night(rng: np.random.Generator, pool: Pool, multiplier: float, tracker: nt.Tracker, run_id: str
          ) -> tuple[nt.Night, nt.Verdict]:
    """One night's adaptive rounds (3 to 24, until decided at the tracker's level), drawn from the night's pool."""
    ref: list[list[float]] = []
    cand: list[list[float]] = []
    for r in range(1, 25):
        a, b = pool[int(rng.integers(len(pool)))]
        if rng.random() < 0.5:
            a, b = b, a
        ref.append(list(a))
        cand.append(list(b * multiplier))
        if r < 3:
            continue
        n = nt.Night(run_id, run_id, ref, cand)
        v = nt.judge(n, tracker.level, resamples=300)
        if v.verdict != "unknown":
            break
    return n, v


def history(rng: np.random.Generator, measured: list[Pool], nights: int, step: float
            ) -> tuple[list[dict[str, float | bool]], int | None]:
    """Per night: whether an alert was listed that night, whether an alert opened, and whether the candidate was
    really slower than the level it was judged at; and the night of the step."""
    at = int(rng.integers(6, nights - 3)) if step else None
    tracker = nt.Tracker("s", "key", resamples=300)
    k = int(rng.integers(len(measured)))
    out = []
    for i in range(nights):
        k = int(np.clip(k + rng.integers(-1, 2), 0, len(measured) - 1))  # the drift: a random walk of machine speeds
        multiplier = 1 + step if at is not None and i >= at else 1.0
        really_slower = multiplier / tracker.level > 1.01
        opened_before = len(tracker.alerts)
        n, v = night(rng, measured[k], multiplier, tracker, f"n{i}")
        tracker.add(n, v)
        listed = tracker.current is not None and v.verdict == "slower"
        out.append({"listed": listed, "opened": len(tracker.alerts) > opened_before, "really_slower": really_slower,
                    "no_change": multiplier == 1.0})
        if tracker.current is not None and tracker.current.state == nt.CONFIRMED:
            tracker.ack(tracker.current.id)  # the operator saw it and keeps the reference
    return out, at


def main() -> None:
    histories = int(sys.argv[1]) if len(sys.argv) > 1 else 150
    nights = int(sys.argv[2]) if len(sys.argv) > 2 else 24
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    print(machine())
    measured = pools(rounds)
    for duty, pool in zip(DUTIES, measured, strict=True):
        ratios = [float(np.median(b) / np.median(a)) for a, b in pool]
        med = float(np.median([np.median(a) for a, _ in pool]))
        print(f"pool neighbour {duty:.0%}: {len(pool)} rounds, median {med * 1e3:.2f} ms, per-round A/A ratios "
              f"{min(ratios):.3f}–{max(ratios):.3f}")
    speeds = [float(np.median([np.median(a) for a, _ in pool])) for pool in measured]
    print(f"drift between pools: {max(speeds) / min(speeds) - 1:.1%} (slowest vs fastest machine state)")
    rng = np.random.default_rng(20261206)
    caught = {0.05: [0, 0, 0], 0.03: [0, 0, 0]}  # same night, within two nights, steps
    true_alerts = false_alerts = quiet_nights = 0
    t0 = time.perf_counter()
    for h in range(histories):
        step = (0.05, 0.03, 0.0)[h % 3]
        nights_out, at = history(rng, measured, nights, step)
        for row in nights_out:
            if row["opened"]:
                if row["really_slower"]:
                    true_alerts += 1
                else:
                    false_alerts += 1
            quiet_nights += bool(row["no_change"])
        if at is not None:
            c = caught[step]
            c[2] += 1
            c[0] += bool(nights_out[at]["listed"])
            c[1] += any(bool(nights_out[i]["listed"]) for i in range(at, min(at + 2, nights)))
    print(f"{histories} histories of {nights} nights simulated in {time.perf_counter() - t0:.0f} s")
    for step, (same, two, n) in caught.items():
        print(f"+{step:.0%} steps: caught the night they land {same}/{n} ({same / n:.1%}), within two nights "
              f"{two}/{n} ({two / n:.1%})")
    alerts = true_alerts + false_alerts
    print(f"alerts opened: {alerts}, true {true_alerts}, false {false_alerts}; precision "
          f"{true_alerts / alerts:.1%}" if alerts else "no alerts opened")
    print(f"false alerts per 100 nights without a change: {100 * false_alerts / max(quiet_nights, 1):.2f}")
    same, _, n = caught[0.05]
    print(f"{same / n:.3f}")


if __name__ == "__main__":
    main()
