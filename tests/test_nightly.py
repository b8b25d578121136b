"""Nightly tracking of candidate/reference paired ratios (devicelab.analysis.nightly): pure, on synthetic nights.

The nights here are made by a seeded generator (a test fixture, never a measurement): per round, both labels share
that round's machine speed (what lockstep gives), each process adds its own small noise, and the night's machine
drifts by up to ±10 %."""

from __future__ import annotations

import numpy as np
import pytest

from devicelab.analysis import nightly as nt
from devicelab.analysis import regress as rg


def make_night(rng: np.random.Generator, run_id: str, step: float = 0.0, drift: float = 1.0, rounds: int = 6,
               samples: int = 30, base_s: float = 0.01) -> nt.Night:
    ref, cand = [], []
    for _ in range(rounds):
        machine = drift * float(rng.lognormal(0, 0.03))  # this round's machine speed, shared by both labels
        ref.append(list(base_s * machine * rng.lognormal(0, 0.004, samples) * float(rng.lognormal(0, 0.005))))
        cand.append(list(base_s * (1 + step) * machine * rng.lognormal(0, 0.004, samples)
                         * float(rng.lognormal(0, 0.005))))
    return nt.Night(run_id, f"2026-12-{len(run_id):02d}", ref, cand, "ref-1", "cand")


def history(steps: list[float], drifts: list[float] | None = None, seed: int = 1) -> list[nt.Night]:
    rng = np.random.default_rng(seed)
    drifts = drifts or [1.0] * len(steps)
    return [make_night(rng, f"n{i:02d}", s, d) for i, (s, d) in enumerate(zip(steps, drifts, strict=True))]


def test_no_change_under_drift_opens_no_alert() -> None:
    drifts = list(np.random.default_rng(7).uniform(0.9, 1.1, 12))
    report = nt.track("s", "key", history([0.0] * 12, drifts), resamples=400)
    assert report.status == "ok", report.to_dict()
    assert report.alerts == []
    # The separate-nights view of the same data (candidate medians night by night) sees the drift as change.
    medians = [n.candidate_median_s for n in report.nights]
    assert max(medians) / min(medians) > 1.1


def test_step_is_suspected_the_night_it_lands_then_confirmed_and_stays_open() -> None:
    steps = [0.0] * 6 + [0.05] * 6
    drifts = list(np.random.default_rng(3).uniform(0.9, 1.1, 12))
    report = nt.track("s", "key", history(steps, drifts), resamples=400)
    assert [a.state for a in report.alerts] == ["confirmed"]
    alert = report.alerts[0]
    assert alert.opened_run == "n06"
    assert alert.level == pytest.approx(1.05, abs=0.02)
    assert report.status == "confirmed"
    # Every night after the step is judged against 1, so the slower level never becomes the baseline.
    assert all(n.level == 1.0 for n in report.nights)
    assert [n.verdict.verdict for n in report.nights[6:]] == ["slower"] * 6


def test_acknowledged_alert_moves_the_level_and_a_further_step_opens_a_new_alert() -> None:
    steps = [0.0] * 4 + [0.05] * 4 + [0.10] * 4
    nights = history(steps, seed=5)
    first = nt.track("s", "key", nights[:8], resamples=400)
    assert first.status == "confirmed"
    ack = nt.Ack(first.alerts[0].id, at_run="n07")
    report = nt.track("s", "key", nights, [ack], resamples=400)
    assert report.alerts[0].state == "acknowledged"
    assert report.nights[8].level == pytest.approx(1.05, abs=0.02)
    second = report.alerts[1]
    assert second.opened_run == "n08" and second.state == "confirmed"
    assert second.level / second.level_before == pytest.approx(1.10 / 1.05, abs=0.02)
    # Acknowledged and nothing new: ok.
    quiet = nt.track("s", "key", nights[:8] + history([0.05] * 3, seed=9), [ack], resamples=400)
    assert quiet.status == "ok", quiet.to_dict()


def test_a_suspected_night_followed_by_a_same_night_is_cleared() -> None:
    steps = [0.0] * 4 + [0.06] + [0.0] * 2
    report = nt.track("s", "key", history(steps, seed=11), resamples=400)
    assert [a.state for a in report.alerts] == ["cleared"]
    assert report.status == "ok"


def test_ack_before_its_night_waits_for_that_night() -> None:
    steps = [0.0] * 3 + [0.05] * 5
    nights = history(steps, seed=13)
    alert = nt.track("s", "key", nights, resamples=400).alerts[0]
    late = nt.track("s", "key", nights, [nt.Ack(alert.id, at_run="n06")], resamples=400)
    assert [n.level for n in late.nights[:7]] == [1.0] * 7
    assert late.nights[7].level == pytest.approx(1.05, abs=0.02)
    assert late.alerts[0].nights == ["n03", "n04", "n05", "n06"]


def test_alert_ids_are_stable_and_distinct() -> None:
    assert nt.alert_id("k", "r1") == nt.alert_id("k", "r1")
    assert nt.alert_id("k", "r1") != nt.alert_id("k", "r2") != nt.alert_id("k2", "r1")


def test_separate_runs_regress_is_fooled_where_pairs_are_not() -> None:
    """The motivating failure: a real +5 % while the machine runs 10 % faster looks faster to a history of
    separate runs; the paired ratio calls it slower."""
    steps = [0.0] * 6 + [0.05] * 3
    drifts = [1.0] * 6 + [0.9] * 3
    nights = history(steps, drifts, seed=17)
    separate = rg.analyze("s", [rg.RunPoint(n.run_id, n.created_at, n.candidate) for n in nights])
    assert separate.status not in ("suspected", "confirmed")
    paired = nt.track("s", "key", nights, resamples=400)
    assert paired.status == "confirmed"


# ---- the commands on a stored history (synthetic nights made in this test, stored in its temporary store)


def _store_nights(store: object, nights: list[nt.Night], label: str = "candidate") -> None:
    from devicelab.result import OK, Config, Result
    from devicelab.store import RunRecord

    for n in nights:
        store.create_run(RunRecord(n.run_id, n.created_at, {"name": "synthetic nightly"}, 1, {}, "0.1.0"))  # type: ignore[attr-defined]
        for i, (ref, cand) in enumerate(zip(n.reference, n.candidate, strict=True)):
            for lab, samples, version in (("reference", ref, "ref-1"), (label, cand, n.run_id)):
                cfg = Config("host", "onnxruntime", lab, version, "squeezenet1_1", "ab" * 32, 1, "fp32", "cpu", 1,
                             (1,), "big", i)
                store.add_result(Result.for_config(n.run_id, cfg, OK, samples_s=tuple(samples)))  # type: ignore[attr-defined]


def _dated(nights: list[nt.Night]) -> list[nt.Night]:
    return [nt.Night(n.run_id, f"2026-11-{i + 1:02d}T03:00:00", n.reference, n.candidate)
            for i, n in enumerate(nights)]


def test_regress_ack_and_accept_commands(env: dict[str, str]) -> None:
    from pathlib import Path

    from devicelab.store import SqliteStore
    from helpers import run_json

    store = SqliteStore(Path(env["DEVICELAB_DB"]))
    nights = _dated(history([0.0] * 5 + [0.05] * 3, seed=21))
    _store_nights(store, nights)
    junit = Path(env["DEVICELAB_DB"]).parent / "r.xml"
    code, out, err = run_json("regress", "--junit", str(junit), env=env)
    assert code == 1, err
    (series,) = out["nightly"]
    assert series["status"] == "confirmed" and out["series"] == [], out  # the labels are not tracked separately
    (alert,) = [a for a in series["alerts"] if a["state"] == "confirmed"]
    assert alert["opened_run"] == nights[5].run_id
    assert 'failures="1"' in junit.read_text()
    # A second night at the same level the next day: still open, still exit 1 (the level is not the new baseline).
    more = _dated(history([0.0] * 5 + [0.05] * 4, seed=21))[8:]
    _store_nights(store, more)
    code, out, _ = run_json("regress", env=env)
    assert code == 1 and out["nightly"][0]["status"] == "confirmed"
    # Acknowledged: ok, and the reference stays (the series is judged at the alert's level).
    code, out, err = run_json("regress", "ack", alert["id"], "--note", "known: new kernel", env=env)
    assert code == 0, err
    code, out, _ = run_json("regress", env=env)
    assert code == 0 and out["nightly"][0]["status"] == "ok", out
    code, _, err = run_json("regress", "ack", "0000000000", env=env)
    assert code == 2 and "ALERT: '0000000000' is not an alert" in err
    code, _, err = run_json("regress", "bogus", env=env)
    assert code == 2 and "allowed: ack ALERT" in err
    # Accepted: the history restarts after that night.
    code, out, err = run_json("accept", f"{more[0].run_id}:candidate", env=env)
    assert code == 0 and len(out["series"]) == 1, err
    code, out, _ = run_json("regress", env=env)
    assert out["nightly"][0]["nights"] == [], out
    code, _, err = run_json("accept", f"{more[0].run_id}:reference", env=env)
    assert code == 2 and "is the reference itself" in err


def test_suspect_p_opens_a_suspected_alert_on_an_undecided_slower_night_and_only_a_slower_night_confirms() -> None:
    # +2.5 %: the CI's lower bound stays under 1 + 2 % (undecided), while the paired p says slower.
    steps = [0.0] * 4 + [0.025, 0.025, 0.06, 0.0]
    nights = history(steps, seed=21)
    plain = nt.track("s", "key", nights, resamples=400)
    assert [n.verdict.verdict for n in plain.nights[4:6]] == ["unknown", "unknown"], plain.to_dict()
    assert all(n.verdict.p_slower is not None and n.verdict.p_slower < 0.01 for n in plain.nights[4:6])
    assert [a.opened_run for a in plain.alerts] == ["n06"]  # the verdict alone first lists the +6 % night
    tracker = nt.Tracker("s", "key", resamples=400, suspect_p=0.01)
    states = []
    for night in nights:
        tracker.add(night)
        states.append((tracker.counted, tracker.current.state if tracker.current else None))
    assert states[:4] == [(False, None)] * 4
    assert states[4] == (True, nt.SUSPECTED)  # opened by p alone
    assert states[5] == (True, nt.SUSPECTED)  # undecided again: p alone never confirms
    assert states[6] == (True, nt.CONFIRMED)  # judged slower
    assert [a.opened_run for a in tracker.alerts] == ["n04"]
    assert tracker.alerts[0].nights == ["n04", "n06"]


def test_regress_suspect_p_option(env: dict[str, str]) -> None:
    from pathlib import Path

    from devicelab.store import SqliteStore
    from helpers import run_json

    store = SqliteStore(Path(env["DEVICELAB_DB"]))
    nights = _dated(history([0.0] * 4 + [0.025], seed=21))  # the newest night: undecided, paired p < 0.01
    _store_nights(store, nights)
    code, out, err = run_json("regress", env=env)  # by default only a night judged slower opens an alert
    assert code == 0, err
    (series,) = out["nightly"]
    assert series["nights"][-1]["verdict"] == "unknown"
    assert series["status"] == "ok" and series["alerts"] == [], series
    code, out, err = run_json("regress", "--suspect-p", "0.01", env=env)
    assert code == 0, err
    (series,) = out["nightly"]
    assert series["status"] == "suspected" and series["alerts"][0]["opened_run"] == nights[4].run_id, series
    code, out, _ = run_json("regress", "--suspect-p", "0.01", "--strict", env=env)
    assert code == 1
    code, _, err = run_json("regress", "--suspect-p", "1.5", env=env)
    assert code == 2 and "--suspect-p: 1.5 is not allowed" in err
