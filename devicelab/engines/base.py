"""The Engine seam: what an engine can do (declared), how a model reaches its format, and how the
runner drives it inside the measured process.

This module is imported by the host runner inside the measured process: keep it light.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class EngineInfo:
    """Capabilities and availability, as `devicelab engines --json` shows them."""

    name: str
    version: str | None
    available: bool
    reason: str | None
    formats: tuple[str, ...]
    precisions: tuple[str, ...]
    backends: tuple[str, ...]
    device_kinds: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "available": self.available, "reason": self.reason,
                "formats": list(self.formats), "precisions": list(self.precisions),
                "backends": list(self.backends), "device_kinds": list(self.device_kinds)}


@dataclass(frozen=True)
class SourceModel:
    """The ONNX model a config names (zoo or user file), as engines receive it for conversion."""

    name: str
    path: Path
    sha256: str
    inputs: tuple[dict[str, Any], ...]  # name, shape, dtype: what the runner feeds

    @property
    def shapes(self) -> list[list[int]]:
        return [list(i["shape"]) for i in self.inputs]


@dataclass(frozen=True)
class PreparedModel:
    """A model in the engine's own format, ready to hand to a runner."""

    path: Path
    notes: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)  # engine options the runner must apply


class Session(Protocol):
    """One loaded model inside the runner."""

    def run(self, feeds: dict[str, Any]) -> Sequence[Any]: ...


class Engine:
    """Base of every engine plug-in. Subclasses declare capabilities as class attributes."""

    name: ClassVar[str]
    package: ClassVar[str]  # the distribution whose version is the engine version
    module: ClassVar[str]  # the importable module that proves the engine is installed
    formats: ClassVar[tuple[str, ...]]
    precisions: ClassVar[tuple[str, ...]]
    backends: ClassVar[tuple[str, ...]]
    device_kinds: ClassVar[tuple[str, ...]] = ("host",)
    # How the runner starts. None: devicelab's Python runner (devicelab.runners.host) imports this engine in the
    # measured process. Otherwise the name of a native artifact from `devicelab build-native` (devicelab.native's
    # registry, per target) that speaks runner protocol v1 itself, e.g. "dlbench".
    native_runner: ClassVar[str | None] = None

    def version(self) -> str | None:
        try:
            return importlib.metadata.version(self.package)
        except importlib.metadata.PackageNotFoundError:
            return None

    def availability(self) -> tuple[bool, str | None]:
        # find_spec, not import: importing an engine costs memory and time in the controller.
        if importlib.util.find_spec(self.module) is None:
            return False, f"Python package '{self.package}' is not installed (pip install {self.package})"
        return True, None

    def info(self) -> EngineInfo:
        available, reason = self.availability()
        return EngineInfo(self.name, self.version(), available, reason, self.formats, self.precisions,
                          self.backends, self.device_kinds)

    def prepare(self, model: SourceModel, precision: str, cache_dir: Path) -> PreparedModel:
        """Convert (and cache by content) the source ONNX model into what the runner loads."""
        raise NotImplementedError

    def stage(self, runner_config: dict[str, Any], folder: Path) -> dict[str, Any]:
        """Write what the runner reads besides the model into `folder` (the runner's working folder, the one
        pushed to a phone) and return the config to hand it. The Python runner makes its own inputs."""
        return runner_config

    # ---- runner side (inside the measured process) ----

    def open_session(self, config: dict[str, Any]) -> Session:
        raise NotImplementedError


def make_inputs(specs: Sequence[dict[str, Any]], seed: int) -> dict[str, Any]:
    """Seeded inputs, identical across engines and processes, so outputs can be compared."""
    import numpy as np

    rng = np.random.default_rng(seed)
    feeds: dict[str, Any] = {}
    for spec in specs:
        dtype = np.dtype(spec.get("dtype", "float32"))
        shape = tuple(int(d) for d in spec["shape"])
        if dtype.kind == "f":
            feeds[spec["name"]] = rng.standard_normal(shape, dtype=np.float32).astype(dtype)
        else:
            feeds[spec["name"]] = rng.integers(0, 2, size=shape).astype(dtype)
    return feeds
