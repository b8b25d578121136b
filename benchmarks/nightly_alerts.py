#!/usr/bin/env python3
"""Can nightly alerts be trusted on a drifting machine? Precision and recall of the paired nightly rules
(devicelab.analysis.nightly), from lockstep rounds measured here under real drift.

1. Measures A/A lockstep rounds on the host, as a nightly A/B run times them: `devicelab run` of ONNX Runtime under
   two labels (SqueezeNet-1.1, 1 thread, pinned by `affinity: big`), while a *neighbour* process pinned to the same
   CPU burns a duty cycle of each PERIOD seconds (--duties, default 0 %, 35 %, 70 %; --period, default 20 ms): one
   pool of rounds per duty, one machine speed each. Prints each pool's per-round A/A ratio spread.
2. Simulates on split data, never tuned on what it reports: each pool's even rounds choose a lever, its odd rounds
   (with another seed) report every lever. The levers (LEVERS): at most 24 or 48 rounds a night, and whether an
   undecided night's paired p alone opens a suspected alert (nightly.Tracker's suspect_p, `regress --suspect-p`).
   * histories (default): HISTORIES histories of NIGHTS nights per half and lever. Each night's machine is one of
     the pools (a random walk between them: the drift), and its rounds are drawn from that pool adaptively as an A/B
     suite's rounds are (3 to the lever's most, until the night is decided). One history in three gets a real +5 %
     step in the candidate on a random night, one in three +3 %, one in three none: the candidate's samples are
     multiplied from that night on. An operator acknowledges each confirmed alert the morning after (keeping the
     reference), as `regress ack` does. Prints, per step size, the share of steps caught the night they land
     (caught = an alert listed as suspected or confirmed that night) and within two nights, the alerts' precision
     (an alert is true when the candidate really was slower than the level it was judged at), and false alerts per
     100 nights without a change;
   * --per-night N: N nights with a +5 % step, N/2 with +3 %, 2N without a change, each at level 1 on a random pool,
     every lever read off the same drawn night; prints the share listed the night it lands, the share of nights
     without a change listed, the mean rounds, and the precision that implies at one step per 30 quiet nights.
Goals: precision >= 95 %, >= 90 % of +5 % steps caught the night they land. The last line is the +5 % same-night
recall of the lever chosen on the first half, measured on the second.

usage: python benchmarks/nightly_alerts.py [HISTORIES] [NIGHTS] [ROUNDS] [--period S] [--duties 0,0.35,0.7]
                                           [--data F.npz] [--measure-only | --per-night N]
       (defaults 150 histories per half, 24 nights, 20 rounds measured per pool)
--data F.npz (or NIGHTLY_ALERTS_DATA) keeps the measured pools (written once, then read) to rerun on the same data.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
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


def measure_pool(rounds: int, duty: float, period: float) -> Pool:
    cpu = max(os.sched_getaffinity(0))  # `affinity: big` with 1 thread pins to the highest-numbered CPU
    neighbour = None
    if duty > 0:
        neighbour = subprocess.Popen([sys.executable, "-c", NEIGHBOUR, str(cpu), str(duty), str(period)])
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


def pools(rounds: int, period: float, saved: str | None, duties: tuple[float, ...] = DUTIES) -> list[Pool]:
    if saved and Path(saved).is_file():
        with np.load(saved) as d:
            parts = np.split(d["samples"], np.cumsum(d["lengths"])[:-1])
            out: list[Pool] = [[] for _ in range(int(d["pool"].max()) + 1)]
            for i, k in enumerate(d["pool"]):
                out[int(k)].append((parts[2 * i], parts[2 * i + 1]))
            return out
    measured = []
    for duty in duties:
        t = time.perf_counter()
        measured.append(measure_pool(rounds, duty, period))
        print(f"measured {len(measured[-1])} rounds with the neighbour at {duty:.0%} of each {period:g} s in "
              f"{time.perf_counter() - t:.0f} s", flush=True)
    if saved:
        flat = [x for pool in measured for pair in pool for x in pair]
        np.savez(saved, samples=np.concatenate(flat), lengths=np.asarray([len(x) for x in flat]),
                 pool=np.asarray([k for k, pool in enumerate(measured) for _ in pool]))
    return measured


@dataclass(frozen=True)
class Rules:
    """One way of running and judging nights: the most rounds a night may take, and whether an undecided night's
    paired p alone opens a suspected alert (nightly.Tracker's suspect_p)."""

    name: str
    max_rounds: int = 24
    suspect_p: float | None = None


LEVERS = (Rules("as is: <=24 rounds, verdict only"), Rules("<=48 rounds", 48),
          Rules("p < 0.01 alone suspects", 24, 0.01), Rules("<=48 rounds and p alone", 48, 0.01))


def night(rng: np.random.Generator, pool: Pool, multiplier: float, tracker: nt.Tracker, run_id: str,
          max_rounds: int) -> tuple[nt.Night, nt.Verdict]:
    """One night's adaptive rounds (3 to max_rounds, until decided at the tracker's level), drawn from the pool."""
    ref: list[list[float]] = []
    cand: list[list[float]] = []
    for r in range(1, max_rounds + 1):
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


def history(rng: np.random.Generator, measured: list[Pool], nights: int, step: float, rules: Rules
            ) -> tuple[list[dict[str, float | bool]], int | None]:
    """Per night: whether an alert was listed that night, whether an alert opened, whether the candidate was
    really slower than the level it was judged at, and the rounds run; and the night of the step."""
    at = int(rng.integers(6, nights - 3)) if step else None
    tracker = nt.Tracker("s", "key", resamples=300, suspect_p=rules.suspect_p)
    k = int(rng.integers(len(measured)))
    out = []
    for i in range(nights):
        k = int(np.clip(k + rng.integers(-1, 2), 0, len(measured) - 1))  # the drift: a random walk of machine speeds
        multiplier = 1 + step if at is not None and i >= at else 1.0
        really_slower = multiplier / tracker.level > 1.01
        opened_before = len(tracker.alerts)
        n, v = night(rng, measured[k], multiplier, tracker, f"n{i}", rules.max_rounds)
        tracker.add(n, v)
        listed = tracker.current is not None and tracker.counted
        out.append({"listed": listed, "opened": len(tracker.alerts) > opened_before, "really_slower": really_slower,
                    "no_change": multiplier == 1.0, "rounds": len(n.reference)})
        if tracker.current is not None and tracker.current.state == nt.CONFIRMED:
            tracker.ack(tracker.current.id)  # the operator saw it and keeps the reference
    return out, at


@dataclass
class Score:
    caught: dict[float, list[int]]  # step → [the night it lands, within two nights, steps]
    true_alerts: int
    false_alerts: int
    quiet_nights: int
    rounds: list[int]

    @property
    def precision(self) -> float:
        alerts = self.true_alerts + self.false_alerts
        return self.true_alerts / alerts if alerts else 1.0

    def recall(self, step: float) -> float:
        same, _, n = self.caught[step]
        return same / n if n else 0.0


def simulate(measured: list[Pool], histories: int, nights: int, rules: Rules, seed: int) -> Score:
    rng = np.random.default_rng(seed)
    score = Score({0.05: [0, 0, 0], 0.03: [0, 0, 0]}, 0, 0, 0, [])
    for h in range(histories):
        step = (0.05, 0.03, 0.0)[h % 3]
        nights_out, at = history(rng, measured, nights, step, rules)
        for row in nights_out:
            if row["opened"]:
                if row["really_slower"]:
                    score.true_alerts += 1
                else:
                    score.false_alerts += 1
            score.quiet_nights += bool(row["no_change"])
            score.rounds.append(int(row["rounds"]))
        if at is not None:
            c = score.caught[step]
            c[2] += 1
            c[0] += bool(nights_out[at]["listed"])
            c[1] += any(bool(nights_out[i]["listed"]) for i in range(at, min(at + 2, nights)))
    return score


def describe(score: Score) -> str:
    parts = []
    for step, (same, two, n) in score.caught.items():
        parts.append(f"+{step:.0%} caught the night they land {same}/{n} ({same / max(n, 1):.1%}), within two nights "
                     f"{two}/{n} ({two / max(n, 1):.1%})")
    alerts = score.true_alerts + score.false_alerts
    parts.append(f"alerts {alerts}, false {score.false_alerts}, precision {score.precision:.1%}, false alerts per 100 "
                 f"quiet nights {100 * score.false_alerts / max(score.quiet_nights, 1):.2f}")
    parts.append(f"rounds a night: mean {np.mean(score.rounds):.1f}, p90 {np.percentile(score.rounds, 90):.0f}")
    return "\n    ".join(parts)


def spread(pool: Pool) -> str:
    ratios = np.asarray([float(np.median(b) / np.median(a)) for a, b in pool])
    logs = np.log(ratios)
    return (f"per-round A/A ratios {ratios.min():.3f}–{ratios.max():.3f}, SD of log ratio {logs.std(ddof=1):.3f}, "
            f"middle 90 % {np.exp(np.percentile(logs, 5)):.3f}–{np.exp(np.percentile(logs, 95)):.3f}")


def night_outcomes(rng: np.random.Generator, pool: Pool, multiplier: float) -> dict[str, bool]:
    """One night at level 1, its rounds drawn from the pool and judged after each (3 to 48, until decided): whether
    it is listed the night it lands under each lever. The levers share the night: <=24 stops at the first round
    decided by 24 (else undecided at 24), <=48 at the first by 48."""
    ref: list[list[float]] = []
    cand: list[list[float]] = []
    at: dict[int, nt.Verdict] = {}
    for r in range(1, 49):
        a, b = pool[int(rng.integers(len(pool)))]
        if rng.random() < 0.5:
            a, b = b, a
        ref.append(list(a))
        cand.append(list(b * multiplier))
        if r < 3:
            continue
        v = nt.judge(nt.Night("n", "n", ref, cand), 1.0, resamples=300)
        if v.verdict != "unknown" or r in (24, 48):
            at[r] = v
        if v.verdict != "unknown":
            break
    out = {}
    for rules in LEVERS:
        v = at[max(r for r in at if r <= rules.max_rounds)]  # where the lever stops: decided, or its last round
        p_only = (rules.suspect_p is not None and v.verdict == "unknown" and v.p_slower is not None
                  and v.p_slower < rules.suspect_p and (v.ratio or 0) > 1)
        out[rules.name] = v.verdict == "slower" or p_only
    out["rounds24"] = max(r for r in at if r <= 24)  # type: ignore[assignment]
    out["rounds48"] = max(at)  # type: ignore[assignment]
    return out


def per_night(measured: list[Pool], nights: int, seed: int) -> dict[str, dict[str, float]]:
    """Per lever: the share of +5 % and +3 % nights listed the night they land, the share of nights without a
    change listed (a false alert opens), and the precision that implies with one step per 30 quiet nights."""
    rng = np.random.default_rng(seed)
    counts = {rules.name: {0.05: 0, 0.03: 0, 0.0: 0} for rules in LEVERS}
    made = {0.05: nights, 0.03: nights // 2, 0.0: 2 * nights}
    rounds = {24: [], 48: []}
    for step, n in made.items():
        for _ in range(n):
            o = night_outcomes(rng, measured[int(rng.integers(len(measured)))], 1 + step)
            rounds[24].append(o["rounds24"])
            rounds[48].append(o["rounds48"])
            for rules in LEVERS:
                counts[rules.name][step] += bool(o[rules.name])
    out = {}
    for rules in LEVERS:
        c = counts[rules.name]
        false_rate = c[0.0] / made[0.0]
        caught = (c[0.05] / made[0.05] + c[0.03] / made[0.03]) / 2
        out[rules.name] = {"recall5": c[0.05] / made[0.05], "recall3": c[0.03] / made[0.03],
                           "false_rate": false_rate, "n5": made[0.05], "n3": made[0.03], "n0": made[0.0],
                           "precision": caught / (caught + 30 * false_rate) if caught + false_rate else 1.0,
                           "rounds": float(np.mean(rounds[rules.max_rounds]))}
    return out


def per_night_text(name: str, r: dict[str, float]) -> str:
    return (f"{name}: +5 % listed the night it lands {r['recall5']:.1%} (of {r['n5']:.0f}), +3 % {r['recall3']:.1%} "
            f"(of {r['n3']:.0f}), nights without a change listed {r['false_rate']:.1%} (of {r['n0']:.0f}; implied "
            f"precision at one step per 30 quiet nights {r['precision']:.1%}), mean rounds {r['rounds']:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("histories", type=int, nargs="?", default=150, help="histories per half (default 150)")
    parser.add_argument("nights", type=int, nargs="?", default=24)
    parser.add_argument("rounds", type=int, nargs="?", default=20, help="rounds measured per pool")
    parser.add_argument("--period", type=float, default=PERIOD_S,
                        help="the neighbour's duty period in seconds (default 0.02: on and off within an iteration)")
    parser.add_argument("--data", default=os.environ.get("NIGHTLY_ALERTS_DATA"),
                        help="an .npz keeping the measured pools (written once, then read)")
    parser.add_argument("--duties", default=",".join(f"{d:g}" for d in DUTIES),
                        help="the neighbour's duty per pool (default 0,0.35,0.7; a neighbour at 0 is none, whatever "
                             "the period)")
    parser.add_argument("--measure-only", action="store_true", help="measure (and keep) the pools, no simulation")
    parser.add_argument("--per-night", type=int, default=0, metavar="N",
                        help="instead of histories: N nights with a +5 %% step, N/2 with +3 %%, 2N without a change, "
                             "per half, each judged at level 1 under every lever")
    args = parser.parse_args()
    print(machine(), f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    duties = tuple(float(x) for x in args.duties.split(","))
    measured = pools(args.rounds, args.period, args.data, duties)
    if len(measured) != len(duties):
        raise SystemExit(f"--duties: {args.data} holds {len(measured)} pools, not {len(duties)}")
    for duty, pool in zip(duties, measured, strict=True):
        med = float(np.median([np.median(a) for a, _ in pool]))
        print(f"pool neighbour {duty:.0%}: {len(pool)} rounds, median {med * 1e3:.2f} ms, {spread(pool)}")
    speeds = [float(np.median([np.median(a) for a, _ in pool])) for pool in measured]
    print(f"drift between pools: {max(speeds) / min(speeds) - 1:.1%} (slowest vs fastest machine state)")
    if args.measure_only:
        return
    if args.per_night:
        # Never tuned on what is reported: the lever is chosen on nights drawn from the even rounds of each pool, and
        # reported on nights drawn from the odd rounds, with another seed.
        t0 = time.perf_counter()
        first = per_night([pool[0::2] for pool in measured], args.per_night, 1)
        for name, r in first.items():
            print("choosing half, " + per_night_text(name, r), flush=True)
        ok = {n: r for n, r in first.items() if r["precision"] >= 0.95} or first
        chosen = max(ok, key=lambda n: (ok[n]["recall5"], -ok[n]["rounds"]))
        print(f"chosen on the first half: {chosen}", flush=True)
        second = per_night([pool[1::2] for pool in measured], args.per_night, 2)
        for name, r in second.items():
            print("held-out half, " + per_night_text(name, r) + (" (chosen)" if name == chosen else ""))
        print(f"simulated in {time.perf_counter() - t0:.0f} s")
        print(f"{second[chosen]['recall5']:.3f}")
        return
    # Never tuned on what is reported: each pool's rounds are split in two (even and odd rounds); the lever is
    # chosen on histories drawn from the first halves, and every lever is then reported on histories drawn from the
    # second halves with another seed.
    choose = [pool[0::2] for pool in measured]
    held_out = [pool[1::2] for pool in measured]
    t0 = time.perf_counter()
    scores = [(rules, simulate(choose, args.histories, args.nights, rules, 1)) for rules in LEVERS]
    for rules, score in scores:
        print(f"choosing half, {rules.name}:\n    {describe(score)}")
    eligible = [(rules, score) for rules, score in scores if score.precision >= 0.95] or scores
    chosen = max(eligible, key=lambda x: (x[1].recall(0.05), -float(np.mean(x[1].rounds))))[0]
    print(f"chosen on the first half: {chosen.name} (precision >= 95 %, then the most +5 % caught the night they "
          "land, then the fewest rounds)")
    final = 0.0
    for rules in LEVERS:
        score = simulate(held_out, args.histories, args.nights, rules, 2)
        mark = " (chosen)" if rules == chosen else ""
        print(f"held-out half, {rules.name}{mark}:\n    {describe(score)}")
        if rules == chosen:
            final = score.recall(0.05)
    print(f"{args.histories} histories of {args.nights} nights per lever and half, simulated in "
          f"{time.perf_counter() - t0:.0f} s")
    print(f"{final:.3f}")


if __name__ == "__main__":
    main()
