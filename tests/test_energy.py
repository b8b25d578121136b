"""Energy per inference from the battery sensor: the arithmetic as specs, then end to end on the emulated phone,
whose battery discharges by a model of its load (its ground truth is the fixture's energy log), in both of the
sign/unit conventions vendors use."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from android_env import (AdbServer, EmulatedPhone, adb_binaries, build_example_runner, cli_env, needs_adb,
                         needs_namespace, needs_qemu)
from helpers import FAST_PROTOCOL, devicelab, run_json

from devicelab.energy.battery import (Calibration, Sample, calibrate, energy_per_inference, parse_sample,
                                      sampler_script)
from devicelab.testing.emulated_device import read_energy_log


def discharge(seconds: float, amps: float, sign: int, ua_per_unit: float, volts: float = 3.9) -> list[Sample]:
    """A phone drawing `amps` for `seconds`: charge_counter (µAh) falls; current_now is reported with the vendor's
    `sign` (+1: positive while discharging) and unit (µA per raw unit)."""
    out = []
    for i in range(int(seconds * 2) + 1):
        t = i * 0.5
        out.append(Sample(t, round(sign * amps * 1e6 / ua_per_unit), int(volts * 1e6),
                          round(3_000_000 - amps * 1e6 * t / 3600)))
    return out


@pytest.mark.parametrize("sign,ua_per_unit", [(-1, 1.0), (1, 1.0), (-1, 1000.0), (1, 1000.0)])
def test_calibration_finds_sign_and_scale(sign: int, ua_per_unit: float) -> None:
    cal = calibrate(discharge(60, 0.8, sign, ua_per_unit))
    assert isinstance(cal, Calibration), cal
    assert cal.discharge_sign == sign and cal.ua_per_unit == ua_per_unit
    assert cal.mean_discharge_ma == pytest.approx(800, rel=0.01)


def test_calibration_refuses_what_cannot_calibrate() -> None:
    flat = [Sample(t, -500_000, 3_900_000, 3_000_000) for t in range(60)]
    assert "did not move" in calibrate(flat)  # type: ignore[operator]
    rising = [Sample(t, 500_000, 3_900_000, 3_000_000 + t * 100) for t in range(60)]
    assert "charging" in calibrate(rising)  # type: ignore[operator]
    assert "too short" in calibrate(discharge(1, 0.5, -1, 1.0))  # type: ignore[operator]


def test_energy_is_window_power_minus_idle_times_time_per_inference() -> None:
    cal = Calibration(-1, 1.0, 1.0, 60, 120, -1000, 60)
    idle = [Sample(t, -100_000, 4_000_000, None) for t in range(10)]  # 0.1 A × 4 V = 0.4 W
    busy = [Sample(t, -400_000, 4_000_000, None) for t in range(40)]  # 1.6 W
    r = energy_per_inference(idle, busy, window_s=30.0, iterations=3000, calibration=cal, min_window_s=30)
    assert r.joules_per_inference == pytest.approx(1.2 * 30 / 3000)  # 1.2 W over 10 ms per inference
    assert r.detail["idle_w"] == pytest.approx(0.4) and r.detail["window_w"] == pytest.approx(1.6)
    short = energy_per_inference(idle, busy, window_s=12.0, iterations=1200, calibration=cal, min_window_s=30)
    assert short.joules_per_inference is None and "shorter than energy_min_window_seconds=30" in str(short.reason)
    none = energy_per_inference(idle, busy, 30.0, 3000, None, 30)
    assert none.joules_per_inference is None and "calibrate-energy" in str(none.reason)


def test_sampler_lines() -> None:
    assert parse_sample("B 1234.56 -412000 3870000 2950000") == Sample(1234.56, -412000, 3870000, 2950000)
    assert parse_sample("B 1.0 5 3870") == Sample(1.0, 5, 3870, None) and parse_sample("noise") is None
    assert "'/sys/class/power_supply/bat; x'" in sampler_script("bat; x")  # a vendor's odd supply name, quoted


# ---- end to end on the emulated phone ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def runner_arm64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_example_runner(tmp_path_factory.mktemp("arm64") / "protocol_runner")


@pytest.fixture(scope="module")
def server() -> Iterator[AdbServer]:
    with AdbServer(adb_binaries()[0][1]) as s:
        yield s


_env = cli_env


def _energy_suite(path: Path, serial: str, binary: Path, **protocol: Any) -> Path:
    path.write_text(yaml.safe_dump({
        "name": "energy", "models": ["squeezenet1_1"], "threads": [1], "devices": [serial],
        "engines": [{"name": "protocol", "options": {"binary": str(binary)}}],
        "protocol": {**FAST_PROTOCOL, "accuracy_inputs": 0, "energy": True, "energy_window_seconds": 4.0,
                     "energy_min_window_seconds": 3.0, "energy_idle_seconds": 2.0, **protocol}}))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("sign,unit", [("positive-charging", "uA"), ("positive-discharging", "mA")])
@needs_adb()
@needs_namespace()
@needs_qemu()
def test_calibrate_then_joules_per_inference(sign: str, unit: str, server: AdbServer, runner_arm64: Path,
                                             env: dict[str, str], tmp_path: Path) -> None:
    # A serial of its own: calibrations live in the (session-wide) data folder, keyed by the phone's serial.
    profile = {"serial": f"DLEMU-{unit}", "battery": {"current_sign": sign, "current_unit": unit,
                                                      "power_per_busy_cpu_w": 1.5}}
    with EmulatedPhone(server, tmp_path / "phone", profile=profile) as phone:
        e = _env(env, server)
        suite = _energy_suite(tmp_path / "s.yaml", phone.serial, runner_arm64)
        code, data, err = run_json("run", "--suite", str(suite), env=e)  # not calibrated yet
        assert code == 0, err
        assert data["results"][0]["energy_j_per_inference"] is None
        assert "devicelab calibrate-energy" in data["results"][0]["energy_reason"]

        code, cal, err = run_json("calibrate-energy", phone.serial, "--seconds", "6", env=e)
        assert code == 0, err
        assert cal["energy"]["discharge_sign"] == (1 if sign == "positive-discharging" else -1)
        assert cal["energy"]["ua_per_unit"] == (1000 if unit == "mA" else 1)
        assert Path(cal["profile"]).name == f"DLEMU-{unit}.json"  # the phone's own serial, not its adb address

        code, data, err = run_json("run", "--suite", str(suite), env=e)
        assert code == 0, err
    [r] = data["results"]
    assert r["status"] == "ok" and r["energy_reason"] is None, r["energy_reason"]
    energy = r["protocol"]["energy"]
    assert energy["samples"] >= 5 and energy["idle_samples"] >= 3 and energy["window_s"] >= 3.0
    # Ground truth: the phone model's own energy log (what it really drew, tick by tick), cut to the windows the
    # Result names. Joules per inference = (window power - idle power) x the window's wall time / iterations.
    log = read_energy_log(phone.root)

    def mean_power(start: float, end: float) -> float:
        ticks = [x for x in log if start < x.time_s <= end]
        assert len(ticks) >= 3, (start, end, len(log))
        return sum(x.energy_j for x in ticks) / sum(x.dt_s for x in ticks)

    start, end = energy["window_start_unix_s"], energy["window_end_unix_s"]
    true_j = (mean_power(start, end) - mean_power(energy["idle_start_unix_s"] + 1.0, start)) * (end - start) \
        / energy["iterations"]
    assert r["energy_j_per_inference"] == pytest.approx(true_j, rel=0.3)
    assert "calibrated" in r["energy_source"]
    print(f"\nenergy [{sign}, {unit}]: {r['energy_j_per_inference'] * 1e3:.2f} mJ/inference, the phone's log "
          f"{true_j * 1e3:.2f}; window {energy['window_w']:.3f} W - idle {energy['idle_w']:.3f} W over "
          f"{energy['window_s']:.2f} s wall ({energy['inference_s']:.2f} s of inference), {energy['iterations']} "
          f"iterations, {energy['samples']} samples; calibration {cal['energy']['measured_ratio']:+.4g} per unit "
          f"over {cal['energy']['window_s']:.1f} s")


@pytest.mark.slow
@needs_adb()
@needs_namespace()
@needs_qemu()
def test_no_energy_while_charging_or_from_a_short_window(server: AdbServer, runner_arm64: Path, env: dict[str, str],
                                                         tmp_path: Path) -> None:
    e = _env(env, server)
    usb = {"serial": "DLEMU-USB", "battery": {"charging": True, "usb_online": True}}
    with EmulatedPhone(server, tmp_path / "usb", profile=usb) as phone:
        p = devicelab("calibrate-energy", phone.serial, "--seconds", "5", env=e)
        assert p.returncode == 2 and "a charger feeds the phone" in p.stderr, p.stderr
        code, data, err = run_json("run", "--suite", str(_energy_suite(tmp_path / "s.yaml", phone.serial, runner_arm64)),
                                   env=e)
        assert code == 0, err
        assert data["results"][0]["energy_j_per_inference"] is None
        assert "a charger feeds the phone (usb online)" in data["results"][0]["energy_reason"]
    with EmulatedPhone(server, tmp_path / "short", profile={"serial": "DLEMU-SHORT"}) as phone:
        assert run_json("calibrate-energy", phone.serial, "--seconds", "6", env=e)[0] == 0
        suite = _energy_suite(tmp_path / "s2.yaml", phone.serial, runner_arm64, energy_window_seconds=1.0)
        code, data, err = run_json("run", "--suite", str(suite), env=e)
        assert code == 0, err
        r = data["results"][0]
        assert r["energy_j_per_inference"] is None and "shorter than energy_min_window_seconds=3" in r["energy_reason"]
