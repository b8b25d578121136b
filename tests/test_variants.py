"""The accuracy pass once per variant: the first config of a variant runs it, a second thread count runs it once
more to compare the two, and every later config (this run or the next) reuses the entry."""

from __future__ import annotations

from pathlib import Path

from helpers import run_json, write_suite


def test_accuracy_runs_once_per_variant_and_compares_thread_counts_once(env: dict[str, str], data_dir: Path,
                                                                         tmp_path: Path) -> None:
    # A data folder of its own for the cache (the zoo and converted models are the session's, linked)
    own = tmp_path / "data"
    own.mkdir()
    for entry in data_dir.iterdir():
        if entry.name != "accuracy":
            (own / entry.name).symlink_to(entry)
    env = {**env, "DEVICELAB_DATA": str(own)}
    suite = write_suite(tmp_path / "s.yaml", engines=["ncnn"], threads=[1, 2])

    code, out, err = run_json("run", "--suite", str(suite), env=env)
    assert code == 0, err
    one, two = sorted(out["results"], key=lambda r: r["started_at"])  # the plan may order thread counts either way
    for r in (one, two):  # both ran the pass: the first makes the entry, the second compares thread counts
        assert r["status"] == "ok" and r["protocol"]["outputs_sha256"], r
        assert r["accuracy"]["inputs"] == 4 and "measured_in" not in r["accuracy"]
    assert "threads_max_abs_diff" not in one["accuracy"]
    check = two["accuracy"]["threads_max_abs_diff"]
    assert check["threads"] == [1, 2] and 0 <= check["max_abs_diff"] < 1e-2

    code, again, err = run_json("run", "--suite", str(suite), env=env)
    assert code == 0, err
    for r in again["results"]:  # the next run: no pass at all, the entry's record with where it came from
        assert r["status"] == "ok" and r["protocol"].get("outputs_sha256") is None
        assert r["accuracy"]["measured_in"] == {"run_id": out["run_id"], "threads": one["threads"]}
        assert r["accuracy"]["threads_max_abs_diff"] == check
        assert {k: v for k, v in r["accuracy"].items() if k not in ("measured_in", "threads_max_abs_diff")} == \
            one["accuracy"]
        assert any("not run again" in n for n in r["notes"])

    # another precision is another variant: its own pass
    suite = write_suite(tmp_path / "s8.yaml", engines=["ncnn"], threads=[1], precisions=["int8"])
    code, out8, err = run_json("run", "--suite", str(suite), env=env)
    assert code == 0, err
    (r,) = out8["results"]
    assert r["protocol"]["outputs_sha256"] and "measured_in" not in r["accuracy"]
