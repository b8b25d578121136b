"""The device-kind contract: a transport (docs/devices.md). A kind implements only what differs between a host, a
phone over adb and an iPhone — facts, state, placing files, spawning a pinned program with stdin/stdout, pulling
files back, cleaning up — plus a few hooks. devicelab.session turns a Job into a Result on any transport; nothing
here measures, decides or builds a Result.
"""

from __future__ import annotations

import posixpath
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from devicelab.facts import DeviceEntry, DeviceFacts
from devicelab.measure import LineQueue
from devicelab.result import Transfer

if TYPE_CHECKING:
    from devicelab.energy import EnergySource


# Batch mode's results file, in the run folder (docs/runner-protocol.md, "Without stdin").
BATCH_RESULTS_FILE = "results.jsonl"


class TransportLostError(OSError):
    """The device stopped answering: unplugged, offline, its connection gone. Its configs become infra-failed rows;
    any other OSError from a transport is the device refusing something (a failed row)."""


@dataclass(frozen=True)
class Placed:
    """Files put on the device: their device paths, in the order given, and what it cost."""

    paths: list[str]
    transfer: Transfer


@dataclass(frozen=True)
class Exit:
    """How a spawned program ended. `code` follows the shell: 128 + N when a signal ended it (then `signal` is N, where
    the transport can tell); `lost` says why the device went instead (the program's fate is unknown)."""

    code: int | None
    signal: int | None = None
    lost: str | None = None
    detail: str | None = None  # why `code` is None when nothing was lost (e.g. a shell that printed no status)

    def describe(self) -> str:
        if self.lost:
            return f"the device went away ({self.lost})"
        if self.signal:
            import signal as _signal

            try:
                return f"killed by signal {_signal.Signals(self.signal).name}"
            except ValueError:
                return f"killed by signal {self.signal}"
        if self.code is None:
            return self.detail or "no exit status"
        return f"exit code {self.code}"


@dataclass(frozen=True)
class Start:
    """How a Python runner's process began: `exec` (a fresh interpreter) or `zygote` (forked from a process that had
    imported `preloaded`); `note` says why a lighter path than the engine's full pre-import was taken."""

    path: str = "exec"
    preloaded: tuple[str, ...] = ()
    note: str | None = None
    any_cpus: bool = False  # forked from a zygote that imported unpinned, shared by every CPU set of the engine


@dataclass(frozen=True)
class ResultExtras:
    """What a kind reads in the device's states around one config beyond what every kind has
    (`Transport.result_extras`): Result extensions, notes, and whether the device itself said it was throttling."""

    ext: dict[str, Any] = field(default_factory=dict)  # keys registered in devicelab.result.EXTENSIONS
    notes: tuple[str, ...] = ()
    # The device reported throttling of its own (e.g. Android's thermal status): the row is throttled whatever the
    # pinned cores' frequency caps said.
    throttled: bool = False


# Every stderr byte of a runner up to this is kept in memory (tools print their results on stderr); a Result
# keeps STDERR_TAIL_BYTES of it.
STDERR_KEEP_BYTES = 1 << 20
STDERR_TAIL_BYTES = 4000


class Process(ABC):
    """A program spawned on the device: its stdin, its stdout as lines, its stderr, its exit.

    Subclasses start a reader and call `_line(raw)` for every stdout line, `_stderr(data)` for stderr and `_ended()`
    once the output is over; they implement write, close_stdin, wait and kill."""

    def __init__(self) -> None:
        self._line_queue = LineQueue()
        self._stderr_buffer = bytearray()
        self._stderr_lock = threading.Lock()

    # ---- called by the transport's reader
    def _line(self, raw: bytes) -> None:
        self._line_queue.put(raw.rstrip(b"\r"))

    def _stderr(self, data: bytes) -> None:
        with self._stderr_lock:
            self._stderr_buffer += data
            del self._stderr_buffer[:-STDERR_KEEP_BYTES]

    def _ended(self) -> None:
        self._line_queue.put(None)

    # ---- the session's side
    def read_line(self, deadline: float) -> bytes:
        """The next stdout line; ChannelClosedError at the end of the output, ChannelTimeoutError at the deadline."""
        return self._line_queue.get(deadline)

    def stderr(self) -> str:
        with self._stderr_lock:
            return bytes(self._stderr_buffer).decode(errors="replace")

    def extras(self) -> ResultExtras:
        """What the transport observed of this program while it ran, beyond its output (an iPhone: the QoS class its
        runner reported, its thermal state, its peak physFootprint): added to its row. Called once it has ended."""
        return ResultExtras()

    @abstractmethod
    def write(self, data: bytes) -> None:
        """To the program's stdin; measure.ChannelClosedError when it is closed (the program ended)."""

    @abstractmethod
    def close_stdin(self) -> None: ...

    @abstractmethod
    def wait(self, timeout: float) -> Exit | None:
        """How it ended, or None if it is still running after `timeout` seconds."""

    @abstractmethod
    def kill(self) -> str:
        """End it and everything it started, now; says how (for the reason of a timed-out row)."""


class Transport(ABC):
    """Base of every device kind. One module (or package) per kind, registered in devices/__init__.py; its inventory
    keys are data in devicelab.facts.KINDS. See docs/devices.md for the contract, one method at a time."""

    kind: ClassVar[str]
    # How spawn() pins a program when it is given CPUs (recorded in every Result's protocol.pinning).
    pin_method: ClassVar[str]
    cooldown_poll_seconds: ClassVar[float] = 0.5  # how often cooldown re-reads the temperatures
    # Whether several spawned runners can live at once (A/B lockstep needs it).
    lockstep: ClassVar[bool] = True
    # Whether a Result should say so when devicelab's probe (dlprobe) is not built for this device: then pinning and
    # peak memory come from the transport and the runner alone.
    missing_probe_note: ClassVar[bool] = True
    # Whether clocks ramp up slowly here (phones' governors): then warmup lasts warmup_seconds, steady or not.
    slow_clock_ramp: ClassVar[bool] = False
    # Whether spawn_python() can fork the Python runner from a pre-imported zygote (then dlprobe does not wrap it).
    zygotes: ClassVar[bool] = False
    # Batch mode: the runner gets no commands (an instance attribute where devices.yaml chooses it). The session then
    # puts `iterations` and `results_file` (BATCH_RESULTS_FILE) in the runner's config, and the Process spawn()
    # returns delivers the results file's event lines once the runner has exited (its write() refuses).
    batch: bool = False

    def __init__(self, entry: DeviceEntry) -> None:
        self.entry = entry
        self.id = entry.id
        self.on_event: Callable[[str, dict[str, Any]], None] = lambda kind, data: None

    # ---- what the device is, and how it is now
    @abstractmethod
    def facts(self) -> DeviceFacts:
        """CPUs, clusters, OS, ABI (read once, then cached). DevicelabError when the device cannot be reached."""

    @abstractmethod
    def state(self) -> dict[str, Any]:
        """Temperatures (°C by zone type), frequencies (kHz per CPU), load, battery and charging now, in the shape of
        docs/devices.md; missing sensors are named under "unavailable", never guessed. OSError when unreachable."""

    # ---- files
    @abstractmethod
    def put(self, files: Sequence[tuple[str, Path]]) -> Placed:
        """Local files (name, path) on the device, content-addressed: a file already there is not sent again."""

    @abstractmethod
    def run_folder(self, links: Mapping[str, str]) -> str:
        """A fresh, writable folder on the device holding `links` (relative name → device path from `put`); the
        runner's working folder. Names are relative, without '..' (check with `relative_name`)."""

    @abstractmethod
    def pull(self, path: str, local: Path) -> bool:
        """A device file to the controller; False when it does not exist."""

    @abstractmethod
    def remove(self, folder: str) -> None:
        """Remove a run folder (and nothing outside devicelab's own folder)."""

    # ---- programs
    @abstractmethod
    def spawn(self, argv: Sequence[str], env: Mapping[str, str], cpus: Sequence[int], cwd: str | None) -> Process:
        """Start argv (argv[0] a device path) in `cwd`, with `env` added to the device's environment, pinned to `cpus`
        before it starts (none: unpinned), in its own process group. Nothing reaches a shell unquoted."""

    def spawn_python(self, python: str, module: str, args: Sequence[str], env: Mapping[str, str],
                     cpus: Sequence[int], cwd: str | None, preload: Sequence[str] = (), generation: int = 0,
                     any_cpus: bool = False) -> tuple[Process, Start]:
        """`python -m module args...`, as spawn() would start it. A transport may instead fork it from a zygote that
        has imported `preload` already (the host does: docs/architecture.md), one per `generation` (the repeat
        round), and, with `any_cpus` (the engine's import decides nothing from the CPU set or `env`), one for every
        CPU set; the Start says which path it took. The runner pins itself to its config's CPUs in either case."""
        return self.spawn([python, "-m", module, *args], env, cpus, cwd), Start()

    def malloc_env(self, mmap_threshold: int | None) -> tuple[dict[str, str], dict[str, Any] | None]:
        """What a measured process's environment needs so that its C library's allocator moves large blocks to
        mmap at a fixed size (`mmap_threshold` bytes; None: the library's own rule), and how a Result says what it
        got (`ext.malloc`). Only a C library that reads such a setting from the environment can have it: the host's
        glibc does; phones (bionic) and iPhones do not, and their Results say nothing (None)."""
        return {}, None

    def installed_program(self, name: str) -> str | None:
        """A native program (e.g. "dlbench") that is installed on the device already, as the argv[0] spawn() takes
        for it — an iPhone cannot exec a pushed binary, its runner is an app —, or None: it is pushed from
        devicelab's own build (`native_targets`). Raise OSError when it should be there and is not."""
        return None

    # ---- life cycle
    @abstractmethod
    def clean(self) -> dict[str, Any]:
        """Remove devicelab's folder on the device, and nothing else: {"device", "removed", "bytes"}."""

    def begin_run(self) -> None:
        """Called once per run, after `facts()` and before the first config: set the device up for measuring (e.g.
        Android's fixed performance mode). Raise DevicelabError to refuse the run (nothing has run yet). Whatever it
        changes, `close()` puts back; the sweep closes every device however the run ends (Ctrl-C included)."""

    def close(self) -> None:
        """Release connections, and undo what `begin_run()` changed (best effort: a device that went away cannot be
        set back; say so through `on_event("notice", {"device", "message"})`). It may be called twice: the second
        call has nothing left to undo."""

    # ---- hooks that really differ
    @abstractmethod
    def native_targets(self) -> tuple[str, ...] | str:
        """Which `devicelab build-native` targets run here, best first, or why none does."""

    def cooldown_zones(self, temperatures: dict[str, float]) -> dict[str, float]:
        """The zones cooldown waits on (phones: the CPU zones; the host: every zone it has)."""
        return temperatures

    def energy_source(self) -> EnergySource | str:
        """What measures energy per inference here, or why nothing does."""
        return f"no energy source on {self.kind} devices"

    def profile_key(self) -> str:
        """What devicelab keeps per physical device (profiles) is filed under this key."""
        return self.id

    def timeline_sampler(self, cpus: Sequence[int]) -> Sampler | str:
        """What samples the pinned cores' frequencies and the temperatures while a config is timed, on the
        controller's monotonic clock (a config's timeline, devicelab.opprof.timeline), or why nothing does. Kinds
        whose runners run under dlprobe get its samples instead."""
        return f"no sampler beside the runner on {self.kind} devices"

    def result_extras(self, before: dict[str, Any] | None, after: dict[str, Any] | None) -> ResultExtras:
        """What this kind reads in `state()`s taken around one config (`after` is None when the row has none), for
        the Result: extensions, notes, throttling the device reported. Pure: no device I/O (the row is being made)."""
        return ResultExtras()


class Sampler:
    """Reads frequencies (fast) and temperatures (slow) in a thread of the controller while a config is timed; a
    kind gives the two reading functions. Readings are cheap file reads: the thread sleeps between them."""

    def __init__(self, source: str, read_freq: Callable[[], dict[str, float | None]],
                 read_temps: Callable[[], dict[str, float | None]], fast_s: float = 0.05, slow_s: float = 0.5,
                 avoid: Sequence[int] = ()) -> None:
        self.source, self.fast_s, self.slow_s = source, fast_s, slow_s
        self.avoid = tuple(avoid)  # the runner's CPUs: the thread keeps off them where another CPU is allowed
        self.cpus: list[int] | None = None  # where the thread ran (None: it could not be moved)
        self._read_freq, self._read_temps = read_freq, read_temps
        self.freq_t: list[float] = []
        self.freq: list[dict[str, float | None]] = []
        self.temp_t: list[float] = []
        self.temps: list[dict[str, float | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="devicelab-sampler", daemon=True)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def _loop(self) -> None:
        import os
        import time

        # A thread that wakes 20 times a second must not take the timed runner's core: pin it to the others.
        if self.avoid and hasattr(os, "sched_setaffinity"):
            others = set(os.sched_getaffinity(0)) - set(self.avoid)
            if others:
                os.sched_setaffinity(threading.get_native_id(), others)
                self.cpus = sorted(others)
        next_slow = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            self.freq_t.append(now)
            self.freq.append(self._read_freq())
            if now >= next_slow:
                self.temp_t.append(now)
                self.temps.append(self._read_temps())
                next_slow = now + self.slow_s
            self._stop.wait(self.fast_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5.0)


def relative_name(name: str) -> str:
    """A run folder entry: a relative POSIX path inside the folder (no '..', not absolute, no NUL)."""
    norm = posixpath.normpath(name)
    if not name or "\0" in name or norm.startswith(("/", "..")) or norm == ".":
        raise ValueError(f"{name!r} is not a name inside a run folder")
    return norm


def env_assignments(env: Mapping[str, str]) -> list[str]:
    """Environment variable names as a device shell accepts them (letters, digits, _), checked."""
    import re

    for key in env:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ValueError(f"environment variable name {key!r} is not allowed")
    return [f"{k}={v}" for k, v in env.items()]
