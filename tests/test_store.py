"""The Result schema (v2: validation, unknown fields, migrations) and the store: round trip, resume rules, a v1
database made by the v1 code opening as v2."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from devicelab.errors import DevicelabError
from devicelab.result import (FAILED, INFRA_FAILED, OK, RESULT_FIELDS, SCHEMA_VERSION, UNSUPPORTED, Config,
                              EnergyWindow, Result, RunProtocol, Warmup, migrate)
from devicelab.store import FINISHED, RunRecord, SqliteStore

# A database written by devicelab's v1 code (HEAD 53685ed): a quick host run (ok rows of two engines, an A/B pair
# in lockstep, an unsupported row and a failed one) and an emulated phone's run (pushes, pinning, dlprobe).
V1_DB = Path(__file__).parent / "golden" / "store-v1.sqlite"

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
                          state_before={"temperatures_c": {"cpu": 40.0}}, accuracy=None,
                          protocol=RunProtocol({"min_iterations": 10}, "ci", 2, warmup=Warmup("controller", 3, 0.5)),
                          ext={"iter_t_s": (0.0, 0.011)})
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
    ok = Result.for_config("r1", config(1), OK, samples_s=(0.01,))
    infra = Result.for_config("r1", config(2), INFRA_FAILED, reason="device disconnected")
    store.add_result(ok)
    store.add_result(infra)
    assert store.done_keys("r1") == {ok.config.identity_key()}  # infra-failed rows run again
    retried = Result.for_config("r1", config(2), FAILED, reason="engine crashed")
    store.add_result(retried)  # replaces the infra-failed row in place
    assert [r.status for r in store.results("r1")] == [OK, FAILED]
    with pytest.raises(ValueError, match="refusing to overwrite an ok result"):
        store.add_result(Result.for_config("r1", config(1), FAILED, reason="engine crashed"))


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


def test_newer_schema_and_unknown_fields_fail_loudly() -> None:
    data = Result.for_config("r1", config(), OK, samples_s=(0.01,)).to_dict()
    with pytest.raises(ValueError, match=f"schema_version {SCHEMA_VERSION + 1}"):
        Result.from_dict({**data, "schema_version": SCHEMA_VERSION + 1})
    with pytest.raises(ValueError, match="does not know: flux_capacitor"):
        Result.from_dict({**data, "flux_capacitor": 1})
    with pytest.raises(ValueError, match="unknown keys: mystery"):
        Result.from_dict({**data, "protocol": {"settings": {}, "mystery": 1}})


@pytest.mark.parametrize("fields, problem", [
    ({"status": "done"}, "status: 'done' is not one of"),
    ({"status": OK}, "an ok row has samples"),
    ({"status": OK, "samples_s": (0.01, 0.0)}, "not a positive finite number"),
    ({"status": OK, "samples_s": (0.01, float("nan"))}, "not a positive finite number"),
    ({"status": OK, "samples_s": (0.01,), "reason": "why"}, "an ok row has no reason"),
    ({"status": OK, "samples_s": (0.01,), "summary_only": True}, "summary_only: true with samples"),
    ({"status": FAILED}, "a row with status failed says why"),
    ({"status": UNSUPPORTED, "reason": ""}, "a row with status unsupported says why"),
    ({"status": OK, "samples_s": (0.01,), "peak_rss_bytes": -1}, "peak_rss_bytes"),
    ({"status": OK, "samples_s": (0.01,), "ext": {"shoe_size": 42}}, "ext.shoe_size: unknown extension"),
    ({"status": OK, "samples_s": (0.01,), "ext": {"import_s": "slow"}}, "ext.import_s"),
    ({"status": OK, "samples_s": (0.01, 0.02), "ext": {"iter_t_s": (0.0,)}}, "one timestamp per sample"),
])
def test_a_result_validates_on_construction(fields: dict[str, object], problem: str) -> None:
    status = fields.pop("status")
    with pytest.raises(ValueError, match=problem.replace("(", r"\(")):
        Result.for_config("r1", config(), status, **fields)  # type: ignore[arg-type]


def test_a_result_with_a_bad_precision_or_backend_is_refused() -> None:
    bad = Config("host", "onnxruntime", "", "1.0", "m", "ab" * 32, 1, "fp64", "tpu", 1, (1,), "big")
    with pytest.raises(ValueError, match=r"precision: 'fp64'.*backend: 'tpu'"):
        Result.for_config("r1", bad, FAILED, reason="x")


def test_a_v1_row_migrates_to_v2() -> None:
    v1 = {"schema_version": 1, "run_id": "r", "device": "host", "engine": "onnxruntime", "label": "",
          "engine_version": "1.0", "model": "m", "model_sha256": "ab" * 32, "model_bytes": 1, "precision": "fp32",
          "backend": "cpu", "threads": 1, "cpus": [1], "status": "ok", "samples_s": [0.01], "warmups": 50,
          "affinity": "big", "repeat": 0,
          "protocol": {"min_iterations": 10, "energy": {"window_s": 30}, "stop_reason": "ci", "batches": 3,
                       "warmup_s": 0.51, "lockstep_run": {"with": ["b"], "slice_s": 0.1},
                       "cooldown": {"method": "temperature", "waited_s": 0.5, "zones": ["cpu"], "reached": True},
                       "pinning": {"cpus": [1], "mask": "0x2", "affinity": "big", "method": "taskset",
                                   "clusters": []}, "old_thing": 7}}
    r = Result.from_dict(v1)
    p = r.protocol
    assert r.schema_version == 2 and r.ext == {} and p is not None
    assert p.settings == {"min_iterations": 10, "energy": True} and p.energy == EnergyWindow(window_s=30)
    assert p.warmup == Warmup("runner", 50, 0.51) and p.runner_protocol == 1
    assert p.lockstep and p.lockstep.with_ == ("b",) and p.cooldown and p.cooldown.zones == ("cpu",)
    assert p.pinning and p.pinning.method == "taskset" and p.legacy == {"old_thing": 7}
    assert migrate(v1)["schema_version"] == 2 and Result.from_dict(r.to_dict()) == r


def test_v1_values_that_v2_refuses_are_set_aside_not_dropped() -> None:
    """v1 stored what runners sent unchecked: an old database must still open, its odd values kept aside."""
    v1 = {"schema_version": 1, "run_id": "r", "device": "host", "engine": "protocol", "label": "", "engine_version": "x",
          "model": "m", "model_sha256": "ab" * 32, "model_bytes": 1, "precision": "fp32", "backend": "cpu", "threads": 1,
          "cpus": [1], "status": "ok", "samples_s": [0.01, 0.0, 0.02], "rss_before_load_bytes": -1024,
          "peak_rss_bytes": 5e6, "affinity": "big", "repeat": 0, "protocol": {"min_iterations": 10}}
    r = Result.from_dict(v1)
    assert r.samples_s == (0.01, 0.02) and r.rss_before_load_bytes is None and r.peak_rss_bytes == 5_000_000
    assert r.protocol and r.protocol.legacy == {"repaired": {"samples_s": [0.01, 0.0, 0.02],
                                                             "rss_before_load_bytes": -1024, "peak_rss_bytes": 5e6}}
    assert any("set aside" in n for n in r.notes)
    lost = Result.from_dict({**v1, "samples_s": [0.0]})
    assert lost.status == FAILED and "no valid sample" in str(lost.reason)


def test_a_v1_database_made_by_the_v1_code_opens_as_v2(tmp_path: Path) -> None:
    db = tmp_path / "v1.sqlite"
    shutil.copy(V1_DB, db)
    raw = sqlite3.connect(db)
    v1_rows = [json.loads(x) for (x,) in raw.execute("SELECT result_json FROM results ORDER BY run_id, seq")]
    raw.close()
    assert v1_rows and {r["schema_version"] for r in v1_rows} == {1}
    store = SqliteStore(db)
    runs = sorted(r.run_id for r in store.runs())
    migrated = [r for run in runs for r in store.results(run)]
    assert len(migrated) == len(v1_rows) and {r.schema_version for r in migrated} == {2}
    # Nothing measured changed on the way: samples, medians, memory, statuses and the settings are the v1 values.
    for old, new in zip(v1_rows, migrated, strict=True):
        assert (new.status, list(new.samples_s), new.median_s, new.peak_rss_bytes, new.reason) == \
            (old["status"], old["samples_s"], old["median_s"], old["peak_rss_bytes"], old["reason"])
        assert new.config.identity_key() == Config(**{k: (tuple(old[k]) if k == "cpus" else old[k]) for k in (
            "device", "engine", "label", "engine_version", "model", "model_sha256", "model_bytes", "precision",
            "backend", "threads", "cpus", "affinity", "repeat")}).identity_key()
        if old.get("protocol") and new.status == OK:
            assert new.protocol is not None and new.protocol.settings["min_iterations"] == \
                old["protocol"]["min_iterations"] and new.protocol.legacy is None
    assert {r.status for r in migrated} >= {OK, UNSUPPORTED}
    assert any(r.protocol and r.protocol.lockstep for r in migrated)
    assert any(r.protocol and r.protocol.pinning and r.protocol.push for r in migrated)
    # Rewritten in place: the file is v2 now, and opening it again migrates nothing.
    raw = sqlite3.connect(db)
    assert {v for (v,) in raw.execute("SELECT DISTINCT schema_version FROM results")} == {2}
    assert raw.execute("PRAGMA user_version").fetchone()[0] == 3
    raw.close()
    assert [r for run in runs for r in SqliteStore(db).results(run)] == migrated
