"""Helpers for tests against the emulated Android phone through a real adb server: private server ports and HOMEs,
the daemon as a subprocess, and skip reasons. Imported by test modules; fixtures live in the modules using them."""

from __future__ import annotations

import functools
import importlib.resources
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
import yaml

from devicelab.testing.emulated_adb import RESERVED_PORTS  # 5037 and 5555-5585: the daemon refuses them too
from devicelab.testing.emulated_device import QEMU_AARCH64 as QEMU
CROSS_CC = "aarch64-linux-gnu-gcc"


def free_port() -> int:
    """A free loopback TCP port outside the ones adb treats specially."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port not in RESERVED_PORTS:
            return port


def _adb_major(path: str) -> str | None:
    try:
        out = subprocess.run([path, "version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"^Version (\d+)", out, re.M)
    return m.group(1) if m else None


@functools.cache
def adb_binaries() -> tuple[tuple[str, str], ...]:
    """The adb binaries available here, as (label, path): Debian's /usr/bin/adb and the one adbutils bundles."""
    found: list[tuple[str, str]] = []
    candidates = [("debian", "/usr/bin/adb")]
    try:
        bundled = importlib.resources.files("adbutils.binaries") / "adb"
        candidates.append(("adbutils", str(bundled)))
    except ModuleNotFoundError:
        pass
    for label, path in candidates:
        if os.access(path, os.X_OK):
            major = _adb_major(path)
            if major is not None:
                found.append((f"{label}-adb{major}", path))
    return tuple(found)


@functools.cache
def namespace_support() -> str | None:
    """None when a private user+mount namespace works here, else why not."""
    if shutil.which("unshare") is None:
        return "util-linux unshare not found"
    p = subprocess.run(["unshare", "-Urm", "true"], capture_output=True, text=True, timeout=10)
    return None if p.returncode == 0 else f"unshare -Urm failed: {p.stderr.strip()}"


@functools.cache
def qemu_support() -> str | None:
    """None when a static aarch64 binary can be built here and run on the emulated phone, else why not."""
    missing = []
    if shutil.which(CROSS_CC) is None:
        missing.append(f"{CROSS_CC} (Debian: gcc-aarch64-linux-gnu)")
    if not os.access(QEMU, os.X_OK):
        missing.append(f"{QEMU} (Debian: qemu-user-static)")
    if missing:
        return "needs " + " and ".join(missing)
    if (why := namespace_support()) is not None:
        return f"needs a private namespace for binfmt_misc: {why}"
    probe = 'd=$(mktemp -d) && mount -t binfmt_misc binfmt_misc "$d"'
    p = subprocess.run(["unshare", "-Urm", "sh", "-c", probe], capture_output=True, text=True, timeout=10)
    if p.returncode != 0:
        return f"a private binfmt_misc cannot be mounted (Linux >= 6.7 needed): {p.stderr.strip()}"
    return None


def process_gone(pid: int) -> bool:
    """True once the process has exited, zombies included: an orphan's zombie waits for PID 1 to reap it (about
    a second on some VMs), which says nothing about whether the phone killed it."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def needs_adb() -> pytest.MarkDecorator:
    return pytest.mark.skipif(not adb_binaries(),
                              reason="needs adb: Debian's (apt-get install adb) or the one bundled in the adbutils wheel")


def needs_namespace() -> pytest.MarkDecorator:
    why = namespace_support()
    return pytest.mark.skipif(why is not None, reason=f"needs a private user+mount namespace: {why}")


def needs_qemu() -> pytest.MarkDecorator:
    why = qemu_support()
    return pytest.mark.skipif(why is not None, reason=f"arm64 binaries: {why}")


class AdbServer:
    """A real adb server on a private port with a private HOME (its keys, no user state); only this server is
    killed on exit."""

    def __init__(self, adb: str, port: int | None = None) -> None:
        self.adb = adb
        self.port = port or free_port()
        self.home: Path | None = None
        self.env: dict[str, str] = {}

    def __enter__(self) -> AdbServer:
        self.home = Path(tempfile.mkdtemp(prefix="devicelab-adb-home-"))
        env = dict(os.environ)
        env.pop("ANDROID_SERIAL", None)
        env.update({"HOME": str(self.home), "ANDROID_ADB_SERVER_PORT": str(self.port), "ADBUTILS_ADB_PATH": self.adb})
        self.env = env
        p = self.run("start-server", timeout=60)
        if p.returncode != 0:
            raise RuntimeError(f"adb start-server failed: {p.stdout}{p.stderr}")
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None,
                 ) -> None:
        self.run("kill-server", timeout=30)
        if self.home is not None:
            shutil.rmtree(self.home, ignore_errors=True)

    def run(self, *args: str, timeout: float = 30, input: bytes | None = None) -> subprocess.CompletedProcess[str]:
        """`adb -P PORT ARGS...` with this server's environment; output as text."""
        p = subprocess.run([self.adb, "-P", str(self.port), *args], env=self.env, input=input,
                           capture_output=True, timeout=timeout)
        return subprocess.CompletedProcess(p.args, p.returncode, p.stdout.decode(errors="replace"),
                                           p.stderr.decode(errors="replace"))

    def client(self) -> Any:
        import adbutils

        return adbutils.AdbClient(host="127.0.0.1", port=self.port)

    def state(self, serial: str) -> str | None:
        """The serial's state in `adb devices` (device, offline...), None when absent."""
        for line in self.run("devices").stdout.splitlines()[1:]:
            parts = line.split()
            if len(parts) >= 2 and parts[0] == serial:
                return parts[1]
        return None

    def wait_state(self, serial: str, state: str | None, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while (now := self.state(serial)) != state:
            if time.monotonic() > deadline:
                raise AssertionError(f"{serial} is {now!r} in `adb devices`, not {state!r}, after {timeout} s")
            time.sleep(0.1)


class EmulatedPhone:
    """The emulated phone daemon as a subprocess (`python -m devicelab.testing.emulated_adb`), connected to an
    AdbServer and `device` in `adb devices` once entered. Stops only the process it started."""

    def __init__(self, server: AdbServer, root: Path, profile: Path | dict[str, Any] | None = None,
                 drop_on: Sequence[str] = (), namespace: bool = True, port: int | None = None) -> None:
        self.server = server
        self.root = Path(root)
        self.profile = profile
        self.drop_on = tuple(drop_on)
        self.namespace = namespace
        self.port = port or free_port()
        self.address = ""
        self.serial = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = self.root.parent / f"{self.root.name}.emulated_adb.log"

    def __enter__(self) -> EmulatedPhone:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None,
                 ) -> None:
        self.stop()

    @property
    def stderr(self) -> str:
        """What the daemon said on stderr (its summary, and anything that went wrong)."""
        return self._log.read_text(errors="replace") if self._log.exists() else ""

    def start(self) -> None:
        # -P: the installed devicelab, not the source tree the tests run from
        argv = [sys.executable, "-P", "-m", "devicelab.testing.emulated_adb", "--port", str(self.port),
                "--root", str(self.root)]
        if isinstance(self.profile, dict):
            path = self.root.parent / f"{self.root.name}.profile.yaml"
            path.write_text(yaml.safe_dump(self.profile))
            argv += ["--profile", str(path)]
        elif self.profile is not None:
            argv += ["--profile", str(self.profile)]
        for rule in self.drop_on:
            argv += ["--drop-on", rule]
        if not self.namespace:
            argv.append("--no-namespace")
        with self._log.open("ab") as log:
            self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode().strip()  # the daemon prints its address first, or exits
        if not line:
            self.proc.wait(timeout=10)
            raise RuntimeError(f"emulated_adb exited with {self.proc.returncode}: {self.stderr[-2000:]}")
        self.address = self.serial = line
        self.connect()

    def connect(self, timeout: float = 15) -> None:
        """`adb connect`, then wait until the server lists the phone as `device`. A server that still holds the
        phone as offline retries on its own with a growing back-off (adb 29: ~10 s after a second drop), so
        after a short wait the helper disconnects and connects again."""
        deadline = time.monotonic() + timeout
        while True:
            out = self.server.run("connect", self.address)
            if "connected to" in out.stdout:
                try:
                    self.server.wait_state(self.serial, "device", timeout=1.5)
                    return
                except AssertionError:
                    self.server.run("disconnect", self.address)
            if time.monotonic() > deadline:
                raise AssertionError(f"adb connect {self.address}: {out.stdout}{out.stderr}; "
                                     f"state {self.server.state(self.serial)!r}")
            time.sleep(0.1)

    def device(self) -> Any:
        """The adbutils device for this phone."""
        return self.server.client().device(self.serial)

    def drop(self) -> None:
        """Pull the cable: SIGUSR1 (the daemon refuses connections until restore())."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGUSR1)

    def restore(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGUSR2)

    def restart(self, **changes: Any) -> None:
        """Stop, then start again on the same port and root (the phone coming back), with changed arguments."""
        self.stop()
        for key, value in changes.items():
            if key not in ("profile", "drop_on", "namespace"):
                raise TypeError(f"restart() cannot change {key!r}")
            setattr(self, key, tuple(value) if key == "drop_on" else value)
        self.start()

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


EXAMPLE_RUNNER = Path(__file__).resolve().parent.parent / "examples" / "protocol_runner.c"


def build_example_runner(out: Path) -> Path:
    """The README's example runner (runner protocol v1 in C), built static for arm64 as for a phone."""
    subprocess.run([CROSS_CC, "-O2", "-static", "-o", str(out), str(EXAMPLE_RUNNER)], check=True, capture_output=True)
    return out


def cli_env(env: dict[str, str], server: AdbServer) -> dict[str, str]:
    """A test's devicelab environment, talking to this adb server (its port, HOME and adb binary)."""
    return {**env, **{k: server.env[k] for k in ("HOME", "ANDROID_ADB_SERVER_PORT", "ADBUTILS_ADB_PATH")}}
