"""Store round-trip and the resume rules of Contract v1."""

from __future__ import annotations

from pathlib import Path

import pytest

from devicelab.errors import DevicelabError
from devicelab.result import FAILED, INFRA_FAILED, OK, RESULT_FIELDS, Config, Result
from devicelab.store import FINISHED, RunRecord, SqliteStore

CONTRACT_FIELDS = ("schema_version run_id device engine label engine_version model model_sha256 model_bytes "
                   "precision backend threads cpus status reason notes samples_s summary_only warmups median_s "
                   "p90_s load_s first_s rss_before_load_bytes peak_rss_bytes memory_method energy_j_per_inference "
                   "energy_source energy_reason accuracy state_before state_after throttled started_at "
                   "finished_at").split()


def config(threads: int = 1) -> Config:
    return Config("host", "onnxruntime", "", "1.0", "mobilenet_v2", "ab" * 32, 1000, "fp32", "cpu", threads,
                  (1,) if threads == 1 else (0, 1), "big")


def record(run_id: str = "r1") -> RunRecord:
    return RunRecord(run_id, "2026-11-22T00:00:00Z", {"name": "s"}, 7, {"hostname": "h"}, "0.1.0")


def test_result_has_every_contract_field() -> None:
    assert set(CONTRACT_FIELDS) <= set(RESULT_FIELDS)


def test_round_trip(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "db.sqlite")
    store.create_run(record())
    r = Result.for_config("r1", config(), OK, samples_s=(0.01, 0.012), median_s=0.011, notes=("n",),
                          state_before={"temperatures_c": {"cpu": 40.0}}, accuracy=None, protocol={"stop_reason": "ci"})
    store.add_result(r)
    assert store.results("r1") == [r]
    assert store.get_run("r1").seed == 7
    store.set_run_status("r1", FINISHED)
    assert store.get_run("r1").status == FINISHED and store.get_run("r1").finished_at
    again = SqliteStore(tmp_path / "db.sqlite")  # reopening migrates nothing and reads the same
    assert again.results("r1") == [r]


def test_resume_rules(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "db.sqlite")
    store.create_run(record())
    ok = Result.for_config("r1", config(1), OK)
    infra = Result.for_config("r1", config(2), INFRA_FAILED, reason="device disconnected")
    store.add_result(ok)
    store.add_result(infra)
    assert store.done_keys("r1") == {ok.config.identity_key()}  # infra-failed rows run again
    retried = Result.for_config("r1", config(2), FAILED, reason="engine crashed")
    store.add_result(retried)  # replaces the infra-failed row in place
    assert [r.status for r in store.results("r1")] == [OK, FAILED]
    with pytest.raises(ValueError, match="refusing to overwrite an ok result"):
        store.add_result(Result.for_config("r1", config(1), FAILED))


def test_unknown_run_and_missing_database(tmp_path: Path) -> None:
    with pytest.raises(DevicelabError, match="no devicelab database"):
        SqliteStore(tmp_path / "missing.sqlite", create=False)
    assert not (tmp_path / "missing.sqlite").exists()
    store = SqliteStore(tmp_path / "db.sqlite")
    with pytest.raises(DevicelabError, match="unknown run id 'nope': no runs stored"):
        store.get_run("nope")
    store.create_run(record("20261122-000000-abcd"))
    with pytest.raises(DevicelabError, match="did you mean '20261122-000000-abcd'"):
        store.get_run("20261122-000000-abce")


def test_newer_schema_is_refused() -> None:
    data = Result.for_config("r1", config(), OK).to_dict()
    data["schema_version"] = 2
    with pytest.raises(ValueError, match="schema_version 2"):
        Result.from_dict(data)
