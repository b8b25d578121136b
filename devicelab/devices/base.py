"""The Device seam: facts, preparing artifacts, running one job, state, cooldown."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from devicelab.protocol import ProtocolSettings
from devicelab.result import Config, Result


@dataclass(frozen=True)
class Cluster:
    """CPUs that share a micro-architecture (big.LITTLE), ordered by capacity."""

    cpus: tuple[int, ...]
    capacity: int | None = None  # /sys/.../cpu_capacity, the biggest core = 1024
    max_khz: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"cpus": list(self.cpus), "capacity": self.capacity, "max_khz": self.max_khz}


@dataclass(frozen=True)
class DeviceFacts:
    id: str
    kind: str
    model: str
    os: str
    abi: str
    cpu_ids: tuple[int, ...]
    clusters: tuple[Cluster, ...]
    manufacturer: str | None = None
    memory_bytes: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "model": self.model, "os": self.os, "abi": self.abi,
                "cpus": len(self.cpu_ids), "cpu_ids": list(self.cpu_ids),
                "clusters": [c.to_dict() for c in self.clusters], "manufacturer": self.manufacturer,
                "memory_bytes": self.memory_bytes, **self.extra}


@dataclass(frozen=True)
class DeviceEntry:
    """One validated inventory entry from devices.yaml."""

    id: str
    kind: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Job:
    """Everything a device needs to run one config: the config, the prepared model and runner settings."""

    run_id: str
    config: Config
    model_path: Path
    inputs: tuple[dict[str, Any], ...]
    seed: int
    settings: ProtocolSettings
    options: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    # Where the device must leave the outputs of the accuracy inputs (an .npz, on the controller's disk).
    outputs_path: Path | None = None


class Device:
    """Base of every device kind. One file per kind, registered in devices/__init__.py."""

    kind: ClassVar[str]
    inventory_keys: ClassVar[tuple[str, ...]] = ()  # keys a devices.yaml entry of this kind may add

    def __init__(self, entry: DeviceEntry) -> None:
        self.entry = entry
        self.id = entry.id

    def facts(self) -> DeviceFacts:
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        """Temperatures, frequencies, battery and charging now. Missing sensors are named, not guessed."""
        raise NotImplementedError

    def idle_baseline(self) -> dict[str, Any]:
        """State at the start of a run, against which cooldown waits."""
        return self.state()

    def cooldown(self, baseline: dict[str, Any], settings: ProtocolSettings) -> dict[str, Any]:
        raise NotImplementedError

    def run(self, job: Job) -> Result:
        """Run one config to a Result. Never raises for engine or device faults: they become rows."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the device holds (connections, the current runner)."""
