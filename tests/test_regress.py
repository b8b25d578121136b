"""Regression detection over history as specs (pure), then `devicelab regress` on stored runs."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np
import pytest

from devicelab.analysis.regress import RunPoint, analyze, change_points, energy_statistic
from devicelab.result import OK, Config, Result
from devicelab.store import RunRecord, SqliteStore
from helpers import run_json


def matteson_james_q(x: list[float], y: list[float]) -> float:
    """The divergence of Matteson & James (2014, JASA 109:334, eqs. 5 and 6) with alpha = 1, written from the paper
    as an oracle independent of devicelab's vectorized code: within-sample distances averaged over the C(n, 2)
    pairs i < k, between-sample ones over the n·m pairs, scaled by n·m/(n + m).

    (MongoDB's `signal-processing-algorithms` 2.1.6 was checked as an oracle and is not one: its
    `get_energy_statistics(x, y).t` divides the within sums by n² — the V-statistic devicelab had — and agrees
    with the old code to 1e-15.)"""
    n, m = len(x), len(y)
    between = sum(abs(a - b) for a in x for b in y) / (n * m)
    within_x = sum(abs(a - b) for a, b in combinations(x, 2)) / (n * (n - 1) / 2)
    within_y = sum(abs(a - b) for a, b in combinations(y, 2)) / (m * (m - 1) / 2)
    return n * m / (n + m) * (2 * between - within_x - within_y)


def test_energy_statistic_is_matteson_and_james() -> None:
    # By hand: between-sample mean 10, within-sample pair means 4/3, so Q = 9/6 · (20 − 8/3) = 26.
    assert energy_statistic(np.array([0.0, 1, 2]), np.array([10.0, 11, 12])) == pytest.approx(26.0)
    rng = np.random.default_rng(10)
    for n, m, shift in ((5, 5, 0.0), (5, 9, 0.5), (12, 7, 2.0), (30, 30, 0.1), (6, 40, -1.0)):
        x, y = rng.lognormal(0, 0.3, n), rng.lognormal(shift, 0.3, m)
        assert energy_statistic(x, y) == pytest.approx(matteson_james_q(list(x), list(y)), rel=1e-12), (n, m)


def test_change_point_is_where_the_published_statistic_peaks() -> None:
    """Binary segmentation splits at the argmax of the published statistic over the allowed positions (κ at the
    segment's end, as MongoDB's and Otava's detectors do)."""
    rng = np.random.default_rng(4)
    for trial in range(80):  # V- and U-statistics peak at different places in trials 52 and 64
        values = list(rng.normal(1.0, 0.01, 9)) + list(rng.normal(1.0 + 0.02 * (trial % 4 + 2), 0.03, 8))
        cps = change_points(values, magnitude=0.0, p_value=1.0)
        best = max(range(5, len(values) - 4), key=lambda t: matteson_james_q(values[:t], values[t:]))
        assert best in cps, (trial, cps, best)


def test_a_step_smaller_than_the_noise_floor_is_no_change_point() -> None:
    """+3 % after 6 runs, on a device whose measured A/A floor is 5 %: no change point, nothing confirmed; the same
    step with no floor (or a 2 % one) is a confirmed change point."""
    rng = np.random.default_rng(8)
    history = [RunPoint(f"r{i}", f"t{i}", [list(0.0100 * rng.lognormal(0, 0.001, 20))]) for i in range(6)]
    history += [RunPoint(f"n{i}", f"u{i}", [list(0.0103 * rng.lognormal(0, 0.001, 20))]) for i in range(6)]
    assert analyze("s", history).status == "confirmed"
    assert analyze("s", history, noise_floor=0.02).change_points[0]["run_id"] == "n0"
    report = analyze("s", history, noise_floor=0.05)
    assert report.change_points == [] and report.status != "confirmed", report
    assert change_points([p.median for p in history], magnitude=0.05) == []


def test_a_series_without_samples_is_no_data() -> None:
    """A summary-only engine (tool:* without per-iteration times) stores no samples: its series has no centre, so
    regress says so ('no data') instead of 'ok'."""
    points = [RunPoint(f"r{i}", f"t{i}", [[]]) for i in range(8)]
    report = analyze("s", points)
    assert report.status == "no data" and report.change_points == [] and report.newest is None
    assert any("no per-iteration samples" in n for n in report.notes), report.notes
    # Runs without samples among runs with them are left out, and say so.
    mixed = [RunPoint(f"r{i}", f"t{i}", [[0.01] * 10]) for i in range(6)] + [RunPoint("x", "tx", [[]])]
    report = analyze("s", mixed)
    assert report.status == "ok" and report.points == 7 and any("1 run without samples" in n for n in report.notes)


def _store_summary_only(store: SqliteStore, run_id: str, created: str) -> None:
    store.create_run(RunRecord(run_id, created, {"name": "synthetic"}, 1, {}, "0.1.0"))
    cfg = Config("host", "tool:benchncnn", "", "1.0", "mobilenet_v2", "ab" * 32, 1, "fp32", "cpu", 1, (1,), "big", 0)
    store.add_result(Result.for_config(run_id, cfg, OK, samples_s=(), summary_only=True, median_s=0.01))


def test_regress_command_says_no_data_for_summary_only_series(env: dict[str, str]) -> None:
    store = SqliteStore(Path(env["DEVICELAB_DB"]))
    for i in range(6):
        _store_summary_only(store, f"night{i}", f"2026-11-0{i + 1}T00:00:00")
    junit = Path(env["DEVICELAB_DB"]).parent / "r.xml"
    code, out, err = run_json("regress", "--junit", str(junit), env=env)
    assert code == 0, err
    (series,) = out["series"]
    assert series["status"] == "no data" and series["points"] == 6, series
    assert 'skipped="1"' in junit.read_text() and 'failures="0"' in junit.read_text()


def test_a_night_is_judged_against_other_nights_not_their_processes() -> None:
    """Nightly runs of 3 processes each: the processes of a night share its machine (night-to-night drift 3 %, the
    processes within a night 0.3 % apart). A new night drawn from the same nights must be called suspected about as
    rarely as the prediction interval promises (~2.5 % above it) — pooling the processes as independent made it
    several times that."""
    import numpy as np

    rng = np.random.default_rng(5)

    def night(i: int) -> RunPoint:
        level = 0.010 * np.exp(rng.normal(0, 0.03))
        return RunPoint(f"n{i}", f"t{i}", [list(level * np.exp(rng.normal(0, 0.003, 20))) for _ in range(3)])

    trials = 300
    suspected = sum(analyze("s", [night(i) for i in range(9)]).status in ("suspected", "confirmed")
                    for _ in range(trials))
    assert suspected / trials <= 0.06, suspected
