"""The device farm on loopback, as users run it: `devicelab farm scheduler` and `devicelab farm agent` (real Dask
distributed, one worker process per phone) in subprocesses, the emulated Android phones behind a real adb server,
arm64 runners under qemu, and `devicelab run --farm` writing to one SQLite store shared by every process of this
host. Timings under qemu are never looked at; only their order is (two jobs on one phone must not overlap)."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from android_env import AdbServer, EmulatedPhone, cli_env, needs_adb, needs_namespace, needs_qemu
from helpers import DEVICELAB, FAST_PROTOCOL, devicelab, run_json

from devicelab.farm.client import phone_state
from devicelab.result import Result
from devicelab.errors import DevicelabError
from devicelab.store import Heartbeat, open_store

BEAT_S = 1.0
PROTOCOL = {**FAST_PROTOCOL, "accuracy_inputs": 0, "cooldown_timeout_seconds": 20}

F = Callable[..., None]


def farm_test(test: F) -> F:
    """A test on the emulated farm: slow, and it needs adb, a private namespace and qemu (as the Android tests)."""
    for mark in (pytest.mark.slow, needs_adb(), needs_namespace(), needs_qemu()):
        test = mark(test)
    return test


# --------------------------------------------------------------------------------------------------
# Processes: every one started here is stopped here, by its pid


class Proc:
    """A devicelab subprocess with its stderr in a file; `first_line` is what it printed first on stdout."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path, read_first_line: bool = False) -> None:
        self.log = log
        with log.open("ab") as f:
            self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=f)
        self.first_line = ""
        if read_first_line:
            assert self.proc.stdout is not None
            self.first_line = self.proc.stdout.readline().decode().strip()
            assert self.first_line, f"{argv[:3]} printed nothing: {self.text()[-3000:]}"

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def wait_for(what: str, check: Callable[[], Any], timeout: float = 120, every: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)


@contextlib.contextmanager
def host_farm(env: dict[str, str], tmp_path: Path) -> Iterator[tuple[Proc, Proc]]:
    """`devicelab farm scheduler` and an agent serving the host's own device as the farm worker `farm-host` (no phone,
    no qemu: adb and usbmuxd list none here), beating every second; yields (scheduler, agent) once the worker beats,
    and stops both, by their pids, on the way out."""
    scheduler = Proc([DEVICELAB, "farm", "scheduler", "--port", "0"], env, tmp_path / "scheduler.log", True)
    agent = None
    try:
        agent = Proc([DEVICELAB, "farm", "agent", "--scheduler", scheduler.first_line, "--host-device", "farm-host",
                      "--beat-seconds", "1", "--scan-seconds", "1"], env, tmp_path / "agent.log")
        wait_for("the host's worker beating", lambda: (b := beats(env["DEVICELAB_DB"]).get("farm-host")) and
                 b.reachable, timeout=120)
        yield scheduler, agent
    finally:
        if agent is not None:
            agent.stop()
        scheduler.stop()


def beats(db: str) -> dict[str, Heartbeat]:
    try:
        store = open_store(db, create=False)
    except DevicelabError:
        return {}  # the agent creates it when it starts
    try:
        return {b.device: b for b in store.heartbeats()}
    finally:
        store.close()


def status(env: dict[str, str]) -> dict[str, dict[str, Any]]:
    if not beats(env["DEVICELAB_DB"]):
        return {}  # the agent creates the store when it starts
    code, rows, err = run_json("farm", "status", env=env)
    assert code == 0, err
    return {r["device"]: r for r in rows}  # type: ignore[union-attr]


# --------------------------------------------------------------------------------------------------
# The farm: three emulated phones, a scheduler and an agent, for the module


class Reachability:
    """Takes a store away from new connections and gives it back: a SQLite file moved aside (a process that has it
    open keeps writing to it), or a PostgreSQL database refusing connections (ALLOW_CONNECTIONS false: what a worker
    opening its store sees of a server that is down or cut off)."""

    def __init__(self, location: str, admin_url: str | None = None) -> None:
        self.location = location
        self.admin: Any = None
        if admin_url is not None:
            import psycopg

            self.name = location.rsplit("/", 1)[1]
            self.admin = psycopg.connect(admin_url, autocommit=True)

    def away(self) -> None:
        if self.admin is None:
            Path(self.location).rename(Path(self.location).with_name("moved.sqlite"))
        else:
            self.admin.execute(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS false')

    def back(self) -> None:
        if self.admin is None:
            Path(self.location).with_name("moved.sqlite").rename(self.location)
        else:
            self.admin.execute(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS true')

    def close(self) -> None:
        if self.admin is not None:
            self.admin.close()


class Farm:
    def __init__(self, env: dict[str, str], db: str, phones: list[EmulatedPhone], scheduler: Proc, agent: Proc,
                 tmp: Path, reach: Reachability) -> None:
        self.env, self.db, self.phones, self.scheduler, self.agent, self.tmp = env, db, phones, scheduler, agent, tmp
        self.reach = reach

    @property
    def address(self) -> str:
        return self.scheduler.first_line

    def run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return devicelab("run", "--farm", self.address, *args, env=self.env, timeout=timeout)

    def wait_idle(self, serials: list[str]) -> None:
        wait_for(f"{serials} idle", lambda: all(status(self.env).get(s, {}).get("state") == "idle" for s in serials))


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def farm(request: pytest.FixtureRequest, server: AdbServer, data_dir: Path,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farm]:
    """The farm with its store: a SQLite file shared by every process of the host, or a database on a real
    PostgreSQL server (the password in a libpq password file, as on a farm host, never in the URL)."""
    tmp = tmp_path_factory.mktemp("farm")
    if request.param == "sqlite":
        db = str(tmp / "farm.sqlite")
        reach = Reachability(db)
    else:
        pg = request.getfixturevalue("pg_server")
        db = pg.url(pg.create_database())
        reach = Reachability(db, pg.url("postgres"))
    env = cli_env({**os.environ, "DEVICELAB_DATA": str(data_dir), "DEVICELAB_DB": db, "COLUMNS": "200"}, server)
    env.pop("DEVICELAB_DEVICES", None)
    phones: list[EmulatedPhone] = []
    procs: list[Proc] = []
    try:
        for name in ("a", "b", "c"):
            phones.append(EmulatedPhone(server, tmp / name))
            phones[-1].start()
        scheduler = Proc([DEVICELAB, "farm", "scheduler", "--port", "0"], env, tmp / "scheduler.log", True)
        procs.append(scheduler)
        assert scheduler.first_line.startswith("tcp://127.0.0.1:")
        agent = Proc([DEVICELAB, "farm", "agent", "--scheduler", scheduler.first_line, "--beat-seconds", str(BEAT_S),
                      "--scan-seconds", "1"], env, tmp / "agent.log")
        procs.append(agent)
        f = Farm(env, db, phones, scheduler, agent, tmp, reach)
        f.wait_idle([p.serial for p in phones])
        yield f
    finally:
        for proc in reversed(procs):
            proc.stop()
        for phone in phones:
            phone.stop()
        reach.close()


def suite(path: Path, devices: list[str], runner: Path, **fields: Any) -> Path:
    data = {"name": "farm", "models": fields.pop("models", ["squeezenet1_1", "mobilenet_v2"]), "threads": [1],
            "engines": [{"name": "protocol", "options": {"binary": str(runner)}}], "devices": devices,
            "protocol": {**PROTOCOL, **fields.pop("protocol", {})}, **fields}
    path.write_text(yaml.safe_dump(data))
    return path


# --------------------------------------------------------------------------------------------------
# The tests on the farm (they share it: in file order)


@farm_test
def test_each_job_runs_on_its_own_phone_one_at_a_time(farm: Farm, runner_arm64: Path) -> None:
    a, b = farm.phones[0], farm.phones[1]
    s = suite(farm.tmp / "both.yaml", [a.serial, b.serial], runner_arm64, repeats=2, seed=5)
    p = farm.run("--suite", str(s), "--json")
    assert p.returncode == 0, p.stderr[-3000:]
    data = json.loads(p.stdout)
    results = data["results"]
    assert len(results) == 8 and all(r["status"] == "ok" for r in results), [(r["status"], r["reason"])
                                                                             for r in results]
    log = farm.agent.text()
    for serial in (a.serial, b.serial):
        mine = sorted((r for r in results if r["device"] == serial), key=lambda r: r["started_at"])
        assert len(mine) == 4
        # one job at a time on a phone: each starts after the one before it finished
        for before, after in zip(mine, mine[1:]):
            assert before["finished_at"] <= after["started_at"], (before, after)
        # and every job of the phone was run by the phone's own worker (its log lines carry its serial)
        for r in mine:
            assert f"{serial}: start {data['run_id']}: protocol {r['model']} fp32 1t round {r['repeat'] + 1}" in log
    other = farm.phones[2].serial
    assert f"{other}: start {data['run_id']}" not in log
    # the two phones worked at the same time: some job of b started before a's last one finished
    a_rows = [r for r in results if r["device"] == a.serial]
    b_rows = [r for r in results if r["device"] == b.serial]
    assert min(r["started_at"] for r in b_rows) < max(r["finished_at"] for r in a_rows)
    assert min(r["started_at"] for r in a_rows) < max(r["finished_at"] for r in b_rows)


@farm_test
def test_a_worker_runs_files_only_the_client_has_from_the_store(farm: Farm, runner_arm64: Path) -> None:
    """The model and the runner exist only in the client's own mount namespace (a tmpfs over a folder that is empty
    for every other process, as another host's disk is): the task's files reach the worker through the store, are
    checked by sha256 into its host's cache, and the job runs from there. A stored copy damaged afterwards gives
    infra-failed rows with the one-line sha256 error, nothing run; --resume publishes it again and finishes."""
    import hashlib

    from devicelab import zoo

    a = farm.phones[0]
    private = farm.tmp / "client-only"
    private.mkdir()
    staged = farm.tmp / "staged"
    staged.mkdir()
    (staged / "privnet.onnx").write_bytes(zoo.build_bytes("squeezenet1_1"))
    shutil.copy(runner_arm64, staged / "runner")
    s = suite(farm.tmp / "private.yaml", [a.serial], private / "runner", models=[str(private / "privnet.onnx")],
              seed=11)

    def client_only(*args: str) -> subprocess.CompletedProcess[str]:
        script = (f"mount -t tmpfs tmpfs '{private}' && cp '{staged}/privnet.onnx' '{staged}/runner' '{private}/' && "
                  f"exec '{DEVICELAB}' run --farm '{farm.address}' --json " + " ".join(f"'{x}'" for x in args))
        return subprocess.run(["unshare", "--map-root-user", "--mount", "sh", "-c", script], env=farm.env,
                              capture_output=True, text=True, timeout=600)

    def rows_of(p: subprocess.CompletedProcess[str]) -> Any:
        return [(r["status"], r["reason"]) for r in json.loads(p.stdout)["results"]] if p.stdout.strip() else p.stderr

    p = client_only("--suite", str(s))
    assert list(private.iterdir()) == []  # what the worker's host sees of the client's folder
    assert p.returncode == 0, rows_of(p)
    data = json.loads(p.stdout)
    [row] = data["results"]
    assert row["status"] == "ok" and row["device"] == a.serial, (row["status"], row["reason"])
    runner_sha = hashlib.sha256(runner_arm64.read_bytes()).hexdigest()
    cached = Path(farm.env["DEVICELAB_DATA"]) / "farm" / "artifacts" / f"{runner_sha}-755" / "runner"
    assert cached.read_bytes() == runner_arm64.read_bytes()  # the worker ran the store's copy, checked on arrival

    # the stored model damaged, and the worker's cached copy gone (a new host): one line, infra-failed, nothing ran
    model_sha = row["model_sha256"]
    [cached_model] = (Path(farm.env["DEVICELAB_DATA"]) / "farm" / "artifacts").glob(f"{model_sha}-*")
    shutil.rmtree(cached_model)
    store = open_store(farm.db)
    with store._write():  # type: ignore[attr-defined]
        store._rows("UPDATE artifact_chunks SET content=? WHERE sha256=? AND seq=0",  # type: ignore[attr-defined]
                    (b"not the model", model_sha))
    store.close()
    p = client_only("--suite", str(s))
    assert p.returncode == 1, rows_of(p)
    data = json.loads(p.stdout)
    [row] = data["results"]
    assert row["status"] == "infra-failed" and "\n" not in row["reason"], row
    # (the artifact's name is the one its content was first published under: the zoo's file, when an earlier test
    # published the same model)
    assert re.fullmatch(rf"artifact \S+\.onnx from \S+ failed its check on arrival: sha256 [0-9a-f]{{64}} \(\d+ bytes\), "
                        rf"expected {model_sha} \(\d+ bytes\); nothing written to \S+/privnet\.onnx", row["reason"]), \
        row["reason"]
    assert not (cached_model / "privnet.onnx").exists()
    assert f"{a.serial}: start {data['run_id']}" in farm.agent.text()  # the task reached the worker ...
    assert row["samples_s"] == []  # ... and measured nothing
    # the damaged copy was dropped: the resume publishes the file again and the config runs
    p = client_only("--resume", data["run_id"])
    assert p.returncode == 0, rows_of(p)
    assert [r["status"] for r in json.loads(p.stdout)["results"]] == ["ok"]
    farm.wait_idle([a.serial])  # the next test reads a's beats: none of this test's may still say busy


@farm_test
def test_a_killed_worker_gives_infra_failed_rows_and_resume_finishes(farm: Farm, runner_arm64: Path) -> None:
    a, b = farm.phones[0], farm.phones[1]
    s = suite(farm.tmp / "kill.yaml", [a.serial, b.serial], runner_arm64, seed=7,
              protocol={"min_seconds": 3.0, "max_seconds": 4.0, "max_iterations": 100000})
    p = subprocess.Popen([DEVICELAB, "run", "--farm", farm.address, "--suite", str(s), "--json"], env=farm.env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        busy = wait_for(f"{a.serial} busy", lambda: (bt := beats(farm.db).get(a.serial)) and bt.job and bt)
        victim = int(busy.detail["pid"])
        os.kill(victim, signal.SIGKILL)  # mid-job: the worker process of phone a, nothing else
        out, err = p.communicate(timeout=600)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == 1, err[-3000:]
    data = json.loads(out)
    rows = {(r["device"], r["model"]): r for r in data["results"]}
    assert len(rows) == 4
    lost = [r for r in rows.values() if r["device"] == a.serial]
    assert lost and all(r["status"] == "infra-failed" and "farm worker was lost" in r["reason"] for r in lost), \
        [(r["status"], r["reason"]) for r in lost]
    assert all(r["status"] == "ok" for r in rows.values() if r["device"] == b.serial)
    assert f"worker {a.serial} (pid {victim}) exited" in farm.agent.text()
    # the agent starts a new worker for the phone; --resume runs what was lost, and only that
    wait_for("a new worker", lambda: (bt := beats(farm.db).get(a.serial)) and int(bt.detail["pid"]) != victim)
    farm.wait_idle([a.serial])
    p2 = farm.run("--resume", data["run_id"], "--json")
    assert p2.returncode == 0, p2.stderr[-3000:]
    again = json.loads(p2.stdout)["results"]
    assert sorted(r["status"] for r in again) == ["ok"] * 4
    done_before = {r["started_at"] for r in data["results"] if r["status"] == "ok"}
    assert done_before <= {r["started_at"] for r in again}  # b's rows were not run again


@farm_test
def test_a_dropped_phone_goes_offline_after_three_beats_and_gets_no_work(farm: Farm, runner_arm64: Path) -> None:
    c = farm.phones[2]
    before = beats(farm.db)[c.serial]
    assert before.reachable and before.missed == 0
    c.drop()  # SIGUSR1: the phone is gone for adb
    try:
        seen: list[Heartbeat] = []

        def third_missed() -> bool:
            bt = beats(farm.db)[c.serial]
            if not seen or seen[-1].at != bt.at:
                seen.append(bt)
            return bt.missed >= 3

        wait_for(f"{c.serial} missing 3 beats", third_missed, every=0.1, timeout=60)
        assert status(farm.env)[c.serial]["state"] == "offline"
        # beats in a row that could not reach it, counted one by one; before the third it was not offline
        missed = [bt.missed for bt in seen if not bt.reachable]
        assert missed == list(range(missed[0], missed[0] + len(missed))) and missed[0] <= 2, missed
        assert all(phone_state(bt, datetime.datetime.fromisoformat(bt.at)) == "unreachable"
                   for bt in seen if bt.missed in (1, 2))
        assert all(bt.detail.get("error") for bt in seen if not bt.reachable)
        assert f"{c.serial}: offline: resource 0" in farm.agent.text()
        s = suite(farm.tmp / "offline.yaml", [c.serial], runner_arm64, models=["squeezenet1_1"])
        p = farm.run("--suite", str(s), "--farm-wait", "3", "--json")
        assert p.returncode == 1, p.stderr[-3000:]
        [r] = json.loads(p.stdout)["results"]
        assert r["status"] == "infra-failed" and "offline" in r["reason"] and "never started" in r["reason"], r
        assert f"{c.serial}: start" not in farm.agent.text()  # no work reached its worker
        run_id = json.loads(p.stdout)["run_id"]
    finally:
        c.restore()
        c.connect()
    # back: the resource returns to 1 and --resume runs the config on it
    wait_for(f"{c.serial} back", lambda: f"{c.serial}: back: resource 1" in farm.agent.text(), timeout=60)
    p = farm.run("--resume", run_id, "--json")
    assert p.returncode == 0, p.stderr[-3000:]
    assert [r["status"] for r in json.loads(p.stdout)["results"]] == ["ok"]
    assert f"{c.serial}: start {run_id}" in farm.agent.text()


@farm_test
def test_a_store_unreachable_from_the_worker_spools_its_rows_then_flushes(farm: Farm, runner_arm64: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker's store goes away mid-job (new connections refused; the client's own stays open): the row waits in
    the worker's spool, the client writes it from what the task returned, and once the store is back the spool is
    flushed onto it with nothing duplicated."""
    from devicelab.farm.worker import spool_path

    b = farm.phones[1]
    monkeypatch.setenv("DEVICELAB_DATA", farm.env["DEVICELAB_DATA"])  # the agent's: its workers spool there
    spool = spool_path(b.serial)
    s = suite(farm.tmp / "spool.yaml", [b.serial], runner_arm64, models=["squeezenet1_1"], seed=11,
              protocol={"min_seconds": 3.0, "max_seconds": 4.0, "max_iterations": 100000})
    p = subprocess.Popen([DEVICELAB, "run", "--farm", farm.address, "--suite", str(s), "--json"], env=farm.env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    away = False
    try:
        wait_for(f"{b.serial} busy", lambda: (bt := beats(farm.db).get(b.serial)) and bt.job)
        farm.reach.away()
        away = True
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
        assert "spooled on the worker's host" in err
        [entry] = [json.loads(line) for line in spool.read_text().splitlines()]  # still waiting: store away
        farm.reach.back()
        away = False
        wait_for("the spool flushed", lambda: not spool.exists(), timeout=60)
    finally:
        if away:
            farm.reach.back()
        if p.poll() is None:
            p.kill()
            p.communicate()
    [r] = json.loads(out)["results"]
    assert r["status"] == "ok" and Result.from_dict(entry["result"]).to_json() == Result.from_dict(r).to_json()
    store = open_store(farm.db, create=False)
    try:
        [stored] = store.results(r["run_id"])
    finally:
        store.close()
    assert stored.to_json() == Result.from_dict(r).to_json()


@farm_test
@pytest.mark.parametrize("farm", ["postgresql"], indirect=True)  # it stops the PostgreSQL server: no SQLite run
def test_postgresql_stopped_mid_run_spools_then_every_row_is_stored_once(farm: Farm, runner_arm64: Path,
                                                                          monkeypatch: pytest.MonkeyPatch,
                                                                          request: pytest.FixtureRequest) -> None:
    """The PostgreSQL server itself stops (fast shutdown: every connection cut, the client's included) while a farm
    run is in flight, and starts again on the same port and cluster: the rows finished meanwhile wait in the workers'
    spools, the client reconnects and its run ends, the spools are flushed, and every planned config has exactly one
    row."""
    assert farm.db.startswith("postgresql://")
    from devicelab.farm.worker import spool_path

    pg = request.getfixturevalue("pg_server")
    a, b = farm.phones[0], farm.phones[1]
    monkeypatch.setenv("DEVICELAB_DATA", farm.env["DEVICELAB_DATA"])  # the agent's: its workers spool there
    spools = [spool_path(a.serial), spool_path(b.serial)]
    s = suite(farm.tmp / "pg-stop.yaml", [a.serial, b.serial], runner_arm64, seed=13,
              protocol={"min_seconds": 2.0, "max_seconds": 3.0, "max_iterations": 100000})
    p = subprocess.Popen([DEVICELAB, "run", "--farm", farm.address, "--suite", str(s), "--json"], env=farm.env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    down = False
    try:
        wait_for(f"{a.serial} busy", lambda: (bt := beats(farm.db).get(a.serial)) and bt.job)
        pg.halt()
        down = True
        # a job ends while the server is down: its row waits in its worker's spool
        wait_for("a spooled row", lambda: any(path.exists() for path in spools), timeout=120, every=0.1)
        pg.resume()
        down = False
        out, err = p.communicate(timeout=600)
        wait_for("the spools flushed", lambda: not any(path.exists() for path in spools), timeout=60)
    finally:
        if down:
            pg.resume()
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == 0, err[-3000:]
    assert "spooled on the worker's host" in err
    data = json.loads(out)
    store = open_store(farm.db, create=False)
    try:
        planned = [row.config.identity_key() for row in store.planned(data["run_id"])]
        stored = store.results(data["run_id"])
    finally:
        store.close()
    assert len(planned) == 4
    assert sorted(r.config.identity_key() for r in stored) == sorted(planned)  # each once: none lost, none twice
    assert all(r.status == "ok" for r in stored), [(r.status, r.reason) for r in stored]
    assert sorted(r.to_json() for r in stored) == sorted(Result.from_dict(r).to_json() for r in data["results"])


@farm_test
def test_status_shows_every_phone_with_its_beat(farm: Farm) -> None:
    # A beat is due every BEAT_S and a phone is offline after 3 missed: on a busy machine one beat can come late, so
    # the status is read until every phone is up (a phone that stays offline still fails here).
    def all_up() -> bool:
        found = status(farm.env)
        return set(found) >= {p.serial for p in farm.phones} and all(r["state"] in ("idle", "busy")
                                                                     for r in found.values())

    wait_for("every phone idle or busy in farm status", all_up, every=0.5, timeout=60)
    rows = status(farm.env)
    assert set(rows) >= {p.serial for p in farm.phones}
    for row in rows.values():
        assert row["battery_percent"] == 80 and row["charging"] is False and row["temperature_c"] > 0
        assert row["state"] in ("idle", "busy") and row["age_s"] >= 0
    p = devicelab("farm", "status", env=farm.env)
    assert p.returncode == 0 and all(s in p.stdout for s in rows), p.stderr



# --------------------------------------------------------------------------------------------------
# Connecting: what the client refuses, and TLS (no phone needed: a worker whose phone is not there)


def plain_env(tmp_path: Path, data_dir: Path) -> dict[str, str]:
    e = {**os.environ, "DEVICELAB_DATA": str(data_dir), "DEVICELAB_DB": str(tmp_path / "db.sqlite"),
         "HOME": str(tmp_path / "home"), "COLUMNS": "200"}
    e.pop("DEVICELAB_DEVICES", None)
    (tmp_path / "home").mkdir(exist_ok=True)
    return e


def phoneless_worker(address: str, env: dict[str, str], tmp_path: Path, name: str, *extra: str) -> Proc:
    """A farm worker process for a phone that is not attached (its beats miss; it joins the scheduler)."""
    return Proc([sys.executable, "-P", "-m", "devicelab.farm.worker", "--scheduler", address, "--serial", name,
                 "--db", str(tmp_path / "db.sqlite"), "--beat-seconds", "5", *extra], env,
                tmp_path / f"{name}.log", read_first_line=True)


def run_suite_file(tmp_path: Path) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "models": ["squeezenet1_1"], "engines": ["onnxruntime"],
                                    "threads": [1], "devices": ["127.0.0.1:5999"]}))
    return path


def test_the_client_plans_from_the_facts_agents_published(tmp_path: Path, data_dir: Path) -> None:
    """A phone whose agent published its facts and whose worker is not running now: the run is planned from the
    stored facts (no phone is attached to this client, nor to any worker), the task's files are published, and its
    rows are infra-failed once the phone has waited --farm-wait."""
    import hashlib

    env = plain_env(tmp_path, data_dir)
    facts = {"id": "ghost-phone", "kind": "android", "model": "Pixel 8", "os": "Android 14", "abi": "arm64-v8a",
             "cpus": 4, "cpu_ids": [0, 1, 2, 3], "clusters": [{"cpus": [0, 1], "capacity": 512, "max_khz": 1800000},
                                                               {"cpus": [2, 3], "capacity": 1024, "max_khz": 2900000}],
             "manufacturer": "Google", "memory_bytes": 8 << 30, "serial": "ghost-phone"}
    store = open_store(env["DEVICELAB_DB"])
    store.publish_facts("ghost-phone", "host-b", facts)  # as host b's agent did while the phone was there
    store.close()
    runner = tmp_path / "runner"
    runner.write_bytes(b"#!/bin/sh\nexit 3\n")
    runner.chmod(0o755)
    path = tmp_path / "ghost.yaml"
    path.write_text(yaml.safe_dump({"name": "g", "models": ["squeezenet1_1"], "threads": [2], "devices": ["ghost-phone"],
                                    "engines": [{"name": "protocol", "options": {"binary": str(runner)}}],
                                    "protocol": PROTOCOL}))
    scheduler = Proc([DEVICELAB, "farm", "scheduler", "--port", "0"], env, tmp_path / "scheduler.log", True)
    try:
        p = devicelab("run", "--farm", scheduler.first_line, "--suite", str(path), "--farm-wait", "1", "--json",
                      env=env)
    finally:
        scheduler.stop()
    assert p.returncode == 1, p.stderr[-3000:]
    data = json.loads(p.stdout)
    [row] = data["results"]
    assert row["status"] == "infra-failed" and "no farm worker for 1 s" in row["reason"], row
    assert row["cpus"] == [2, 3]  # pinned to the stored facts' big cluster
    store = open_store(env["DEVICELAB_DB"])
    try:
        planned = store.planned(data["run_id"])
        assert [r.config.device for r in planned] == ["ghost-phone"]
        assert store.get_run(data["run_id"]).host["devices"]["ghost-phone"]["abi"] == "arm64-v8a"
        assert store.has_artifact(hashlib.sha256(runner.read_bytes()).hexdigest())
        assert store.has_artifact(row["model_sha256"])
    finally:
        store.close()


def test_a_scheduler_that_would_rerun_tasks_is_refused(tmp_path: Path, data_dir: Path) -> None:
    env = plain_env(tmp_path, data_dir)
    dask_cli = str(Path(sys.executable).parent / "dask")
    plain = Proc([dask_cli, "scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address", "127.0.0.1:0"],
                 env, tmp_path / "dask-scheduler.log")
    try:
        address = wait_for("the scheduler's address", lambda: next(
            (line.split("Scheduler at:")[1].strip() for line in plain.text().splitlines() if "Scheduler at:" in line),
            None), timeout=60)
        p = devicelab("run", "--farm", address, "--suite", str(run_suite_file(tmp_path)), env=env)
    finally:
        plain.stop()
    assert p.returncode == 2
    [line] = p.stderr.strip().splitlines()
    assert "allowed-failures" in line and "devicelab farm scheduler" in line, line
    assert json.loads(devicelab("runs", "--json", env=env).stdout) == []  # nothing was recorded


def test_a_host_with_another_devicelab_is_refused_in_one_line(tmp_path: Path, data_dir: Path) -> None:
    import devicelab as installed

    env = plain_env(tmp_path, data_dir)
    # another devicelab release on the worker's host: the installed package with another version, as pip puts it
    other = tmp_path / "other"
    shutil.copytree(Path(installed.__file__).parent, other / "devicelab")
    init = other / "devicelab" / "__init__.py"
    init.write_text(init.read_text().replace(f'__version__ = "{installed.__version__}"', '__version__ = "0.0.1"'))
    meta = other / "devicelab-0.0.1.dist-info"
    meta.mkdir()
    (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: devicelab\nVersion: 0.0.1\n")
    scheduler = Proc([DEVICELAB, "farm", "scheduler", "--port", "0"], env, tmp_path / "scheduler.log", True)
    worker = None
    try:
        worker = phoneless_worker(scheduler.first_line, {**env, "PYTHONPATH": str(other)}, tmp_path, "old-phone")
        p = devicelab("run", "--farm", scheduler.first_line, "--suite", str(run_suite_file(tmp_path)), env=env)
    finally:
        if worker is not None:
            worker.stop()
        scheduler.stop()
    assert p.returncode == 2
    [line] = p.stderr.strip().splitlines()
    assert "worker old-phone" in line and "devicelab 0.0.1" in line and f"this client {installed.__version__}" \
        in line and line.endswith("refused"), line


def mint_certificates(folder: Path) -> dict[str, Path]:
    """A CA and a certificate for 127.0.0.1 signed by it (scheduler, workers and clients share it), and a second,
    unrelated CA with its own certificate (a stranger)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        return path

    def write_cert(cert: x509.Certificate, path: Path) -> Path:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path

    out: dict[str, Path] = {}
    for prefix in ("", "stranger-"):
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = (x509.CertificateBuilder().subject_name(name(f"{prefix}devicelab test CA")).issuer_name(
            name(f"{prefix}devicelab test CA")).public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(name("farm")).issuer_name(ca.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                            x509.DNSName("localhost")]), critical=False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        out[f"{prefix}ca"] = write_cert(ca, folder / f"{prefix}ca.pem")
        out[f"{prefix}cert"] = write_cert(cert, folder / f"{prefix}cert.pem")
        out[f"{prefix}key"] = write_key(key, folder / f"{prefix}key.pem")
    return out


def test_tls_is_one_option_away(tmp_path: Path, data_dir: Path) -> None:
    from distributed import Client

    from devicelab.farm import client as farm_client
    from devicelab.farm.security import security

    env = plain_env(tmp_path, data_dir)
    c = mint_certificates(tmp_path)
    tls = ["--tls-ca", str(c["ca"]), "--tls-cert", str(c["cert"]), "--tls-key", str(c["key"])]
    scheduler = Proc([DEVICELAB, "farm", "scheduler", "--port", "0", *tls], env, tmp_path / "scheduler.log", True)
    worker = None
    try:
        address = scheduler.first_line
        assert address.startswith("tls://127.0.0.1:")
        worker = phoneless_worker(address, env, tmp_path, "tls-phone", *tls)
        assert worker.first_line.startswith("worker tls-phone tls://127.0.0.1:")
        client = farm_client.connect(address, (str(c["ca"]), str(c["cert"]), str(c["key"])))
        try:  # the checks passed over TLS, and the worker joined over TLS
            assert set(farm_client.farm_phones(client)) == {"tls-phone"}
        finally:
            client.close()
        # without a certificate, or with one the farm's CA did not sign, nobody connects (or submits)
        for who in ("plain", "stranger"):
            sec = (security((str(c["stranger-ca"]), str(c["stranger-cert"]), str(c["stranger-key"])))
                   if who == "stranger" else None)
            target = address if sec else address.replace("tls://", "tcp://")
            with pytest.raises((OSError, TimeoutError)):
                Client(target, security=sec, timeout=3, set_as_default=False)
        p = devicelab("run", "--farm", address, "--suite", str(run_suite_file(tmp_path)), "--tls-ca", str(c["ca"]),
                      env=env)
        assert p.returncode == 2 and p.stderr.strip() == (
            "error: --tls-cert, --tls-key: TLS needs --tls-ca, --tls-cert and --tls-key together"), p.stderr
    finally:
        if worker is not None:
            worker.stop()
        scheduler.stop()


# --------------------------------------------------------------------------------------------------
# The worker's spool


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_results_wait_in_the_spool_while_the_store_is_unreachable(backend: str, tmp_path: Path,
                                                                   request: pytest.FixtureRequest) -> None:
    from devicelab.farm.worker import Spool
    from devicelab.result import OK, Config
    from devicelab.store import RunRecord

    if backend == "sqlite":
        target = Reachability(str(tmp_path / "store" / "farm.sqlite"))
    else:
        pg = request.getfixturevalue("pg_server")
        target = Reachability(pg.url(pg.create_database()), pg.url("postgres"))
    db = target.location
    store = open_store(db)
    store.create_run(RunRecord("run-1", "2026-12-06T12:00:00.000+00:00", {"name": "s"}, 1, {}, "0.1.0"))
    store.close()
    made = [Result.for_config("run-1", Config("phone", "protocol", "", "1", f"m{i}", f"{i:064x}", 10, "fp32", "cpu", 1,
                                              (0,), "big"), OK, samples_s=(0.01, 0.011), median_s=0.0105)
            for i in range(4)]
    spool = Spool(tmp_path / "spool" / "phone.jsonl")
    assert spool.write(db, made[0]) is True
    target.away()
    assert [spool.write(db, r) for r in made[1:3]] == [False, False]
    assert spool.pending() == 2
    if backend == "sqlite":
        assert not Path(db).exists()  # no new file was made in its place
    assert spool.flush() == 2
    target.back()
    target.close()
    assert spool.write(db, made[3]) is True  # the spooled ones go first, then this one
    assert spool.pending() == 0 and not spool.path.exists()
    store = open_store(db)
    try:
        stored = store.results("run-1")
    finally:
        store.close()
    assert [r.model for r in stored] == ["m0", "m1", "m2", "m3"]  # in the order they were made, once each
    assert [r.to_json() for r in stored] == [r.to_json() for r in made]
    # a row committed whose answer was lost is spooled again: flushing it is a no-op, not a duplicate or a refusal
    spool._append([{"location": db, "result": made[1].to_dict()}])
    assert spool.flush() == 0 and not spool.rejected.exists()
    store = open_store(db)
    try:
        assert len(store.results("run-1")) == 4
    finally:
        store.close()
    # a different ok row for a stored config is refused by the store: kept aside on this host, never dropped
    other = Result.for_config("run-1", made[2].config, OK, samples_s=(0.5, 0.6), median_s=0.55)
    spool.write(db, other)
    [kept] = [json.loads(line) for line in spool.rejected.read_text().splitlines()]
    assert kept["refused"] and Result.from_dict(kept["result"]).to_json() == other.to_json()


def test_the_clients_own_rows_wait_in_its_spool_while_postgresql_is_down(pg_server: Any, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows the client makes itself (here: infra-failed for a lost worker) while the PostgreSQL server is stopped
    wait in the client's spool, in order, and are written once over its reopened connection when the server is back;
    the run's end with the server still down stops the client in one line naming the spool."""
    from devicelab import rows
    from devicelab.farm.client import FarmRun
    from devicelab.result import OK, Config
    from devicelab.store import RunRecord

    monkeypatch.setenv("DEVICELAB_DATA", str(tmp_path / "data"))
    url = pg_server.url(pg_server.create_database())
    store = open_store(url)
    store.create_run(RunRecord("run-1", "2026-12-06T12:00:00.000+00:00", {"name": "s"}, 1, {}, "0.1.0"))
    configs = [Config("phone", "protocol", "", "1", f"m{i}", f"{i:064x}", 10, "fp32", "cpu", 1, (0,), "big")
               for i in range(3)]
    events: list[tuple[str, Any]] = []
    run = FarmRun(None, store, "run-1", None, 1.0, lambda kind, obj: events.append((kind, obj)),  # type: ignore[arg-type]
                  location=url)
    try:
        run._commit(Result.for_config("run-1", configs[0], OK, samples_s=(0.01,), median_s=0.01))
        lost = [rows.device_gone("run-1", c, "its farm worker was lost") for c in configs[1:]]
        pg_server.halt()
        try:
            for r in lost:
                run._commit(r)
            assert run.spool.pending() == 2
            assert [k for k, _ in events].count("notice") == 2
            with pytest.raises(DevicelabError) as end:
                run.record_end("finished")
            [line] = str(end.value).splitlines()
            assert "unreachable at the end of the run" in line and str(run.spool.path) in line, line
        finally:
            pg_server.resume()
        run.record_end("finished")  # the spool first, then the run's status
        assert run.spool.pending() == 0 and not run.spool.path.exists()
        stored = store.results("run-1")
        assert [r.model for r in stored] == ["m0", "m1", "m2"]
        assert [r.to_json() for r in stored[1:]] == [r.to_json() for r in lost]
        assert store.get_run("run-1").status == "finished"
    finally:
        store.close()


# --------------------------------------------------------------------------------------------------
# A task's files through the store, without Dask: what the client publishes and what a worker's host makes of it


def test_a_tasks_files_arrive_in_the_workers_cache_with_the_jobs_paths_rewritten(
        store_target: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The client's model, converted folder (a package: a tar), weights, runner binary and libraries and its native
    build, published; every client file then deleted; a worker host with its own data folder gets the same Jobs with
    its cached paths, identical bytes, the runner still executable, the folder whole, and the client's build as its
    registry's answer while the task runs."""
    from devicelab import native
    from devicelab.engines.base import PreparedModel, SourceModel
    from devicelab.farm import artifacts
    from devicelab.measure import ProtocolSettings
    from devicelab.result import Config
    from devicelab.session import Job

    client = tmp_path / "client"
    (client / "pkg.mlpackage" / "Data").mkdir(parents=True)
    (client / "pkg.mlpackage" / "Manifest.json").write_text('{"m": 1}')
    (client / "pkg.mlpackage" / "Data" / "weights.bin").write_bytes(b"\x01\x02" * 5000)
    (client / "m.onnx").write_bytes(b"onnx bytes")
    (client / "m.bin").write_bytes(b"weights")
    (client / "runner").write_bytes(b"#!/bin/sh\necho hi\n")
    (client / "runner").chmod(0o755)
    (client / "libx.so").write_bytes(b"library")
    (client / "f32.gguf").write_bytes(b"GGUF an LLM's F32 reference variant")
    (client / "native" / "android-arm64").mkdir(parents=True)
    (client / "native" / "android-arm64" / "dlprobe").write_bytes(b"probe program")
    (client / "native" / "android-arm64" / "dlprobe").chmod(0o755)
    monkeypatch.setenv("DEVICELAB_DATA", str(client / "data"))
    probe = client / "native" / "android-arm64" / "dlprobe"
    record = native.BuildRecord("android-arm64", {"dlprobe": native.Artifact("dlprobe", probe, "x", 13)}, "1", "ab" * 32,
                                {}, "now")
    native.registry_path().parent.mkdir(parents=True)
    native.registry_path().write_text(json.dumps({"version": native.REGISTRY_VERSION,
                                                  "targets": {"android-arm64": record.to_dict()}}))
    config = Config("phone", "protocol", "", "1", "m", "cd" * 32, 10, "fp32", "cpu", 1, (0,), "big")
    job = Job("run-1", config, SourceModel("m", client / "m.onnx", "cd" * 32, ()),
              PreparedModel(client / "pkg.mlpackage", (), {"weights": str(client / "m.bin")}), ProtocolSettings(),
              options={"binary": str(client / "runner"), "libraries": [str(client / "libx.so")], "threads": 1},
              reference=PreparedModel(client / "f32.gguf"))
    store = store_target.open()
    shipment = artifacts.publish(store, [job])
    assert set(shipment.files) == {str(p) for p in (client / "m.onnx", client / "pkg.mlpackage", client / "m.bin",
                                                    client / "runner", client / "libx.so", client / "f32.gguf",
                                                    probe)}
    assert artifacts.publish(store, [job]).files == shipment.files  # published again: the same artifacts
    originals = {name: (client / name).read_bytes() for name in ("m.onnx", "m.bin", "runner", "libx.so", "f32.gguf")}
    weights = (client / "pkg.mlpackage" / "Data" / "weights.bin").read_bytes()
    shutil.rmtree(client)  # the worker's host has none of it

    monkeypatch.setenv("DEVICELAB_DATA", str(tmp_path / "worker-data"))
    [local], builds = artifacts.localize(store, [job], shipment)
    cache = tmp_path / "worker-data" / "farm" / "artifacts"
    assert local.source.path.read_bytes() == originals["m.onnx"] and local.source.path.is_relative_to(cache)
    assert local.prepared.path.name == "pkg.mlpackage" and local.prepared.path.is_relative_to(cache)
    assert (local.prepared.path / "Data" / "weights.bin").read_bytes() == weights
    assert json.loads((local.prepared.path / "Manifest.json").read_text()) == {"m": 1}
    assert Path(local.prepared.options["weights"]).read_bytes() == originals["m.bin"]
    assert Path(local.options["binary"]).read_bytes() == originals["runner"] and os.access(local.options["binary"], os.X_OK)
    assert [Path(x).read_bytes() for x in local.options["libraries"]] == [originals["libx.so"]]
    assert local.options["threads"] == 1 and local.config == job.config
    assert local.reference is not None and local.reference.path.is_relative_to(cache)
    assert local.reference.path.read_bytes() == originals["f32.gguf"]
    assert native.registered("android-arm64") is None  # the worker's own registry has no build ...
    with native.shipped_builds(builds):  # ... but while the task runs, the client's is the answer
        shipped = native.registered("android-arm64")
        assert shipped is not None and shipped.artifacts["dlprobe"].path.read_bytes() == b"probe program"
        assert os.access(shipped.artifacts["dlprobe"].path, os.X_OK)
    assert native.registered("android-arm64") is None
    again, _ = artifacts.localize(store, [job], shipment)  # a second task: served from the cache
    assert again[0].prepared.path == local.prepared.path

    def unreachable() -> Any:
        raise DevicelabError("cannot open the store: down")

    # every file cached: the store is not even opened (a task runs while it is unreachable)
    assert artifacts.localize(unreachable, [job], shipment)[0] == again
    shutil.rmtree(cache / f"{shipment.files[str(client / 'm.bin')].sha256}-644")
    with pytest.raises(DevicelabError, match="cannot open the store: down"):  # one file missing: the store is needed
        artifacts.localize(unreachable, [job], shipment)
    store.close()


def test_workers_of_one_host_fetch_an_artifact_once_between_them(tmp_path: Path) -> None:
    """Three workers of a host (separate processes, as one per phone) ask for the same file and folder at the same
    moment, as a run's first tasks do: the store is read once for each, the others wait and take the cached copy."""
    from devicelab.farm import artifacts

    db = tmp_path / "db.sqlite"
    (tmp_path / "model.bin").write_bytes(b"m" * 300_000)
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.txt").write_text("folder")
    store = open_store(str(db))
    try:
        items = [artifacts.put(store, tmp_path / "model.bin"), artifacts.put(store, tmp_path / "pkg")]
    finally:
        store.close()
    cache, log, opens, go = tmp_path / "cache", tmp_path / "reads.log", tmp_path / "opens.log", tmp_path / "go"
    # Each process: says it is ready, waits for the go file (given once all three are ready), then fetches both
    # items through an opener, as a worker does: each open is logged, and the store's reads are logged with their
    # times and slow (1 s: long enough that the three overlap); it prints when it began fetching and the paths.
    script = f"""
import json, sys, time
from pathlib import Path
from devicelab.farm import artifacts
from devicelab.store import open_store
def opener():
    with open({str(opens)!r}, "a") as f:
        f.write(sys.argv[2] + "\\n")
    store = open_store({str(db)!r}, create=False)
    read = store.get_artifact
    def slow(sha256, dest, mode=0o644):
        began = time.time()
        time.sleep(1.0)
        out = read(sha256, dest, mode)
        with open({str(log)!r}, "a") as f:
            f.write(json.dumps([sha256, began, time.time()]) + "\\n")
        return out
    store.get_artifact = slow
    return store
Path({str(tmp_path)!r}, "ready-" + sys.argv[2]).touch()
while not Path({str(go)!r}).exists():
    time.sleep(0.01)
items = [artifacts.Shipped(**d) for d in json.loads(sys.argv[1])]
began = time.time()
print(json.dumps([began, [str(artifacts.fetch(opener, item, Path({str(cache)!r}))) for item in items]]))
"""
    arg = json.dumps([dataclasses.asdict(i) for i in items])
    # -P: the installed devicelab, not a source tree in the working directory
    procs = [subprocess.Popen([sys.executable, "-P", "-c", script, arg, str(i)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(3)]
    try:
        try:
            wait_for("three workers ready", lambda: all((tmp_path / f"ready-{i}").exists() for i in range(3))
                     or any(p.poll() is not None for p in procs), timeout=120, every=0.05)
        finally:
            go.touch()  # whatever happened, none of them waits forever
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    assert all(p.returncode == 0 for p in procs), [e[-2000:] for _, e in outs]
    answers = [json.loads(o) for o, _ in outs]
    assert len({tuple(paths) for _, paths in answers}) == 1  # the same cached copies for all three
    model, folder = answers[0][1]
    assert Path(model).read_bytes() == b"m" * 300_000 and (Path(folder) / "a.txt").read_text() == "folder"
    reads = [json.loads(line) for line in log.read_text().splitlines()]
    # the three asked while the first read was still under way: the test saw them overlap, or it proves nothing
    assert all(began < reads[0][2] for began, _ in answers), (answers, reads)
    assert sorted(sha for sha, _, _ in reads) == sorted(i.sha256 for i in items)  # each read from the store once
    assert len(opens.read_text().split()) == 2  # the store opened only by the one that read each file, under its lock
