"""Reading a phone: the CPU topology and the device state from sysfs, through constant shell scripts (one adb
round trip each; no user input reaches them), and their parsers (pure, tested on captured outputs)."""

from __future__ import annotations

import contextlib
import re
from typing import Any

from devicelab.facts import Cluster, parse_cpu_list
from devicelab.result import utc_now

# Thermal zone types are vendor strings ("cpu-1-0-usr", "cpuss-0", "cpu0-silver-usr", "mid-cluster"...):
# the CPU ones are what cooldown waits on (battery, skin, modem zones move slowly and for other reasons).
CPU_ZONE = re.compile(r"cpu|cluster|silver|gold|prime|little|\bbig\b|\bmid\b", re.IGNORECASE)




# `read` is a shell builtin: one fork-free read per sysfs file, so a state read is one adb round trip. The H line is
# Android's thermal status as ThermalManagerService's dump prints it ("Thermal Status: N", android.os.Temperature's
# THROTTLING_* 0-6; Android 10+); the B line is the kernel's boot id, which changes when the phone reboots (and with it
# whatever the power HAL was told, e.g. the fixed performance mode).
STATE_SCRIPT = r"""
for z in /sys/class/thermal/thermal_zone*; do t=; v=; read -r t < "$z/type"; read -r v < "$z/temp"; printf 'T\t%s\t%s\t%s\n' "${z##*/}" "$t" "$v"; done 2>/dev/null
for c in /sys/devices/system/cpu/cpu[0-9]*; do f="$c/cpufreq"; a=; b=; h=; g=; read -r a < "$f/scaling_cur_freq"; read -r b < "$f/scaling_max_freq"; read -r h < "$f/cpuinfo_max_freq"; read -r g < "$f/scaling_governor"; printf 'F\t%s\t%s\t%s\t%s\t%s\n' "${c##*/cpu}" "$a" "$b" "$h" "$g"; done 2>/dev/null
for p in /sys/class/power_supply/*; do ty=; on=; st=; ca=; cu=; vo=; cc=; te=; read -r ty < "$p/type"; read -r on < "$p/online"; read -r st < "$p/status"; read -r ca < "$p/capacity"; read -r cu < "$p/current_now"; read -r vo < "$p/voltage_now"; read -r cc < "$p/charge_counter"; read -r te < "$p/temp"; printf 'P\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "${p##*/}" "$ty" "$on" "$st" "$ca" "$cu" "$vo" "$cc" "$te"; done 2>/dev/null
l=; read -r l < /proc/loadavg 2>/dev/null; printf 'L\t%s\n' "$l"
printf 'S\t%s\n' "$(dumpsys power 2>/dev/null | grep -m1 -E 'mWakefulness=|Display Power: state=')"
printf 'H\t%s\n' "$(dumpsys thermalservice 2>/dev/null | grep -m1 '^Thermal Status:')"
b=; read -r b < /proc/sys/kernel/random/boot_id 2>/dev/null; printf 'B\t%s\n' "$b"
"""

TOPOLOGY_SCRIPT = r"""
for c in /sys/devices/system/cpu/cpu[0-9]*; do cap=; mx=; rel=; read -r cap < "$c/cpu_capacity"; read -r mx < "$c/cpufreq/cpuinfo_max_freq"; read -r rel < "$c/cpufreq/related_cpus"; printf 'C\t%s\t%s\t%s\t%s\n' "${c##*/cpu}" "$cap" "$mx" "$rel"; done 2>/dev/null
o=; read -r o < /sys/devices/system/cpu/online 2>/dev/null; printf 'O\t%s\n' "$o"
m=$(grep -m1 MemTotal /proc/meminfo 2>/dev/null); printf 'M\t%s\n' "$m"
"""


def to_int(text: str) -> int | None:
    try:
        return int(text.strip())
    except (ValueError, AttributeError):
        return None


def _celsius(raw: str) -> float | None:
    """Thermal zone temps are millidegrees on most kernels; a few vendors' zones give whole degrees."""
    value = to_int(raw)
    if value is None:
        return None
    return value / 1000.0 if abs(value) >= 1000 else float(value)


def parse_getprop(text: str) -> dict[str, str]:
    props: dict[str, str] = {}
    for line in text.splitlines():
        m = re.match(r"^\[(.*?)\]: \[(.*)\]$", line.strip())
        if m:
            props[m.group(1)] = m.group(2)
    return props


def parse_topology(text: str) -> tuple[tuple[int, ...], tuple[Cluster, ...], int | None]:
    """(online CPUs, clusters, memory bytes) from TOPOLOGY_SCRIPT's output.

    Clusters: by cpu_capacity where the kernel has it (the biggest core = 1024), else by cpufreq policy
    (related_cpus), else by maximum frequency (docs/devices.md)."""
    rows: dict[int, tuple[int | None, int | None, str]] = {}
    online: tuple[int, ...] = ()
    memory = None
    for line in text.splitlines():
        parts = line.split("\t")
        if parts[0] == "C" and len(parts) >= 5 and parts[1].isdigit():
            rows[int(parts[1])] = (to_int(parts[2]), to_int(parts[3]), parts[4].strip())
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
    """The device state (same shape as the host's) from STATE_SCRIPT's output. Battery figures stay raw:
    sign and scale of current_now differ by vendor (calibrated per device, not guessed here)."""
    temps: dict[str, float] = {}
    freqs: dict[str, dict[str, Any]] = {}
    supplies: dict[str, dict[str, Any]] = {}
    loadavg: list[float] | None = None
    screen: str | None = None
    thermal_status: int | None = None
    boot_id: str | None = None
    for line in text.splitlines():
        parts = line.split("\t")
        tag = parts[0]
        if tag == "T" and len(parts) >= 4:
            celsius = _celsius(parts[3])
            kind = parts[2].strip() or parts[1]
            if celsius is not None:
                temps[kind if kind not in temps else f"{kind}:{parts[1]}"] = celsius
        elif tag == "F" and len(parts) >= 6 and parts[1].isdigit():
            cur = to_int(parts[2])
            if cur is not None:
                freqs[parts[1]] = {"cur_khz": cur, "max_khz": to_int(parts[3]), "hw_max_khz": to_int(parts[4]),
                                   "governor": parts[5].strip() or None}
        elif tag == "P" and len(parts) >= 10:
            supplies[parts[1]] = {"type": parts[2].strip() or None, "online": to_int(parts[3]),
                                  "status": parts[4].strip() or None, "capacity_percent": to_int(parts[5]),
                                  "current_now_raw": to_int(parts[6]), "voltage_now_raw": to_int(parts[7]),
                                  "charge_counter_raw": to_int(parts[8]), "temp_decic": to_int(parts[9])}
        elif tag == "L" and len(parts) >= 2:
            with contextlib.suppress(ValueError):
                loadavg = [float(x) for x in parts[1].split()[:3]]
        elif tag == "S" and len(parts) >= 2 and parts[1].strip():
            s = parts[1]
            screen = "on" if re.search(r"=Awake|state=ON", s) else "off" if re.search(r"=Asleep|=Dozing|state=OFF", s) \
                else s.strip()
        elif tag == "H" and len(parts) >= 2:
            m = re.match(r"\s*Thermal Status:\s*(-?\d+)\s*$", parts[1])
            thermal_status = int(m.group(1)) if m else None
        elif tag == "B" and len(parts) >= 2 and parts[1].strip():
            boot_id = parts[1].strip()
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
                             "screen": screen, "power": power, "thermal_status": thermal_status, "boot_id": boot_id}
    missing = [name for name, got in (("temperatures", temps), ("frequencies", freqs), ("battery", battery)) if not got]
    unavailable = [f"{m}: not readable in /sys on this device" for m in missing]
    if thermal_status is None:
        unavailable.append("thermal status: no 'Thermal Status' in `dumpsys thermalservice` (Android has it from 10)")
    if unavailable:
        state["unavailable"] = unavailable
    return state
