"""Stores: where Runs and Results live. Callers are typed against the `Store` protocol; SQLite is the default
(embedded) and PostgreSQL (the farm) implements the same protocol, schema and migrations. Each Result is committed
the moment it exists, so a crash or Ctrl-C loses no finished row. Imports no device kind and no engine."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from devicelab.errors import DevicelabError, unknown_name_message
from devicelab.result import INFRA_FAILED, SCHEMA_VERSION, Result, migrate, utc_now

RUNNING, FINISHED, INTERRUPTED = "running", "finished", "interrupted"


@dataclass
class RunRecord:
    run_id: str
    created_at: str
    suite: dict[str, Any]
    seed: int
    host: dict[str, Any]
    devicelab_version: str
    git: dict[str, Any] | None = None
    argv: list[str] = field(default_factory=list)
    status: str = RUNNING
    finished_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "created_at": self.created_at, "finished_at": self.finished_at,
                "status": self.status, "suite": self.suite, "seed": self.seed, "host": self.host,
                "devicelab_version": self.devicelab_version, "git": self.git, "argv": self.argv}


@dataclass
class Heartbeat:
    """A farm phone's latest beat (devicelab farm): how it was when its worker last looked. `missed` counts the
    beats in a row that could not reach it; `job` is what its worker runs now (None: idle)."""

    device: str
    host: str
    worker: str
    at: str
    interval_s: float
    reachable: bool
    missed: int = 0
    battery_percent: float | None = None
    temperature_c: float | None = None
    charging: bool | None = None
    job: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "host": self.host, "worker": self.worker, "at": self.at,
                "interval_s": self.interval_s, "reachable": self.reachable, "missed": self.missed,
                "battery_percent": self.battery_percent, "temperature_c": self.temperature_c,
                "charging": self.charging, "job": self.job, "detail": self.detail}


class Store(Protocol):
    """What every store offers (SQLite here; PostgreSQL for the farm)."""

    @property
    def location(self) -> str:
        """Where the records are, for messages (a file path; a URL without its credentials)."""
        ...

    def create_run(self, run: RunRecord) -> None: ...
    def set_run_status(self, run_id: str, status: str) -> None: ...
    def get_run(self, run_id: str) -> RunRecord: ...
    def runs(self, limit: int = 50) -> list[RunRecord]: ...
    def add_result(self, result: Result) -> None: ...
    def results(self, run_id: str) -> list[Result]: ...
    def status_counts(self, run_id: str) -> dict[str, int]: ...
    def record_heartbeat(self, beat: Heartbeat) -> None:
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO heartbeats VALUES (?,?,?)",
                             (beat.device, beat.at, json.dumps(beat.to_dict())))

    def heartbeats(self) -> list[Heartbeat]:
        """Every farm phone's latest beat, by device id."""
        rows = self._db.execute("SELECT beat_json FROM heartbeats ORDER BY device")
        return [Heartbeat(**json.loads(r[0])) for r in rows]

    def done_keys(self, run_id: str) -> set[str]: ...
    def history(self, device: str | None = None) -> dict[str, list[tuple[str, str, Result]]]: ...
    def add_noise_floor(self, device: str, series_key: str, floor: float, run_id: str, detail: dict[str, Any]) -> None: ...
    def noise_floor(self, device: str, paired: bool = False) -> tuple[float, str] | None: ...
    def reset_baseline(self, series_key: str, run_id: str, note: str | None) -> None: ...
    def baselines(self) -> dict[str, str]: ...
    def record_heartbeat(self, beat: Heartbeat) -> None: ...
    def heartbeats(self) -> list[Heartbeat]: ...
    def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    finished_at TEXT,
    status TEXT NOT NULL,
    seed INTEGER NOT NULL,
    devicelab_version TEXT NOT NULL,
    suite_json TEXT NOT NULL,
    host_json TEXT NOT NULL,
    git_json TEXT,
    argv_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS results (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    identity_key TEXT NOT NULL,
    series_key TEXT NOT NULL,
    seq INTEGER NOT NULL,
    device TEXT NOT NULL,
    engine TEXT NOT NULL,
    label TEXT NOT NULL,
    model TEXT NOT NULL,
    precision TEXT NOT NULL,
    backend TEXT NOT NULL,
    threads INTEGER NOT NULL,
    status TEXT NOT NULL,
    median_s REAL,
    started_at TEXT,
    schema_version INTEGER NOT NULL,
    result_json TEXT NOT NULL,
    PRIMARY KEY (run_id, identity_key)
);
CREATE INDEX IF NOT EXISTS results_series ON results(series_key, run_id);
"""
# v2: the device noise floors (devicelab noise) and baseline resets (devicelab regress --reset-baseline).
_SCHEMA_V2 = """
CREATE TABLE IF NOT EXISTS noise_floors (
    device TEXT NOT NULL,
    series_key TEXT NOT NULL,
    floor REAL NOT NULL,
    run_id TEXT NOT NULL,
    measured_at TEXT NOT NULL,
    detail_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS baselines (
    series_key TEXT NOT NULL,
    run_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    note TEXT
);
"""
# The farm's phone health: one row per phone, its latest beat (created on open, like a table of v1: additive).
_SCHEMA_FARM = """
CREATE TABLE IF NOT EXISTS heartbeats (
    device TEXT PRIMARY KEY,
    at TEXT NOT NULL,
    beat_json TEXT NOT NULL
);
"""
# v3: every results row holds a Result of schema v2 (rows of v1 are migrated on open by result.migrate).
_USER_VERSION = 3


class SqliteStore:
    name = "sqlite"

    def __init__(self, path: Path, create: bool = True) -> None:
        self.path = path
        if not create and not path.exists():
            raise DevicelabError(f"no devicelab database at {path} (set --db or DEVICELAB_DB)")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), timeout=30.0)
        self._db.execute("PRAGMA journal_mode=WAL")  # readers (show, report) never block a running sweep
        self._db.execute("PRAGMA synchronous=NORMAL")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > _USER_VERSION:
            raise DevicelabError(f"{path} was written by a newer devicelab (store schema {version}); upgrade devicelab")
        if version < _USER_VERSION:
            # Migrations run step by step, each idempotent, so any older file reaches the current schema.
            with self._db:
                if version < 1:
                    self._db.executescript(_SCHEMA)
                if version < 2:
                    self._db.executescript(_SCHEMA_V2)
                if version < 3:
                    self._migrate_results()
                self._db.execute(f"PRAGMA user_version={_USER_VERSION}")
        with self._db:
            self._db.executescript(_SCHEMA_FARM)

    def _migrate_results(self) -> None:
        """Rows of an older Result schema, rewritten in the current one (in the open transaction: all or none). A
        row that does not migrate stops the open with its run and error: nothing is dropped or half-written."""
        rows = self._db.execute("SELECT run_id, identity_key, result_json FROM results WHERE schema_version < ?",
                                (SCHEMA_VERSION,)).fetchall()
        for run_id, key, data in rows:
            try:
                migrated = Result.from_dict(migrate(json.loads(data)))
            except (ValueError, TypeError, KeyError) as e:
                raise DevicelabError(f"{self.path}: a result of run {run_id} cannot be migrated to schema "
                                     f"v{SCHEMA_VERSION}: {e}") from None
            self._db.execute("UPDATE results SET schema_version=?, result_json=? WHERE run_id=? AND identity_key=?",
                             (SCHEMA_VERSION, migrated.to_json(), run_id, key))

    @property
    def location(self) -> str:
        return str(self.path)

    def close(self) -> None:
        self._db.close()

    def create_run(self, run: RunRecord) -> None:
        with self._db:
            self._db.execute(
                "INSERT INTO runs VALUES (?,?,?,?,?,?,?,?,?,?)",
                (run.run_id, run.created_at, run.finished_at, run.status, run.seed, run.devicelab_version,
                 json.dumps(run.suite), json.dumps(run.host), json.dumps(run.git), json.dumps(run.argv)))

    def set_run_status(self, run_id: str, status: str) -> None:
        with self._db:
            self._db.execute("UPDATE runs SET status=?, finished_at=? WHERE run_id=?",
                             (status, utc_now() if status != RUNNING else None, run_id))

    def _record(self, row: Sequence[Any]) -> RunRecord:
        (run_id, created, finished, status, seed, version, suite, host, git, argv) = row
        return RunRecord(run_id, created, json.loads(suite), seed, json.loads(host), version, json.loads(git),
                         json.loads(argv), status, finished)

    def get_run(self, run_id: str) -> RunRecord:
        row = self._db.execute("SELECT * FROM runs WHERE run_id=?", (run_id,)).fetchone()
        if row is None:
            recent = [r[0] for r in self._db.execute("SELECT run_id FROM runs ORDER BY created_at DESC LIMIT 5")]
            raise DevicelabError(unknown_name_message("run id", run_id, recent) if recent
                                 else f"unknown run id '{run_id}': no runs stored in {self.path}")
        return self._record(row)

    def runs(self, limit: int = 50) -> list[RunRecord]:
        rows = self._db.execute("SELECT * FROM runs ORDER BY created_at DESC, run_id DESC LIMIT ?", (limit,))
        return [self._record(r) for r in rows]

    def add_result(self, result: Result) -> None:
        """Insert, or replace an earlier row of the same config unless that row is ok (resume never
        overwrites a finished measurement)."""
        key = result.config.identity_key()
        with self._db:
            old = self._db.execute("SELECT status, seq FROM results WHERE run_id=? AND identity_key=?",
                                   (result.run_id, key)).fetchone()
            if old is not None and old[0] == "ok":
                raise ValueError(f"refusing to overwrite an ok result of run {result.run_id}")
            seq = old[1] if old else self._db.execute(
                "SELECT COALESCE(MAX(seq), -1) + 1 FROM results WHERE run_id=?", (result.run_id,)).fetchone()[0]
            self._db.execute(
                "INSERT OR REPLACE INTO results VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (result.run_id, key, result.config.series_key(), seq, result.device, result.engine, result.label,
                 result.model, result.precision, result.backend, result.threads, result.status, result.median_s,
                 result.started_at, result.schema_version, result.to_json()))

    def results(self, run_id: str) -> list[Result]:
        rows = self._db.execute("SELECT result_json FROM results WHERE run_id=? ORDER BY seq", (run_id,))
        return [Result.from_dict(json.loads(r[0])) for r in rows]

    def status_counts(self, run_id: str) -> dict[str, int]:
        """Results per status, counted in SQL: `devicelab runs` lists many runs without parsing their samples."""
        rows = self._db.execute("SELECT status, COUNT(*) FROM results WHERE run_id=? GROUP BY status", (run_id,))
        return {status: n for status, n in rows}

    def history(self, device: str | None = None) -> dict[str, list[tuple[str, str, Result]]]:
        """Every ok Result by series key, oldest run first: (run_id, run created_at, result)."""
        query = ("SELECT r.series_key, r.run_id, runs.created_at, r.result_json FROM results r JOIN runs USING (run_id) "
                 "WHERE r.status = 'ok'" + (" AND r.device = ?" if device else "") +
                 " ORDER BY runs.created_at, r.run_id, r.seq")
        out: dict[str, list[tuple[str, str, Result]]] = {}
        for key, run_id, created, data in self._db.execute(query, (device,) if device else ()):
            out.setdefault(key, []).append((run_id, created, Result.from_dict(json.loads(data))))
        return out

    def add_noise_floor(self, device: str, series_key: str, floor: float, run_id: str, detail: dict[str, Any]) -> None:
        with self._db:
            self._db.execute("INSERT INTO noise_floors VALUES (?,?,?,?,?,?)",
                             (device, series_key, floor, run_id, utc_now(), json.dumps(detail)))

    def noise_floor(self, device: str, paired: bool = False) -> tuple[float, str] | None:
        """The device's latest A/A noise floor (relative) measured paired (lockstep rounds) or unpaired (separate
        processes), and the run that measured it. Floors stored before `paired` was recorded were unpaired."""
        rows = self._db.execute("SELECT floor, run_id, detail_json FROM noise_floors WHERE device=? "
                                "ORDER BY measured_at DESC", (device,))
        for floor, run_id, detail in rows:
            if bool(json.loads(detail or "{}").get("paired", False)) == paired:
                return float(floor), run_id
        return None

    def reset_baseline(self, series_key: str, run_id: str, note: str | None) -> None:
        with self._db:
            self._db.execute("INSERT INTO baselines VALUES (?,?,?,?)", (series_key, run_id, utc_now(), note))

    def baselines(self) -> dict[str, str]:
        """Series key ('*' for all) → the run from which history counts, latest reset wins."""
        rows = self._db.execute("SELECT series_key, run_id FROM baselines ORDER BY created_at")
        return {k: r for k, r in rows}

    def record_heartbeat(self, beat: Heartbeat) -> None:
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO heartbeats VALUES (?,?,?)",
                             (beat.device, beat.at, json.dumps(beat.to_dict())))

    def heartbeats(self) -> list[Heartbeat]:
        """Every farm phone's latest beat, by device id."""
        rows = self._db.execute("SELECT beat_json FROM heartbeats ORDER BY device")
        return [Heartbeat(**json.loads(r[0])) for r in rows]

    def done_keys(self, run_id: str) -> set[str]:
        """Identity keys that --resume must not run again: everything but infra failures."""
        rows = self._db.execute("SELECT identity_key FROM results WHERE run_id=? AND status != ?",
                                (run_id, INFRA_FAILED))
        return {r[0] for r in rows}


def open_store(db: str | None, create: bool = True) -> Store:
    from devicelab.paths import default_db

    path = Path(db).expanduser() if db else default_db()
    return SqliteStore(path, create=create)
