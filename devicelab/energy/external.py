"""The seam for an external power monitor (a Joulescope, a Monsoon, a USB power meter) between the supply and the
phone — better than any fuel gauge: it sees the whole device at kHz rates, and the battery can be bypassed.

No driver ships: a driver is a class with this shape, registered by its module path, e.g. one built on
`pyjoulescope-driver`. The device starts it just before the idle window and stops it after the energy batch; the
same arithmetic as the battery source (energy.battery.energy_per_inference) turns its samples into joules per
inference.
"""

from __future__ import annotations

from typing import Protocol


class PowerMonitor(Protocol):
    name: str  # e.g. "joulescope:JS220-001234"

    def start(self) -> None:
        """Begin sampling (a background thread of the driver's)."""

    def mark(self) -> float:
        """The monitor's own clock now, in seconds: the device marks the start and end of each window with it."""

    def stop(self) -> list[tuple[float, float]]:
        """Stop; every sample since start as (monitor clock s, watts)."""
