"""A real PostgreSQL server for the tests: Debian's initdb and postgres binaries, a throwaway cluster in a temp dir,
listening on 127.0.0.1 on a port picked here and on a unix socket in the temp dir, with password (scram) auth on TCP
so that the store meets libpq's credential handling as a farm does. As root, the server runs as the `postgres`
user (PostgreSQL refuses to run as root). Stopped by its pid at the end; the temp dir is removed."""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

SKIP_ENV = "DEVICELAB_SKIP_PG"
ADMIN = "devicelab"


def server_bin() -> Path | None:
    """The newest installed server's bin folder (Debian keeps initdb and postgres off PATH)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def missing_reason() -> str | None:
    """Why no server can be started here, in one line; None when one can."""
    if server_bin() is None:
        return ("PostgreSQL server binaries (initdb, postgres) not found under /usr/lib/postgresql/*/bin or on PATH: "
                "install Debian's postgresql package (./scripts/test does, as root) or set DEVICELAB_SKIP_PG=1")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no `postgres` user to run the PostgreSQL server as"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """One cluster, started by start() and stopped by stop(). `url(db)` names a database without the password;
    the password is in a libpq password file (PGPASSFILE), as a farm keeps it."""

    def __init__(self) -> None:
        bin_dir = server_bin()
        assert bin_dir is not None
        self.bin = bin_dir
        self.password = secrets.token_hex(8)
        self.root = Path(tempfile.mkdtemp(prefix="devicelab-pg-"))
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self._as: dict[str, Any] = {}
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._as = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        self.data = self.root / "data"
        self.sockets = self.root / "sockets"
        self.passfile = Path(tempfile.mkdtemp(prefix="devicelab-pgpass-")) / "pgpass"

    def _run(self, *args: str) -> None:
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if self._as:
            os.chown(pwfile, self._as["user"], self._as["group"])
        try:
            subprocess.run(list(args) + [f"--pwfile={pwfile}"], check=True, capture_output=True, timeout=120,
                           env={"PATH": os.environ.get("PATH", ""), "LC_ALL": "C"}, **self._as)
        finally:
            pwfile.unlink()

    def start(self) -> PgServer:
        # No fsync: a test cluster needs no durability, and fsync on this shared machine is the slow part.
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", ADMIN, "--auth-local=trust",
                  "--auth-host=scram-sha-256", "--no-sync", "-E", "UTF8", "--locale=C")
        self.sockets.mkdir()
        if self._as:
            os.chown(self.sockets, self._as["user"], self._as["group"])
        for _ in range(5):  # the port was free when picked; another process may take it before postgres binds it
            self.port = _free_port()
            if self._launch():
                break
        else:
            raise RuntimeError(f"PostgreSQL did not start: {(self.root / 'server.log').read_text()[-2000:]}")
        self.passfile.write_text(f"127.0.0.1:{self.port}:*:{ADMIN}:{self.password}\n")
        self.passfile.chmod(0o600)  # libpq ignores a password file others can read
        return self

    def _launch(self) -> bool:
        """postgres on self.port and the cluster in self.data; False if it exited before accepting connections."""
        log = open(self.root / "server.log", "ab")
        self.process = subprocess.Popen(
            [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port), "-c",
             "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.sockets}", "-c", "fsync=off",
             "-c", "synchronous_commit=off", "-c", "full_page_writes=off", "-c", "max_connections=100"],
            stdout=log, stderr=subprocess.STDOUT, env={"PATH": os.environ.get("PATH", ""), "LC_ALL": "C"},
            **self._as)
        log.close()
        if self._wait_ready():
            return True
        self.process.wait(timeout=30)
        self.process = None
        return False

    def halt(self) -> None:
        """Stop the server as an administrator does (`pg_ctl stop -m fast`: SIGINT to its pid; every client's
        connection is cut), keeping its cluster for resume()."""
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)
        self.process.wait(timeout=60)
        self.process = None

    def resume(self) -> None:
        """Start the halted server again: same cluster, same port (its clients come back to the same address)."""
        assert self.process is None
        deadline = time.monotonic() + 30
        while not self._launch():  # the port is ours; only a server still shutting down holds it for a moment
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not restart: {(self.root / 'server.log').read_text()[-2000:]}")
            time.sleep(0.2)

    def _wait_ready(self) -> bool:
        """True once the server accepts connections; False if it exited (a port taken in the meantime)."""
        import psycopg

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                return False
            try:
                psycopg.connect(host=str(self.sockets), port=self.port, user=ADMIN, dbname="postgres").close()
                return True
            except psycopg.OperationalError:
                time.sleep(0.05)
        raise RuntimeError("PostgreSQL did not accept connections within 60 s")

    def admin(self) -> Any:
        """A superuser connection over the unix socket (trust auth: the test's own cluster)."""
        import psycopg

        return psycopg.connect(host=str(self.sockets), port=self.port, user=ADMIN, dbname="postgres",
                               autocommit=True)

    def create_database(self) -> str:
        name = "t_" + secrets.token_hex(6)
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def url(self, db: str, password: bool = False) -> str:
        secret = f":{self.password}" if password else ""
        return f"postgresql://{ADMIN}{secret}@127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # "fast shutdown": disconnect clients, stop cleanly
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.passfile.parent, ignore_errors=True)
