"""The Device seam: facts, preparing artifacts, running one job, state, cooldown — and the pieces every kind
shares: a Result's measurement fields from the runner protocol and dlprobe, throttling, and the cooldown loop."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from devicelab import native
from devicelab.analysis import stats
from devicelab.engines.base import PreparedModel
from devicelab.protocol import Measurement, ProtocolSettings
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
    """One validated inventory entry from devices.yaml (or a phone adb discovered)."""

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
    prepared: PreparedModel | None = None  # the converted model as the engine made it (tools lay it out themselves)


# What a device tells the controller while it works, for the CLI to show: ("push", {...}).
DeviceEvent = Callable[[str, dict[str, Any]], None]


class Device:
    """Base of every device kind. One file per kind, registered in devices/__init__.py."""

    kind: ClassVar[str]
    inventory_keys: ClassVar[tuple[str, ...]] = ()  # keys a devices.yaml entry of this kind may add
    cooldown_poll_seconds: ClassVar[float] = 0.5  # how often cooldown re-reads the temperatures

    @classmethod
    def check_entry(cls, options: dict[str, Any]) -> list[str]:
        """Problems with an inventory entry's kind-specific keys (each starts with the key)."""
        return []

    def __init__(self, entry: DeviceEntry) -> None:
        self.entry = entry
        self.id = entry.id
        self.on_event: DeviceEvent = lambda kind, data: None

    def facts(self) -> DeviceFacts:
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        """Temperatures, frequencies, battery and charging now. Missing sensors are named, not guessed."""
        raise NotImplementedError

    def idle_baseline(self) -> dict[str, Any]:
        """State at the start of a run, against which cooldown waits."""
        return self.state()

    def cooldown_zones(self, temperatures: dict[str, float]) -> dict[str, float]:
        """The zones cooldown waits on (phones: the CPU zones; the host: every zone it has)."""
        return temperatures

    def cooldown(self, baseline: dict[str, Any], settings: ProtocolSettings) -> dict[str, Any]:
        """Wait until the cooldown zones are within `cooldown_tolerance_c` of the idle baseline (or the timeout);
        a fixed pause where there is no sensor. What happened is recorded with the next Result."""
        base = self.cooldown_zones(baseline.get("temperatures_c") or {})
        if not base:
            time.sleep(settings.cooldown_seconds)
            return {"method": "fixed pause (no temperature sensor)", "waited_s": settings.cooldown_seconds}
        start = time.monotonic()
        while True:
            now = self.state().get("temperatures_c") or {}
            over = {k: round(now[k] - base[k], 2) for k in base
                    if k in now and now[k] - base[k] > settings.cooldown_tolerance_c}
            waited = time.monotonic() - start
            if not over:
                return {"method": "temperature", "zones": sorted(base), "waited_s": round(waited, 3), "reached": True}
            if waited >= settings.cooldown_timeout_seconds:
                return {"method": "temperature", "zones": sorted(base), "waited_s": round(waited, 3),
                        "reached": False, "still_above_baseline_c": over}
            time.sleep(self.cooldown_poll_seconds)

    def run(self, job: Job) -> Result:
        """Run one config to a Result. Never raises for engine or device faults: they become rows."""
        raise NotImplementedError

    # True when run_together times several runner-protocol jobs in lockstep (alternating slices, all alive).
    lockstep = False

    def run_together(self, jobs: list[Job]) -> list[Result]:
        """The A/B labels of one config, one Result each; where the device cannot time them in lockstep, one after
        another (the sweep's rounds still interleave them)."""
        return [self.run(job) for job in jobs]

    def clean(self) -> dict[str, Any]:
        """Remove what devicelab left on the device, and nothing else; says what was removed."""
        from devicelab.errors import DevicelabError

        raise DevicelabError(f"devicelab keeps no files on {self.kind} devices: nothing to clean on {self.id}")

    def close(self) -> None:
        """Release what the device holds (connections, the current runner)."""


# --------------------------------------------------------------------------------------------------
# Shared by the device kinds: the runner's config, what a Result holds from the runner protocol and from dlprobe


def runner_config(job: Job, outputs_file: str | None) -> dict[str, Any]:
    """The config a runner-protocol program is started with (before the engine's `stage`); `outputs_file` as the
    target sees it (None: no accuracy pass)."""
    cfg, s = job.config, job.settings
    return {"engine": cfg.engine, "model": str(job.model_path), "inputs": list(job.inputs), "threads": cfg.threads,
            "cpus": list(cfg.cpus), "precision": cfg.precision, "backend": cfg.backend, "seed": job.seed,
            "options": job.options, "warmup": {"min_iterations": s.warmup_iterations, "min_seconds": s.warmup_seconds},
            "accuracy_inputs": s.accuracy_inputs if outputs_file else 0, "outputs_file": outputs_file}


def measurement_fields(m: Measurement, cpus: tuple[int, ...], notes: list[str]) -> dict[str, Any]:
    """A Result's fields from one runner's protocol exchange (plus "_runner_peak" for probe_fields)."""
    ready, done = m.ready, m.done
    pinned = ready.get("cpus")
    if pinned is not None and cpus and sorted(pinned) != sorted(cpus):
        notes.append(f"runner reports affinity {pinned}, asked for {list(cpus)}")
    return {
        "samples_s": tuple(m.samples_s), "warmups": ready.get("warmups"),
        "median_s": stats.median(m.samples_s), "p90_s": stats.percentile(m.samples_s, 90),
        "load_s": ready.get("load_s"), "first_s": ready.get("first_s"),
        "rss_before_load_bytes": ready.get("rss_before_load_bytes"),
        "peak_rss_bytes": done.get("peak_rss_bytes"),
        "memory_method": f"{done.get('peak_rss_method', 'VmHWM')} of the runner process at stop "
                         "(RSS before load: its VmRSS after the engine import, before the model loads)",
        "protocol": {"stop_reason": m.stop_reason, "batches": m.batches, "warmup_s": ready.get("warmup_s"),
                     "outputs_sha256": done.get("outputs_sha256"),
                     **({"runner_version": ready["runner_version"]} if ready.get("runner_version") else {}),
                     # per-layer times (op events), when the runner offers them: dlbench options.layer_times
                     **({"ops": m.ops} if m.ops else {})},
        "_runner_peak": (done.get("peak_rss_bytes"), done.get("peak_rss_method")),
    }


def probe_fields(report: native.ProbeReport | None, fields: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    """Peak memory from dlprobe's wait4 ru_maxrss cross-checked with the runner's own VmHWM; dlprobe's
    summary (frequencies, temperatures, battery, its own cost) goes with the protocol record."""
    if report is None:
        notes.append("dlprobe wrote no report (the runner was killed or never started)")
        fields.pop("_runner_peak", None)
        return fields
    if not fields:  # the runner failed: keep what dlprobe saw for the record, nothing else
        return {"protocol": {"dlprobe": report.summary()}}
    runner_peak, runner_method = fields.pop("_runner_peak", (None, None))
    peak, method, note = native.peak_memory(report, runner_peak, runner_method)
    if note:
        notes.append(note)
    return {**fields, "peak_rss_bytes": peak, "memory_method": method + " (RSS before load: the runner's VmRSS "
            "before the model loads)", "protocol": {**fields.get("protocol", {}), "dlprobe": report.summary()}}


def throttled(before: dict[str, Any] | None, after: dict[str, Any] | None, cpus: tuple[int, ...]) -> bool | None:
    """True when a pinned core's frequency cap (or its current frequency's cap) was below its hardware maximum
    before or after the config; None when the device has no cpufreq to tell."""
    seen = False
    for state in (before or {}, after or {}):
        for cpu in cpus:
            f = (state.get("cpufreq") or {}).get(str(cpu))
            if not f or not f.get("hw_max_khz"):
                continue
            seen = True
            cap = min(x for x in (f.get("max_khz"), f.get("hw_max_khz")) if x)
            if cap < f["hw_max_khz"]:
                return True
    return False if seen else None


# --------------------------------------------------------------------------------------------------
# Engines' own tools (tool:*): one process per config, driven as it is, its output parsed


def tool_settings(job: Job, facts: DeviceFacts, engine: Any) -> Any:
    """What devicelab asks of an engine's own tool for this config: exact counts (`tool_iterations`; the tool has no
    stopping rule), and the pinning expressed the way tools that re-pin themselves can understand it."""
    from devicelab.engines.tool_base import ToolSettings

    cfg = job.config
    biggest = max(facts.clusters, key=lambda c: ((c.capacity or 0), (c.max_khz or 0))).cpus if facts.clusters \
        else facts.cpu_ids
    return ToolSettings(threads=cfg.threads, cpus=tuple(cfg.cpus), precision=cfg.precision, backend=cfg.backend,
                        iterations=job.settings.tool_iterations, warmups=job.settings.warmup_iterations,
                        big_cores=bool(cfg.cpus) and set(cfg.cpus) <= set(biggest),
                        input_shapes=tuple(tuple(int(d) for d in i["shape"]) for i in job.inputs),
                        extra_args=engine.extra_args(job.options),
                        affinity=cfg.affinity if cfg.affinity in ("big", "little", "all") else None)


def tool_fields(engine: Any, s: Any, argv: list[str], stdout: str, stderr: str, exit_code: int,
                files: dict[str, str], report: native.ProbeReport | None, probed: bool, notes: list[str]
                ) -> tuple[str, str | None, dict[str, Any]]:
    """(status, reason, Result fields) from one tool run: its output parsed and held against what was asked; peak
    memory from dlprobe's wait4 where it ran under dlprobe, cross-checked with what the tool printed."""
    from devicelab.result import FAILED, OK

    run = engine.reconcile(engine.parse(stdout, stderr, exit_code, files), s)
    fields = run.result_fields()
    tool = fields.pop("tool")
    notes.extend(fields.pop("notes"))
    fields["protocol"] = {"tool": {**tool, "argv": argv, "exit_code": exit_code, "iterations_asked": s.iterations}}
    if run.error is not None:  # keep what dlprobe saw for the record, nothing else
        protocol = fields["protocol"]
        if probed and report is not None:
            protocol.update(probe_fields(report, {}, notes)["protocol"])
        return FAILED, f"{engine.tool}: {run.error}", {"protocol": protocol}
    fields["_runner_peak"] = (fields.pop("peak_rss_bytes"), fields.pop("memory_method"))
    if probed:
        fields = probe_fields(report, fields, notes)
    else:
        peak, method = fields.pop("_runner_peak")
        fields.update({"peak_rss_bytes": peak, "memory_method": method})
    return OK, None, fields  # a summary-only tool says so in its own notes
