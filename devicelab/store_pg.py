"""The PostgreSQL store: the farm's one record, shared by every host. The same Store as SQLite — same schema, same
migrations, same queries (devicelab.store.SqlStore) — over psycopg 3, imported only when a postgresql:// URL is
opened. Credentials come from libpq (PGPASSWORD, PGSERVICE and its service file, ~/.pgpass) or the URL itself, and are
never stored or printed: `location` is the URL without its password. Imports no device kind and no engine."""

from __future__ import annotations

import contextlib
import os
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

from devicelab.errors import DevicelabError
from devicelab.store import _PARAM_PASSWORD, _URL_PASSWORD, STORE_SCHEMA_VERSION, SqlStore, redact

# Every opener of a database takes this transaction-level lock before it looks at the schema version, so hosts that
# open a fresh (or older) database at once migrate it once, one after the other.
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
            import psycopg
        except ImportError:
            raise DevicelabError(f"--db {self._location} needs psycopg 3 (pip install 'psycopg[binary]>=3.2,<4')") \
                from None
        # A farm host whose database is unreachable says so after a while instead of hanging (libpq's own default
        # is to wait forever); an explicit connect_timeout in the URL or PGCONNECT_TIMEOUT wins.
        timeout = {} if ("connect_timeout" in url or os.environ.get("PGCONNECT_TIMEOUT")) else {"connect_timeout": 10}
        try:
            # Autocommit: a read is its own statement (no transaction left open between calls to hold back a
            # migration or vacuum); writes are the explicit transactions of _write().
            self._db = psycopg.connect(url, autocommit=True, application_name="devicelab", **timeout)
        except psycopg.Error as e:
            raise DevicelabError(f"cannot open the PostgreSQL store {self._location}: {_one_line(e, url)}") from None
        except Exception as e:  # noqa: BLE001 - libpq's URL parser: a malformed URL is bad input, said in one line
            raise DevicelabError(f"--db {self._location} is not a PostgreSQL URL libpq accepts: {_one_line(e, url)}") \
                from None
        try:
            with self._write():
                self._rows("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))
                if not create and self._version() == 0:
                    raise DevicelabError(f"no devicelab records in {self._location} (a `devicelab run --db` there "
                                         "creates them)")
                self._migrate()
        except BaseException:
            self._db.close()
            raise

    @property
    def location(self) -> str:
        return self._location

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
