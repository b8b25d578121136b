"""A run, end to end: validate everything, resolve models, plan, then execute config by config, committing
each Result the moment it exists. The CLI calls this; nothing here prints."""

from __future__ import annotations

import dataclasses
import os
import platform
import secrets
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import devicelab
from devicelab import llm, paths, rows, session, zoo, zoo_llm
from devicelab.config import ConfigError, EngineSpec, Inventory, Suite, ab_pairs, parse_suite
from devicelab.devices import Transport, open_device
from devicelab.engines import EngineInfo, PreparedModel, SourceModel, get_engine
from devicelab.engines.base import INPUT_SEED, Engine, UnsupportedError
from devicelab.engines.tool_base import ToolEngine
from devicelab.errors import DevicelabError, unknown_name_message
from devicelab.facts import DeviceEntry, DeviceFacts
from devicelab.plan import PlannedConfig, engine_version_on, expand
from devicelab.result import FAILED, INFRA_FAILED, Result, utc_now
from devicelab.session import Job
from devicelab.store import FINISHED, INTERRUPTED, PlannedRow, RunRecord, Store


@dataclass
class Prepared:
    """Everything validated and resolved; no device has run anything yet."""

    suite: Suite
    seed: int
    devices: dict[str, Transport]
    models: dict[str, zoo.ModelFile]
    engines: dict[tuple[str, str], EngineInfo]
    planned: list[PlannedConfig]
    facts: dict[str, dict[str, Any]] = field(default_factory=dict)

    def close(self) -> None:
        """Close every device (undoing what begin_run changed); a second close of a device does nothing more."""
        for device in self.devices.values():
            device.close()


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


def validate(raw_suite: dict[str, Any], source: str, inventory: Inventory) -> Suite:
    """The whole suite at once, devices included: one ConfigError naming every problem. The suite that comes back
    names its devices (the inventory's, ANDROID_SERIAL's, or the phones it asked for), so --resume runs the same."""
    problems: list[str] = []
    try:
        suite = parse_suite(raw_suite, source)
    except ConfigError as e:
        problems.extend(e.problems)
        suite = None
    wanted = raw_suite.get("devices")
    wanted = wanted if isinstance(wanted, list) else [wanted] if wanted else None
    entries, device_problems = select_devices([str(d) for d in wanted] if wanted else None, inventory)
    problems.extend(device_problems)
    if problems or suite is None:
        raise ConfigError(source, problems)
    return dataclasses.replace(suite, devices=tuple(e.id for e in entries))


def select_devices(wanted: list[str] | None, inventory: Inventory) -> tuple[list[DeviceEntry], list[str]]:
    """The devices a run uses: those asked for by id (inventory ids, or adb serials of attached phones), else the
    phone ANDROID_SERIAL names, else every inventory device. Phones are discovered only when a name is not in
    the inventory, so a host-only run never talks to adb."""
    if wanted is None and os.environ.get("ANDROID_SERIAL"):
        wanted, where = [os.environ["ANDROID_SERIAL"]], "ANDROID_SERIAL"
    else:
        where = "devices"
    if wanted is None:
        return list(inventory.devices), []
    entries: list[DeviceEntry] = []
    missing: list[tuple[int, str]] = []
    for i, name in enumerate(wanted):
        entry = inventory.find(name)
        if entry is None:
            missing.append((i, name))
        elif entry not in entries:
            entries.append(entry)
    problems: list[str] = []
    if missing:
        from devicelab.devices import discovered

        known = {str(d.options.get("serial") or d.options.get("udid") or d.id) for d in inventory.devices}
        found, notes = discovered(known)
        by_id = {e.id: e for e in found}
        allowed = [d.id for d in inventory.devices] + list(by_id)
        for i, name in missing:
            if name in by_id:
                entries.append(by_id[name])
                continue
            label = f"{where}[{i}]" if where == "devices" else where
            extra = f"; adb: {'; '.join(notes)}" if notes else ""
            problems.append(f"{label}: " + unknown_name_message("device", name, allowed)
                            + f" (inventory: {inventory.source}; attached phones are found with adb{extra})")
    return entries, problems


def resolve_models(suite: Suite) -> dict[str, zoo.ModelFile]:
    cache = paths.zoo_dir()
    out: dict[str, zoo.ModelFile] = {}
    for m in suite.models:
        if not m.path and m.name in zoo_llm.LLM_ZOO:  # an LLM: its F32 GGUF (the engine makes the other quants)
            f32 = zoo_llm.llm_model(m.name, "F32", cache / "llm")
            out[m.name] = zoo.ModelFile(m.name, f32.path, f32.sha256, f32.bytes, "zoo")
        else:
            out[m.name] = zoo.user_model(Path(m.path), m.name) if m.path else zoo.zoo_model(m.name, cache)
    return out


def prepare(suite: Suite, inventory: Inventory, seed: int, stored: list[PlannedConfig] | None = None,
            skip: set[str] | frozenset[str] = frozenset()) -> Prepared:
    """Devices opened, models resolved, engines probed and the plan made — or, given a run's `stored` plan, that plan
    (a resume), checked against what this host has for the configs still to run (`stored` minus `skip`)."""
    entries, problems = select_devices(list(suite.devices) if suite.devices is not None else None, inventory)
    if problems:
        raise ConfigError("devices", problems)
    models = resolve_models(suite)
    devices = {e.id: open_device(e) for e in entries}
    facts = [d.facts() for d in devices.values()]
    # Probe the host only for what the suite asks (probing may import an engine, e.g. OpenVINO).
    wanted = [(p, b) for p in suite.precisions for b in suite.backends]
    probe = wanted if any(f.kind == "host" for f in facts) else []
    engines = {(spec.name, spec.label): engine_info(spec, probe) for spec in suite.engines}
    if stored is None:
        planned = expand(suite, facts, engines, models, seed)
    else:
        planned = stored
        mismatch = replan_problems([pc for pc in stored if pc.config.identity_key() not in skip],
                                   {f.id: f for f in facts}, engines, models)
        if mismatch:
            for device in devices.values():
                device.close()
            raise DevicelabError(mismatch[0] + (f" (and {len(mismatch) - 1} more)" if len(mismatch) > 1 else ""))
    prepared = Prepared(suite, seed, devices, models, engines, planned, {f.id: f.to_dict() for f in facts})
    begin_run(prepared)
    return prepared


def replan_problems(todo: list[PlannedConfig], devices: dict[str, DeviceFacts],
                    engines: dict[tuple[str, str], EngineInfo],
                    models: dict[str, zoo.ModelFile]) -> list[str]:
    """Why this host cannot run a stored plan's configs as planned: a config's identity (its key in the store)
    names the device, engine version and model file it was planned with, and a result of another one under that
    key would be a lie. One line per difference, first seen first."""
    problems: list[str] = []
    for pc in todo:
        c = pc.config
        facts = devices.get(c.device)
        if facts is None:
            problems.append(f"device {c.device} was planned but is not in the run's devices here")
        if not pc.runnable:
            continue
        if facts is not None and not set(c.cpus) <= set(facts.cpu_ids):
            absent = ",".join(map(str, sorted(set(c.cpus) - set(facts.cpu_ids))))
            problems.append(f"device {c.device} here has no CPU {absent}, which the run planned to pin to")
        info = engines.get((c.engine, c.label))
        version = engine_version_on(facts, c.engine, info) if facts is not None else (info.version if info else None)
        if version != c.engine_version:
            name = f"{c.engine} [{c.label}]" if c.label else c.engine
            where = f"device {c.device}" if facts is not None and facts.extra.get("engine_versions") else "this host"
            problems.append(f"{name} is version {version or 'not installed'} on {where}, the run planned "
                            f"{c.engine_version}: resume it where that version is installed")
        model = models.get(c.model)
        if model is None or model.sha256 != c.model_sha256:
            problems.append(f"model {c.model} here is not the file the run planned (sha256 "
                            f"{(model.sha256[:12] if model else 'missing')} != {c.model_sha256[:12]})")
    return list(dict.fromkeys(problems))


def begin_run(prepared: Prepared) -> None:
    """Every device set up for the run (docs/devices.md, `begin_run`), last, so that a device refusing it ends the
    run before anything is stored; on any way out, what the others changed is undone."""
    try:
        for device in prepared.devices.values():
            device.begin_run()
    except BaseException:
        prepared.close()
        raise


def engine_info(spec: EngineSpec, probe: list[tuple[str, str]]) -> EngineInfo:
    """An engine's info; for a label whose build lives in another Python environment (options.python), its
    version and availability as that interpreter sees them."""
    engine = get_engine(spec.name)
    info = engine.info(probe)
    version = engine.version_for(spec.options)
    if version != info.version:
        info = dataclasses.replace(info, version=version)
    if spec.name == "protocol" and spec.options.get("formats"):  # the user's program says what it reads
        info = dataclasses.replace(info, formats=tuple(spec.options["formats"]))
    python = spec.options.get("python")
    if not python:
        return info
    version = version_in(str(python), engine)
    reason = None if version else f"{engine.package} is not importable by {python}"
    return dataclasses.replace(info, version=version, available=version is not None, reason=reason)


def version_in(python: str, engine: Engine) -> str | None:
    """The engine's version as the interpreter `python` sees it (None: it cannot import the engine, or not run)."""
    script = ("import importlib.metadata as m, importlib.util as u, sys\n"
              "print(m.version(sys.argv[2]) if u.find_spec(sys.argv[1]) else '')")
    try:
        p = subprocess.run([python, "-c", script, engine.module, engine.package], capture_output=True, text=True,
                           timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return p.stdout.strip() or None


def host_facts() -> dict[str, Any]:
    return {"hostname": platform.node(), "platform": platform.platform(), "machine": platform.machine(),
            "python": platform.python_version(), "cpu_count": os.cpu_count(), "argv0": sys.argv[0]}


def git_state() -> dict[str, Any] | None:
    """The checkout devicelab runs from, if it is one (so a run can say which code produced it)."""
    root = Path(devicelab.__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head or None, "dirty": bool(dirty)}


Progress = Callable[[str, Any], None]  # ("start", PlannedConfig) / ("result", Result)


def lockstep_groups(todo: list[PlannedConfig], suite: Suite, lockstep: Callable[[str], bool]
                    ) -> dict[str, list[PlannedConfig]]:
    """identity key → the labels of its A/B config in the same round (in plan order), for devices that time
    them in lockstep (`lockstep(device id)`); runner-protocol engines only (a tool times itself in one go) and not
    while energy is measured (its window wants the device to itself). A farm task runs one such group."""
    from devicelab.config import ab_pairs

    if not suite.protocol.lockstep or suite.protocol.energy:
        return {}
    paired = {engine for engine, _, _ in ab_pairs(suite.engines)}
    by_config: dict[tuple[Any, ...], list[PlannedConfig]] = {}
    for pc in todo:
        c = pc.config
        if (pc.runnable and c.engine in paired and lockstep(c.device)
                and not isinstance(get_engine(c.engine), ToolEngine)):
            key = (c.device, c.engine, c.model, c.precision, c.backend, c.threads, tuple(c.cpus), c.affinity,
                   c.repeat)
            by_config.setdefault(key, []).append(pc)
    return {pc.config.identity_key(): group for group in by_config.values() if len(group) > 1 for pc in group}


def ab_without_ok(store: Store, run_id: str, pairs: Sequence[tuple[str, str, str]], round_: int) -> dict[str, str]:
    """A/B engines (`pairs`: config.ab_pairs) that cannot go on, and why: a pair one of whose labels had no ok process
    in `round_` (every config of it failed, e.g. a runner that always times out, or a farm worker lost). Read from the
    store: a resumed run included, and a farm run's rows whoever wrote them."""
    ran = [r for r in store.results(run_id) if r.repeat == round_ and r.status != "unsupported"]
    out: dict[str, str] = {}
    for engine, base, cand in pairs:
        for label in (base, cand):
            mine = [r for r in ran if r.engine == engine and r.label == label]
            if engine not in out and mine and not any(r.status == "ok" for r in mine):
                out[engine] = (f"no ok process of {engine} [{label}] in round {round_ + 1} ({len(mine)} failed: "
                               f"{mine[0].reason}): its later rounds are skipped")
    return out


def ab_decision(store: Store, run_id: str, pairs: Sequence[tuple[str, str, str]], rounds: int,
                skipped: set[str] | frozenset[str] = frozenset(), levels: dict[str, float | None] | None = None
                ) -> dict[str, Any]:
    """After `rounds` rounds: compare's verdict for every A/B pair (engine under two labels) and config, from what the
    run has stored (a resumed run included). Decided when none is unknown — and, for each config whose nightly series
    an acknowledged alert moved off 1 (`levels`: ack_levels), when its night is not unknown at that level either
    (what `regress` will judge it at). The one stopping rule of adaptive rounds, local or on the farm."""
    from devicelab import verdicts
    from devicelab.analysis.compare import DEFAULT_THRESHOLD, summarize

    counts = {"slower": 0, "faster": 0, "same": 0, "unknown": 0}
    at_level = dict.fromkeys(counts, 0)
    for engine, base, cand in pairs:
        if engine in skipped:  # its rounds stopped: it cannot be decided, and must not hold the others back
            continue
        try:
            found = verdicts.compare_sides(store, verdicts.resolve_side(store, f"{run_id}:{base}"),
                                           verdicts.resolve_side(store, f"{run_id}:{cand}"), DEFAULT_THRESHOLD)
        except DevicelabError:  # a side with no ok result yet: nothing to decide on
            counts["unknown"] += 1
            continue
        for k, n in summarize(found).items():
            counts[k] += n
        if levels:
            for said in verdicts.verdicts_at_levels(store, run_id, engine, base, cand, levels,
                                                    DEFAULT_THRESHOLD).values():
                at_level[said] += 1
    out: dict[str, Any] = {"rounds": rounds, "verdicts": counts,
                           "decided": counts["unknown"] == 0 and at_level["unknown"] == 0 and sum(counts.values()) > 0}
    if any(at_level.values()):
        out["at_level"] = at_level
    return out


def ack_levels(store: Store, run_id: str, suite: Suite) -> dict[str, float | None]:
    """What ab_decision judges a run's nights against besides 1: the level of each nightly series an acknowledged
    alert moved (verdicts.levels_for_run); nothing for a suite without adaptive rounds."""
    from devicelab import verdicts

    return verdicts.levels_for_run(store, run_id) if suite.min_repeats else {}


class Executor:
    def __init__(self, store: Store, run_id: str, prepared: Prepared, progress: Progress | None = None) -> None:
        self.store, self.run_id, self.p = store, run_id, prepared
        self.progress = progress or (lambda kind, obj: None)
        for device in prepared.devices.values():
            device.on_event = self.progress  # e.g. ("push", {device, files, pushed_files, bytes, seconds})
        self._converted: dict[tuple[str, str, str, str], PreparedModel | str] = {}
        self._sources: dict[str, SourceModel] = {}

    def execute(self, skip: set[str] | frozenset[str] = frozenset()) -> list[Result]:
        """Run every planned config not in `skip`. Ctrl-C propagates after the current runner is killed;
        every Result stored before it stays."""
        todo = [pc for pc in self.p.planned if pc.config.identity_key() not in skip]
        baselines = {dev_id: session.idle_baseline(dev) for dev_id, dev in self.p.devices.items()}
        finished = False
        out: list[Result] = []
        self.progress("planned", sum(pc.runnable for pc in todo))
        adaptive = self.p.suite.min_repeats
        pairs = ab_pairs(self.p.suite.engines)
        checked = -1
        groups = self._lockstep_groups(todo)
        done: set[str] = set()
        broken: dict[str, str] = {}  # A/B engines whose later rounds are skipped, and why
        try:
            levels = ack_levels(self.store, self.run_id, self.p.suite)  # read once: only an acknowledgement moves them
            for pc in todo:
                if pc.config.identity_key() in done:
                    continue  # ran in lockstep with an earlier label of its round
                if adaptive and pc.runnable and pc.config.repeat != checked and pc.config.repeat > 0:
                    checked = pc.config.repeat  # a new round: did the last one give each pair something to compare?
                    for engine, why in ab_without_ok(self.store, self.run_id, pairs, checked - 1).items():
                        if engine not in broken:  # more rounds of it would fail the same way; the others go on
                            broken[engine] = why
                            self.progress("ab", {"rounds": checked, "decided": False, "stopped": why, "verdicts": {}})
                    if checked >= adaptive:  # are the A/B pairs decided already?
                        decision = ab_decision(self.store, self.run_id, pairs, checked, set(broken), levels)
                        self.progress("ab", decision)
                        if decision["decided"]:
                            break
                if pc.runnable and pc.config.repeat > 0 and pc.config.engine in broken:
                    continue
                group = groups.get(pc.config.identity_key(), [pc])
                for member in group:
                    self.progress("start", member)
                if not pc.runnable:
                    results = [rows.unsupported(self.run_id, pc.config, str(pc.unsupported))]
                else:
                    results = self._run_group(group, baselines[pc.config.device])
                for member, result in zip(group, results, strict=True):
                    done.add(member.config.identity_key())
                    self.store.add_result(result)
                    out.append(result)
                    self.progress("result", result)
            finished = True
        finally:
            self.store.set_run_status(self.run_id, FINISHED if finished else INTERRUPTED)
            for dev in self.p.devices.values():
                dev.close()
        return out

    def _lockstep_groups(self, todo: list[PlannedConfig]) -> dict[str, list[PlannedConfig]]:
        return lockstep_groups(todo, self.p.suite, lambda device: self.p.devices[device].lockstep)

    def _job(self, pc: PlannedConfig) -> Job | str:
        """The config as a session runs it, or why its model could not be converted."""
        cfg = pc.config
        source = self._source(cfg.model)
        workload = llm.workload_from_key(cfg.workload)
        if workload is not None:
            return self._llm_job(pc, source, workload)
        converted = self._convert(cfg.engine, source, cfg.precision, cfg.backend)
        if isinstance(converted, str):
            return converted
        return Job(run_id=self.run_id, config=cfg, source=source, prepared=converted, settings=self.p.suite.protocol,
                   options={**converted.options, **pc.engine_options}, notes=converted.notes)

    def _llm_job(self, pc: PlannedConfig, source: SourceModel, workload: llm.LlmWorkload) -> Job | str:
        """An LLM config's Job: the GGUF file in the requested quantization (an engine that makes quantized variants
        has `prepare_llm`; any other gets the suite's file as it is, and its runner says whether it holds that
        quantization) and the synthetic prompt, made here so that every engine sees the same token ids. A quantized
        config of a runner that writes logits also carries its F32 variant (`Job.reference`): the session runs it once
        when the device has no F32 logits of the prompt yet, so drift never depends on the order configs run in.
        A quantization the engine cannot make, or a request shape its optional `check_llm(source, workload)` refuses
        (e.g. a context past what the file holds), is an `unsupported` row (rows.Unsupported), any other failure a
        failed one."""
        cfg = pc.config
        engine = get_engine(cfg.engine)
        prepare_llm = getattr(engine, "prepare_llm", None)
        where = paths.data_dir() / "converted" / cfg.engine
        try:
            if (check_llm := getattr(engine, "check_llm", None)) is not None:  # a shape the file cannot hold
                check_llm(source, workload)
            prepared = prepare_llm(source, workload.quant, where) if prepare_llm is not None \
                else PreparedModel(source.path)
            payload = llm.runner_payload(INPUT_SEED, workload, llm.vocab(source.path))
        except UnsupportedError as e:
            return rows.Unsupported(str(e))
        except Exception as e:  # noqa: BLE001 - a model the engine cannot prepare is a failed row with its message
            return f"{cfg.engine} could not prepare {cfg.model} as {workload.quant}: {type(e).__name__}: {e}"
        notes = prepared.notes
        reference: PreparedModel | None = None
        # The F32 variant drift is measured against, when accuracy is on (a tool keeps no logits). An engine without
        # prepare_llm gets the suite's file as it is: its runner is asked for F32 and says which type it read, and
        # logits of another type are never kept as F32 (session._llm_drift).
        if (workload.quant != llm.REFERENCE_QUANT and not isinstance(engine, ToolEngine)
                and self.p.suite.protocol.accuracy_inputs > 0):
            try:
                reference = prepare_llm(source, llm.REFERENCE_QUANT, where) if prepare_llm is not None \
                    else PreparedModel(source.path)
            except Exception as e:  # noqa: BLE001 - no reference: the row runs, and says why drift cannot be measured
                notes = (*notes, f"accuracy drift: {cfg.engine} has no {llm.REFERENCE_QUANT} variant of {cfg.model} to "
                                 f"compare with ({e})")
        return Job(run_id=self.run_id, config=cfg, source=source, prepared=prepared, settings=self.p.suite.protocol,
                   options={**prepared.options, **pc.engine_options}, notes=notes, llm=payload, reference=reference)

    def _run_group(self, group: list[PlannedConfig], baseline: dict[str, Any]) -> list[Result]:
        """One config (or the A/B labels of one, run together by the session) to Results, after one cooldown."""
        device = self.p.devices[group[0].config.device]
        cooldown = session.cooldown(device, baseline, self.p.suite.protocol)
        made = [self._job(pc) for pc in group]
        # A conversion that failed is a failed row; the others run (together when there are several).
        results: dict[int, Result] = {k: rows.not_prepared(self.run_id, pc.config, m)
                                      for k, (pc, m) in enumerate(zip(group, made, strict=True)) if isinstance(m, str)}
        ready = [(k, m) for k, m in enumerate(made) if not isinstance(m, str)]
        try:
            ran = session.run_jobs(device, [job for _, job in ready], cooldown)
        except OSError as e:  # the session makes rows of device faults; this is the device failing outside them
            ran = [rows.device_gone(self.run_id, job.config, str(e)) for _, job in ready]
        results.update({k: r for (k, _), r in zip(ready, ran, strict=True)})
        return [results[k] for k in range(len(group))]

    def _source(self, name: str) -> SourceModel:
        if name not in self._sources:
            model = self.p.models[name]
            spec = next(m for m in self.p.suite.models if m.name == name)
            gguf = "gguf" in model.formats  # an LLM: its runner gets token ids, not input tensors
            self._sources[name] = SourceModel(name, model.path, model.sha256,
                                              () if gguf else tuple(zoo.onnx_inputs(model.path, spec.input_shapes)),
                                              zoo=model.source == "zoo" and not gguf,
                                              calibration=Path(spec.calibration) if spec.calibration else None,
                                              dataset=zoo.ZOO[name].dataset if model.source == "zoo" and not gguf
                                              else None)
        return self._sources[name]

    def _convert(self, engine: str, model: SourceModel, precision: str, backend: str) -> PreparedModel | str:
        key = (engine, model.sha256, precision, backend)
        if key not in self._converted:
            try:
                self._converted[key] = get_engine(engine).prepare_for(model, precision, backend,
                                                                      paths.data_dir() / "converted" / engine)
            except Exception as e:  # noqa: BLE001 - a converter failure is a failed row with its message
                self._converted[key] = f"conversion for {engine} ({precision}) failed: {type(e).__name__}: {e}"
        return self._converted[key]


def start_run(store: Store, suite: Suite, inventory: Inventory, argv: list[str],
              progress: Progress | None = None) -> tuple[str, list[Result]]:
    seed = suite.seed if suite.seed is not None else secrets.randbelow(2**31)
    prepared = prepare(suite, inventory, seed)
    try:
        run_id = new_run_id()
        # The run and its whole plan are stored before anything runs: `--resume` on any host re-plans from them.
        store.create_run(RunRecord(run_id, utc_now(), suite.to_dict(), seed,
                                   {**host_facts(), "devices": prepared.facts}, devicelab.__version__, git_state(),
                                   argv),
                         [PlannedRow(pc.config, pc.engine_options, pc.unsupported) for pc in prepared.planned])
        if progress:
            progress("run", run_id)
        Executor(store, run_id, prepared, progress).execute()
    finally:
        prepared.close()  # execute() closes them too; this covers a failure before it starts
    return run_id, store.results(run_id)


def resume_run(store: Store, run_id: str, inventory: Inventory, progress: Progress | None = None
               ) -> list[Result]:
    """Run what RUN_ID is missing (no row, or an infra-failed one). The plan is the run's stored one when it has one
    (any host with the same store and the planned engine versions and models can finish it); a run stored before
    plans were is re-planned from its stored suite and seed, as it was then."""
    record = store.get_run(run_id)
    suite = validate(record.suite, f"run {run_id}", inventory)
    done = store.done_keys(run_id)
    stored = [PlannedConfig(r.config, r.engine_options, r.unsupported) for r in store.planned(run_id)]
    prepared = prepare(suite, inventory, record.seed, stored or None, done)
    try:
        store.set_run_status(run_id, "running")
        # Read again: on a farm, other hosts may have finished configs while this one prepared.
        Executor(store, run_id, prepared, progress).execute(skip=store.done_keys(run_id))
    finally:
        prepared.close()  # execute() closes them too; this covers a failure before it starts
    return store.results(run_id)


def exit_code(results: list[Result]) -> int:
    """Contract v1: 1 when the run finished but some config failed (unsupported rows are not failures)."""
    return 1 if any(r.status in (FAILED, INFRA_FAILED) for r in results) else 0


__all__ = ["Prepared", "Executor", "validate", "prepare", "start_run", "resume_run", "exit_code", "DevicelabError"]
