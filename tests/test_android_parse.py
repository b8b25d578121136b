"""The Android driver's pure parts as specs: what the device's files say → facts, clusters, state; quoting."""

from __future__ import annotations

import shlex
import subprocess

import pytest

from devicelab.devices.android import blob_path, parse_getprop, parse_state, parse_topology, quote
from devicelab.devices.android.conditions import fixed_performance_extras, thermal_extras, thermal_status_name
from devicelab.facts import parse_cpu_list


def test_getprop_lines() -> None:
    text = "[ro.product.model]: [Pixel 8]\n[ro.soc.model]: [Tensor G3]\n[empty]: []\nnoise\n[a.b]: [x]: [y]]\n"
    assert parse_getprop(text) == {"ro.product.model": "Pixel 8", "ro.soc.model": "Tensor G3", "empty": "",
                                   "a.b": "x]: [y]"}


def test_cpu_lists() -> None:
    assert parse_cpu_list("0-3,6") == (0, 1, 2, 3, 6)
    assert parse_cpu_list("4 5 6 7\n") == (4, 5, 6, 7)
    assert parse_cpu_list("") == ()


def _topology(rows: list[tuple[int, str, str, str]], online: str = "0-7") -> str:
    return "".join(f"C\t{c}\t{cap}\t{mx}\t{rel}\n" for c, cap, mx, rel in rows) + f"O\t{online}\nM\tMemTotal: 7864320 kB\n"


def test_clusters_by_capacity_biggest_last() -> None:
    # 4 little + 3 mid + 1 prime, as a Snapdragon 8 Gen 2 reports them
    rows = [(c, "325", "2016000", "0 1 2 3") for c in range(4)] + \
           [(c, "828", "2803200", "4 5 6") for c in range(4, 7)] + [(7, "1024", "3187200", "7")]
    cpus, clusters, memory = parse_topology(_topology(rows))
    assert cpus == tuple(range(8)) and memory == 7864320 * 1024
    assert [c.cpus for c in clusters] == [(0, 1, 2, 3), (4, 5, 6), (7,)]
    assert [c.capacity for c in clusters] == [325, 828, 1024] and clusters[-1].max_khz == 3187200


def test_clusters_by_policy_then_by_frequency_without_capacity() -> None:
    rows = [(c, "", "1800000", "0 1 2 3") for c in range(4)] + [(c, "", "2400000", "4 5 6 7") for c in range(4, 8)]
    _, clusters, _ = parse_topology(_topology(rows))
    assert [c.cpus for c in clusters] == [(0, 1, 2, 3), (4, 5, 6, 7)] and clusters[0].capacity is None
    rows = [(c, "", "1800000" if c < 2 else "2400000", "") for c in range(4)]
    _, clusters, _ = parse_topology(_topology(rows, "0-3"))
    assert [c.cpus for c in clusters] == [(0, 1), (2, 3)]


def test_offline_cores_are_left_out() -> None:
    rows = [(c, "1024", "2400000", "0 1 2 3") for c in range(4)]
    cpus, clusters, _ = parse_topology(_topology(rows, "0-1,3"))
    assert cpus == (0, 1, 3) and clusters[0].cpus == (0, 1, 3)


def test_state_zones_by_type_frequencies_battery_screen() -> None:
    text = ("T\tthermal_zone0\tcpu-1-0-usr\t45300\nT\tthermal_zone1\tbattery\t31000\n"
            "T\tthermal_zone2\tcpu-1-0-usr\t47000\nT\tthermal_zone3\tskin\t36\n"
            "F\t0\t1800000\t1800000\t1800000\tschedutil\nF\t7\t2100000\t2100000\t3187200\tschedutil\n"
            "P\tbattery\tBattery\t\tDischarging\t81\t-412000\t3870000\t2950000\t305\n"
            "P\tusb\tUSB\t0\t\t\t\t\t\t\nP\tac\tMains\t1\t\t\t\t\t\t\n"
            "L\t1.50 1.20 0.90 2/900 1234\nS\t  mWakefulness=Asleep\nH\tThermal Status: 3\n"
            "B\t4f1c9e0a-55d2-4c39-9b5e-0d2f6c1e7a11\n")
    s = parse_state(text)
    assert s["temperatures_c"] == {"cpu-1-0-usr": 45.3, "battery": 31.0, "cpu-1-0-usr:thermal_zone2": 47.0, "skin": 36.0}
    assert s["cpufreq"]["7"] == {"cur_khz": 2100000, "max_khz": 2100000, "hw_max_khz": 3187200, "governor": "schedutil"}
    assert s["loadavg"] == [1.5, 1.2, 0.9] and s["screen"] == "off" and s["charging"] is False
    assert s["power"]["plugged"] == ["ac"] and s["power"]["battery_percent"] == 81
    assert s["power"]["current_now_raw"] == -412000 and s["power"]["battery_temp_c"] == 30.5
    assert s["thermal_status"] == 3 and s["boot_id"] == "4f1c9e0a-55d2-4c39-9b5e-0d2f6c1e7a11"
    assert "unavailable" not in s


def test_state_says_what_is_missing() -> None:
    s = parse_state("L\t0.1 0.1 0.1 1/1 1\nS\t\nH\t\nB\t\n")  # Android 9: no thermalservice; boot id unreadable
    assert s["temperatures_c"] == {} and s["charging"] is None and s["screen"] is None
    assert any(u.startswith("temperatures") for u in s["unavailable"]) and any(u.startswith("battery") for u in s["unavailable"])
    assert s["thermal_status"] is None and any(u.startswith("thermal status") for u in s["unavailable"])
    assert s["boot_id"] is None


def test_thermal_status_from_moderate_on_is_flagged_as_throttling() -> None:
    cool, warm, hot = {"thermal_status": 0}, {"thermal_status": 1}, {"thermal_status": 3}
    assert thermal_extras(cool, cool) == ({"thermal_status": {"before": 0, "after": 0}}, [], False)
    assert thermal_extras(warm, cool) == ({"thermal_status": {"before": 1, "after": 0}}, [], False)  # LIGHT: recorded
    ext, notes, throttled = thermal_extras(cool, hot)
    assert ext == {"thermal_status": {"before": 0, "after": 3}} and throttled is True
    assert notes == ["Android's thermal status was 0 (NONE) before the config and 3 (SEVERE) after the config: from "
                     "2 (MODERATE) on the platform is throttling, so the row counts as throttled"]
    ext, notes, throttled = thermal_extras({"thermal_status": 2}, None)  # a row with no state after
    assert ext == {"thermal_status": {"before": 2, "after": None}} and throttled and "2 (MODERATE) before" in notes[0]
    assert thermal_extras({"thermal_status": None}, {}) == ({}, [], False)  # nothing read: nothing said
    assert [thermal_status_name(n) for n in (4, 5, 6, 9)] == ["4 (CRITICAL)", "5 (EMERGENCY)", "6 (SHUTDOWN)", "9"]


def test_fixed_performance_holds_until_the_phone_reboots() -> None:
    same, other = {"boot_id": "a"}, {"boot_id": "b"}
    assert fixed_performance_extras("a", same, same) == ({"fixed_performance": True}, [])
    assert fixed_performance_extras("a", same, None) == ({"fixed_performance": True}, [])
    assert fixed_performance_extras(None, same, other) == ({"fixed_performance": True}, [])  # no boot id to go by
    ext, notes = fixed_performance_extras("a", same, other)
    assert ext == {"fixed_performance": False} and "rebooted" in notes[0]


NASTY = ["m o'd;$(touch pwned) \"q\".onnx", "a;b", "$(id)", "`id`", "x\ny", "-rf", "'", "\\", "*", "~root", "a b\tc"]


@pytest.mark.parametrize("name", NASTY)
def test_quote_makes_every_item_a_literal(name: str) -> None:
    # What the phone's sh receives, read back by a real POSIX sh here: the same items, nothing run.
    out = subprocess.run(["sh", "-c", "printf '%s\\0' " + quote([name, "second"])], capture_output=True, check=True)
    assert out.stdout.split(b"\0")[:2] == [name.encode(), b"second"]
    assert shlex.split(quote([name])) == [name]


def test_blob_paths_stay_under_devicelab_folder() -> None:
    assert blob_path("ab" * 32, "model.param") == "/data/local/tmp/devicelab/a/" + "ab" * 16 + "/model.param"
    for bad in ("", ".", "..", "a/b", "x\0y"):
        with pytest.raises(ValueError):
            blob_path("ab" * 32, bad)
