"""`devicelab run --farm`: plan as a local run does, then one Dask task per config (or per lockstep group of A/B
labels) bound to its phone's resource; completions stream back for the progress bar while the workers commit the
Results to the run's store. Also the connect checks and `devicelab farm status`."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import devicelab
from devicelab import rows, sweep
from devicelab.config import ConfigError, Suite, ab_pairs, parse_suite
from devicelab.errors import DevicelabError, unknown_name_message
from devicelab.facts import DeviceFacts
from devicelab.farm import MISSED_BEATS_OFFLINE, artifacts, resource
from devicelab.plan import PlannedConfig, expand
from devicelab.result import INFRA_FAILED, Result, utc_now
from devicelab.session import Job
from devicelab.store import FINISHED, INTERRUPTED, Heartbeat, PlannedRow, ResultConflict, RunRecord, Store

# What must match between this client, the scheduler and every worker: a task is pickled here and run there.
MATCHING = ("devicelab", "dask", "distributed", "cloudpickle", "msgpack")


# --------------------------------------------------------------------------------------------------
# Connecting


def connect(address: str, tls: tuple[str, str, str] | None, timeout: float = 30) -> Any:
    """A Client of the farm, checked: its scheduler never re-runs a task, and every host runs the same devicelab
    (and Dask) as this one. Each refusal is one line."""
    from distributed import Client

    from devicelab.farm.security import security

    try:
        client = Client(address, security=security(tls), timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError) as e:
        raise DevicelabError(f"--farm {address}: cannot connect to the scheduler: {e}") from None
    try:
        check_farm(client, address)
    except BaseException:
        client.close()
        raise
    return client


def _allowed_failures(dask_scheduler: Any) -> int:
    return int(dask_scheduler.allowed_failures)


def check_farm(client: Any, address: str) -> None:
    allowed = client.run_on_scheduler(_allowed_failures)
    if allowed != 0:
        raise DevicelabError(f"--farm {address}: the scheduler re-runs a task up to {allowed} times after its worker "
                             "is lost (distributed.scheduler.allowed-failures); start it with `devicelab farm "
                             "scheduler`, which sets 0")
    problem = version_problem(client.get_versions(packages=["devicelab"]), names=_worker_names(client))
    if problem:
        raise DevicelabError(f"--farm {address}: {problem}: refused")


def _worker_names(client: Any) -> dict[str, str]:
    return {addr: str(w.get("name")) for addr, w in client.scheduler_info(n_workers=-1)["workers"].items()}


def version_problem(versions: dict[str, Any], names: dict[str, str] | None = None) -> str | None:
    """The first host whose devicelab, dask, distributed, cloudpickle, msgpack or Python (major.minor) differs
    from this client's, as one phrase; None when all match. `versions` is distributed's get_versions()."""
    names = names or {}

    def packages(entry: Any) -> dict[str, str]:
        pkgs = dict((entry or {}).get("packages") or {})
        pkgs["python"] = ".".join(str(pkgs.get("python", "")).split(".")[:2])
        return {k: str(v) for k, v in pkgs.items()}

    mine = packages(versions.get("client"))
    hosts = [("the scheduler", versions.get("scheduler"))]
    hosts += [(f"worker {names.get(addr, addr)} ({addr})", v) for addr, v in (versions.get("workers") or {}).items()]
    for who, entry in hosts:
        theirs = packages(entry)
        for pkg in ("python", *MATCHING):
            if pkg == "devicelab" and who == "the scheduler" and theirs.get(pkg) in (None, "None"):
                continue  # a scheduler needs no devicelab beyond the one that started it
            if theirs.get(pkg) != mine.get(pkg):
                return f"{who} runs {pkg} {theirs.get(pkg, 'MISSING')}, this client {mine.get(pkg, 'MISSING')}"
    return None


@dataclass
class FarmPhone:
    serial: str
    address: str
    available: bool  # its worker offers the phone's resource (0 while the phone is offline)


def farm_phones(client: Any) -> dict[str, FarmPhone]:
    """The phones the scheduler knows, by serial (a worker's name)."""
    out: dict[str, FarmPhone] = {}
    for addr, w in client.scheduler_info(n_workers=-1)["workers"].items():
        serial = str(w.get("name"))
        quantity = (w.get("resources") or {}).get(resource(serial))
        if quantity is not None:
            out[serial] = FarmPhone(serial, addr, quantity >= 1)
    return out


def farm_facts(client: Any, store: Store, phones: dict[str, FarmPhone]) -> dict[str, DeviceFacts | str]:
    """Every phone's facts as the store has them (published by its host's agent), by serial: the client plans from
    these alone, whether or not the phone is attached anywhere now. A phone with a worker but nothing stored yet (it
    joined since) is asked to publish now; why it could not, for a phone that has none."""
    from devicelab.farm.worker import publish_phone_facts as publish_on_worker

    stored = store.device_facts()
    problems: dict[str, str] = {}
    missing = [p for serial, p in phones.items() if serial not in stored]
    if missing:
        answers = client.run(publish_on_worker, workers=[p.address for p in missing], on_error="return")
        by_addr = {p.address: p.serial for p in missing}
        problems = {by_addr[a]: (why if isinstance(why, str) else f"{type(why).__name__}: {why}")
                    for a, why in answers.items() if why is not None}
        stored = store.device_facts()
    out: dict[str, DeviceFacts | str] = {d: DeviceFacts.from_dict(f.facts) for d, f in stored.items()}
    out.update({serial: why for serial, why in problems.items() if serial not in out})
    return out


# --------------------------------------------------------------------------------------------------
# Planning on the farm


def select_farm_devices(suite: Suite, facts: dict[str, DeviceFacts | str], source: str,
                        present: set[str] | None = None) -> Suite:
    """The suite's devices among the farm's phones with stored facts (when it names none: those of them whose worker
    is `present` now): one ConfigError naming every device that is not there."""
    usable = {serial: f for serial, f in facts.items() if isinstance(f, DeviceFacts)}
    if suite.devices is None:
        here = sorted(d for d in usable if present is None or d in present)
        if not here:
            raise DevicelabError(f"the farm has no reachable phone ({len(present or ())} workers)")
        return dataclasses.replace(suite, devices=tuple(here))
    problems = []
    for i, name in enumerate(suite.devices):
        if name not in usable:
            why = f" ({facts[name]})" if isinstance(facts.get(name), str) else ""
            problems.append(f"devices[{i}]: " + unknown_name_message("farm phone", name, sorted(usable)) + why)
    if problems:
        raise ConfigError(source, problems)
    return suite


@dataclass
class Task:
    device: str
    planned: list[PlannedConfig]
    jobs: list[Job]
    future: Any = None
    submitted_at: float | None = None
    submitted_wall: float | None = None  # time.time(), comparable with the worker's clock on one host
    unprepared: list[Result] = field(default_factory=list)  # rows of members whose model was not prepared
    released: bool = False  # its round may run: submitted once its phone is available

    @property
    def round(self) -> int:
        return self.planned[0].config.repeat


@dataclass(frozen=True)
class TaskTiming:
    """One finished task's wall-clock times (time.time(), seconds): submitted by this client, reaching its worker,
    its device session starting and ending, its rows committed (or spooled) by the worker, and its completion seen
    here. On one host the clocks are one; across hosts the worker's times are on the worker's clock."""

    device: str
    jobs: int
    submitted: float
    received: float
    session_start: float
    session_end: float
    committed: float
    returned: float


@dataclass
class FarmRun:
    """One run on the farm, from plan to the last row."""

    client: Any
    store: Store
    run_id: str
    prepared: sweep.Prepared
    wait_s: float  # how long work waits for a phone that is offline or has no worker, before its rows are infra-failed
    progress: Callable[[str, Any], None] = lambda kind, obj: None
    poll_s: float = 0.1  # a completion waits up to this long to be seen (the run's wall grows by as much)
    location: str = ""
    timings: list[TaskTiming] = field(default_factory=list)  # per finished task, in the order they completed
    _unavailable: dict[str, float] = field(default_factory=dict)
    _store_away: float | None = None  # since when the store could not be read for an adaptive round's decision
    _before: dict[str, str | None] = field(default_factory=dict)  # infra-failed rows before this execution
    shipment: artifacts.Shipment = field(default_factory=lambda: artifacts.Shipment())
    spool: Any = None  # the client's own spool (farm.worker.Spool); made from the store when not given
    locks: dict[str, bytes] = field(default_factory=dict)  # label interpreter → its lock, made before the record

    def __post_init__(self) -> None:
        if self.spool is None:
            self.spool = client_spool(self.store)

    def execute(self, skip: set[str] | frozenset[str] = frozenset()) -> None:
        """Every planned config not in `skip`, each (or each lockstep group of A/B labels) a task on its phone. A
        suite with adaptive A/B rounds (`repeats: {min, max}`) runs its first `min` rounds at once, then one round
        at a time while sweep.ab_decision (the local run's stopping rule) says the rounds so far leave a pair
        undecided: the rounds after the decision are never submitted and stay planned, without rows, as in a local
        run."""
        from distributed import as_completed

        todo = [pc for pc in self.prepared.planned if pc.config.identity_key() not in skip]
        self._before = {r.config.identity_key(): r.started_at for r in self.store.results(self.run_id)
                        if r.status == INFRA_FAILED}
        self.progress("planned", sum(pc.runnable for pc in todo))
        executor = sweep.Executor(self.store, self.run_id, self.prepared)  # its model conversions, as a local run
        from devicelab.devices import transport_class

        kinds = {d: str(f.get("kind", "android")) for d, f in self.prepared.facts.items()}
        groups = sweep.lockstep_groups(todo, self.prepared.suite, lambda d: transport_class(kinds[d]).lockstep)
        tasks: list[Task] = []
        seen: set[str] = set()
        for pc in todo:
            key = pc.config.identity_key()
            if key in seen:
                continue
            if not pc.runnable:
                seen.add(key)
                self._commit(rows.unsupported(self.run_id, pc.config, str(pc.unsupported)))
                continue
            group = groups.get(key, [pc])
            seen.update(m.config.identity_key() for m in group)
            task = Task(pc.config.device, group, [])
            for member in group:
                made = executor._job(member)  # conversion happens here, once per (engine, model, precision)
                if isinstance(made, str):  # written when its round runs (a round never run has no rows)
                    task.unprepared.append(rows.not_prepared(self.run_id, member.config, made))
                else:
                    task.jobs.append(made)
            tasks.append(task)
        adaptive = self.prepared.suite.min_repeats
        # Adaptive rounds: no pair can be decided before `min` rounds, so those go at once (the phones never wait
        # between them); each later round goes alone, once the rounds before it are in the store and undecided. One
        # round at a time (not a batch ahead) keeps a farm night's rounds those of a local night — the decision
        # stops it before the next round, never after it — at the cost of a phone idle while a round's slowest
        # phone finishes and the store is read.
        later = sorted({t.round for t in tasks if adaptive and t.round >= adaptive})
        pairs = ab_pairs(self.prepared.suite.engines)
        broken: dict[str, str] = {}  # A/B engines whose later rounds are not submitted, and why (as a local run)
        ran: set[int] = set()  # rounds run since the last look at the store
        finished = False
        ac = as_completed([], with_results=False, loop=self.client.loop)
        try:
            # What the tasks need from this host's disk goes to the store before any task is submitted: a worker on
            # another host fetches it by sha256 (devicelab.farm.artifacts). Inside the try: should it fail, the run
            # still gets its end status.
            self.shipment = artifacts.publish(self.store, [j for t in tasks for j in t.jobs], self.locks)
            levels = sweep.ack_levels(self.store, self.run_id, self.prepared.suite)
            self._release([t for t in tasks if t.round not in later], ran)
            while True:
                self._submit_ready(tasks, ac)
                for future in ac.next_batch(block=False) if ac.has_ready() else []:
                    self._finished(next(t for t in tasks if t.future is future))
                if all(t.future is not None and t.future.done() for t in tasks if t.released) \
                        and not ac.has_ready() and ac.is_empty():
                    if not later:
                        break
                    decided = self._decided(later[0], pairs, broken, levels, ran)
                    if decided:
                        break
                    if decided is False:  # None: the store cannot be read now; asked again after the next poll
                        r = later.pop(0)
                        self._release([t for t in tasks if t.round == r and t.planned[0].config.engine not in broken],
                                      ran)
                        continue
                self.spool.flush()  # rows this client kept while the store was unreachable: written once it is back
                time.sleep(self.poll_s)
            finished = True
        finally:
            if not finished:
                for t in tasks:
                    if t.future is not None and not t.future.done():
                        t.future.cancel()
            self._end_run({t.device for t in tasks})
            self.record_end(FINISHED if finished else INTERRUPTED)

    def _release(self, tasks: list[Task], ran: set[int]) -> None:
        """Let these tasks run: their rows of models not prepared written now, the others submitted once their phone
        is available (`_submit_ready`)."""
        for t in tasks:
            t.released = True
            ran.add(t.round)
            for result in t.unprepared:
                self._commit(result)
            if not t.jobs:
                t.future = _Done()

    def _decided(self, round_: int, pairs: list[tuple[str, str, str]], broken: dict[str, str],
                 levels: dict[str, float | None], ran: set[int]) -> bool | None:
        """Before adaptive round `round_`: the A/B engines that had no ok process in a round that ran (their later
        rounds are not submitted), then whether every pair is decided (sweep.ab_decision). None while the store
        cannot be read, or this client still keeps rows in its spool (the decision waits for them), up to wait_s."""
        try:
            if self.spool.flush():
                raise DevicelabError(f"rows of the run wait in {self.spool.path}")  # the decision needs them
            for q in sorted(ran | {round_ - 1}):  # as a local run looks before each round, for each one that ran
                for engine, why in sweep.ab_without_ok(self.store, self.run_id, pairs, q).items():
                    if engine not in broken:  # more rounds of it would fail the same way; the others go on
                        broken[engine] = why
                        self.progress("ab", {"rounds": q + 1, "decided": False, "stopped": why, "verdicts": {}})
            ran.clear()
            decision = sweep.ab_decision(self.store, self.run_id, pairs, round_, set(broken), levels)
        except (LookupError, TypeError, AttributeError, AssertionError, ResultConflict):
            raise  # a defect, not an unreachable store: never waited out and reported as one
        except Exception as e:  # noqa: BLE001 - the store is unreachable (a server down, a connection cut): wait
            if self._store_away is None:
                self._store_away = time.monotonic()
            if time.monotonic() - self._store_away < self.wait_s:
                return None
            raise DevicelabError(f"run {self.run_id}: the store was unreachable for {self.wait_s:g} s before round "
                                 f"{round_ + 1} ({e}); `devicelab run --resume {self.run_id} --farm ADDRESS` goes on "
                                 "from there") from None
        self._store_away = None
        self.progress("ab", decision)
        return bool(decision["decided"])

    def record_end(self, status: str) -> None:
        """The run's status, once every row this client kept is written; a store still unreachable now stops the
        client in one line (its rows stay in the spool, written by this host's next farm run)."""
        waiting = self.spool.flush()
        try:
            if waiting:
                raise DevicelabError(f"{waiting} rows wait")
            self.store.set_run_status(self.run_id, status)
        except Exception as e:  # noqa: BLE001 - whatever keeps the store away, the message is the same
            raise DevicelabError(
                f"run {self.run_id}: the store {self.store.location} is unreachable at the end of the run ({e}); "
                f"rows this client could not write wait in {self.spool.path} and are written by this host's next "
                f"`devicelab run --farm`; then `devicelab run --resume {self.run_id} --farm ADDRESS` finishes it"
            ) from None

    def _end_run(self, devices: set[str]) -> None:
        """Each phone of the run closed by its worker (its begin_run undone); a worker that is gone has nothing to
        close, and one that does not answer closes it at its next run or when it stops."""
        from devicelab.farm.worker import end_run

        workers = [p.address for d, p in farm_phones(self.client).items() if d in devices]
        if workers:
            try:
                self.client.run(end_run, self.run_id, workers=workers, on_error="return")
            except Exception:  # noqa: BLE001 - best effort, as a local run's close of a phone that went away
                pass

    def _submit_ready(self, tasks: list[Task], ac: Any) -> None:
        """Submit the work of every phone that is available now; a phone unavailable for longer than wait_s gets its
        waiting work (not submitted, or submitted and not started) as infra-failed rows, its futures cancelled."""
        pending = [t for t in tasks if t.released and (t.future is None or not t.future.done())]
        if not pending:
            return
        phones = farm_phones(self.client)
        now = time.monotonic()
        for device in {t.device for t in pending}:
            phone = phones.get(device)
            if phone is not None and phone.available:
                self._unavailable.pop(device, None)
                for t in pending:
                    if t.device == device and t.future is None:
                        t.future = self.client.submit(
                            _run_task, self.location, t.jobs, self._shipment_of(t), resources={resource(device): 1},
                            pure=False,
                            key=f"devicelab-{self.run_id}-{t.jobs[0].config.identity_key()}")
                        t.submitted_at, t.submitted_wall = now, time.time()
                        ac.add(t.future)
                continue
            since = self._unavailable.setdefault(device, now)
            if now - since < self.wait_s:
                continue
            why = ("no farm worker" if phone is None else "offline (missed heartbeats; its resource is 0)")
            for t in pending:
                if t.device != device:
                    continue
                if t.future is None:
                    self._write_lost(t, f"{why} for {self.wait_s:g} s: never started (devicelab run --resume runs it)")
                    t.future = _Done()
                elif not t.future.done():
                    t.future.cancel()
                    self._write_lost(t, f"{why} for {self.wait_s:g} s: not started on it (devicelab run --resume "
                                        "runs it)")

    def _shipment_of(self, t: Task) -> artifacts.Shipment:
        """The part of the run's shipment this task's jobs name (their files, their labels' environment locks), and
        the native builds (a task carries no more)."""
        wanted = {str(p) for j in t.jobs for p in artifacts.job_paths(j)}
        wanted |= {a["path"] for build in self.shipment.native.values() for a in build["artifacts"].values()}
        pythons = {str(j.options.get("python")) for j in t.jobs if j.options.get("python")}
        return artifacts.Shipment({k: v for k, v in self.shipment.files.items() if k in wanted}, self.shipment.native,
                                  {k: v for k, v in self.shipment.envs.items() if k in pythons})

    def _finished(self, t: Task) -> None:
        status = t.future.status
        if status == "finished":
            done = t.future.result()
            assert t.submitted_wall is not None
            self.timings.append(TaskTiming(t.device, len(t.jobs), t.submitted_wall, done.received_at,
                                           done.session_start, done.session_end, done.committed_at, time.time()))
            for result, committed in done.rows:
                if not committed:
                    # The worker could not reach the store and keeps the row in its spool; the client writes it too
                    # (a write of the same row is a no-op), or keeps it in its own spool: an adaptive decision waits
                    # for this client's spool, so it never reads a round without this row (the worker's spool is
                    # flushed only at its next beat).
                    self.progress("notice", {"device": t.device, "message": f"{result.status} row spooled on the "
                                                                             "worker's host: the store was unreachable"})
                    self._commit(result)  # says "result" itself
                    continue
                self.progress("result", result)
            return
        if status == "cancelled":
            return  # its rows were written when it was given up
        exc = t.future.exception()
        from distributed.scheduler import KilledWorker

        if isinstance(exc, KilledWorker):
            why = ("its farm worker was lost while the task was on it (allowed-failures 0: no re-run; devicelab run "
                   "--resume runs it)")
        else:
            why = f"farm task failed: {type(exc).__name__}: {exc}"
        self._write_lost(t, why)

    def _write_lost(self, t: Task, why: str) -> None:
        """infra-failed rows for the configs of `t` that got no row in this execution (its worker may have
        committed some before it was lost; an infra-failed row of an earlier attempt is replaced)."""
        try:
            stored = {r.config.identity_key(): r.started_at for r in self.store.results(self.run_id)}
        except Exception:  # noqa: BLE001 - the store is unreachable: the rows go to the spool, where a stored ok row
            stored = {}   # of the same config refuses them (kept aside, never replacing it)
        for job in t.jobs:
            key = job.config.identity_key()
            if key not in stored or stored[key] == self._before.get(key):
                self._commit(rows.device_gone(self.run_id, job.config, why))

    def _commit(self, result: Result) -> None:
        """A row this client makes (unsupported, not converted, infra-failed), written to the store or, while the
        store is unreachable, kept in this client's spool (written before any later row of the spool's)."""
        try:
            if self.spool.pending():
                raise DevicelabError("earlier rows wait in the spool")  # keep their order
            self.store.add_result(result)
        except ResultConflict:
            raise
        except Exception:  # noqa: BLE001 - unreachable (a server down, a connection cut): the spool keeps it
            if not self.spool.write(self.location, result):
                self.progress("notice", {"device": result.device, "message": f"{result.status} row kept in "
                                                                             f"{self.spool.path}: the store was "
                                                                             "unreachable"})
        self.progress("result", result)


class _Borrowed:
    """The client's open store lent to its spool, whose writes close the store they opened: closing this does not
    close it (its connection reopens itself when the server cut it)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def close(self) -> None:
        pass


def client_spool_path(location: str) -> Any:
    """This host's spool for the rows a farm client makes itself for the store at `location` (one file per store,
    under devicelab's data folder: a row for one store never waits behind a row for another)."""
    import hashlib

    from devicelab import paths

    return paths.data_dir() / "farm" / f"client-spool-{hashlib.sha256(location.encode()).hexdigest()[:16]}.jsonl"


def client_spool(store: Store) -> Any:
    """The client's spool for its store, writing through the client's own store object (its connection reaches the
    store as the client did, credentials included, and reopens itself after a cut)."""
    from devicelab.farm.worker import Spool

    return Spool(client_spool_path(store_location(store)), lambda _location: cast(Store, _Borrowed(store)))


class _Done:
    """A finished stand-in for a task that was never submitted (its rows are written)."""

    status = "cancelled"

    def done(self) -> bool:
        return True


def _run_task(location: str, jobs: list[Job], shipment: artifacts.Shipment) -> Any:
    from devicelab.farm.worker import run_task

    return run_task(location, jobs, shipment)


def store_location(store: Store) -> str:
    """What a worker is told: the store's location without credentials — a PostgreSQL URL without its password
    (each host has its own libpq password file or service), a SQLite path made absolute."""
    from urllib.parse import urlsplit, urlunsplit

    from devicelab.store import is_postgres_url

    location = store.location
    if not is_postgres_url(location):
        return os.path.abspath(location)
    parts = urlsplit(location)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        netloc = f"{user}@{host}" if user else host
    query = "&".join(q for q in parts.query.split("&") if q and not q.lower().startswith("password="))
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def prepare_farm(client: Any, store: Store, suite: Suite, source: str, seed: int,
                 stored: list[PlannedConfig] | None = None, skip: set[str] | frozenset[str] = frozenset()
                 ) -> sweep.Prepared:
    """As sweep.prepare, with the farm's phones (their facts as stored by their agents) for devices: the plan made,
    or a run's `stored` plan checked against what the farm and this client have for the configs still to run."""
    phones = farm_phones(client)
    facts = farm_facts(client, store, phones)
    suite = select_farm_devices(suite, facts, source, set(phones))
    chosen = [f for d in suite.devices or () if isinstance(f := facts[d], DeviceFacts)]
    models = sweep.resolve_models(suite)
    engines = {(spec.name, spec.label): sweep.engine_info(spec, []) for spec in suite.engines}
    if stored is None:
        planned = expand(suite, chosen, engines, models, seed)
    else:
        planned = stored
        mismatch = sweep.replan_problems([pc for pc in stored if pc.config.identity_key() not in skip],
                                         {f.id: f for f in chosen}, engines, models)
        if mismatch:
            raise DevicelabError(mismatch[0] + (f" (and {len(mismatch) - 1} more)" if len(mismatch) > 1 else ""))
    return sweep.Prepared(suite, seed, {}, models, engines, planned, {f.id: f.to_dict() for f in chosen})


def start_farm_run(client: Any, store: Store, raw: dict[str, Any], source: str, argv: list[str], wait_s: float,
                   progress: Callable[[str, Any], None]) -> FarmRun:
    """Plan the run, store it with its plan, and execute it on the farm; the FarmRun (its run id, its tasks'
    timings) once every row is in."""
    import secrets

    client_spool(store).flush()  # rows an earlier run on this host could not write
    suite = parse_suite(raw, source)
    seed = suite.seed if suite.seed is not None else secrets.randbelow(2**31)
    prepared = prepare_farm(client, store, suite, source, seed)
    locks = artifacts.label_locks(label_pythons(prepared.planned))  # refused in one line before anything is recorded
    run_id = sweep.new_run_id()
    # Each label environment's lock by its sha256, recorded with the plan (each row of such a label is born with the
    # lock it ran in: ext.label_env_lock, from the worker's Job).
    env_locks = {python: hashlib.sha256(data).hexdigest() for python, data in locks.items()}
    store.create_run(RunRecord(run_id, utc_now(), prepared.suite.to_dict(), seed,
                               {**sweep.host_facts(), "devices": prepared.facts, "farm": client.scheduler.address,
                                **({"label_env_locks": env_locks} if env_locks else {})},
                               devicelab.__version__, sweep.git_state(), argv),
                     [PlannedRow(pc.config, pc.engine_options, pc.unsupported) for pc in prepared.planned])
    progress("run", run_id)
    farm_run = FarmRun(client, store, run_id, prepared, wait_s, progress, location=store_location(store), locks=locks)
    farm_run.execute()
    return farm_run


def label_pythons(planned: list[PlannedConfig], skip: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """The label interpreters (options.python) of the configs that will run: the ones whose locks the run needs."""
    return sorted({str(pc.engine_options["python"]) for pc in planned
                   if pc.runnable and pc.engine_options.get("python") and pc.config.identity_key() not in skip})


def resume_farm_run(client: Any, store: Store, run_id: str, wait_s: float, progress: Callable[[str, Any], None]
                    ) -> None:
    client_spool(store).flush()  # rows this host could not write are written before --resume decides what is left
    record = store.get_run(run_id)
    suite = parse_suite(record.suite, f"run {run_id}")
    stored = [PlannedConfig(r.config, r.engine_options, r.unsupported) for r in store.planned(run_id)]
    done = store.done_keys(run_id)
    prepared = prepare_farm(client, store, suite, f"run {run_id}", record.seed, stored or None, done)
    locks = artifacts.label_locks(label_pythons(prepared.planned, done))  # before the run is marked running again
    store.set_run_status(run_id, "running")
    FarmRun(client, store, run_id, prepared, wait_s, progress, location=store_location(store), locks=locks).execute(
        skip=store.done_keys(run_id))


# --------------------------------------------------------------------------------------------------
# Status


def phone_state(beat: Heartbeat, now: datetime) -> str:
    """offline after MISSED_BEATS_OFFLINE missed beats: unreachable that many times in a row, or no beat for that
    many intervals (its worker or agent is gone); else unreachable, busy or idle."""
    age = (now - datetime.fromisoformat(beat.at)).total_seconds()
    if beat.missed >= MISSED_BEATS_OFFLINE or age > MISSED_BEATS_OFFLINE * beat.interval_s:
        return "offline"
    if not beat.reachable:
        return "unreachable"
    return "busy" if beat.job else "idle"
