"""The PostgreSQL store: the farm's one record, shared by every host. The same Store as SQLite — same schema, same
migrations, same queries (devicelab.store.SqlStore) — over psycopg 3, imported only when a postgresql:// URL is
opened. Credentials come from libpq (PGPASSWORD, PGSERVICE and its service file, ~/.pgpass) or the URL itself, and are
never stored or printed: `location` is the URL without its password. Imports no device kind and no engine."""

from __future__ import annotations

import contextlib
import os
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from devicelab.errors import DevicelabError
from devicelab.result import Result
from devicelab.store import (_PARAM_PASSWORD, _URL_PASSWORD, STORE_SCHEMA_VERSION, Heartbeat, PlannedRow, RunRecord,
                             SqlStore, StoredFacts, Written, redact)

T = TypeVar("T")

# An opener that reads a schema version other than the current one takes this transaction-level lock and reads it
# again before it migrates, so hosts that open a fresh (or older) database at once migrate it once, one after the
# other; an open at the current version takes no lock.
_MIGRATION_LOCK = zlib.crc32(b"devicelab store schema")


def _one_line(error: BaseException, url: str) -> str:
    """libpq's message on one line, without the URL's password even where the message quotes a piece of the URL
    rather than the whole of it."""
    text = redact("; ".join(line.strip() for line in str(error).splitlines() if line.strip()))
    secrets = [m.group(2) for m in _URL_PASSWORD.finditer(url)] + [m.group(2) for m in _PARAM_PASSWORD.finditer(url)]
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


class PostgresStore(SqlStore):
    name = "postgresql"
    _blob = "BYTEA"
    _for_update = " FOR UPDATE"  # concurrent writers of one run take turns on its row

    def __init__(self, url: str, create: bool = True) -> None:
        self._location = redact(url)
        try:
            import psycopg  # noqa: F401 - only whether it is installed: _connect() uses it
        except ImportError:
            raise DevicelabError(f"--db {self._location} needs psycopg 3 (pip install 'psycopg[binary]>=3.2,<4')") \
                from None
        # A farm host whose database is unreachable says so after a while instead of hanging (libpq's own default
        # is to wait forever); an explicit connect_timeout in the URL or PGCONNECT_TIMEOUT wins.
        self._timeout: dict[str, Any] = ({} if ("connect_timeout" in url or os.environ.get("PGCONNECT_TIMEOUT"))
                                         else {"connect_timeout": 10})
        # Kept in memory only, to reconnect after the server went away (restart, failover, network cut).
        self._url = url
        self._db = self._connect()
        try:
            # A store at the current schema needs no transaction: only an open that may migrate takes the lock, so
            # the opens of a farm's workers (one per write: docs/farm.md) never queue on it.
            if self._version() != STORE_SCHEMA_VERSION:
                with self._write():
                    self._rows("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))
                    if not create and self._version() == 0:
                        raise DevicelabError(f"no devicelab records in {self._location} (a `devicelab run --db` "
                                             "there creates them)")
                    self._migrate()
        except BaseException:
            self._db.close()
            raise

    def _connect(self) -> Any:
        import psycopg

        try:
            # Autocommit: a read is its own statement (no transaction left open between calls to hold back a
            # migration or vacuum); writes are the explicit transactions of _write().
            return psycopg.connect(self._url, autocommit=True, application_name="devicelab", **self._timeout)
        except psycopg.Error as e:
            raise DevicelabError(f"cannot open the PostgreSQL store {self._location}: {_one_line(e, self._url)}") \
                from None
        except Exception as e:  # noqa: BLE001 - libpq's URL parser: a malformed URL is bad input, said in one line
            raise DevicelabError(f"--db {self._location} is not a PostgreSQL URL libpq accepts: "
                                 f"{_one_line(e, self._url)}") from None

    @property
    def location(self) -> str:
        return self._location

    # ---- a lost connection: reopened, and an idempotent call retried once

    def _retried(self, call: Callable[[], T]) -> T:
        """`call` on the open connection; if that connection turns out to be lost (the server restarted or went
        away: psycopg raises OperationalError), reopen it and run `call` once more.
        Only calls that are safe to repeat come here: reads, and writes that are idempotent (a Result committed
        just before the connection broke is "unchanged" the second time). A server that is still down raises the
        open's DevicelabError, as the first open does."""
        import psycopg

        if self._db.closed:  # lost during an earlier call (that one raised): open again before this one
            self._db = self._connect()
        try:
            return call()
        except psycopg.OperationalError:
            if self._alive():
                raise  # an error of the statement itself, the connection is fine: not something a retry fixes
        self._db.close()
        self._db = self._connect()
        return call()

    def _alive(self) -> bool:
        """Whether the connection still reaches the server. psycopg marks a connection cut by the server as broken
        only on some paths (a cut found on entering a transaction leaves its status as it was), so it is asked."""
        if self._db.closed:
            return False
        try:
            self._db.execute("SELECT 1")
            return True
        except Exception:  # noqa: BLE001 - whatever fails here, the connection cannot be used
            return False

    def add_result(self, result: Result) -> Written:
        return self._retried(lambda: super(PostgresStore, self).add_result(result))

    def set_run_status(self, run_id: str, status: str) -> None:
        self._retried(lambda: super(PostgresStore, self).set_run_status(run_id, status))

    def record_heartbeat(self, beat: Heartbeat) -> None:
        self._retried(lambda: super(PostgresStore, self).record_heartbeat(beat))

    def results(self, run_id: str) -> list[Result]:
        return self._retried(lambda: super(PostgresStore, self).results(run_id))

    def done_keys(self, run_id: str) -> set[str]:
        return self._retried(lambda: super(PostgresStore, self).done_keys(run_id))

    def status_counts(self, run_id: str) -> dict[str, int]:
        return self._retried(lambda: super(PostgresStore, self).status_counts(run_id))

    def get_run(self, run_id: str) -> RunRecord:
        return self._retried(lambda: super(PostgresStore, self).get_run(run_id))

    def runs(self, limit: int = 50) -> list[RunRecord]:
        return self._retried(lambda: super(PostgresStore, self).runs(limit))

    def planned(self, run_id: str) -> list[PlannedRow]:
        return self._retried(lambda: super(PostgresStore, self).planned(run_id))

    def heartbeats(self) -> list[Heartbeat]:
        return self._retried(lambda: super(PostgresStore, self).heartbeats())

    # Store schema 7's calls are all safe to repeat: a publication of stored content is a no-op, a fetch writes a new
    # temporary file (the broken one is removed), facts and profiles are upserts, a dropped artifact stays dropped.
    def put_artifact(self, path: Path, name: str | None = None) -> str:
        return self._retried(lambda: super(PostgresStore, self).put_artifact(path, name))

    def get_artifact(self, sha256: str, dest: Path, mode: int = 0o644) -> Path:
        return self._retried(lambda: super(PostgresStore, self).get_artifact(sha256, dest, mode))

    def has_artifact(self, sha256: str) -> bool:
        return self._retried(lambda: super(PostgresStore, self).has_artifact(sha256))

    def drop_artifact(self, sha256: str) -> None:
        self._retried(lambda: super(PostgresStore, self).drop_artifact(sha256))

    def publish_facts(self, device: str, host: str, facts: dict[str, Any]) -> None:
        self._retried(lambda: super(PostgresStore, self).publish_facts(device, host, facts))

    def device_facts(self) -> dict[str, StoredFacts]:
        return self._retried(lambda: super(PostgresStore, self).device_facts())

    def profile(self, key: str) -> dict[str, Any] | None:
        return self._retried(lambda: super(PostgresStore, self).profile(key))

    def put_profile(self, key: str, profile: dict[str, Any]) -> None:
        self._retried(lambda: super(PostgresStore, self).put_profile(key, profile))

    def close(self) -> None:
        self._db.close()

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        # The shared queries use ? placeholders and no literal %: psycopg's are %s.
        cursor = self._db.execute(sql.replace("?", "%s"), tuple(params))  # type: ignore[arg-type]
        return cursor.fetchall() if cursor.description is not None else []

    @contextlib.contextmanager
    def _write(self) -> Iterator[None]:
        with self._db.transaction():
            yield

    def _version(self) -> int:
        if self._rows("SELECT to_regclass('devicelab_schema')")[0][0] is None:
            return 0
        rows = self._rows("SELECT version FROM devicelab_schema")
        return int(rows[0][0]) if rows else 0

    def _set_version(self, version: int) -> None:
        # PostgreSQL has no PRAGMA user_version: the version is a one-row table, written in the migration's
        # transaction.
        self._rows("CREATE TABLE IF NOT EXISTS devicelab_schema (version INTEGER NOT NULL)")
        self._rows("DELETE FROM devicelab_schema")
        self._rows("INSERT INTO devicelab_schema VALUES (?)", (version,))


__all__ = ["PostgresStore", "STORE_SCHEMA_VERSION"]
