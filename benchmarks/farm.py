"""The farm's scheduling overhead on loopback: N emulated Android phones (devicelab.testing.emulated_adb behind a
private adb server), `devicelab farm scheduler` and `devicelab farm agent` (one Dask worker process per phone), and
a run of the cheapest real config the farm can run on a phone — the protocol engine with the README's example runner
(runner protocol v1 in C, static arm64, run under qemu on the emulated phone) — K rounds per phone, submitted by the
client API in this process.

    python benchmarks/farm.py [--phones 2] [--jobs 6] [--db STORE]

Per task (one config on one phone) the worker reads the clock four times (farm.worker.TaskDone) and the client
twice (farm.client.TaskTiming). Scheduling overhead of a job =
    (its device session starting − the moment the job could start: its submission, or the end of the phone's
     previous job, whichever is later)
  + (its rows committed to the store − its device session ending).
The device session is the worker's session code: the phone set up for the run (its first job only), the cooldown,
the config. Wall is the first submission to the last completion seen by the client; ideal is the longest phone's
sum of session times. The wait before a session is also printed in two parts: until the task reaches the worker
(Dask; over every task), and from there to the session (the task's files: found in the host's cache, or fetched
from the store — which includes waiting for another worker of the host that is fetching the same file), for each
phone's first task and for its later ones. Needs adb, qemu-aarch64-static with binfmt in a private namespace and aarch64-linux-gnu-gcc,
as tests/test_farm.py. The last line printed is `… ms/job`.
"""

from __future__ import annotations

import argparse
import importlib.resources
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RUNNER_C = HERE.parent / "examples" / "protocol_runner.c"
RESERVED = {5037, *range(5555, 5586)}  # adb's own server port and the emulator ports it attaches on its own
PROTOCOL = {"warmup_iterations": 1, "warmup_seconds": 0.0, "min_iterations": 5, "min_seconds": 0.0,
            "max_iterations": 8, "max_seconds": 2.0, "cooldown_seconds": 0.0, "cooldown_timeout_seconds": 20,
            "timeout_seconds": 120, "accuracy_inputs": 0}


def free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in RESERVED:
            return port


def adb_binary() -> str:
    if os.access("/usr/bin/adb", os.X_OK):
        return "/usr/bin/adb"
    return str(importlib.resources.files("adbutils.binaries") / "adb")


def devicelab_exe() -> str:
    exe = Path(sys.executable).parent / "devicelab"
    return str(exe) if exe.exists() else "devicelab"


class Procs:
    """Every process this script starts, stopped by its pid at the end (newest first)."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
        with log.open("ab") as f:
            p = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=f)
        self.procs.append(p)
        assert p.stdout is not None
        first = p.stdout.readline().decode().strip()
        if not first:
            raise SystemExit(f"{argv[:4]} printed nothing: {log.read_text(errors='replace')[-2000:]}")
        return p, first

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            if p.stdout is not None:
                p.stdout.close()


def wait_for(what: str, check: Any, timeout: float = 180) -> Any:
    deadline = time.monotonic() + timeout
    while not (got := check()):
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.3)
    return got


def quantile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def overheads(timings: list[Any]
              ) -> tuple[list[float], list[float], list[float], float, float, dict[str, list[float]]]:
    """Per job: the wait before its session, the wait after it to the commit, and their sum; the ideal and wall; and
    the wait before the session split in two: until the task reaches the worker (Dask), and from there to the session
    (the task's files looked up in the host's cache, and fetched from the store the first time), for each phone's
    first task and for the others."""
    before, after, total = [], [], []
    split: dict[str, list[float]] = {"dask": [], "files, first task": [], "files, later tasks": []}
    by_phone: dict[str, list[Any]] = {}
    for t in timings:
        by_phone.setdefault(t.device, []).append(t)
    for tasks in by_phone.values():
        tasks.sort(key=lambda t: t.session_start)
        previous_end = 0.0
        for t in tasks:
            ready = max(t.submitted, previous_end)
            b, a = t.session_start - ready, t.committed - t.session_end
            split["dask"].append(max(0.0, t.received - ready) / t.jobs)
            split["files, first task" if previous_end == 0.0 else "files, later tasks"].append(
                (t.session_start - t.received) / t.jobs)
            before.append(b / t.jobs)
            after.append(a / t.jobs)
            total.extend([(b + a) / t.jobs] * t.jobs)
            previous_end = t.committed
    ideal = max(sum(t.session_end - t.session_start for t in tasks) for tasks in by_phone.values())
    wall = max(t.returned for t in timings) - min(t.submitted for t in timings)
    return before, after, total, ideal, wall, split


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phones", type=int, default=2, help="emulated phones, one farm worker each")
    parser.add_argument("--jobs", type=int, default=6, help="jobs (rounds of the one config) per phone")
    parser.add_argument("--db", help="the store (default: a SQLite file in the temp folder)")
    args = parser.parse_args()
    for tool in ("aarch64-linux-gnu-gcc", "qemu-aarch64-static", "unshare"):
        if shutil.which(tool) is None:
            raise SystemExit(f"needs {tool} (as tests/test_farm.py)")

    tmp = Path(tempfile.mkdtemp(prefix="devicelab-farm-bench-"))
    home = tmp / "home"
    home.mkdir()
    db = args.db or str(tmp / "farm.sqlite")
    env = {**os.environ, "HOME": str(home), "ANDROID_ADB_SERVER_PORT": str(free_port()),
           "ADBUTILS_ADB_PATH": adb_binary(), "DEVICELAB_DATA": str(tmp / "data"), "DEVICELAB_DB": db}
    env.pop("ANDROID_SERIAL", None)
    env.pop("DEVICELAB_DEVICES", None)
    os.environ.update({k: env[k] for k in ("HOME", "ANDROID_ADB_SERVER_PORT", "ADBUTILS_ADB_PATH", "DEVICELAB_DATA",
                                           "DEVICELAB_DB")})
    adb = [env["ADBUTILS_ADB_PATH"]]
    procs = Procs()
    try:
        subprocess.run([*adb, "start-server"], env=env, check=True, capture_output=True, timeout=60)
        runner = tmp / "protocol_runner"
        subprocess.run(["aarch64-linux-gnu-gcc", "-O2", "-static", "-o", str(runner), str(RUNNER_C)], check=True,
                       capture_output=True)
        serials = []
        for i in range(args.phones):
            _, address = procs.start([sys.executable, "-m", "devicelab.testing.emulated_adb", "--port",
                                      str(free_port()), "--root", str(tmp / f"phone{i}")], env, tmp / f"phone{i}.log")
            subprocess.run([*adb, "connect", address], env=env, capture_output=True, timeout=30)
            serials.append(address)
        _, scheduler = procs.start([devicelab_exe(), "farm", "scheduler", "--port", "0"], env, tmp / "scheduler.log")
        # the agent prints nothing on stdout: started here, not through Procs.start
        agent = subprocess.Popen([devicelab_exe(), "farm", "agent", "--scheduler", scheduler, "--beat-seconds", "1",
                                  "--scan-seconds", "1"], env=env, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=(tmp / "agent.log").open("ab"))
        procs.procs.append(agent)

        from devicelab.errors import DevicelabError
        from devicelab.farm import client as farm_client
        from devicelab.store import open_store

        def all_idle() -> bool:
            try:
                store = open_store(db, create=False)
            except DevicelabError:
                return False
            try:
                beats = {b.device: b for b in store.heartbeats()}
            finally:
                store.close()
            return all(s in beats and beats[s].reachable and beats[s].job is None for s in serials)

        wait_for("every phone's worker beating", all_idle)
        raw = {"name": "farm-bench", "models": ["squeezenet1_1"], "threads": [1], "repeats": args.jobs,
               "engines": [{"name": "protocol", "options": {"binary": str(runner)}}], "devices": serials,
               "protocol": PROTOCOL, "seed": 1}
        client = farm_client.connect(scheduler, None)
        store = open_store(db)
        try:
            started = time.monotonic()
            run = farm_client.start_farm_run(client, store, raw, "benchmarks/farm.py", sys.argv, 600,
                                             lambda kind, obj: None)
            client_wall = time.monotonic() - started
            results = store.results(run.run_id)
        finally:
            store.close()
            client.close()
    finally:
        procs.stop()
        subprocess.run([*adb, "kill-server"], env=env, capture_output=True, timeout=30)
    bad = [r for r in results if r.status != "ok"]
    if bad:
        raise SystemExit(f"{len(bad)} rows not ok: {bad[0].status}: {bad[0].reason}")
    before, after, total, ideal, wall, split = overheads(run.timings)
    sessions = [t.session_end - t.session_start for t in run.timings]
    returned = [t.returned - t.committed for t in run.timings]
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"{args.phones} emulated phones, {args.jobs} jobs each ({len(results)} rows, store {farm_client_store(db)}),"
          f" {os.cpu_count()} CPUs")
    print(f"session (cooldown + config under qemu): median {statistics.median(sessions) * 1e3:.0f} ms")
    print(f"submit/previous job -> session start: median {statistics.median(before) * 1e3:.1f} ms, "
          f"p90 {quantile(before, 0.9) * 1e3:.1f} ms")
    for part, xs in split.items():
        what = ("ready -> the task reaches the worker" if part == "dask"
                else f"reaches the worker -> session start ({part})")
        if xs:
            print(f"  of which {what}: median {statistics.median(xs) * 1e3:.1f} ms, "
                  f"p90 {quantile(xs, 0.9) * 1e3:.1f} ms ({len(xs)} tasks)")
    print(f"session end -> rows committed: median {statistics.median(after) * 1e3:.1f} ms, "
          f"p90 {quantile(after, 0.9) * 1e3:.1f} ms")
    print(f"committed -> completion seen by the client (not in the overhead): median "
          f"{statistics.median(returned) * 1e3:.1f} ms")
    print(f"wall {wall:.2f} s (first submit -> last completion; whole client call incl. planning {client_wall:.2f} s) "
          f"vs ideal {ideal:.2f} s (longest phone's sum of sessions): {wall / ideal:.3f}x ideal")
    print(f"scheduling overhead: median {statistics.median(total) * 1e3:.1f} ms/job, "
          f"p90 {quantile(total, 0.9) * 1e3:.1f} ms/job")
    return 0


def farm_client_store(db: str) -> str:
    return "PostgreSQL" if db.startswith(("postgresql://", "postgres://")) else "SQLite"


if __name__ == "__main__":
    sys.exit(main())
