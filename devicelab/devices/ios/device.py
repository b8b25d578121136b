"""An iPhone over usbmuxd and lockdown (pymobiledevice3) as a transport: facts from lockdown's values, state from
the battery's IORegistry entry, files content-addressed in the runner app's container through house_arrest/AFC,
the runner app installed when its content changed and launched through DVT, its runner protocol over a TCP port
the app listens on, reached through usbmuxd. pymobiledevice3 is asyncio-only: every call runs on this device's
own event loop (loop.DeviceLoop) and the transport stays synchronous."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import plistlib
import posixpath
import secrets
import threading
import time
import zipfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from devicelab.devices.base import (BATCH_RESULTS_FILE, Exit, Placed, Process, ResultExtras, Transport,
                                    TransportLostError, env_assignments, relative_name)
from devicelab.devices.ios import errors
from devicelab.devices.ios.errors import IOSSetupError
from devicelab.devices.ios.files import (INSTALLED, MANIFEST, ROOT, RUNNER_STDERR, RUNS, config_bytes, placements,
                                         port_file_port, run_folder_of)
from devicelab.devices.ios.loop import DeviceLoop
from devicelab.errors import DevicelabError
from devicelab.facts import DeviceEntry, DeviceFacts
from devicelab.measure import ChannelClosedError
from devicelab.paths import sha256_file
from devicelab.result import Transfer, utc_now

T = TypeVar("T")

CALL_TIMEOUT_S = 60.0  # one lockdown/AFC exchange; pushing a model gets PUSH_TIMEOUT_S
PUSH_TIMEOUT_S = 600.0
INSTALL_TIMEOUT_S = 600.0
PORT_FILE_TIMEOUT_S = 60.0  # from launch to the runner listening (the app loads nothing before it listens)
POLL_S = 0.2
SYSMONTAP_INTERVAL_MS = 250  # Xcode samples every 0.5-1 s; finer catches the peak of short configs
NOT_PINNED = ("not pinned: iOS has no CPU-affinity API, so the runner app ran its threads where iOS put them "
              "(threads only; ext.ios_qos is the QoS class its timing thread ran at)")
# ProcessInfo.thermalState at which iOS itself slows the device down (Apple: "serious" — the system reduces
# performance; "critical" — it must cool down).
THROTTLING_STATES = ("serious", "critical")
RUNNER_PROGRAMS = ("dlbench",)  # what the runner app is: dlbench's core in an app


def _major(version: str) -> int:
    head = version.split(".")[0]
    return int(head) if head.isdigit() else 0


def app_sha256(app: Path) -> str:
    """The runner app's content hash (its engine version on iOS): an .ipa's bytes, or an .app folder's files —
    relative paths, modes' executable bit and contents, in sorted order — so a rebuilt, re-signed app differs."""
    if app.is_file():
        return sha256_file(app)
    h = hashlib.sha256()
    for path in sorted(p for p in app.rglob("*") if p.is_file()):
        rel = path.relative_to(app).as_posix()
        h.update(f"{rel}\0{int(os.access(path, os.X_OK))}\0".encode())
        h.update(bytes.fromhex(sha256_file(path)))
    return h.hexdigest()


def app_bundle_id(app: Path) -> str:
    """CFBundleIdentifier from the app's Info.plist (an .app folder, or Payload/X.app/ in an .ipa)."""
    try:
        if app.is_file():
            with zipfile.ZipFile(app) as z:
                name = next(n for n in z.namelist()
                            if n.startswith("Payload/") and n.count("/") == 2 and n.endswith(".app/Info.plist"))
                info = plistlib.loads(z.read(name))
        else:
            info = plistlib.loads((app / "Info.plist").read_bytes())
    except (OSError, StopIteration, zipfile.BadZipFile, plistlib.InvalidFileException, ValueError) as e:
        raise DevicelabError(f"runner_app: {app} has no readable Info.plist ({e}): give bundle_id in devices.yaml, "
                             "or point runner_app at the built .app/.ipa") from None
    bid = info.get("CFBundleIdentifier")
    if not isinstance(bid, str) or not bid:
        raise DevicelabError(f"runner_app: {app}'s Info.plist has no CFBundleIdentifier: give bundle_id in "
                             "devices.yaml")
    return bid


def battery_state(battery: Mapping[str, Any] | None) -> dict[str, Any]:
    """A state() from IOPMPowerSource's IORegistry entry (DiagnosticsService.get_battery). Only the battery's
    temperature is readable over lockdown; what is not readable is named."""
    unavailable = ["cpufreq: iOS exposes no CPU frequencies over lockdown",
                   "loadavg: iOS exposes no load average over lockdown",
                   "temperatures: only the battery's (IOPMPowerSource Temperature); iOS exposes no CPU thermal zones"]
    state: dict[str, Any] = {"at": utc_now(), "temperatures_c": {}, "cpufreq": {},
                             "charging": None, "power": {}, "unavailable": unavailable}
    if not battery:
        unavailable.append("battery: the iPhone's IORegistry has no IOPMPowerSource entry")
        return state
    temperature = battery.get("Temperature")
    if isinstance(temperature, (int, float)):
        state["temperatures_c"]["battery"] = temperature / 100  # IORegistry: hundredths of a °C
    else:
        unavailable.append("battery temperature: IOPMPowerSource has no Temperature")
    charging = battery.get("IsCharging")
    external = battery.get("ExternalConnected")
    state["charging"] = bool(charging) if charging is not None else None
    state["power"] = {
        "battery_supply": "IOPMPowerSource",
        "battery_percent": battery.get("CurrentCapacity"),
        "battery_status": "charging" if charging else "discharging" if external is False else
                          "not charging" if external else None,
        "plugged": ["external"] if external else [],
        "current_ma": battery.get("InstantAmperage"),
        "voltage_mv": battery.get("Voltage"),
    }
    return state


class IOSProcess(Process):
    """The runner app: launched through DVT, its runner protocol over one TCP connection reached through usbmuxd
    (stdout lines in, stdin bytes out). iOS relays neither its stdout nor its stderr, and DVT reports no exit
    status: the app has ended when DVT no longer sees its pid, cleanly when it said `done` first."""

    def __init__(self, phone: IOSTransport, session: _DvtSession, pid: int, connection: Any) -> None:
        super().__init__()
        self._phone, self._dvt, self.pid, self._conn = phone, session, pid, connection
        self._output_over = threading.Event()
        self._lost: str | None = None
        self._said_done = False
        self._exit: Exit | None = None
        self._extras: ResultExtras | None = None
        self.qos: str | None = None
        self.thermal: list[str] = []
        self._reader = self._start()

    def _start(self) -> Any:
        return self._phone.loop.submit(self._read())

    async def _read(self) -> None:
        try:
            while True:
                raw = await self._conn.reader.readline()
                if not raw:
                    return
                line = raw.rstrip(b"\n")
                self._observe(line)
                self._line(line)
        except (OSError, asyncio.IncompleteReadError) as e:
            self._lost = str(e) or type(e).__name__
        finally:
            self._output_over.set()
            self._ended()

    def _observe(self, line: bytes) -> None:
        """The iOS app's optional keys (ignored elsewhere): ready's `qos`, each batch's `thermal_state`."""
        if not line.startswith(b"{"):
            return
        try:
            event = json.loads(line)
        except ValueError:
            return
        if not isinstance(event, dict):
            return
        kind = event.get("event")
        if kind == "ready" and isinstance(event.get("qos"), str):
            self.qos = event["qos"]
        elif kind == "batch" and isinstance(event.get("thermal_state"), str):
            self.thermal.append(event["thermal_state"])
        elif kind == "done":
            self._said_done = True

    def write(self, data: bytes) -> None:
        async def send() -> None:
            self._conn.writer.write(data)
            await self._conn.writer.drain()

        try:
            self._phone.loop.run(send(), CALL_TIMEOUT_S)
        except Exception:  # noqa: BLE001 - a closed socket or a closed loop: the channel is over either way
            raise ChannelClosedError("the runner app's connection closed") from None

    def close_stdin(self) -> None:
        async def eof() -> None:
            if self._conn.writer.can_write_eof():
                self._conn.writer.write_eof()

        with contextlib.suppress(Exception):
            self._phone.loop.run(eof(), 5)

    def wait(self, timeout: float) -> Exit | None:
        if self._exit is not None:
            return self._exit
        deadline = time.monotonic() + timeout
        while True:
            try:
                running = self._phone.loop.run(self._dvt.is_running(self.pid), CALL_TIMEOUT_S)
            except Exception as e:  # noqa: BLE001 - DVT's connection broke (ConnectionTerminatedError...)
                detail = f"DVT: {type(e).__name__}: {e}"
                if self._phone.gone():
                    self._exit = Exit(None, lost=self._phone.why_gone(detail))
                else:
                    self._exit = Exit(None, detail=f"the runner app's fate is unknown ({detail})")
                return self._exit
            if not running:
                self._output_over.wait(max(0.0, min(2.0, deadline - time.monotonic())))
                if self._lost and self._phone.gone():
                    self._exit = Exit(None, lost=self._phone.why_gone(self._lost))
                else:
                    self._exit = Exit(0) if self._said_done else \
                        Exit(None, detail="the runner app ended before saying `done` (iOS reports no exit status "
                                          "through DVT)")
                return self._exit
            if time.monotonic() >= deadline:
                return None
            time.sleep(POLL_S)

    def kill(self) -> str:
        with contextlib.suppress(Exception):
            self._phone.loop.run(self._dvt.kill(self.pid), CALL_TIMEOUT_S)
        with contextlib.suppress(Exception):
            self._phone.loop.run(self._conn.close(), 5)
        self._output_over.wait(5)
        return "the runner app was killed (DVT ProcessControl, SIGKILL)"

    def extras(self) -> ResultExtras:
        """QoS, thermal state before/after, peak physFootprint and Energy Impact: what the app and DVT said."""
        if self._extras is not None:
            return self._extras
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._phone.loop.run(self._conn.close(), 5)
        try:
            samples = self._phone.loop.run(self._dvt.stop(), 15)
        except Exception as e:  # noqa: BLE001 - the phone went away: what was sampled so far is lost with it
            samples = {"sysmontap_error": f"{type(e).__name__}: {e}"}
        ext: dict[str, Any] = {}
        notes: list[str] = []
        if self.qos:
            ext["ios_qos"] = self.qos
        if self.thermal:
            ext["ios_thermal_state"] = {"before": self.thermal[0], "after": self.thermal[-1]}
        peak = samples.get("phys_footprint_peak")
        if isinstance(peak, int):
            ext["phys_footprint_bytes"] = peak
        else:
            notes.append(f"no physFootprint sample of the runner app: {samples.get('sysmontap_error') or 'none taken'}")
        energy = samples.get("energy")
        if energy:
            ext["ios_energy_impact"] = energy
        elif samples.get("energy_error"):
            notes.append(f"no Energy Impact: {samples['energy_error']}")
        hot = [s for s in (self.thermal[:1] + self.thermal[-1:]) if s in THROTTLING_STATES]
        if hot:
            notes.append(f"iOS's thermal state was {self.thermal[0]} at the first batch and {self.thermal[-1]} at "
                         "the last: at serious or critical iOS slows the device down, so these timings are throttled")
        self._extras = ResultExtras(ext, tuple(notes), bool(hot))
        return self._extras


class IOSBatchProcess(IOSProcess):
    """The runner app in batch mode (devices.yaml `channel: batch`): launched with just its config, which asks for a
    fixed count of iterations and a results file; nobody connects to it. A watcher polls DVT's is_running_pid until
    the app has ended (or was killed), then pulls the app's stderr file and the results file through house_arrest
    and hands their event lines on as the app's output, so the session parses them as it parses a live channel."""

    def __init__(self, phone: IOSTransport, session: _DvtSession, pid: int, results: str) -> None:
        self._results = results
        super().__init__(phone, session, pid, None)

    def _start(self) -> Any:
        watcher = threading.Thread(target=self._watch, name=f"devicelab-ios-batch-{self.pid}", daemon=True)
        watcher.start()
        return watcher

    def _watch(self) -> None:
        try:
            while True:
                try:
                    running = self._phone.loop.run(self._dvt.is_running(self.pid), CALL_TIMEOUT_S)
                except Exception as e:  # noqa: BLE001 - DVT's connection broke (ConnectionTerminatedError...)
                    detail = f"DVT: {type(e).__name__}: {e}"
                    self._exit = Exit(None, lost=self._phone.why_gone(detail)) if self._phone.gone() else \
                        Exit(None, detail=f"the runner app's fate is unknown ({detail})")
                    return
                if not running:
                    break
                time.sleep(POLL_S)
            try:
                err = self._phone.read_file(RUNNER_STDERR)
                lines = self._phone.read_file(self._results)
            except TransportLostError as e:
                self._exit = Exit(None, lost=str(e))
                return
            except OSError as e:
                self._exit = Exit(None, detail=f"the runner app ended; its files could not be pulled ({e})")
                return
            if err:
                self._stderr(err)
            for line in (lines or b"").splitlines():
                self._observe(line)
                self._line(line)
            self._exit = Exit(0) if self._said_done else Exit(None, detail=(
                "the runner app ended before its results file said `done` (iOS reports no exit status through DVT)"
                if lines is not None else f"the runner app ended without writing {self._results}"))
        finally:
            self._output_over.set()
            self._ended()

    def write(self, data: bytes) -> None:
        raise ChannelClosedError("batch mode: the runner app reads no commands")

    def close_stdin(self) -> None:
        pass  # there is no channel: the app stops by itself after its batch

    def wait(self, timeout: float) -> Exit | None:
        if not self._output_over.wait(max(0.0, timeout)):
            return None
        return self._exit

    def kill(self) -> str:
        with contextlib.suppress(Exception):
            self._phone.loop.run(self._dvt.kill(self.pid), CALL_TIMEOUT_S)
        self._output_over.wait(CALL_TIMEOUT_S)
        return "the runner app was killed (DVT ProcessControl, SIGKILL)"


class _DvtSession:
    """One DVT connection for one runner app: ProcessControl (launch, kill), DeviceInfo (is it running) and, while
    it runs, Sysmontap (physFootprint every 0.25 s) and EnergyMonitor (unitless Energy Impact), on its own loop."""

    def __init__(self, provider: Any) -> None:
        self.provider = provider
        self.pc: Any = None
        self.info: Any = None
        self.samplers: list[asyncio.Task[None]] = []
        self.peak: int | None = None
        self.sysmontap_error: str | None = None
        self.energy: list[dict[str, Any]] = []
        self.energy_error: str | None = None

    async def open(self) -> None:
        from pymobiledevice3.services.dvt.instruments.device_info import DeviceInfo
        from pymobiledevice3.services.dvt.instruments.dvt_provider import DvtProvider
        from pymobiledevice3.services.dvt.instruments.process_control import ProcessControl

        self.dvt = DvtProvider(self.provider)
        await self.dvt.connect()
        self.pc = ProcessControl(self.dvt)
        await self.pc.connect()
        self.info = DeviceInfo(self.dvt)
        await self.info.connect()

    async def launch(self, bundle_id: str, arguments: list[str], environment: dict[str, str]) -> int:
        return int(await self.pc.launch(bundle_id, arguments=arguments, environment=environment, kill_existing=True))

    async def is_running(self, pid: int) -> bool:
        return bool(await self.info.is_running_pid(pid))

    async def kill(self, pid: int) -> None:
        await self.pc.kill(pid)

    def sample(self, pid: int) -> None:
        self.samplers = [asyncio.ensure_future(self._sysmontap(pid)), asyncio.ensure_future(self._energy(pid))]

    async def _sysmontap(self, pid: int) -> None:
        from pymobiledevice3.services.dvt.instruments.sysmontap import Sysmontap

        try:
            tap = await Sysmontap.create(self.dvt, interval=SYSMONTAP_INTERVAL_MS)
            async with tap:
                async for processes in tap.iter_processes():
                    for row in processes:
                        if row.get("pid") == pid and isinstance(row.get("physFootprint"), int):
                            self.peak = max(self.peak or 0, row["physFootprint"])
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - a sampler that fails leaves the row without the figure, said why
            self.sysmontap_error = f"Sysmontap: {type(e).__name__}: {e}"

    async def _energy(self, pid: int) -> None:
        from pymobiledevice3.services.dvt.instruments.energy_monitor import EnergyMonitor

        try:
            async with EnergyMonitor(self.dvt, [pid]) as monitor:
                async for sample in monitor:
                    row = sample.get(pid) if isinstance(sample, dict) else None
                    if row is None and isinstance(sample, dict):
                        row = sample.get(str(pid))
                    if isinstance(row, dict):
                        self.energy.append(row)
                    await asyncio.sleep(1.0)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001
            self.energy_error = f"EnergyMonitor: {type(e).__name__}: {e}"

    async def stop(self) -> dict[str, Any]:
        for task in self.samplers:
            task.cancel()
        await asyncio.gather(*self.samplers, return_exceptions=True)
        self.samplers = []
        with contextlib.suppress(Exception):
            await self.dvt.close()
        energy: dict[str, Any] | None = None
        scores = [r["energy.cost"] for r in self.energy if isinstance(r.get("energy.cost"), (int, float))]
        if scores:
            energy = {"unit": "Energy Impact (Xcode's unitless score; not joules)", "samples": len(scores),
                      "mean": round(sum(scores) / len(scores), 4), "max": max(scores)}
            for part in ("cpu", "gpu", "networking", "display", "location", "appstate", "overhead"):
                values = [r[f"energy.{part}.cost"] for r in self.energy
                          if isinstance(r.get(f"energy.{part}.cost"), (int, float))]
                if values:
                    energy[f"{part}_mean"] = round(sum(values) / len(values), 4)
        elif self.energy and not self.energy_error:
            self.energy_error = "EnergyMonitor returned samples without energy.cost (some iOS 18 builds)"
        return {"phys_footprint_peak": self.peak, "sysmontap_error": self.sysmontap_error, "energy": energy,
                "energy_error": self.energy_error}


class IOSTransport(Transport):
    kind = "ios"
    pin_method = "none: iOS has no CPU-affinity API (threads only)"
    cooldown_poll_seconds = 1.0  # each read is a lockdown round trip; the battery cools over tens of seconds
    lockstep = False  # DVT launches one instance of an app: a second launch kills the first (KillExisting)
    missing_probe_note = False  # no iOS app can exec dlprobe: memory is Sysmontap's physFootprint, always
    slow_clock_ramp = True

    def __init__(self, entry: DeviceEntry) -> None:
        super().__init__(entry)
        o = entry.options
        self.udid: str = str(o.get("udid") or entry.id)
        self.address: str | None = o.get("usbmux_address") or os.environ.get("USBMUXD_SOCKET_ADDRESS") or None
        self.records: Path | None = Path(o["pairing_records"]).expanduser() if o.get("pairing_records") else None
        self.app: Path | None = Path(o["runner_app"]).expanduser() if o.get("runner_app") else None
        self._bundle_id: str | None = o.get("bundle_id")
        # channel: batch — the runner app gets its iteration count in its config and is never connected to.
        self.batch = o.get("channel", "tcp") == "batch"
        host, _, port = str(o.get("tunneld_address") or "127.0.0.1:49151").rpartition(":")
        self.tunneld: tuple[str, int] = (host, int(port))
        self._app_sha: str | None = None
        self.loop = DeviceLoop(f"devicelab-ios-{self.udid[:12]}")
        self._ld: Any = None
        self._lock: asyncio.Lock | None = None
        self._facts: DeviceFacts | None = None
        self._version = "?"
        self._gone: str | None = None
        self._local: dict[str, Path] = {}  # device path → the local file put() placed there (configs are rewritten)

    # ---- the connection

    def loop_closed(self) -> bool:
        return self.loop._closed

    async def _lockdown(self, autopair: bool = True) -> Any:
        from pymobiledevice3.lockdown import create_using_usbmux

        if self._ld is None:
            self._ld = await create_using_usbmux(serial=self.udid, usbmux_address=self.address,
                                                 pairing_records_cache_folder=self.records, autopair=autopair,
                                                 pair_timeout=0)
            self._version = str(self._ld.all_values.get("ProductVersion") or "?")
        return self._ld

    async def _listed(self) -> list[str]:
        from pymobiledevice3 import usbmux

        return [d.serial for d in await usbmux.list_devices(usbmux_address=self.address)]

    def gone(self) -> bool:
        """Whether usbmuxd no longer lists the iPhone (or cannot be reached at all)."""
        try:
            return not any(s.replace("-", "") == self.udid.replace("-", "")
                           for s in self.loop.run(self._listed(), 10))
        except Exception:  # noqa: BLE001 - usbmuxd itself gone counts as the phone gone
            return True

    def why_gone(self, detail: str) -> str:
        if self.gone():
            try:
                listed = self.loop.run(self._listed(), 10)
            except Exception:  # noqa: BLE001
                listed = []
            self._gone = f"{detail}; {errors.not_attached(self.udid, listed)}"
            self._ld = None
            return self._gone
        return detail

    def call(self, what: str, make: Callable[[], Awaitable[T]], timeout: float = CALL_TIMEOUT_S) -> T:
        """Run one exchange with the iPhone on its loop, as the session needs it: a fault the user can fix is an
        IOSSetupError with its one line; a phone usbmuxd no longer lists is a TransportLostError; anything else
        the iPhone refused is a plain OSError (a failed row). A broken connection is retried once."""
        async def guarded() -> T:
            if self._lock is None:
                self._lock = asyncio.Lock()
            async with self._lock:
                return await make()

        for attempt in (1, 2):
            try:
                return self.loop.run(guarded(), timeout)
            except (TransportLostError, DevicelabError):
                raise
            except Exception as e:  # noqa: BLE001 - pymobiledevice3 raises many kinds; each is sorted below
                line = errors.classify(e, self.udid, self._version, self._bundle_id, self.address)
                if line is not None:
                    raise IOSSetupError(line) from None
                self._ld = None  # the next call opens lockdown again
                detail = f"{what}: {type(e).__name__}: {e}".rstrip(": ")
                if self.gone():
                    raise TransportLostError(self.why_gone(detail)) from None
                # A broken connection (lockdown's, a service's) is tried once more on a fresh one; a refusal is not.
                broken = _connection_fault(e) or (isinstance(e, OSError) and not _afc_refusal(e))
                if attempt == 2 or not broken:
                    raise OSError(detail) from None
        raise AssertionError("unreachable")

    async def _house_arrest(self) -> Any:
        from pymobiledevice3.services.house_arrest import HouseArrestService

        return await HouseArrestService.create(await self._lockdown(), self.bundle_id(), documents_only=False)

    # ---- facts and state

    def bundle_id(self) -> str:
        if self._bundle_id is None:
            if self.app is None:
                raise DevicelabError(f"device {self.id}: runner_app is not set in devices.yaml (the signed runner "
                                     "app; `devicelab build-native --target ios` prints the steps)")
            self._bundle_id = app_bundle_id(self.app)
        return self._bundle_id

    def app_sha256(self) -> str | None:
        if self._app_sha is None and self.app is not None and self.app.exists():
            self._app_sha = app_sha256(self.app)
        return self._app_sha

    def facts(self) -> DeviceFacts:
        if self._facts is None:
            try:
                values = self.call("reading lockdown's values", self._values)
            except OSError as e:
                raise DevicelabError(f"device {self.id}: {e}") from None
            sha = self.app_sha256()
            version = str(values.get("ProductVersion") or "?")
            self._facts = DeviceFacts(
                id=self.id, kind=self.kind, model=str(values.get("ProductType") or "unknown"),
                os=f"iOS {version}" + (f" ({values['BuildVersion']})" if values.get("BuildVersion") else ""),
                abi=str(values.get("CPUArchitecture") or "unknown"), cpu_ids=(), clusters=(), manufacturer="Apple",
                extra={"udid": self.udid, "product_type": values.get("ProductType"), "product_version": version,
                       "cpu_architecture": values.get("CPUArchitecture"),
                       "hardware_model": values.get("HardwareModel"), "device_name": values.get("DeviceName"),
                       "paired": values.get("_paired"), "usbmux_address": self.address,
                       "runner_app": str(self.app) if self.app else None, "runner_app_sha256": sha,
                       # The runner app is dlbench's core: its build, not the host's, is what runs here.
                       "engine_versions": {p: f"app-{sha[:16]}" for p in RUNNER_PROGRAMS} if sha else {},
                       "cpus_note": "iOS reports no CPU topology over lockdown and has no CPU-affinity API"})
        return self._facts

    async def _values(self) -> dict[str, Any]:
        """lockdown's values; an iPhone that is not paired still lists (without provoking the trust dialog)."""
        from pymobiledevice3.lockdown import create_using_usbmux

        try:
            ld = await self._lockdown()
            return {**ld.all_values, "_paired": True}
        except Exception as e:  # noqa: BLE001
            if errors.classify(e, self.udid, "?") not in (errors.not_paired(self.udid),
                                                           errors.trust_pending(self.udid)):
                raise
        ld = await create_using_usbmux(serial=self.udid, usbmux_address=self.address,
                                       pairing_records_cache_folder=self.records, autopair=False)
        try:
            return {**ld.all_values, "_paired": bool(ld.paired)}
        finally:
            await ld.close()

    def battery(self) -> dict[str, Any] | None:
        """IOPMPowerSource's IORegistry entry (InstantAmperage, Voltage, Temperature, IsCharging...)."""
        async def read() -> dict[str, Any] | None:
            from pymobiledevice3.services.diagnostics import DiagnosticsService

            async with DiagnosticsService(lockdown=await self._lockdown()) as diagnostics:
                return await diagnostics.get_battery()

        return self.call("reading the battery", read)

    def state(self) -> dict[str, Any]:
        return battery_state(self.battery())

    # ---- files

    def put(self, files: Sequence[tuple[str, Path]]) -> Placed:
        start = time.monotonic()
        wanted = [(path, Path(local).resolve()) for path, (_, local) in zip(placements(
            [(name, sha256_file(Path(local))) for name, local in files]), files)]
        for path, local in wanted:
            self._local[path] = local

        async def place() -> tuple[int, int]:
            async with await self._house_arrest() as afc:
                manifest = await _read_json(afc, MANIFEST) or {}
                pushed = sent = 0
                for path, local in dict(wanted).items():
                    size = local.stat().st_size
                    if manifest.get(path) == size:
                        continue
                    await afc.makedirs(posixpath.dirname(path))
                    # Written beside, then renamed: a push cut off by a disconnect never leaves a truncated file
                    # under its final, trusted name.
                    await afc.set_file_contents(f"{path}.part", local.read_bytes())
                    await afc.rename(f"{path}.part", path)
                    manifest[path] = size
                    pushed += 1
                    sent += size
                if pushed:
                    await afc.set_file_contents(MANIFEST, json.dumps(manifest).encode())
                return pushed, sent

        pushed, sent = self.call("placing files in the runner app's container", place, PUSH_TIMEOUT_S)
        return Placed([p for p, _ in wanted], Transfer(files=len(wanted), pushed_files=pushed, bytes=sent,
                                                       seconds=round(time.monotonic() - start, 3)))

    def run_folder(self, links: Mapping[str, str]) -> str:
        """A folder under Documents/devicelab/runs holding the run's top-level JSON files (the runner config)
        rewritten to name the content-addressed files and folders they refer to; other files stay where put()
        placed them (a folder such as a Core ML package whole, under one path: files.placements)."""
        folder = f"{RUNS}/{secrets.token_hex(6)}"
        writes: dict[str, bytes] = {}
        for rel, target in links.items():
            dst = f"{folder}/{relative_name(rel)}"
            local = self._local.get(target)
            if "/" not in relative_name(rel) and rel.endswith(".json") and local is not None:
                text = config_bytes(local.read_bytes(), posixpath.dirname(dst), links)
                if text is not None:
                    writes[dst] = text

        async def make() -> None:
            async with await self._house_arrest() as afc:
                await afc.makedirs(folder)
                for dst, data in writes.items():
                    await afc.makedirs(posixpath.dirname(dst))
                    await afc.set_file_contents(dst, data)

        try:
            self.call("preparing the run folder", make)
        except BaseException:
            with contextlib.suppress(OSError):
                self.remove(folder)
            raise
        return folder

    def pull(self, path: str, local: Path) -> bool:
        data = self.read_file(path)
        if data is None:
            return False
        local.write_bytes(data)
        return True

    def read_file(self, path: str) -> bytes | None:
        """A file in the app's container, or None when it does not exist."""
        async def get() -> bytes | None:
            from pymobiledevice3.exceptions import AfcFileNotFoundError

            async with await self._house_arrest() as afc:
                try:
                    return await afc.get_file_contents(path)  # type: ignore[no-any-return]
                except AfcFileNotFoundError:
                    return None

        return self.call(f"pulling {path}", get, PUSH_TIMEOUT_S)

    def remove(self, folder: str) -> None:
        norm = run_folder_of(folder)

        async def rm() -> None:
            async with await self._house_arrest() as afc:
                await afc.rm(norm, force=True)

        self.call(f"removing {norm}", rm)

    # ---- the runner app

    def installed_program(self, name: str) -> str | None:
        if name not in RUNNER_PROGRAMS:
            return None
        return f"app:{self.bundle_id()}"

    async def _dvt_source(self) -> Any:
        """What DVT goes through: lockdown up to iOS 16; on 17+ the RSD tunnel that tunneld keeps for the phone."""
        ld = await self._lockdown()
        if _major(self._version) < 17:
            return ld
        return await rsd_for(self.udid, self._version, self.tunneld)

    def spawn(self, argv: Sequence[str], env: Mapping[str, str], cpus: Sequence[int], cwd: str | None) -> Process:
        if cpus:
            raise OSError(f"CPUs {list(cpus)}: affinity and cpus are unsupported on iOS (no CPU-affinity API; "
                          "threads only)")
        program = argv[0] if argv else ""
        if not program.startswith("app:"):
            raise OSError(f"{program!r} cannot run on an iPhone: only the installed runner app can (no iOS app "
                          "can exec a pushed program)")
        env_assignments(env)  # names checked: they reach the app's environment as they are
        bundle_id = program[len("app:"):]
        port_file = f"{cwd or ROOT}/port-{secrets.token_hex(4)}.json"
        # Batch mode: just the config (its `iterations` and `results_file` say the rest); else the TCP channel.
        arguments = [*argv[1:]] if self.batch else ["--listen", "0", "--port-file", port_file, *argv[1:]]
        if self.batch:
            async def no_stale_stderr() -> None:
                # The app rewrites its stderr file at launch; one left from an earlier launch must not be taken for
                # this one's if the app dies before that.
                async with await self._house_arrest() as afc:
                    await afc.rm(RUNNER_STDERR, force=True)

            self.call("removing the runner app's old stderr file", no_stale_stderr)

        async def launch() -> tuple[_DvtSession, int]:
            session = _DvtSession(await self._dvt_source())
            await session.open()
            try:
                pid = await session.launch(bundle_id, arguments, dict(env))
            except Exception as e:  # noqa: BLE001 - DVT's refusal of the launch (no app, a bad signature)
                with contextlib.suppress(Exception):
                    await session.dvt.close()
                if not _connection_fault(e) and errors.classify(e, self.udid, self._version, bundle_id) is None:
                    raise IOSSetupError(errors.app_unusable(self.udid, bundle_id, f"{type(e).__name__}: {e}")) \
                        from None
                raise
            return session, pid

        session, pid = self.call("launching the runner app", launch)
        if self.batch:
            self.loop.run(_start_sampling(session, pid), 10)
            return IOSBatchProcess(self, session, pid, f"{cwd or ROOT}/{BATCH_RESULTS_FILE}")
        try:
            port = self._wait_port(session, pid, port_file)
            conn = self.call("connecting to the runner app", lambda: self._connect(port))
        except BaseException:
            with contextlib.suppress(Exception):
                self.loop.run(session.kill(pid), 10)
            with contextlib.suppress(Exception):
                self.loop.run(session.stop(), 10)
            raise
        self.loop.run(_start_sampling(session, pid), 10)
        return IOSProcess(self, session, pid, conn)

    def _wait_port(self, session: _DvtSession, pid: int, port_file: str) -> int:
        """The port the runner app listens on, from its port file in the container (polled through AFC)."""
        deadline = time.monotonic() + PORT_FILE_TIMEOUT_S

        async def poll() -> tuple[int, int | None] | None:
            from pymobiledevice3.exceptions import AfcFileNotFoundError

            async with await self._house_arrest() as afc:
                while time.monotonic() < deadline:
                    try:
                        found = port_file_port(await afc.get_file_contents(port_file))
                    except AfcFileNotFoundError:
                        found = None
                    if found is not None:
                        with contextlib.suppress(Exception):
                            await afc.rm(port_file, force=True)
                        return found
                    if not await session.is_running(pid):
                        return None
                    await asyncio.sleep(POLL_S)
            return None

        found = self.call("waiting for the runner app to listen", poll, PORT_FILE_TIMEOUT_S + 30)
        if found is None:
            raise OSError(f"the runner app (pid {pid}) did not listen within {PORT_FILE_TIMEOUT_S:g} s (it wrote no "
                          f"{port_file}; iOS relays no stderr: run it from Xcode to see why)")
        return found[0]

    async def _connect(self, port: int) -> Any:
        from pymobiledevice3.service_connection import ServiceConnection

        return await ServiceConnection.create_using_usbmux(self.udid, port, usbmux_address=self.address)

    # ---- life cycle

    def begin_run(self) -> None:
        """Everything a user must fix is found here, before anything runs, each as its one line: usbmuxd, the
        phone attached, paired and unlocked, Developer Mode, the runner app installed (when its content changed)
        and launchable, the developer image mounted (and on iOS 17+ the tunnel)."""
        try:
            self._begin()
        except OSError as e:
            raise DevicelabError(f"device {self.id}: {e}") from None

    def _begin(self) -> None:
        if self.app is None:
            raise DevicelabError(f"device {self.id}: runner_app is not set in devices.yaml (the signed runner app; "
                                 "`devicelab build-native --target ios` prints the steps)")
        self.facts()
        bundle_id = self.bundle_id()
        sha = self.app_sha256()

        async def developer_mode() -> bool:
            ld = await self._lockdown()
            if _major(self._version) < 16:
                return True  # Developer Mode appeared in iOS 16
            return bool(await ld.get_developer_mode_status())

        if not self.call("reading Developer Mode", developer_mode):
            raise IOSSetupError(errors.developer_mode_off(self.udid))

        async def installed_sha() -> str | None:
            from pymobiledevice3.services.installation_proxy import InstallationProxyService

            async with InstallationProxyService(lockdown=await self._lockdown()) as proxy:
                apps = await proxy.get_apps(bundle_identifiers=[bundle_id])
            if bundle_id not in apps:
                return None
            async with await self._house_arrest() as afc:
                record = await _read_json(afc, INSTALLED) or {}
            return record.get("sha256") if isinstance(record.get("sha256"), str) else ""

        if self.call("looking up the runner app", installed_sha) != sha:
            self.on_event("notice", {"device": self.id, "message": f"installing the runner app {bundle_id} "
                                                                  f"({self.app.name})"})
            self._install(bundle_id, sha)

        async def probe_launch() -> None:
            """DVT opens (image mounted; on 17+ the tunnel) and iOS launches the app (signature valid): the app runs
            `--version` and ends by itself; it is killed if it has not."""
            session = _DvtSession(await self._dvt_source())
            await session.open()
            try:
                try:
                    pid = await session.launch(bundle_id, ["--version"], {})
                except Exception as e:  # noqa: BLE001 - DVT's refusal of the launch: no app, a bad signature
                    if not _connection_fault(e) and errors.classify(e, self.udid, self._version, bundle_id) is None:
                        raise IOSSetupError(errors.app_unusable(self.udid, bundle_id, f"{type(e).__name__}: {e}")) \
                            from None
                    raise
                for _ in range(25):
                    if not await session.is_running(pid):
                        break
                    await asyncio.sleep(POLL_S)
                else:
                    await session.kill(pid)
            finally:
                with contextlib.suppress(Exception):
                    await session.dvt.close()

        self.call("launching the runner app", probe_launch)

    def _install(self, bundle_id: str, sha: str | None) -> None:
        assert self.app is not None
        app = self.app

        async def install() -> None:
            from pymobiledevice3.services.installation_proxy import InstallationProxyService

            async with InstallationProxyService(lockdown=await self._lockdown()) as proxy:
                try:
                    await proxy.install_from_local(app)
                except Exception as e:  # noqa: BLE001 - installd's refusal: a bad or expired signature
                    if type(e).__name__ == "AppInstallError":
                        raise IOSSetupError(errors.app_unusable(self.udid, bundle_id, e)) from None
                    raise
            async with await self._house_arrest() as afc:
                await afc.makedirs(ROOT)
                await afc.set_file_contents(INSTALLED, json.dumps({"sha256": sha, "bundle_id": bundle_id,
                                                                   "app": app.name, "at": utc_now()}).encode())

        self.call("installing the runner app", install, INSTALL_TIMEOUT_S)

    def clean(self) -> dict[str, Any]:
        async def rm() -> int | None:
            async with await self._house_arrest() as afc:
                if not await afc.exists(ROOT):
                    return None
                size = 0
                async for folder, _dirs, names in afc.walk(ROOT):
                    for name in names:
                        with contextlib.suppress(Exception):
                            size += int((await afc.stat(f"{folder}/{name}")).get("st_size", 0))
                await afc.rm(ROOT, force=True)
                return size

        try:
            size = self.call(f"removing {ROOT}", rm)
        except DevicelabError as e:
            raise OSError(str(e)) from None
        where = f"{ROOT} in {self.bundle_id()}'s container"
        return {"device": self.id, "removed": where if size is not None else None, "bytes": size or 0}

    def close(self) -> None:
        async def shut() -> None:
            if self._ld is not None:
                with contextlib.suppress(Exception):
                    await self._ld.close()
                self._ld = None

        with contextlib.suppress(Exception):
            self.loop.run(shut(), 5)
        self.loop.close()
        self.loop = DeviceLoop(f"devicelab-ios-{self.udid[:12]}")  # a later call (a second run) finds a live loop
        self._lock = None  # an asyncio.Lock belongs to the loop it was first used on

    # ---- hooks

    def native_targets(self) -> tuple[str, ...] | str:
        return ("an iOS app cannot exec devicelab's native programs: dlbench runs as the runner app "
                "(runner_app in devices.yaml), and dlprobe does not run on iOS")

    def energy_source(self) -> Any:
        from devicelab.devices.ios.energy import IOSBatterySource

        return IOSBatterySource(self)

    def profile_key(self) -> str:
        return f"ios-{self.udid}"

    def result_extras(self, before: dict[str, Any] | None, after: dict[str, Any] | None) -> ResultExtras:
        return ResultExtras({}, (NOT_PINNED,))


def _connection_fault(error: BaseException) -> bool:
    """The connection broke (the phone may be gone), as opposed to the iPhone answering with a refusal."""
    names = {c.__name__ for c in type(error).__mro__}
    return isinstance(error, (ConnectionError, asyncio.IncompleteReadError, TimeoutError)) or bool(
        names & {"ConnectionTerminatedError", "DeviceNotFoundError", "NoDeviceConnectedError", "MuxException"})


def _afc_refusal(error: BaseException) -> bool:
    return any(c.__name__ == "AfcException" for c in type(error).__mro__)


async def _start_sampling(session: _DvtSession, pid: int) -> None:
    session.sample(pid)


async def _read_json(afc: Any, path: str) -> Any:
    from pymobiledevice3.exceptions import AfcFileNotFoundError

    try:
        return json.loads(await afc.get_file_contents(path))
    except (AfcFileNotFoundError, ValueError):
        return None


async def rsd_for(udid: str, version: str, tunneld: tuple[str, int] = ("127.0.0.1", 49151)) -> Any:
    """The RemoteServiceDiscoveryService of the tunnel tunneld keeps for this iPhone (iOS 17+), or IOSSetupError
    saying what to start."""
    from pymobiledevice3.exceptions import TunneldConnectionError
    from pymobiledevice3.tunneld import api

    try:
        rsd = await api.get_tunneld_device_by_udid(udid, tunneld)
    except TunneldConnectionError as e:
        raise IOSSetupError(errors.tunnel_missing(udid, version, f"tunneld is not running: {e}")) from None
    if rsd is None:
        raise IOSSetupError(errors.tunnel_missing(udid, version, "tunneld has no tunnel to this iPhone"))
    return rsd

