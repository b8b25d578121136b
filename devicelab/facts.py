"""What the controller knows about a device before anything runs on it: inventory entries, facts (CPUs, clusters,
OS, ABI) and each device kind's inventory keys, as data.

Planning and configuration read these and nothing else of a device: they never import a device kind (whose
modules pull in adbutils, pymobiledevice3...). Each kind's transport lives in devicelab/devices/ (docs/devices.md).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Cluster:
    """CPUs that share a micro-architecture (big.LITTLE), ordered by capacity."""

    cpus: tuple[int, ...]
    capacity: int | None = None  # /sys/.../cpu_capacity, the biggest core = 1024
    max_khz: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"cpus": list(self.cpus), "capacity": self.capacity, "max_khz": self.max_khz}


_FACT_KEYS = frozenset({"id", "kind", "model", "os", "abi", "cpus", "cpu_ids", "clusters", "manufacturer",
                        "memory_bytes"})


@dataclass(frozen=True)
class DeviceFacts:
    id: str
    kind: str
    model: str
    os: str
    abi: str
    cpu_ids: tuple[int, ...]
    clusters: tuple[Cluster, ...]
    manufacturer: str | None = None
    memory_bytes: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "model": self.model, "os": self.os, "abi": self.abi,
                "cpus": len(self.cpu_ids), "cpu_ids": list(self.cpu_ids),
                "clusters": [c.to_dict() for c in self.clusters], "manufacturer": self.manufacturer,
                "memory_bytes": self.memory_bytes, **self.extra}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DeviceFacts:
        """The facts `to_dict` wrote (e.g. as a farm agent published them): every key it does not name is extra."""
        clusters = tuple(Cluster(tuple(c["cpus"]), c.get("capacity"), c.get("max_khz")) for c in d.get("clusters", ()))
        return cls(str(d["id"]), str(d["kind"]), str(d["model"]), str(d["os"]), str(d["abi"]),
                   tuple(int(c) for c in d["cpu_ids"]), clusters, d.get("manufacturer"), d.get("memory_bytes"),
                   {k: v for k, v in d.items() if k not in _FACT_KEYS})

    def biggest_cluster(self) -> tuple[int, ...]:
        """The CPUs of the highest-capacity cluster (all CPUs when the device reports no clusters)."""
        if not self.clusters:
            return self.cpu_ids
        return max(self.clusters, key=lambda c: ((c.capacity or 0), (c.max_khz or 0))).cpus


@dataclass(frozen=True)
class DeviceEntry:
    """One validated inventory entry from devices.yaml (or a phone adb discovered)."""

    id: str
    kind: str
    options: dict[str, Any] = field(default_factory=dict)


def parse_cpu_list(text: str) -> tuple[int, ...]:
    """"0-3,6" → (0, 1, 2, 3, 6): a suite's CPU list, sysfs' online CPUs, related_cpus' space-separated lists."""
    cpus: set[int] = set()
    for part in re.split(r"[,\s]+", text.strip()):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        if _digits(lo) and (not hi or _digits(hi)):
            cpus.update(range(int(lo), int(hi or lo) + 1))
    return tuple(sorted(cpus))


# --------------------------------------------------------------------------------------------------
# Device kinds as data: the keys a devices.yaml entry of each kind may add, and how they are checked.


def _check_android(options: dict[str, Any]) -> list[str]:
    problems = []
    serial = options.get("serial")
    if serial is not None and not (isinstance(serial, str) and re.fullmatch(r"[^\s'\"]+", serial)):
        problems.append(f"serial: {serial!r} must be an adb serial (as `adb devices` prints it)")
    address = options.get("address")
    if address is not None:
        host, _, port = str(address).rpartition(":")
        if not (isinstance(address, str) and host and _digits(port) and 0 < int(port) < 65536
                and re.fullmatch(r"[A-Za-z0-9.\-\[\]:]+", host)):
            problems.append(f"address: {address!r} must be host:port (a phone on the network, for `adb connect`)")
    fixed = options.get("fixed_performance")
    if "fixed_performance" in options and not isinstance(fixed, bool):
        problems.append(f"fixed_performance: {fixed!r} is not allowed; allowed: true, false")
    return problems


# An iPhone UDID as usbmuxd lists it: 40 hex digits (before the A12), or <ChipID:8>-<ECID:16> (hex, the dash
# optional).
_UDID = re.compile(r"[0-9A-Fa-f]{40}|[0-9A-Fa-f]{8}-?[0-9A-Fa-f]{16}")
_BUNDLE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-]*")


def _check_ios(options: dict[str, Any]) -> list[str]:
    """One problem per key, each naming the key and what is allowed; the runner app is checked to exist here, so a
    missing bundle is found before anything runs (whether it is signed is the iPhone's to say)."""
    problems = []
    udid = options.get("udid")
    if udid is None:
        problems.append("udid: missing; allowed: the iPhone's UDID as `devicelab devices` lists it")
    elif not (isinstance(udid, str) and _UDID.fullmatch(udid)):
        problems.append(f"udid: {udid!r} is not allowed; allowed: an iPhone UDID (40 hex digits, or "
                        "8-16 hex digits with a dash, as `devicelab devices` lists it)")
    app = options.get("runner_app")
    if app is None:
        problems.append("runner_app: missing; allowed: the path of the signed runner .app or .ipa you built "
                        "(`devicelab build-native --target ios` prints the steps)")
    elif not isinstance(app, str) or not app.endswith((".app", ".app/", ".ipa")):
        problems.append(f"runner_app: {app!r} is not allowed; allowed: the path of a signed .app folder or .ipa file")
    else:
        from pathlib import Path

        try:
            path = Path(app).expanduser()
            there = path.is_dir() if app.rstrip("/").endswith(".app") else path.is_file()
        except (OSError, ValueError, RuntimeError):  # a NUL in the name, a user that does not exist (~x)
            there = False
        if not there:
            problems.append(f"runner_app: {app} does not exist (build and sign the runner app: `devicelab "
                            "build-native --target ios` prints the steps)")
    bundle = options.get("bundle_id")
    if bundle is not None and not (isinstance(bundle, str) and _BUNDLE_ID.fullmatch(bundle)):
        problems.append(f"bundle_id: {bundle!r} is not allowed; allowed: a bundle identifier like com.example.dlbench")
    mux = options.get("usbmux_address")
    if mux is not None:
        host, _, port = str(mux).rpartition(":")
        if not (isinstance(mux, str) and ((host and _digits(port) and 0 < int(port) < 65536
                                           and re.fullmatch(r"[A-Za-z0-9.\-]+", host)) or mux.startswith("/"))):
            problems.append(f"usbmux_address: {mux!r} is not allowed; allowed: HOST:PORT (usbmuxd over TCP) or "
                            "the absolute path of usbmuxd's socket")
    tunneld = options.get("tunneld_address")
    if tunneld is not None:
        host, _, port = str(tunneld).rpartition(":")
        if not (isinstance(tunneld, str) and host and _digits(port) and 0 < int(port) < 65536):
            problems.append(f"tunneld_address: {tunneld!r} is not allowed; allowed: HOST:PORT of `pymobiledevice3 "
                            "remote tunneld` (default 127.0.0.1:49151)")
    channel = options.get("channel")
    if channel is not None and channel not in ("tcp", "batch"):
        problems.append(f"channel: {channel!r} is not allowed; allowed: tcp, batch")
    records = options.get("pairing_records")
    if records is not None and not isinstance(records, str):
        problems.append(f"pairing_records: {records!r} is not allowed; allowed: a folder path")
    return problems


@dataclass(frozen=True)
class KindSpec:
    """A device kind as the inventory sees it."""

    # Keys a devices.yaml entry of this kind may add to id/kind/name, with what each means.
    keys: dict[str, str] = field(default_factory=dict)
    check: Callable[[dict[str, Any]], list[str]] | None = None  # problems with those keys, each starting with the key
    # Why programs cannot be pinned to CPUs on this kind (None: they can). Planning then runs `threads` unpinned
    # and turns an affinity that names particular CPUs into an unsupported row with this reason.
    no_pinning: str | None = None

    def problems(self, options: dict[str, Any]) -> list[str]:
        return self.check(options) if self.check else []


KINDS: dict[str, KindSpec] = {
    "host": KindSpec(),
    "android": KindSpec(
        keys={"serial": "the adb serial (default: the entry's id)",
              "address": "host:port of a phone on the network, connected with `adb connect` when not attached",
              "fixed_performance": "true: Android's fixed performance mode (sustainable clocks; Android 11+) is on "
                                   "for the run and turned off afterwards (default false)"},
        check=_check_android),
    "ios": KindSpec(
        keys={"udid": "the iPhone's UDID (as `devicelab devices` lists it)",
              "runner_app": "path of the signed runner .app or .ipa (dlbench's core in an app; installed when its "
                            "content changed)",
              "bundle_id": "the runner app's bundle identifier (default: CFBundleIdentifier of its Info.plist)",
              "usbmux_address": "HOST:PORT of a usbmuxd over TCP, or its socket path (default: "
                                "USBMUXD_SOCKET_ADDRESS, else the system usbmuxd)",
              "pairing_records": "folder of lockdown pair records (default: pymobiledevice3's, in the home folder)",
              "tunneld_address": "HOST:PORT of `pymobiledevice3 remote tunneld`, which iOS 17+ needs for DVT "
                                 "(default 127.0.0.1:49151)",
              "channel": "how the runner app is driven: tcp (default; the runner protocol over a TCP port reached "
                         "through usbmuxd) or batch (a fixed iteration count in its config, its results file pulled "
                         "after it exits)"},
        check=_check_ios,
        no_pinning="iOS has no CPU-affinity API (threads only; the runner's QoS class is recorded)"),
}


def _digits(text: str) -> bool:
    """ASCII digits only: str.isdigit() also accepts '²' and other digits int() refuses."""
    return text.isascii() and text.isdigit()
