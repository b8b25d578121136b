"""One session turns Jobs into finished Results on any transport (docs/architecture.md): the runner's config and
staging, placing files on the device, spawning pinned (under dlprobe where it is built), driving runner protocol
v1/v2 alone or in lockstep, an engine's own tool, the energy window, throttling, the accuracy outputs — and then the
Result, built once, whole. It is the only place (with devicelab.rows, for rows that never reached a device) where a
Result is created. A device or engine fault becomes a row; only Ctrl-C and bugs propagate.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devicelab import llm, llm_logits, native, opprof, paths, variants
from devicelab.analysis import accuracy, stats
from devicelab.config import MMAP_THRESHOLD_DEFAULT
from devicelab.devices.base import (BATCH_RESULTS_FILE, STDERR_TAIL_BYTES, Exit, Process, ResultExtras, Sampler,
                                   Start, Transport, TransportLostError)
from devicelab.energy import EnergyResult, unmeasured
from devicelab.engines import Engine, PreparedModel, SourceModel, get_engine
from devicelab.engines.base import INPUT_SEED, PROCESS_OPTIONS
from devicelab.engines.tool_base import ToolEngine, ToolSettings
from devicelab.facts import DeviceFacts
from devicelab.measure import (LOCKSTEP_SLICE_S, RUNNER_FAULTS, ChannelClosedError, ChannelTimeoutError, Driver,
                               JsonLines, LlmShape, Measurement, ProtocolSettings, RunnerError, batch_iterations,
                               byte_count, lockstep, minimums_met, now_deadline, seconds_field)
from devicelab.opprof import timeline
from devicelab.result import (FAILED, INFRA_FAILED, OK, UNSUPPORTED, Config, Cooldown, EnergyWindow, Lockstep,
                              Pinning, Result, RunProtocol, Warmup, utc_now)

# A runner's faults while it is driven: the protocol's, and the device going away.
FAULTS: tuple[type[Exception], ...] = (*RUNNER_FAULTS, TransportLostError)

PYTHON_RUNNER = "devicelab.runners.host"
OUTPUTS_FILE = "outputs.npz"
LOGITS_FILE = "logits.f32"  # an LLM runner's logits of its last request (runner protocol v3)
PROBE_FILE = "dlprobe.json"
CONFIG_FILE = "config.json"
EXIT_WAIT_S = 60.0  # after "done" the runner writes its accuracy outputs and exits


@dataclass(frozen=True)
class Job:
    """Everything a device needs to run one config (picklable: a farm worker receives it)."""

    run_id: str
    config: Config
    source: SourceModel  # the suite's model as given (ONNX): the accuracy reference is computed from it
    prepared: PreparedModel  # the model in the engine's own format
    settings: ProtocolSettings
    options: dict[str, Any] = field(default_factory=dict)  # engine options: the conversion's, then the suite's
    notes: tuple[str, ...] = ()
    seed: int = INPUT_SEED  # the inputs' seed (fixed: every run feeds the same data)
    # An LLM config's request (devicelab.llm.runner_payload: the synthetic prompt's token ids, G, the seed): the
    # runner config's `llm` key. None for every other config.
    llm: dict[str, Any] | None = None
    # A quantized LLM config's F32 variant of the same model for the same engine (None: none, or not an LLM config):
    # run once, after this config's timing, when the device has no F32 logits of the prompt yet (_reference_pass).
    reference: PreparedModel | None = None
    # On a farm worker: the sha256 of the lock its label environment (options.python) was rebuilt from; every row
    # the session makes of the job carries it (ext.label_env_lock). None: the interpreter is the run's own.
    env_lock: str | None = None

    @property
    def workload(self) -> llm.LlmWorkload | None:
        return llm.workload_from_key(self.config.workload) if self.llm is not None else None

    @property
    def accuracy_wanted(self) -> bool:
        return self.settings.accuracy_inputs > 0


# --------------------------------------------------------------------------------------------------
# Between configs: the idle baseline and the cooldown


def idle_baseline(transport: Transport) -> dict[str, Any]:
    """State at the start of a run, against which cooldown waits."""
    try:
        return transport.state()
    except OSError as e:
        return {"at": utc_now(), "unavailable": [f"state: {e}"]}


def cooldown(transport: Transport, baseline: dict[str, Any], s: ProtocolSettings) -> Cooldown:
    """Wait until the transport's cooldown zones are within `cooldown_tolerance_c` of the idle baseline (or the
    timeout); a fixed pause where there is no sensor. What happened goes with the next Results."""
    base = transport.cooldown_zones(baseline.get("temperatures_c") or {})
    if not base:
        time.sleep(s.cooldown_seconds)
        return Cooldown("fixed pause (no temperature sensor)", s.cooldown_seconds)
    start = time.monotonic()
    zones = tuple(sorted(base))
    while True:
        try:
            now = transport.state().get("temperatures_c") or {}
        except OSError as e:  # the device went: the run goes on, and its config will say so
            return Cooldown("temperature", round(time.monotonic() - start, 3), zones, error=str(e))
        over = {k: round(now[k] - base[k], 2) for k in base
                if k in now and now[k] - base[k] > s.cooldown_tolerance_c}
        waited = round(time.monotonic() - start, 3)
        if not over:
            return Cooldown("temperature", waited, zones, reached=True)
        if waited >= s.cooldown_timeout_seconds:
            return Cooldown("temperature", waited, zones, reached=False, still_above_baseline_c=over)
        time.sleep(transport.cooldown_poll_seconds)


# --------------------------------------------------------------------------------------------------
# Pure pieces: the runner's config, throttling, programs


def runner_config(job: Job, outputs_file: str | None) -> dict[str, Any]:
    """The config a runner-protocol program is started with (before the engine's `stage`); `outputs_file` as the
    runner sees it (None: no accuracy pass). `warmup.by`: a protocol v2 runner leaves the warmup to the controller;
    a v1 runner ignores the key and warms itself."""
    cfg, s = job.config, job.settings
    # devicelab's own keys for the process (the allocator's threshold) are the controller's business, not the runner's
    options = {k: v for k, v in job.options.items() if k not in PROCESS_OPTIONS}
    if s.profile and cfg.engine == "dlbench" and not options.get("layer_times"):
        # dlbench speaks protocol 1: its profiling pass is `layer_times` passes after timing, reported at stop
        options = {**options, "layer_times": s.profile_iterations}
    return {"engine": cfg.engine, "model": str(job.prepared.path), "inputs": list(job.source.inputs),
            "threads": cfg.threads, "cpus": list(cfg.cpus), "precision": cfg.precision, "backend": cfg.backend,
            "seed": job.seed, "options": options,
            "warmup": {"min_iterations": s.warmup_iterations, "min_seconds": s.warmup_seconds, "by": "controller"},
            "accuracy_inputs": s.accuracy_inputs if outputs_file else 0, "outputs_file": outputs_file,
            **({"llm": job.llm, "accuracy_inputs": 0} if job.llm is not None else {})}


def stage_dataset(config: dict[str, Any], source: SourceModel, folder: Path) -> dict[str, Any]:
    """A runner's config whose accuracy inputs are the model's data set's test split (no runner can make those from
    the seed): each image written to `folder` as files (`accuracy_files`, one list of input specs per accuracy input,
    docs/runner-protocol.md) and `accuracy_inputs` their count. The labels stay here: the session compares."""
    from devicelab.engines.base import accuracy_feeds, write_feed_files

    feeds = accuracy_feeds(source, int(config.get("seed", 0)), int(config.get("accuracy_inputs") or 0))
    files = [write_feed_files(config["inputs"], f, folder, f"accuracy{k}-") for k, f in enumerate(feeds, start=1)]
    return {**config, "accuracy_inputs": len(files), "accuracy_files": files}


def throttled(before: dict[str, Any] | None, after: dict[str, Any] | None, cpus: Sequence[int]) -> bool | None:
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


def native_programs(transport: Transport, names: Sequence[str]) -> dict[str, Path] | str:
    """devicelab's native programs (`devicelab build-native`) for this device, or why there are none."""
    targets = transport.native_targets()
    if isinstance(targets, str):
        return targets
    for target in targets:
        record = native.registered(target)
        if record and all(n in record.artifacts for n in names):
            return {n: record.artifacts[n].path for n in names}
    also = f" (or --target {targets[0]})" if len(targets) > 1 else ""
    return (f"{', '.join(names)} not built for {transport.kind} devices ({transport.facts().abi}): run "
            f"`devicelab build-native --target {targets[-1]}`{also}")


def tool_settings(job: Job, facts: DeviceFacts, engine: ToolEngine) -> ToolSettings:
    """What devicelab asks of an engine's own tool for this config: exact counts (`tool_iterations`; the tool has no
    stopping rule), and the pinning expressed the way tools that re-pin themselves can understand it."""
    cfg = job.config
    return ToolSettings(threads=cfg.threads, cpus=tuple(cfg.cpus), precision=cfg.precision, backend=cfg.backend,
                        iterations=job.settings.tool_iterations, warmups=job.settings.warmup_iterations,
                        big_cores=bool(cfg.cpus) and set(cfg.cpus) <= set(facts.biggest_cluster()),
                        input_shapes=tuple(tuple(int(d) for d in i["shape"]) for i in job.source.inputs),
                        extra_args=engine.extra_args(job.options),
                        affinity=cfg.affinity if cfg.affinity in ("big", "little", "all") else None,
                        llm=(w.prompt_tokens, w.gen_tokens, w.context_depth) if (w := job.workload) else None)


def _size(path: Path) -> int:
    """A file's bytes, or a folder's (a Core ML package): the sum of the files in it, not the folder entry's size."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def artifact_bytes(prepared: PreparedModel) -> int | None:
    try:
        return _size(prepared.path) + sum(_size(Path(v)) for k, v in prepared.options.items() if k == "weights")
    except OSError:
        return None


_SHIM: str | None = None


def _package_shim() -> str:
    """A folder holding just the `devicelab` package (runners included), for another interpreter's PYTHONPATH
    (a label whose engine build lives in another environment): adding our whole site-packages would shadow that
    environment's own engine build. One per controller process, removed at its exit: its path is part of the
    runner's environment, which picks the zygote (a new path per job would start a zygote per job)."""
    import atexit
    import importlib.util
    import shutil

    import devicelab

    global _SHIM
    if _SHIM is not None and Path(_SHIM).is_dir():
        return _SHIM
    root = Path(tempfile.mkdtemp(prefix="devicelab-shim-"))
    atexit.register(shutil.rmtree, root, True)
    pkg = root / "devicelab"
    pkg.mkdir(parents=True)
    source = Path(devicelab.__file__).resolve().parent
    for entry in source.iterdir():
        if entry.name not in ("runners", "reports", "__pycache__"):
            (pkg / entry.name).symlink_to(entry)
    # Editable installs map runners/ and reports/ from the repository root; installed ones keep them inside.
    for sub in ("runners", "reports"):
        spec = importlib.util.find_spec(f"devicelab.{sub}")
        if spec and spec.submodule_search_locations:
            (pkg / sub).symlink_to(Path(list(spec.submodule_search_locations)[0]))
    _SHIM = str(root)
    return _SHIM


def python_runner_env(job: Job) -> dict[str, str]:
    """What devicelab sets in a Python runner's environment for `job` (the transport adds the rest)."""
    env = {"OMP_NUM_THREADS": str(job.config.threads)}
    # numpy (input generation only) must not start a BLAS pool next to the engine's threads. CI=true is the switch
    # both ONNX Runtime's telemetry (its 1DS uploader thread, started as the module loads) and OpenVINO's
    # (openvino_telemetry, a thread pool started by `import openvino`) honour: no engine uploads data from a
    # benchmark, no telemetry thread wakes beside the timed loop, and the import leaves one thread, so a zygote may
    # fork after it (docs/architecture.md).
    env.update({"OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "CI": "true"})
    if job.options.get("python"):
        env["PYTHONPATH"] = _package_shim()
    return env


# --------------------------------------------------------------------------------------------------
# One job's life on a device


# (run, logits key) of F32 reference passes that failed in this process: not run again for every later config of the
# prompt (a phone out of memory or storage would fail each one alike); a new run tries again.
_FAILED_REFERENCES: set[tuple[str, str]] = set()


class _Ended(Exception):
    """A job ended before its runner was driven (its status and reason are set)."""


class _Attempt:
    """One job from staging to its Result. The status stays OK until something says otherwise; the Result is made
    once, in `result()`."""

    def __init__(self, transport: Transport, job: Job, cooldown_record: Cooldown | None, stack: contextlib.ExitStack
                 ) -> None:
        self.t, self.job, self.cfg, self.s = transport, job, job.config, job.settings
        self.cooldown = cooldown_record
        self.stack = stack
        self.engine: Engine = get_engine(job.config.engine)
        self.tool = self.engine if isinstance(self.engine, ToolEngine) else None
        self.notes = list(job.notes)
        self.status, self.reason = OK, None  # type: tuple[str, str | None]
        self.started = utc_now()
        self.state_before: dict[str, Any] | None = None
        self.fields: dict[str, Any] = {}
        self.record: dict[str, Any] = {}  # RunProtocol's fields as they become known
        self.ext: dict[str, Any] = {}
        self.tool_profile: tuple[Any, str | None] = (None, "no profiling run")
        # Untimed passes the runner made in its process after reading its own peak (a profiling pass, the accuracy
        # pass): dlprobe's ru_maxrss covers them, the runner's figure is the timed run's.
        self.peak_before: list[str] = []
        # The device's state once timing was over, read before a profiling pass (None: no pass, or not read): the
        # row's state_after and `throttled` are the timed run's, not the profiler's.
        self.state_timed: dict[str, Any] | None = None
        self.state_timed_before = "the profiling pass"  # what ran after the timed run, before state_timed was read
        self.energy: EnergyResult | None = None
        self.process: Process | None = None
        self.driver: Driver | None = None
        self.run_dir: str | None = None
        self.probed = False
        self.stderr = ""
        self.spawned = False  # the program was started: the row then has a state after, energy and stderr
        self.exit: Exit | None = None
        self.hook: Any = None
        self.installed: dict[str, str] = {}  # native programs the device has installed (Transport.installed_program)
        self.process_extras = ResultExtras()  # what the transport observed of the program (Process.extras)
        self.sampler: Sampler | str | None = None  # frequencies and temperatures while timed (the timeline)
        self.measurement: Measurement | None = None
        self.lockstep_with: tuple[str, ...] = ()
        self.tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="devicelab-session-")))
        self.llm_requests: list[llm.Request] = []  # an LLM config's timed requests (runner protocol v3)
        self.llm_ready: dict[str, Any] = {}  # what its runner said of the model
        self.llm_logits: Path | None = None
        self.llm_drift: dict[str, Any] | None = None

    def end(self, status: str, reason: str) -> None:
        if self.status == OK or status == INFRA_FAILED:  # the device going away explains everything after it
            self.status, self.reason = status, reason or f"{status}, with no message from the runner or the device"

    def safely(self, step: Callable[[], None]) -> bool:
        """One step of the job; False when it ended the job. A device that went away or refused (an OSError from the
        transport, a pull, a local copy) ends this job as its row, never the sweep; Ctrl-C and bugs propagate."""
        try:
            step()
            return True
        except _Ended:
            return False
        except TransportLostError as e:
            self.end(INFRA_FAILED, f"device disconnected ({e})")
        except OSError as e:
            self.end(FAILED, str(e) or type(e).__name__)
        return False

    # ---- before the runner starts

    def prepare(self) -> None:
        """Everything up to the command: raises _Ended when the job cannot run (the row says why)."""
        t, cfg = self.t, self.cfg
        facts = t.facts()
        if facts.extra.get("emulated"):
            self.notes.append("an emulated device (ro.kernel.qemu=1): its timings say nothing about a phone's speed")
        self.tool_s = tool_settings(self.job, facts, self.tool) if self.tool else None
        if self.tool and self.tool_s and (why := self.tool.unsupported_reason(self.tool_s)):
            self._stop(UNSUPPORTED, why)
        program, programs, libraries = self._program()
        self.program = program
        try:
            self.state_before = t.state()
        except OSError as e:
            self._stop(INFRA_FAILED, f"device disconnected: {e}")
        # The host forks its Python runner from a zygote (the engine imported once): a forked child cannot run under
        # dlprobe, which pins and measures programs it execs; the runner pins itself and reports its own VmHWM.
        self.zygote = program is None and t.zygotes and self.job.options.get("process", "zygote") == "zygote"
        probe = {} if self.zygote else native_programs(t, ["dlprobe"])
        if isinstance(probe, str):
            if t.missing_probe_note:
                self.notes.append(f"pinned with {t.pin_method}; peak memory is the program's own report ({probe})")
        else:
            programs.update(probe)
        self._variant()
        try:
            files = self._stage()
            libs = [(p.name, p) for p in libraries]
            placed = t.put([*files, *libs, *programs.items()])
            if placed.transfer.files:  # a device that holds its own copies (not the host)
                self.record["push"] = placed.transfer
                t.on_event("push", {"device": t.id, **dataclasses.asdict(placed.transfer)})
            at = dict(zip([*(rel for rel, _ in files), *(f"lib/{n}" for n, _ in libs), *programs], placed.paths))
            self.run_dir = t.run_folder({k: v for k, v in at.items() if k not in programs})
            at.update(self.installed)
            self.stack.callback(self._remove_run_dir)
        except TransportLostError as e:
            self._stop(INFRA_FAILED, f"device disconnected: {e}")
        except (OSError, ValueError) as e:
            self._stop(FAILED, str(e))
        run_dir = self.run_dir
        assert run_dir is not None
        if program is None:  # devicelab's Python runner, in the device's interpreter
            target = [self.python, "-m", PYTHON_RUNNER, f"{run_dir}/{CONFIG_FILE}"]
        elif self.tool:
            assert self.tool_s is not None
            target = self.tool.argv(at[program], run_dir, self.tool_s)
        else:
            target = [at[program], f"{run_dir}/{CONFIG_FILE}"]
        self.target = target
        env = python_runner_env(self.job) if program is None else {"OMP_NUM_THREADS": str(cfg.threads)}
        # Large blocks go to mmap at a fixed size, not at glibc's moving threshold: otherwise where an engine's later
        # blocks land, and how much freed memory its heap keeps, depends on every allocation before them, and the
        # peak draws one of a few values up to ~6 % apart (docs/architecture.md, "The allocator").
        threshold = self.job.options.get("mmap_threshold")
        threshold = MMAP_THRESHOLD_DEFAULT if threshold is None else threshold
        malloc_env, malloc = t.malloc_env(None if threshold == "dynamic" else int(threshold))
        env.update(malloc_env)
        if malloc is not None:
            self.ext["malloc"] = malloc
            if malloc.get("also"):
                self.notes.append(f"the environment also sets glibc's allocator ({', '.join(malloc['also'])}): they "
                                  "change how much freed memory stays resident, and can fix the threshold that "
                                  "`dynamic` leaves to glibc, so peaks may differ from rows without them")
        if libraries:
            env["LD_LIBRARY_PATH"] = f"{run_dir}/lib"
        self.env = env
        mask = f"0x{sum(1 << c for c in cfg.cpus):x}" if cfg.cpus else None
        if "dlprobe" in programs:
            # dlprobe pins the program (sched_setaffinity before exec, so every thread it starts inherits it),
            # samples it from a core outside the set, and reports wait4's ru_maxrss.
            self.argv = native.probe_argv(at["dlprobe"], target, cfg.cpus, f"{run_dir}/{PROBE_FILE}")
            self.spawn_cpus: tuple[int, ...] = ()
            self.probed = True
            method = "dlprobe (sched_setaffinity before exec)"
        else:
            self.argv, self.spawn_cpus = target, tuple(cfg.cpus)
            method = t.pin_method if cfg.cpus else "none (no CPUs chosen)"
        self.record["pinning"] = Pinning(tuple(cfg.cpus), method, cfg.affinity, mask,
                                         tuple(c.to_dict() for c in facts.clusters))

    def _variant(self) -> None:
        """Whether this config runs the accuracy pass, or reuses its variant's (devicelab.variants)."""
        self.variant: str | None = None
        self.reuse: variants.Entry | None = None
        # An LLM's accuracy is its logits' drift from the F32 variant (devicelab.llm.drift), not outputs against an
        # ONNX reference: its runner always writes the last request's logits.
        self.accuracy_pass = self.job.accuracy_wanted and not self.tool and self.job.workload is None
        if not self.accuracy_pass:
            return
        cfg, job = self.cfg, self.job
        # Everything that decides the outputs or the reference they are held to: the device, the engine build and
        # its options, the model as converted and its input shapes, precision, backend, the accuracy inputs, and
        # the versions of devicelab (how outputs are compared) and of the reference's ONNX Runtime.
        self.variant = variants.variant_key(
            self.t.profile_key(), cfg.engine, cfg.label, cfg.engine_version, cfg.model_sha256, cfg.precision,
            cfg.backend, paths.sha256_file(job.prepared.path), job.options, list(job.source.inputs),
            self.s.accuracy_inputs, job.seed, job.source.dataset, variants.comparison_versions())
        entry = variants.load(self.variant)
        if entry is not None and entry.settled(cfg.threads):
            self.reuse, self.accuracy_pass = entry, False

    def _stop(self, status: str, reason: str) -> None:
        self.end(status, reason)
        raise _Ended()

    def _program(self) -> tuple[str | None, dict[str, Path], tuple[Path, ...]]:
        """(the program's name among `programs`, or None for the Python runner; programs to place; libraries)."""
        user = self.engine.user_runner(self.job.options)
        if user is not None:
            binary, libraries = user
            return binary.name, {binary.name: binary}, libraries
        if self.engine.native_runner:
            installed = self.t.installed_program(self.engine.native_runner)
            if installed is not None:  # an iPhone's runner app: nothing to push, spawn() launches it
                self.installed = {self.engine.native_runner: installed}
                return self.engine.native_runner, {}, ()
            found = native_programs(self.t, [self.engine.native_runner])
            if isinstance(found, str):
                self._stop(FAILED, found)
            return self.engine.native_runner, dict(found), ()  # type: ignore[arg-type]
        python = self.job.options.get("python") or getattr(self.t, "python", None)
        if not python:
            self._stop(FAILED, f"{self.cfg.engine} has no runner that runs on {self.t.kind} devices")
        self.python = str(python)
        return None, {}, ()

    def _stage(self) -> list[tuple[str, Path]]:
        """The run folder's files as (name relative to it, local file): a tool's model layout, or what the engine
        stages for its runner plus the runner's config."""
        if self.tool:
            return [(rel, Path(local)) for rel, local in self.tool.model_layout(self.job.prepared).items()]
        staging = self.tmp / "stage"
        staging.mkdir()
        cfg = runner_config(self.job, LOGITS_FILE if self.job.workload is not None else
                            OUTPUTS_FILE if self.accuracy_pass else None)
        if self.accuracy_pass and self.job.source.dataset is not None:
            cfg = stage_dataset(cfg, self.job.source, staging)
        cfg = self.engine.stage(cfg, staging)
        if self.t.batch:
            # Batch mode: the count is fixed before any time is known (measure.batch_iterations), and every event
            # line goes to a file the transport brings back once the runner has exited.
            cfg = {**cfg, "iterations": batch_iterations(self.s), "results_file": BATCH_RESULTS_FILE}
            self.record["batch"] = {"iterations": cfg["iterations"], "results_file": BATCH_RESULTS_FILE,
                                    "rule": "max_iterations, fixed before the runner started: the runner reads no "
                                            "commands, so the stopping rule (precision, max_seconds) could not apply"}
        (staging / CONFIG_FILE).write_text(json.dumps(cfg))
        # Every file, subfolders included: a model can be a folder (a Core ML package, staged file by file).
        return [(p.relative_to(staging).as_posix(), p) for p in sorted(staging.rglob("*")) if p.is_file()]

    def _remove_run_dir(self) -> None:
        if self.run_dir is not None:
            with contextlib.suppress(OSError):
                self.t.remove(self.run_dir)
            self.run_dir = None

    # ---- the runner

    def spawn(self) -> None:
        """Start the program; for a runner, wait until it is ready (and warmed up)."""
        try:
            if self.program is None and not self.probed:  # the Python runner: maybe forked from a zygote
                preload = ("numpy", *self.engine.imports()) if self.zygote else ()
                self.process, start = self.t.spawn_python(self.python, PYTHON_RUNNER, self.argv[3:], self.env,
                                                          self.spawn_cpus, self.run_dir, preload, self.cfg.repeat,
                                                          self.engine.shares_zygote(self.cfg.engine_version))
                self._started(start)
            else:
                self.process = self.t.spawn(self.argv, self.env, self.spawn_cpus, self.run_dir)
                if self.program is None:  # the Python runner under dlprobe: a fresh interpreter
                    self._started(Start())
        except TransportLostError as e:
            self._stop(INFRA_FAILED, f"device disconnected: {e}")
        except (OSError, ValueError) as e:
            self._stop(FAILED, f"could not start the runner: {e}")
        self.spawned = True
        self.stack.callback(self._reap)
        self.hook = self.energy_hook()
        if self.tool:
            self.process.close_stdin()
            return
        if not self.probed:  # under dlprobe its own samples make the timeline
            self.sampler = self.t.timeline_sampler(self.cfg.cpus)
            if isinstance(self.sampler, Sampler):
                self.sampler.start()
                self.stack.callback(self.sampler.stop)
        # Where clocks ramp slowly (phones), warmup never ends before warmup_seconds, steady or not.
        batch = self.record["batch"]["iterations"] if self.t.batch and "batch" in self.record else None
        w = self.job.workload
        self.driver = Driver(JsonLines(self.process), self.s, now_deadline(self.s.timeout_seconds),
                             controller_warmup=batch is None,
                             warmup_floor_s=self.s.warmup_seconds if self.t.slow_clock_ramp else 0, batch=batch,
                             llm=LlmShape(w.prompt_tokens, w.gen_tokens) if w is not None else None)
        try:
            self.driver.start()
        except FAULTS as e:
            self.fail(e)
            raise _Ended() from None

    def _started(self, start: Start) -> None:
        """Record how the Python runner's process began (and, forked, how it was pinned)."""
        self.ext["exec_path"] = start.path
        if start.note:
            self.notes.append(start.note)
        malloc = self.ext.get("malloc") or {}
        fixed = malloc.get("mmap_threshold")
        if start.path == "zygote" and self.engine.fork_caveat and not (
                isinstance(fixed, int) and fixed <= MMAP_THRESHOLD_DEFAULT and not malloc.get("also")):
            self.notes.append(self.engine.fork_caveat)
        if start.path == "zygote" and self.cfg.cpus:
            p = self.record["pinning"]
            how = ("by the forked runner itself, first thing (the zygote imported unpinned: this engine's import reads "
                   "no CPU set)" if start.any_cpus else
                   "sched_setaffinity before the zygote's exec (its imports ran pinned), then by the forked runner "
                   "itself")
            self.record["pinning"] = Pinning(p.cpus, how, p.affinity, p.mask, p.clusters)

    def fail(self, e: Exception) -> None:
        """A fault while driving the runner: its row's status and reason."""
        self.driver = None
        assert self.process is not None
        if isinstance(e, ChannelTimeoutError):
            how = self.process.kill()
            self.end(FAILED, f"timeout: no answer within timeout_seconds={self.s.timeout_seconds:g}; {how}")
        elif isinstance(e, ChannelClosedError):
            self.exit = self.process.wait(5.0)
            if self.exit is not None and self.exit.lost:
                self.end(INFRA_FAILED, f"device disconnected ({self.exit.lost})")
            else:
                self.end(FAILED, "runner ended before finishing ("
                                 f"{self.exit.describe() if self.exit else 'still running'})")
        elif isinstance(e, TransportLostError):
            self.end(INFRA_FAILED, f"device disconnected ({e})")
        elif isinstance(e, RunnerError) and e.unsupported:
            self.end(UNSUPPORTED, str(e))
        else:
            self.end(FAILED, str(e))

    def energy_hook(self) -> Any:
        """The before-stop hook that measures energy, or None (with self.energy saying why not)."""
        if self.tool:
            self.energy = unmeasured("engine tools are not measured for energy (load, warmup and timing share one "
                                     "process): use a runner-protocol engine (dlbench, protocol)")
            return None
        if self.t.batch and self.s.energy:
            self.energy = unmeasured("batch mode: the runner reads no commands, so it cannot be asked for the energy "
                                     "window's iterations")
            return None
        source = self.t.energy_source()
        if isinstance(source, str):
            self.energy = unmeasured(source)
            return None
        if not self.s.energy:
            self.energy = unmeasured("energy is off for this suite (protocol: energy: true measures it)")
            return None
        self.energy = source.unavailable(self.s, self.state_before or {})
        if self.energy is not None:
            return None
        state = self.state_before or {}
        return lambda run_more, samples: {"energy": source.window(run_more, samples, self.s, state)}

    def finish(self, labels: Sequence[str]) -> None:
        """Stop a runner that is still timing, keep what it measured, and see it exit cleanly."""
        if self.driver is None or self.status != OK:
            return
        try:
            m = self.driver.finish(self.hook, self.s.profile_iterations if self.s.profile else 0,
                                   profile_in_stop=bool(self.s.profile and self.cfg.engine == "dlbench"),
                                   before_profile=self._state_before_profile)
            self.fields = self._measurement_fields(m)
        except FAULTS as e:
            self.fail(e)
            return
        finally:
            if isinstance(self.sampler, Sampler):
                self.sampler.stop()
        self.measurement = m
        if self.s.profile:
            self.ext["profile"] = self._profile(m)
        if "energy" in m.extra:
            self.energy = m.extra["energy"]
        if self.driver.batch is not None and not minimums_met(m.samples_s, self.s):
            self.notes.append(f"batch mode: the {len(m.samples_s)} iterations asked for up front took "
                              f"{sum(m.samples_s):.3g} s, less than min_seconds={self.s.min_seconds:g}")
        if len(labels) > 1:
            self.lockstep_with = tuple(x for x in labels if x != self.cfg.label)
            self.record["lockstep"] = Lockstep(self.lockstep_with, LOCKSTEP_SLICE_S)
        assert self.process is not None
        if m.profile_lost:  # the timed iterations stand; the runner's exit is the profiling pass's, not the row's
            self.notes.append(f"{m.profile_lost}: the timed iterations stand, but the runner sent no 'done' (no peak "
                              "memory or outputs from it)")
            self.exit = self.process.wait(EXIT_WAIT_S)
            if self.exit is None:
                self.notes.append(f"the runner {self.process.kill()}")
            return
        self.exit = self.process.wait(EXIT_WAIT_S)
        if self.exit is None:
            self.end(FAILED, f"runner did not exit within {EXIT_WAIT_S:g} s after 'done'")
        elif self.exit.lost:
            self.end(INFRA_FAILED, f"device disconnected after the runner finished ({self.exit.lost})")
        elif self.exit.code != 0:
            self.end(FAILED, f"runner {self.exit.describe()} after 'done'")

    def _measurement_fields(self, m: Measurement) -> dict[str, Any]:
        ready, done = m.ready, m.done
        pinned = ready.get("cpus")
        if isinstance(pinned, list) and self.cfg.cpus and sorted(map(str, pinned)) != sorted(map(str, self.cfg.cpus)):
            self.notes.append(f"runner reports affinity {pinned}, asked for {list(self.cfg.cpus)}")
        omp, asked = ready.get("omp_num_threads", "-"), self.env.get("OMP_NUM_THREADS")
        if omp != "-" and asked is not None and omp != asked:  # "-": the runner does not say (not devicelab's)
            self.notes.append(f"the runner's OMP_NUM_THREADS is {omp!r}, devicelab set {asked!r}")
        spread = done.get("thread_cpus")  # every thread's CPUs at the end (engine pools included)
        if isinstance(spread, list) and self.cfg.cpus and not set(map(str, spread)) <= set(map(str, self.cfg.cpus)):
            self.notes.append(f"the runner's threads could run on CPUs {spread}, outside the pinned {list(self.cfg.cpus)}")
        self.record.update(stop_reason=m.stop_reason, batches=m.batches, runner_protocol=m.protocol,
                           outputs_sha256=done.get("outputs_sha256"), ops=tuple(m.ops),
                           warmup=Warmup(m.warmup_by, m.warmup_iterations, m.warmup_seconds, m.warmup_stopped))
        if ready.get("runner_version"):
            self.record["runner_version"] = str(ready["runner_version"])
        if m.starts_s is not None:
            self.ext["iter_t_s"] = tuple(m.starts_s)
        if ready.get("import_s") is not None:
            self.ext["import_s"] = seconds_field(ready, "import_s")
        gpu = ready.get("gpu_device")
        if isinstance(gpu, dict) and isinstance(gpu.get("name"), str):
            self.ext["gpu_device"] = {"name": gpu["name"], "type": gpu.get("type"), "software": bool(gpu.get("software"))}
            if gpu.get("software"):
                self.notes.append(f"the {self.cfg.backend} device is a software rasterizer ({gpu['name']}, on the CPU): "
                                  "these are not GPU timings")
        if m.requests is not None:
            self.llm_requests = m.requests
            self.llm_ready = dict(ready.get("llm") or {})
            self.notes.extend([llm.TTFT_DEFINITION, f"{llm.EXCLUDED} excluded from every timing (greedy decoding)",
                               llm.SAMPLES_DEFINITION])
        peak = byte_count(done, "peak_rss_bytes")
        # The runner's own peak is the timed run's when it read it before a profiling pass in the same process: the
        # host runner says so (`peak_rss_before_profile`); dlbench reads it at stop, before its layer_times passes.
        # devicelab's own runners (the Python runner, dlbench) read their peak at stop, before the accuracy pass (its
        # inputs run after timing, in the same process), so that pass is never in it either. A user's protocol
        # runner sends `done` after writing its outputs (docs/runner-protocol.md): its peak includes them.
        own = self.program is None or (self.engine.native_runner is not None
                                       and self.engine.user_runner(self.job.options) is None)
        self.peak_before = [] if peak is None else [
            *(["profiling pass"] if done.get("peak_rss_before_profile") is True or (
                self.cfg.engine == "dlbench" and self.s.profile) else []),
            *(["accuracy pass"] if own and self.accuracy_pass and done.get("outputs_sha256") else [])]
        when = f"before its {' and '.join(self.peak_before)}" if self.peak_before else "at stop"
        self.runner_peak = (peak, done.get("peak_rss_method"))
        return {"samples_s": tuple(m.samples_s), "warmups": m.warmup_iterations,
                "median_s": stats.median(m.samples_s), "p90_s": stats.percentile(m.samples_s, 90),
                "load_s": ready.get("load_s"), "first_s": ready.get("first_s"),
                "rss_before_load_bytes": byte_count(ready, "rss_before_load_bytes"), "peak_rss_bytes": peak,
                "memory_method": f"{done.get('peak_rss_method', 'VmHWM')} of the runner process {when} "
                                 "(RSS before load: its VmRSS after the engine import, before the model loads)"}

    def _profile(self, m: Measurement) -> dict[str, Any]:
        """The row's ext.profile, or why there is none: a profile that cannot be built or is not valid (a runner's
        odd op lines) is a failed profiling pass, never a failed row."""
        try:
            return _checked(self._build_profile(m))
        except Exception as e:  # noqa: BLE001 - the profile is an addition: whatever breaks it, the timing stands
            return opprof.unsupported(f"profiling pass failed: {type(e).__name__}: {e}")

    def _build_profile(self, m: Measurement) -> dict[str, Any]:
        """The row's ext.profile: the runner's profiling pass (protocol v2 `profile`), else the op events a runner
        sent by itself (dlbench's `layer_times` pass after timing, a `protocol` runner's), else why there is none."""
        median = self.fields.get("median_s")
        engine = self.cfg.engine
        if engine == "dlbench" and m.ready.get("library"):
            engine = str(m.ready["library"])  # dlbench's op names are its library's
        if m.profiled is not None:
            if m.profiled.get("unsupported"):
                return opprof.unsupported(str(m.profiled["unsupported"]))
            if m.profiled.get("error"):
                return opprof.unsupported(f"profiling pass failed: {m.profiled['error']}")
            ops, link = m.profile_ops, str(m.profiled.get("node_link") or "none")
            notes = [str(n) for n in m.profiled.get("notes") or ()]
            if any("node" not in o for o in ops):  # named after the model's nodes, but not linked by the runner
                ops, linked = _link_nodes(ops, self.job, engine)
                # "exact" only when every op found its node: some linked is best-effort, none linked is none
                link = "none" if not linked else (link if linked == len(ops) else "best-effort")
                if 0 < linked < len(ops):
                    notes.append(f"{linked} of {len(ops)} ops linked to a model node by name; the others (ops the "
                                 "engine added or renamed) have none")
            return opprof.build(ops, engine=engine, engine_source=str(m.profiled.get("source") or engine),
                                iterations=int(m.profiled.get("iterations") or self.s.profile_iterations),
                                median_s=median, node_link=link, notes=notes, wall_s=m.profiled.get("wall_s"))
        if m.ops:
            passes = {o.get("passes") for o in m.ops}
            iterations = passes.pop() if len(passes) == 1 and isinstance(next(iter(passes), None), int) else None
            notes = []
            if self.cfg.engine == "dlbench":
                source = f"dlbench op events ({m.ready.get('library', 'its library')}: options.layer_times passes " \
                         "after timing; each op's time is the median over the passes)"
                if engine == "ncnn":
                    notes.append("pnnx renames ncnn's layers (convclip_0 for a model's Conv+Clip): each layer is "
                                 "paired with the model's nodes of the same shared type in order, best-effort")
            else:
                source = "the runner's op events"
                notes.append("the runner sent op events by itself: devicelab cannot tell whether they were timed "
                             "apart from the timed iterations")
            if iterations is None:
                notes.append("the op events do not say how many iterations they cover (counted as 1)")
            ops = [{"name": str(o.get("name", "")), "engine_type": str(o.get("type", "")), "s": o["s"]} for o in m.ops
                   if isinstance(o.get("s"), (int, float)) and not isinstance(o.get("s"), bool)]
            if len(ops) < len(m.ops):
                notes.append(f"{len(m.ops) - len(ops)} op event(s) dropped: their 's' is not a number of seconds")
            ops, linked = _link_nodes(ops, self.job, engine)
            link = "none" if not linked else ("exact" if linked == len(ops) and engine != "ncnn" else "best-effort")
            if link == "best-effort" and linked < len(ops):
                notes.append(f"{linked} of {len(ops)} ops linked to a model node")
            wall = m.done.get("layer_wall_s")  # dlbench: one layer pass's median wall time
            wall = float(wall) if isinstance(wall, (int, float)) and not isinstance(wall, bool) and wall > 0 else None
            return opprof.build(ops, engine=engine, engine_source=source, iterations=iterations or 1,
                                median_s=median, node_link=link, notes=notes, wall_s=wall)
        return opprof.unsupported(m.no_profile or "the runner reported no per-op times")

    # ---- an engine's own tool: once, to the end

    def run_tool(self) -> None:
        assert self.process is not None and self.tool is not None and self.tool_s is not None
        lines: list[str] = []
        deadline = now_deadline(self.s.timeout_seconds)
        try:
            while True:
                lines.append(self.process.read_line(deadline).decode(errors="replace"))
        except ChannelClosedError:
            pass
        except ChannelTimeoutError:
            how = self.process.kill()
            self.end(FAILED, f"timeout: {self.tool.tool} did not finish within timeout_seconds="
                             f"{self.s.timeout_seconds:g}; {how}")
            return
        self.exit = self.process.wait(EXIT_WAIT_S)
        if self.exit is None:
            how = self.process.kill()
            self.end(FAILED, f"{self.tool.tool} closed its output but did not exit; {how}")
        elif self.exit.lost:
            self.end(INFRA_FAILED, f"device disconnected ({self.exit.lost})")
        elif self.exit.code is None:
            self.end(FAILED, f"{self.exit.describe()} ({self.tool.tool})")
        self.tool_stdout = "\n".join(lines) + "\n"

    def _state_before_profile(self) -> None:
        """The state after timing, before the profiling (or F32 reference) pass heats the device further (the row's
        state_after)."""
        try:
            self.state_timed = self.t.state()
        except OSError as e:
            self.notes.append(f"state after timing (before {self.state_timed_before}) could not be read: {e}")

    def profile_tool(self) -> None:
        """The profiling pass of an engine's own tool: after its timed run, the tool once more with its per-op flags
        (`profile_iterations` runs, pinned like the timed one), only its op table kept. Read before `collect`
        removes the run folder; the row's profile is made in `_tool_fields`, once the timed run's median is known."""
        if not self.s.profile or self.status != OK or self.tool is None or self.tool.profile_flags is None:
            return
        assert self.tool_s is not None and self.run_dir is not None
        self._state_before_profile()
        settings = dataclasses.replace(self.tool_s, iterations=self.s.profile_iterations,
                                       extra_args=(*self.tool_s.extra_args, *self.tool.profile_flags))
        argv = self.tool.argv(self.target[0], self.run_dir, settings)
        lines: list[str] = []
        try:
            process = self.t.spawn(argv, self.env, tuple(self.cfg.cpus), self.run_dir)
        except TransportLostError:
            raise  # the device went: the row says so (safely)
        except (OSError, ValueError) as e:
            self.tool_profile = (None, f"the profiling run of {self.tool.tool} could not start: {e}")
            return
        deadline = now_deadline(self.s.timeout_seconds)
        try:
            while True:
                lines.append(process.read_line(deadline).decode(errors="replace"))
        except ChannelClosedError:
            pass
        except ChannelTimeoutError:
            how = process.kill()
            self.tool_profile = (None, f"the profiling run of {self.tool.tool} did not finish within "
                                       f"timeout_seconds={self.s.timeout_seconds:g}; {how}")
            return
        done = process.wait(EXIT_WAIT_S)
        if done is None:
            process.kill()
        code = done.code if done is not None and done.code is not None else 1
        run = self.tool.parse("\n".join(lines) + "\n", process.stderr(), code, {})
        self.tool_profile = (run, f"{self.tool.tool} exited with {code}" if code else run.error)

    # ---- after the program

    def collect(self) -> None:
        """Bring back what the program wrote (dlprobe's report, the accuracy outputs or a tool's files) and make the
        measurement fields; remove the run folder."""
        if self.status == INFRA_FAILED or self.run_dir is None:
            self._remove_run_dir()
            return
        report = None
        files: dict[str, str] = {}
        outputs: Path | None = None
        try:
            if self.probed and self.t.pull(f"{self.run_dir}/{PROBE_FILE}", self.tmp / PROBE_FILE):
                report = native.ProbeReport.read(self.tmp / PROBE_FILE)
            if self.status == OK and self.tool:
                for name in self.tool.output_files:
                    if self.t.pull(f"{self.run_dir}/{name}", self.tmp / name):
                        files[name] = (self.tmp / name).read_text(errors="replace")
            if self.status == OK and self.job.workload is not None:
                logits = self.tmp / LOGITS_FILE
                if self.t.pull(f"{self.run_dir}/{LOGITS_FILE}", logits):
                    self.llm_logits = logits
                else:
                    self.notes.append("the runner wrote no logits file: accuracy drift not compared")
            if self.status == OK and self.accuracy_pass:
                outputs = self.tmp / OUTPUTS_FILE
                if not self.t.pull(f"{self.run_dir}/{OUTPUTS_FILE}", outputs):
                    outputs = None
                    self.notes.append("the runner wrote no outputs file: accuracy not compared")
            self._remove_run_dir()
        except TransportLostError as e:
            self.end(INFRA_FAILED, f"device disconnected while collecting the results ({e})")
            return
        if self.probed and report is None:
            self.notes.append("dlprobe wrote no report (the runner was killed or never started)")
        if report is not None:
            self.record["dlprobe"] = report.summary()
            if self.status == FAILED and report.exit_signal and self.reason and "ended before" in self.reason:
                # dlprobe exits 128 + signal; say what happened to the runner itself
                self.reason = f"runner ended before finishing ({Exit(128 + report.exit_signal, report.exit_signal).describe()})"
        if self.status == OK and self.measurement is not None:
            self._timeline(report)
        if self.tool and self.status == OK:
            self._tool_fields(report, files)
        elif self.status == OK and report is not None:
            self._memory(report, *self.runner_peak)
        if self.status == OK and self.llm_logits is not None:
            self._llm_drift(self.llm_logits)
        if self.status == OK and outputs is not None:
            self._accuracy(outputs)
        elif self.status == OK and self.reuse is not None:
            self._set_accuracy(self.reuse.reused())
            self.notes.append(f"accuracy: this variant's pass in run {self.reuse.run_id} at {self.reuse.threads} "
                              "thread(s), not run again (the outputs do not depend on the thread count beyond "
                              "threads_max_abs_diff)" if self.reuse.thread_check else
                              f"accuracy: this variant's pass in run {self.reuse.run_id}, not run again")
        if self.status != OK:
            self.fields = {}

    def _timeline(self, report: native.ProbeReport | None) -> None:
        """`ext.timeline`: the timed iterations against time with the frequencies and temperatures sampled meanwhile
        (dlprobe's, else the transport's sampler), when the runner sent each iteration's start (`t`)."""
        m = self.measurement
        if m is None or m.t0_s is None or m.starts_s is None:
            return
        unavailable: list[str] = []
        freq = temp = None
        if report is not None:
            freq, temp = timeline.probe_series(report.raw, m.t0_s, m.samples_s, m.starts_s, unavailable)
        elif isinstance(self.sampler, Sampler):
            sp = self.sampler
            keys = sorted({k for row in sp.freq for k in row})
            zones = sorted({k for row in sp.temps for k in row})
            freq = timeline.Series(sp.source, "controller", sp.freq_t,
                                   {k: [row.get(k) for row in sp.freq] for k in keys})
            temp = timeline.Series(sp.source, "controller", sp.temp_t,
                                   {z: [row.get(z) for row in sp.temps] for z in zones})
            if not zones:
                unavailable.append("temperatures: no /sys/class/thermal zone on this host")
                temp = None
        elif isinstance(self.sampler, str):
            unavailable.append(f"cpu frequencies and temperatures: {self.sampler}")
        else:
            unavailable.append("cpu frequencies and temperatures: dlprobe wrote no report")
        self.ext["timeline"] = timeline.build(timeline.Inputs(
            iter_t_s=m.starts_s, samples_s=m.samples_s, t0_s=m.t0_s, batch_marks=m.batch_marks, cpus=self.cfg.cpus,
            lockstep_with=self.lockstep_with, freq_khz=freq, temp_c=temp, unavailable=unavailable))

    def _llm_drift(self, logits: Path) -> None:
        """Keep this variant's logits (devicelab.llm_logits: by device, engine build, model, prompt and quantization)
        and compare them with the F32 variant's of the same engine — running that variant once first when this device
        has none yet (_reference_pass) — and, at F32, with every other engine's F32 logits of the same model and
        prompt (devicelab.llm.drift)."""
        w, cfg = self.job.workload, self.cfg
        assert w is not None
        n_vocab = self.llm_ready.get("n_vocab")
        try:
            got = llm.read_logits(logits, int(n_vocab) if isinstance(n_vocab, int) else 0)
        except (ValueError, OSError) as e:
            self.notes.append(f"accuracy drift not compared: {e}")
            return
        read = self.llm_ready.get("quant")
        if isinstance(read, str) and read != w.quant:
            # Logits are kept by quantization: another type's would pass for this one's (an F32 reference that is the
            # quantized file itself would show no drift at all).
            self.notes.append(f"accuracy drift not compared: the runner read a {read} model for a {w.quant} config; "
                              "its logits are not kept")
            return
        profile = self.t.profile_key()
        mine = llm.logits_key(cfg.engine, cfg.label, cfg.engine_version, cfg.model, w, self.job.seed, profile)
        llm_logits.keep(mine, w.quant, logits)
        record: dict[str, Any] = {"logits_sha256": paths.sha256_file(logits), "steps": int(got.shape[0])}
        if w.quant != llm.REFERENCE_QUANT:
            ref = llm_logits.logits_path(mine, llm.REFERENCE_QUANT)
            if not ref.is_file() and not self.job.accuracy_wanted:
                self.notes.append(f"accuracy drift not compared: no {llm.REFERENCE_QUANT} logits of this model and "
                                  "prompt on this device, and accuracy is off (accuracy_inputs: 0), so no "
                                  f"{llm.REFERENCE_QUANT} reference pass ran")
            elif not ref.is_file():
                self._reference_pass(mine)
            if ref.is_file():
                try:
                    record["vs_f32"] = llm.drift(llm.read_logits(ref, got.shape[1]), got)
                except ValueError as e:
                    self.notes.append(f"accuracy drift not compared: {e}")
        else:
            engines = llm.logits_key("*", "", "", cfg.model, w, self.job.seed, profile)
            me = f"{cfg.engine}" + (f" [{cfg.label}]" if cfg.label else "")
            seen = llm_logits.register(engines, me, llm_logits.logits_path(mine, w.quant).name)
            others = {}
            for name, file in sorted(seen.items()):
                if name != me and (llm_logits.folder() / file).is_file():
                    with contextlib.suppress(ValueError):
                        others[name] = llm.drift(llm.read_logits(llm_logits.folder() / file, got.shape[1]), got)
            if others:
                record["vs_engines_f32"] = others
            else:
                self.notes.append("accuracy drift between engines: no other engine's F32 logits of this model and "
                                  "prompt on this device: not compared")
        self.llm_drift = record

    def _reference_pass(self, key: str) -> None:
        """This device has no F32 logits of this engine build, model and prompt yet (its F32 config runs later in the
        shuffled order, ran at another time, or is not in the suite): run the F32 variant now, once — one warmup and
        one timed request, at this config's threads and CPUs, after this config's timing and with its state after
        read first — so that drift does not depend on the order configs run in. That pass keeps its logits as any F32
        row does (in its own _llm_drift), for every later config of the prompt on this device; nothing else of it is
        kept. One pass per key at a time on this host (a farm's workers share the data folder)."""
        job, w = self.job, self.job.workload
        assert w is not None and job.llm is not None
        if job.reference is None:
            self.notes.append(f"accuracy drift: no {llm.REFERENCE_QUANT} logits of {self.cfg.engine} for this model "
                              f"and prompt on this device, and no {llm.REFERENCE_QUANT} variant to run: not compared")
            return
        tried = (job.run_id, key)
        if tried in _FAILED_REFERENCES:  # it failed once in this run: every config of the prompt would fail alike
            self.notes.append(f"accuracy drift not compared: the {llm.REFERENCE_QUANT} reference pass of this model "
                              "and prompt failed earlier in this run (not tried again)")
            return
        with llm_logits.locked(f"{key}-{llm.REFERENCE_QUANT}"):
            if llm_logits.logits_path(key, llm.REFERENCE_QUANT).is_file():
                return  # another worker of this host ran it while this one waited
            if self.state_timed is None:
                self.state_timed_before = f"the {llm.REFERENCE_QUANT} reference pass"
                self._state_before_profile()
            reference = llm.LlmWorkload(llm.REFERENCE_QUANT, w.prompt_tokens, w.gen_tokens, w.context_depth)
            once = dataclasses.replace(job.settings, warmup_iterations=1, warmup_seconds=0.0, warmup_min_seconds=0.0,
                                       min_iterations=1, min_seconds=0.0, max_iterations=1, energy=False,
                                       profile=False, accuracy_inputs=0)
            ref_job = dataclasses.replace(job, config=dataclasses.replace(self.cfg, workload=reference.key()),
                                          prepared=job.reference, reference=None, settings=once, notes=(),
                                          llm={**job.llm, "quant": llm.REFERENCE_QUANT})
            (row,) = run_jobs(self.t, [ref_job])
        if row.status != OK:
            _FAILED_REFERENCES.add(tried)
            self.notes.append(f"accuracy drift not compared: the {llm.REFERENCE_QUANT} reference pass was "
                              f"{row.status}: {row.reason}")
        else:
            self.notes.append(f"accuracy drift: this device had no {llm.REFERENCE_QUANT} logits of this model and "
                              f"prompt, so the {llm.REFERENCE_QUANT} variant ran once after this config's timing (one "
                              "warmup and one timed request; its logits kept for later configs, its timings not)")

    def _memory(self, report: native.ProbeReport | None, peak: int | None, method: str | None) -> None:
        """Peak memory: dlprobe's wait4 ru_maxrss cross-checked with the program's own figure, where dlprobe ran."""
        if report is not None and self.peak_before and peak:
            # dlprobe's ru_maxrss covers the runner's whole life, its untimed passes included (a profiling pass's
            # second session of the model, the accuracy inputs): the timed run's peak is the runner's own, read
            # before them; ru_maxrss stays in protocol.dlprobe.
            passes = " and ".join(self.peak_before)
            method = (f"{method or 'VmHWM'} of the runner process before its {passes} (dlprobe's wait4 "
                      f"ru_maxrss, in protocol.dlprobe, includes the {passes}) (RSS before load: the runner's "
                      "VmRSS before the model loads)")
        elif report is not None:
            peak, method, note = native.peak_memory(report, peak, method)
            if note:
                self.notes.append(note)
            method += " (RSS before load: the runner's VmRSS before the model loads)"
        self.fields.update(peak_rss_bytes=peak, memory_method=method)

    def _tool_fields(self, report: native.ProbeReport | None, files: dict[str, str]) -> None:
        assert self.tool is not None and self.tool_s is not None and self.exit is not None
        code = self.exit.code if self.exit.code is not None else 0
        if report is not None and report.exit_code is not None:
            code = report.exit_code  # dlprobe exits with the tool's status (128 + signal)
        stderr = self.process.stderr() if self.process else ""
        run = self.tool.reconcile(self.tool.parse(self.tool_stdout, stderr, code, files), self.tool_s)
        fields = run.result_fields()
        tool = fields.pop("tool")
        self.notes.extend(fields.pop("notes"))
        self.record["tool"] = {**tool, "argv": self.target, "exit_code": code, "iterations_asked": self.tool_s.iterations}
        self.record["warmup"] = Warmup("tool", fields.get("warmups"), None)
        if run.error is not None:
            self.end(FAILED, f"{self.tool.tool}: {run.error}")
            return
        peak, method = fields.pop("peak_rss_bytes"), fields.pop("memory_method")
        fields["samples_s"] = tuple(fields["samples_s"])
        self.fields = fields
        self._memory(report, peak, method)
        if self.s.profile:
            self.ext["profile"] = self._tool_profile(fields.get("median_s"))

    def _tool_profile(self, median: float | None) -> dict[str, Any]:
        try:
            return _checked(self._build_tool_profile(median))
        except Exception as e:  # noqa: BLE001 - as _profile: the timing stands whatever the profile's fate
            return opprof.unsupported(f"profiling pass failed: {type(e).__name__}: {e}")

    def _build_tool_profile(self, median: float | None) -> dict[str, Any]:
        assert self.tool is not None
        if self.tool.profile_flags is None:
            return opprof.unsupported(self.tool.no_profile)
        run, error = self.tool_profile
        if run is None or error:
            return opprof.unsupported(f"profiling pass failed: {error}")
        if not run.ops:
            return opprof.unsupported(f"the profiling run of {self.tool.tool} printed no op table")
        return self.tool.profile(run, self.s.profile_iterations, median)

    def _accuracy(self, outputs: Path) -> None:
        import numpy as np

        from devicelab.engines.onnxruntime import reference_outputs

        count = self.s.accuracy_inputs
        source = self.job.source
        try:
            # Both sides can fail on the user's data: ONNX Runtime on a model with custom ops, a runner's outputs
            # file saved with named arrays or not as an .npz. Then there is no accuracy, and the timing stands.
            reference = reference_outputs(source, INPUT_SEED, count, paths.data_dir() / "reference")
            with np.load(outputs) as data:
                got = [data[f"arr_{k}"] for k in range(len(data.files))]
        except Exception as e:  # noqa: BLE001 - any failure here is the data's, reported on the row
            self.notes.append(f"accuracy not compared: {type(e).__name__}: {e}")
            return
        try:
            acc = accuracy.agreement(reference, got)
            if source.dataset is not None:
                from devicelab import datasets

                labels = datasets.split(source.dataset, "test").labels
                acc.update(label_accuracy=accuracy.label_accuracy(got, labels), label_inputs=int(labels.shape[0]),
                           reference_label_accuracy=accuracy.label_accuracy(reference, labels),
                           dataset=datasets.describe(source.dataset))
        except ValueError as e:
            self.notes.append(f"accuracy not compared: {e}")
            return
        try:
            assert self.variant is not None
            acc = variants.record(self.variant, acc, self.job.run_id, self.cfg.threads, outputs)
        except Exception as e:  # noqa: BLE001 - the cache is an optimization: the row keeps its own accuracy
            self.notes.append(f"accuracy not kept for later configs of this variant: {type(e).__name__}: {e}")
        self._set_accuracy(acc)

    def _set_accuracy(self, acc: dict[str, Any]) -> None:
        """The row's accuracy record, measured now or reused, and what it says about a lower-precision switch."""
        diff = acc.get("max_abs_diff")
        if self.cfg.precision in ("fp16", "bf16") and isinstance(diff, (int, float)) and \
                diff < accuracy.NO_EFFECT_MAX_ABS_DIFF:
            self.notes.append(f"outputs match fp32 within {accuracy.NO_EFFECT_MAX_ABS_DIFF:g}: the {self.cfg.precision} "
                              "setting changed no arithmetic on this CPU")
        self.fields["accuracy"] = acc

    def _reap(self) -> None:
        """Never leave a runner behind (Ctrl-C included): close its input, give it a moment, then kill it."""
        p = self.process
        if p is None:
            return
        if self.exit is None:
            p.close_stdin()
            self.exit = p.wait(5.0)
            if self.exit is None:
                p.kill()
        self.stderr = p.stderr()
        self.process_extras = p.extras()
        self.process = None

    # ---- the Result, once

    def _transport_extras(self, state_after: dict[str, Any] | None) -> ResultExtras:
        """What the transport reads in the states around this config (`Transport.result_extras`: e.g. Android's
        thermal status): on every row that has a state before; its throttling counts where the session judges
        throttling at all (a program that ran, on a device still there)."""
        if self.state_before is None:
            return ResultExtras()
        return self.t.result_extras(self.state_before, state_after)

    def result(self) -> Result:
        if self.process is not None:
            self._reap()
        # What a row carries depends on how far it got: one that never started its program has no state after,
        # no energy record and no stderr; one that lost its device has no state after either.
        state_after, was_throttled = None, None
        if self.spawned and self.status != INFRA_FAILED and self.state_timed is not None:
            state_after = self.state_timed  # read after timing, before the profiling (or F32 reference) pass
            self.notes.append(f"state after: read when timing ended, before {self.state_timed_before}")
            was_throttled = throttled(self.state_before, state_after, self.cfg.cpus)
        elif self.spawned and self.status != INFRA_FAILED:
            try:
                state_after = self.t.state()
            except OSError as e:
                self.notes.append(f"state after the run could not be read: {e}")
            was_throttled = throttled(self.state_before, state_after, self.cfg.cpus)
        extras = self._transport_extras(state_after)
        seen = self.process_extras
        extras = ResultExtras({**extras.ext, **seen.ext}, (*extras.notes, *seen.notes),
                              extras.throttled or seen.throttled)
        if extras.throttled and self.spawned and self.status != INFRA_FAILED:
            was_throttled = True
        self.notes.extend(extras.notes)
        if self.status == OK:
            self.notes.extend(stats.stability_warnings(self.fields.get("samples_s", ()), was_throttled))
        energy = self.energy.result_fields() if self.energy is not None and self.spawned else {}
        w = self.job.workload
        if w is not None:  # every LLM row says which request it was; an ok one also what it measured
            self.ext["llm"] = w.to_dict()
            if self.status == OK and self.llm_requests:
                self.ext["llm"] = {**llm.ext_llm(w, self.llm_requests, self.llm_ready,
                                                 energy.get("energy_j_per_inference")),
                                   **({"drift": self.llm_drift} if self.llm_drift else {}),
                                   # the GGUF file of this quantization (Config.model_bytes is the suite's file)
                                   **({"file_bytes": size} if (size := artifact_bytes(self.job.prepared)) else {})}
        if self.energy is not None and self.energy.detail:
            self.record["energy"] = EnergyWindow.from_record(self.energy.detail)
        protocol = RunProtocol(settings=self.s.to_dict(), cooldown=self.cooldown,
                               artifact_bytes=artifact_bytes(self.job.prepared), **self.record)
        ok = self.status == OK
        return Result.for_config(
            self.job.run_id, self.cfg, self.status, reason=self.reason, notes=tuple(self.notes),
            state_before=self.state_before, state_after=state_after, throttled=was_throttled,
            started_at=self.started, finished_at=utc_now(), stderr_tail=self.stderr[-STDERR_TAIL_BYTES:] or None,
            protocol=protocol, ext={**(self.ext if ok else {k: v for k, v in self.ext.items() if k == "llm"}),
                                    **extras.ext,
                                    **({"label_env_lock": self.job.env_lock} if self.job.env_lock else {})}, **energy,
            **(self.fields if ok else {}))


def _checked(profile: dict[str, Any]) -> dict[str, Any]:
    """The profile when valid, else the profiling pass failed (its first problem said)."""
    bad = opprof.problems(profile)
    if bad:
        return opprof.unsupported(f"profiling pass failed: the profile is not valid: {'; '.join(bad[:3])}")
    return profile


def _link_nodes(ops: list[dict[str, Any]], job: Job, engine: str) -> tuple[list[dict[str, Any]], int]:
    """Ops named after the config's ONNX model's nodes, linked to them (node, absorbed nodes, the node's type for
    the vocabulary): how a profile from MNN or from op events reaches the model. The model is the ONNX file the
    engine's format was converted from (the prepared file itself when it is ONNX: a QDQ int8 model)."""
    from devicelab.opprof import onnxgraph

    path = job.prepared.path if str(job.prepared.path).endswith(".onnx") else job.source.path
    try:
        if engine == "ncnn":  # pnnx renamed the layers: paired by type and order
            return onnxgraph.link_by_order(ops, job.source.path, "ncnn")
        return onnxgraph.link(ops, path)
    except Exception:  # noqa: BLE001 - a model onnx cannot read leaves the ops unlinked, never fails the row
        return [{**o, "node": None, "fused": []} for o in ops], 0


# --------------------------------------------------------------------------------------------------
# The entry point


def run_jobs(transport: Transport, jobs: Sequence[Job], cooldown_record: Cooldown | None = None) -> list[Result]:
    """Results for `jobs` on `transport`, in order. Several runner-protocol jobs (the A/B labels of one config) are
    started one after another (loads never contend) and timed in lockstep; tools run one at a time, to the end."""
    tools = [job for job in jobs if isinstance(get_engine(job.config.engine), ToolEngine)]
    if len(jobs) > 1 and (tools or not transport.lockstep or transport.batch):  # one at a time: a tool runs to its end alone
        return [r for job in jobs for r in run_jobs(transport, [job], cooldown_record)]
    with contextlib.ExitStack() as stack:
        attempts = [_Attempt(transport, job, cooldown_record, stack) for job in jobs]
        live: list[_Attempt] = []
        for a in attempts:
            if not a.safely(lambda: (a.prepare(), a.spawn())):
                if a.spawned:  # it started but failed before timing: what dlprobe saw still explains it
                    a._reap()
                    a.safely(a.collect)
                continue
            if a.tool:
                a.safely(a.run_tool)
                a.safely(a.profile_tool)
                a.safely(a.collect)
                a._reap()
            else:
                live.append(a)
        drivers = [a for a in live if a.driver is not None]
        labels = [a.cfg.label for a in drivers]
        if len(drivers) == 1:
            try:
                drivers[0].driver.time_alone()  # type: ignore[union-attr]
            except FAULTS as e:
                drivers[0].fail(e)
        elif drivers:
            lockstep([a.driver for a in drivers], lambda i, e: drivers[i].fail(e),  # type: ignore[misc]
                     faults=FAULTS)
        for a in live:
            a.safely(lambda: a.finish(labels))
            a._reap()
        # Every label's runner has ended before any collect: an LLM config's F32 reference pass (in collect) must not
        # run beside another label's runner, and each label's state after timing is read before any such pass heats
        # the device.
        if len(live) > 1 and any(a.job.workload is not None and a.job.reference is not None for a in live):
            for a in live:
                if a.state_timed is None:
                    a.state_timed_before = "any label's F32 reference pass"
                    a._state_before_profile()
        for a in live:
            a.safely(a.collect)
        return [a.result() for a in attempts]


__all__ = ["Job", "run_jobs", "cooldown", "idle_baseline", "throttled", "runner_config", "stage_dataset",
           "native_programs",
           "tool_settings", "OUTPUTS_FILE"]
