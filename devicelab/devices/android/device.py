"""An Android phone over adb as a transport: facts from getprop and sysfs, programs over `adb shell` v2 with stdin
(pinned with taskset), files as content-addressed blobs under /data/local/tmp/devicelab, energy from the battery."""

from __future__ import annotations

import contextlib
import posixpath
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devicelab.devices.android import conditions, sysfs
from devicelab.devices.android.adb import (ADB_ERRORS, V2_EXIT, V2_STDERR, V2_STDOUT, DeviceGoneError, ShellV2,
                                           attached, client, connect, quote)
from devicelab.devices.android.push import REMOTE_ROOT, RUNS, make_run_folder, push
from devicelab.devices.base import Exit, Placed, Process, ResultExtras, Transport, env_assignments
from devicelab.energy import EnergySource, battery
from devicelab.errors import DevicelabError
from devicelab.facts import DeviceEntry, DeviceFacts
from devicelab.measure import ChannelClosedError

if TYPE_CHECKING:
    import adbutils  # only named for types: devices/android/adb.py is where adbutils is used

SHELL_TIMEOUT_S = 60.0  # one short command (getprop, a state read); runners have the protocol's own timeout
RESTORE_TIMEOUT_S = 15.0  # turning fixed performance mode off at the end: a phone that does not answer is gone

# Which native builds run on which ABI, best first (static aarch64 Linux binaries need no bionic).
TARGETS_BY_ABI = {"arm64-v8a": ("android-arm64", "arm64")}


class ShellResult:
    def __init__(self, exit_code: int, stdout: str, stderr: str) -> None:
        self.exit_code, self.stdout, self.stderr = exit_code, stdout, stderr


class AndroidProcess(Process):
    """A program on the phone behind one shell v2 stream. The wrapping shell prints a sentinel line with the program's
    exit status after it ends: Debian's adb reports exit 0 when the device drops mid-shell, so the status packet
    alone cannot tell a finished program from a lost phone."""

    def __init__(self, phone: AndroidTransport, command: str) -> None:
        super().__init__()
        self._phone = phone
        token = secrets.token_hex(4)
        self._sentinel = f"__devicelab_exit_{token}__"
        self._stream = phone.open(f"{command}; echo {self._sentinel} $?", None)
        self._exit_packet: int | None = None
        self._sentinel_code: int | None = None
        self._transport_error: str | None = None
        self._done = threading.Event()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        pending = b""
        try:
            for kind, data in self._stream.packets():
                if kind == V2_STDOUT:
                    pending += data
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        self._stdout_line(line)
                elif kind == V2_STDERR:
                    self._stderr(data)
                elif kind == V2_EXIT:
                    self._exit_packet = data[0] if data else None
            if pending:
                self._stdout_line(pending)
        except OSError as e:
            self._transport_error = str(e) or type(e).__name__
        finally:
            self._done.set()
            self._ended()

    def _stdout_line(self, raw: bytes) -> None:
        text = raw.decode(errors="replace").strip()
        if text.startswith(self._sentinel):
            with contextlib.suppress(ValueError):
                self._sentinel_code = int(text[len(self._sentinel):].strip())
            return
        self._line(raw)

    def write(self, data: bytes) -> None:
        try:
            self._stream.write(data)
        except OSError:
            raise ChannelClosedError("the device stream closed") from None

    def close_stdin(self) -> None:
        with contextlib.suppress(OSError):
            self._stream.close_stdin()

    def wait(self, timeout: float) -> Exit | None:
        if not self._done.wait(timeout):
            return None
        if self._exit_packet is None:  # the stream ended without an exit status: the transport went
            return Exit(None, lost=self._phone.why_gone(self._transport_error))
        code = self._sentinel_code
        if code is None:
            return Exit(None, detail="the device shell ended without reporting the program's exit status "
                                     f"(shell exit {self._exit_packet})")
        return Exit(code, code - 128 if code > 128 else None)

    def kill(self) -> str:
        # Closing the stream makes adbd kill the command's process group.
        self._stream.close()
        self._done.wait(5)
        return "the device stream was closed (adbd kills the runner's process group)"


class AndroidTransport(Transport):
    kind = "android"
    pin_method = "taskset"
    cooldown_poll_seconds = 1.0  # each read is an adb round trip; phones cool over tens of seconds
    slow_clock_ramp = True  # governors raise clocks over hundreds of ms: warmup keeps its 0.5 s floor

    def __init__(self, entry: DeviceEntry) -> None:
        super().__init__(entry)
        self.address: str | None = entry.options.get("address")
        self.serial: str = str(entry.options.get("serial") or self.address or entry.id)
        self._facts: DeviceFacts | None = None
        self._device: adbutils.AdbDevice | None = None
        self._gone: str | None = None  # why the device went away mid-run; later configs fail fast
        self._sdk: int | None = None  # ro.build.version.sdk, read with the facts
        # devices.yaml `fixed_performance: true`: the mode is on from begin_run() to close().
        self.fixed_performance: bool = entry.options.get("fixed_performance") is True
        self._fixed_on = False  # devicelab turned the mode on (or may have) and has not turned it off
        self._fixed_boot_id: str | None = None  # the boot it was turned on in: a reboot ends it

    # ---- the adb connection

    def _find(self) -> adbutils.AdbDevice:
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
        return client().device(self.serial)

    def adb(self) -> adbutils.AdbDevice:
        """The device to talk to. Checked against the adb server's list only the first time and after a fault,
        so a healthy phone costs one adb connection per command."""
        if self._device is None:
            try:
                self._device = self._find()
            except DeviceGoneError:
                if self._gone:
                    raise DeviceGoneError(self._gone) from None
                raise
            self._gone = None
        return self._device

    def open(self, command: str, timeout: float | None) -> ShellV2:
        try:
            return ShellV2(self.adb(), command, timeout)
        except DeviceGoneError:
            self._device = None  # look again: a network phone may just need `adb connect`
            return ShellV2(self.adb(), command, timeout)

    def fault(self, what: str, error: Exception) -> OSError:
        """A sync failure: the device refused (a plain OSError: a failed row) or it is gone (DeviceGoneError)."""
        try:
            self._find()
        except DeviceGoneError as gone:
            return DeviceGoneError(self.lost(f"{what}: {error}; {gone}"))
        return OSError(f"{what}: the device refused ({error or type(error).__name__})")

    def lost(self, why: str) -> str:
        self._gone, self._device = why, None
        return why

    def why_gone(self, transport_error: str | None) -> str:
        """Why a stream ended without an exit status; the phone counts as gone only if adb no longer has it (a
        stream devicelab closed itself, to kill a runner, ends the same way)."""
        detail = transport_error or "the adb stream ended without an exit status"
        try:
            self._find()
        except DeviceGoneError as e:
            return self.lost(f"{detail}; {e}")
        return detail

    def shell(self, command: str, timeout: float = SHELL_TIMEOUT_S) -> ShellResult:
        """Run one command line (already quoted) and wait for it. DeviceGoneError when the stream ends with no
        exit status, which is how a dropped transport looks."""
        stream = self.open(command, timeout)
        out, err, code = bytearray(), bytearray(), None
        try:
            stream.close_stdin()
            for kind, data in stream.packets():
                if kind == V2_STDOUT:
                    out += data
                elif kind == V2_STDERR:
                    err += data
                elif kind == V2_EXIT:
                    code = data[0] if data else None
        except TimeoutError:
            raise TimeoutError(f"no answer from `{command.strip()[:60]}` within {timeout:g} s") from None
        except OSError as e:
            raise DeviceGoneError(self.lost(f"device {self.serial}: {e}")) from None
        finally:
            stream.close()  # on a timeout too: adbd then kills the command's process group
        if code is None:
            raise DeviceGoneError(self.lost(f"device {self.serial} disconnected during `{command.strip()[:60]}`"))
        return ShellResult(code, out.decode(errors="replace"), err.decode(errors="replace"))

    def check(self, command: str, what: str, timeout: float = SHELL_TIMEOUT_S) -> str:
        r = self.shell(command, timeout)
        if r.exit_code != 0:
            raise OSError(f"{what} failed on {self.serial} (exit {r.exit_code}): {(r.stderr or r.stdout).strip()[:300]}")
        return r.stdout

    # ---- facts and state

    def facts(self) -> DeviceFacts:
        if self._facts is None:
            try:
                props = sysfs.parse_getprop(self.check("getprop", "getprop"))
                cpus, clusters, memory = sysfs.parse_topology(self.check(sysfs.TOPOLOGY_SCRIPT,
                                                                         "reading the CPU topology"))
                state = self.state()
            except OSError as e:
                raise DevicelabError(f"device {self.id}: {e}") from None
            release, sdk = props.get("ro.build.version.release", "?"), props.get("ro.build.version.sdk", "?")
            self._sdk = sysfs.to_int(sdk)
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
            calibration = battery.stored_calibration(self.profile_key())
            self._facts.extra["energy_calibration"] = calibration.describe() if calibration else None
        return self._facts

    def state(self) -> dict[str, Any]:
        return sysfs.parse_state(self.check(sysfs.STATE_SCRIPT, "reading the device state"))

    # ---- files

    def put(self, files: Sequence[tuple[str, Path]]) -> Placed:
        return push(self, files)

    def run_folder(self, links: Mapping[str, str]) -> str:
        folder = f"{RUNS}/{secrets.token_hex(6)}"
        try:
            make_run_folder(self, folder, links)
        except BaseException:
            with contextlib.suppress(OSError):  # half a folder is nobody's: the caller never learns its name
                self.remove(folder)
            raise
        return folder

    def pull(self, path: str, local: Path) -> bool:
        try:
            sync = self.adb().sync
            if sync.stat(path).mtime is None:
                return False
            sync.pull_file(path, local)
            return True
        except ADB_ERRORS as e:
            raise self.fault(f"pulling from {self.serial}", e) from None

    def remove(self, folder: str) -> None:
        norm = posixpath.normpath(folder)
        if posixpath.dirname(norm) != RUNS:
            raise ValueError(f"{folder} is not a run folder of devicelab's")
        self.shell(f"rm -rf {quote([norm])}")

    # ---- programs

    def spawn(self, argv: Sequence[str], env: Mapping[str, str], cpus: Sequence[int], cwd: str | None) -> Process:
        mask = format(sum(1 << c for c in cpus), "x") if cpus else None
        command = quote([*env_assignments(env), *(["taskset", mask] if mask else []), *argv])
        if env:
            command = "env " + command  # `env K=V prog` keeps assignments literal even with taskset in front
        if cwd is not None:
            command = f"cd {quote([cwd])} || exit 97; {command}"
        return AndroidProcess(self, command)

    # ---- life cycle

    def clean(self) -> dict[str, Any]:
        out = self.check(f"if [ -d {REMOTE_ROOT} ]; then du -sk {REMOTE_ROOT} | cut -f1; rm -rf {REMOTE_ROOT}; fi",
                         f"removing {REMOTE_ROOT}")
        kb = sysfs.to_int(out.strip().splitlines()[0]) if out.strip() else None
        return {"device": self.id, "removed": REMOTE_ROOT if kb is not None else None,
                "bytes": kb * 1024 if kb is not None else 0}

    def begin_run(self) -> None:
        """With `fixed_performance: true`: turn Android's fixed performance mode on (sustainable clocks, no root;
        Android 11+), refusing the run in one line when the phone cannot."""
        if not self.fixed_performance or self._fixed_on:
            return
        facts = self.facts()
        if self._sdk is None or self._sdk < conditions.FIXED_PERFORMANCE_SDK:
            raise DevicelabError(f"device {self.id}: fixed_performance: true needs Android 11 (SDK "
                                 f"{conditions.FIXED_PERFORMANCE_SDK}) or later; this phone runs {facts.os}")
        self._fixed_on = True  # before the command: if it is cut off (Ctrl-C), close() still turns the mode off
        try:
            self._set_fixed_performance(True, SHELL_TIMEOUT_S)
        except DeviceGoneError as e:
            raise DevicelabError(f"device {self.id}: turning fixed performance mode on: {_one_line(e)}") from None
        except OSError as e:  # the phone refused (its power HAL has no fixed performance mode): nothing was changed
            self._fixed_on = False
            raise DevicelabError(f"device {self.id}: fixed_performance: true, but the phone refused it: "
                                 f"{_one_line(e)}") from None
        try:
            self._fixed_boot_id = self.state().get("boot_id")
        except OSError:
            self._fixed_boot_id = None  # no reboot detection; the first config will meet the fault itself

    def _set_fixed_performance(self, on: bool, timeout: float) -> None:
        self.check(quote(["cmd", "power", "set-fixed-performance-mode-enabled", "true" if on else "false"]),
                   f"turning fixed performance mode {'on' if on else 'off'}", timeout)

    def close(self) -> None:
        """Turn fixed performance mode off again if devicelab turned it on. Android keeps no record of the mode
        that could be read back (PowerManagerService hands it to the power HAL), so what it is set back to is its
        state after boot: off."""
        if self._fixed_on:
            try:
                self._set_fixed_performance(False, RESTORE_TIMEOUT_S)
            except OSError as e:  # the phone went away (or refused): one attempt, then say so
                self.on_event("notice", {
                    "device": self.id,
                    "message": f"fixed performance mode could not be turned off ({_one_line(e)}); it stays on until "
                               f"the phone reboots, or `adb -s {self.serial} shell cmd power "
                               "set-fixed-performance-mode-enabled false`"})
            self._fixed_on = False  # not before: a Ctrl-C during the command leaves the next close() to try again
        self._device = None  # every adb connection is closed when its command ends

    # ---- hooks

    def native_targets(self) -> tuple[str, ...] | str:
        abi = self.facts().abi
        return TARGETS_BY_ABI.get(abi) or \
            f"devicelab has no native build for ABI {abi} (builds: {', '.join(TARGETS_BY_ABI)})"

    def cooldown_zones(self, temperatures: dict[str, float]) -> dict[str, float]:
        cpu = {k: v for k, v in temperatures.items() if sysfs.CPU_ZONE.search(k)}
        return cpu or temperatures

    def energy_source(self) -> EnergySource:
        return battery.BatterySource(self)

    def profile_key(self) -> str:
        """The phone's own serial number (ro.serialno): its profile follows it across cables and addresses."""
        return str(self.facts().extra.get("serialno") or self.serial)

    def result_extras(self, before: dict[str, Any] | None, after: dict[str, Any] | None) -> ResultExtras:
        """Android's thermal status around the config (flagged from MODERATE on), and whether it ran in the fixed
        performance mode devicelab turned on."""
        ext, notes, throttled = conditions.thermal_extras(before, after)
        if self._fixed_on:
            fixed, said = conditions.fixed_performance_extras(self._fixed_boot_id, before, after)
            ext.update(fixed)
            notes += said
        return ResultExtras(ext, tuple(notes), throttled)


def _one_line(error: BaseException) -> str:
    """An error whose message holds the phone's output (several lines) as one line."""
    return "; ".join(line.strip() for line in str(error).splitlines() if line.strip()) or type(error).__name__
