"""Energy sources, one file each (design.md): each gives joules per inference with the window it measured, or None
with the reason it cannot. `battery` reads a phone's fuel gauge (sysfs current × voltage, calibrated per device);
`external` is the seam for a power monitor between the supply and the phone (no driver ships yet)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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


SOURCES: dict[str, str] = {
    "battery": "devicelab.energy.battery",
    "external": "devicelab.energy.external",
}
