"""One farm worker: a Dask worker process bound to one device (`python -m devicelab.farm.worker`, started by the
agent) and opening it through its own kind's transport (an adb phone, an iPhone, the host: docs/farm.md). Its plugin
beats the device's health into the store and takes the device's resource to 0 while it is offline; its tasks run
configs through the same session code as a local run and commit each Result to the run's store, or to a host-local
spool while that store is unreachable."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from devicelab import native, profiles, rows, session
from devicelab.devices import Transport, open_device
from devicelab.errors import DevicelabError
from devicelab.facts import DeviceEntry, DeviceFacts
from devicelab.farm import MISSED_BEATS_OFFLINE, PLUGIN_NAME, resource
from devicelab.farm.artifacts import Shipment, localize
from devicelab.farm.envs import EnvError
from devicelab.result import Result, utc_now
from devicelab.session import Job
from devicelab.store import ArtifactMismatch, Heartbeat, Store, open_store


def phone_entry(serial: str) -> DeviceEntry:
    """The phone as a discovered adb device (its id is its serial, as in a local run without an inventory)."""
    return DeviceEntry(serial, "android", {"serial": serial, "discovered": True})


def entry_from_args(serial: str, kind: str, options: str | None) -> DeviceEntry:
    """The device a worker serves, from its command line: its id (the adb serial, the UDID, the host device's id),
    its kind, and the options of its entry as the agent's host knows it (JSON); without options, the device as
    discovery finds it."""
    from devicelab.devices import TRANSPORTS

    if kind not in TRANSPORTS:
        raise DevicelabError(f"--kind: {kind!r} is not allowed; allowed: {', '.join(TRANSPORTS)}")
    if options:
        try:
            parsed = json.loads(options)
        except ValueError as e:
            raise DevicelabError(f"--options: not JSON ({e})") from None
        if not isinstance(parsed, dict):
            raise DevicelabError("--options: must be a JSON object (the device's inventory entry)")
        return DeviceEntry(serial, kind, parsed)
    if kind == "android":
        return phone_entry(serial)
    return DeviceEntry(serial, kind, {"udid": serial} if kind == "ios" else {})


def job_label(jobs: Sequence[Job]) -> str:
    """What a task runs, for `devicelab farm status`: run, engine [labels], model, precision, threads, round."""
    c = jobs[0].config
    labels = ",".join(j.config.label for j in jobs if j.config.label)
    return (f"{jobs[0].run_id}: {c.engine}{f' [{labels}]' if labels else ''} {c.model} {c.precision} "
            f"{c.threads}t round {c.repeat + 1}")


# --------------------------------------------------------------------------------------------------
# The spool: Results that could not reach the store, kept on this host until it is back


class Spool:
    """Results waiting for their store, one JSON line each ({"location", "result"}) in a file of this host, in the
    order they were made. A Result goes to the store only after every spooled one before it (so a later row never
    overtakes an earlier one of the same config). Stores are opened per write: a store that was unreachable is
    looked for again next time, never through a connection that broke."""

    def __init__(self, path: Path, opener: Callable[[str], Store] | None = None) -> None:
        self.path = path
        self.opener = opener or existing_store
        self.rejected = path.with_suffix(".rejected.jsonl")
        self._lock = threading.Lock()

    def pending(self) -> int:
        with self._lock:
            return len(self._read())

    def write(self, location: str, result: Result) -> bool:
        """Commit `result` to the store at `location` (True), or keep it in the spool (False) when that store, or an
        earlier spooled Result, cannot be written now."""
        with self._lock:
            if self._flush() == 0 and self._commit(location, result):
                return True
            self._append([{"location": location, "result": result.to_dict()}])
            return False

    def flush(self) -> int:
        """Write what the spool holds to its stores; how many Results are still waiting."""
        with self._lock:
            return self._flush()

    def _commit(self, location: str, result: Result) -> bool:
        try:
            store = self.opener(location)
        except Exception:  # noqa: BLE001 - any store that cannot be opened is unreachable for now: keep the row
            return False
        try:
            store.add_result(result)
            return True
        except ValueError:  # refused: an ok row of this config is stored; the same row committed before is done
            if any(r.to_json() == result.to_json() for r in store.results(result.run_id)
                   if r.config.identity_key() == result.config.identity_key()):
                return True
            self._append([{"location": location, "result": result.to_dict(), "refused": True}], self.rejected)
            return True
        except Exception:  # noqa: BLE001 - the store went away mid-write (locked, disk, network): keep the row
            return False
        finally:
            try:
                store.close()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail too
                pass

    def _flush(self) -> int:
        waiting = self._read()
        if not waiting:
            return 0
        for i, entry in enumerate(waiting):
            if not self._commit(entry["location"], Result.from_dict(entry["result"])):
                self._rewrite(waiting[i:])
                return len(waiting) - i
        self._rewrite([])
        return 0

    def _read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def _append(self, entries: list[dict[str, Any]], path: Path | None = None) -> None:
        path = path or self.path
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            for entry in entries:
                f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())  # a spooled Result survives the worker's host going down

    def _rewrite(self, entries: list[dict[str, Any]]) -> None:
        if not entries:
            self.path.unlink(missing_ok=True)
            return
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(e) + "\n" for e in entries))
        os.replace(tmp, self.path)


def existing_store(location: str) -> Store:
    """The store at `location`, never a new one: a missing SQLite file is a store that cannot be reached (a fresh
    file there would hold rows of a run it does not know)."""
    return open_store(location, create=False)


def spool_path(serial: str) -> Path:
    """This host's spool for one phone, under devicelab's data folder."""
    from devicelab import paths

    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in serial)
    return paths.data_dir() / "farm" / f"spool-{safe}.jsonl"


@dataclass
class TaskDone:
    """What a farm task returns: (Result, committed) per job, in order — committed False when the Result waits in
    this host's spool — and the worker's wall-clock times (time.time(), seconds) of the task reaching the worker,
    its device session (phone set up for the run, cooldown, the configs) starting and ending, and its rows committed
    or spooled. Four clock reads per task: what the scheduling overhead is measured from (benchmarks/farm.py)."""

    rows: list[tuple[Result, bool]]
    received_at: float
    session_start: float
    session_end: float
    committed_at: float


# --------------------------------------------------------------------------------------------------
# The worker plugin: heartbeat, the phone's resource, and the tasks


def beat_values(state: dict[str, Any]) -> dict[str, Any]:
    """Battery %, a temperature (the battery's, else the hottest zone) and charging, from a transport's state()."""
    power = state.get("power") or {}
    temps = [t for t in (state.get("temperatures_c") or {}).values() if isinstance(t, (int, float))]
    temperature = power.get("battery_temp_c")
    if temperature is None and temps:
        temperature = max(temps)
    return {"battery_percent": power.get("battery_percent"), "temperature_c": temperature,
            "charging": state.get("charging")}


class PhonePlugin(WorkerPlugin):
    """The Dask worker plugin of one phone.

    Every `beat_s` seconds it reads the phone's state (battery, temperature, charging) and writes a Heartbeat to
    the store at `location`; a beat that cannot reach the phone is a missed beat. After MISSED_BEATS_OFFLINE missed
    beats in a row the phone's resource goes to 0 (the scheduler gives it no work), and back to 1 on the first beat
    that reaches it again. While a task runs, the beat does not touch the phone (it is measuring): it says which job
    runs and repeats the last values read."""

    name = PLUGIN_NAME

    def __init__(self, serial: str, location: str, beat_s: float, spool: Spool, entry: DeviceEntry | None = None
                 ) -> None:
        self.serial, self.location, self.beat_s, self.spool = serial, location, beat_s, spool
        self.entry = entry or phone_entry(serial)  # the device, opened through its kind's transport
        self.worker: Any = None
        self.missed = 0
        self.offline = False
        self.job: str | None = None
        self.last: dict[str, Any] = {}
        self.facts: DeviceFacts | None = None  # read once reachable: a run can be planned while the phone is away
        self._published = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        # (run id, open transport, idle baseline, the device's facts as its transport read them)
        self._run: tuple[str, Transport, dict[str, Any], DeviceFacts] | None = None
        self._reader = ThreadPoolExecutor(1, thread_name_prefix=f"read {serial}")
        self._reading: Future[dict[str, Any]] | None = None

    # ---- life cycle (called by distributed)
    def setup(self, worker: Any) -> None:
        self.worker = worker
        self._thread = threading.Thread(target=self._beats, name=f"heartbeat {self.serial}", daemon=True)
        self._thread.start()

    def teardown(self, worker: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.beat_s + 30)
        self._close_run()
        self._reader.shutdown(wait=False, cancel_futures=True)

    # ---- the heartbeat
    def _beats(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.beat()
            except Exception as e:  # noqa: BLE001 - a beat must never end the thread: say why, beat again
                print(f"{self.serial}: heartbeat failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            self.spool.flush()  # the store may be back: what waited goes first
            self._stop.wait(max(0.0, self.beat_s - (time.monotonic() - started)))

    def beat(self) -> Heartbeat:
        with self._lock:
            job = self.job
        detail: dict[str, Any] = {"pid": os.getpid(), "spooled": self.spool.pending()}
        if job is not None:
            reachable, values = True, dict(self.last)
            detail["read"] = "not read during a job"
        else:
            reachable, values, error = self._read()
            if error:
                detail["error"] = error
        self.missed = 0 if reachable else self.missed + 1
        if self.missed >= MISSED_BEATS_OFFLINE and not self.offline:
            self.offline = True
            self._set_resource(0)
        elif reachable and self.offline:
            self.offline = False
            self._set_resource(1)
        beat = Heartbeat(device=self.serial, host=platform.node(), worker=str(getattr(self.worker, "address", "")),
                         at=utc_now(), interval_s=self.beat_s, reachable=reachable, missed=self.missed, job=job,
                         detail=detail, **values)
        self._write_beat(beat)
        return beat

    def _read(self) -> tuple[bool, dict[str, Any], str | None]:
        """The phone's state, read within one beat interval (at least a second): adb can take much longer to give
        up on a phone that is gone, and a beat that does not come back in time is a missed beat. A read still
        running from an earlier beat is not doubled."""
        if self._reading is None or self._reading.done():
            self._reading = self._reader.submit(self._read_phone)
        try:
            values = self._reading.result(timeout=max(1.0, self.beat_s))
        except FuturesTimeout:
            return False, {}, f"no answer within {max(1.0, self.beat_s):g} s"
        except Exception as e:  # noqa: BLE001 - unreachable is what a beat finds out, whatever the cause
            return False, {}, f"{type(e).__name__}: {e}"[:300]
        self.last = values
        return True, values, None

    def _read_phone(self) -> dict[str, Any]:
        phone = open_device(self.entry)
        try:
            values = beat_values(phone.state())
            if self.facts is None:
                self.facts = phone.facts()
        finally:
            phone.close()  # an iPhone's transport holds a lockdown connection and a thread: one per beat would pile up
        if self.facts is not None and not self._published:
            try:
                self.publish_facts()
                self._published = True
            except (DevicelabError, OSError) as e:  # the next beat (or a client's request) publishes them
                print(f"{self.serial}: publishing its facts failed: {e}", file=sys.stderr, flush=True)
        return values

    def publish_facts(self) -> None:
        """The phone's facts into the store, where a client on any host plans with them (the phone need not be
        attached to the client, nor its worker running then)."""
        if self.facts is None:
            return
        store = existing_store(self.location)
        try:
            store.publish_facts(self.serial, platform.node(), self.facts.to_dict())
        finally:
            store.close()

    def _write_beat(self, beat: Heartbeat) -> None:
        """A beat is not spooled: the next one replaces it, and a stale beat says the store could not be reached."""
        try:
            store = existing_store(self.location)
        except Exception:  # noqa: BLE001 - the store is unreachable: this beat is lost, the next one tries again
            return
        try:
            store.record_heartbeat(beat)
        except Exception:  # noqa: BLE001 - as above
            pass
        finally:
            store.close()

    def _set_resource(self, quantity: int) -> None:
        """The phone's resource on this worker and the scheduler. Called from the beat thread: the change runs on
        the worker's event loop, where distributed expects it."""
        if self.worker is None:
            return

        async def change() -> None:
            await self.worker.set_resources(**{resource(self.serial): quantity})
            if quantity:
                # set_resources is no state-machine event: tasks that waited for the resource on this worker would
                # wait for the next event; unpausing (the worker runs) lets the worker start them now.
                from distributed.core import Status
                from distributed.worker_state_machine import UnpauseEvent

                if self.worker.status == Status.running:
                    self.worker.handle_stimulus(UnpauseEvent(stimulus_id=f"phone-back-{time.time()}"))

        future = asyncio.run_coroutine_threadsafe(change(), self.worker.loop.asyncio_loop)
        try:
            future.result(timeout=30)
            print(f"{self.serial}: {'back: resource 1' if quantity else 'offline: resource 0'}", file=sys.stderr,
                  flush=True)
        except Exception as e:  # noqa: BLE001 - the next beat tries again
            print(f"{self.serial}: setting the resource to {quantity} failed: {e}", file=sys.stderr, flush=True)
            self.offline = not quantity

    # ---- tasks
    def run(self, location: str, jobs: Sequence[Job], shipment: Shipment | None = None) -> TaskDone:
        """Run one config (or the A/B labels of one, together) on the phone, with the files of `shipment` fetched from
        the store into this host's cache first; each Result committed to the run's store or spooled on this host.
        The session's clock reads are taken after the fetch: fetching is the task's overhead, not its session."""
        received = time.time()
        label = job_label(jobs)
        with self._lock:
            self.job = label
        print(f"{self.serial}: start {label}", file=sys.stderr, flush=True)
        try:
            self.beat_soon()
            fetched = self._fetch(location, jobs, shipment or Shipment())
            start = time.time()
            if isinstance(fetched, list):  # the files did not arrive: nothing ran
                results = fetched
            else:
                with native.shipped_builds(fetched[1]):
                    results = self._run_jobs(fetched[0])
            end = time.time()
            out = [(r, self.spool.write(location, r)) for r in results]
            committed = time.time()
        finally:
            with self._lock:
                self.job = None
            print(f"{self.serial}: end {label}", file=sys.stderr, flush=True)
            self.beat_soon()
        return TaskDone(out, received, start, end, committed)

    def beat_soon(self) -> None:
        """A beat now (not waiting for the next one), so status shows a job the moment it starts and ends."""
        threading.Thread(target=self._quiet_beat, daemon=True).start()

    def _quiet_beat(self) -> None:
        try:
            with self._lock:
                job = self.job
            self._write_beat(Heartbeat(device=self.serial, host=platform.node(),
                                       worker=str(getattr(self.worker, "address", "")), at=utc_now(),
                                       interval_s=self.beat_s, reachable=not self.offline, missed=self.missed,
                                       job=job, detail={"pid": os.getpid(), "read": "job start/end"},
                                       **self.last))
        except Exception:  # noqa: BLE001 - best effort: the periodic beat follows
            pass

    def _fetch(self, location: str, jobs: Sequence[Job], shipment: Shipment
               ) -> tuple[list[Job], dict[str, native.BuildRecord]] | list[Result]:
        """The jobs with their files from this host's cache, fetched from the store first when not cached yet (their
        cached copies in place of the client's paths), and the client's native programs; or infra-failed rows, when a
        file does not arrive."""
        run_id = jobs[0].run_id
        try:
            return localize(lambda: existing_store(location), jobs, shipment)
        except EnvError as e:  # the label's environment cannot be had here as its lock says: nothing runs
            print(f"{self.serial}: {e}", file=sys.stderr, flush=True)
            return [rows.not_delivered(run_id, j.config, str(e)) for j in jobs]
        except ArtifactMismatch as e:
            # The stored copy is damaged: forget it, so that --resume (which publishes the file again) stores it anew.
            try:
                store = existing_store(location)
                try:
                    store.drop_artifact(e.sha256)
                finally:
                    store.close()
            except Exception:  # noqa: BLE001 - the row says what happened either way
                pass
            print(f"{self.serial}: {e}", file=sys.stderr, flush=True)
            return [rows.not_delivered(run_id, j.config, str(e)) for j in jobs]
        except Exception as e:  # noqa: BLE001 - a store that cannot be opened or read, a cache that cannot be written
            print(f"{self.serial}: the task's files could not be fetched: {e}", file=sys.stderr, flush=True)
            return [rows.not_delivered(run_id, j.config, f"the task's files could not be fetched: {e}") for j in jobs]

    def _run_jobs(self, jobs: Sequence[Job]) -> list[Result]:
        run_id = jobs[0].run_id
        wrong = [j for j in jobs if j.config.device != self.serial]
        if wrong:  # only a task bound to this phone's resource belongs here: never measure another phone's config
            return [rows.device_gone(run_id, j.config, f"the task reached the worker of {self.serial}") for j in jobs]
        try:
            transport, baseline = self._transport(run_id)
        except (DevicelabError, OSError) as e:
            return [rows.device_gone(run_id, j.config, str(e)) for j in jobs]
        assert self._run is not None
        wrong = engine_mismatch(jobs, self._run[3])
        if wrong:  # a row would carry a version this host does not run: none of the task runs (A/B labels go together)
            print(f"{self.serial}: {wrong}", file=sys.stderr, flush=True)
            return [rows.not_delivered(run_id, j.config, wrong) for j in jobs]
        cooldown = session.cooldown(transport, baseline, jobs[0].settings)
        try:
            return session.run_jobs(transport, list(jobs), cooldown)
        except OSError as e:  # the session makes rows of device faults; this is the device failing outside them
            return [rows.device_gone(run_id, j.config, str(e)) for j in jobs]

    def _transport(self, run_id: str) -> tuple[Transport, dict[str, Any]]:
        """The phone opened and set up for this run (begin_run, idle baseline) once, kept for its next tasks; a task
        of another run closes it first (undoing what begin_run changed)."""
        if self._run is not None and self._run[0] == run_id:
            return self._run[1], self._run[2]
        self._close_run()
        transport = open_device(self.entry)
        facts = transport.facts()
        transport.begin_run()
        self._run = (run_id, transport, session.idle_baseline(transport), facts)
        return self._run[1], self._run[2]

    def _close_run(self) -> None:
        if self._run is not None:
            try:
                self._run[1].close()
            except Exception:  # noqa: BLE001 - a phone that went away cannot be set back
                pass
            self._run = None


def engine_mismatch(jobs: Sequence[Job], facts: DeviceFacts) -> str | None:
    """Why this worker must not run `jobs`: a config whose engine version here differs from the one the run planned
    (and each row would carry), as one line naming both; None when every one matches.

    The client plans an engine's version from the device's facts when they name it (an iPhone's runner app), else
    from the client's own install (plan.engine_version_on); the worker runs the engine of its own host (the Python
    engines of a host device) or what the task shipped (the client's native builds, whose records name their
    version; a user's runner binary, whose content hash is its version). So the worker applies the plan's rule on
    its side — facts first, else the engine's version for the job's options here, with the task's native builds in
    place — and a difference is refused before anything runs. A label (options.python: by now the interpreter rebuilt
    here from the client's lock) is asked as the client asked it, by that interpreter, which the session then runs."""
    from devicelab.engines import get_engine
    from devicelab.sweep import version_in

    for job in jobs:
        c = job.config
        engine = get_engine(c.engine)
        python = job.options.get("python")
        if python:
            here = version_in(str(python), engine) or ""
        else:
            here = (facts.extra.get("engine_versions") or {}).get(c.engine) or engine.version_for(dict(job.options)) \
                or ""
        if here != c.engine_version:
            name = f"{c.engine} [{c.label}]" if c.label else c.engine
            where = f"in its label environment {python}" if python else f"on worker {c.device}'s host {platform.node()}"
            hint = "" if python else (" (install that version there, or give the label options.python: a label "
                                      "environment travels as its lock)")
            return (f"{name} is version {here or 'not installed'} {where}, the run planned "
                    f"{c.engine_version or 'none'}: nothing of the task ran{hint}")
    return None


def _plugin() -> PhonePlugin:
    from distributed import get_worker

    plugin: PhonePlugin = get_worker().plugins[PLUGIN_NAME]
    return plugin


def run_task(location: str, jobs: list[Job], shipment: Shipment | None = None) -> TaskDone:
    """The farm's task (pickled by reference: every farm host has the same devicelab, checked on connect)."""
    return _plugin().run(location, jobs, shipment)


def publish_phone_facts(dask_worker: Any) -> str | None:
    """This worker's phone's facts published to the store, now (client.run, for a client that finds none stored:
    the phone joined since its last beat); why not when the phone or the store cannot be reached."""
    plugin: PhonePlugin = dask_worker.plugins[PLUGIN_NAME]
    try:
        if plugin.facts is None:  # facts do not change: read once (this runs on the worker's event loop)
            phone = open_device(plugin.entry)
            try:
                plugin.facts = phone.facts()
            finally:
                phone.close()
        plugin.publish_facts()
    except (DevicelabError, OSError) as e:
        return str(e)
    return None


def end_run(run_id: str, dask_worker: Any) -> bool:
    """The run is over (client.run on its workers): close the phone now, undoing what begin_run changed, rather than
    when the next run's first task arrives. True when this worker had it open."""
    plugin: PhonePlugin = dask_worker.plugins[PLUGIN_NAME]
    if plugin._run is not None and plugin._run[0] == run_id and plugin.job is None:
        plugin._close_run()
        return True
    return False


# --------------------------------------------------------------------------------------------------
# The process


async def serve(scheduler: str, serial: str, location: str, beat_s: float, tls: tuple[str, str, str] | None,
                entry: DeviceEntry | None = None) -> None:
    import dask
    from distributed import Worker

    from devicelab.farm.security import security

    # What a task unpickles (its function lives in farm.client, its jobs in session/plan/config): imported now, not
    # while the first task of a run waits (~0.1 s of imports on a small host).
    import devicelab.farm.client  # noqa: F401

    plugin = PhonePlugin(serial, location, beat_s, Spool(spool_path(serial)), entry)
    # distributed always starts an HTTP server next to a worker; with no routes it serves nothing (no metrics, no
    # task names) to whoever reaches its port.
    # distributed's statistical profiler samples the worker's threads every 10 ms: a wake-up this host does not need
    # while its phone is measured, and one that delays the next task on a small host (benchmarks/farm.py).
    dask.config.set({"distributed.worker.http.routes": [], "distributed.worker.profile.enabled": False})
    worker = Worker(scheduler, name=serial, nthreads=1, resources={resource(serial): 1}, security=security(tls),
                    plugins=(plugin,), dashboard=False, host="127.0.0.1" if _loopback(scheduler) else None,
                    protocol="tls" if tls else None)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(worker.close(reason="agent stopped")))
    await worker
    print(f"worker {serial} {worker.address} pid {os.getpid()}", flush=True)
    await worker.finished()


def _loopback(address: str) -> bool:
    return "://127.0.0.1:" in address or "://localhost:" in address


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="devicelab.farm.worker", description="One farm worker for one device.")
    parser.add_argument("--scheduler", required=True)
    parser.add_argument("--serial", required=True, help="the device's id: adb serial, iPhone UDID, host device id")
    parser.add_argument("--kind", default="android", help="its device kind (android, ios, host)")
    parser.add_argument("--options", help="its inventory entry's options on this host (JSON)")
    parser.add_argument("--db", required=True, help="where heartbeats go (a store location, no credentials)")
    parser.add_argument("--beat-seconds", type=float, default=10.0)
    parser.add_argument("--tls-ca")
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    args = parser.parse_args(argv)
    from devicelab.farm.security import tls_options

    tls = tls_options(args.tls_ca, args.tls_cert, args.tls_key)
    try:
        entry = entry_from_args(args.serial, args.kind, args.options)
    except DevicelabError as e:
        parser.error(str(e))
    profiles.use_store(args.db)  # a phone's profile (battery calibration) lives where its Results go
    asyncio.run(serve(args.scheduler, args.serial, args.db, args.beat_seconds, tls, entry))
    return 0


if __name__ == "__main__":
    sys.exit(main())
