"""Energy from a phone's battery sensor: sysfs current_now × voltage_now, sampled on the device during a dedicated
window of continuous inference, minus the idle power measured just before (docs/energy.md).

Vendors differ in the **sign** of current_now (three conventions in the wild) and its **scale** (µA as documented,
or mA), so each phone is calibrated once (`devicelab calibrate-energy DEVICE`): over a discharge window the change
in charge_counter (µAh, the one unit vendors agree on) is compared with ∫current_now·dt, which gives both. The
fuel gauge averages over seconds, so windows shorter than `energy_min_window_seconds` give None, with the reason.

The arithmetic is pure; `BatterySource` (the window) and `calibrate_device` run `sampler_script()` on a device
through its transport's spawn() and read its lines: no device kind is imported here.
"""

from __future__ import annotations

import math
import re
import shlex
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from devicelab import profiles
from devicelab.energy import EnergyResult, unmeasured
from devicelab.errors import DevicelabError
from devicelab.measure import ChannelClosedError, ChannelTimeoutError

if TYPE_CHECKING:
    from devicelab.devices.base import Process, Transport
    from devicelab.measure import ProtocolSettings

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


def window_batches(seconds: float, median: float, run_more: Callable[[int], list[float]]) -> list[float]:
    """Batches until the inference time reaches the energy window: the timed phase's median only estimates an
    iteration, so each batch is sized from what is left and the latest batch's median."""
    from devicelab.analysis import stats  # numpy: only when a window is measured

    times: list[float] = []
    iterations = 1
    while sum(times) < seconds:
        estimate = float(stats.median(times[-iterations:]) or median) if times else median
        iterations = max(1, math.ceil((seconds - sum(times)) / estimate))
        times += run_more(iterations)
    return times


def settled(got: Sequence[Sample], idle_start: float, window_start: float, window_end: float, idle_seconds: float
            ) -> tuple[list[Sample], list[Sample]]:
    """The idle and the window samples without each one's first moments, which still show the state before it
    (the gauge and the clocks settle)."""
    settle_idle = min(1.0, 0.1 * idle_seconds)
    settle = min(1.0, 0.1 * (window_end - window_start))
    idle = [x for x in got if idle_start + settle_idle <= x.at_s < window_start]
    window = [x for x in got if window_start + settle <= x.at_s <= window_end]
    return idle, window


def energy_per_inference(idle: Sequence[Sample], window: Sequence[Sample], window_s: float, iterations: int,
                         calibration: Calibration | None, min_window_s: float) -> EnergyResult:
    """(mean power in the window − mean idle power) × window / iterations, or None with the reason. `window_s` is the
    wall time the power was averaged over (the iterations' own times leave out the batches' round trips, and a
    runner that gets less CPU than it asks for: using them would make the joules come out low)."""
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


# --------------------------------------------------------------------------------------------------
# On a device: the energy window and the calibration, through the transport's spawn()


def _sampler(transport: Transport, script: str) -> Process:
    return transport.spawn(["sh", "-c", script], {}, (), None)


def stored_calibration(profile_key: str) -> Calibration | None:
    data = profiles.load(profile_key).get("energy")
    return Calibration.from_dict(data) if data else None


class BatterySource:
    """The phone's battery sensor as an energy source (a transport's energy_source())."""

    name = NAME

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    def calibration(self) -> Calibration | None:
        return stored_calibration(self.transport.profile_key())

    def unavailable(self, s: ProtocolSettings, state: dict[str, Any]) -> EnergyResult | None:
        power = state.get("power") or {}
        if not power.get("battery_supply"):
            return unmeasured("this phone shows no battery in /sys/class/power_supply", NAME)
        if power.get("plugged") and not s.energy_allow_charging:
            return unmeasured(f"a charger feeds the phone ({', '.join(power['plugged'])} online): current flows into "
                              "the battery, so its sensor does not see what inference costs; connect adb over "
                              "Wi-Fi or use a hub that cuts port power (or set energy_allow_charging)", NAME)
        if self.calibration() is None:
            return energy_per_inference([], [], 0.0, 1, None, s.energy_min_window_seconds)
        return None

    def window(self, run_more: Callable[[int], list[float]], samples: list[float], s: ProtocolSettings,
               state: dict[str, Any]) -> EnergyResult:
        """Idle power, then a window of continuous inference, both with the battery sampled on the device by a
        fork-free shell loop; samples are placed by when they arrive."""
        from devicelab.analysis import stats

        calibration = self.calibration()
        supply = str((state.get("power") or {}).get("battery_supply"))
        median = float(stats.median(samples) or 0.01)
        got: list[Sample] = []
        sampler = _sampler(self.transport, sampler_script(supply))

        def read() -> None:
            while True:
                try:
                    line = sampler.read_line(time.monotonic() + 3600)
                except (ChannelClosedError, ChannelTimeoutError):
                    return
                x = parse_sample(line.decode(errors="replace"), time.monotonic())
                if x is not None:
                    got.append(x)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            idle_start, idle_start_unix = time.monotonic(), time.time()
            time.sleep(s.energy_idle_seconds)
            window_start, window_start_unix = time.monotonic(), time.time()
            times = window_batches(s.energy_window_seconds, median, run_more)
            window_end, window_end_unix = time.monotonic(), time.time()
        finally:
            sampler.kill()
            reader.join(5)
        idle, window = settled(got, idle_start, window_start, window_end, s.energy_idle_seconds)
        # Energy = Δpower × the window's wall time (its mean power estimated from the part after it settled).
        result = energy_per_inference(idle, window, window_end - window_start, len(times), calibration,
                                      s.energy_min_window_seconds)
        result.detail.update({"idle_s": round(window_start - idle_start, 3), "inference_s": round(sum(times), 4),
                              "median_window_iteration_s": stats.median(times),
                              # when, on the controller's clock: a power monitor's log can be cut to the same window
                              "idle_start_unix_s": round(idle_start_unix, 3),
                              "window_start_unix_s": round(window_start_unix, 3),
                              "window_end_unix_s": round(window_end_unix, 3)})
        return result


def calibrate_device(transport: Transport, seconds: float = 60.0, load: bool = True, allow_charging: bool = False
                     ) -> tuple[Calibration, str]:
    """Discharge for `seconds` (with a busy loop on every CPU unless load is False, so the charge moves) while
    sampling current_now and charge_counter; store the sign and scale in the device's profile."""
    state = transport.state()
    power = state.get("power") or {}
    supply = power.get("battery_supply")
    if not supply:
        raise DevicelabError(f"{transport.id}: no battery in /sys/class/power_supply: nothing to calibrate")
    if power.get("plugged") and not allow_charging:
        raise DevicelabError(f"{transport.id}: a charger feeds the phone ({', '.join(power['plugged'])} online): "
                             "unplug it and connect adb over Wi-Fi, or pass --allow-charging")
    interval = 0.5
    busy = " ".join('( while :; do :; done ) & L="$L $!";' for _ in transport.facts().cpu_ids) if load else ""
    script = (f"L=; {busy} {sampler_script(str(supply), interval, math.ceil(seconds / interval))}; "
              "[ -n \"$L\" ] && kill $L; true")
    sampler = _sampler(transport, script)
    lines: list[str] = []
    deadline = time.monotonic() + seconds * 2 + 60
    try:
        while True:
            lines.append(sampler.read_line(deadline).decode(errors="replace"))
    except ChannelClosedError:
        pass
    except ChannelTimeoutError:
        sampler.kill()
        raise DevicelabError(f"{transport.id}: the calibration sampler did not finish in {seconds * 2 + 60:g} s") \
            from None
    from devicelab.result import utc_now

    calibration = calibrate(parse_samples("\n".join(lines)), utc_now())
    if isinstance(calibration, str):
        raise DevicelabError(f"{transport.id}: energy calibration failed: {calibration}")
    return calibration, profiles.update(transport.profile_key(), "energy", calibration.to_dict())
