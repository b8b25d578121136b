"""Stores: where Runs and Results live. Callers are typed against the `Store` protocol; SQLite is the default
(embedded) and PostgreSQL (the farm, devicelab.store_pg) implements the same protocol with the same schema,
migrations and queries: both are a `SqlStore`, which differs per database only in how it connects, opens a write
transaction and keeps its schema version. Each Result is committed the moment it exists, so a crash or Ctrl-C loses
no finished row. Imports no device kind and no engine."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from devicelab.errors import DevicelabError, unknown_name_message
from devicelab.paths import sha256_file
from devicelab.result import CONFIG_FIELDS, INFRA_FAILED, OK, SCHEMA_VERSION, Config, Result, migrate, utc_now

RUNNING, FINISHED, INTERRUPTED = "running", "finished", "interrupted"

# What add_result did: a new row, a row that replaced one that was not ok, or nothing (the same row was there).
Written = Literal["inserted", "replaced", "unchanged"]


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


@dataclass(frozen=True)
class PlannedRow:
    """One planned config of a run as the store keeps it (the plan's PlannedConfig without the planner's types):
    written with the run before anything runs, so `--resume` on any host re-plans from it."""

    config: Config
    engine_options: dict[str, Any] = field(default_factory=dict)
    unsupported: str | None = None  # why the plan knew it cannot run


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


@dataclass(frozen=True)
class StoredFacts:
    """A phone's facts as its farm agent published them: which host has it, and when they were read."""

    device: str
    host: str
    at: str
    facts: dict[str, Any]


class ArtifactMismatch(DevicelabError):
    """An artifact whose content, as it arrived, does not hash to its address: the stored copy (or its transfer) is
    damaged, and nothing was written."""

    def __init__(self, message: str, sha256: str) -> None:
        super().__init__(message)
        self.sha256 = sha256


class ResultConflict(DevicelabError, ValueError):
    """A Result for a (run, identity key) that already has a different ok row: a finished measurement is never
    overwritten, by a resume, a retried farm task or a spool flush alike."""


class Store(Protocol):
    """What every store offers (SQLite here; PostgreSQL for the farm)."""

    @property
    def location(self) -> str:
        """Where the records are, for messages (a file path; a URL without its password)."""
        ...

    def create_run(self, run: RunRecord, planned: Sequence[PlannedRow] = ()) -> None: ...
    def set_run_status(self, run_id: str, status: str) -> None: ...
    def get_run(self, run_id: str) -> RunRecord: ...
    def runs(self, limit: int = 50) -> list[RunRecord]: ...
    def planned(self, run_id: str) -> list[PlannedRow]: ...
    def add_result(self, result: Result) -> Written: ...
    def results(self, run_id: str) -> list[Result]: ...
    def status_counts(self, run_id: str) -> dict[str, int]: ...
    def done_keys(self, run_id: str) -> set[str]: ...
    def history(self, device: str | None = None) -> dict[str, list[tuple[str, str, Result]]]: ...
    def add_noise_floor(self, device: str, series_key: str, floor: float, run_id: str, detail: dict[str, Any]) -> None: ...
    def noise_floor(self, device: str, paired: bool = False) -> tuple[float, str] | None: ...
    def reset_baseline(self, series_key: str, run_id: str, note: str | None) -> None: ...
    def baselines(self) -> dict[str, str]: ...
    def add_ack(self, alert_id: str, series_key: str, at_run: str, note: str | None) -> None: ...
    def acks(self) -> list[dict[str, Any]]: ...
    def add_acceptance(self, series_key: str, run_id: str, label: str, engine_version: str | None,
                       note: str | None) -> None: ...
    def acceptances(self) -> dict[str, str]: ...
    def record_heartbeat(self, beat: Heartbeat) -> None: ...
    def heartbeats(self) -> list[Heartbeat]: ...
    def put_artifact(self, path: Path, name: str | None = None) -> str: ...
    def get_artifact(self, sha256: str, dest: Path, mode: int = 0o644) -> Path: ...
    def has_artifact(self, sha256: str) -> bool: ...
    def drop_artifact(self, sha256: str) -> None: ...
    def publish_facts(self, device: str, host: str, facts: dict[str, Any]) -> None: ...
    def device_facts(self) -> dict[str, StoredFacts]: ...
    def profile(self, key: str) -> dict[str, Any] | None: ...
    def put_profile(self, key: str, profile: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


# The one schema, in SQL that SQLite and PostgreSQL both take (REAL is 4 bytes in PostgreSQL: floats are DOUBLE
# PRECISION; JSON is kept as the text devicelab wrote, so a row reads back identical from either store).
_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    finished_at TEXT,
    status TEXT NOT NULL,
    seed BIGINT NOT NULL,
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
    median_s DOUBLE PRECISION,
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
    floor DOUBLE PRECISION NOT NULL,
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
# v3: every results row holds a Result of schema v2 (rows of v1 are migrated on open by result.migrate).
# v4: a run's plan, one row per planned config in plan order, written with the run (runs before v4 have none).
_SCHEMA_V4 = """
CREATE TABLE IF NOT EXISTS planned (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    identity_key TEXT NOT NULL,
    seq INTEGER NOT NULL,
    device TEXT NOT NULL,
    config_json TEXT NOT NULL,
    engine_options_json TEXT NOT NULL,
    unsupported TEXT,
    PRIMARY KEY (run_id, identity_key)
);
"""
# v5: nightly A/B tracking: alerts acknowledged (`regress ack`) and candidates accepted as the reference (`accept`).
_SCHEMA_V5 = """
CREATE TABLE IF NOT EXISTS alert_acks (
    alert_id TEXT PRIMARY KEY,
    series_key TEXT NOT NULL,
    at_run TEXT NOT NULL,
    created_at TEXT NOT NULL,
    note TEXT
);
CREATE TABLE IF NOT EXISTS acceptances (
    series_key TEXT NOT NULL,
    run_id TEXT NOT NULL,
    label TEXT NOT NULL,
    engine_version TEXT,
    created_at TEXT NOT NULL,
    note TEXT
);
"""
# v6: the farm's phone health, each phone's latest beat (devicelab farm status).
_SCHEMA_V6 = """
CREATE TABLE IF NOT EXISTS heartbeats (
    device TEXT PRIMARY KEY,
    at TEXT NOT NULL,
    beat_json TEXT NOT NULL
);
"""
# v7: what farm hosts share besides Results. Artifacts: files addressed by their sha256 (models, converted models,
# runner binaries) that a worker on another host fetches and checks on arrival; their content is kept in chunks of
# ARTIFACT_CHUNK bytes so neither end holds a whole model in one statement. Device facts: what an agent read from
# each of its phones, so a client plans for phones that are not attached to it. Profiles: what devicelab learned
# about one physical device (its battery calibration), so it follows the phone from host to host. BLOB is a
# placeholder: the database's own binary type (SQLite BLOB, PostgreSQL BYTEA).
_SCHEMA_V7 = """
CREATE TABLE IF NOT EXISTS artifacts (
    sha256 TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    bytes BIGINT NOT NULL,
    chunks INTEGER NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS artifact_chunks (
    sha256 TEXT NOT NULL REFERENCES artifacts(sha256),
    seq INTEGER NOT NULL,
    content BLOB NOT NULL,
    PRIMARY KEY (sha256, seq)
);
CREATE TABLE IF NOT EXISTS device_facts (
    device TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    at TEXT NOT NULL,
    facts_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS profiles (
    profile_key TEXT PRIMARY KEY,
    at TEXT NOT NULL,
    profile_json TEXT NOT NULL
);
"""
STORE_SCHEMA_VERSION = 7
ARTIFACT_CHUNK = 4 * 1024 * 1024  # bytes per stored chunk: a few statements per model, each a few MB
_USER_VERSION = STORE_SCHEMA_VERSION  # the name SQLite's PRAGMA gives it


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


# Postgres URLs carry a password in the authority (user:secret@) or as a query parameter (?password=secret).
_URL_PASSWORD = re.compile(r"((?:postgres|postgresql)://[^/?#@\s]*?:)([^/?#\s]*)(@)", re.IGNORECASE)
_PARAM_PASSWORD = re.compile(r"([?&]password=)([^&#\s]*)", re.IGNORECASE)


def redact(text: str) -> str:
    """`text` with the password of every PostgreSQL URL in it replaced by ***: what is recorded (a run's argv) and
    printed (a store's location, its errors) never holds a credential."""
    text = _URL_PASSWORD.sub(r"\1***\3", text)
    if re.search(r"postgres(?:ql)?://", text, re.IGNORECASE):
        text = _PARAM_PASSWORD.sub(r"\1***", text)
    return text


def is_postgres_url(db: str) -> bool:
    return db.lower().startswith(("postgresql://", "postgres://"))


def config_to_dict(config: Config) -> dict[str, Any]:
    return {name: (list(config.cpus) if name == "cpus" else getattr(config, name)) for name in CONFIG_FIELDS}


def config_from_dict(data: dict[str, Any]) -> Config:
    return Config(**{k: (tuple(v) if k == "cpus" else v) for k, v in data.items()})


class SqlStore:
    """The Store protocol in SQL both databases run: the subclasses give a connection and its dialect."""

    name = "sql"
    _blob = "BLOB"  # the database's type for bytes
    _for_update = ""  # the row lock a write transaction takes on its run (" FOR UPDATE" where rows lock)

    # ---- what a database provides

    @property
    def location(self) -> str:
        raise NotImplementedError

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement (placeholders are ?) and return its rows (none for a write)."""
        raise NotImplementedError

    def _write(self) -> contextlib.AbstractContextManager[None]:
        """A write transaction: everything in it commits together or not at all."""
        raise NotImplementedError

    def _version(self) -> int:
        raise NotImplementedError

    def _set_version(self, version: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    # ---- schema

    def _migrate(self) -> None:
        """Bring the schema to STORE_SCHEMA_VERSION, step by step (each idempotent, all in one transaction), so any
        older database reaches the current one. Called inside `_write()` by the subclass's open."""
        version = self._version()
        if version > STORE_SCHEMA_VERSION:
            raise DevicelabError(f"{self.location} was written by a newer devicelab (store schema {version}); "
                                 "upgrade devicelab")
        if version == STORE_SCHEMA_VERSION:
            return
        steps: list[tuple[int, Callable[[], None]]] = [
            (1, lambda: self._script(_SCHEMA)), (2, lambda: self._script(_SCHEMA_V2)),
            (3, self._migrate_results), (4, lambda: self._script(_SCHEMA_V4)),
            (5, lambda: self._script(_SCHEMA_V5)),
            (6, lambda: self._script(_SCHEMA_V6)),
            (7, lambda: self._script(_SCHEMA_V7.replace("BLOB", self._blob)))]
        for target, step in steps:
            if version < target:
                step()
        self._set_version(STORE_SCHEMA_VERSION)

    def _script(self, script: str) -> None:
        for statement in _statements(script):
            self._rows(statement)

    def _migrate_results(self) -> None:
        """Rows of an older Result schema, rewritten in the current one (in the open transaction: all or none). A
        row that does not migrate stops the open with its run and error: nothing is dropped or half-written."""
        rows = self._rows("SELECT run_id, identity_key, result_json FROM results WHERE schema_version < ?",
                          (SCHEMA_VERSION,))
        for run_id, key, data in rows:
            try:
                migrated = Result.from_dict(migrate(json.loads(data)))
            except (ValueError, TypeError, KeyError) as e:
                raise DevicelabError(f"{self.location}: a result of run {run_id} cannot be migrated to schema "
                                     f"v{SCHEMA_VERSION}: {e}") from None
            self._rows("UPDATE results SET schema_version=?, result_json=? WHERE run_id=? AND identity_key=?",
                       (SCHEMA_VERSION, migrated.to_json(), run_id, key))

    # ---- runs and their plans

    def create_run(self, run: RunRecord, planned: Sequence[PlannedRow] = ()) -> None:
        """The run and its whole plan, in one transaction: a run is never stored without its plan. The argv is stored
        with any URL password redacted."""
        with self._write():
            self._rows("INSERT INTO runs VALUES (?,?,?,?,?,?,?,?,?,?)",
                       (run.run_id, run.created_at, run.finished_at, run.status, run.seed, run.devicelab_version,
                        json.dumps(run.suite), json.dumps(run.host), json.dumps(run.git),
                        json.dumps([redact(a) for a in run.argv])))
            for seq, row in enumerate(planned):
                self._rows("INSERT INTO planned VALUES (?,?,?,?,?,?,?)",
                           (run.run_id, row.config.identity_key(), seq, row.config.device,
                            json.dumps(config_to_dict(row.config)), json.dumps(row.engine_options), row.unsupported))

    def planned(self, run_id: str) -> list[PlannedRow]:
        """The run's plan in plan order; empty for a run stored before plans were (store schema < 4)."""
        rows = self._rows("SELECT config_json, engine_options_json, unsupported FROM planned WHERE run_id=? "
                          "ORDER BY seq", (run_id,))
        return [PlannedRow(config_from_dict(json.loads(c)), json.loads(o), u) for c, o, u in rows]

    def set_run_status(self, run_id: str, status: str) -> None:
        with self._write():
            self._rows("UPDATE runs SET status=?, finished_at=? WHERE run_id=?",
                       (status, utc_now() if status != RUNNING else None, run_id))

    def _record(self, row: Sequence[Any]) -> RunRecord:
        (run_id, created, finished, status, seed, version, suite, host, git, argv) = row
        return RunRecord(run_id, created, json.loads(suite), int(seed), json.loads(host), version, json.loads(git),
                         json.loads(argv), status, finished)

    def get_run(self, run_id: str) -> RunRecord:
        rows = self._rows("SELECT * FROM runs WHERE run_id=?", (run_id,))
        if not rows:
            recent = [r[0] for r in self._rows("SELECT run_id FROM runs ORDER BY created_at DESC LIMIT 5")]
            raise DevicelabError(unknown_name_message("run id", run_id, recent) if recent
                                 else f"unknown run id '{run_id}': no runs stored in {self.location}")
        return self._record(rows[0])

    def runs(self, limit: int = 50) -> list[RunRecord]:
        rows = self._rows("SELECT * FROM runs ORDER BY created_at DESC, run_id DESC LIMIT ?", (limit,))
        return [self._record(r) for r in rows]

    # ---- results

    def add_result(self, result: Result) -> Written:
        """Store a Result, idempotently per (run, identity key) so that writers on many hosts, a resume, a retried
        task and a spool flush can all write without duplicating or losing a row:

        * no row yet: inserted;
        * the same Result again: nothing happens ("unchanged");
        * a row that is not ok (infra-failed, failed, unsupported): replaced, keeping its place in the run;
        * a different Result where an ok row is: refused (ResultConflict) — a finished measurement stays.

        The run's row is locked for the transaction, so concurrent writers of one run take turns and each decides
        on what the last one committed."""
        key = result.config.identity_key()
        with self._write():
            if not self._rows("SELECT run_id FROM runs WHERE run_id=?" + self._for_update, (result.run_id,)):
                raise DevicelabError(f"unknown run id '{result.run_id}' in {self.location}: a result needs its run")
            old = self._rows("SELECT status, seq, result_json FROM results WHERE run_id=? AND identity_key=?",
                             (result.run_id, key))
            if old:
                status, seq, data = old[0]
                if Result.from_dict(json.loads(data)) == result:
                    return "unchanged"
                if status == OK:
                    c = result.config
                    raise ResultConflict(
                        f"run {result.run_id} already has a different ok result for {c.engine} {c.model} on "
                        f"{c.device} ({c.precision}, {c.backend}, {c.threads} threads, repeat {c.repeat}); "
                        f"refusing to overwrite an ok result")
                self._rows("DELETE FROM results WHERE run_id=? AND identity_key=?", (result.run_id, key))
            else:
                seq = self._rows("SELECT COALESCE(MAX(seq), -1) + 1 FROM results WHERE run_id=?",
                                 (result.run_id,))[0][0]
            self._rows("INSERT INTO results VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                       (result.run_id, key, result.config.series_key(), seq, result.device, result.engine,
                        result.label, result.model, result.precision, result.backend, result.threads, result.status,
                        result.median_s, result.started_at, result.schema_version, result.to_json()))
        return "replaced" if old else "inserted"

    def results(self, run_id: str) -> list[Result]:
        rows = self._rows("SELECT result_json FROM results WHERE run_id=? ORDER BY seq", (run_id,))
        return [Result.from_dict(json.loads(r[0])) for r in rows]

    def status_counts(self, run_id: str) -> dict[str, int]:
        """Results per status, counted in SQL: `devicelab runs` lists many runs without parsing their samples."""
        rows = self._rows("SELECT status, COUNT(*) FROM results WHERE run_id=? GROUP BY status", (run_id,))
        return {status: int(n) for status, n in rows}

    def done_keys(self, run_id: str) -> set[str]:
        """Identity keys that --resume must not run again: everything but infra failures."""
        rows = self._rows("SELECT identity_key FROM results WHERE run_id=? AND status != ?", (run_id, INFRA_FAILED))
        return {r[0] for r in rows}

    def history(self, device: str | None = None) -> dict[str, list[tuple[str, str, Result]]]:
        """Every ok Result by series key, oldest run first: (run_id, run created_at, result)."""
        query = ("SELECT r.series_key, r.run_id, runs.created_at, r.result_json FROM results r JOIN runs USING (run_id) "
                 "WHERE r.status = 'ok'" + (" AND r.device = ?" if device else "") +
                 " ORDER BY runs.created_at, r.run_id, r.seq")
        out: dict[str, list[tuple[str, str, Result]]] = {}
        for key, run_id, created, data in self._rows(query, (device,) if device else ()):
            out.setdefault(key, []).append((run_id, created, Result.from_dict(json.loads(data))))
        return out

    # ---- noise floors and baselines

    def add_noise_floor(self, device: str, series_key: str, floor: float, run_id: str, detail: dict[str, Any]) -> None:
        with self._write():
            self._rows("INSERT INTO noise_floors VALUES (?,?,?,?,?,?)",
                       (device, series_key, floor, run_id, utc_now(), json.dumps(detail)))

    def noise_floor(self, device: str, paired: bool = False) -> tuple[float, str] | None:
        """The device's latest A/A noise floor (relative) measured paired (lockstep rounds) or unpaired (separate
        processes), and the run that measured it. Floors stored before `paired` was recorded were unpaired."""
        rows = self._rows("SELECT floor, run_id, detail_json FROM noise_floors WHERE device=? "
                          "ORDER BY measured_at DESC", (device,))
        for floor, run_id, detail in rows:
            if bool(json.loads(detail or "{}").get("paired", False)) == paired:
                return float(floor), run_id
        return None

    def reset_baseline(self, series_key: str, run_id: str, note: str | None) -> None:
        with self._write():
            self._rows("INSERT INTO baselines VALUES (?,?,?,?)", (series_key, run_id, utc_now(), note))

    def baselines(self) -> dict[str, str]:
        """Series key ('*' for all) → the run from which history counts, latest reset wins."""
        rows = self._rows("SELECT series_key, run_id FROM baselines ORDER BY created_at")
        return {k: r for k, r in rows}

    # ---- nightly A/B tracking (analysis.nightly)

    def add_ack(self, alert_id: str, series_key: str, at_run: str, note: str | None) -> None:
        """An alert seen and kept (`regress ack`); acknowledging it again keeps the first acknowledgement."""
        with self._write():
            if not self._rows("SELECT 1 FROM alert_acks WHERE alert_id=?", (alert_id,)):
                self._rows("INSERT INTO alert_acks VALUES (?,?,?,?,?)", (alert_id, series_key, at_run, utc_now(), note))

    def acks(self) -> list[dict[str, Any]]:
        rows = self._rows("SELECT alert_id, series_key, at_run, created_at, note FROM alert_acks ORDER BY created_at")
        return [dict(zip(("alert_id", "series_key", "at_run", "created_at", "note"), r, strict=True)) for r in rows]

    def add_acceptance(self, series_key: str, run_id: str, label: str, engine_version: str | None,
                       note: str | None) -> None:
        with self._write():
            self._rows("INSERT INTO acceptances VALUES (?,?,?,?,?,?)",
                       (series_key, run_id, label, engine_version, utc_now(), note))

    def acceptances(self) -> dict[str, str]:
        """Nightly series key → the run whose candidate was accepted last (its history restarts after it)."""
        rows = self._rows("SELECT series_key, run_id FROM acceptances ORDER BY created_at")
        return {k: r for k, r in rows}

    # ---- the farm's phone health

    def record_heartbeat(self, beat: Heartbeat) -> None:
        """The phone's latest beat replaces its previous one (both databases run this upsert)."""
        with self._write():
            self._rows("INSERT INTO heartbeats VALUES (?,?,?) ON CONFLICT (device) DO UPDATE SET at=excluded.at, "
                       "beat_json=excluded.beat_json", (beat.device, beat.at, json.dumps(beat.to_dict())))

    def heartbeats(self) -> list[Heartbeat]:
        """Every farm phone's latest beat, by device id."""
        return [Heartbeat(**json.loads(r[0])) for r in self._rows("SELECT beat_json FROM heartbeats ORDER BY device")]

    # ---- artifacts: files by content, for hosts that do not share the client's disk

    def has_artifact(self, sha256: str) -> bool:
        return bool(self._rows("SELECT 1 FROM artifacts WHERE sha256=?", (sha256,)))

    def put_artifact(self, path: Path, name: str | None = None) -> str:
        """The file at `path` stored under its sha256 (returned); nothing is written when that content is stored
        already. The file is read twice, a chunk at a time: once for its hash, once into the store (checked against
        the first: a file that changes while it is published is refused, never stored under a wrong address)."""
        digest = sha256_file(path)
        if self.has_artifact(digest):
            return digest
        size = path.stat().st_size
        chunks = max(1, -(-size // ARTIFACT_CHUNK))
        with self._write():
            # Two hosts publishing the same content at once: the second insert waits for the first to commit and
            # then finds the row (PostgreSQL), or runs after it (SQLite's write lock): content is stored once.
            if not self._rows("INSERT INTO artifacts VALUES (?,?,?,?,?) ON CONFLICT (sha256) DO NOTHING RETURNING sha256",
                              (digest, name or path.name, size, chunks, utc_now())):
                return digest
            check = hashlib.sha256()
            written = 0
            with path.open("rb") as f:
                for seq in range(chunks):
                    block = f.read(ARTIFACT_CHUNK)
                    check.update(block)
                    written += len(block)
                    self._rows("INSERT INTO artifact_chunks VALUES (?,?,?)", (digest, seq, block))
                rest = f.read(1)
            if check.hexdigest() != digest or written != size or rest:
                raise DevicelabError(f"{path} changed while it was published (sha256 {digest[:12]}… when hashed, "
                                     f"{check.hexdigest()[:12]}… when stored): nothing stored")
        return digest

    def get_artifact(self, sha256: str, dest: Path, mode: int = 0o644) -> Path:
        """The artifact `sha256` written to `dest` with permissions `mode` (a runner binary needs its execute bits),
        checked on arrival: its content must hash to its address. It is written to a temporary file beside `dest` and
        renamed only when it checks, so `dest` is either the whole, checked file or untouched; a mismatch is one line
        (ArtifactMismatch)."""
        head = self._rows("SELECT name, bytes, chunks FROM artifacts WHERE sha256=?", (sha256,))
        if not head:
            raise DevicelabError(f"artifact sha256 {sha256[:12]}… is not in {self.location}: publish it first "
                                 "(devicelab run --farm publishes what its tasks need)")
        name, size, chunks = head[0]
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        tmp = Path(tmp_name)
        check = hashlib.sha256()
        got = 0
        try:
            with os.fdopen(fd, "wb") as f:
                for seq in range(int(chunks)):
                    rows = self._rows("SELECT content FROM artifact_chunks WHERE sha256=? AND seq=?", (sha256, seq))
                    block = bytes(rows[0][0]) if rows else b""
                    check.update(block)
                    got += len(block)
                    f.write(block)
            if check.hexdigest() != sha256 or got != int(size):
                raise ArtifactMismatch(f"artifact {name} from {self.location} failed its check on arrival: sha256 "
                                       f"{check.hexdigest()} ({got} bytes), expected {sha256} ({size} bytes); "
                                       f"nothing written to {dest}", sha256)
            os.chmod(tmp, mode)
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return dest

    def drop_artifact(self, sha256: str) -> None:
        """Forget a damaged artifact, so that the next publication of its file stores it again."""
        with self._write():
            self._rows("DELETE FROM artifact_chunks WHERE sha256=?", (sha256,))
            self._rows("DELETE FROM artifacts WHERE sha256=?", (sha256,))

    # ---- device facts and profiles: what follows a phone between hosts

    def publish_facts(self, device: str, host: str, facts: dict[str, Any]) -> None:
        """The phone's facts as its host's agent read them (a later publication replaces an earlier one)."""
        with self._write():
            self._rows("INSERT INTO device_facts VALUES (?,?,?,?) ON CONFLICT (device) DO UPDATE SET "
                       "host=excluded.host, at=excluded.at, facts_json=excluded.facts_json",
                       (device, host, utc_now(), json.dumps(facts, sort_keys=True)))

    def device_facts(self) -> dict[str, StoredFacts]:
        rows = self._rows("SELECT device, host, at, facts_json FROM device_facts ORDER BY device")
        return {d: StoredFacts(d, h, a, json.loads(f)) for d, h, a, f in rows}

    def profile(self, key: str) -> dict[str, Any] | None:
        """A physical device's profile (devicelab.profiles), None when the store has none."""
        rows = self._rows("SELECT profile_json FROM profiles WHERE profile_key=?", (key,))
        return json.loads(rows[0][0]) if rows else None

    def put_profile(self, key: str, profile: dict[str, Any]) -> None:
        with self._write():
            self._rows("INSERT INTO profiles VALUES (?,?,?) ON CONFLICT (profile_key) DO UPDATE SET at=excluded.at, "
                       "profile_json=excluded.profile_json", (key, utc_now(), json.dumps(profile, sort_keys=True)))


# How long a SQLite store waits for another process's lock (the busy timeout) before giving up.
_SQLITE_TIMEOUT_S = 30.0


class SqliteStore(SqlStore):
    name = "sqlite"

    def __init__(self, path: Path, create: bool = True) -> None:
        self.path = path
        if not create and not path.exists():
            raise DevicelabError(f"no devicelab database at {path} (set --db or DEVICELAB_DB)")
        path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: transactions are the explicit BEGIN IMMEDIATE of _write() (Python's implicit BEGIN is
        # deferred, and a deferred reader that then writes fails at once, waiting for nobody, when another process
        # writes at the same time).
        if create:
            self._db = sqlite3.connect(str(path), timeout=_SQLITE_TIMEOUT_S, isolation_level=None)
        else:
            # Open only what exists (mode=rw): a file moved away between the check above and here must fail the
            # open, not leave a fresh empty store in its place (a farm worker would write rows into it).
            try:
                self._db = sqlite3.connect(path.absolute().as_uri() + "?mode=rw", timeout=_SQLITE_TIMEOUT_S,
                                           isolation_level=None, uri=True)
            except sqlite3.OperationalError:
                raise DevicelabError(f"no devicelab database at {path} (set --db or DEVICELAB_DB)") from None
        self._journal_wal()
        self._db.execute("PRAGMA synchronous=NORMAL")
        if self._version() != STORE_SCHEMA_VERSION:
            with self._write():
                self._migrate()

    def _journal_wal(self) -> None:
        """WAL, so readers (show, report) never block a running sweep. The switch reads the file, then asks for the
        write lock; when several processes open a new store at once (a farm's workers), one that has read and then
        finds another holding that lock gets SQLITE_BUSY at once, without the busy timeout (SQLite's answer to a
        would-be deadlock). So the switch is retried, with a jitter, until the timeout has passed since the first
        attempt, each attempt waiting at most what is left of it. A file system where SQLite cannot use WAL keeps
        the rollback journal (the pragma answers with the mode it kept): the store works, readers wait for writes."""
        deadline = time.monotonic() + _SQLITE_TIMEOUT_S
        try:
            while True:
                left = deadline - time.monotonic()
                self._db.execute(f"PRAGMA busy_timeout={max(1, int(left * 1000))}")
                try:
                    self._db.execute("PRAGMA journal_mode=WAL")
                    return
                except sqlite3.OperationalError as e:
                    code = getattr(e, "sqlite_errorcode", None)
                    if code is None or code & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                        raise
                time.sleep(random.uniform(0.005, 0.05))
        finally:
            self._db.execute(f"PRAGMA busy_timeout={int(_SQLITE_TIMEOUT_S * 1000)}")

    @property
    def location(self) -> str:
        return str(self.path)

    def close(self) -> None:
        self._db.close()

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._db.execute(sql, tuple(params)).fetchall()

    @contextlib.contextmanager
    def _write(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")  # the write lock now: the transaction decides on what is committed
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def _set_version(self, version: int) -> None:
        self._db.execute(f"PRAGMA user_version={int(version)}")


def open_store(db: str | None, create: bool = True) -> Store:
    """The store `--db` names, else DEVICELAB_DB's, else the data folder's SQLite file: a postgresql:// (or
    postgres://) URL is a PostgreSQL store, anything else a SQLite file."""
    from devicelab.paths import default_db

    target = db or os.environ.get("DEVICELAB_DB") or ""
    if is_postgres_url(target):
        from devicelab.store_pg import PostgresStore  # only a PostgreSQL user pays for importing psycopg

        return PostgresStore(target, create=create)
    path = Path(target).expanduser() if target else default_db()
    return SqliteStore(path, create=create)
