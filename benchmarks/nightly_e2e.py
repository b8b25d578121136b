#!/usr/bin/env python3
"""Nightly A/B alerts end to end: NIGHTS real nights of `devicelab run` then `devicelab regress`, with real steps in
the candidate's work and a machine that drifts, on the host or on the emulated farm.

Each night:
* the machine drifts: a *neighbour* process pinned to the CPU the runs are pinned to (`affinity: big`, 1 thread:
  the highest-numbered CPU) burns a duty cycle of each PERIOD seconds; the duty moves by a random walk between
  0 %, 35 % and 70 % from night to night;
* two runner builds are compiled from examples/protocol_runner.c, the reference and tonight's candidate, whose
  inference (a checksum pass over the model's bytes) covers WORK ‰ of the bytes (the reference 1000 ‰ every night):
  a real +5 % or +3 % step is a candidate build that really does 5 % or 3 % more work, from its night on
  (default schedule over 24 nights: +5 % on night 4, +3 % on night 9, +5 % on night 14, +3 % on night 19);
* `devicelab run --suite S` (host) or `devicelab run --farm ADDR --suite S` (farm: a `devicelab farm scheduler`,
  `devicelab farm agent` and one emulated Android phone on loopback, the store a real PostgreSQL server started as
  tests/pg_server.py starts it) runs the two builds as the labels `reference` and `candidate`, ROUNDS rounds in
  lockstep (with --max-rounds: adaptive rounds, ROUNDS first, then one at a time until the pair is decided, at most
  MAX_ROUNDS — the shipped nightly suite's `repeats: {min: 3, max: 48}` is `--rounds 3 --max-rounds 48`);
* `devicelab regress --json` judges the night; its exit code is the alert; an operator acknowledges a confirmed
  alert the morning after (`devicelab regress ack ALERT`, the reference kept), as a nightly team would.
Prints one line per night (work, neighbour duty, paired ratio and CI, verdict, listed alert, exit codes of run and
regress), then the alerts' precision (an alert is true when the candidate really was slower than the level it was
judged at: more work than at the last acknowledgement) and the steps caught the night they land (listed as
suspected or confirmed that night) and within two nights.

    python benchmarks/nightly_e2e.py --where host|farm [--nights 24] [--rounds 10 [--max-rounds 48]] [--period 1.0]
                                     [--seed 17]

Needs a C compiler (host); adb, qemu-aarch64-static, unshare, aarch64-linux-gnu-gcc and PostgreSQL's server
binaries (farm), as tests/test_farm.py. The last line is `precision P recall(+5 %) R`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from farm import Procs, adb_binary, devicelab_exe, free_port, wait_for  # noqa: E402
from nightly_alerts import NEIGHBOUR  # noqa: E402

DUTIES = (0.0, 0.35, 0.7)
RUNNER_C = HERE.parent / "examples" / "protocol_runner.c"
INFER = "    for (size_t i = 0; i < model_size; ++i) h = (h ^ model[i]) * 1099511628211ull;\n"
# WORK_PERMILLE ‰ of the model's bytes per inference (≤ 2000: the bytes past the end are read again from the start).
INFER_WORK = ("    size_t n = model_size * WORK_PERMILLE / 1000;\n"
              "    for (size_t i = 0; i < n; ++i) h = (h ^ model[i < model_size ? i : i - model_size]) * "
              "1099511628211ull;\n")
# Short nights: each process measures about one second (a whole neighbour period at the default 1 s).
PROTOCOL = {"warmup_iterations": 2, "warmup_seconds": 0.0, "min_iterations": 10, "min_seconds": 1.0,
            "max_iterations": 1000, "max_seconds": 1.0, "cooldown_seconds": 0.0, "cooldown_timeout_seconds": 20,
            "timeout_seconds": 120, "accuracy_inputs": 0}


def schedule(nights: int) -> list[int]:
    """The candidate's work (‰ of the reference's) per night: +5 %, +3 %, +5 %, +3 % steps, five nights apart."""
    steps = {4: 1.05, 9: 1.03, 14: 1.05, 19: 1.03}
    work, out = 1000.0, []
    for i in range(nights):
        work *= steps.get(i, 1.0)
        out.append(round(work))
    return out


def build(source: Path, permille: int, out: Path, cross: bool) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    cc = ["aarch64-linux-gnu-gcc", "-O2", "-static"] if cross else [os.environ.get("CC", "cc"), "-O2"]
    subprocess.run([*cc, f"-DWORK_PERMILLE={permille}", "-o", str(out), str(source)], check=True, capture_output=True)


def runner_source(tmp: Path) -> Path:
    text = RUNNER_C.read_text()
    if INFER not in text:
        raise SystemExit(f"{RUNNER_C}: its infer() loop changed; update INFER in this script")
    out = tmp / "runner.c"
    out.write_text(text.replace(INFER, INFER_WORK))
    return out


def suite_text(builds: Path, rounds: int, device: str | None, max_rounds: int | None = None) -> str:
    suite = {"name": "nightly-e2e", "models": ["squeezenet1_1"], "threads": [1], "affinity": "big",
             "repeats": {"min": rounds, "max": max_rounds} if max_rounds else rounds, "protocol": PROTOCOL, "seed": 1,
             "engines": [{"name": "protocol", "label": "reference",
                          "options": {"binary": str(builds / "reference" / "runner")}},
                         {"name": "protocol", "label": "candidate",
                          "options": {"binary": str(builds / "candidate" / "runner")}}]}
    if device:
        suite["devices"] = [device]
    return json.dumps(suite)


def run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--where", choices=("host", "farm"), required=True)
    parser.add_argument("--nights", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=10, help="lockstep rounds per night (fixed), or the first "
                        "rounds of an adaptive night (with --max-rounds)")
    parser.add_argument("--max-rounds", type=int, default=None, help="adaptive nights: after --rounds rounds, one more "
                        "at a time until compare decides the pair, at most this many (examples/nightly/suite.yaml: "
                        "--rounds 3 --max-rounds 48)")
    parser.add_argument("--period", type=float, default=1.0, help="the neighbour's duty period in seconds")
    parser.add_argument("--seed", type=int, default=17, help="the duty random walk's seed")
    args = parser.parse_args()
    if args.nights < 6:
        raise SystemExit("--nights: at least 6")
    farm = args.where == "farm"
    tools = ["aarch64-linux-gnu-gcc", "qemu-aarch64-static", "unshare"] if farm else [os.environ.get("CC", "cc")]
    for tool in tools:
        if shutil.which(tool) is None:
            raise SystemExit(f"needs {tool}")

    tmp = Path(tempfile.mkdtemp(prefix="devicelab-nightly-e2e-"))
    home = tmp / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "DEVICELAB_DATA": str(tmp / "data")}
    for k in ("ANDROID_SERIAL", "DEVICELAB_DEVICES", "DEVICELAB_DB"):
        env.pop(k, None)
    procs = Procs()
    pg: Any = None
    neighbour: subprocess.Popen[bytes] | None = None
    cpu = max(os.sched_getaffinity(0))
    rows: list[dict[str, Any]] = []
    try:
        farm_args: list[str] = []
        device = None
        if farm:
            from pg_server import PgServer, missing_reason

            reason = missing_reason()
            if reason:
                raise SystemExit(reason)
            pg = PgServer().start()
            env["PGPASSFILE"] = str(pg.passfile)
            env["DEVICELAB_DB"] = pg.url(pg.create_database())
            env["ANDROID_ADB_SERVER_PORT"] = str(free_port())
            env["ADBUTILS_ADB_PATH"] = adb_binary()
            adb = [env["ADBUTILS_ADB_PATH"]]
            subprocess.run([*adb, "start-server"], env=env, check=True, capture_output=True, timeout=60)
            _, device = procs.start([sys.executable, "-m", "devicelab.testing.emulated_adb", "--port",
                                     str(free_port()), "--root", str(tmp / "phone")], env, tmp / "phone.log")
            subprocess.run([*adb, "connect", device], env=env, capture_output=True, timeout=30)
            _, scheduler = procs.start([devicelab_exe(), "farm", "scheduler", "--port", "0"], env,
                                       tmp / "scheduler.log")
            agent = subprocess.Popen([devicelab_exe(), "farm", "agent", "--scheduler", scheduler, "--beat-seconds",
                                      "2", "--scan-seconds", "2"], env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=(tmp / "agent.log").open("ab"))
            procs.procs.append(agent)

            def idle() -> bool:
                p = run([devicelab_exe(), "farm", "status", "--json"], env)
                if p.returncode != 0:
                    return False
                return any(x.get("device") == device and x.get("state") == "idle" for x in json.loads(p.stdout))

            wait_for("the phone's worker beating", idle)
            farm_args = ["--farm", scheduler]
        else:
            env["DEVICELAB_DB"] = str(tmp / "nightly.sqlite")
        source = runner_source(tmp)
        builds = tmp / "builds"
        build(source, 1000, builds / "reference" / "runner", farm)
        suite = tmp / "suite.yaml"
        suite.write_text(suite_text(builds, args.rounds, device, args.max_rounds))
        rng = random.Random(args.seed)
        duty_i = rng.randrange(len(DUTIES))
        acked_work = 1000
        work = schedule(args.nights)
        rounds = f"{args.rounds} to {args.max_rounds} rounds (adaptive)" if args.max_rounds else f"{args.rounds} rounds"
        print(f"{args.where}: {args.nights} nights, {rounds} each, neighbour on CPU {cpu} with a "
              f"{args.period:g} s period; store {'PostgreSQL' if farm else 'SQLite'}; load average "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
        for i in range(args.nights):
            duty_i = min(max(duty_i + rng.choice((-1, 0, 1)), 0), len(DUTIES) - 1)
            duty = DUTIES[duty_i]
            build(source, work[i], builds / "candidate" / "runner", farm)
            if duty > 0:
                neighbour = subprocess.Popen([sys.executable, "-c", NEIGHBOUR, str(cpu), str(duty), str(args.period)])
            t0 = time.monotonic()
            try:
                r = run([devicelab_exe(), "run", "--suite", str(suite), *farm_args, "--json"], env)
            finally:
                if neighbour is not None:
                    neighbour.kill()
                    neighbour.wait()
                    neighbour = None
            night_s = time.monotonic() - t0
            if r.returncode not in (0, 1):
                raise SystemExit(f"night {i}: run exit {r.returncode}: {r.stderr[-2000:]}")
            out = json.loads(r.stdout)
            run_id = out["run_id"]
            cpus = sorted({c for x in out["results"] for c in (x.get("cpus") or [])})
            not_ok = sum(x["status"] != "ok" for x in out["results"])
            g = run([devicelab_exe(), "regress", "--json"], env)
            if g.returncode not in (0, 1):
                raise SystemExit(f"night {i}: regress exit {g.returncode}: {g.stderr[-2000:]}")
            series = json.loads(g.stdout)["nightly"]
            if len(series) != 1:
                raise SystemExit(f"night {i}: {len(series)} nightly series, expected 1")
            s = series[0]
            n = s["nights"][-1]
            if n["run_id"] != run_id:
                raise SystemExit(f"night {i}: regress's newest night is {n['run_id']}, not {run_id}")
            listed = [a for a in s["alerts"] if run_id in a["nights"] and a["state"] in ("suspected", "confirmed")]
            opened = [a for a in s["alerts"] if a["opened_run"] == run_id]
            really_slower = work[i] > acked_work * 1.01
            row = {"night": i, "work": work[i], "step": i > 0 and work[i] != work[i - 1], "duty": duty,
                   "ratio": n["ratio"], "ci": n["ci"], "verdict": n["verdict"], "level": n["level"],
                   "listed": listed[0]["state"] if listed else None, "opened": bool(opened),
                   "really_slower": really_slower, "run_exit": r.returncode, "regress_exit": g.returncode,
                   "not_ok": not_ok, "seconds": night_s, "cpus": cpus}
            ack = ""
            confirmed = [a for a in s["alerts"] if a["state"] == "confirmed"]
            if confirmed:  # the operator, the morning after: seen, keep the reference
                a = run([devicelab_exe(), "regress", "ack", confirmed[0]["id"]], env)
                if a.returncode != 0:
                    raise SystemExit(f"night {i}: ack exit {a.returncode}: {a.stderr[-2000:]}")
                acked_work = work[i]
                ack = f" ack {confirmed[0]['id']}"
            rows.append(row)
            ci = f"[{n['ci'][0]:.3f}, {n['ci'][1]:.3f}]" if n["ci"] else "—"
            ratio = f"{n['ratio']:.3f}" if n["ratio"] is not None else "—"
            print(f"night {i:2d}: work {work[i] / 1000:.3f}{' (step)' if row['step'] else '       '} neighbour "
                  f"{duty:4.0%} ratio {ratio} {ci} ({n['rounds']} rounds) level {n['level']:.3f} {n['verdict']:7s} "
                  f"listed {row['listed'] or '—':9s} run exit {r.returncode} regress exit {g.returncode}{ack}; "
                  f"{night_s:.0f} s, CPUs {cpus}{f', {not_ok} rows not ok' if not_ok else ''}", flush=True)
    finally:
        if neighbour is not None:
            neighbour.kill()
            neighbour.wait()
        procs.stop()
        if farm and "ADBUTILS_ADB_PATH" in env:
            subprocess.run([env["ADBUTILS_ADB_PATH"], "kill-server"], env=env, capture_output=True, timeout=30)
        if pg is not None:
            pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    true_alerts = sum(r["opened"] and r["really_slower"] for r in rows)
    false_alerts = sum(r["opened"] and not r["really_slower"] for r in rows)
    alerts = true_alerts + false_alerts
    precision = true_alerts / alerts if alerts else 1.0
    print(f"alerts opened {alerts}: true {true_alerts}, false {false_alerts}; precision {precision:.1%}")
    recall5 = 0.0
    for size in (0.05, 0.03):
        at = [k for k, r in enumerate(rows) if r["step"] and abs(rows[k]["work"] / rows[k - 1]["work"] - 1 - size)
              < 0.005]
        same = sum(bool(rows[k]["listed"]) for k in at)
        two = sum(any(rows[j]["listed"] for j in range(k, min(k + 2, len(rows)))) for k in at)
        print(f"+{size:.0%} steps: caught the night they land {same}/{len(at)}, within two nights {two}/{len(at)}")
        if size == 0.05 and at:
            recall5 = same / len(at)
    quiet = [r for r in rows if not r["really_slower"]]
    print(f"regress exit 1 on {sum(r['regress_exit'] == 1 for r in rows)} of {len(rows)} nights; nights with the "
          f"candidate no slower than its acknowledged level: {len(quiet)}, alerts opened on them: "
          f"{sum(r['opened'] for r in quiet)}; run exit codes {sorted({r['run_exit'] for r in rows})}")
    print(f"precision {precision:.3f} recall(+5 %) {recall5:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
