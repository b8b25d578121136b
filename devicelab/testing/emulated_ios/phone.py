"""The emulated iPhone: lockdownd on device port 62078, the services it starts, the apps and their processes,
and the faults a test can switch on. Attach it to an `EmulatedUsbmuxd` to make it reachable."""

from __future__ import annotations

import hashlib
import plistlib
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from devicelab.testing.emulated_ios._wire import Conn, ConnClosedError, recv_plist_be, send_plist_be
from devicelab.testing.emulated_ios.afc import serve_afc
from devicelab.testing.emulated_ios.apps import Apps, LaunchError
from devicelab.testing.emulated_ios.dvt import serve_dvt
from devicelab.testing.emulated_ios.pairing import DeviceIdentity, HostPairing, mint_pair_record, server_context
from devicelab.testing.emulated_ios.services import (serve_diagnostics, serve_house_arrest, serve_image_mounter,
                                                     serve_installation_proxy)

if TYPE_CHECKING:
    from devicelab.testing.emulated_ios.usbmuxd import EmulatedUsbmuxd

LOCKDOWN_PORT = 62078
FIRST_SERVICE_PORT = 49152  # iOS hands out service ports from the dynamic range

DVT_SERVICE = "com.apple.instruments.remoteserver.DVTSecureSocketProxy"
AFC_SERVICE = "com.apple.afc"
HOUSE_ARREST_SERVICE = "com.apple.mobile.house_arrest"
INSTALLATION_PROXY_SERVICE = "com.apple.mobile.installation_proxy"
DIAGNOSTICS_SERVICE = "com.apple.mobile.diagnostics_relay"
IMAGE_MOUNTER_SERVICE = "com.apple.mobile.mobile_image_mounter"

# What lockdownd answers GetValue with before a session: the identity keys only
_PUBLIC_VALUES = ("BuildVersion", "DeviceClass", "DeviceColor", "DeviceName", "DevicePublicKey", "HardwareModel",
                  "ProductName", "ProductType", "ProductVersion", "ProtocolVersion", "UniqueChipID",
                  "UniqueDeviceID", "CPUArchitecture", "HardwarePlatform", "WiFiAddress", "ChipID")


@dataclass
class Faults:
    """Switch these on to make the phone fail as a real one does; each is read at request time."""

    developer_mode_off: bool = False  # DeveloperModeStatus False; the DVT service is not offered
    image_not_mounted: bool = False  # no developer disk image: the DVT service is not offered
    locked: bool = False  # passcode-locked: StartService and Pair answer PasswordProtected
    not_paired: bool = False  # this host's pair record is unknown: usbmuxd has none, StartSession refuses it
    # what the Trust dialog does with a Pair request from an unpaired host
    trust_dialog: Literal["pending", "accept", "deny"] = "pending"
    # not paired, and the Trust dialog is up with nobody to tap it (not_paired + trust_dialog "pending")
    pairing_pending: bool = False
    signature_expired: bool = False  # launching any app fails as with an expired provisioning profile


@dataclass
class BatteryState:
    """The IOPMPowerSource entry diagnostics_relay reports; set the fields to what the test needs."""

    instant_amperage_ma: int = -420  # negative while discharging
    voltage_mv: int = 3870
    temperature_centi_c: int = 3050  # 1/100 degC
    is_charging: bool = False
    external_connected: bool = False
    current_capacity_percent: int = 81
    raw_max_capacity_mah: int = 2950
    design_capacity_mah: int = 3095
    cycle_count: int = 212
    # A draw the test sets, not a model of a phone: this many mA more (discharging) while an app process the phone
    # launched is busy (busy_cores of CPU or more since the previous battery read). 0: the same current idle and busy.
    busy_extra_ma: int = 0
    busy_cores: float = 0.2

    def ioregistry(self, busy: bool = False) -> dict[str, Any]:
        amperage = self.instant_amperage_ma
        if busy and not self.is_charging:
            amperage -= self.busy_extra_ma
        return {
            "Amperage": amperage,
            "InstantAmperage": amperage,
            "Voltage": self.voltage_mv,
            "AppleRawBatteryVoltage": self.voltage_mv,
            "Temperature": self.temperature_centi_c,
            "IsCharging": self.is_charging,
            "ExternalConnected": self.external_connected,
            "ExternalChargeCapable": self.external_connected,
            "FullyCharged": self.current_capacity_percent >= 100,
            "CurrentCapacity": self.current_capacity_percent,
            "MaxCapacity": 100,
            "AppleRawCurrentCapacity": self.raw_max_capacity_mah * self.current_capacity_percent // 100,
            "AppleRawMaxCapacity": self.raw_max_capacity_mah,
            "DesignCapacity": self.design_capacity_mah,
            "CycleCount": self.cycle_count,
            "BatteryInstalled": True,
            "AtCriticalLevel": self.current_capacity_percent <= 5,
            "UpdateTime": int(time.time()),
        }


@dataclass
class _PendingService:
    name: str
    tls: bool
    host_id: str


@dataclass
class PortHandle:
    """What usbmuxd does with a Connect: `serve` runs the connection to its end; `cancel` releases it unused."""

    serve: Callable[[Conn], None]
    cancel: Callable[[], None] = field(default=lambda: None)


# ProductType -> HardwareModel for the phones tests pose as (kept here rather than read from pymobiledevice3, whose
# only importer in the package is the iOS device kind; a test checks these against the client's own table)
HARDWARE_MODELS = {
    "iPhone12,1": "N104AP", "iPhone13,2": "D53GAP", "iPhone14,2": "D63AP", "iPhone14,5": "D17AP",
    "iPhone15,2": "D73AP", "iPhone15,3": "D74AP", "iPhone16,1": "D83AP", "iPhone16,2": "D84AP",
}


class EmulatedIPhone:
    """An iPhone posing as iOS `product_version` over usbmuxd. Everything it stores lives under `root`: Media/
    (what com.apple.afc shows, PublicStaging included), Bundles/ and Containers/ (installed apps), logs/ (the app
    processes' stdout/stderr, which iOS relays to no one) and lockdown/ (TLS material)."""

    def __init__(self, root: Path, udid: str = "00008110-000A1B2C3D4E5F60", product_type: str = "iPhone14,2",
                 product_version: str = "16.7.2", build_version: str = "20H115",
                 device_name: str = "devicelab emulated iPhone", hardware_model: str | None = None,
                 cpu_architecture: str = "arm64e") -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "Media" / "PublicStaging").mkdir(parents=True, exist_ok=True)
        self.udid = udid
        self.product_type = product_type
        self.product_version = product_version
        self.faults = Faults()
        self.battery = BatteryState()
        self.apps = Apps(self.root)
        self.developer_image_signature = hashlib.sha384(f"developer-image-{udid}".encode()).digest()
        self._identity = DeviceIdentity.mint()
        digits = udid.replace("-", "")
        chip_id = int(digits[:8], 16) if len(digits) == 24 else 0
        ecid = int(digits[8:], 16) if len(digits) == 24 else 0
        wifi = ":".join(f"{b:02x}" for b in hashlib.sha256(udid.encode()).digest()[:6])
        self.values: dict[str, Any] = {
            "ActivationState": "Activated",
            "BasebandVersion": "3.50.02",
            "BuildVersion": build_version,
            "CPUArchitecture": cpu_architecture,
            "ChipID": chip_id,
            "DeviceClass": "iPhone",
            "DeviceColor": "1",
            "DeviceName": device_name,
            "DevicePublicKey": self._identity.public_key_pem,
            "FirmwareVersion": "iBoot-8422.140.50",
            "HardwareModel": hardware_model or HARDWARE_MODELS.get(product_type, "Unknown"),
            "HardwarePlatform": f"t{chip_id:04x}" if chip_id else "unknown",
            "HostAttached": True,
            "ModelNumber": "MLTT3",
            "PasswordProtected": False,
            "ProductName": "iPhone OS",
            "ProductType": product_type,
            "ProductVersion": product_version,
            "ProtocolVersion": "2",
            "RegionInfo": "LL/A",
            "SerialNumber": hashlib.sha256(udid.encode()).hexdigest()[:12].upper(),
            "TimeZone": "UTC",
            "UniqueChipID": ecid,
            "UniqueDeviceID": udid,
            "WiFiAddress": wifi,
        }
        self._domains: dict[str, dict[str, Any]] = {
            "com.apple.international": {"Language": "en", "Locale": "en_US"},
            "com.apple.mobile.battery": {},  # filled from `battery` when asked
            "com.apple.disk_usage": {},
        }
        # the host this phone was paired with before the test began: usbmuxd hands its record to the client
        self._host_record = mint_pair_record(self._identity, system_buid=str(uuid.uuid4()).upper(),
                                             wifi_mac=wifi)
        minted = HostPairing(self._host_record["HostID"], self._host_record["HostCertificate"],
                             self._host_record["RootCertificate"], self._host_record["DeviceCertificate"],
                             self._host_record["EscrowBag"])
        self._minted_host_id = minted.host_id
        self._lock = threading.Lock()
        self._hosts: dict[str, HostPairing] = {minted.host_id: minted}
        self._tls: dict[str, ssl.SSLContext] = {}
        self._services: dict[int, _PendingService] = {}
        self._next_port = FIRST_SERVICE_PORT
        self._conns: set[Conn] = set()
        self._mux: EmulatedUsbmuxd | None = None
        # every lockdownd request's name, in arrival order: a test can tell what a client asked for (a Pair request
        # is what puts the Trust dialog on a real phone's screen)
        self.lockdown_requests: list[str] = []

    # ------------------------------------------------------------------ pairing

    def host_pair_record(self) -> dict[str, Any] | None:
        """The host-side pair record usbmuxd hands out for this phone (None when the host is not paired)."""
        if self.faults.not_paired or self.faults.pairing_pending:
            return None
        return dict(self._host_record)

    def pair_record_folder(self, folder: Path) -> Path:
        """Write the host's pair record as pymobiledevice3 keeps it (`<folder>/<UDID>.plist`), for clients given
        `pairing_records_cache_folder=folder`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self.udid}.plist"
        path.write_bytes(plistlib.dumps(self._host_record))
        path.chmod(0o600)
        return path

    def _known_host(self, host_id: str) -> HostPairing | None:
        if host_id == self._minted_host_id and (self.faults.not_paired or self.faults.pairing_pending):
            return None
        with self._lock:
            return self._hosts.get(host_id)

    def _tls_context(self, host: HostPairing) -> ssl.SSLContext:
        with self._lock:
            context = self._tls.get(host.host_id)
            if context is None:
                context = server_context(host, self._identity, self.root / "lockdown")
                self._tls[host.host_id] = context
            return context

    # ------------------------------------------------------------------ attach / ports

    def _attached(self, mux: EmulatedUsbmuxd) -> None:
        self._mux = mux

    def _detached(self) -> None:
        self._mux = None
        with self._lock:
            conns = list(self._conns)
            self._services.clear()
        for conn in conns:
            conn.abort()

    def _track(self, serve: Callable[[Conn], None]) -> Callable[[Conn], None]:
        def run(conn: Conn) -> None:
            with self._lock:
                self._conns.add(conn)
            try:
                serve(conn)
            except (ConnClosedError, ssl.SSLError, OSError, ValueError, plistlib.InvalidFileException):
                pass  # the host went away or spoke garbage: a real daemon drops the connection too
            finally:
                with self._lock:
                    self._conns.discard(conn)
                conn.abort()
        return run

    def open_port(self, port: int) -> PortHandle | None:
        """usbmuxd's Connect: lockdownd, a service port StartService handed out, or else a port an app process
        listens on (device port == host port on 127.0.0.1). None = refused."""
        if self._mux is None:
            return None
        if port == LOCKDOWN_PORT:
            return PortHandle(self._track(self._serve_lockdown))
        with self._lock:
            pending = self._services.pop(port, None)
        if pending is not None:
            return PortHandle(self._track(lambda conn: self._serve_service(conn, pending)))
        try:
            upstream = socket.create_connection(("127.0.0.1", port), timeout=5)
        except OSError:
            return None
        upstream.settimeout(None)
        up = Conn(upstream)
        return PortHandle(self._track(lambda conn: self._forward(conn, up)), cancel=up.abort)

    def _forward(self, conn: Conn, up: Conn) -> None:
        with self._lock:
            self._conns.add(up)

        def pump(src: Conn, dst: Conn) -> None:
            try:
                while True:
                    data = src.recv(65536)
                    if not data:
                        break
                    dst.sendall(data)
            except ConnClosedError:
                pass
            finally:
                # half-close so the other side sees EOF, as a TCP relay does
                try:
                    dst.sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

        back = threading.Thread(target=pump, args=(up, conn), name="iphone-forward", daemon=True)
        back.start()
        try:
            pump(conn, up)
            back.join()
        finally:
            with self._lock:
                self._conns.discard(up)
            up.abort()

    # ------------------------------------------------------------------ lockdownd

    def _values(self, domain: str | None) -> dict[str, Any] | None:
        if domain is None:
            return {**self.values, "TimeIntervalSince1970": time.time()}
        if domain == "com.apple.security.mac.amfi":
            return {"DeveloperModeStatus": not self.faults.developer_mode_off}
        if domain == "com.apple.mobile.battery":
            return {"BatteryCurrentCapacity": self.battery.current_capacity_percent,
                    "BatteryIsCharging": self.battery.is_charging,
                    "ExternalConnected": self.battery.external_connected}
        found = self._domains.get(domain)
        return None if found is None else dict(found)

    def _serve_lockdown(self, conn: Conn) -> None:
        host: HostPairing | None = None
        while True:
            request = recv_plist_be(conn)
            if request is None:
                return
            name = str(request.get("Request", ""))
            with self._lock:
                self.lockdown_requests.append(name)
            reply: dict[str, Any] = {"Request": name}
            start_tls: ssl.SSLContext | None = None
            if name == "QueryType":
                reply["Type"] = "com.apple.mobile.lockdown"
            elif name == "GetValue":
                domain, key = request.get("Domain"), request.get("Key")
                values = self._values(domain)
                if values is not None and domain is None and host is None:
                    values = {k: v for k, v in values.items() if k in _PUBLIC_VALUES}
                if values is None or (key is not None and key not in values):
                    reply["Error"] = "MissingValue"
                else:
                    reply["Value"] = values if key is None else values[key]
                    if domain is not None:
                        reply["Domain"] = domain
                    if key is not None:
                        reply["Key"] = key
            elif name == "SetValue":
                domain = request.get("Domain")
                key = request.get("Key")
                if host is None:
                    reply["Error"] = "SessionInactive"
                elif isinstance(key, str):
                    self._domains.setdefault(domain or "", {})[key] = request.get("Value")
            elif name == "ValidatePair":
                record = request.get("PairRecord") or {}
                if self._known_host(str(record.get("HostID", ""))) is None:
                    reply["Error"] = "InvalidHostID"
            elif name == "StartSession":
                host = self._known_host(str(request.get("HostID", "")))
                if host is None:
                    reply["Error"] = "InvalidHostID"
                else:
                    reply["SessionID"] = str(uuid.uuid4()).upper()
                    reply["EnableSessionSSL"] = True
                    start_tls = self._tls_context(host)
            elif name == "StopSession":
                reply["Result"] = "Success"
            elif name == "Pair":
                self._pair(request, reply)
            elif name == "Unpair":
                record = request.get("PairRecord") or {}
                with self._lock:
                    self._hosts.pop(str(record.get("HostID", "")), None)
            elif name == "StartService":
                self._start_service(str(request.get("Service", "")), host, reply)
            else:
                reply["Error"] = "InvalidRequest"
            send_plist_be(conn, reply)
            if start_tls is not None:
                conn.start_tls(start_tls)

    def _pair(self, request: dict[str, Any], reply: dict[str, Any]) -> None:
        record = request.get("PairRecord") or {}
        if self.faults.locked:
            reply["Error"] = "PasswordProtected"
            return
        if self.faults.trust_dialog == "pending" or self.faults.pairing_pending:
            reply["Error"] = "PairingDialogResponsePending"
            return
        if self.faults.trust_dialog == "deny":
            reply["Error"] = "UserDeniedPairing"
            return
        try:
            pairing = HostPairing(str(record["HostID"]), bytes(record["HostCertificate"]),
                                  bytes(record["RootCertificate"]), bytes(record["DeviceCertificate"]),
                                  uuid.uuid4().bytes * 2)
        except (KeyError, TypeError):
            reply["Error"] = "InvalidPairRecord"
            return
        with self._lock:
            self._hosts[pairing.host_id] = pairing
            self._tls.pop(pairing.host_id, None)
        reply["EscrowBag"] = pairing.escrow_bag

    def _start_service(self, service: str, host: HostPairing | None, reply: dict[str, Any]) -> None:
        reply["Service"] = service
        if host is None:
            reply["Error"] = "SessionInactive"
            return
        if self.faults.locked:
            reply["Error"] = "PasswordProtected"
            return
        known = {AFC_SERVICE, HOUSE_ARREST_SERVICE, INSTALLATION_PROXY_SERVICE, DIAGNOSTICS_SERVICE,
                 IMAGE_MOUNTER_SERVICE, DVT_SERVICE}
        major = int(self.product_version.split(".")[0])
        if service not in known or (service == DVT_SERVICE and (
                # instruments lives on the developer disk image, runs only in Developer Mode, and from iOS 17 on
                # is reached through the RSD tunnel instead of lockdown
                major >= 17 or self.faults.developer_mode_off or self.faults.image_not_mounted)):
            reply["Error"] = "InvalidService"
            return
        with self._lock:
            port = self._next_port
            self._next_port += 1
            if self._next_port == LOCKDOWN_PORT:
                self._next_port += 1
            tls = service == DVT_SERVICE
            self._services[port] = _PendingService(service, tls, host.host_id)
        reply["Port"] = port
        reply["EnableServiceSSL"] = tls

    def _serve_service(self, conn: Conn, pending: _PendingService) -> None:
        if pending.tls:
            host = self._known_host(pending.host_id)
            if host is None:
                return
            conn.start_tls(self._tls_context(host))
        if pending.name == AFC_SERVICE:
            serve_afc(conn, self.root / "Media")
        elif pending.name == HOUSE_ARREST_SERVICE:
            serve_house_arrest(conn, self)
        elif pending.name == INSTALLATION_PROXY_SERVICE:
            serve_installation_proxy(conn, self)
        elif pending.name == DIAGNOSTICS_SERVICE:
            serve_diagnostics(conn, self)
        elif pending.name == IMAGE_MOUNTER_SERVICE:
            serve_image_mounter(conn, self)
        elif pending.name == DVT_SERVICE:
            # the (TLS) socket itself: serve_dvt sets timeouts on it to keep sysmontap's beat on one thread
            serve_dvt(conn.sock, self)

    def media_path(self, device_path: str) -> Path | None:
        """A com.apple.afc path (what installation_proxy's PackagePath names) on the host; None if it escapes."""
        media = (self.root / "Media").resolve()
        path = (media / device_path.lstrip("/")).resolve()
        return path if path == media or media in path.parents else None

    # ------------------------------------------------------------------ the device DVT drives (serve_dvt)

    def launch(self, bundle_id: str, arguments: list[str], environment: dict[str, str],
               kill_existing: bool) -> int:
        """Run the app's executable as a host process (cwd = its container); raises LaunchError as iOS would."""
        return self.apps.launch(bundle_id, arguments, environment, kill_existing,
                                expired_signature=self.faults.signature_expired)

    def kill(self, pid: int) -> None:
        self.apps.kill(pid)

    def is_running(self, pid: int) -> bool:
        return self.apps.is_running(pid)

    def processes(self) -> list[dict[str, Any]]:
        return self.apps.processes()

    def energy(self, pids: Sequence[int]) -> dict[int, dict[str, Any]]:
        return self.apps.energy(pids)

    def close(self) -> None:
        """Kill the app processes and drop every connection (the phone is switched off)."""
        self.apps.kill_all()
        self._detached()

    def __enter__(self) -> EmulatedIPhone:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["BatteryState", "EmulatedIPhone", "Faults", "LaunchError", "PortHandle"]
