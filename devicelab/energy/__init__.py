"""Energy sources, one file each (docs/energy.md): each gives joules per inference with the window it measured, or None
with the reason it cannot. `battery` reads a phone's fuel gauge (sysfs current × voltage, calibrated per device);
`external` is the seam for a power monitor between the supply and the phone (no driver ships yet)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from devicelab.measure import ProtocolSettings


@dataclass(frozen=True)
class EnergyResult:
    """What goes into a Result: energy_j_per_inference, energy_source, energy_reason, and the record of the window."""

    joules_per_inference: float | None
    source: str | None
    reason: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def result_fields(self) -> dict[str, Any]:
        return {"energy_j_per_inference": self.joules_per_inference, "energy_source": self.source,
                "energy_reason": self.reason}


def unmeasured(reason: str, source: str | None = None, **detail: Any) -> EnergyResult:
    return EnergyResult(None, source, reason, dict(detail))


class EnergySource(Protocol):
    """What a device kind's `energy_source()` hook returns (docs/devices.md): one per device, per run."""

    name: str

    def unavailable(self, settings: ProtocolSettings, state: dict[str, Any]) -> EnergyResult | None:
        """Why a window would give no honest figure now (then it is not run), or None to run it."""

    def window(self, run_more: Callable[[int], list[float]], samples: list[float], settings: ProtocolSettings,
               state: dict[str, Any]) -> EnergyResult:
        """Measure with the runner warm and loaded: idle, then continuous inference through `run_more(n)` (n more
        iterations, their times); `samples` are the timed phase's, for the first estimate of an iteration."""


SOURCES: dict[str, str] = {
    "battery": "devicelab.energy.battery",
    "external": "devicelab.energy.external",
}
