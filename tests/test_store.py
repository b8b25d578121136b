"""The Result schema (v2: validation, unknown fields, migrations) and the stores: round trip, resume rules, a v1
database made by the v1 code opening as v2. Every store test runs against SQLite and a real PostgreSQL server
(tests/pg_server.py, started once per session); the idempotency, concurrency and redaction tests are in
test_store_pg.py (PostgreSQL only) and below (both)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from devicelab.errors import DevicelabError
from devicelab.result import (FAILED, INFRA_FAILED, OK, RESULT_FIELDS, SCHEMA_VERSION, UNSUPPORTED, Config,
                              EnergyWindow, Result, RunProtocol, Warmup, migrate)
from devicelab.store import FINISHED, STORE_SCHEMA_VERSION, RunRecord, SqliteStore, open_store
from helpers import StoreTarget

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


def test_round_trip(store_target: StoreTarget) -> None:
    store = store_target.open()
    store.create_run(record())
    r = Result.for_config("r1", config(), OK, samples_s=(0.01, 0.012), median_s=0.011, notes=("n",),
                          state_before={"temperatures_c": {"cpu": 40.0}}, accuracy=None,
                          protocol=RunProtocol({"min_iterations": 10}, "ci", 2, warmup=Warmup("controller", 3, 0.5)),
                          ext={"iter_t_s": (0.0, 0.011)})
    assert store.add_result(r) == "inserted"
    assert store.results("r1") == [r]
    assert store.get_run("r1").seed == 7
    store.set_run_status("r1", FINISHED)
    assert store.get_run("r1").status == FINISHED and store.get_run("r1").finished_at
    assert store.status_counts("r1") == {OK: 1}
    assert list(store.history()) == [r.config.series_key()] and store.history("host")[r.config.series_key()][0][2] == r
    store.add_noise_floor("host", "k", 0.0125, "r1", {"paired": True})
    assert store.noise_floor("host", paired=True) == (0.0125, "r1") and store.noise_floor("host") is None
    store.reset_baseline("*", "r1", "new phone")
    assert store.baselines() == {"*": "r1"}
    store.close()
    again = store_target.open(create=False)  # reopening migrates nothing and reads the same
    assert again.results("r1") == [r] and [x.run_id for x in again.runs()] == ["r1"]
    again.close()


def test_resume_rules(store_target: StoreTarget) -> None:
    store = store_target.open()
    store.create_run(record())
    ok = Result.for_config("r1", config(1), OK, samples_s=(0.01,))
    infra = Result.for_config("r1", config(2), INFRA_FAILED, reason="device disconnected")
    store.add_result(ok)
    store.add_result(infra)
    assert store.done_keys("r1") == {ok.config.identity_key()}  # infra-failed rows run again
    retried = Result.for_config("r1", config(2), FAILED, reason="engine crashed")
    assert store.add_result(retried) == "replaced"  # replaces the infra-failed row in place
    assert [r.status for r in store.results("r1")] == [OK, FAILED]
    with pytest.raises(ValueError, match="refusing to overwrite an ok result"):
        store.add_result(Result.for_config("r1", config(1), FAILED, reason="engine crashed"))
    store.close()


def test_writes_are_idempotent_per_run_and_identity_key(store_target: StoreTarget) -> None:
    """Identical ok row again: nothing happens; ok replaces infra-failed in its place; a different ok row for the
    same key is refused with a message naming the config, and the stored row stays."""
    from devicelab.store import ResultConflict

    store = store_target.open()
    store.create_run(record())
    ok = Result.for_config("r1", config(1), OK, samples_s=(0.01, 0.011), median_s=0.0105)
    lost = Result.for_config("r1", config(2), INFRA_FAILED, reason="farm worker lost")
    assert [store.add_result(r) for r in (ok, lost)] == ["inserted", "inserted"]
    assert store.add_result(ok) == "unchanged" and store.add_result(lost) == "unchanged"
    assert store.results("r1") == [ok, lost]
    measured = Result.for_config("r1", config(2), OK, samples_s=(0.02,), median_s=0.02)
    assert store.add_result(measured) == "replaced"
    assert store.results("r1") == [ok, measured]  # in the infra-failed row's place
    assert store.add_result(measured) == "unchanged"
    other = Result.for_config("r1", config(1), OK, samples_s=(0.03,), median_s=0.03)
    with pytest.raises(ResultConflict, match=r"run r1 already has a different ok result for onnxruntime "
                                             r"mobilenet_v2 on host \(fp32, cpu, 1 threads, repeat 0\)"):
        store.add_result(other)
    with pytest.raises(ResultConflict):  # nor does a later failure of the same config replace its measurement
        store.add_result(Result.for_config("r1", config(1), INFRA_FAILED, reason="device gone"))
    assert store.results("r1") == [ok, measured] and store.status_counts("r1") == {OK: 2}
    store.create_run(record("r2"))  # the key is (run, identity key): the same config in another run is its own row
    assert store.add_result(dataclasses.replace(other, run_id="r2")) == "inserted"
    store.close()


# One writer process: opens the store (all at once on a fresh database: the migration races too), then on "go"
# writes 12 rows every writer writes identically, 5 of its own, and its own ok row for one contested config.
WRITER = r"""
import hashlib, json, sys
from devicelab.result import OK, Config, Result
from devicelab.store import ResultConflict, open_store
db, me = sys.argv[1], int(sys.argv[2])
store = open_store(db)
print("ready", flush=True)
sys.stdin.readline()
def row(model, median):
    sha = hashlib.sha256(model.encode()).hexdigest()  # the model's file is in the identity key, its name is not
    cfg = Config("host", "onnxruntime", "", "1.0", model, sha, 1000, "fp32", "cpu", 1, (0,), "big")
    return Result.for_config("r1", cfg, OK, samples_s=(median,), median_s=median)
out = {}
for i in range(12):
    out[f"shared{i}"] = store.add_result(row(f"shared{i}", 0.01 * (i + 1)))
for i in range(5):
    out[f"own{i}"] = store.add_result(row(f"w{me}-{i}", 0.001 * (i + 1)))
try:
    out["contested"] = store.add_result(row("contested", 0.1 * (me + 1)))
except ResultConflict:
    out["contested"] = "refused"
print(json.dumps(out), flush=True)
"""


def test_concurrent_writers_from_many_processes(store_target: StoreTarget, tmp_path: Path) -> None:
    """Four processes open a fresh store at once, then write at once: every row is there once, in a unique place,
    each shared row was inserted by exactly one writer, and exactly one ok row of the contested config won."""
    import subprocess
    import sys

    # cwd: not the checkout, whose devicelab/ `python -c` would import instead of the installed package.
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, store_target.db, str(n)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
               for n in range(4)]
    try:
        for w in writers:
            assert w.stdout is not None and w.stdout.readline().strip() == "ready", w.stderr.read() if w.stderr else ""
        store = store_target.open()
        store.create_run(record())
        for w in writers:  # all at once
            assert w.stdin is not None
            w.stdin.write("go\n")
            w.stdin.flush()
        outcomes = []
        for w in writers:
            out, err = w.communicate(timeout=120)
            assert w.returncode == 0, err
            outcomes.append(json.loads(out))
    finally:
        for w in writers:
            if w.poll() is None:
                w.kill()
    for i in range(12):
        assert sorted(o[f"shared{i}"] for o in outcomes) == ["inserted"] + ["unchanged"] * 3
    assert all(o[f"own{i}"] == "inserted" for o in outcomes for i in range(5))
    assert sorted(o["contested"] for o in outcomes) == ["inserted"] + ["refused"] * 3
    winner = next(n for n, o in enumerate(outcomes) if o["contested"] == "inserted")
    results = store.results("r1")
    assert len(results) == 12 + 4 * 5 + 1 and len({r.config.identity_key() for r in results}) == len(results)
    assert next(r for r in results if r.model == "contested").median_s == pytest.approx(0.1 * (winner + 1))
    assert [r for r in results if r.model == "shared3"][0].median_s == pytest.approx(0.04)
    store.close()


def _open_at_once(db: str, barrier: object, errors: object) -> None:
    """One of several forked processes: wait for the others, open the store, close it; a failure is reported."""
    barrier.wait()  # type: ignore[attr-defined]
    try:
        open_store(db).close()
    except Exception as e:  # reported to the parent, which fails the test with it
        errors.put(f"{type(e).__name__}: {e}")  # type: ignore[attr-defined]


def test_processes_opening_a_fresh_sqlite_store_at_once_all_open_it(tmp_path: Path) -> None:
    """Farm workers starting together open one new SQLite file at once. Its switch to WAL reads the file, then asks
    for the write lock; an opener that has read and then finds another holding that lock gets "database is locked"
    at once, without the busy timeout (SQLite's answer to a would-be deadlock), and the store retries it. Without the
    retry this test failed 20 times in 20 (6 processes, 25 rounds); with it, none in 20."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")  # the parent's imports: the processes reach the open together
    procs, rounds = 6, 25
    errors = ctx.Queue()
    for round_ in range(rounds):
        db = str(tmp_path / f"fresh{round_}.sqlite")
        barrier = ctx.Barrier(procs, timeout=60)  # a worker that never arrives breaks it, not the test run
        workers = [ctx.Process(target=_open_at_once, args=(db, barrier, errors)) for _ in range(procs)]
        try:
            for w in workers:
                w.start()
            for w in workers:
                w.join(timeout=120)
        finally:
            for w in workers:
                if w.is_alive():
                    w.kill()
                    w.join()
        assert [w.exitcode for w in workers] == [0] * procs
        assert errors.empty(), f"round {round_}: {errors.get()}"
        store = open_store(db)
        assert store._version() == STORE_SCHEMA_VERSION  # type: ignore[attr-defined]
        assert store._rows("PRAGMA journal_mode") == [("wal",)]  # type: ignore[attr-defined]
        assert store._rows("PRAGMA busy_timeout") == [(30000,)]  # type: ignore[attr-defined]  # writes wait 30 s again
        store.close()


def test_the_plan_is_stored_with_the_run(store_target: StoreTarget) -> None:
    from devicelab.store import PlannedRow

    store = store_target.open()
    plan = [PlannedRow(config(2), {}, "the engine has no fp16 here"), PlannedRow(config(1), {"python": "/x/py"}),
            PlannedRow(dataclasses.replace(config(1), repeat=1))]
    store.create_run(record("r1"), plan)
    store.create_run(record("r2"))  # a run without a plan (as every run stored before v4)
    assert store.planned("r1") == plan and store.planned("r2") == []
    assert store.results("r1") == []  # planned is not a Result status: nothing ran yet
    import psycopg

    with pytest.raises((sqlite3.IntegrityError, psycopg.IntegrityError)):  # one transaction: a duplicate adds no plan
        store.create_run(record("r1"), [PlannedRow(config(4))])
    assert store.planned("r1") == plan
    store.close()


def test_nightly_acknowledgements_and_acceptances(store_target: StoreTarget) -> None:
    store = store_target.open()
    store.add_ack("a1", "k", "r3", "seen")
    store.add_ack("a1", "k", "r9", None)  # acknowledged again: the first acknowledgement stands
    assert [(a["alert_id"], a["at_run"], a["note"]) for a in store.acks()] == [("a1", "r3", "seen")]
    store.add_acceptance("k", "r3", "candidate", "1.2", None)
    store.add_acceptance("k", "r7", "candidate", "1.3", "new build")
    assert store.acceptances() == {"k": "r7"}  # the latest acceptance counts
    store.close()
    again = store_target.open()
    assert again.acceptances() == {"k": "r7"} and len(again.acks()) == 1
    again.close()


def test_a_sqlite_store_that_vanishes_as_it_is_opened_is_not_created_anew(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """create=False: a file moved away between the existence check and the open (a farm worker opening the store per
    write while it is moved) is refused, never replaced by a fresh empty store."""
    from devicelab.store import SqliteStore

    gone = tmp_path / "moved-away.sqlite"
    monkeypatch.setattr(Path, "exists", lambda self: True if self == gone else Path.is_file(self) or Path.is_dir(self))
    with pytest.raises(DevicelabError, match="no devicelab database at"):
        SqliteStore(gone, create=False)
    assert os.listdir(tmp_path) == []  # no store file, no -wal or -shm beside it
    # an existing file is opened, whatever its name holds (the path goes into a file: URI, percent-encoded)
    odd = tmp_path / "a b#c?d%e.sqlite"
    SqliteStore(odd).close()
    monkeypatch.undo()
    SqliteStore(odd, create=False).close()


def test_unknown_run_and_missing_database(store_target: StoreTarget) -> None:
    missing = store_target.missing()
    with pytest.raises(DevicelabError, match="no devicelab (database|records)"):
        open_store(missing, create=False)
    store = store_target.open()
    with pytest.raises(DevicelabError, match="unknown run id 'nope': no runs stored"):
        store.get_run("nope")
    store.create_run(record("20261122-000000-abcd"))
    with pytest.raises(DevicelabError, match="did you mean '20261122-000000-abcd'"):
        store.get_run("20261122-000000-abce")
    with pytest.raises(DevicelabError, match="unknown run id 'r9'.*a result needs its run"):
        store.add_result(Result.for_config("r9", config(), OK, samples_s=(0.01,)))
    store.close()


def test_a_store_written_by_a_newer_devicelab_is_refused(store_target: StoreTarget) -> None:
    store = store_target.open()
    with store._write():  # type: ignore[attr-defined]
        store._set_version(STORE_SCHEMA_VERSION + 1)  # type: ignore[attr-defined]
    store.close()
    with pytest.raises(DevicelabError, match=f"newer devicelab \\(store schema {STORE_SCHEMA_VERSION + 1}\\)"):
        store_target.open()


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
    assert raw.execute("PRAGMA user_version").fetchone()[0] == STORE_SCHEMA_VERSION
    raw.close()
    assert [r for run in runs for r in SqliteStore(db).results(run)] == migrated


def test_a_v1_postgresql_database_migrates_as_sqlite_does(pg_server: object, tmp_path: Path) -> None:
    """The same migrations: the v1 golden rows loaded into a PostgreSQL database of store schema 1 come out of
    PostgresStore exactly as they come out of the migrated SQLite file."""
    import psycopg

    from devicelab.store import _SCHEMA, _statements

    db = tmp_path / "v1.sqlite"
    shutil.copy(V1_DB, db)
    raw = sqlite3.connect(db)
    runs = raw.execute("SELECT * FROM runs").fetchall()
    results = raw.execute("SELECT * FROM results").fetchall()
    raw.close()
    url = pg_server.url(pg_server.create_database())  # type: ignore[attr-defined]
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in _statements(_SCHEMA):
            conn.execute(statement)
        conn.execute("CREATE TABLE devicelab_schema (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO devicelab_schema VALUES (1)")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO runs VALUES (" + ",".join(["%s"] * 10) + ")", runs)
            cur.executemany("INSERT INTO results VALUES (" + ",".join(["%s"] * 16) + ")", results)
    pg = open_store(url)
    sq = SqliteStore(db)
    ids = sorted(r.run_id for r in sq.runs())
    assert sorted(r.run_id for r in pg.runs()) == ids
    assert [r for run in ids for r in pg.results(run)] == [r for run in ids for r in sq.results(run)]
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT DISTINCT schema_version FROM results").fetchall() == [(SCHEMA_VERSION,)]
        assert conn.execute("SELECT version FROM devicelab_schema").fetchall() == [(STORE_SCHEMA_VERSION,)]
    pg.close()
    sq.close()


# --------------------------------------------------------------------------------------------------
# Store schema 7: artifacts by content, device facts and profiles (what the farm's hosts share besides Results)


def test_artifacts_are_stored_by_content_and_checked_on_arrival(store_target: StoreTarget, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    import devicelab.store as store_module
    from devicelab.store import ArtifactMismatch

    monkeypatch.setattr(store_module, "ARTIFACT_CHUNK", 1000)  # several chunks from a small file
    source = tmp_path / "model.bin"
    source.write_bytes(bytes(range(256)) * 10)  # 2560 bytes: three chunks, the last one short
    store = store_target.open()
    digest = store.put_artifact(source)
    assert digest == hashlib.sha256(source.read_bytes()).hexdigest() and store.has_artifact(digest)
    count = "SELECT COUNT(*) FROM artifact_chunks WHERE sha256=?"
    assert store._rows(count, (digest,))[0][0] == 3  # type: ignore[attr-defined]
    copy = tmp_path / "copy.bin"
    copy.write_bytes(source.read_bytes())
    assert store.put_artifact(copy, "other-name") == digest  # the same content again: nothing written
    assert store._rows(count, (digest,))[0][0] == 3  # type: ignore[attr-defined]
    assert store._rows("SELECT name FROM artifacts")[0][0] == "model.bin"  # type: ignore[attr-defined]

    got = store.get_artifact(digest, tmp_path / "cache" / digest / "model.bin")
    assert got.read_bytes() == source.read_bytes()
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert store.get_artifact(store.put_artifact(empty), tmp_path / "e2").read_bytes() == b""
    with pytest.raises(DevicelabError, match=r"artifact sha256 0{12}… is not in .*: publish it first"):
        store.get_artifact("0" * 64, tmp_path / "nope")
    assert not (tmp_path / "nope").exists()

    # a damaged stored chunk: one line, nothing written at dest (an earlier file there is left as it was), no
    # temporary file left beside it
    with store._write():  # type: ignore[attr-defined]
        store._rows("UPDATE artifact_chunks SET content=? WHERE sha256=? AND seq=1",  # type: ignore[attr-defined]
                    (b"x" * 1000, digest))
    dest = tmp_path / "arrive" / "model.bin"
    dest.parent.mkdir()
    dest.write_bytes(b"old")
    with pytest.raises(ArtifactMismatch) as caught:
        store.get_artifact(digest, dest)
    message = str(caught.value)
    assert "\n" not in message and f"expected {digest} (2560 bytes)" in message and "failed its check on arrival" \
        in message and f"nothing written to {dest}" in message, message
    assert dest.read_bytes() == b"old" and sorted(p.name for p in dest.parent.iterdir()) == ["model.bin"]
    store.drop_artifact(digest)  # forgotten: the next publication stores it again, whole
    assert not store.has_artifact(digest) and store.put_artifact(source) == digest
    assert store.get_artifact(digest, dest).read_bytes() == source.read_bytes()
    store.close()


def test_a_file_that_changes_while_it_is_published_is_not_stored(store_target: StoreTarget, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import devicelab.store as store_module

    source = tmp_path / "m.bin"
    source.write_bytes(b"a" * 100)
    real = store_module.sha256_file

    def hash_then_change(path: Path) -> str:
        digest = real(path)
        path.write_bytes(b"b" * 100)  # written by someone else between the hash and the copy
        return digest

    monkeypatch.setattr(store_module, "sha256_file", hash_then_change)
    store = store_target.open()
    with pytest.raises(DevicelabError, match="changed while it was published.*nothing stored"):
        store.put_artifact(source)
    assert store._rows("SELECT COUNT(*) FROM artifacts")[0][0] == 0  # type: ignore[attr-defined]
    assert store._rows("SELECT COUNT(*) FROM artifact_chunks")[0][0] == 0  # type: ignore[attr-defined]
    store.close()


def test_device_facts_and_profiles_are_kept_per_device(store_target: StoreTarget) -> None:
    store = store_target.open()
    assert store.device_facts() == {} and store.profile("SER1") is None
    store.publish_facts("SER1", "host-a", {"id": "SER1", "abi": "arm64-v8a"})
    store.publish_facts("SER2", "host-a", {"id": "SER2"})
    store.publish_facts("SER1", "host-b", {"id": "SER1", "abi": "arm64-v8a", "moved": True})  # the phone moved
    store.put_profile("SER1", {"energy": {"sign": -1}})
    store.put_profile("SER1", {"energy": {"sign": 1}})
    store.close()
    again = store_target.open()
    facts = again.device_facts()
    assert sorted(facts) == ["SER1", "SER2"]
    assert facts["SER1"].host == "host-b" and facts["SER1"].facts == {"id": "SER1", "abi": "arm64-v8a", "moved": True}
    assert again.profile("SER1") == {"energy": {"sign": 1}} and again.profile("SER2") is None
    again.close()


def test_profiles_follow_a_phone_through_a_postgresql_store(store_target: StoreTarget, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """With a PostgreSQL store a profile lives in it (a local file is moved in on first use); with SQLite it stays
    a file of the host's data folder."""
    from devicelab import profiles

    monkeypatch.setenv("DEVICELAB_DATA", str(tmp_path / "host-a"))
    monkeypatch.delenv("DEVICELAB_DB", raising=False)
    profiles.use_store(None)
    profiles.update("SER1", "energy", {"sign": -1})  # calibrated before the farm: a file of host a
    assert profiles.profile_path("SER1").is_file()
    monkeypatch.setattr(profiles, "_location", store_target.db)  # as `run --db`/the farm worker set it
    assert profiles.load("SER1") == {"energy": {"sign": -1}}
    store = store_target.open()
    if store_target.backend == "postgresql":
        assert store.profile("SER1") == {"energy": {"sign": -1}}  # moved into the store on first use
        where = profiles.update("SER1", "energy", {"sign": 1})
        assert "(profile SER1)" in where and store.profile("SER1") == {"energy": {"sign": 1}}
        # another host (its own data folder, no file) reads the phone's profile from the store
        monkeypatch.setenv("DEVICELAB_DATA", str(tmp_path / "host-b"))
        assert profiles.load("SER1") == {"energy": {"sign": 1}}
        assert not profiles.profile_path("SER1").exists()
    else:
        assert store.profile("SER1") is None  # a SQLite store is one host's: the profile stays its file
        assert profiles.update("SER1", "energy", {"sign": 1}) == str(profiles.profile_path("SER1"))
        monkeypatch.setenv("DEVICELAB_DATA", str(tmp_path / "host-b"))
        assert profiles.load("SER1") == {}
    store.close()


PUBLISHER = """
import sys
from pathlib import Path
from devicelab.store import open_store
store = open_store(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
print(store.put_artifact(Path(sys.argv[2])), flush=True)
store.close()
"""


def test_processes_publishing_the_same_file_at_once_store_it_once(store_target: StoreTarget, tmp_path: Path) -> None:
    import hashlib
    import subprocess
    import sys

    source = tmp_path / "model.bin"
    source.write_bytes(hashlib.sha256(b"seed").digest() * (300 * 1024))  # 9.4 MiB: three chunks
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    store_target.open().close()  # the schema exists before they start
    publishers = [subprocess.Popen([sys.executable, "-c", PUBLISHER, store_target.db, str(source)],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   cwd=tmp_path) for _ in range(4)]
    try:
        for p in publishers:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready", p.stderr.read() if p.stderr else ""
        for p in publishers:  # all at once
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        for p in publishers:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0 and out.strip() == digest, err[-2000:]
    finally:
        for p in publishers:
            if p.poll() is None:
                p.kill()
    store = store_target.open()
    assert store._rows("SELECT COUNT(*) FROM artifacts")[0][0] == 1  # type: ignore[attr-defined]
    assert store._rows("SELECT COUNT(*) FROM artifact_chunks")[0][0] == 3  # type: ignore[attr-defined]
    assert store.get_artifact(digest, tmp_path / "back.bin").read_bytes() == source.read_bytes()
    store.close()
