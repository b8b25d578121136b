"""Result schema v1: one frozen record per configuration (design.md, Contract v1).

Every config of a run ends as exactly one Result, whatever happened to it: a failed config is a row,
never a gap. Units are in the field names (_s seconds, _bytes bytes, _j joules).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

SCHEMA_VERSION = 1

OK = "ok"
FAILED = "failed"  # the engine or the model failed: reason + stderr tail
INFRA_FAILED = "infra-failed"  # device gone, transport timeout, store unreachable
UNSUPPORTED = "unsupported"  # the plan knows this combination cannot run
STATUSES = (OK, FAILED, INFRA_FAILED, UNSUPPORTED)

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
BACKENDS = ("cpu", "gpu", "opencl", "vulkan", "metal", "nnapi", "coreml")


@dataclass(frozen=True)
class Config:
    """What is measured. Two keys derive from it (Contract v1): identity (resume, de-duplication) and
    series (compare, regress, history: a new engine build or model file continues the series)."""

    device: str
    engine: str
    label: str
    engine_version: str
    model: str
    model_sha256: str
    model_bytes: int
    precision: str
    backend: str
    threads: int
    cpus: tuple[int, ...]  # the resolved affinity: what the runner is pinned to
    affinity: str  # as the suite asked: big, little, all, or an explicit list
    repeat: int = 0  # which process of the config (suites may ask for several, e.g. A/B needs >= 3 per side)

    def identity_key(self) -> str:
        return _key(self.device, self.engine, self.label, self.engine_version, self.model_sha256,
                    self.precision, self.backend, self.threads, self.cpus, self.repeat)

    def series_key(self) -> str:
        return _key(self.device, self.engine, self.label, self.model, self.precision, self.backend,
                    self.threads, self.cpus)


def _key(*parts: object) -> str:
    return json.dumps([list(p) if isinstance(p, tuple) else p for p in parts], separators=(",", ":"))


@dataclass(frozen=True)
class Result:
    """One configuration's outcome. Field names are the JSON contract; see README "Result schema"."""

    run_id: str
    device: str
    engine: str
    label: str
    engine_version: str
    model: str
    model_sha256: str
    model_bytes: int
    precision: str
    backend: str
    threads: int
    cpus: tuple[int, ...]
    status: str
    reason: str | None = None
    notes: tuple[str, ...] = ()
    samples_s: tuple[float, ...] = ()  # every timed iteration, monotonic clock, seconds
    summary_only: bool = False  # True when the tool printed only summaries: samples_s is then empty
    warmups: int | None = None
    median_s: float | None = None
    p90_s: float | None = None
    load_s: float | None = None
    first_s: float | None = None
    rss_before_load_bytes: int | None = None
    peak_rss_bytes: int | None = None
    memory_method: str | None = None
    energy_j_per_inference: float | None = None
    energy_source: str | None = None
    energy_reason: str | None = None
    accuracy: dict[str, Any] | None = None  # agreement with the fp32 reference; None for the reference
    state_before: dict[str, Any] | None = None
    state_after: dict[str, Any] | None = None
    throttled: bool | None = None  # None: the device has no frequency sensors to tell
    started_at: str | None = None  # ISO 8601 UTC
    finished_at: str | None = None
    # Beyond the contract's list, still v1 (added before any v1 data existed; see README):
    affinity: str = "all"
    repeat: int = 0
    protocol: dict[str, Any] | None = None  # the measurement settings used and why sampling stopped
    stderr_tail: str | None = None
    schema_version: int = SCHEMA_VERSION

    @property
    def config(self) -> Config:
        return Config(self.device, self.engine, self.label, self.engine_version, self.model,
                      self.model_sha256, self.model_bytes, self.precision, self.backend, self.threads,
                      tuple(self.cpus), self.affinity, self.repeat)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for name in ("cpus", "notes", "samples_s"):
            d[name] = list(d[name])
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Result:
        version = data.get("schema_version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise ValueError(f"Result schema_version {version} is not supported (this devicelab reads {SCHEMA_VERSION})")
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        for name in ("cpus", "notes", "samples_s"):
            kwargs[name] = tuple(kwargs.get(name) or ())
        return cls(**kwargs)

    @classmethod
    def for_config(cls, run_id: str, config: Config, status: str, **fields: Any) -> Result:
        return cls(run_id=run_id, device=config.device, engine=config.engine, label=config.label,
                   engine_version=config.engine_version, model=config.model,
                   model_sha256=config.model_sha256, model_bytes=config.model_bytes,
                   precision=config.precision, backend=config.backend, threads=config.threads,
                   cpus=tuple(config.cpus), affinity=config.affinity, repeat=config.repeat, status=status, **fields)


RESULT_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Result))
