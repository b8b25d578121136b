"""The emulated phone's body: its profile, the sandbox root with a fixture /sys, the runner that starts
commands inside a private namespace (so a program on the "phone" opens /sys/... and gets the fixture), and
the thermal/battery/frequency model that keeps the fixture moving with the CPU time the commands really use.

The wire protocol lives in emulated_adb.py; nothing here knows about adb.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import posixpath
import re
import select
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devicelab.errors import DevicelabError, unknown_name_message

# Where the phone's shell user may write and execute, as on every Android since 4.x.
WRITABLE_DIR = "/data/local/tmp"
QEMU_AARCH64 = "/usr/bin/qemu-aarch64-static"
ENERGY_LOG = "emulator/energy.csv"  # relative to the root, outside data/: no command on the phone can touch it
TICK_S = 0.1
CLK_TCK = os.sysconf("SC_CLK_TCK")

# binfmt_misc parses the \x escapes itself: this text is written verbatim. The mask ignores the ELF OS/ABI byte
# and the low bit of e_type (static and PIE executables), as Debian's qemu-user-static registration does.
_AARCH64_MAGIC = r"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00"
_AARCH64_MASK = r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff"

CURRENT_SIGNS = ("positive-charging", "positive-discharging")
CURRENT_UNITS = ("uA", "mA")

# What system_server holds in memory, kept as files under /data/system because the phone's `cmd` and `dumpsys` are
# shell scripts; removed at every start of the daemon, as a reboot forgets them. CMD_LOG is every `cmd` call the
# phone answered (time, arguments, exit status), kept across restarts: tests read it from the host as ground truth.
FIXED_PERFORMANCE_FILE = "data/system/devicelab-fixed-performance"  # relative to the root
THERMAL_OVERRIDE_FILE = "data/system/devicelab-thermal-override"
CMD_LOG = "data/system/devicelab-cmd.log"
# android.os.Temperature's THROTTLING_* values, NONE (0) to SHUTDOWN (6).
THERMAL_STATUSES = range(7)


class ProfileError(DevicelabError):
    """A profile (YAML or keyword arguments) that cannot describe a phone."""


class SandboxError(DevicelabError):
    """The sandbox root cannot be prepared (not a folder, not writable...)."""


# ----------------------------------------------------------------------------------------------- profile


@dataclass(frozen=True)
class ClusterSpec:
    """CPUs sharing one cpufreq policy. CPU numbers are the host's, so that taskset pinning really pins."""

    cpus: tuple[int, ...]
    capacity: int | None = 1024  # None: no cpu_capacity files (kernels before 4.14), the driver must fall back
    max_khz: int = 2_000_000
    min_khz: int = 300_000
    governor: str = "schedutil"


@dataclass(frozen=True)
class ZoneSpec:
    """One thermal zone. Its target temperature is idle_c + rise_c_per_busy_cpu x (busy CPUs among `cpus`)."""

    type: str
    idle_c: float
    rise_c_per_busy_cpu: float
    cpus: tuple[int, ...] | None = None  # CPUs whose load heats this zone; None: all of them


@dataclass(frozen=True)
class BatterySpec:
    present: bool = True
    capacity_percent: int = 80
    voltage_uv: int = 3_900_000
    idle_power_w: float = 0.4
    power_per_busy_cpu_w: float = 1.2
    charging: bool = False
    usb_online: bool = False
    # Documented Android: current_now in uA, positive into the battery. Vendors differ in both, hence the knobs.
    current_sign: str = "positive-charging"
    current_unit: str = "uA"
    charge_counter_uah: int = 3_000_000  # always uAh, the documented unit
    charging_current_a: float = 1.0  # net current into the battery while charging


DEFAULT_PROPS: dict[str, str] = {
    "ro.product.model": "devicelab emulated phone",
    "ro.product.manufacturer": "devicelab",
    "ro.product.brand": "devicelab",
    "ro.product.name": "dlemu",
    "ro.product.device": "dlemu",
    "ro.soc.model": "EMU8000",
    "ro.board.platform": "emu",
    "ro.hardware": "emu",
    # As Android's own emulators say it: drivers can tell that timings here are not a phone's.
    "ro.kernel.qemu": "1",
    "ro.boot.qemu": "1",
    "ro.product.cpu.abi": "arm64-v8a",
    "ro.product.cpu.abilist": "arm64-v8a",
    "ro.build.version.release": "14",
    "ro.build.version.sdk": "34",
    "ro.build.id": "EMU.1",
    "ro.build.type": "user",
    "ro.build.fingerprint": "devicelab/dlemu/dlemu:14/EMU.1/1:user/release-keys",
}


def default_clusters(cpus: Iterable[int] | None = None) -> tuple[ClusterSpec, ...]:
    """big.LITTLE over the host's usable CPUs: the lower half little, the upper half big; one CPU, one cluster."""
    ids = sorted(os.sched_getaffinity(0) if cpus is None else cpus)
    if len(ids) == 1:
        return (ClusterSpec(tuple(ids), 1024, 2_800_000),)
    half = len(ids) // 2
    return (ClusterSpec(tuple(ids[:half]), 512, 1_800_000), ClusterSpec(tuple(ids[half:]), 1024, 2_800_000))


def default_zones(clusters: Iterable[ClusterSpec]) -> tuple[ZoneSpec, ...]:
    """Zones typed like a Qualcomm phone's, deliberately not in CPU order: drivers must map zones by type.
    A fully busy core lifts its own sensor by ~18 C, the skin and battery by little."""
    zones = [ZoneSpec("battery", 30.0, 0.6)]
    for i, cluster in enumerate(clusters):
        for k, cpu in enumerate(cluster.cpus):
            zones.append(ZoneSpec(f"cpu-{i}-{k}-usr", 36.0, 18.0, (cpu,)))
    zones.append(ZoneSpec("gpuss-0-usr", 34.0, 1.0))  # not a CPU zone: a driver that averages every zone is wrong
    zones.append(ZoneSpec("skin-therm", 31.0, 1.5))
    return tuple(zones)


@dataclass(frozen=True)
class Profile:
    """What the emulated phone says about itself and how it heats. Loadable from YAML with the same keys."""

    serial: str = "DLEMU0001"
    props: Mapping[str, str] = field(default_factory=dict)
    clusters: tuple[ClusterSpec, ...] = field(default_factory=default_clusters)
    thermal: tuple[ZoneSpec, ...] | None = None  # None: default_zones(clusters), filled in at construction
    thermal_tau_s: float = 2.0
    throttle_above_c: float | None = None
    throttle_fraction: float = 0.7
    battery: BatterySpec = field(default_factory=BatterySpec)
    screen_on: bool = False
    # The thermal status the thermal HAL reports (android.os.Temperature THROTTLING_*, 0-6); `cmd thermalservice
    # override-status N` overrides it until `cmd thermalservice reset`, as on a phone.
    thermal_status: int = 0
    # Whether the power HAL accepts Mode::FIXED_PERFORMANCE (false: `cmd power set-fixed-performance-mode-enabled`
    # fails as on a phone without the AIDL power HAL).
    fixed_performance_supported: bool = True

    def __post_init__(self) -> None:
        if self.thermal is None:
            object.__setattr__(self, "thermal", default_zones(self.clusters))
        seen: set[int] = set()
        for c in self.clusters:
            if not c.cpus:
                raise ProfileError("profile: a cluster needs at least one CPU")
            if seen & set(c.cpus):
                raise ProfileError(f"profile: CPU {sorted(seen & set(c.cpus))[0]} is in two clusters")
            seen |= set(c.cpus)
            if not 0 < c.min_khz <= c.max_khz:
                raise ProfileError(f"profile: cluster {list(c.cpus)}: need 0 < min_khz <= max_khz")
        if not self.clusters:
            raise ProfileError("profile: clusters may not be empty")
        if not 0 < self.throttle_fraction <= 1:
            raise ProfileError("profile: throttle_fraction must be in (0, 1]")
        if self.thermal_tau_s <= 0:
            raise ProfileError("profile: thermal_tau_s must be positive")
        if self.battery.current_sign not in CURRENT_SIGNS:
            raise ProfileError(unknown_name_message("battery.current_sign", self.battery.current_sign, CURRENT_SIGNS))
        if self.battery.current_unit not in CURRENT_UNITS:
            raise ProfileError(unknown_name_message("battery.current_unit", self.battery.current_unit, CURRENT_UNITS))
        if self.battery.voltage_uv <= 0:
            raise ProfileError("profile: battery.voltage_uv must be positive")
        if self.thermal_status not in THERMAL_STATUSES:
            raise ProfileError(f"profile: thermal_status must be 0-6 (android.os.Temperature), got {self.thermal_status}")

    @property
    def cpus(self) -> tuple[int, ...]:
        return tuple(sorted(c for cl in self.clusters for c in cl.cpus))

    def properties(self) -> dict[str, str]:
        """Every getprop key: the defaults, the serial, then the profile's overrides."""
        return {**DEFAULT_PROPS, "ro.serialno": self.serial, **{str(k): str(v) for k, v in self.props.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "profile") -> Profile:
        if not isinstance(data, Mapping):
            raise ProfileError(f"{where}: expected a mapping of keys, got {type(data).__name__}")
        _check_keys(data, cls, where)
        kw: dict[str, Any] = {}
        for key in ("serial",):
            if key in data:
                kw[key] = str(data[key])
        if "props" in data:
            if not isinstance(data["props"], Mapping):
                raise ProfileError(f"{where}: props must be a mapping of getprop keys to values")
            kw["props"] = {str(k): "" if v is None else str(v) for k, v in data["props"].items()}
        if "clusters" in data:
            kw["clusters"] = tuple(_cluster(c, f"{where}: clusters[{i}]")
                                   for i, c in enumerate(_list(data, "clusters", where)))
        if "thermal" in data:
            kw["thermal"] = tuple(_zone(z, f"{where}: thermal[{i}]")
                                  for i, z in enumerate(_list(data, "thermal", where)))
        for key in ("thermal_tau_s", "throttle_fraction"):
            if key in data:
                kw[key] = _number(data[key], f"{where}: {key}")
        if "throttle_above_c" in data:
            value = data["throttle_above_c"]
            kw["throttle_above_c"] = None if value is None else _number(value, f"{where}: throttle_above_c")
        if "battery" in data:
            kw["battery"] = _battery(data["battery"], f"{where}: battery")
        if "screen_on" in data:
            kw["screen_on"] = _bool(data["screen_on"], f"{where}: screen_on")
        if "thermal_status" in data:
            kw["thermal_status"] = _int(data["thermal_status"], f"{where}: thermal_status")
        if "fixed_performance_supported" in data:
            kw["fixed_performance_supported"] = _bool(data["fixed_performance_supported"],
                                                      f"{where}: fixed_performance_supported")
        return cls(**kw)

    @classmethod
    def from_yaml(cls, path: Path) -> Profile:
        import yaml  # only the CLI and tests load profiles from files

        try:
            data = yaml.safe_load(Path(path).read_text())
        except OSError as e:
            raise ProfileError(f"profile {path}: {e.strerror}") from None
        except yaml.YAMLError as e:
            raise ProfileError(f"profile {path}: not valid YAML ({e})") from None
        return cls.from_dict(data or {}, where=f"profile {path}")


def _check_keys(data: Mapping[str, Any], spec: type, where: str) -> None:
    allowed = [f.name for f in dataclasses.fields(spec)]
    for key in data:
        if key not in allowed:
            raise ProfileError(f"{where}: {unknown_name_message('key', str(key), allowed)}")


def _list(data: Mapping[str, Any], key: str, where: str) -> list[Any]:
    value = data[key]
    if not isinstance(value, list):
        raise ProfileError(f"{where}: {key} must be a list")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProfileError(f"{where}: expected a number, got {value!r}")
    return float(value)


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProfileError(f"{where}: expected an integer, got {value!r}")
    return value


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ProfileError(f"{where}: expected true or false, got {value!r}")
    return value


def _cpus(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in value):
        raise ProfileError(f"{where}: cpus must be a list of CPU numbers")
    return tuple(value)


def _cluster(data: Any, where: str) -> ClusterSpec:
    if not isinstance(data, Mapping):
        raise ProfileError(f"{where}: expected a mapping")
    _check_keys(data, ClusterSpec, where)
    if "cpus" not in data:
        raise ProfileError(f"{where}: cpus is required")
    kw: dict[str, Any] = {"cpus": _cpus(data["cpus"], where)}
    if "capacity" in data:
        kw["capacity"] = None if data["capacity"] is None else _int(data["capacity"], f"{where}: capacity")
    for key in ("max_khz", "min_khz"):
        if key in data:
            kw[key] = _int(data[key], f"{where}: {key}")
    if "governor" in data:
        kw["governor"] = str(data["governor"])
    return ClusterSpec(**kw)


def _zone(data: Any, where: str) -> ZoneSpec:
    if not isinstance(data, Mapping):
        raise ProfileError(f"{where}: expected a mapping")
    _check_keys(data, ZoneSpec, where)
    for key in ("type", "idle_c", "rise_c_per_busy_cpu"):
        if key not in data:
            raise ProfileError(f"{where}: {key} is required")
    cpus = data.get("cpus")
    return ZoneSpec(str(data["type"]), _number(data["idle_c"], f"{where}: idle_c"),
                    _number(data["rise_c_per_busy_cpu"], f"{where}: rise_c_per_busy_cpu"),
                    None if cpus is None else _cpus(cpus, where))


def _battery(data: Any, where: str) -> BatterySpec:
    if not isinstance(data, Mapping):
        raise ProfileError(f"{where}: expected a mapping")
    _check_keys(data, BatterySpec, where)
    kw: dict[str, Any] = {}
    for f in dataclasses.fields(BatterySpec):
        if f.name not in data:
            continue
        value = data[f.name]
        if f.name in ("present", "charging", "usb_online"):
            kw[f.name] = _bool(value, f"{where}.{f.name}")
        elif f.name in ("capacity_percent", "voltage_uv", "charge_counter_uah"):
            kw[f.name] = _int(value, f"{where}.{f.name}")
        elif f.name in ("current_sign", "current_unit"):
            kw[f.name] = str(value)
        else:
            kw[f.name] = _number(value, f"{where}.{f.name}")
    return BatterySpec(**kw)


# ----------------------------------------------------------------------------------------------- sandbox


def _ranges(cpus: Iterable[int]) -> str:
    """"0-3,6" style, as in /sys/devices/system/cpu/online."""
    runs: list[list[int]] = []
    for c in sorted(set(cpus)):
        if runs and c == runs[-1][1] + 1:
            runs[-1][1] = c
        else:
            runs.append([c, c])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


class Sandbox:
    """The phone's file system on the host: data/ (kept across restarts), system/ and sys/ (rebuilt from the
    profile at every start). `device_prefix` is how commands see the root: "" inside the namespace (the root
    is mounted at /), the root's host path without one (commands' paths are rewritten)."""

    def __init__(self, root: Path, profile: Profile) -> None:
        self.root = Path(root).resolve()
        self.profile = profile
        self.device_prefix = ""

    def dev(self, path: str) -> str:
        """A device path as the commands must spell it."""
        return self.device_prefix + path

    def build(self, device_prefix: str) -> None:
        self.device_prefix = device_prefix
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            for d in ("data/local/tmp", "data/system", "emulator"):
                (self.root / d).mkdir(parents=True, exist_ok=True)
            for d in ("sys", "system"):
                # Built fresh from the profile each start: a restarted phone may have a different profile.
                if (self.root / d).exists():
                    shutil.rmtree(self.root / d)
            for rel in (FIXED_PERFORMANCE_FILE, THERMAL_OVERRIDE_FILE):
                (self.root / rel).unlink(missing_ok=True)  # a restart is a reboot: system_server starts afresh
            self._write_system()
            self._write_sys()
        except OSError as e:
            raise SandboxError(f"emulated device root {self.root}: {e}") from None

    def _write_system(self) -> None:
        bin_dir = self.root / "system/bin"
        etc = self.root / "system/etc"
        bin_dir.mkdir(parents=True)
        etc.mkdir(parents=True)
        props = self.profile.properties()
        (etc / "build.prop").write_text("".join(f"{k}={v}\n" for k, v in sorted(props.items())))
        thermal_override = shlex.quote(self.dev("/" + THERMAL_OVERRIDE_FILE))
        sdk = props.get("ro.build.version.sdk", "")
        scripts = {
            "getprop": _GETPROP.replace("@PROPS@", shlex.quote(self.dev("/system/etc/build.prop"))),
            "dumpsys": (_DUMPSYS.replace("@SYS@", shlex.quote(self.dev("/sys")))
                        .replace("@OVR@", shlex.quote(self.dev("/data/system/devicelab-battery-overrides")))
                        .replace("@SCREEN_ON@", "1" if self.profile.screen_on else "0")
                        .replace("@THERMAL_HAL@", str(self.profile.thermal_status))
                        .replace("@THERMAL_OVR@", thermal_override)),
            "cmd": (_CMD.replace("@FIXED@", shlex.quote(self.dev("/" + FIXED_PERFORMANCE_FILE)))
                    .replace("@THERMAL_OVR@", thermal_override)
                    .replace("@LOG@", shlex.quote(self.dev("/" + CMD_LOG)))
                    .replace("@SDK@", shlex.quote(sdk if sdk.isdigit() else "0"))
                    .replace("@FIXED_OK@", "1" if self.profile.fixed_performance_supported else "0")),
            "uname": _UNAME,
        }
        for name, text in scripts.items():
            (bin_dir / name).write_text(text)
            (bin_dir / name).chmod(0o755)
        # Phone scripts start with #!/system/bin/sh.
        (bin_dir / "sh").symlink_to("/bin/sh")

    def _write_sys(self) -> None:
        p = self.profile
        sysd = self.root / "sys"
        cpu_root = sysd / "devices/system/cpu"
        cpu_root.mkdir(parents=True)
        span = f"0-{max(p.cpus)}" if max(p.cpus) else "0"
        for name in ("possible", "present"):
            (cpu_root / name).write_text(span + "\n")
        (cpu_root / "online").write_text(_ranges(p.cpus) + "\n")
        for cluster in p.clusters:
            # Real kernels keep one policy folder per cluster and link cpuN/cpufreq to it.
            policy = cpu_root / f"cpufreq/policy{cluster.cpus[0]}"
            policy.mkdir(parents=True)
            related = " ".join(map(str, cluster.cpus)) + "\n"
            for name, value in (("scaling_cur_freq", cluster.min_khz), ("scaling_max_freq", cluster.max_khz),
                                ("scaling_min_freq", cluster.min_khz), ("cpuinfo_max_freq", cluster.max_khz),
                                ("cpuinfo_min_freq", cluster.min_khz), ("scaling_governor", cluster.governor),
                                ("related_cpus", related.strip()), ("affected_cpus", related.strip()),
                                ("scaling_available_governors", "schedutil performance powersave")):
                (policy / name).write_text(f"{value}\n")
            for cpu in cluster.cpus:
                d = cpu_root / f"cpu{cpu}"
                d.mkdir()
                (d / "cpufreq").symlink_to(f"../cpufreq/policy{cluster.cpus[0]}")
                (d / "online").write_text("1\n")
                if cluster.capacity is not None:
                    (d / "cpu_capacity").write_text(f"{cluster.capacity}\n")
        assert p.thermal is not None
        for i, zone in enumerate(p.thermal):
            d = sysd / f"class/thermal/thermal_zone{i}"
            d.mkdir(parents=True)
            (d / "type").write_text(zone.type + "\n")
            (d / "temp").write_text(f"{round(zone.idle_c * 1000)}\n")
            (d / "mode").write_text("enabled\n")
        ps = sysd / "class/power_supply"
        b = p.battery
        for name, kind in (("battery", "Battery"), ("usb", "USB"), ("ac", "Mains")):
            (ps / name).mkdir(parents=True)
            (ps / name / "type").write_text(kind + "\n")
        (ps / "usb/online").write_text(f"{int(b.usb_online)}\n")
        (ps / "ac/online").write_text("0\n")
        for name, value in (("present", int(b.present)), ("capacity", b.capacity_percent), ("status", "Unknown"),
                            ("current_now", 0), ("voltage_now", b.voltage_uv), ("charge_counter", b.charge_counter_uah),
                            ("temp", 300), ("health", "Good"), ("technology", "Li-ion")):
            (ps / "battery" / name).write_text(f"{value}\n")

    def host_path(self, device_path: str) -> Path | None:
        """Where a device path lives on the host, for the sync service; None where nothing is (private /tmp)."""
        p = posixpath.normpath("/" + device_path.lstrip("/"))
        top = p.split("/")[1] if p != "/" else ""
        if top in ("data", "system", "sys"):
            return self.root / p.lstrip("/")
        if top in ("proc", "usr", "etc", "dev", "bin", "lib", "lib64", "sbin"):
            return Path(p)  # the host's, as the namespace's view binds them
        if p == "/":
            return self.root
        return None

    def writable_path(self, device_path: str) -> Path | None:
        """The host path for a write, or None when the phone's shell user may not write there."""
        p = posixpath.normpath("/" + device_path.lstrip("/"))
        if not p.startswith(WRITABLE_DIR + "/"):
            return None
        base = (self.root / WRITABLE_DIR.lstrip("/")).resolve()
        target = self.root / p.lstrip("/")
        # A symlink made by a command must not let a push escape the sandbox.
        parent = target.parent.resolve()
        if parent != base and base not in parent.parents:
            return None
        return target

    ROOT_ENTRIES = ("bin", "data", "dev", "etc", "lib", "lib64", "proc", "sbin", "sys", "system", "usr")


_GETPROP = """#!/bin/sh
# getprop of the devicelab emulated phone: read-only properties from one sorted key=value file.
PROPS=@PROPS@
if [ $# -eq 0 ]; then
    while IFS= read -r line; do
        case $line in ''|'#'*) continue ;; esac
        printf '[%s]: [%s]\\n' "${line%%=*}" "${line#*=}"
    done < "$PROPS"
    exit 0
fi
while IFS= read -r line; do
    if [ "${line%%=*}" = "$1" ]; then
        printf '%s\\n' "${line#*=}"
        exit 0
    fi
done < "$PROPS"
printf '%s\\n' "$2"
"""

# dumpsys reads the same fixture files a program would; `battery unplug|set|reset` only change what dumpsys
# reports (an overrides file), as on a phone where the current keeps flowing whatever BatteryService says.
# thermalservice prints what AOSP's ThermalManagerService.dump() does, in its order: "IsStatusOverride: <bool>",
# the listeners, "Thermal Status: <mStatus>" (android.os.Temperature THROTTLING_*, 0-6), then the HAL's sensors.
_DUMPSYS = """#!/bin/sh
# dumpsys of the devicelab emulated phone: battery, power and thermalservice.
PS=@SYS@/class/power_supply
TZ=@SYS@/class/thermal
OVR=@OVR@
SCREEN_ON=@SCREEN_ON@
THERMAL_HAL=@THERMAL_HAL@
THERMAL_OVR=@THERMAL_OVR@

rd() { _v=; IFS= read -r _v < "$1" 2>/dev/null; printf '%s' "${_v:-$2}"; }
tf() { if [ "$1" = 1 ] || [ "$1" = true ]; then echo true; else echo false; fi; }

battery_state() {
    ac=$(rd "$PS/ac/online" 0); usb=$(rd "$PS/usb/online" 0); wireless=0
    case $(rd "$PS/battery/status" Unknown) in
        Charging) status=2 ;; Discharging) status=3 ;; "Not charging") status=4 ;; Full) status=5 ;; *) status=1 ;;
    esac
    level=$(rd "$PS/battery/capacity" 0); voltage=$(( $(rd "$PS/battery/voltage_now" 0) / 1000 ))
    temp=$(rd "$PS/battery/temp" 0); counter=$(rd "$PS/battery/charge_counter" 0); present=$(rd "$PS/battery/present" 0)
    stopped=0
    if [ -f "$OVR" ]; then . "$OVR"; fi
}

battery_dump() {
    battery_state
    echo "Current Battery Service state:"
    if [ "$stopped" = 1 ]; then echo "  (UPDATES STOPPED -- use 'reset' to restart)"; fi
    echo "  AC powered: $(tf "$ac")"
    echo "  USB powered: $(tf "$usb")"
    echo "  Wireless powered: $(tf "$wireless")"
    echo "  Dock powered: false"
    if [ "$usb" = 1 ]; then echo "  Max charging current: 500000"; echo "  Max charging voltage: 5000000"
    else echo "  Max charging current: 0"; echo "  Max charging voltage: 0"; fi
    echo "  Charge counter: $counter"
    echo "  status: $status"
    echo "  health: 2"
    echo "  present: $(tf "$present")"
    echo "  level: $level"
    echo "  scale: 100"
    echo "  voltage: $voltage"
    echo "  temperature: $temp"
    echo "  technology: Li-ion"
}

battery_cmd() {
    case "$1" in
        "") battery_dump ;;
        unplug) printf 'ac=0\\nusb=0\\nwireless=0\\nstopped=1\\n' >> "$OVR" ;;
        reset) rm -f "$OVR" ;;
        set)
            case "$2" in
                ac|usb|wireless|level|status|temp|counter|present) ;;
                *) echo "Unknown set option: $2" >&2; exit 1 ;;
            esac
            case "$3" in
                ''|*[!0-9]*) echo "Bad value: $3" >&2; exit 1 ;;
            esac
            printf '%s=%s\\nstopped=1\\n' "$2" "$3" >> "$OVR" ;;
        -h|help) echo "battery commands: unplug, reset, set ac|usb|wireless|level|status|temp|counter|present N" ;;
        *) echo "Unknown battery command: $1" >&2; exit 1 ;;
    esac
}

power_dump() {
    battery_state
    if [ "$SCREEN_ON" = 1 ]; then wake=Awake; disp=ON; else wake=Asleep; disp=OFF; fi
    plug=0
    if [ "$ac" = 1 ]; then plug=1; fi
    if [ "$usb" = 1 ]; then plug=2; fi
    powered=false
    if [ "$plug" != 0 ]; then powered=true; fi
    cat <<EOF
POWER MANAGER (dumpsys power)

Power Manager State:
  mDirty=0x0
  mWakefulness=$wake
  mWakefulnessChanging=false
  mIsPowered=$powered
  mPlugType=$plug
  mBatteryLevel=$level
  mBatteryLevelWhenDreamStarted=0
  mDockState=0
  mStayOn=false
  mProximityPositive=false
  mBootCompleted=true
  mSystemReady=true
  mHalAutoSuspendModeEnabled=false
  mHalInteractiveModeEnabled=$( [ "$SCREEN_ON" = 1 ] && echo true || echo false )
  mWakeLockSummary=0x0
  mUserActivitySummary=0x0
  mRequestWaitForNegativeProximity=false
  mSandmanScheduled=false
  mBatteryLevelLow=false
  mLightDeviceIdleMode=false
  mDeviceIdleMode=false
  mDisplayReady=true
  mHoldingWakeLockSuspendBlocker=false
  mHoldingDisplaySuspendBlocker=$( [ "$SCREEN_ON" = 1 ] && echo true || echo false )

Display Power: state=$disp
EOF
}

thermal_dump() {
    # ThermalManagerService.dump(): mStatus is the HAL's worst sensor status, or what override-status locked.
    status=$THERMAL_HAL; override=false
    if [ -f "$THERMAL_OVR" ]; then status=$(rd "$THERMAL_OVR" "$THERMAL_HAL"); override=true; fi
    echo "IsStatusOverride: $override"
    echo "ThermalEventListeners:"
    echo "	callbacks: 0"
    echo "ThermalStatusListeners:"
    echo "	callbacks: 0"
    echo "Thermal Status: $status"
    echo "HAL Ready: true"
    echo "HAL connection:"
    echo "	ThermalHAL 2.0 connected: yes"
    echo "Current temperatures from HAL:"
    for z in "$TZ"/thermal_zone*; do
        name=$(rd "$z/type" unknown); t=$(rd "$z/temp" 0)
        case $name in cpu*|CPU*) ty=0 ;; gpu*|GPU*) ty=1 ;; battery) ty=2 ;; skin*) ty=3 ;; *) ty=-1 ;; esac
        # The HAL's status is carried by the CPU sensors (the service's status is their worst).
        st=0; if [ "$ty" = 0 ]; then st=$THERMAL_HAL; fi
        printf '\\tTemperature{mValue=%d.%d, mType=%s, mName=%s, mStatus=%s}\\n' \\
            $((t / 1000)) $((t % 1000 / 100)) "$ty" "$name" "$st"
    done
}

case "$1" in
    battery) shift; battery_cmd "$@" ;;
    power) power_dump ;;
    thermalservice) thermal_dump ;;
    ""|-l) echo "Currently running services:"; for s in battery power thermalservice; do echo "  $s"; done ;;
    *) echo "Can't find service: $1" >&2 ;;
esac
"""

# cmd of the emulated phone: the `power` and `thermalservice` commands devicelab uses, answered as AOSP's
# frameworks/base services/core/java/com/android/server/power/PowerManagerShellCommand.java
# (runSetFixedPerformanceModeEnabled: Boolean.parseBoolean of the argument, then the power HAL's answer) and
# ThermalManagerService.java (ThermalShellCommand: override-status STATUS, reset) do, through
# BasicShellCommandHandler (an unknown command: "Unknown command: X" on stdout; a missing argument: the exception on
# stderr; onCommand's -1 is exit status 255) and frameworks/native cmds/cmd/cmd.cpp (an unknown service: exit 20).
# The fixed performance mode is remembered in a file and shown by no dumpsys: PowerManagerService hands it to the
# power HAL (setPowerModeInternal -> nativeSetPowerMode) without keeping it, and its dump never prints it.
_CMD = """#!/bin/sh
# cmd of the devicelab emulated phone: power and thermalservice.
FIXED=@FIXED@
THERMAL_OVR=@THERMAL_OVR@
LOG=@LOG@
SDK=@SDK@
FIXED_OK=@FIXED_OK@

missing_arg() {
    echo "Exception occurred while executing '$1':" >&2
    echo "java.lang.IllegalArgumentException: Argument expected after \\"$1\\"" >&2
}

power_cmd() {
    case "$1" in
        set-fixed-performance-mode-enabled)
            # The command came with Android 11 (SDK 30); before, the shell command did not know it.
            if [ "$SDK" -lt 30 ]; then echo "Unknown command: $1"; return 255; fi
            if [ $# -lt 2 ]; then missing_arg "$1"; return 255; fi
            if [ "$FIXED_OK" != 1 ]; then
                echo "Failed to set FIXED_PERFORMANCE mode" >&2
                echo "This is likely because Power HAL AIDL is not implemented on this device" >&2
                return 255
            fi
            # Boolean.parseBoolean: "true" in any case is true, anything else false.
            case $(printf '%s' "$2" | tr 'A-Z' 'a-z') in true) v=true ;; *) v=false ;; esac
            printf '%s\\n' "$v" > "$FIXED"
            return 0 ;;
        ""|help|-h)
            echo "Power manager (power) commands:"
            echo "  set-fixed-performance-mode-enabled [true|false]"
            echo "    enables or disables fixed performance mode"
            return 255 ;;
        *) echo "Unknown command: $1"; return 255 ;;
    esac
}

thermal_cmd() {
    case "$1" in
        override-status)
            if [ $# -lt 2 ]; then
                echo "Error: java.lang.IllegalArgumentException: Argument expected after \\"$1\\""; return 255
            fi
            case "$2" in
                [0-9]|[0-9]*[0-9]|-[0-9]*) n=${2#-}; case "$n" in *[!0-9]*) bad=1 ;; *) bad=0 ;; esac ;;
                *) bad=1 ;;
            esac
            if [ "$bad" = 1 ]; then
                echo "Error: java.lang.NumberFormatException: For input string: \\"$2\\""; return 255
            fi
            # Temperature.isValidStatus: THROTTLING_NONE (0) to THROTTLING_SHUTDOWN (6).
            if [ "$2" -lt 0 ] || [ "$2" -gt 6 ]; then echo "Invalid status: $2"; return 255; fi
            printf '%s\\n' "$(( $2 ))" > "$THERMAL_OVR"
            return 0 ;;
        reset) rm -f "$THERMAL_OVR"; return 0 ;;
        ""|help|-h)
            echo "Thermal service (thermalservice) commands:"
            echo "  override-status STATUS"
            echo "    sets and locks the thermal status of the device to STATUS."
            echo "  reset"
            echo "    unlocks the thermal status of the device."
            return 255 ;;
        *) echo "Unknown command: $1"; return 255 ;;
    esac
}

service=$1
if [ $# -gt 0 ]; then shift; fi
case "$service" in
    power) power_cmd "$@" ;;
    thermalservice) thermal_cmd "$@" ;;
    -l) echo "Currently running services:"; for s in power thermalservice; do echo "  $s"; done ;;
    *) echo "cmd: Can't find service: $service" >&2; exit 20 ;;
esac
code=$?
printf '%s\\t%s\\t%s\\n' "$(date +%s.%N)" "$service $*" "$code" >> "$LOG"
exit $code
"""

_UNAME = """#!/bin/sh
# A phone says aarch64, whatever machine emulates it.
/bin/uname "$@" | sed "s/$(/bin/uname -m)/aarch64/g"
"""


# ----------------------------------------------------------------------------------------------- runner


def _holder_script(ns_dir: str, root: Path, qemu: str | None) -> str:
    """The namespace holder: builds the phone's view on a private tmpfs, registers qemu for aarch64 in a private
    binfmt_misc, then chroots and waits on stdin (EOF: the daemon is gone, so the namespace may go too)."""
    q = shlex.quote
    ns, r = q(ns_dir), root
    lines = [
        "set -e",
        f"NS={ns}",
        'mount -t tmpfs -o mode=755 devicelab-emu "$NS"',
        'mkdir "$NS/view" "$NS/binfmt"',
        'V="$NS/view"',
        'for d in usr etc dev proc sys data system tmp; do mkdir "$V/$d"; done',
        # Debian's merged /usr has /bin -> usr/bin: copy the links; older layouts get binds.
        'for l in bin lib lib64 sbin; do',
        '  if [ -L "/$l" ]; then ln -s "$(readlink "/$l")" "$V/$l";',
        '  elif [ -d "/$l" ]; then mkdir "$V/$l"; mount --rbind "/$l" "$V/$l"; mount -o remount,bind,ro "$V/$l"; fi',
        'done',
        'for d in usr etc dev proc; do mount --rbind "/$d" "$V/$d"; done',
        # The namespace's root is the daemon's user: a command on the "phone" must not be able to change the host.
        'for d in usr etc; do mount -o remount,bind,ro "$V/$d"; done',
        f'mount --bind {q(str(r / "sys"))} "$V/sys"',
        f'mount --bind {q(str(r / "data"))} "$V/data"',
        f'mount --bind {q(str(r / "system"))} "$V/system"',
        # The shell user cannot write /system or /sys on a phone; the model writes the fixture from outside.
        'mount -o remount,bind,ro "$V/system"',
        'mount -o remount,bind,ro "$V/sys"',
        'mount -t tmpfs -o mode=1777 tmp "$V/tmp"',
    ]
    if qemu:
        reg = f":qemu-aarch64:M::{_AARCH64_MAGIC}:{_AARCH64_MASK}:{qemu}:F"
        lines += [
            'if ! mount -t binfmt_misc binfmt_misc "$NS/binfmt" 2>/dev/null; then',
            '  echo "ARM64 no: mounting a private binfmt_misc failed (needs Linux >= 6.7)"',
            f'elif ! printf %s {q(reg)} > "$NS/binfmt/register" 2>/dev/null; then',
            '  echo "ARM64 no: registering qemu-aarch64 in the private binfmt_misc failed"',
            'else echo "ARM64 yes"; fi',
        ]
    lines.append('''exec chroot "$V" /bin/sh -c 'echo READY $$; read -r _ || true' ''')
    return "\n".join(lines) + "\n"


class Runner:
    """Starts the phone's commands: inside the namespace holder's view (nsenter), or with the host's /bin/sh and
    the phone's path prefixes rewritten to the sandbox when namespaces are not available."""

    def __init__(self, sandbox: Sandbox, namespace: bool = True) -> None:
        self.sandbox = sandbox
        self.want_namespace = namespace
        self.namespace = False
        self.namespace_reason = "not started"
        self.arm64 = False
        self.arm64_reason = "not started"
        self._holder: subprocess.Popen[bytes] | None = None
        self._holder_pid = 0
        self._ns_dir: str | None = None
        self._rewrite: re.Pattern[str] | None = None

    def start(self) -> None:
        """Builds the sandbox for the mode that works here and says why on the attributes."""
        if not self.want_namespace:
            self.namespace_reason = "off (--no-namespace)"
        else:
            error = self._start_holder()
            if error is None:
                self.namespace = True
                self.namespace_reason = "on (private user+mount namespace, chroot into the sandbox view)"
            else:
                self.namespace_reason = f"off: {error}"
        if not self.namespace:
            self.sandbox.build(str(self.sandbox.root))
            prefixes = "|".join(re.escape(p) for p in (WRITABLE_DIR, "/sys/", "/system/"))
            # Only at the start of a word, so /usr/sys/... or a path already under the root stay as they are.
            self._rewrite = re.compile(rf"(?<![\w./-])({prefixes})")
            self._arm64_without_namespace()

    def _start_holder(self) -> str | None:
        if shutil.which("unshare") is None or shutil.which("nsenter") is None:
            return "unshare/nsenter (util-linux) not found"
        # The view is mounted over the host paths inside the namespace only, so the sandbox is built first.
        self.sandbox.build("")
        self._ns_dir = tempfile.mkdtemp(prefix="devicelab-emu-ns-")
        qemu = QEMU_AARCH64 if os.access(QEMU_AARCH64, os.X_OK) else None
        script = _holder_script(self._ns_dir, self.sandbox.root, qemu)
        errors = tempfile.TemporaryFile()
        try:
            self._holder = subprocess.Popen(["unshare", "-Urm", "--fork", "--kill-child", "/bin/sh", "-c", script],
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors,
                                            start_new_session=True)
        except OSError as e:
            return f"cannot run unshare: {e.strerror}"
        assert self._holder.stdout is not None
        arm64: str | None = None
        deadline = time.monotonic() + 10
        buf = b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._holder.stdout], [], [], left)[0]:
                self._stop_holder()
                return "the namespace holder did not start within 10 s"
            chunk = os.read(self._holder.stdout.fileno(), 4096)
            if not chunk:
                code = self._holder.wait()
                errors.seek(0)
                lines = errors.read().decode(errors="replace").strip().splitlines()
                self._stop_holder()
                why = lines[-1] if lines else f"exit status {code}"
                return f"unshare -Urm failed: {why}"
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                text = line.decode(errors="replace").strip()
                if text.startswith("ARM64 "):
                    arm64 = text[6:]
                elif text.startswith("READY "):
                    self._holder_pid = int(text.split()[1])
                    if qemu is None:
                        self.arm64 = False
                        self.arm64_reason = f"off: {QEMU_AARCH64} not found (Debian: qemu-user-static)"
                    elif arm64 == "yes":
                        self.arm64, self.arm64_reason = True, "on (qemu-aarch64 in a private binfmt_misc, flag F)"
                    else:
                        self.arm64, self.arm64_reason = False, f"off: {(arm64 or 'no: unknown')[4:]}"
                    return None

    def _arm64_without_namespace(self) -> None:
        reg = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
        try:
            enabled = reg.read_text().splitlines()[0].strip() == "enabled"
        except (OSError, IndexError):
            enabled = False
        if enabled:
            self.arm64, self.arm64_reason = True, "on (the host's global qemu-aarch64 binfmt_misc registration)"
        else:
            self.arm64 = False
            self.arm64_reason = "off: no namespace, and the host has no global qemu-aarch64 binfmt registration"

    def command(self, cmd: str) -> tuple[list[str], dict[str, str], str]:
        """argv, environment and cwd for one shell command of the phone."""
        env = {"PATH": "/system/bin:/usr/bin:/bin", "HOME": "/", "TMPDIR": WRITABLE_DIR,
               "ANDROID_ROOT": "/system", "ANDROID_DATA": "/data"}
        if self.namespace:
            return (["nsenter", "-t", str(self._holder_pid), "-U", "-m", "-r", "-w", "--preserve-credentials",
                     "/bin/sh", "-c", cmd], env, "/")
        root = str(self.sandbox.root)
        assert self._rewrite is not None
        env = {k: (v.replace("/system/bin", root + "/system/bin") if k == "PATH" else
                   root + v if v.startswith(("/data", "/system")) else root if v == "/" else v) for k, v in env.items()}
        return ["/bin/sh", "-c", self._rewrite.sub(lambda m: root + m.group(1), cmd)], env, root

    def stop(self) -> None:
        self._stop_holder()
        if self._ns_dir is not None:
            try:
                os.rmdir(self._ns_dir)
            except OSError:
                pass
            self._ns_dir = None

    def _stop_holder(self) -> None:
        holder, self._holder = self._holder, None
        if holder is None:
            return
        if holder.stdin:
            holder.stdin.close()  # the holder's `read` ends: a clean exit
        try:
            holder.wait(timeout=2)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(holder.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            holder.wait()
        if holder.stdout:
            holder.stdout.close()


def _stat_fields(path: str) -> list[str] | None:
    try:
        with open(path, "rb") as f:
            text = f.read().decode(errors="replace")
    except OSError:
        return None
    # The command name may hold spaces and parentheses: the fields start after the last ')'.
    return text[text.rfind(")") + 2:].split()


def session_members(sids: set[int]) -> dict[int, int]:
    """pid -> session id for every live process in one of these sessions."""
    out: dict[int, int] = {}
    if not sids:
        return out
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        fields = _stat_fields(f"/proc/{name}/stat")
        if fields and len(fields) > 3 and int(fields[3]) in sids:
            out[int(name)] = int(fields[3])
    return out


def kill_session(sid: int) -> None:
    """SIGKILL a command's process group, and anything of its session that moved to another group."""
    try:
        os.killpg(sid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for pid in session_members({sid}):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


# ----------------------------------------------------------------------------------------------- model


@dataclass(frozen=True)
class EnergySample:
    """One tick of the model's ground truth."""

    time_s: float  # wall clock, seconds since the epoch, at the end of the tick
    dt_s: float
    busy_cpus: float  # CPU seconds per second used by the phone's commands
    power_w: float
    energy_j: float  # power_w x dt_s: what the phone really consumed in this tick
    battery_current_a: float  # true current, positive into the battery
    charging: bool


def read_energy_log(root: Path) -> list[EnergySample]:
    """The energy log of every daemon that ran on this root (it survives restarts), oldest first."""
    path = Path(root) / ENERGY_LOG
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return [EnergySample(float(r["time_s"]), float(r["dt_s"]), float(r["busy_cpus"]), float(r["power_w"]),
                             float(r["energy_j"]), float(r["battery_current_a"]), r["charging"] == "1")
                for r in csv.DictReader(f)]


class _FixtureWriter:
    """Rewrites fixture files in place (same inode): probes open a sysfs file once and re-read it with pread,
    so a rename would leave them reading a stale file forever."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._fds: dict[str, int] = {}
        self._last: dict[str, bytes] = {}

    def write(self, rel: str, value: object) -> None:
        data = f"{value}\n".encode()
        if self._last.get(rel) == data:
            return
        fd = self._fds.get(rel)
        if fd is None:
            fd = self._fds[rel] = os.open(self.root / rel, os.O_WRONLY | os.O_CLOEXEC)
        # One pwrite then a trim: a reader sees the old or the new value, at worst with a stale tail after the
        # newline for a moment when the value got shorter; never an empty file.
        os.pwrite(fd, data, 0)
        if len(data) < len(self._last.get(rel, b"")):
            os.ftruncate(fd, len(data))
        self._last[rel] = data

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


class Model:
    """Every ~100 ms: CPU time per CPU of the phone's commands (from /proc), then temperatures relaxing toward
    idle + rise x busy, frequencies (with throttling), and the battery's current and charge."""

    def __init__(self, sandbox: Sandbox, profile: Profile, sessions: Callable[[], set[int]]) -> None:
        self.sandbox = sandbox
        self.profile = profile
        self._sessions = sessions
        assert profile.thermal is not None
        self.zones = profile.thermal
        self.temps_c = [z.idle_c for z in self.zones]
        self.throttled = [False] * len(profile.clusters)
        self.busy: dict[int, float] = dict.fromkeys(profile.cpus, 0.0)
        b = profile.battery
        self.charge_uah = float(b.charge_counter_uah)
        self._full_uah = b.charge_counter_uah / max(b.capacity_percent, 1) * 100
        self._ticks: dict[int, int] = {}  # tid -> utime+stime at the last sample
        self._log: list[EnergySample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fixture = _FixtureWriter(sandbox.root / "sys")
        self._log_file = (sandbox.root / ENERGY_LOG).open("a", newline="")
        self._csv = csv.writer(self._log_file)
        if self._log_file.tell() == 0:
            self._csv.writerow([f.name for f in dataclasses.fields(EnergySample)])
        self._zone_cluster = [self._cluster_of(z) for z in self.zones]
        self._write(self._power(0.0)[1])  # idle values before the first tick

    def _cluster_of(self, zone: ZoneSpec) -> int | None:
        """The cluster a CPU zone sits on (its CPUs all in one cluster), else None (battery, skin, gpu...)."""
        if not zone.cpus:
            return None
        for i, c in enumerate(self.profile.clusters):
            if set(zone.cpus) <= set(c.cpus):
                return i
        return None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="emulated-device-model", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._fixture.close()
        self._log_file.close()

    def energy_log(self) -> list[EnergySample]:
        with self._lock:
            return list(self._log)

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(TICK_S):
            now = time.monotonic()
            self.tick(now - last)
            last = now

    def _sample_busy(self, dt: float) -> dict[int, float]:
        """CPU seconds per second by CPU: each thread's new utime+stime goes to the CPU it last ran on."""
        sids = self._sessions()
        used: dict[int, float] = {}
        seen: dict[int, int] = {}
        for pid in session_members(sids):
            try:
                tids = os.listdir(f"/proc/{pid}/task")
            except OSError:
                continue
            for tid in tids:
                fields = _stat_fields(f"/proc/{pid}/task/{tid}/stat")
                if not fields or len(fields) < 37:
                    continue
                ticks = int(fields[11]) + int(fields[12])
                cpu = int(fields[36])
                t = int(tid)
                seen[t] = ticks
                # A thread seen for the first time started since the last sample: all its time is new.
                delta = ticks - self._ticks.get(t, 0)
                if delta > 0:
                    used[cpu] = used.get(cpu, 0.0) + delta / CLK_TCK
        self._ticks = seen
        return {cpu: min(used.get(cpu, 0.0) / dt, 1.0) if dt > 0 else 0.0 for cpu in self.profile.cpus}

    def tick(self, dt: float) -> None:
        busy = self._sample_busy(dt)
        p = self.profile
        b = p.battery
        alpha = 1 - math.exp(-dt / p.thermal_tau_s)
        with self._lock:
            self.busy = busy
            for i, zone in enumerate(self.zones):
                cpus = zone.cpus if zone.cpus is not None else p.cpus
                target = zone.idle_c + zone.rise_c_per_busy_cpu * sum(busy.get(c, 0.0) for c in cpus)
                self.temps_c[i] += (target - self.temps_c[i]) * alpha
            if p.throttle_above_c is not None:
                for ci in range(len(p.clusters)):
                    temps = [t for t, zc in zip(self.temps_c, self._zone_cluster, strict=True) if zc == ci]
                    if any(t > p.throttle_above_c for t in temps):
                        self.throttled[ci] = True
                    elif all(t < p.throttle_above_c - 1.0 for t in temps):  # 1 C of hysteresis, as governors have
                        self.throttled[ci] = False
            busy_total = sum(busy.values())
            power_w, current_a = self._power(busy_total)
            self.charge_uah = min(max(self.charge_uah + current_a * dt / 3600 * 1e6, 0.0), self._full_uah)
            sample = EnergySample(time.time(), dt, busy_total, power_w, power_w * dt, current_a, b.charging)
            self._log.append(sample)
        self._csv.writerow([sample.time_s, sample.dt_s, sample.busy_cpus, sample.power_w, sample.energy_j,
                            sample.battery_current_a, int(sample.charging)])
        self._log_file.flush()
        self._write(current_a)

    def _power(self, busy_cpus: float) -> tuple[float, float]:
        """(power drawn in W, true battery current in A, positive into the battery) for this load."""
        b = self.profile.battery
        power_w = b.idle_power_w + b.power_per_busy_cpu_w * busy_cpus
        return power_w, b.charging_current_a if b.charging else -power_w / (b.voltage_uv / 1e6)

    def _write(self, current_a: float) -> None:
        p = self.profile
        b = p.battery
        w = self._fixture.write
        for i, temp in enumerate(self.temps_c):
            w(f"class/thermal/thermal_zone{i}/temp", round(temp * 1000))
        for ci, cluster in enumerate(p.clusters):
            top = round(cluster.max_khz * p.throttle_fraction) if self.throttled[ci] else cluster.max_khz
            load = max(self.busy.get(c, 0.0) for c in cluster.cpus)
            # schedutil-like: frequency follows the busiest core, in 100 MHz steps.
            cur = cluster.min_khz + (top - cluster.min_khz) * load
            cur = min(max(round(cur / 100_000) * 100_000, cluster.min_khz), top)
            policy = f"devices/system/cpu/cpufreq/policy{cluster.cpus[0]}"
            w(f"{policy}/scaling_max_freq", top)
            w(f"{policy}/scaling_cur_freq", cur)
        reported = current_a if b.current_sign == "positive-charging" else -current_a
        reported *= 1e6 if b.current_unit == "uA" else 1e3
        bat = "class/power_supply/battery"
        w(f"{bat}/current_now", round(reported))
        w(f"{bat}/charge_counter", round(self.charge_uah))
        w(f"{bat}/capacity", min(100, max(0, round(self.charge_uah / self._full_uah * 100))))
        w(f"{bat}/status", "Charging" if b.charging else "Not charging" if b.usb_online else "Discharging")
        battery_zone = next((i for i, z in enumerate(self.zones) if z.type == "battery"), None)
        w(f"{bat}/temp", round((self.temps_c[battery_zone] if battery_zone is not None else 30.0) * 10))
