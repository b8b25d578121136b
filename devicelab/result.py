"""Result schema v2: one frozen, validated record per configuration (docs/results.md).

Every config of a run ends as exactly one Result, whatever happened to it: a failed config is a row, never a gap.
Units are in the field names (_s seconds, _bytes bytes, _j joules). A Result is created in two places only —
devicelab.session (everything that ran on a device) and devicelab.rows (rows that never reached one) — plus the
store's reader (`from_dict`), and it is never changed after birth (tests/test_layering.py checks both).

v2 over v1: the Result embeds its `Config`; `protocol` is typed (`RunProtocol`); `ext` is the typed extension
point later issues add fields to without another schema bump (`EXTENSIONS`); rows validate on construction.
Stored v1 rows are migrated by `migrate` (on open by the store, and by `from_dict`). The JSON form stays flat:
the config's fields sit at the top level under the same names as in v1.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from devicelab import opprof

SCHEMA_VERSION = 2

OK = "ok"
FAILED = "failed"  # the engine or the model failed: reason + stderr tail
INFRA_FAILED = "infra-failed"  # device gone, transport timeout, store unreachable, a lost farm worker
UNSUPPORTED = "unsupported"  # this combination cannot run here: reason
STATUSES = (OK, FAILED, INFRA_FAILED, UNSUPPORTED)

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
# v2 adds CoreML's compute units as backends of their own (the iPhone issue): "coreml" lets CoreML choose.
BACKENDS = ("cpu", "gpu", "opencl", "vulkan", "metal", "nnapi", "coreml", "coreml-cpu", "coreml-gpu", "coreml-ane")


def utc_now() -> str:
    """A timestamp as every record stores it: ISO 8601, UTC, milliseconds."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


# --------------------------------------------------------------------------------------------------
# What is measured, and its two keys


@dataclass(frozen=True)
class Config:
    """What is measured. Two keys derive from it (docs/results.md, "Keys"):

    * identity — device, engine, label, engine version, model hash, precision, backend, threads, cpus, repeat:
      one process of one config in one run (resume and de-duplication);
    * series — device, engine, label, model name, precision, backend, threads, cpus: the identity without engine
      version, model hash and repeat, with the model's *name* standing for the model (compare, regress, history:
      a new engine build or a new file of the same model continues the series)."""

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
    repeat: int = 0  # which process of the config (an A/B round runs one process of each config per label)
    # What is asked of the model beyond one inference: an LLM config's request shape (devicelab.llm.LlmWorkload.key:
    # "llm QUANT P… G… D…"); empty for every other config. Part of both keys only when set, so the keys of every
    # other config (and their stored series) are unchanged.
    workload: str = ""

    def identity_key(self) -> str:
        return _key(self.device, self.engine, self.label, self.engine_version, self.model_sha256,
                    self.precision, self.backend, self.threads, self.cpus, self.repeat,
                    *((self.workload,) if self.workload else ()))

    def series_key(self) -> str:
        return _key(self.device, self.engine, self.label, self.model, self.precision, self.backend,
                    self.threads, self.cpus, *((self.workload,) if self.workload else ()))


CONFIG_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Config))


def _key(*parts: object) -> str:
    return json.dumps([list(p) if isinstance(p, tuple) else p for p in parts], separators=(",", ":"))


# --------------------------------------------------------------------------------------------------
# The measurement record (Result.protocol): the settings used and what happened


@dataclass(frozen=True)
class Warmup:
    """How the runner was warmed up: by itself (runner protocol v1, or a v2 runner told to), by the controller
    (protocol v2's warmup command), or by an engine's own tool (its fixed count)."""

    by: str  # "runner" | "controller" | "tool"
    iterations: int | None = None
    seconds: float | None = None
    stopped: str | None = None  # the controller's: "steady" | "cap" | "slow model" (devicelab.measure.warmup_stop)


@dataclass(frozen=True)
class Cooldown:
    """The wait before the config (devicelab.session.cooldown)."""

    method: str  # "temperature" | "fixed pause (no temperature sensor)"
    waited_s: float | None = None
    zones: tuple[str, ...] = ()
    reached: bool | None = None  # within the tolerance of the idle baseline before the timeout
    still_above_baseline_c: dict[str, float] | None = None
    error: str | None = None  # the state could not be read (the device went)


@dataclass(frozen=True)
class Pinning:
    """Which CPUs the runner ran on and how that was enforced (dlprobe, taskset, sched_setaffinity)."""

    cpus: tuple[int, ...]
    method: str
    affinity: str
    mask: str | None = None
    clusters: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class Lockstep:
    """The labels this runner was timed with in alternating slices (an A/B round)."""

    with_: tuple[str, ...]  # JSON "with"
    slice_s: float


@dataclass(frozen=True)
class Transfer:
    """What reaching the device cost: files placed (content-addressed), copied now, bytes, seconds."""

    files: int = 0
    pushed_files: int = 0
    bytes: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class EnergyWindow:
    """What an energy source measured around one config (the numbers behind energy_j_per_inference, or behind its
    absence): the idle and inference windows, their samples and mean powers; anything source-specific in `detail`
    (the battery source: its calibration)."""

    window_s: float | None = None  # the inference window's wall time
    inference_s: float | None = None  # the iterations' own times in the window
    iterations: int | None = None
    samples: int | None = None  # power samples inside the window (after it settled)
    idle_samples: int | None = None
    idle_s: float | None = None
    idle_w: float | None = None
    window_w: float | None = None
    median_window_iteration_s: float | None = None
    idle_start_unix_s: float | None = None  # when each window began and ended, on the controller's wall clock
    window_start_unix_s: float | None = None
    window_end_unix_s: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> EnergyWindow:
        """An energy source's record: its named figures as fields, the rest as detail."""
        names = {f.name for f in dataclasses.fields(cls)} - {"detail"}
        return cls(**{k: v for k, v in record.items() if k in names},
                   detail={**dict(record.get("detail") or {}), **{k: v for k, v in record.items()
                                                                  if k not in names and k != "detail"}})


@dataclass(frozen=True)
class RunProtocol:
    """Result.protocol: the measurement settings and what happened. Free-form parts (dicts) are the records of
    other programs (dlprobe's summary, a tool's output, an energy source's window), kept as they reported them."""

    settings: dict[str, Any]  # measure.ProtocolSettings as used (a plain dict: rows outlive the settings' fields)
    stop_reason: str = ""  # "ci", "max_iterations", "max_seconds", "" when timing did not run to a stop
    batches: int = 0
    runner_protocol: int | None = None  # the runner protocol version the runner spoke (1 or 2)
    runner_version: str | None = None
    warmup: Warmup | None = None
    cooldown: Cooldown | None = None
    pinning: Pinning | None = None
    lockstep: Lockstep | None = None
    push: Transfer | None = None
    artifact_bytes: int | None = None  # the converted model's files as the engine loads them
    outputs_sha256: str | None = None
    ops: tuple[dict[str, Any], ...] = ()  # per-layer times (runner protocol `op` events)
    dlprobe: dict[str, Any] | None = None
    tool: dict[str, Any] | None = None
    energy: EnergyWindow | None = None
    # Batch mode (a runner that reads no commands): {iterations, results_file, rule}; None when driven batch by batch.
    batch: dict[str, Any] | None = None
    legacy: dict[str, Any] | None = None  # keys of a migrated v1 record that v2 does not name (kept, never dropped)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"settings": dict(self.settings), "stop_reason": self.stop_reason, "batches": self.batches}
        for name in ("runner_protocol", "runner_version", "artifact_bytes", "outputs_sha256", "dlprobe", "tool",
                     "batch", "legacy"):
            value = getattr(self, name)
            if value is not None:
                d[name] = value
        for name in ("warmup", "cooldown", "pinning", "push", "energy"):
            value = getattr(self, name)
            if value is not None:
                d[name] = _plain(dataclasses.asdict(value))
        if self.lockstep is not None:
            d["lockstep"] = {"with": list(self.lockstep.with_), "slice_s": self.lockstep.slice_s}
        if self.ops:
            d["ops"] = [dict(o) for o in self.ops]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunProtocol:
        known = {f.name for f in dataclasses.fields(cls)} | {"lockstep"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"Result.protocol has unknown keys: {', '.join(unknown)}")
        kw: dict[str, Any] = {k: v for k, v in d.items() if k not in ("warmup", "cooldown", "pinning", "push",
                                                                       "lockstep", "ops", "energy")}
        if d.get("warmup") is not None:
            kw["warmup"] = Warmup(**d["warmup"])
        if d.get("cooldown") is not None:
            c = dict(d["cooldown"])
            c["zones"] = tuple(c.get("zones") or ())
            kw["cooldown"] = Cooldown(**c)
        if d.get("pinning") is not None:
            p = dict(d["pinning"])
            p["cpus"] = tuple(p.get("cpus") or ())
            p["clusters"] = tuple(p.get("clusters") or ())
            kw["pinning"] = Pinning(**p)
        if d.get("push") is not None:
            kw["push"] = Transfer(**d["push"])
        if d.get("energy") is not None:
            kw["energy"] = EnergyWindow.from_record(d["energy"])
        if d.get("lockstep") is not None:
            kw["lockstep"] = Lockstep(tuple(d["lockstep"]["with"]), float(d["lockstep"]["slice_s"]))
        kw["ops"] = tuple(d.get("ops") or ())
        return cls(**kw)


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively: the JSON form."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# --------------------------------------------------------------------------------------------------
# The extension point: typed keys that later issues add without a schema bump


@dataclass(frozen=True)
class ExtField:
    check: Callable[[Any], bool]
    unit: str | None
    doc: str


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _numbers(x: Any) -> bool:
    return isinstance(x, (list, tuple)) and all(_number(v) for v in x)


def _check_llm(x: Any) -> bool:
    from devicelab.llm import check_ext_llm

    return check_ext_llm(x)


# Reserved for the issues of this wave (docs/results.md lists who writes which). A key not listed here is refused
# on construction, so a typo fails at once instead of landing in the database.
def _timeline(x: Any) -> bool:
    """`ext.timeline` (devicelab.opprof.timeline): version 1, marks of known kinds, series with one value per time."""
    if not isinstance(x, dict) or x.get("version") != 1 or not isinstance(x.get("marks"), list) \
            or not isinstance(x.get("unavailable"), list):
        return False
    if any(not isinstance(m, dict) or m.get("kind") not in ("warmup", "batch", "slice") for m in x["marks"]):
        return False
    # the report draws and prints these: numbers only (a mark's iterations a count)
    if any(not (_number(m.get("start_s")) and _number(m.get("end_s")) and _int(m.get("iterations")))
           for m in x["marks"]):
        return False
    for key in ("freq_khz", "temp_c"):
        s = x.get(key)
        if s is None:
            continue
        if not isinstance(s, dict) or not isinstance(s.get("t_s"), list) or not isinstance(s.get("values"), dict):
            return False
        if not all(_number(t) for t in s["t_s"]) or \
                any(v is not None and not _number(v) for vs in s["values"].values() if isinstance(vs, list) for v in vs):
            return False
        if any(not isinstance(v, list) or len(v) != len(s["t_s"]) for v in s["values"].values()):
            return False
    return True


EXTENSIONS: dict[str, ExtField] = {
    "iter_t_s": ExtField(_numbers, "s", "start of each timed iteration on the runner's monotonic clock, relative to "
                                        "the first (runner protocol v2's optional `t`), one per samples_s entry"),
    "import_s": ExtField(_number, "s", "the engine's import in the runner, timed apart from load_s"),
    "exec_path": ExtField(lambda x: x in ("exec", "zygote"), None, "how the runner process started"),
    "malloc": ExtField(lambda x: isinstance(x, dict) and isinstance(x.get("libc"), str)
                       and (x.get("mmap_threshold") == "dynamic" or _int(x.get("mmap_threshold"))), None,
                       "the C library's allocator settings the measured process got (the host's glibc)"),
    "thermal_status": ExtField(lambda x: isinstance(x, dict) and all(v is None or _int(v) for v in x.values()),
                               None, "Android thermal status (0-6) {before, after}"),
    "fixed_performance": ExtField(lambda x: isinstance(x, bool), None, "Android fixed performance mode was on"),
    "ios_thermal_state": ExtField(lambda x: isinstance(x, dict), None, "ProcessInfo.thermalState {before, after}"),
    "phys_footprint_bytes": ExtField(_int, "bytes", "peak physFootprint of the iOS runner app"),
    "ios_qos": ExtField(lambda x: isinstance(x, str), None, "the QoS class the iOS runner's timing thread ran at"),
    "ios_energy_impact": ExtField(lambda x: isinstance(x, dict), None,
                                  "Xcode's unitless Energy Impact of the iOS runner app (EnergyMonitor; not joules)"),
    "gpu_device": ExtField(lambda x: isinstance(x, dict), None,
                           "the device a GPU backend ran on: {name, type, software}"),
    "profile": ExtField(opprof.valid, None, "a per-op profile, version 1 (devicelab.opprof; docs/results.md)"),
    "timeline": ExtField(_timeline, "s", "the timed iterations against time with the pinned cores' frequencies (kHz) "
                                         "and the temperatures (°C) sampled meanwhile, on iter_t_s's clock; marks for "
                                         "warmup, batches, lockstep slices"),
    "label_env_lock": ExtField(lambda x: isinstance(x, str) and len(x) == 64 and set(x) <= set("0123456789abcdef"),
                               None, "sha256 of the lock of the label environment a farm worker rebuilt and ran the "
                                     "row's config in (docs/farm.md)"),
    "llm": ExtField(lambda x: _check_llm(x), None,
                    "the LLM workload {quant, prompt_tokens, gen_tokens, context_depth} and, on ok rows, its figures "
                    "(ttft_s, prefill_tps, decode_tps, token_s, ...; docs/results.md)"),
}


# --------------------------------------------------------------------------------------------------
# The Result


@dataclass(frozen=True)
class Result:
    """One configuration's outcome. `to_dict()` is the JSON contract (docs/results.md)."""

    config: Config
    run_id: str
    status: str
    reason: str | None = None
    notes: tuple[str, ...] = ()
    samples_s: tuple[float, ...] = ()  # every timed iteration, monotonic clock, seconds
    summary_only: bool = False  # True when a tool printed only summaries: samples_s is then empty
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
    protocol: RunProtocol | None = None  # the measurement settings used and what happened
    stderr_tail: str | None = None
    ext: dict[str, Any] = field(default_factory=dict)  # typed extensions (EXTENSIONS)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        # One canonical form, so that a row read back from the store equals the one written: sequences as tuples,
        # extensions as their JSON values.
        object.__setattr__(self, "samples_s", tuple(self.samples_s))
        object.__setattr__(self, "notes", tuple(self.notes))
        object.__setattr__(self, "ext", _plain(dict(self.ext)))
        problems = _problems(self)
        if problems:
            raise ValueError(f"invalid Result ({self.config.engine} {self.config.model} on {self.config.device}): "
                             + "; ".join(problems))

    # The config's fields read as the Result's own (they are its JSON fields).
    device = property(lambda self: self.config.device)
    engine = property(lambda self: self.config.engine)
    label = property(lambda self: self.config.label)
    engine_version = property(lambda self: self.config.engine_version)
    model = property(lambda self: self.config.model)
    model_sha256 = property(lambda self: self.config.model_sha256)
    model_bytes = property(lambda self: self.config.model_bytes)
    precision = property(lambda self: self.config.precision)
    backend = property(lambda self: self.config.backend)
    threads = property(lambda self: self.config.threads)
    cpus = property(lambda self: self.config.cpus)
    affinity = property(lambda self: self.config.affinity)
    repeat = property(lambda self: self.config.repeat)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"schema_version": self.schema_version, "run_id": self.run_id}
        # An empty workload is left out, so every non-LLM row's JSON is what it was before the field existed.
        d.update({name: getattr(self.config, name) for name in CONFIG_FIELDS
                  if name != "workload" or self.config.workload})
        d["cpus"] = list(self.config.cpus)
        for f in dataclasses.fields(self):
            if f.name in ("config", "run_id", "schema_version"):
                continue
            d[f.name] = getattr(self, f.name)
        d["notes"] = list(self.notes)
        d["samples_s"] = list(self.samples_s)
        d["protocol"] = self.protocol.to_dict() if self.protocol is not None else None
        d["ext"] = _plain(self.ext)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Result:
        """A stored row: migrated to this schema first; unknown fields fail loudly (never dropped)."""
        data = migrate(data)
        unknown = sorted(set(data) - set(RESULT_FIELDS))
        if unknown:
            raise ValueError(f"Result row has fields schema v{SCHEMA_VERSION} does not know: {', '.join(unknown)} "
                             "(written by a newer devicelab?)")
        kw = {k: v for k, v in data.items() if k not in CONFIG_FIELDS}
        config = Config(**{k: (tuple(data["cpus"]) if k == "cpus" else data[k]) for k in CONFIG_FIELDS if k in data})
        kw["notes"] = tuple(kw.get("notes") or ())
        kw["samples_s"] = tuple(kw.get("samples_s") or ())
        kw["protocol"] = RunProtocol.from_dict(kw["protocol"]) if kw.get("protocol") is not None else None
        kw["ext"] = dict(kw.get("ext") or {})
        return cls(config=config, **kw)

    @classmethod
    def for_config(cls, run_id: str, config: Config, status: str, **fields: Any) -> Result:
        return cls(config=config, run_id=run_id, status=status, **fields)


RESULT_FIELDS: tuple[str, ...] = (
    "schema_version", "run_id", *CONFIG_FIELDS,
    *(f.name for f in dataclasses.fields(Result) if f.name not in ("config", "run_id", "schema_version")))


def _problems(r: Result) -> list[str]:
    """Why a Result is not a valid row (every problem, each naming its field)."""
    problems: list[str] = []
    c = r.config
    if r.schema_version != SCHEMA_VERSION:
        problems.append(f"schema_version: {r.schema_version} (this devicelab writes {SCHEMA_VERSION})")
    if r.status not in STATUSES:
        problems.append(f"status: {r.status!r} is not one of {', '.join(STATUSES)}")
    if c.precision not in PRECISIONS:
        problems.append(f"precision: {c.precision!r} is not one of {', '.join(PRECISIONS)}")
    if c.backend not in BACKENDS:
        problems.append(f"backend: {c.backend!r} is not one of {', '.join(BACKENDS)}")
    if not _int(c.threads) or c.threads < 0:
        problems.append(f"threads: {c.threads!r} must be an integer >= 0")
    if not _int(c.repeat) or c.repeat < 0:
        problems.append(f"repeat: {c.repeat!r} must be an integer >= 0")
    if not isinstance(r.run_id, str) or not r.run_id:
        problems.append("run_id: must be a non-empty string")
    bad = [s for s in r.samples_s if not (_number(s) and s > 0)]
    if bad:
        problems.append(f"samples_s: {len(bad)} sample(s) not a positive finite number of seconds (e.g. {bad[0]!r})")
    if r.status == OK:
        if r.reason is not None:
            problems.append("reason: an ok row has no reason (notes say what to know)")
        if not r.samples_s and not r.summary_only:
            problems.append("samples_s: an ok row has samples (or summary_only, for a tool that printed none)")
        if r.samples_s and r.summary_only:
            problems.append("summary_only: true with samples")
    elif not r.reason:
        problems.append(f"reason: a row with status {r.status} says why")
    for name in ("median_s", "p90_s", "load_s", "first_s", "energy_j_per_inference"):
        value = getattr(r, name)
        if value is not None and not (_number(value) and value >= 0):
            problems.append(f"{name}: {value!r} must be a non-negative number")
    for name in ("rss_before_load_bytes", "peak_rss_bytes", "warmups"):
        value = getattr(r, name)
        if value is not None and not (_int(value) and value >= 0):
            problems.append(f"{name}: {value!r} must be a non-negative integer")
    for key, value in r.ext.items():
        spec = EXTENSIONS.get(key)
        if spec is None:
            problems.append(f"ext.{key}: unknown extension; known: {', '.join(EXTENSIONS)}")
        elif not spec.check(value):
            problems.append(f"ext.{key}: {value!r:.80} is not {spec.doc}")
    if "iter_t_s" in r.ext and len(r.ext["iter_t_s"]) != len(r.samples_s):
        problems.append("ext.iter_t_s: one timestamp per sample")
    return problems


# --------------------------------------------------------------------------------------------------
# Migrations of stored rows (pure: the SQLite store runs them on open, PostgreSQL will run the same)

# The v1 measurement record was one flat dict: the settings' fields, then these keys.
_V1_RECORD_KEYS = ("stop_reason", "batches", "warmup_s", "outputs_sha256", "runner_version", "ops", "lockstep_run",
                   "dlprobe", "tool", "push", "pinning", "cooldown", "artifact_bytes")
# ProtocolSettings' fields when v1 rows were written.
_V1_SETTINGS = ("warmup_iterations", "warmup_seconds", "min_iterations", "min_seconds", "max_iterations",
                "max_seconds", "target_ci", "confidence", "timeout_seconds", "cooldown_seconds",
                "cooldown_tolerance_c", "cooldown_timeout_seconds", "accuracy_inputs", "tool_iterations", "energy",
                "energy_window_seconds", "energy_min_window_seconds", "energy_idle_seconds",
                "energy_allow_charging", "lockstep")


def _v1_to_v2(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["schema_version"] = 2
    out.setdefault("ext", {})
    old = row.get("protocol")
    if old is None:
        return out
    settings = {k: v for k, v in old.items() if k in _V1_SETTINGS and not (k == "energy" and isinstance(v, dict))}
    record: dict[str, Any] = {"settings": settings, "stop_reason": old.get("stop_reason", ""),
                              "batches": old.get("batches", 0)}
    if isinstance(old.get("energy"), dict):  # the energy window's record took the setting's key (it was on)
        record["energy"] = old["energy"]
        settings["energy"] = True
    if "stop_reason" in old and old.get("tool") is None:
        record["runner_protocol"] = 1  # v1 rows that ran the protocol driver spoke runner protocol 1: it was the only
    for key in ("runner_version", "outputs_sha256", "dlprobe", "tool", "artifact_bytes", "ops"):
        if old.get(key) is not None:
            record[key] = old[key]
    if old.get("tool") is not None:
        record["warmup"] = {"by": "tool", "iterations": row.get("warmups"), "seconds": None}
    elif "warmup_s" in old or row.get("warmups") is not None:
        record["warmup"] = {"by": "runner", "iterations": row.get("warmups"), "seconds": old.get("warmup_s")}
    if old.get("cooldown") is not None:
        record["cooldown"] = old["cooldown"]
    if old.get("pinning") is not None:
        record["pinning"] = old["pinning"]
    if old.get("push") is not None:
        record["push"] = old["push"]
    if old.get("lockstep_run") is not None:
        record["lockstep"] = old["lockstep_run"]
    legacy = {k: v for k, v in old.items() if k not in _V1_SETTINGS and k not in _V1_RECORD_KEYS and k != "energy"}
    if legacy:
        record["legacy"] = legacy
    out["protocol"] = record
    return out


def _v1_repair(row: dict[str, Any]) -> dict[str, Any]:
    """v1 stored what runners sent without checking it (a -1024 byte count from a runner that could not read /proc,
    a 0 s iteration from a coarse clock...), which v2 refuses. Such values are set aside, not dropped: the originals go
    under protocol.legacy.repaired and a note says so, so an old database always opens."""
    out = dict(row)
    repaired: dict[str, Any] = {}
    for name in ("rss_before_load_bytes", "peak_rss_bytes", "warmups"):
        value = out.get(name)
        if value is not None and not (_int(value) and value >= 0):
            repaired[name], out[name] = value, (int(value) if _number(value) and value >= 0 else None)
    for name in ("median_s", "p90_s", "load_s", "first_s", "energy_j_per_inference"):
        value = out.get(name)
        if value is not None and not (_number(value) and value >= 0):
            repaired[name], out[name] = value, None
    samples = list(out.get("samples_s") or ())
    good = [x for x in samples if _number(x) and x > 0]
    if len(good) != len(samples):
        repaired["samples_s"], out["samples_s"] = samples, good
    if out.get("status") == OK and out.get("reason") is not None:
        repaired["reason"] = out["reason"]
        out["notes"] = [*(out.get("notes") or ()), str(out["reason"])]
        out["reason"] = None
    if out.get("status") == OK and not good and not out.get("summary_only"):
        out["status"], out["reason"] = FAILED, "migrated from schema v1: no valid sample was stored"
    elif out.get("status") in (FAILED, INFRA_FAILED, UNSUPPORTED) and not out.get("reason"):
        out["reason"] = f"migrated from schema v1: stored as {out['status']} without a reason"
    if repaired:
        out["notes"] = [*(out.get("notes") or ()), "migrated from schema v1: values v2 does not accept were set aside "
                        f"({', '.join(sorted(repaired))}; originals in protocol.legacy.repaired)"]
        protocol = dict(out.get("protocol") or {"settings": {}})
        protocol["legacy"] = {**(protocol.get("legacy") or {}), "repaired": repaired}
        out["protocol"] = protocol
    return out


MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: lambda row: _v1_repair(_v1_to_v2(row))}


def migrate(row: Mapping[str, Any]) -> dict[str, Any]:
    """A stored row brought to SCHEMA_VERSION, step by step; a row from a newer schema fails loudly."""
    out = dict(row)
    version = out.get("schema_version", 1)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise ValueError(f"Result schema_version {version!r} is not supported (this devicelab reads up to "
                         f"{SCHEMA_VERSION}); upgrade devicelab")
    while version < SCHEMA_VERSION:
        out = MIGRATIONS[version](out)
        version = out["schema_version"]
    return out
