"""Adaptive A/B rounds (`repeats: {min, max}`) on the farm, and nights judged at an acknowledged level.

On loopback with real Dask: `devicelab farm scheduler`, an agent serving the host's own device as a farm worker (no
phone, no qemu), a SQLite store shared by every process of the host, and runner-protocol programs written in Python
whose reported iteration times are set by the test (so whether a pair decides is the test's choice, not the
machine's). The stopping rule is sweep.ab_decision, the local run's; the store tests of the acknowledged level run on
SQLite and PostgreSQL."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from helpers import DEVICELAB, FAST_PROTOCOL, devicelab, run_json
from test_farm import Reachability, host_farm, plain_env, wait_for

from devicelab.result import Result
from devicelab.store import open_store

PROTOCOL = {**FAST_PROTOCOL, "accuracy_inputs": 0}


def fake_runner(path: Path, factor: float, count: Path | None = None, swing: tuple[float, float] = (1.25, 0.8),
                gate: Path | None = None) -> Path:
    """A runner (protocol v1) that reports iterations of 10 ms × `factor` (± 0.1 %) without timing anything. With
    `count` (a file it keeps), its processes take turns at `factor` × swing[0] and × swing[1]: beside a steady label,
    per-round ratios that swing between the two, deterministically (not by chance). With `gate`, each process
    writes `gate`.started, then waits for `gate` to exist before it says ready (the test's moment to act)."""
    path.write_text(f"""#!{sys.executable}
import json, random, sys, time
from pathlib import Path
factor = {factor!r}
gate = {str(gate) if gate else None!r}
if gate:
    Path(gate + ".started").touch()
    while not Path(gate).exists():
        time.sleep(0.05)
count = {str(count) if count else None!r}
if count:
    n = int(Path(count).read_text()) if Path(count).exists() else 0
    Path(count).write_text(str(n + 1))
    factor *= {swing!r}[n % 2]
rng = random.Random()
print(json.dumps({{"event": "ready", "protocol": 1, "load_s": 0.001, "first_s": 0.01, "warmups": 0}}), flush=True)
for line in sys.stdin:
    cmd = json.loads(line)
    if cmd["cmd"] == "stop":
        print(json.dumps({{"event": "done"}}), flush=True)
        break
    for _ in range(cmd["iterations"]):
        print(json.dumps({{"event": "iter", "s": 0.01 * factor * (1 + rng.gauss(0, 0.001))}}))
    print(json.dumps({{"event": "batch"}}), flush=True)
""")
    path.chmod(0o755)
    return path


def ab_suite(path: Path, labels: dict[str, Path], repeats: Any, devices: list[str] | None = None) -> Path:
    data: dict[str, Any] = {"name": path.stem, "models": ["squeezenet1_1"], "threads": [1], "repeats": repeats,
                            "seed": 3, "protocol": PROTOCOL,
                            "engines": [{"name": "protocol", "label": label, "options": {"binary": str(binary)}}
                                        for label, binary in labels.items()]}
    if devices:
        data["devices"] = devices
    path.write_text(yaml.safe_dump(data))
    return path


def starts(log: str, run_id: str) -> list[int]:
    """The rounds (1-based) the farm worker started for RUN_ID, in order (its log: "start RUN: … round N")."""
    return [int(line.rsplit("round ", 1)[1]) for line in log.splitlines() if f": start {run_id}: " in line]


def test_adaptive_rounds_on_the_farm_stop_when_decided_and_resume_runs_only_an_undecided_nights(
        tmp_path: Path, data_dir: Path) -> None:
    env = plain_env(tmp_path, data_dir)
    steady = fake_runner(tmp_path / "steady.py", 1.0)
    wobbly = fake_runner(tmp_path / "wobbly.py", 1.0, count=tmp_path / "wobbly.count")
    aa = ab_suite(tmp_path / "aa.yaml", {"a": steady, "b": steady}, {"min": 3, "max": 4}, ["farm-host"])
    undecided = ab_suite(tmp_path / "undecided.yaml", {"a": steady, "b": wobbly}, {"min": 3, "max": 4}, ["farm-host"])
    with host_farm(env, tmp_path) as (scheduler, agent):

        def run(*args: str) -> tuple[dict[str, Any], str]:
            p = devicelab("run", "--farm", scheduler.first_line, *args, "--json", env=env, timeout=600)
            assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
            return json.loads(p.stdout), p.stderr

        # An A/A pair: decided ('same') after the first 3 rounds, which went together; round 4 is never submitted.
        out, err = run("--suite", str(aa))
        decided = out["run_id"]
        assert sorted((r["repeat"], r["label"]) for r in out["results"]) == [(k, x) for k in range(3) for x in "ab"]
        assert all(r["status"] == "ok" for r in out["results"])
        assert "every pair decided after 3 rounds (1 same)" in err, err[-2000:]
        assert sorted(starts(agent.text(), decided)) == [1, 2, 3]
        store = open_store(env["DEVICELAB_DB"], create=False)
        try:
            assert sorted({r.config.repeat for r in store.planned(decided)}) == list(range(4))  # round 4: planned
            assert store.get_run(decided).status == "finished"
        finally:
            store.close()
        # --resume of the decided night runs none of its planned rounds: the stored rounds say it is decided
        out, err = run("--resume", decided)
        assert len(out["results"]) == 6 and sorted(starts(agent.text(), decided)) == [1, 2, 3]

        # A pair whose per-round ratios swing 1.25 ↔ 0.8: undecided after every round, so it runs to its max (round 4
        # alone, after the first 3 and a look at the store).
        out, err = run("--suite", str(undecided))
        night = out["run_id"]
        assert sorted((r["repeat"], r["label"]) for r in out["results"]) == [(k, x) for k in range(4) for x in "ab"]
        assert err.count("another round") == 1 and "decided after" not in err, err[-2000:]
        assert sorted(starts(agent.text(), night)) == [1, 2, 3, 4]
        # The same night as if its client had died before round 4 (its rows gone, the run interrupted): --resume
        # asks the rule again, finds it undecided, and runs round 4 only.
        db = sqlite3.connect(env["DEVICELAB_DB"])
        try:
            gone = [key for key, row in db.execute("SELECT identity_key, result_json FROM results WHERE run_id=?",
                                                   (night,)) if json.loads(row)["repeat"] == 3]
            assert len(gone) == 2
            with db:
                db.executemany("DELETE FROM results WHERE run_id=? AND identity_key=?", [(night, k) for k in gone])
        finally:
            db.close()
        store = open_store(env["DEVICELAB_DB"], create=False)
        try:
            store.set_run_status(night, "interrupted")
        finally:
            store.close()
        out, err = run("--resume", night)
        assert sorted((r["repeat"], r["label"]) for r in out["results"]) == [(k, x) for k in range(4) for x in "ab"]
        assert sorted(starts(agent.text(), night)) == [1, 2, 3, 4, 4]
        assert "another round" in err

        # A label with no ok process in a round (a build that cannot load the model): as in a local run, that pair's
        # later rounds are not submitted.
        broken = tmp_path / "broken.py"
        broken.write_text(f"#!{sys.executable}\nimport json\nprint(json.dumps({{'event': 'error', 'message': 'this "
                          "build cannot load the model'}), flush=True)\nraise SystemExit(1)\n")
        broken.chmod(0o755)
        p = devicelab("run", "--farm", scheduler.first_line, "--suite", str(ab_suite(
            tmp_path / "broken.yaml", {"a": steady, "b": broken}, {"min": 3, "max": 4}, ["farm-host"])), "--json",
            env=env, timeout=600)
        assert p.returncode == 1, p.stdout[-2000:] + p.stderr[-3000:]
        out = json.loads(p.stdout)
        assert sorted(starts(agent.text(), out["run_id"])) == [1, 2, 3]  # round 4 never submitted
        assert any("cannot load the model" in (r["reason"] or "") for r in out["results"] if r["label"] == "b")
        assert "no ok process of protocol [" in p.stderr and "its later rounds are skipped" in p.stderr, p.stderr


# --------------------------------------------------------------------------------------------------
# Nights judged at an acknowledged level (docs/nightly.md): the stopping rule decides against it too


def store_night(store: Any, run_id: str, day: int, factors: list[float], seed: int) -> None:
    """A nightly A/B run as the store keeps it: per round, the reference's and the candidate's process (8 samples of
    10 ms, ± 0.2 %), the candidate `factors[round]` times the reference."""
    from devicelab.result import OK, Config, Result
    from devicelab.store import RunRecord

    rng = np.random.default_rng(seed)
    store.create_run(RunRecord(run_id, f"2026-12-{day:02d}T03:00:00.000+00:00", {"name": "nightly"}, 1, {}, "0.1.0"))
    for i, f in enumerate(factors):
        for label, k in (("reference", 1.0), ("candidate", f)):
            config = Config("phone", "protocol", label, "v1", "m", "ab" * 32, 10, "fp32", "cpu", 1, (0,), "big",
                            repeat=i)
            samples = tuple(float(x) for x in 0.01 * k * (1 + rng.normal(0, 0.002, 8)))
            store.add_result(Result.for_config(run_id, config, OK, samples_s=samples,
                                               median_s=float(np.median(samples))))


def test_a_night_after_an_acknowledgement_is_decided_at_the_acknowledged_level(store_target: Any) -> None:
    from devicelab import sweep, verdicts

    pairs = [("protocol", "reference", "candidate")]
    store = store_target.open()
    try:
        for n, factor in enumerate([1.0, 1.10, 1.10]):
            store_night(store, f"night{n}", n + 1, [factor] * 4, seed=n)
        assert verdicts.levels_for_run(store, "tonight") == {}  # no acknowledgement: every series is judged at 1
        [series] = verdicts.nightly(store, 0.02)
        [alert] = series.report.open_alerts
        assert alert.state == "confirmed" and abs(alert.level - 1.10) < 0.01
        verdicts.acknowledge(store, alert.id, None, 0.02)
        assert verdicts.levels_for_run(store, "tonight") == {series.key: pytest.approx(alert.level)}
        level = alert.level
        # Tonight the candidate sits 2 % above the acknowledged level, its rounds 1 % either side: slower than 1 beyond
        # doubt after 3 rounds (what stopped a night before), but across the threshold at the level regress judges it
        # at: undecided.
        store_night(store, "tonight", 4, [level * 1.02 * k for k in (1.01, 1 / 1.01, 1.01)], seed=7)
        against_1 = sweep.ab_decision(store, "tonight", pairs, 3)
        assert against_1["decided"] and against_1["verdicts"]["slower"] == 1 and "at_level" not in against_1
        levels = verdicts.levels_for_run(store, "tonight")  # a night of the series now: judged at the level before it
        assert levels == {series.key: pytest.approx(level)}
        at = sweep.ab_decision(store, "tonight", pairs, 3, levels=levels)
        assert not at["decided"] and at["verdicts"]["slower"] == 1, at
        assert at["at_level"] == {"slower": 0, "faster": 0, "same": 0, "unknown": 1}
        # A night at the level itself: decided at it ('same') as against 1 ('slower').
        store_night(store, "tomorrow", 5, [level] * 3, seed=8)
        at = sweep.ab_decision(store, "tomorrow", pairs, 3, levels=verdicts.levels_for_run(store, "tomorrow"))
        assert at["decided"] and at["at_level"] == {"slower": 0, "faster": 0, "same": 1, "unknown": 0}, at
        # An acknowledgement regress's defaults cannot place (an alert they do not open, e.g. one --suspect-p
        # opened): the level is not known, so the night is never decided early.
        store.add_ack("0123456789", series.key, "night2", "acknowledged under --suspect-p")
        assert verdicts.levels_for_run(store, "tomorrow") == {series.key: None}
        at = sweep.ab_decision(store, "tomorrow", pairs, 3, levels={series.key: None})
        assert not at["decided"] and at["at_level"]["unknown"] == 1
    finally:
        store.close()


def confirmed_and_acknowledged(night: Any, env: dict[str, str]) -> Any:
    """Two nights with the candidate 10 % slower (`night(name, factor, repeats)` runs one): the alert they confirm,
    acknowledged with `devicelab regress ack` (the reference kept)."""
    from devicelab import verdicts

    night("first", 1.10, 3)
    night("second", 1.10, 3)
    store = open_store(env["DEVICELAB_DB"], create=False)
    try:
        [series] = verdicts.nightly(store, 0.02)
        [alert] = series.report.open_alerts
        assert alert.state == "confirmed", alert
    finally:
        store.close()
    p = devicelab("regress", "ack", alert.id, env=env)
    assert p.returncode == 0, p.stderr
    return alert


def test_a_local_adaptive_night_goes_on_while_undecided_at_the_acknowledged_level(env: dict[str, str],
                                                                                   tmp_path: Path) -> None:
    """The same rule through a real local run (the host device, the runner protocol): two nights 10 % slower confirm
    an alert, it is acknowledged; a night 2 % above that level would have stopped after 3 rounds against 1, and runs
    to its max instead."""

    reference = fake_runner(tmp_path / "reference.py", 1.0)

    def night(name: str, factor: float, repeats: Any, swing: tuple[float, float] | None = None
              ) -> tuple[dict[str, Any], str]:
        candidate = fake_runner(tmp_path / f"{name}.py", factor, tmp_path / f"{name}.count" if swing else None,
                                swing or (1.0, 1.0))
        suite = ab_suite(tmp_path / f"{name}.yaml", {"reference": reference, "candidate": candidate}, repeats)
        code, out, err = run_json("run", "--suite", str(suite), env=env)
        assert code == 0, err[-3000:]
        return out, err

    alert = confirmed_and_acknowledged(night, env)
    # 2 % above the level, its rounds 1 % either side of it: across level·(1 + 2 %) whatever the number of rounds
    out, err = night("tonight", alert.level * 1.02, {"min": 3, "max": 5}, swing=(1.01, 1 / 1.01))
    assert sorted(r["repeat"] for r in out["results"] if r["label"] == "candidate") == list(range(5))
    assert "1 slower; at the acknowledged level: 1 unknown: another round" in err, err[-2000:]


def test_a_farm_night_goes_on_one_round_at_a_time_while_undecided_at_the_acknowledged_level(
        tmp_path: Path, data_dir: Path) -> None:
    """The acknowledged level through `run --farm`: two farm nights 10 % slower confirm an alert, `regress ack` keeps
    the reference; tonight's candidate sits 2 % above that level, its rounds 1 % either side of it. Against 1 that
    is slower after 3 rounds; at the level it is undecided, so the client decides again after round 3 and after
    round 4 (one "another round" each: a round at a time), up to max. The worker's log shows what ran; with one
    worker its tasks run one after another whatever was submitted, so that order is not what proves one round at a
    time."""

    env = plain_env(tmp_path, data_dir)
    reference = fake_runner(tmp_path / "reference.py", 1.0)
    with host_farm(env, tmp_path) as (scheduler, agent):

        def night(name: str, factor: float, repeats: Any, swing: tuple[float, float] | None = None
                  ) -> tuple[dict[str, Any], str]:
            candidate = fake_runner(tmp_path / f"{name}.py", factor, tmp_path / f"{name}.count" if swing else None,
                                    swing or (1.0, 1.0))
            suite = ab_suite(tmp_path / f"{name}.yaml", {"reference": reference, "candidate": candidate}, repeats,
                             ["farm-host"])
            p = devicelab("run", "--farm", scheduler.first_line, "--suite", str(suite), "--json", env=env, timeout=600)
            assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
            return json.loads(p.stdout), p.stderr

        alert = confirmed_and_acknowledged(night, env)
        assert alert.series.startswith("farm-host "), alert
        out, err = night("tonight", alert.level * 1.02, {"min": 3, "max": 5}, swing=(1.01, 1 / 1.01))
        log = agent.text()
    tonight = out["run_id"]
    assert sorted((r["repeat"], r["label"]) for r in out["results"]) == [(k, x) for k in range(5)
                                                                          for x in ("candidate", "reference")]
    assert all(r["status"] == "ok" for r in out["results"])
    # one decision after round 3 and one after round 4, each "undecided at the acknowledged level"
    assert err.count("1 slower; at the acknowledged level: 1 unknown: another round") == 2, err[-3000:]
    # The worker's log, in order: rounds 1-3, then 4, then 5 (its one worker runs tasks one after another).
    events = [(kind, int(line.rsplit("round ", 1)[1])) for line in log.splitlines()
              for kind in ("start", "end") if f": {kind} {tonight}: " in line]
    assert sorted(n for k, n in events[:6]) == [1, 1, 2, 2, 3, 3], events
    assert events[6:] == [("start", 4), ("end", 4), ("start", 5), ("end", 5)], events


def test_rows_the_worker_spooled_are_in_the_store_before_the_farm_client_decides(tmp_path: Path,
                                                                                 data_dir: Path) -> None:
    """The store away from the worker only (new connections find no file; the client's open one still writes): every
    row of the adaptive night is spooled on the worker's host, the client writes each one from what its task returned,
    and its decision after round 3 reads them — "slower", decided, no round 4. Once the store is back the worker's
    spool is flushed onto it with nothing duplicated. (Without the client's writes the decision would find no ok
    process of either label and stop the pair as broken.)"""
    from devicelab.farm.worker import spool_path

    env = plain_env(tmp_path, data_dir)
    gate = tmp_path / "gate"
    a = fake_runner(tmp_path / "a.py", 1.0, gate=gate)
    b = fake_runner(tmp_path / "b.py", 1.10, gate=gate)
    suite = ab_suite(tmp_path / "spooled.yaml", {"a": a, "b": b}, {"min": 3, "max": 4}, ["farm-host"])
    with host_farm(env, tmp_path) as (scheduler, agent):
        spool = data_dir / "farm" / spool_path("farm-host").name
        spool.unlink(missing_ok=True)
        spool.with_suffix(".rejected.jsonl").unlink(missing_ok=True)
        reach = Reachability(env["DEVICELAB_DB"])
        p = subprocess.Popen([DEVICELAB, "run", "--farm", scheduler.first_line, "--suite", str(suite), "--json"],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        away = False
        try:
            # round 1's first runner has started: the client planned (its store open), the worker has the files
            wait_for("the first runner", lambda: Path(f"{gate}.started").exists() or p.poll() is not None)
            assert p.poll() is None, p.communicate()
            reach.away()
            away = True
            gate.touch()
            out, err = p.communicate(timeout=600)
            assert p.returncode == 0, out[-2000:] + err[-3000:]
            waiting = [json.loads(line) for line in spool.read_text().splitlines()]
            reach.back()
            away = False
            wait_for("the worker's spool flushed", lambda: not spool.exists(), timeout=60)
        finally:
            if away:
                reach.back()
            if p.poll() is None:
                p.kill()
                p.communicate()
        log = agent.text()
    night = json.loads(out)
    run_id = night["run_id"]
    assert sorted((r["repeat"], r["label"]) for r in night["results"]) == [(k, x) for k in range(3) for x in "ab"]
    assert all(r["status"] == "ok" for r in night["results"])
    assert err.count("spooled on the worker's host") == 6, err[-3000:]
    assert "every pair decided after 3 rounds (1 slower)" in err, err[-3000:]
    assert sorted(starts(log, run_id)) == [1, 2, 3]
    assert sorted((e["result"]["repeat"], e["result"]["label"]) for e in waiting) == sorted(
        (r["repeat"], r["label"]) for r in night["results"])
    store = open_store(env["DEVICELAB_DB"], create=False)
    try:
        stored = store.results(run_id)
    finally:
        store.close()
    assert {(r.config.repeat, r.config.label): r.to_json() for r in stored} == {
        (r["repeat"], r["label"]): Result.from_dict(r).to_json() for r in night["results"]}
    # the flush found each of its rows stored already, identical (a different row would have been refused, kept aside)
    assert not spool.with_suffix(".rejected.jsonl").exists()
