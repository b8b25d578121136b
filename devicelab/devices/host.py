"""The host machine as a transport: its files are the controller's (nothing is copied), a runner is a local
subprocess in its own process group, pinned before exec, and /sys gives temperatures and frequencies."""

from __future__ import annotations

import glob
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devicelab.devices.base import Exit, Placed, Process, Sampler, Start, Transport, relative_name
from devicelab.errors import DevicelabError
from devicelab.facts import Cluster, DeviceEntry, DeviceFacts
from devicelab.measure import ChannelClosedError
from devicelab.result import Transfer, utc_now


if TYPE_CHECKING:
    from devicelab.devices.zygote import ZygotePool

# Environment variables that are search paths: spawn puts devicelab's entries in front of the user's own.
SEARCH_PATHS = ("LD_LIBRARY_PATH", "PYTHONPATH")


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def glibc_version() -> str | None:
    """'glibc 2.36' when this process runs on glibc (whose tunables a child reads from GLIBC_TUNABLES), else None."""
    try:
        version = os.confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError, AttributeError):  # not glibc (musl, macOS), or no confstr
        return None
    return version if version and version.startswith("glibc") else None


MMAP_THRESHOLD_TUNABLE = "glibc.malloc.mmap_threshold"
# Settings of the user's environment that also stop glibc from moving its threshold (malloc.c: each sets
# no_dyn_threshold), as tunables and as the older variables every glibc reads.
THRESHOLD_FIXERS = ("glibc.malloc.trim_threshold", "glibc.malloc.top_pad", "glibc.malloc.mmap_max")
MALLOC_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")


def _glibc_has_tunables(libc: str) -> bool:
    """GLIBC_TUNABLES is read from glibc 2.26 on (before, only the MALLOC_*_ variables)."""
    try:
        major, minor = (int(x) for x in libc.split()[1].split(".")[:2])
    except (IndexError, ValueError):
        return False
    return (major, minor) >= (2, 26)


def _read_int(path: str) -> int | None:
    text = _read(path)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


class HostProcess(Process):
    """A local subprocess: stdout lines and stderr read by threads (a silent runner is timed out, never waited on)."""

    def __init__(self, argv: Sequence[str], env: dict[str, str], cpus: Sequence[int], cwd: str | None) -> None:
        super().__init__()
        pin = (lambda: os.sched_setaffinity(0, list(cpus))) if cpus and hasattr(os, "sched_setaffinity") else None
        self._proc = subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, env=env, cwd=cwd, start_new_session=True,
                                      preexec_fn=pin)
        threading.Thread(target=self._pump_out, daemon=True).start()
        threading.Thread(target=self._pump_err, daemon=True).start()

    def _pump_out(self) -> None:
        assert self._proc.stdout is not None
        for raw in self._proc.stdout:
            self._line(raw.rstrip(b"\n"))
        self._ended()

    def _pump_err(self) -> None:
        assert self._proc.stderr is not None
        for chunk in iter(lambda: self._proc.stderr.read1(65536), b""):  # type: ignore[union-attr]
            self._stderr(chunk)

    def write(self, data: bytes) -> None:
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(data)
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise ChannelClosedError("runner closed its input") from None

    def close_stdin(self) -> None:
        if self._proc.stdin and not self._proc.stdin.closed:
            try:
                self._proc.stdin.close()
            except OSError:
                pass

    def wait(self, timeout: float) -> Exit | None:
        try:
            code = self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        return Exit(128 - code, -code) if code < 0 else Exit(code)

    def kill(self) -> str:
        try:
            os.killpg(self._proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._proc.wait()
        return "its process group was killed"


class HostTransport(Transport):
    kind = "host"
    pin_method = "sched_setaffinity before exec"
    # On the host the runner reports its own VmHWM, and dlprobe only cross-checks it: no note per row without it.
    missing_probe_note = False
    # The interpreter that runs devicelab's Python runner here (the host shares the controller's files).
    python = sys.executable
    zygotes = True

    def __init__(self, entry: DeviceEntry) -> None:
        super().__init__(entry)
        self._pool: ZygotePool | None = None  # the zygotes, started when a Python runner first needs one
        self._uniform: bool | None = None  # _one_kind_of_cpu, read once

    def facts(self) -> DeviceFacts:
        cpu_ids = tuple(sorted(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity") else tuple(
            range(os.cpu_count() or 1))
        groups: dict[tuple[int | None, int | None], list[int]] = {}
        for cpu in cpu_ids:
            base = f"/sys/devices/system/cpu/cpu{cpu}"
            key = (_read_int(f"{base}/cpu_capacity"), _read_int(f"{base}/cpufreq/cpuinfo_max_freq"))
            groups.setdefault(key, []).append(cpu)
        clusters = tuple(Cluster(tuple(c), cap, khz) for (cap, khz), c in sorted(
            groups.items(), key=lambda kv: ((kv[0][0] or 0), (kv[0][1] or 0))))
        model = platform.processor() or platform.machine()
        for line in (_read("/proc/cpuinfo") or "").splitlines():
            if line.startswith(("model name", "Model", "Hardware")):
                model = line.split(":", 1)[1].strip()
                break
        os_name = f"{platform.system()} {platform.release()}"
        for line in (_read("/etc/os-release") or "").splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name += f" ({line.split('=', 1)[1].strip(chr(34))})"
        mem = None
        for line in (_read("/proc/meminfo") or "").splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
        return DeviceFacts(id=self.id, kind=self.kind, model=model, os=os_name, abi=platform.machine(),
                           cpu_ids=cpu_ids, clusters=clusters, memory_bytes=mem,
                           extra={"python": platform.python_version(), "hostname": platform.node()})

    def state(self) -> dict[str, Any]:
        temps: dict[str, float] = {}
        for zone in sorted(glob.glob("/sys/class/thermal/thermal_zone*")):
            kind, milli = _read(f"{zone}/type"), _read_int(f"{zone}/temp")
            if kind and milli is not None:
                temps[kind if kind not in temps else f"{kind}:{Path(zone).name}"] = milli / 1000.0
        freqs: dict[str, dict[str, Any]] = {}
        for cpu in range(os.cpu_count() or 1):
            base = f"/sys/devices/system/cpu/cpu{cpu}/cpufreq"
            cur = _read_int(f"{base}/scaling_cur_freq")
            if cur is not None:
                freqs[str(cpu)] = {"cur_khz": cur, "max_khz": _read_int(f"{base}/scaling_max_freq"),
                                   "hw_max_khz": _read_int(f"{base}/cpuinfo_max_freq"),
                                   "governor": _read(f"{base}/scaling_governor")}
        power: dict[str, Any] = {}
        for supply in sorted(glob.glob("/sys/class/power_supply/*")):
            ptype = _read(f"{supply}/type")
            if ptype == "Mains":
                power["ac_online"] = _read_int(f"{supply}/online") == 1
            elif ptype == "Battery":
                power["battery_percent"] = _read_int(f"{supply}/capacity")
                power["battery_status"] = _read(f"{supply}/status")
        unavailable = [name for name, got in (("temperatures", temps), ("frequencies", freqs)) if not got]
        state: dict[str, Any] = {"at": utc_now(), "temperatures_c": temps, "cpufreq": freqs,
                                 "loadavg": list(os.getloadavg()),
                                 "charging": power.get("battery_status") == "Charging" if power else None,
                                 "power": power or None}
        if unavailable:
            state["unavailable"] = [f"{u}: no sensor readable in /sys on this host" for u in unavailable]
        return state

    def timeline_sampler(self, cpus: Sequence[int]) -> Sampler | str:
        """The pinned cores' scaling_cur_freq every 50 ms and every thermal zone every 0.5 s, read by the controller
        (a forked runner is not under dlprobe); why not when /sys has neither (a VM usually has no cpufreq)."""
        freq = {str(c): f"/sys/devices/system/cpu/cpu{c}/cpufreq/scaling_cur_freq"
                for c in cpus or range(os.cpu_count() or 1)}
        freq = {c: p for c, p in freq.items() if os.path.exists(p)}
        zones: dict[str, str] = {}
        for zone in sorted(glob.glob("/sys/class/thermal/thermal_zone*")):
            kind = _read(f"{zone}/type")
            if kind and os.path.exists(f"{zone}/temp"):
                zones[kind if kind not in zones else f"{kind}:{Path(zone).name}"] = f"{zone}/temp"
        if not freq and not zones:
            return ("the host has neither /sys/devices/system/cpu/cpu*/cpufreq for the pinned cores nor "
                    "/sys/class/thermal zones")

        def read_freq() -> dict[str, float | None]:
            return {c: (float(v) if (v := _read_int(p)) is not None else None) for c, p in freq.items()}

        def read_temps() -> dict[str, float | None]:
            return {z: (v / 1000.0 if (v := _read_int(p)) is not None else None) for z, p in zones.items()}

        return Sampler("the host's /sys, read by the controller (frequencies every 50 ms, temperatures every 0.5 s)",
                       read_freq, read_temps, avoid=tuple(cpus))

    # ---- files: the host's are the controller's; a run folder is a temporary folder of links

    def put(self, files: Sequence[tuple[str, Path]]) -> Placed:
        # Nothing is placed: the files are used where they are (an empty Transfer says so).
        return Placed([str(Path(local).resolve()) for _, local in files], Transfer())

    def run_folder(self, links: Mapping[str, str]) -> str:
        folder = Path(tempfile.mkdtemp(prefix="devicelab-run-"))
        try:
            for name, target in links.items():
                dest = folder / relative_name(name)
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.symlink_to(target)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)  # half a folder is nobody's: the caller never learns its name
            raise
        return str(folder)

    def pull(self, path: str, local: Path) -> bool:
        if not os.path.isfile(path):
            return False
        shutil.copyfile(path, local)
        return True

    def remove(self, folder: str) -> None:
        if Path(folder).name.startswith("devicelab-run-"):  # only what run_folder made
            shutil.rmtree(folder, ignore_errors=True)

    @staticmethod
    def _environment(env: Mapping[str, str]) -> dict[str, str]:
        merged = {**os.environ, **env}
        for key in SEARCH_PATHS:  # ours first, then the user's own (a runner's libraries may need theirs too)
            if key in env and os.environ.get(key):
                merged[key] = f"{env[key]}{os.pathsep}{os.environ[key]}"
        return merged

    def malloc_env(self, mmap_threshold: int | None) -> tuple[dict[str, str], dict[str, Any] | None]:
        libc = glibc_version()
        if libc is None:
            return {}, None
        environ = os.environ.get("GLIBC_TUNABLES", "")
        rule: int | str = "dynamic" if mmap_threshold is None else mmap_threshold
        # What else in the user's environment sets the allocator is kept, and said: it changes how much freed memory
        # stays resident, and a top_pad of theirs fixes the threshold that "dynamic" leaves to glibc.
        also = [f"{k}={os.environ[k]}" for k in MALLOC_VARIABLES if k in os.environ]
        if not _glibc_has_tunables(libc):
            # No tunables before glibc 2.26: its older variable instead, which replaces the user's own.
            if mmap_threshold is not None:
                also = [a for a in also if not a.startswith("MALLOC_MMAP_THRESHOLD_=")]
            record: dict[str, Any] = {"libc": libc, "mmap_threshold": rule, "tunables": None, **({"also": also}
                                                                                                  if also else {})}
            return ({} if mmap_threshold is None else {"MALLOC_MMAP_THRESHOLD_": str(mmap_threshold)}), record
        # The suite's setting decides: a threshold in the user's own GLIBC_TUNABLES is replaced, their other tunables
        # are kept (devicelab's comes last; glibc takes the last value of a tunable it reads twice).
        theirs = [t for t in environ.split(":") if t and not t.startswith(MMAP_THRESHOLD_TUNABLE + "=")]
        ours = [] if mmap_threshold is None else [f"{MMAP_THRESHOLD_TUNABLE}={mmap_threshold}"]
        tunables = ":".join(theirs + ours)
        record = {"libc": libc, "mmap_threshold": rule, "tunables": tunables or None}
        also = [t for t in theirs if t.split("=")[0] in THRESHOLD_FIXERS] + also
        if also:
            record["also"] = also
        return ({} if tunables == environ else {"GLIBC_TUNABLES": tunables}), record

    def spawn(self, argv: Sequence[str], env: Mapping[str, str], cpus: Sequence[int], cwd: str | None) -> Process:
        return HostProcess(argv, self._environment(env), cpus, cwd)

    def spawn_python(self, python: str, module: str, args: Sequence[str], env: Mapping[str, str],
                     cpus: Sequence[int], cwd: str | None, preload: Sequence[str] = (), generation: int = 0,
                     any_cpus: bool = False) -> tuple[Process, Start]:
        """Forked from a zygote of (python, preload, env) when one can be had; else a fresh exec, saying why."""
        if not preload or not sys.platform.startswith("linux"):
            return self.spawn([python, "-m", module, *args], env, cpus, cwd), Start()
        from devicelab.devices.zygote import ZygotePool

        if self._pool is None:
            self._pool = ZygotePool()
        got = self._pool.spawn(python, list(args), self._environment(env), cwd, preload, key=env, cpus=cpus,
                               generation=generation, any_cpus=any_cpus and self._one_kind_of_cpu())
        if isinstance(got, Start):
            return self.spawn([python, "-m", module, *args], env, cpus, cwd), got
        return got

    def _one_kind_of_cpu(self) -> bool:
        """One NUMA node and one cluster (no big/little or P/E cores): an unpinned import then learns the same of
        whichever CPU it runs on (cpuid's cache and core type) as a pinned one would, and a shared zygote may serve
        every CPU set. On a hybrid or multi-node host each CPU set keeps its own pinned zygote."""
        if self._uniform is None:
            nodes = glob.glob("/sys/devices/system/node/node[0-9]*")
            self._uniform = len(nodes) <= 1 and len(self.facts().clusters) <= 1
        return self._uniform

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def clean(self) -> dict[str, Any]:
        raise DevicelabError(f"devicelab keeps no files on host devices: nothing to clean on {self.id}")

    # ---- hooks

    def native_targets(self) -> tuple[str, ...]:
        return ("host",)

    def energy_source(self) -> str:
        if not glob.glob("/sys/class/powercap/intel-rapl:*/energy_uj"):
            return "no energy source on this host (RAPL is not readable in /sys/class/powercap)"
        return "host energy is not measured yet"
