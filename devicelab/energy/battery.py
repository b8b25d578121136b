"""Energy from a phone's battery sensor: sysfs current_now × voltage_now, sampled on the device during a dedicated
window of continuous inference, minus the idle power measured just before (android.md, "Energy").

Vendors differ in the **sign** of current_now (three conventions in the wild) and its **scale** (µA as documented,
or mA), so each phone is calibrated once (`devicelab calibrate-energy DEVICE`): over a discharge window the change
in charge_counter (µAh, the one unit vendors agree on) is compared with ∫current_now·dt, which gives both. The
fuel gauge averages over seconds, so windows shorter than `energy_min_window_seconds` give None, with the reason.

Everything here is pure: the device runs `sampler_script()` and hands back its lines.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from devicelab.energy import EnergyResult, unmeasured

NAME = "battery"
SAMPLE_INTERVAL_S = 0.2


@dataclass(frozen=True)
class Sample:
    """One read of the battery: the phone's uptime (s) and the raw sysfs values, as the kernel gives them."""

    uptime_s: float
    current_raw: int
    voltage_raw: int
    charge_raw: int | None
    at_s: float = 0.0  # when the controller received it (its monotonic clock): what windows are cut by


def sampler_script(supply: str, interval_s: float = SAMPLE_INTERVAL_S, count: int | None = None) -> str:
    """A device-side loop printing `B uptime current voltage charge` every interval (fork-free reads; toybox's
    sleep takes fractions). `count` None: until the stream is closed."""
    path = shlex.quote(f"/sys/class/power_supply/{supply}")
    loop = "while :" if count is None else f"i=0; while [ $i -lt {int(count)} ]"
    step = "" if count is None else " i=$((i+1));"
    return (f"P={path}; {loop}; do c=; v=; q=; u=; read -r c < \"$P/current_now\"; read -r v < \"$P/voltage_now\"; "
            f"read -r q < \"$P/charge_counter\"; read -r u _ < /proc/uptime; echo \"B $u $c $v $q\";{step} "
            f"sleep {interval_s:g}; done 2>/dev/null")


_LINE = re.compile(r"^B (\d+(?:\.\d+)?) (-?\d+) (-?\d+)(?: (-?\d+))?\s*$")


def parse_sample(line: str, at_s: float = 0.0) -> Sample | None:
    m = _LINE.match(line.strip())
    if not m:
        return None
    return Sample(float(m.group(1)), int(m.group(2)), int(m.group(3)), int(m.group(4)) if m.group(4) else None, at_s)


def parse_samples(text: str) -> list[Sample]:
    return [s for s in (parse_sample(line) for line in text.splitlines()) if s is not None]


def volts(raw: int) -> float:
    """voltage_now is µV as documented; a few drivers give mV (a Li-ion cell is 3–4.5 V either way)."""
    return raw / 1e6 if abs(raw) > 100_000 else raw / 1e3


@dataclass(frozen=True)
class Calibration:
    """How to read this phone's current_now: discharge current in µA = raw × discharge_sign × ua_per_unit."""

    discharge_sign: int  # +1: current_now is positive while discharging; -1: negative (Android's documented convention)
    ua_per_unit: float  # µA per current_now unit: 1 as documented, 1000 for drivers that report mA
    measured_ratio: float  # Δcharge_counter (µA·s) / ∫current_now dt, before snapping to a power of ten
    window_s: float
    samples: int
    charge_delta_uah: float
    mean_discharge_ma: float
    calibrated_at: str = ""
    method: str = "charge_counter over a discharge window"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibration:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    def describe(self) -> str:
        sign = "positive" if self.discharge_sign > 0 else "negative"
        unit = "µA" if self.ua_per_unit == 1 else "mA" if self.ua_per_unit == 1000 else f"{self.ua_per_unit:g} µA"
        return f"current_now in {unit}, {sign} while discharging (calibrated {self.calibrated_at or 'earlier'})"

    def watts(self, s: Sample) -> float:
        """Power drawn from the battery (positive while discharging)."""
        return s.current_raw * self.discharge_sign * self.ua_per_unit * 1e-6 * volts(s.voltage_raw)


def _integral(samples: Sequence[Sample], value: Any) -> float:
    """Trapezoid ∫value dt over the samples' uptime."""
    return sum((b.uptime_s - a.uptime_s) * (value(a) + value(b)) / 2 for a, b in zip(samples, samples[1:]))


def calibrate(samples: Sequence[Sample], when: str = "") -> Calibration | str:
    """The calibration from a discharge window's samples, or why they cannot give one."""
    if len(samples) < 5:
        return f"only {len(samples)} battery samples: the window is too short"
    charges = [s.charge_raw for s in samples if s.charge_raw is not None]
    if len(charges) != len(samples):
        return "this phone has no charge_counter: calibrate it against an external power monitor"
    window = samples[-1].uptime_s - samples[0].uptime_s
    delta_uah = float(charges[-1] - charges[0])
    if delta_uah == 0:
        return (f"charge_counter did not move in {window:.0f} s (its steps are coarse on this phone): calibrate over "
                "a longer window (--seconds)")
    if delta_uah > 0:
        return "charge_counter rose: the phone was charging (unplug it, or connect adb over Wi-Fi)"
    raw_integral = _integral(samples, lambda s: float(s.current_raw))
    if raw_integral == 0:
        return "current_now read 0 throughout: this phone does not report it"
    ratio = delta_uah * 3600 / raw_integral  # µA·s per (raw unit · s)
    # The charge went down: current_now had the sign of `ratio`'s opposite while discharging.
    sign = -1 if ratio > 0 else 1
    magnitude = abs(ratio)
    snapped = 10 ** round(math.log10(magnitude))
    ua_per_unit = float(snapped) if abs(magnitude / snapped - 1) <= 0.25 else magnitude
    mean_ma = -delta_uah * 3600 / window / 1000 if window > 0 else 0.0
    return Calibration(sign, ua_per_unit, ratio, round(window, 3), len(samples), delta_uah, round(mean_ma, 3), when)


def energy_per_inference(idle: Sequence[Sample], window: Sequence[Sample], window_s: float, iterations: int,
                         calibration: Calibration | None, min_window_s: float) -> EnergyResult:
    """(mean power in the window − mean idle power) × window / iterations, or None with the reason."""
    record: dict[str, Any] = {"window_s": round(window_s, 4), "iterations": iterations, "samples": len(window),
                              "idle_samples": len(idle)}
    if calibration is None:
        return unmeasured("this phone's battery sensor is not calibrated (sign and scale of current_now differ by "
                          "vendor): run `devicelab calibrate-energy DEVICE` once", NAME, **record)
    source = f"{NAME}: current_now × voltage_now, {calibration.describe()}"
    record["calibration"] = calibration.to_dict()
    if window_s < min_window_s:
        return unmeasured(f"energy window {window_s:.1f} s is shorter than energy_min_window_seconds="
                          f"{min_window_s:g}: the fuel gauge averages over seconds", source, **record)
    if len(window) < 3 or len(idle) < 3:
        return unmeasured(f"too few battery samples ({len(idle)} idle, {len(window)} in the window)", source, **record)
    idle_w = sum(map(calibration.watts, idle)) / len(idle)
    window_w = sum(map(calibration.watts, window)) / len(window)
    record.update({"idle_w": round(idle_w, 6), "window_w": round(window_w, 6)})
    if window_w <= idle_w:
        return unmeasured(f"the window drew no more than idle ({window_w:.3f} W vs {idle_w:.3f} W): below what the "
                          "fuel gauge resolves", source, **record)
    return EnergyResult((window_w - idle_w) * window_s / iterations, source, None, record)
