"""The PostgreSQL store as a farm uses it, against a real server (tests/pg_server.py): credentials from libpq's
environment never stored nor printed, and `devicelab run --db postgresql://…` end to end with real ONNX Runtime,
including `--resume` from the stored plan. The store test-suite shared with SQLite is test_store.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from devicelab.errors import DevicelabError
from devicelab.store import RunRecord, open_store, redact
from helpers import devicelab, run_json, write_suite


@pytest.mark.parametrize("text, redacted", [
    ("postgresql://farm:s3cret@db.lab:5432/devicelab", "postgresql://farm:***@db.lab:5432/devicelab"),
    ("--db=postgres://farm:p%40ss@db.lab/devicelab?sslmode=require",
     "--db=postgres://farm:***@db.lab/devicelab?sslmode=require"),
    ("postgresql://farm:p@ss@db.lab/devicelab", "postgresql://farm:***@db.lab/devicelab"),
    ("postgresql://farm@db.lab/devicelab?sslmode=require&password=s3cret",
     "postgresql://farm@db.lab/devicelab?sslmode=require&password=***"),
    ("postgresql://farm@db.lab/devicelab", "postgresql://farm@db.lab/devicelab"),
    ("postgresql:///devicelab?service=farm", "postgresql:///devicelab?service=farm"),
    ("/tmp/password=x.sqlite", "/tmp/password=x.sqlite"),  # not a URL: a file path stays as it is
])
def test_redact(text: str, redacted: str) -> None:
    assert redact(text) == redacted


def test_a_sqlite_user_never_imports_psycopg(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = ("import sys; from devicelab.store import open_store; import devicelab.cli; "
            f"open_store({str(tmp_path / 'db.sqlite')!r}).close(); print('psycopg' in sys.modules)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert p.stdout.strip() == "False", p.stderr


def _all_text(url: str) -> str:
    """Everything the database holds, as text: where a leaked password would be found."""
    import psycopg

    with psycopg.connect(url) as conn:
        tables = [t for (t,) in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        return "\n".join(str(row) for t in tables for row in conn.execute(f'SELECT * FROM "{t}"'))


def test_a_password_in_the_url_is_never_stored_nor_printed(pg_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = pg_server.password
    monkeypatch.delenv("PGPASSFILE")  # the password comes from the URL only
    db = pg_server.create_database()
    url = pg_server.url(db, password=True)
    assert secret in url
    store = open_store(url)
    assert secret not in store.location and "devicelab:***@" in store.location
    store.create_run(RunRecord("r1", "2026-12-06T00:00:00Z", {}, 1, {}, "0.1.0",
                               argv=["devicelab", "run", "--db", url, f"--db={url}"]))
    assert store.get_run("r1").argv == ["devicelab", "run", "--db", redact(url), f"--db={redact(url)}"]
    store.close()
    assert secret not in _all_text(url) and "***" in _all_text(url)
    # A failure to connect names the store without the password, in one line.
    closed = url.replace(f":{pg_server.port}/", ":1/")
    with pytest.raises(DevicelabError) as failed:
        open_store(closed)
    assert secret not in str(failed.value) and "cannot open the PostgreSQL store postgresql://devicelab:***@" in \
        str(failed.value) and "\n" not in str(failed.value)
    # A URL libpq cannot parse: the same, whatever piece of it libpq quotes.
    for bad in (url.replace(f":{pg_server.port}/", ":notaport/"), f"postgresql://devicelab:{secret}@[::1/x"):
        with pytest.raises(DevicelabError) as failed:
            open_store(bad)
        assert secret not in str(failed.value) and "\n" not in str(failed.value), str(failed.value)


def test_credentials_come_from_libpq(pg_server: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """PGPASSWORD, a service file (PGSERVICEFILE + ?service=) and the password file all work with a URL that holds
    no password; without any, the store says why in one line."""
    db = pg_server.create_database()
    open_store(pg_server.url(db)).close()  # PGPASSFILE (the fixture's)
    monkeypatch.delenv("PGPASSFILE")
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))  # not ~/.pgpass of whoever runs the tests
    with pytest.raises(DevicelabError, match="cannot open the PostgreSQL store .*password") as failed:
        open_store(pg_server.url(db))
    assert "\n" not in str(failed.value)
    monkeypatch.setenv("PGPASSWORD", pg_server.password)
    open_store(pg_server.url(db)).close()
    monkeypatch.delenv("PGPASSWORD")
    services = tmp_path / "pg_service.conf"
    services.write_text(f"[farm]\nhost=127.0.0.1\nport={pg_server.port}\ndbname={db}\nuser=devicelab\n"
                        f"password={pg_server.password}\n")
    monkeypatch.setenv("PGSERVICEFILE", str(services))
    store = open_store("postgresql://?service=farm")
    assert store.location == "postgresql://?service=farm"
    store.create_run(RunRecord("r1", "2026-12-06T00:00:00Z", {}, 1, {}, "0.1.0"))
    store.close()


def _sql(url: str, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


@pytest.mark.slow
def test_run_on_postgresql_and_resume_from_the_stored_plan(pg_server: Any, env: dict[str, str],
                                                           tmp_path: Path) -> None:
    """`devicelab run --db postgresql://…` with one small host config; then a crash is simulated (its row deleted)
    and `--resume` on "another host" (another HOME, the store named by DEVICELAB_DB) finishes it from the planned
    rows; a plan this host cannot honour is refused in one line; a run without planned rows re-plans as before."""
    secret = pg_server.password
    db = pg_server.create_database()
    url, with_password = pg_server.url(db), pg_server.url(db, password=True)
    suite = write_suite(tmp_path / "s.yaml")
    code, out, err = run_json("run", "--suite", str(suite), "--db", with_password, env=env)
    assert code == 0, err
    run_id = out["run_id"]
    assert [r["status"] for r in out["results"]] == ["ok"] and secret not in json.dumps(out) + err
    assert not Path(env["DEVICELAB_DB"]).exists()  # nothing went to the default SQLite file
    (record,) = json.loads(devicelab("runs", "--json", "--db", url, env=env).stdout)
    assert record["run_id"] == run_id and record["status"] == "finished" and record["results"] == 1
    assert "--db" in record["argv"] and redact(with_password) in record["argv"] and secret not in _all_text(url)
    planned = _sql(url, "SELECT identity_key, config_json FROM planned WHERE run_id = %s", run_id)
    assert [(k,) for k, _ in planned] == _sql(url, "SELECT identity_key FROM results")

    # The crash: the row is gone. Another host (HOME) with the same store resumes from the stored plan.
    _sql(url, "DELETE FROM results WHERE run_id = %s", run_id)
    other = {**env, "DEVICELAB_DB": url, "HOME": str(tmp_path / "other-home")}
    Path(other["HOME"]).mkdir()
    planned_config = json.loads(planned[0][1])
    _sql(url, "UPDATE planned SET config_json = %s WHERE run_id = %s",
         json.dumps({**planned_config, "engine_version": "0.0.1"}), run_id)
    p = devicelab("run", "--resume", run_id, env=other)
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert f"onnxruntime is version {planned_config['engine_version']} on this host, the run planned 0.0.1" in p.stderr
    assert _sql(url, "SELECT COUNT(*) FROM results") == [(0,)]  # refused before anything ran
    _sql(url, "UPDATE planned SET config_json = %s WHERE run_id = %s", planned[0][1], run_id)
    code, resumed, err = run_json("run", "--resume", run_id, env=other)
    assert code == 0, err
    assert [(r["run_id"], r["status"]) for r in resumed["results"]] == [(run_id, "ok")]
    assert _sql(url, "SELECT identity_key FROM results") == [(planned[0][0],)]

    # A run stored before plans were: --resume re-plans from its suite and seed, as it always did.
    _sql(url, "DELETE FROM results WHERE run_id = %s", run_id)
    _sql(url, "DELETE FROM planned WHERE run_id = %s", run_id)
    code, replanned, err = run_json("run", "--resume", run_id, env=other)
    assert code == 0, err
    assert [r["status"] for r in replanned["results"]] == ["ok"]
    assert _sql(url, "SELECT identity_key FROM results") == [(planned[0][0],)]


def test_a_store_reconnects_after_the_server_restarts(pg_server: Any) -> None:
    """The server is stopped (fast: every connection cut) and started again on the same port and cluster: the open
    store reopens its connection and its next call works; while the server is down a call fails in one line naming
    the store (no password), and an idempotent write retried after a lost answer is one row."""
    from devicelab.result import OK, Config, Result

    url = pg_server.url(pg_server.create_database())
    store = open_store(url)
    made = [Result.for_config("run-1", Config("phone", "protocol", "", "1", f"m{i}", f"{i:064x}", 10, "fp32", "cpu",
                                              1, (0,), "big"), OK, samples_s=(0.01, 0.011), median_s=0.0105)
            for i in range(3)]
    try:
        store.create_run(RunRecord("run-1", "2026-12-06T12:00:00.000+00:00", {"name": "s"}, 1, {}, "0.1.0"))
        assert store.add_result(made[0]) == "inserted"
        pg_server.halt()
        try:
            with pytest.raises(DevicelabError) as down:
                store.add_result(made[1])
            assert str(down.value).startswith(f"cannot open the PostgreSQL store {url}: ") and "\n" not in \
                str(down.value) and pg_server.password not in str(down.value)
        finally:
            pg_server.resume()
        assert store.add_result(made[1]) == "inserted"  # the connection was reopened
        pg_server.halt()
        pg_server.resume()
        assert store.add_result(made[1]) == "unchanged"  # a lost connection found by a write: reopened, retried
        assert store.add_result(made[2]) == "inserted"
        assert [r.to_json() for r in store.results("run-1")] == [r.to_json() for r in made]
    finally:
        store.close()
