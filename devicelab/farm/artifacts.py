"""What a farm task needs from the client's disk, carried through the run's store by content (sha256) instead of by
path: a worker on another host sees none of the client's files.

The client (`publish`) stores every file a task's jobs name — the suite's model, the model the engine converted (a
file, or a folder such as a Core ML package, carried as a tar), the weights beside it, a user's runner binary and its
libraries — and devicelab's native programs registered on the client (`devicelab build-native`: dlbench, dlprobe),
and hands the task a `Shipment`: each client path's sha256. The worker (`localize`) fetches each into its host's
cache (`<data>/farm/artifacts/<sha256>-<mode>/<name>`), checked by sha256 on arrival, and gives the session the same jobs with
the cached paths in place of the client's; the session itself is unchanged. A label's own Python environment
(`options.python`) travels as its lock (devicelab.farm.envs): the worker's host builds the environment from it and
the jobs get that interpreter."""

from __future__ import annotations

import dataclasses
import fcntl
import os
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devicelab import native, paths
from devicelab.errors import DevicelabError
from devicelab.farm import envs
from devicelab.session import Job
from devicelab.store import Store

# Job options that name files on the client (a user's runner and its libraries, a converted model's weights).
PATH_OPTIONS = ("binary", "libraries", "weights")


@dataclass(frozen=True)
class Shipped:
    sha256: str
    name: str  # the file's (or folder's) own name: runners and engines may look at it (a suffix, a package name)
    folder: bool = False  # a folder, stored as a tar of its files (each file's mode in the tar)
    mode: int = 0o644  # the client file's permission bits: a runner binary arrives executable


@dataclass
class Shipment:
    """What travels with a farm task: client path → its artifact, and the client's native builds by target (each
    artifact's path in the record replaced by its sha256's entry in `files`)."""

    files: dict[str, Shipped] = field(default_factory=dict)
    native: dict[str, dict[str, Any]] = field(default_factory=dict)
    envs: dict[str, Shipped] = field(default_factory=dict)  # a label's interpreter on the client → its lock


def job_paths(job: Job) -> list[Path]:
    """Every client file a job names (an LLM config's F32 reference variant included)."""
    found = [job.source.path, job.prepared.path, *([job.reference.path] if job.reference is not None else [])]
    for options in (job.options, job.prepared.options):
        for key in PATH_OPTIONS:
            value = options.get(key)
            for item in (value if isinstance(value, (list, tuple)) else [value]):
                if isinstance(item, (str, Path)) and str(item):
                    found.append(Path(item))
    return found


def _folder_tar(folder: Path, dest: Path) -> None:
    """A folder as a tar whose bytes depend only on its files' names, modes and contents (no times, no owners): the
    same folder published twice is one artifact."""
    with tarfile.open(dest, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(folder.rglob("*")):
            info = tar.gettarinfo(str(path), arcname=str(path.relative_to(folder)))
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if path.is_file() and not path.is_symlink():
                with path.open("rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)


def put(store: Store, path: Path) -> Shipped:
    """One client file (or folder) in the store."""
    if path.is_dir():
        with tempfile.TemporaryDirectory(prefix="devicelab-ship-") as tmp:
            packed = Path(tmp) / f"{path.name}.tar"
            _folder_tar(path, packed)
            return Shipped(store.put_artifact(packed, f"{path.name}.tar"), path.name, folder=True)
    if not path.is_file():
        raise DevicelabError(f"{path}: a farm task needs this file and it is not on this host")
    return Shipped(store.put_artifact(path), path.name, mode=path.stat().st_mode & 0o777)


def label_locks(pythons: Iterable[str]) -> dict[str, bytes]:
    """The lock of each label interpreter (on this host), as stored. Made before the run is recorded: an interpreter
    that cannot be listed, or an environment that cannot travel (envs.not_portable), is one line (EnvError) and no
    run is left behind without rows."""
    return {python: envs.lock_bytes(envs.lock_of(python)) for python in sorted(set(pythons))}


def put_lock(store: Store, python: str, data: bytes | None = None) -> Shipped:
    """The lock of the label environment `python` (an interpreter on this host) in the store: `data` when the
    client made it already (label_locks), else made now."""
    with tempfile.TemporaryDirectory(prefix="devicelab-lock-") as tmp:
        path = Path(tmp) / envs.LOCK_NAME
        path.write_bytes(data if data is not None else envs.lock_bytes(envs.lock_of(python)))
        return Shipped(store.put_artifact(path, envs.LOCK_NAME), envs.LOCK_NAME)


def publish(store: Store, jobs: Iterable[Job], locks: dict[str, bytes] | None = None) -> Shipment:
    """Store what `jobs` need (content already stored is not written again) and say where it is; a label's lock is
    taken from `locks` when made there."""
    shipment = Shipment()
    locks = locks or {}
    for job in jobs:
        for path in job_paths(job):
            key = str(path)
            if key not in shipment.files:
                shipment.files[key] = put(store, path)
        python = job.options.get("python")
        if python and str(python) not in shipment.envs:
            shipment.envs[str(python)] = put_lock(store, str(python), locks.get(str(python)))
    for target in native.read_registry()["targets"]:
        record = native.registered(target)
        if record is None:  # a build whose files are gone from this host: the worker's own registry decides
            continue
        for artifact in record.artifacts.values():
            if str(artifact.path) not in shipment.files:
                shipment.files[str(artifact.path)] = put(store, artifact.path)
        shipment.native[target] = record.to_dict()
    return shipment


def cache_dir() -> Path:
    return paths.data_dir() / "farm" / "artifacts"


def cached(item: Shipped, cache: Path) -> Path:
    """Where the artifact lives in this host's cache. Keyed by content and mode: the same bytes as a data file and as
    a program are two entries."""
    return cache / (item.sha256 if item.folder else f"{item.sha256}-{item.mode:o}") / item.name


def fetch(store: Store | Callable[[], Store], item: Shipped, cache: Path) -> Path:
    """The artifact in this host's cache (fetched and checked once; a cached entry got there only by a rename after
    its check). One download per host: the workers of a host (one process per phone) that need the same artifact at
    once — a run's first tasks start together on every phone — take turns on a lock file beside it, and those after
    the first find it cached. Without that, N phones on a host would each pull the same model (an LLM's gigabytes) from
    the store at the same time. `store` may be a function that opens it: it is then called only once the lock is held
    and the artifact is still missing, and what it opened is closed after the download, so a worker waiting for
    another's download holds no connection to the store."""
    dest = cached(item, cache)
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Opened for writing: where flock is emulated with fcntl locks (NFS), an exclusive lock needs it. The lock is
    # released when the descriptor closes, or when a worker holding it dies.
    fd = os.open(dest.parent / ".fetching", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if dest.exists():
            return dest
        if not callable(store):
            return _download(store, item, dest)
        opened = store()
        try:
            return _download(opened, item, dest)
        finally:
            opened.close()
    finally:
        os.close(fd)


def _download(store: Store, item: Shipped, dest: Path) -> Path:
    if not item.folder:
        return store.get_artifact(item.sha256, dest, item.mode)
    home = dest.parent
    with tempfile.TemporaryDirectory(prefix=".unpack-", dir=home) as tmp:
        packed = store.get_artifact(item.sha256, Path(tmp) / "folder.tar")
        unpacked = Path(tmp) / "folder"
        with tarfile.open(packed) as tar:
            tar.extractall(unpacked, filter="data")
        os.rename(unpacked, dest)  # under the lock: nobody else of this host unpacks it now
    return dest


def localize(store: Store | Callable[[], Store], jobs: Sequence[Job], shipment: Shipment, cache: Path | None = None
             ) -> tuple[list[Job], dict[str, native.BuildRecord]]:
    """The jobs with every client path replaced by its cached copy on this host, and the client's native builds
    with their cached paths. `store` may be an opener: it is called (and its store closed) for each file not cached
    yet, under that file's lock (`fetch`), so a host whose cache has a task's files runs it while the store is
    unreachable, and a worker waiting for another's download holds no connection. Raises
    DevicelabError (one line) when an artifact is missing from the store or fails its sha256 check on arrival."""
    cache = cache or cache_dir()
    local: dict[str, str] = {}
    pythons: dict[str, str] = {}  # a label's interpreter on the client → the one built here from its lock
    locks: dict[str, tuple[Path, str]] = {}  # the same, for locks whose environment is not built here yet
    for client, item in shipment.files.items():
        local[client] = str(fetch(store, item, cache))
    for client, item in shipment.envs.items():
        built = envs.built(item.sha256)
        if built is not None:
            pythons[client] = str(built)
            continue
        # the lock file, fetched and checked by sha256 on arrival, as every task file
        locks[client] = (fetch(store, item, cache), item.sha256)
    # Built after the files are in (no store open): a build takes minutes, and needs nothing more from the store.
    for client, (lock, sha256) in locks.items():
        pythons[client] = str(envs.ensure(lock.read_bytes(), sha256))

    def here(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return type(value)(here(v) for v in value)
        if isinstance(value, (str, Path)) and str(value) in local:
            return type(value)(local[str(value)]) if isinstance(value, Path) else local[str(value)]
        return value

    def options(opts: dict[str, Any]) -> dict[str, Any]:
        return {k: (here(v) if k in PATH_OPTIONS else pythons.get(str(v), v) if k == "python" else v)
                for k, v in opts.items()}

    out = []
    for job in jobs:
        source = dataclasses.replace(job.source, path=Path(here(job.source.path)))
        prepared = dataclasses.replace(job.prepared, path=Path(here(job.prepared.path)),
                                       options=options(job.prepared.options))
        reference = None if job.reference is None else dataclasses.replace(
            job.reference, path=Path(here(job.reference.path)), options=options(job.reference.options))
        lock = shipment.envs.get(str(job.options.get("python") or ""))
        out.append(dataclasses.replace(job, source=source, prepared=prepared, options=options(job.options),
                                       reference=reference, env_lock=lock.sha256 if lock else job.env_lock))
    builds = {}
    for target, data in shipment.native.items():
        data = {**data, "artifacts": {n: {**a, "path": local[a["path"]]} for n, a in data["artifacts"].items()}}
        builds[target] = native.BuildRecord.from_dict(data)
    return out, builds
