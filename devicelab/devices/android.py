"""Android phones over adb: discovery, content-addressed artifacts under /data/local/tmp/devicelab, runner-protocol
programs over `adb shell` v2 with stdin, pinned to the chosen cluster, with temperatures, frequencies, battery
and screen state read before and after each config.

The only module that imports adbutils (design.md). Everything that reaches the device shell is built by
`quote()` (shlex quoting, which the phone's mksh/toybox sh reads as POSIX sh does): names from users and models
arrive as literals. Every file devicelab writes on a phone lives under REMOTE_ROOT.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import secrets
import shlex
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import adbutils
from adbutils import AdbError

from devicelab import native, profiles
from devicelab.analysis import stats
from devicelab.devices.base import Cluster, Device, DeviceEntry, DeviceFacts, Job, measurement_fields, \
    probe_fields, runner_config, throttled, tool_fields, tool_settings
from devicelab.energy import EnergyResult, battery, unmeasured
from devicelab.engines import get_engine
from devicelab.engines.tool_base import ToolEngine
from devicelab.errors import DevicelabError
from devicelab.protocol import (RUNNER_FAULTS, ChannelClosedError, ChannelTimeoutError, Driver, EventQueue, lockstep,
                                lockstep_record, now_deadline, run_batch)
from devicelab.result import FAILED, INFRA_FAILED, OK, UNSUPPORTED, Result
from devicelab.store import utc_now

REMOTE_ROOT = "/data/local/tmp/devicelab"  # the only place devicelab writes on a phone (shell user: /data/local/tmp)
BLOBS = f"{REMOTE_ROOT}/a"  # content-addressed: a/<sha256 prefix>/<file name>
RUNS = f"{REMOTE_ROOT}/run"  # one folder per config while it runs: config, links to blobs, outputs
STDERR_TAIL_BYTES = 4000
SHELL_TIMEOUT_S = 60.0  # one short command (getprop, a state read); runners have the protocol's own timeout

# Which native builds run on which ABI, best first (static aarch64 Linux binaries need no bionic).
TARGETS_BY_ABI = {"arm64-v8a": ("android-arm64", "arm64")}

# Thermal zone types are vendor strings ("cpu-1-0-usr", "cpuss-0", "cpu0-silver-usr", "mid-cluster"...):
# the CPU ones are what cooldown waits on (battery, skin, modem zones move slowly and for other reasons).
_CPU_ZONE = re.compile(r"cpu|cluster|silver|gold|prime|little|\bbig\b|\bmid\b", re.IGNORECASE)

# Shell v2 packet ids (adb's shell_protocol.h).
_V2_STDIN, _V2_STDOUT, _V2_STDERR, _V2_EXIT, _V2_CLOSE_STDIN = 0, 1, 2, 3, 4


class DeviceGoneError(OSError):
    """The phone stopped answering: unplugged, offline, or the adb server lost its transport."""


def quote(args: Sequence[str]) -> str:
    """One shell command line from argv items, each a literal on the device."""
    return " ".join(shlex.quote(str(a)) for a in args)


def _client() -> adbutils.AdbClient:
    """The adb server (ANDROID_ADB_SERVER_HOST / ANDROID_ADB_SERVER_PORT, as adb reads them), started if it is
    not running: by us rather than by adbutils, so that adb's start-up chatter stays off devicelab's output and
    a failure to start says why in one line."""
    client = adbutils.AdbClient()
    try:
        socket.create_connection((client.host, client.port), timeout=1).close()
        return client
    except OSError:
        pass
    try:
        adb = adbutils.adb_path()
        p = subprocess.run([adb, "-P", str(client.port), "start-server"], capture_output=True, text=True, timeout=30)
    except (AdbError, OSError, subprocess.SubprocessError) as e:
        raise DeviceGoneError(f"adb server on port {client.port} is not running and cannot be started: {e}") from None
    if p.returncode != 0:
        lines = [x.strip() for x in (p.stderr + p.stdout).splitlines() if x.strip()]
        why = next((x for x in reversed(lines) if " F " in x or "error" in x.lower()), lines[-1] if lines else "")
        raise DeviceGoneError(f"adb server on port {client.port} did not start ({adb} start-server: {why[:200]})")
    return client


# --------------------------------------------------------------------------------------------------
# Discovery


@dataclass(frozen=True)
class Attached:
    """A device the adb server knows, in whatever state (device, offline, unauthorized...)."""

    serial: str
    state: str
    tags: dict[str, str]

    @property
    def usable(self) -> bool:
        return self.state == "device"

    def hint(self) -> str:
        if self.state == "unauthorized":
            return "unauthorized: accept the USB debugging prompt on the phone"
        if self.state == "offline":
            return "offline: replug the cable, or `adb reconnect`"
        return self.state


def attached() -> list[Attached]:
    """Every device the adb server lists (`adb devices -l`). Raises DeviceGoneError when there is no adb."""
    try:
        return [Attached(i.serial, i.state, dict(i.tags)) for i in _client().list(extended=True)]
    except (AdbError, OSError, EOFError, FileNotFoundError) as e:
        raise DeviceGoneError(f"adb: {e}") from None


def discovered_entries(known_serials: set[str]) -> tuple[list[DeviceEntry], list[str]]:
    """Attached phones not already in the inventory, as entries (id = adb serial), and notes on unusable ones."""
    try:
        found = attached()
    except DeviceGoneError as e:
        return [], [str(e)]
    entries, notes = [], []
    for a in found:
        if a.serial in known_serials:
            continue
        if a.usable:
            entries.append(DeviceEntry(a.serial, "android", {"serial": a.serial, "discovered": True}))
        else:
            notes.append(f"{a.serial}: {a.hint()}")
    return entries, notes


def connect(address: str) -> str:
    """`adb connect host:port`: the adb server's answer ("connected to…", "already connected to…")."""
    try:
        answer = _client().connect(address, timeout=10)
    except (AdbError, OSError, EOFError) as e:
        raise DeviceGoneError(f"adb connect {address}: {e}") from None
    if "connected" not in answer or "unable" in answer or "failed" in answer:
        raise DeviceGoneError(f"adb connect {address}: {answer.strip()}")
    return answer


# --------------------------------------------------------------------------------------------------
# adb shell v2: stdin in, stdout / stderr / exit code out, over one adb server connection


class _ShellV2:
    """One `shell,v2,raw:` stream. adbutils opens the transport; the packet framing is adb's shell protocol
    (`<B id><I length>data`), which adbutils only reads to the end, so stdin has to be written here."""

    def __init__(self, device: adbutils.AdbDevice, command: str, timeout: float | None) -> None:
        try:
            self._conn = device.open_transport(timeout=timeout)
            self._conn.send_command("shell,v2,raw:" + command)
            self._conn.check_okay()
        except (AdbError, OSError, EOFError) as e:
            raise DeviceGoneError(f"adb shell: {e}") from None
        self._sock: socket.socket = self._conn.conn
        self._lock = threading.Lock()

    def write(self, data: bytes) -> None:
        with self._lock:
            self._sock.sendall(struct.pack("<BI", _V2_STDIN, len(data)) + data)

    def close_stdin(self) -> None:
        with self._lock:
            self._sock.sendall(struct.pack("<BI", _V2_CLOSE_STDIN, 0))

    def _read(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self._sock.recv(n - len(buf))
            if not chunk:
                break
            buf += chunk
        return bytes(buf)

    def packets(self) -> Iterator[tuple[int, bytes]]:
        """(id, data) until the exit packet or the end of the stream (a dropped transport ends it with no exit
        packet: callers tell the two apart)."""
        while True:
            header = self._read(5)
            if len(header) < 5:
                return
            kind, length = struct.unpack("<BI", header)
            data = self._read(length)
            if len(data) < length:
                return
            yield kind, data
            if kind == _V2_EXIT:
                return

    def close(self) -> None:
        # Closing our end makes the adb server close the device stream; adbd then kills the command's group.
        self._conn.close()


@dataclass(frozen=True)
class ShellResult:
    exit_code: int
    stdout: str
    stderr: str


@dataclass
class _Ready:
    """A runner command ready to be driven (AndroidDevice._session yields it)."""

    command: str
    sentinel: str
    settings: Any
    cpus: tuple[int, ...]
    notes: list[str]
    energy: Any  # the before-stop hook (an energy window), or None
    label: str


class _RunnerChannel:
    """Runner protocol v1 over a shell v2 stream: JSON lines from stdout become events; the sentinel line the
    wrapping shell prints after the runner exits is recorded apart; stderr is kept as a bounded tail."""

    def __init__(self, stream: _ShellV2, sentinel: str) -> None:
        self._stream = stream
        self._sentinel = sentinel
        self._events = EventQueue()
        self._stderr = bytearray()
        self.exit_code: int | None = None
        self.sentinel_code: int | None = None
        self.transport_error: str | None = None
        self._ended = threading.Event()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        pending = b""
        try:
            for kind, data in self._stream.packets():
                if kind == _V2_STDOUT:
                    pending += data
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        self._line(line)
                elif kind == _V2_STDERR:
                    self._stderr += data
                    del self._stderr[:-STDERR_TAIL_BYTES]
                elif kind == _V2_EXIT:
                    self.exit_code = data[0] if data else None
            if pending:
                self._line(pending)
        except OSError as e:
            self.transport_error = str(e) or type(e).__name__
        finally:
            self._ended.set()
            self._events.put(None)

    def _line(self, raw: bytes) -> None:
        text = raw.decode(errors="replace").strip()
        if text.startswith(self._sentinel):
            with contextlib.suppress(ValueError):
                self.sentinel_code = int(text[len(self._sentinel):].strip())
            return
        try:
            event = json.loads(text)
        except ValueError:
            return  # not a protocol line
        if isinstance(event, dict):
            self._events.put(event)

    def send(self, message: dict[str, Any]) -> None:
        try:
            self._stream.write(json.dumps(message).encode() + b"\n")
        except OSError:
            raise ChannelClosedError("the device stream closed") from None

    def receive(self, deadline: float) -> dict[str, Any]:
        return self._events.receive(deadline)

    def wait_end(self, timeout: float) -> bool:
        return self._ended.wait(timeout)

    @property
    def dropped(self) -> bool:
        """The stream ended without an exit status: the transport went, not the program."""
        return self._ended.is_set() and self.exit_code is None

    def stderr_tail(self) -> str:
        return bytes(self._stderr).decode(errors="replace")


# --------------------------------------------------------------------------------------------------
# Reading the device (constant scripts: no user input reaches them)

# `read` is a shell builtin: one fork-free read per sysfs file, so a state read is one adb round trip.
_STATE_SCRIPT = r"""
for z in /sys/class/thermal/thermal_zone*; do t=; v=; read -r t < "$z/type"; read -r v < "$z/temp"; printf 'T\t%s\t%s\t%s\n' "${z##*/}" "$t" "$v"; done 2>/dev/null
for c in /sys/devices/system/cpu/cpu[0-9]*; do f="$c/cpufreq"; a=; b=; h=; g=; read -r a < "$f/scaling_cur_freq"; read -r b < "$f/scaling_max_freq"; read -r h < "$f/cpuinfo_max_freq"; read -r g < "$f/scaling_governor"; printf 'F\t%s\t%s\t%s\t%s\t%s\n' "${c##*/cpu}" "$a" "$b" "$h" "$g"; done 2>/dev/null
for p in /sys/class/power_supply/*; do ty=; on=; st=; ca=; cu=; vo=; cc=; te=; read -r ty < "$p/type"; read -r on < "$p/online"; read -r st < "$p/status"; read -r ca < "$p/capacity"; read -r cu < "$p/current_now"; read -r vo < "$p/voltage_now"; read -r cc < "$p/charge_counter"; read -r te < "$p/temp"; printf 'P\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "${p##*/}" "$ty" "$on" "$st" "$ca" "$cu" "$vo" "$cc" "$te"; done 2>/dev/null
l=; read -r l < /proc/loadavg 2>/dev/null; printf 'L\t%s\n' "$l"
printf 'S\t%s\n' "$(dumpsys power 2>/dev/null | grep -m1 -E 'mWakefulness=|Display Power: state=')"
"""

_TOPOLOGY_SCRIPT = r"""
for c in /sys/devices/system/cpu/cpu[0-9]*; do cap=; mx=; rel=; read -r cap < "$c/cpu_capacity"; read -r mx < "$c/cpufreq/cpuinfo_max_freq"; read -r rel < "$c/cpufreq/related_cpus"; printf 'C\t%s\t%s\t%s\t%s\n' "${c##*/cpu}" "$cap" "$mx" "$rel"; done 2>/dev/null
o=; read -r o < /sys/devices/system/cpu/online 2>/dev/null; printf 'O\t%s\n' "$o"
m=$(grep -m1 MemTotal /proc/meminfo 2>/dev/null); printf 'M\t%s\n' "$m"
"""

# A runner's faults on a phone: the protocol's, and the phone going away mid-run.
_FAULTS = (*RUNNER_FAULTS, DeviceGoneError)

# What driving a runner gave: status, reason, Result fields, and its channel (for the exit and stderr).
_Driven = tuple[str, str | None, dict[str, Any], _RunnerChannel | None]


def _int(text: str) -> int | None:
    try:
        return int(text.strip())
    except (ValueError, AttributeError):
        return None


def _celsius(raw: str) -> float | None:
    """Thermal zone temps are millidegrees on most kernels; a few vendors' zones give whole degrees."""
    value = _int(raw)
    if value is None:
        return None
    return value / 1000.0 if abs(value) >= 1000 else float(value)


def parse_cpu_list(text: str) -> tuple[int, ...]:
    """"0-3,6" → (0, 1, 2, 3, 6); also the space-separated lists of related_cpus."""
    cpus: set[int] = set()
    for part in re.split(r"[,\s]+", text.strip()):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        if lo.isdigit() and (not hi or hi.isdigit()):
            cpus.update(range(int(lo), int(hi or lo) + 1))
    return tuple(sorted(cpus))


def parse_getprop(text: str) -> dict[str, str]:
    props: dict[str, str] = {}
    for line in text.splitlines():
        m = re.match(r"^\[(.*?)\]: \[(.*)\]$", line.strip())
        if m:
            props[m.group(1)] = m.group(2)
    return props


def parse_topology(text: str) -> tuple[tuple[int, ...], tuple[Cluster, ...], int | None]:
    """(online CPUs, clusters, memory bytes) from _TOPOLOGY_SCRIPT's output.

    Clusters: by cpu_capacity where the kernel has it (the biggest core = 1024), else by cpufreq policy
    (related_cpus), else by maximum frequency (android.md)."""
    rows: dict[int, tuple[int | None, int | None, str]] = {}
    online: tuple[int, ...] = ()
    memory = None
    for line in text.splitlines():
        parts = line.split("\t")
        if parts[0] == "C" and len(parts) >= 5 and parts[1].isdigit():
            rows[int(parts[1])] = (_int(parts[2]), _int(parts[3]), parts[4].strip())
        elif parts[0] == "O" and len(parts) > 1:
            online = parse_cpu_list(parts[1])
        elif parts[0] == "M" and len(parts) > 1:
            kb = re.findall(r"\d+", parts[1])
            memory = int(kb[0]) * 1024 if kb else None
    cpus = tuple(c for c in sorted(rows) if not online or c in online)
    if any(rows[c][0] is not None for c in cpus):
        key = lambda c: ("cap", rows[c][0])  # noqa: E731
    elif any(rows[c][2] for c in cpus):
        key = lambda c: ("policy", parse_cpu_list(rows[c][2]))  # noqa: E731
    else:
        key = lambda c: ("freq", rows[c][1])  # noqa: E731
    groups: dict[Any, list[int]] = {}
    for c in cpus:
        groups.setdefault(key(c), []).append(c)
    clusters = []
    for members in groups.values():
        caps = [rows[c][0] for c in members if rows[c][0] is not None]
        freqs = [rows[c][1] for c in members if rows[c][1] is not None]
        clusters.append(Cluster(tuple(members), max(caps) if caps else None, max(freqs) if freqs else None))
    clusters.sort(key=lambda cl: ((cl.capacity or 0), (cl.max_khz or 0), cl.cpus))
    return cpus, tuple(clusters), memory


def parse_state(text: str) -> dict[str, Any]:
    """The device state (same shape as the host's) from _STATE_SCRIPT's output. Battery figures stay raw:
    sign and scale of current_now differ by vendor (calibrated per device, not guessed here)."""
    temps: dict[str, float] = {}
    freqs: dict[str, dict[str, Any]] = {}
    supplies: dict[str, dict[str, Any]] = {}
    loadavg: list[float] | None = None
    screen: str | None = None
    for line in text.splitlines():
        parts = line.split("\t")
        tag = parts[0]
        if tag == "T" and len(parts) >= 4:
            celsius = _celsius(parts[3])
            kind = parts[2].strip() or parts[1]
            if celsius is not None:
                temps[kind if kind not in temps else f"{kind}:{parts[1]}"] = celsius
        elif tag == "F" and len(parts) >= 6 and parts[1].isdigit():
            cur = _int(parts[2])
            if cur is not None:
                freqs[parts[1]] = {"cur_khz": cur, "max_khz": _int(parts[3]), "hw_max_khz": _int(parts[4]),
                                   "governor": parts[5].strip() or None}
        elif tag == "P" and len(parts) >= 10:
            supplies[parts[1]] = {"type": parts[2].strip() or None, "online": _int(parts[3]),
                                  "status": parts[4].strip() or None, "capacity_percent": _int(parts[5]),
                                  "current_now_raw": _int(parts[6]), "voltage_now_raw": _int(parts[7]),
                                  "charge_counter_raw": _int(parts[8]), "temp_decic": _int(parts[9])}
        elif tag == "L" and len(parts) >= 2:
            with contextlib.suppress(ValueError):
                loadavg = [float(x) for x in parts[1].split()[:3]]
        elif tag == "S" and len(parts) >= 2 and parts[1].strip():
            s = parts[1]
            screen = "on" if re.search(r"=Awake|state=ON", s) else "off" if re.search(r"=Asleep|=Dozing|state=OFF", s) \
                else s.strip()
    battery = next((v for v in supplies.values() if v.get("type") == "Battery"), None)
    plugged = sorted(k for k, v in supplies.items() if v.get("type") != "Battery" and v.get("online") == 1)
    power: dict[str, Any] | None = None
    if supplies:
        power = {"plugged": plugged,
                 "battery_supply": next((k for k, v in supplies.items() if v.get("type") == "Battery"), None)}
        if battery:
            power.update({"battery_percent": battery["capacity_percent"], "battery_status": battery["status"],
                          "current_now_raw": battery["current_now_raw"], "voltage_now_raw": battery["voltage_now_raw"],
                          "charge_counter_raw": battery["charge_counter_raw"],
                          "battery_temp_c": battery["temp_decic"] / 10 if battery["temp_decic"] is not None else None})
    state: dict[str, Any] = {"at": utc_now(), "temperatures_c": temps, "cpufreq": freqs, "loadavg": loadavg,
                             "charging": (battery["status"] == "Charging") if battery and battery["status"] else None,
                             "screen": screen, "power": power}
    missing = [name for name, got in (("temperatures", temps), ("frequencies", freqs), ("battery", battery)) if not got]
    if missing:
        state["unavailable"] = [f"{m}: not readable in /sys on this device" for m in missing]
    return state


# --------------------------------------------------------------------------------------------------
# The device


@dataclass
class PushReport:
    files: int = 0
    pushed_files: int = 0
    bytes: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"files": self.files, "pushed_files": self.pushed_files, "bytes": self.bytes,
                "seconds": round(self.seconds, 3)}


def _chunks(items: Sequence[str], limit: int = 3000) -> Iterator[list[str]]:
    """Items in groups whose joined length stays under `limit` bytes: a shell command is an adb service name, and
    older devices take at most 4 KiB per message."""
    group: list[str] = []
    for item in items:
        if group and sum(len(x) + 4 for x in group) + len(item) > limit:
            yield group
            group = []
        group.append(item)
    if group:
        yield group


_HASHES: dict[tuple[str, int, int], str] = {}


def _sha256(path: Path) -> str:
    """Content hash of a local file, remembered per (path, size, mtime): the same model is pushed for many configs."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def blob_path(sha256: str, name: str) -> str:
    """Where a file lives on the device: named by its content, so a second run finds it and pushes nothing."""
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise ValueError(f"file name {name!r} cannot be pushed")
    return f"{BLOBS}/{sha256[:32]}/{name}"


class AndroidDevice(Device):
    kind = "android"
    # serial: the adb serial (default: the entry's id); address: host:port of a phone on the network, connected
    # with `adb connect` when it is not already attached.
    inventory_keys = ("serial", "address")
    cooldown_poll_seconds = 1.0  # each read is an adb round trip; phones cool over tens of seconds

    @classmethod
    def check_entry(cls, options: dict[str, Any]) -> list[str]:
        problems = []
        serial = options.get("serial")
        if serial is not None and not (isinstance(serial, str) and re.fullmatch(r"[^\s'\"]+", serial)):
            problems.append(f"serial: {serial!r} must be an adb serial (as `adb devices` prints it)")
        address = options.get("address")
        if address is not None:
            host, _, port = str(address).rpartition(":")
            if not (isinstance(address, str) and host and port.isdigit() and 0 < int(port) < 65536
                    and re.fullmatch(r"[A-Za-z0-9.\-\[\]:]+", host)):
                problems.append(f"address: {address!r} must be host:port (a phone on the network, for `adb connect`)")
        return problems

    def __init__(self, entry: DeviceEntry) -> None:
        super().__init__(entry)
        self.address: str | None = entry.options.get("address")
        self.serial: str = str(entry.options.get("serial") or self.address or entry.id)
        self._facts: DeviceFacts | None = None
        self._device: adbutils.AdbDevice | None = None
        self._gone: str | None = None  # why the device went away mid-run; later configs fail fast

    # ---- transport -----------------------------------------------------------------------------------

    def _adb(self) -> adbutils.AdbDevice:
        """The adbutils device, connected (adb connect for network phones) and in state `device`."""
        state = {a.serial: a.state for a in attached()}.get(self.serial)
        if state != "device" and self.address:
            connect(self.address)
            deadline = time.monotonic() + 10
            while state != "device" and time.monotonic() < deadline:
                time.sleep(0.2)
                state = {a.serial: a.state for a in attached()}.get(self.serial)
        if state != "device":
            known = ", ".join(f"{a.serial} ({a.state})" for a in attached()) or "none"
            raise DeviceGoneError(f"device {self.serial} is {state or 'not attached'} (adb sees: {known})")
        return _client().device(self.serial)

    def _ensure(self) -> adbutils.AdbDevice:
        """The device to talk to. Checked against the adb server's list only the first time and after a fault,
        so a healthy phone costs one adb connection per command."""
        if self._device is None:
            try:
                self._device = self._adb()
            except DeviceGoneError:
                if self._gone:
                    raise DeviceGoneError(self._gone) from None
                raise
            self._gone = None
        return self._device

    def _open(self, command: str, timeout: float | None) -> _ShellV2:
        try:
            return _ShellV2(self._ensure(), command, timeout)
        except DeviceGoneError:
            self._device = None  # look again: a network phone may just need `adb connect`
            return _ShellV2(self._ensure(), command, timeout)

    def _fault(self, what: str, error: Exception) -> OSError:
        """A sync failure: the device refused (a plain OSError: a failed row) or it is gone (DeviceGoneError)."""
        try:
            self._adb()
        except DeviceGoneError as gone:
            return DeviceGoneError(self._lost(f"{what}: {error}; {gone}"))
        return OSError(f"{what}: the device refused ({error or type(error).__name__})")

    def _lost(self, why: str) -> str:
        self._gone, self._device = why, None
        return why

    def shell(self, command: str, timeout: float = SHELL_TIMEOUT_S, stdin: bytes | None = None) -> ShellResult:
        """Run one command line (already quoted) and wait for it. DeviceGoneError when the stream ends with no
        exit status, which is how a dropped transport looks."""
        stream = self._open(command, timeout)
        out, err, code = bytearray(), bytearray(), None
        try:
            if stdin is not None:
                stream.write(stdin)
            stream.close_stdin()
            for kind, data in stream.packets():
                if kind == _V2_STDOUT:
                    out += data
                elif kind == _V2_STDERR:
                    err += data
                elif kind == _V2_EXIT:
                    code = data[0] if data else None
        except TimeoutError:
            raise TimeoutError(f"no answer from `{command.strip()[:60]}` within {timeout:g} s") from None
        except OSError as e:
            raise DeviceGoneError(self._lost(f"device {self.serial}: {e}")) from None
        finally:
            stream.close()  # on a timeout too: adbd then kills the command's process group
        if code is None:
            raise DeviceGoneError(self._lost(f"device {self.serial} disconnected during `{command.strip()[:60]}`"))
        return ShellResult(code, out.decode(errors="replace"), err.decode(errors="replace"))

    def _check(self, command: str, what: str, timeout: float = SHELL_TIMEOUT_S) -> str:
        r = self.shell(command, timeout)
        if r.exit_code != 0:
            raise OSError(f"{what} failed on {self.serial} (exit {r.exit_code}): {(r.stderr or r.stdout).strip()[:300]}")
        return r.stdout

    # ---- facts and state -----------------------------------------------------------------------------

    def facts(self) -> DeviceFacts:
        if self._facts is None:
            try:
                props = parse_getprop(self._check("getprop", "getprop"))
                cpus, clusters, memory = parse_topology(self._check(_TOPOLOGY_SCRIPT, "reading the CPU topology"))
                state = self.state()
            except OSError as e:
                raise DevicelabError(f"device {self.id}: {e}") from None
            release, sdk = props.get("ro.build.version.release", "?"), props.get("ro.build.version.sdk", "?")
            power = state.get("power") or {}
            self._facts = DeviceFacts(
                id=self.id, kind=self.kind, model=props.get("ro.product.model", "unknown"),
                os=f"Android {release} (SDK {sdk})", abi=props.get("ro.product.cpu.abi", "unknown"),
                cpu_ids=cpus, clusters=clusters, manufacturer=props.get("ro.product.manufacturer"),
                memory_bytes=memory,
                extra={"serial": self.serial, "address": self.address,
                       "serialno": props.get("ro.serialno") or props.get("ro.boot.serialno"),
                       "soc": props.get("ro.soc.model") or props.get("ro.board.platform") or props.get("ro.hardware"),
                       "soc_manufacturer": props.get("ro.soc.manufacturer"),
                       "abilist": props.get("ro.product.cpu.abilist"),
                       "fingerprint": props.get("ro.build.fingerprint"),
                       "battery_percent": power.get("battery_percent"), "battery_status": power.get("battery_status"),
                       "charging": state.get("charging"), "plugged": power.get("plugged"),
                       "screen": state.get("screen"),
                       "emulated": "1" in (props.get("ro.kernel.qemu"), props.get("ro.boot.qemu"))})
            calibration = self.energy_calibration()
            self._facts.extra["energy_calibration"] = calibration.describe() if calibration else None
        return self._facts

    def state(self) -> dict[str, Any]:
        return parse_state(self._check(_STATE_SCRIPT, "reading the device state"))

    def idle_baseline(self) -> dict[str, Any]:
        try:
            return self.state()
        except OSError as e:
            return {"at": utc_now(), "unavailable": [f"state: {e}"]}

    def cooldown_zones(self, temperatures: dict[str, float]) -> dict[str, float]:
        cpu = {k: v for k, v in temperatures.items() if _CPU_ZONE.search(k)}
        return cpu or temperatures

    def cooldown(self, baseline: dict[str, Any], settings: Any) -> dict[str, Any]:
        try:
            return super().cooldown(baseline, settings)
        except OSError as e:  # the phone went: the run goes on, and its config will say so
            return {"method": "temperature", "error": str(e)}

    # ---- artifacts -----------------------------------------------------------------------------------

    def push(self, files: Sequence[tuple[str, Path]]) -> tuple[list[str], PushReport]:
        """Push local files (name on the device, local path) content-addressed; returns their device paths in
        order. A file already there with the same size is not pushed again."""
        start = time.monotonic()
        report = PushReport()
        wanted = [(blob_path(_sha256(Path(local).resolve()), name), Path(local).resolve()) for name, local in files]
        remote = [path for path, _ in wanted]
        report.files = len(wanted)
        # What is there already, in one round trip (a sync STAT per file would cost one adb connection each).
        there: dict[str, int] = {}
        for chunk in _chunks(sorted(set(remote))):  # chunks: a service name must fit one adb message
            listing = self.shell("stat -c '%s %n' " + quote(chunk) + " 2>/dev/null; true").stdout
            for line in listing.splitlines():
                size, _, path = line.partition(" ")
                if size.isdigit():
                    there[path] = int(size)
        moves: list[str] = []
        try:
            sync = self._ensure().sync
            for path, local in dict(wanted).items():
                size = local.stat().st_size
                if there.get(path) == size:
                    continue
                # Push beside, then rename: a push cut off by a disconnect never leaves a truncated blob
                # under its final, trusted name.
                sync.push(local, f"{path}.part", mode=0o755 if os.access(local, os.X_OK) else 0o644)
                moves.append(f"mv -f {quote([path + '.part'])} {quote([path])}")
                report.pushed_files += 1
                report.bytes += size
        except (AdbError, EOFError, ConnectionError, socket.timeout) as e:
            raise self._fault(f"pushing to {self.serial}", e) from None
        for chunk in _chunks(moves):
            self._check(" && ".join(chunk), "renaming pushed files")
        report.seconds = time.monotonic() - start
        return remote, report

    def push_file(self, local: Path, remote: str) -> None:
        """One file to an exact path (the per-config files of a run folder, which are not worth addressing)."""
        try:
            self._ensure().sync.push(local, remote, mode=0o644)
        except (AdbError, EOFError, ConnectionError, socket.timeout) as e:
            raise self._fault(f"pushing to {self.serial}", e) from None

    def pull(self, remote: str, local: Path) -> bool:
        """Copy one device file to the controller; False when it does not exist."""
        try:
            sync = self._ensure().sync
            if sync.stat(remote).mtime is None:
                return False
            sync.pull_file(remote, local)
            return True
        except (AdbError, EOFError, ConnectionError, socket.timeout) as e:
            raise self._fault(f"pulling from {self.serial}", e) from None

    def clean(self) -> dict[str, Any]:
        out = self._check(f"if [ -d {REMOTE_ROOT} ]; then du -sk {REMOTE_ROOT} | cut -f1; rm -rf {REMOTE_ROOT}; fi",
                          f"removing {REMOTE_ROOT}")
        kb = _int(out.strip().splitlines()[0]) if out.strip() else None
        return {"device": self.id, "removed": REMOTE_ROOT if kb is not None else None,
                "bytes": kb * 1024 if kb is not None else 0}

    # ---- running -------------------------------------------------------------------------------------

    def native_artifacts(self, names: Sequence[str]) -> dict[str, Path] | str:
        """devicelab's native programs for this phone's ABI (from `devicelab build-native`), or why there are none."""
        abi = self.facts().abi
        targets = TARGETS_BY_ABI.get(abi)
        if not targets:
            return f"devicelab has no native build for ABI {abi} (builds: {', '.join(TARGETS_BY_ABI)})"
        for target in targets:
            record = native.registered(target)
            if record and all(n in record.artifacts for n in names):
                return {n: record.artifacts[n].path for n in names}
        return (f"{', '.join(names)} not built for {abi}: run `devicelab build-native --target {targets[-1]}` "
                f"(or --target {targets[0]} with ANDROID_NDK_HOME)")

    lockstep = True

    def run(self, job: Job) -> Result:
        """One config: push what it needs (content-addressed), link a run folder, run the program pinned (under
        dlprobe when built for this ABI, else taskset), bring back what it wrote, remove the run folder. A runner-
        protocol program (dlbench, protocol) is driven over shell v2's stdin; an engine's own tool runs once."""
        return self.run_together([job])[0]

    def run_together(self, jobs: list[Job]) -> list[Result]:
        """Each job laid out and prepared in turn; runner-protocol ones then started one after another on their own
        shell v2 streams and, when more than one is ready, timed in lockstep (protocol.lockstep), so the phone's
        heat and clocks fall on all of them alike."""
        with contextlib.ExitStack() as stack:
            sessions, results = [], {}
            for k, job in enumerate(jobs):
                tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="devicelab-android-"))
                gen = self._session(job, tmp)
                try:
                    sessions.append((k, gen, next(gen)))
                except StopIteration as done:
                    results[k] = done.value
            driven = self._drive_together([ready for _, _, ready in sessions])
            for (k, gen, _), outcome in zip(sessions, driven, strict=True):
                try:
                    gen.send(outcome)
                except StopIteration as done:
                    results[k] = done.value
            return [results[k] for k in range(len(jobs))]

    def _session(self, job: Job, tmp: str) -> Generator[_Ready, _Driven, Result]:
        """One job's life: everything up to the command (yields it, to be driven alone or in lockstep), then from
        the driver's outcome to its Result. A job that ends early (a fault, a tool) returns without yielding."""
        cfg = job.config
        s = job.settings
        started = utc_now()
        notes = list(job.notes)
        if self.facts().extra.get("emulated"):
            notes.append("an emulated device (ro.kernel.qemu=1): its timings say nothing about a phone's speed")

        def row(status: str, reason: str, **extra: Any) -> Result:
            return Result.for_config(job.run_id, cfg, status, reason=reason, notes=tuple(notes), started_at=started,
                                     finished_at=utc_now(), **extra)

        engine = get_engine(cfg.engine)
        tool = engine if isinstance(engine, ToolEngine) else None
        user = engine.user_runner(job.options)
        if user is None and not engine.native_runner:
            return row(FAILED, f"{cfg.engine} has no runner that runs on a phone")
        tool_s = tool_settings(job, self.facts(), tool) if tool else None
        if tool and (why := tool.unsupported_reason(tool_s)):
            return row(UNSUPPORTED, why)
        try:
            state_before = self.state()
        except OSError as e:
            return row(INFRA_FAILED, self._lost(f"device disconnected: {e}"))
        # What to push besides the run folder's files: the program, its libraries, dlprobe.
        if user is not None:
            binary, libraries = user
            program, programs = binary.name, {binary.name: binary}
        else:
            found = self.native_artifacts([engine.native_runner])
            if isinstance(found, str):
                return row(FAILED, found, state_before=state_before)
            program, programs, libraries = engine.native_runner, found, ()
        probe = self.native_artifacts(["dlprobe"])
        if isinstance(probe, str):
            notes.append(f"pinned with taskset; peak memory is the program's own report ({probe})")
        else:
            programs = {**programs, **probe}

        token = secrets.token_hex(4)
        run_dir = f"{RUNS}/{job.run_id}-{token}"
        sentinel = f"__devicelab_exit_{token}__"
        # The run folder's files as (path relative to it, local file); the config is written after staging.
        try:
            if tool:
                assert job.prepared is not None
                files = [(rel, Path(local)) for rel, local in tool.model_layout(job.prepared).items()]
            else:
                runner_cfg = engine.stage(runner_config(job, "outputs.npz" if job.outputs_path else None), Path(tmp))
                files = [(p.name, p) for p in sorted(Path(tmp).iterdir()) if p.is_file()]
        except (OSError, ValueError) as e:
            return row(FAILED, str(e), state_before=state_before)
        try:
            at, push_report = self._lay_out(run_dir, files, libraries, programs)
            if not tool:
                config_path = Path(tmp) / "config.json"
                config_path.write_text(json.dumps(runner_cfg))
                self.push_file(config_path, f"{run_dir}/config.json")
        except DeviceGoneError as e:
            return row(INFRA_FAILED, self._lost(f"device disconnected: {e}"), state_before=state_before)
        except (OSError, ValueError) as e:
            return row(FAILED, str(e), state_before=state_before)

        target = tool.argv(at[program], run_dir, tool_s) if tool else [at[program], f"{run_dir}/config.json"]
        mask = format(sum(1 << c for c in cfg.cpus), "x") if cfg.cpus else None
        if "dlprobe" in programs:
            # dlprobe pins the program (sched_setaffinity before exec, so every thread it starts inherits it),
            # samples it from a core outside the set, and reports wait4's ru_maxrss.
            argv = native.probe_argv(at["dlprobe"], target, cfg.cpus, f"{run_dir}/dlprobe.json")
            method = "dlprobe (sched_setaffinity before exec)"
        else:
            argv = (["taskset", mask] if mask else []) + target
            method = "taskset" if mask else "none (no CPUs chosen)"
        env = f"LD_LIBRARY_PATH={quote([run_dir + '/lib'])} " if libraries else ""
        command = f"cd {quote([run_dir])} || exit 97; {env}{quote(argv)}; echo {sentinel} $?"
        record = {**s.to_dict(), "push": push_report.to_dict(),
                  "pinning": {"cpus": list(cfg.cpus), "mask": f"0x{mask}" if mask else None,
                              "affinity": cfg.affinity, "method": method,
                              "clusters": [c.to_dict() for c in self.facts().clusters]}}
        energy_result: EnergyResult | None = None
        stderr_tail: str | None = None
        if tool:
            status, reason, fields, stderr_tail = self._run_tool(tool, tool_s, target, command, sentinel, run_dir,
                                                                 "dlprobe" in programs, notes, s.timeout_seconds)
            energy_result = unmeasured("engine tools are not measured for energy (load, warmup and timing share "
                                       "one process): use a runner-protocol engine (dlbench, protocol)")
        else:
            hook = None
            if s.energy:
                energy_result = self._energy_preconditions(s, state_before)
                if energy_result is None:  # the window runs with the runner warm, before "stop"
                    hook = lambda ch, samples: {"energy": self._energy_window(ch, samples, s, state_before)}  # noqa: E731
            status, reason, fields, channel = yield _Ready(command, sentinel, s, cfg.cpus, notes, hook,
                                                           cfg.label)
            energy_result = fields.pop("_energy", None) or energy_result
            if status != INFRA_FAILED:
                status, reason, fields = self._collect(job, run_dir, channel, status, reason, fields, notes)
            stderr_tail = (channel.stderr_tail() if channel else "") or None
        if status == INFRA_FAILED:
            self._lost(str(reason))
            return row(INFRA_FAILED, str(reason), state_before=state_before, stderr_tail=stderr_tail, protocol=record)
        try:
            state_after = self.state()
        except OSError as e:
            state_after = None
            notes.append(f"state after the run could not be read: {e}")
        was_throttled = throttled(state_before, state_after, cfg.cpus)
        notes.extend(stats.stability_warnings(fields.get("samples_s", ()), was_throttled))
        if energy_result is None:
            energy_result = unmeasured("energy is off for this suite (protocol: energy: true measures it)")
        if energy_result.detail:
            record["energy"] = energy_result.detail
        return Result.for_config(
            job.run_id, cfg, status, reason=reason, notes=tuple(notes), state_before=state_before,
            state_after=state_after, throttled=was_throttled, started_at=started, finished_at=utc_now(),
            stderr_tail=stderr_tail, protocol={**record, **fields.pop("protocol", {})},
            **energy_result.result_fields(), **fields)

    def _lay_out(self, run_dir: str, files: list[tuple[str, Path]], libraries: Sequence[Path],
                 programs: dict[str, Path]) -> tuple[dict[str, str], PushReport]:
        """Push everything content-addressed, then make the run folder: links to the blobs under their relative
        names, and lib/ of links for LD_LIBRARY_PATH. Returns the device paths of the programs by name."""
        libs = [(lib.name, lib) for lib in libraries]
        blobs = [(PurePosixPath(rel).name, local) for rel, local in files]
        remote, report = self.push([*blobs, *libs, *programs.items()])
        self.on_event("push", {"device": self.id, **report.to_dict()})
        links = [(remote[i], f"{run_dir}/{rel}") for i, (rel, _) in enumerate(files)]
        links += [(remote[len(files) + i], f"{run_dir}/lib/{name}") for i, (name, _) in enumerate(libs)]
        folders = sorted({str(PurePosixPath(dst).parent) for _, dst in links} | {run_dir})
        steps = [f"mkdir -p {quote(folders)}"] + [f"ln -s {quote([src])} {quote([dst])}" for src, dst in links]
        self._check(" && ".join(steps), "preparing the run folder")
        return dict(zip(programs, remote[len(files) + len(libs):])), report

    def _run_tool(self, tool: ToolEngine, s: Any, argv: list[str], command: str, sentinel: str, run_dir: str,
                  probed: bool, notes: list[str], timeout: float) -> tuple[str, str | None, dict[str, Any], str | None]:
        """An engine's own benchmark binary, once: its output parsed, its result files and dlprobe's report pulled."""
        try:
            r = self.shell(command, timeout=timeout)
        except TimeoutError:
            return FAILED, f"timeout: {tool.tool} did not finish within timeout_seconds (adbd killed it)", {}, None
        except DeviceGoneError as e:
            return INFRA_FAILED, f"device disconnected ({e})", {}, None
        lines = r.stdout.splitlines()
        codes = [x for x in lines if x.startswith(sentinel)]
        stdout = "\n".join(x for x in lines if not x.startswith(sentinel)) + "\n"
        if not codes:
            return FAILED, f"the device shell ended without {tool.tool}'s exit status (shell exit {r.exit_code})", \
                {}, r.stderr[-STDERR_TAIL_BYTES:] or None
        code = _int(codes[-1][len(sentinel):]) or 0
        try:
            with tempfile.TemporaryDirectory(prefix="devicelab-pull-") as tmp:
                files: dict[str, str] = {}
                for name in tool.output_files:
                    if self.pull(f"{run_dir}/{name}", Path(tmp) / name):
                        files[name] = (Path(tmp) / name).read_text(errors="replace")
                report = None
                if probed and self.pull(f"{run_dir}/dlprobe.json", Path(tmp) / "dlprobe.json"):
                    report = native.ProbeReport.read(Path(tmp) / "dlprobe.json")
            self.shell(f"rm -rf {quote([run_dir])}")
        except DeviceGoneError as e:
            return INFRA_FAILED, f"device disconnected while collecting the results ({e})", {}, None
        status, reason, fields = tool_fields(tool, s, argv, stdout, r.stderr, code, files, report, probed, notes)
        return status, reason, fields, r.stderr[-STDERR_TAIL_BYTES:] or None

    # ---- energy ----------------------------------------------------------------------------------------

    def profile_key(self) -> str:
        """The phone's own serial number (ro.serialno): its profile follows it across cables and addresses."""
        return str(self.facts().extra.get("serialno") or self.serial)

    def energy_calibration(self) -> battery.Calibration | None:
        data = profiles.load(self.profile_key()).get("energy")
        return battery.Calibration.from_dict(data) if data else None

    def _energy_preconditions(self, s: Any, state: dict[str, Any]) -> EnergyResult | None:
        """Why the energy window would give no honest figure (then it is not run), or None to run it."""
        power = state.get("power") or {}
        if not power.get("battery_supply"):
            return unmeasured("this phone shows no battery in /sys/class/power_supply", battery.NAME)
        if power.get("plugged") and not s.energy_allow_charging:
            return unmeasured(f"a charger feeds the phone ({', '.join(power['plugged'])} online): current flows into "
                              "the battery, so its sensor does not see what inference costs; connect adb over "
                              "Wi-Fi or use a hub that cuts port power (or set energy_allow_charging)", battery.NAME)
        if self.energy_calibration() is None:
            return battery.energy_per_inference([], [], 0.0, 1, None, s.energy_min_window_seconds)
        return None

    def _energy_window(self, channel: Any, samples: list[float], s: Any, state: dict[str, Any]) -> EnergyResult:
        """Idle power, then a window of continuous inference (one batch of the warm runner), both with the battery
        sampled on the device by a fork-free shell loop; samples are placed by when they arrive."""
        calibration = self.energy_calibration()
        supply = str((state.get("power") or {}).get("battery_supply"))
        median = float(stats.median(samples) or 0.01)
        iterations = 1
        got: list[battery.Sample] = []
        stream = self._open(battery.sampler_script(supply), None)

        def read() -> None:
            pending = b""
            with contextlib.suppress(OSError):
                for kind, data in stream.packets():
                    if kind != _V2_STDOUT:
                        continue
                    pending += data
                    *lines, pending = pending.split(b"\n")
                    now = time.monotonic()
                    got.extend(x for x in (battery.parse_sample(line.decode(errors="replace"), now) for line in lines)
                               if x is not None)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            idle_start = time.monotonic()
            time.sleep(s.energy_idle_seconds)
            window_start = time.monotonic()
            deadline = window_start + s.energy_window_seconds * 5 + 120
            times: list[float] = []
            # Batches until the inference time reaches the window: the timed phase's median only estimates it.
            while sum(times) < s.energy_window_seconds:
                estimate = float(stats.median(times[-iterations:]) or median) if times else median
                iterations = max(1, math.ceil((s.energy_window_seconds - sum(times)) / estimate))
                times += run_batch(channel, iterations, deadline, [])
            window_end = time.monotonic()
        finally:
            stream.close()
            reader.join(5)
        # The first moments of each window still show the state before it: the gauge and the clocks settle.
        settle_idle = min(1.0, 0.1 * s.energy_idle_seconds)
        settle = min(1.0, 0.1 * (window_end - window_start))
        idle = [x for x in got if idle_start + settle_idle <= x.at_s < window_start]
        window = [x for x in got if window_start + settle <= x.at_s <= window_end]
        result = battery.energy_per_inference(idle, window, float(sum(times)), len(times), calibration,
                                              s.energy_min_window_seconds)
        result.detail.update({"idle_s": round(window_start - idle_start, 3),
                              "median_window_iteration_s": stats.median(times)})
        return result

    def calibrate_energy(self, seconds: float = 60.0, load: bool = True, allow_charging: bool = False
                         ) -> tuple[battery.Calibration, Path]:
        """Discharge for `seconds` (with a busy loop on every CPU unless load is False, so the charge moves) while
        sampling current_now and charge_counter; store the sign and scale in the phone's profile."""
        state = self.state()
        power = state.get("power") or {}
        supply = power.get("battery_supply")
        if not supply:
            raise DevicelabError(f"{self.id}: no battery in /sys/class/power_supply: nothing to calibrate")
        if power.get("plugged") and not allow_charging:
            raise DevicelabError(f"{self.id}: a charger feeds the phone ({', '.join(power['plugged'])} online): unplug "
                                 "it and connect adb over Wi-Fi, or pass --allow-charging")
        interval = 0.5
        busy = " ".join('( while :; do :; done ) & L="$L $!";' for _ in self.facts().cpu_ids) if load else ""
        script = (f"L=; {busy} {battery.sampler_script(str(supply), interval, math.ceil(seconds / interval))}; "
                  "[ -n \"$L\" ] && kill $L; true")
        r = self.shell(script, timeout=seconds * 2 + 60)
        calibration = battery.calibrate(battery.parse_samples(r.stdout), utc_now())
        if isinstance(calibration, str):
            raise DevicelabError(f"{self.id}: energy calibration failed: {calibration}")
        return calibration, profiles.update(self.profile_key(), "energy", calibration.to_dict())

    def _drive_together(self, ready: list[_Ready]) -> list[_Driven]:
        """Open each runner's stream and wait until it is ready, one after another; time one alone, or several in
        lockstep; stop each and wait for its exit. Ctrl-C closes the streams (adbd then kills the runners' process
        groups) and propagates."""
        outcomes: dict[int, _Driven] = {}
        live: list[tuple[int, Driver, _RunnerChannel]] = []
        streams: list[_ShellV2] = []
        channels: dict[int, _RunnerChannel] = {}

        def failed(k: int, e: Exception) -> None:
            outcomes[k] = self._fault(e, ready[k].settings, channels.get(k))

        try:
            for k, r in enumerate(ready):
                try:
                    stream = self._open(r.command, None)
                    streams.append(stream)
                    channels[k] = _RunnerChannel(stream, r.sentinel)
                    driver = Driver(channels[k], r.settings, now_deadline(r.settings.timeout_seconds))
                    driver.start()
                    live.append((k, driver, channels[k]))
                except _FAULTS as e:
                    failed(k, e)
            if len(live) == 1:
                k, d, _ = live[0]
                try:
                    d.time_alone()
                except _FAULTS as e:
                    failed(k, e)
            elif live:
                lockstep([d for _, d, _ in live], lambda i, e: failed(live[i][0], e), faults=_FAULTS)
            labels = [ready[k].label for k, _, _ in live]
            for k, d, channel in live:
                if k in outcomes:
                    continue
                try:
                    m = d.finish(ready[k].energy)
                    fields = measurement_fields(m, ready[k].cpus, ready[k].notes)
                    if len(live) > 1:
                        fields["protocol"]["lockstep_run"] = lockstep_record(labels, ready[k].label)
                    if "energy" in m.extra:
                        fields["_energy"] = m.extra["energy"]
                    channel.wait_end(60.0)  # after "done" the runner writes its outputs and exits
                    outcomes[k] = (OK, None, fields, channel)
                except _FAULTS as e:
                    failed(k, e)
        finally:
            for stream in streams:
                stream.close()
        return [outcomes[k] for k in range(len(ready))]

    def _fault(self, e: Exception, s: Any, channel: _RunnerChannel | None) -> _Driven:
        if isinstance(e, ChannelTimeoutError):
            return FAILED, (f"timeout: no answer within timeout_seconds={s.timeout_seconds:g}; the device stream "
                            "was closed (adbd kills the runner's process group)"), {}, channel
        if isinstance(e, ChannelClosedError):
            assert channel is not None
            channel.wait_end(5.0)
            if channel.dropped:
                return INFRA_FAILED, f"device disconnected ({self._why_gone(channel)})", {}, channel
            code = channel.sentinel_code if channel.sentinel_code is not None else channel.exit_code
            return FAILED, f"runner ended before finishing ({_describe_exit(code)})", {}, channel
        if isinstance(e, DeviceGoneError):
            return INFRA_FAILED, f"device disconnected ({e})", {}, channel
        return FAILED, str(e), {}, channel

    def _collect(self, job: Job, run_dir: str, channel: _RunnerChannel | None, status: str, reason: str | None,
                 fields: dict[str, Any], notes: list[str]) -> tuple[str, str | None, dict[str, Any]]:
        """After the runner: check its exit (the status packet and the sentinel must agree), bring back dlprobe's
        report and the accuracy outputs, and remove the run folder."""
        if status == OK and channel is not None:
            if channel.dropped or not channel.wait_end(0):
                return INFRA_FAILED, f"device disconnected after the runner finished ({self._why_gone(channel)})", {}
            if channel.sentinel_code is None:
                status, reason = FAILED, ("the device shell ended without reporting the runner's exit status "
                                          f"(shell exit {channel.exit_code})")
            elif channel.sentinel_code != 0:
                status, reason = FAILED, f"runner {_describe_exit(channel.sentinel_code)} after 'done'"
            if status != OK:
                fields = {}
        try:
            with tempfile.TemporaryDirectory(prefix="devicelab-pull-") as tmp:
                probe_local = Path(tmp) / "dlprobe.json"
                report = native.ProbeReport.read(probe_local) if self.pull(f"{run_dir}/dlprobe.json", probe_local) \
                    else None
                if report is not None:
                    if status == FAILED and report.exit_signal and reason and "ended before" in reason:
                        # dlprobe exits 128 + signal; say what happened to the runner itself
                        reason = f"runner ended before finishing ({_describe_exit(128 + report.exit_signal)})"
                    fields = probe_fields(report, fields, notes)
                else:
                    fields.pop("_runner_peak", None)
                if status == OK and job.outputs_path is not None \
                        and not self.pull(f"{run_dir}/outputs.npz", job.outputs_path):
                    notes.append("the runner wrote no outputs file: accuracy not compared")
            self.shell(f"rm -rf {quote([run_dir])}")
        except DeviceGoneError as e:
            return INFRA_FAILED, f"device disconnected while collecting the results ({e})", {}
        return status, reason, fields

    def _why_gone(self, channel: _RunnerChannel) -> str:
        detail = channel.transport_error or "the adb stream ended without an exit status"
        try:
            self._adb()
        except DeviceGoneError as e:
            detail += f"; {e}"
        return detail

    def close(self) -> None:
        self._device = None  # every adb connection is closed when its command ends


def _describe_exit(code: int | None) -> str:
    """A device shell's exit status: 128 + N means the program was killed by signal N."""
    if code is None:
        return "no exit status"
    if code > 128:
        import signal

        try:
            return f"killed by signal {signal.Signals(code - 128).name}"
        except ValueError:
            return f"killed by signal {code - 128}"
    return f"exit code {code}"
