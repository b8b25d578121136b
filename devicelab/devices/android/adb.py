"""adb: the server, discovery, `adb connect`, and the shell v2 stream (stdin in; stdout, stderr and the exit code
out). The only module of devicelab that imports adbutils. Everything that reaches the device shell is built by
`quote()` (shlex quoting, which the phone's mksh/toybox sh reads as POSIX sh does): names from users and models
arrive as literals.
"""

from __future__ import annotations

import shlex
import socket
import struct
import subprocess
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import adbutils
from adbutils import AdbError

from devicelab.devices.base import TransportLostError
from devicelab.facts import DeviceEntry

# Shell v2 packet ids (adb's shell_protocol.h).
V2_STDIN, V2_STDOUT, V2_STDERR, V2_EXIT, V2_CLOSE_STDIN = 0, 1, 2, 3, 4

# Errors adbutils and its sockets raise when the transport fails.
ADB_ERRORS = (AdbError, EOFError, ConnectionError, socket.timeout)


class DeviceGoneError(TransportLostError):
    """The phone stopped answering: unplugged, offline, or the adb server lost its transport."""


def quote(args: Sequence[str]) -> str:
    """One shell command line from argv items, each a literal on the device."""
    return " ".join(shlex.quote(str(a)) for a in args)


def client() -> adbutils.AdbClient:
    """The adb server (ANDROID_ADB_SERVER_HOST / ANDROID_ADB_SERVER_PORT, as adb reads them), started if it is
    not running: by us rather than by adbutils, so that adb's start-up chatter stays off devicelab's output and
    a failure to start says why in one line."""
    c = adbutils.AdbClient()
    try:
        socket.create_connection((c.host, c.port), timeout=1).close()
        return c
    except OSError:
        pass
    try:
        adb = adbutils.adb_path()
        p = subprocess.run([adb, "-P", str(c.port), "start-server"], capture_output=True, text=True, timeout=30)
    except (AdbError, OSError, subprocess.SubprocessError) as e:
        raise DeviceGoneError(f"adb server on port {c.port} is not running and cannot be started: {e}") from None
    if p.returncode != 0:
        lines = [x.strip() for x in (p.stderr + p.stdout).splitlines() if x.strip()]
        why = next((x for x in reversed(lines) if " F " in x or "error" in x.lower()), lines[-1] if lines else "")
        raise DeviceGoneError(f"adb server on port {c.port} did not start ({adb} start-server: {why[:200]})")
    return c


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
        return [Attached(i.serial, i.state, dict(i.tags)) for i in client().list(extended=True)]
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
        answer = client().connect(address, timeout=10)
    except (AdbError, OSError, EOFError) as e:
        raise DeviceGoneError(f"adb connect {address}: {e}") from None
    if "connected" not in answer or "unable" in answer or "failed" in answer:
        raise DeviceGoneError(f"adb connect {address}: {answer.strip()}")
    return answer


# --------------------------------------------------------------------------------------------------
# adb shell v2: stdin in, stdout / stderr / exit code out, over one adb server connection


class ShellV2:
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
            self._sock.sendall(struct.pack("<BI", V2_STDIN, len(data)) + data)

    def close_stdin(self) -> None:
        with self._lock:
            self._sock.sendall(struct.pack("<BI", V2_CLOSE_STDIN, 0))

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
            if kind == V2_EXIT:
                return

    def close(self) -> None:
        # Closing our end makes the adb server close the device stream; adbd then kills the command's group.
        self._conn.close()
