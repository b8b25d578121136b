"""Energy from an iPhone's battery: IOPMPowerSource's InstantAmperage × Voltage (DiagnosticsService.get_battery),
read from the controller during a window of continuous inference, minus the idle power just before — the same
window and the same rules as the Android battery (devicelab.energy.battery): None with the reason while a charger
feeds the phone, or when the window is too short or too flat for the gauge.

Unlike Android's current_now, whose sign and scale differ by vendor (hence its calibration), IOPMPowerSource has
one vendor: InstantAmperage is in mA, negative while the battery discharges, and Voltage in mV. That fixed reading
stands in for a calibration; the record says so."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from devicelab.energy import EnergyResult, unmeasured
from devicelab.energy.battery import Calibration, Sample, energy_per_inference, settled, window_batches

if TYPE_CHECKING:
    from devicelab.devices.ios.device import IOSTransport
    from devicelab.measure import ProtocolSettings

NAME = "ios-battery"
SOURCE = f"{NAME}: IOPMPowerSource InstantAmperage × Voltage read over lockdown (documented units: no calibration)"
SAMPLE_INTERVAL_S = 0.5
# InstantAmperage (mA, negative while discharging) as a "calibration": discharge µA = raw × -1 × 1000.
IORegistryUnits = Calibration(discharge_sign=-1, ua_per_unit=1000.0, measured_ratio=0.0, window_s=0.0,
                              samples=0, charge_delta_uah=0.0, mean_discharge_ma=0.0,
                              calibrated_at="not needed: IOPMPowerSource InstantAmperage is mA, negative while "
                                            "discharging",
                              method="IOPMPowerSource units (no calibration)")


def sample(battery: dict[str, Any] | None, at_s: float) -> Sample | None:
    """One IORegistry read as a battery Sample (uptime: the controller's clock), or None when it lacks a value."""
    if not battery:
        return None
    current, voltage = battery.get("InstantAmperage"), battery.get("Voltage")
    if not isinstance(current, int) or not isinstance(voltage, int):
        return None
    return Sample(at_s, current, voltage, None, at_s)


class IOSBatterySource:
    """The iPhone's battery gauge as an energy source (IOSTransport.energy_source())."""

    name = NAME

    def __init__(self, transport: IOSTransport) -> None:
        self.transport = transport

    def unavailable(self, s: ProtocolSettings, state: dict[str, Any]) -> EnergyResult | None:
        power = state.get("power") or {}
        if not power.get("battery_supply"):
            return unmeasured("this iPhone's IORegistry shows no IOPMPowerSource", NAME)
        if power.get("current_ma") is None or power.get("voltage_mv") is None:
            return unmeasured("IOPMPowerSource gives no InstantAmperage/Voltage on this iPhone", NAME)
        if (power.get("plugged") or state.get("charging")) and not s.energy_allow_charging:
            return unmeasured("a charger feeds the iPhone (IOPMPowerSource ExternalConnected): current flows into "
                              "the battery, so its gauge does not see what inference costs; over USB the cable "
                              "always feeds it — pair it over Wi-Fi or use a hub that cuts port power (or set "
                              "energy_allow_charging)", NAME)
        return None

    def window(self, run_more: Callable[[int], list[float]], samples: list[float], s: ProtocolSettings,
               state: dict[str, Any]) -> EnergyResult:
        """Idle, then continuous inference, with the battery read every 0.5 s from the controller (one lockdown
        exchange each, on the device's loop)."""
        from devicelab.analysis import stats

        got: list[Sample] = []
        stop = threading.Event()

        def read() -> None:
            while not stop.is_set():
                try:
                    battery = self.transport.battery()
                except OSError:
                    return
                x = sample(battery, time.monotonic())
                if x is not None:
                    got.append(x)
                stop.wait(SAMPLE_INTERVAL_S)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        median = float(stats.median(samples) or 0.01)
        try:
            idle_start = time.monotonic()
            time.sleep(s.energy_idle_seconds)
            window_start = time.monotonic()
            times = window_batches(s.energy_window_seconds, median, run_more)
            window_end = time.monotonic()
        finally:
            stop.set()
            reader.join(10)
        idle, window = settled(got, idle_start, window_start, window_end, s.energy_idle_seconds)
        result = energy_per_inference(idle, window, window_end - window_start, len(times), IORegistryUnits,
                                      s.energy_min_window_seconds)
        detail = {k: v for k, v in result.detail.items() if k != "calibration"}  # none was made: fixed units
        detail.update({"idle_s": round(window_start - idle_start, 3), "inference_s": round(sum(times), 4),
                       "units": "IOPMPowerSource InstantAmperage (mA, negative while discharging) × Voltage (mV)"})
        return EnergyResult(result.joules_per_inference, SOURCE, result.reason, detail)
