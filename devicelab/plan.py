"""Planning (pure): a validated suite × device facts × engine capabilities × model files → configs.

Combinations that cannot run become rows with status `unsupported` and a reason, never errors. The
order of runnable configs is shuffled with a recorded seed so drift and heat favour nobody.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from devicelab.config import EngineSpec, Suite
from devicelab.facts import KINDS, DeviceFacts, parse_cpu_list
from devicelab.engines.base import EngineInfo
from devicelab.llm import LlmWorkload
from devicelab.result import Config
from devicelab.zoo import ModelFile


@dataclass(frozen=True)
class PlannedConfig:
    config: Config
    engine_options: dict[str, Any] = field(default_factory=dict)
    unsupported: str | None = None  # the reason, when the plan knows it cannot run

    @property
    def runnable(self) -> bool:
        return self.unsupported is None


def engine_version_on(facts: DeviceFacts, engine: str, info: EngineInfo | None) -> str:
    """The engine's version on a device: a device may run its own build of an engine (an iPhone's runner app), and
    then its facts name that build's version; else the version this host has (empty when it has none)."""
    return (facts.extra.get("engine_versions") or {}).get(engine) or (info.version if info else "") or ""


def affinity_set(facts: DeviceFacts, affinity: str) -> tuple[int, ...] | str:
    """The CPUs an affinity names on this device, or the reason it names none."""
    clusters = sorted(facts.clusters, key=lambda c: ((c.capacity or 0), (c.max_khz or 0)))
    if affinity == "all" or not clusters:
        return tuple(facts.cpu_ids)
    if affinity == "big":
        return tuple(sorted(clusters[-1].cpus))
    if affinity == "little":
        if len(clusters) < 2:
            return f"{facts.id} has no little cores (one cluster of {len(facts.cpu_ids)} CPUs)"
        return tuple(sorted(clusters[0].cpus))
    cpus = parse_cpu_list(affinity)
    missing = [c for c in cpus if c not in facts.cpu_ids]
    if missing:
        return f"CPU {','.join(map(str, missing))} does not exist on {facts.id} (CPUs {_span(facts.cpu_ids)})"
    return cpus


def _span(cpus: Sequence[int]) -> str:
    return f"{min(cpus)}-{max(cpus)}" if cpus else "none"


def resolve_cpus(facts: DeviceFacts, affinity: str, threads: int | str) -> tuple[int, tuple[int, ...]] | str:
    """(threads, pinned CPUs), or the reason the combination cannot run.

    Named affinities pin to exactly `threads` CPUs of the set, the highest-numbered ones: on phones the
    biggest cores, on hosts away from CPU 0 where the controller and most interrupts live. One thread per
    core keeps the scheduler from migrating work mid-benchmark. An explicit CPU list is used as given.
    """
    cpus = affinity_set(facts, affinity)
    if isinstance(cpus, str):
        return cpus
    n = len(cpus) if threads == "all" else int(threads)
    if n > len(cpus):
        return f"{n} threads > {len(cpus)} CPUs in affinity '{affinity}' on {facts.id}: it would oversubscribe"
    if affinity in ("big", "little", "all"):
        cpus = cpus[len(cpus) - n:]
    return n, cpus


# Formats devicelab writes from the zoo's graph itself (zoo_tflite, zoo_coreml), which a user's ONNX file never reaches.
_ZOO_WRITES = {"tflite": "TFLite", "coreml": "Core ML"}


def capability_reason(info: EngineInfo, kind: str, precision: str, backend: str,
                      model_formats: tuple[str, ...]) -> str | None:
    if not info.available:
        return f"{info.name} is not available: {info.reason}"
    if kind not in info.device_kinds:
        return f"{info.name} does not run on {kind} devices (runs on: {', '.join(info.device_kinds)})"
    # A backend that exists on other kinds only says so before anything this kind lacks (a build, a converter).
    if backend in info.only_on and kind not in info.only_on[backend][0]:
        return info.only_on[backend][1]
    if kind in info.kind_reasons:
        return info.kind_reasons[kind]
    if precision not in info.precisions:
        return info.unsupported.get(precision) or \
            f"{info.name} supports precisions {', '.join(info.precisions)}, not {precision}"
    if backend not in info.backends:
        return info.unsupported.get(backend) or \
            f"{info.name} supports backends {', '.join(info.backends)}, not {backend}"
    if f"{precision}/{backend}" in info.unsupported:
        return info.unsupported[f"{precision}/{backend}"]
    if backend in info.backend_reasons:
        return info.backend_reasons[backend]
    reads = info.backend_formats.get(backend, info.formats)
    if not set(reads) & set(model_formats):
        written = [name for fmt, name in _ZOO_WRITES.items() if fmt in reads]
        return (f"{info.name}{'' if reads == info.formats else ' ' + backend} reads {', '.join(reads)}; "
                f"this model is {', '.join(model_formats)}"
                + (f" (devicelab writes {' and '.join(written)} for zoo models only)" if written else ""))
    here = [f for f in set(reads) & set(model_formats) if f not in info.only_on or kind in info.only_on[f][0]]
    if not here:
        return info.only_on[sorted(set(reads) & set(model_formats))[0]][1]
    if kind == "host" and f"{precision}/{backend}" in info.probes:
        return f"{info.name} {precision} on {backend}: {info.probes[f'{precision}/{backend}']}"
    return None


def expand(suite: Suite, devices: Sequence[DeviceFacts], engines: Mapping[tuple[str, str], EngineInfo],
           models: Mapping[str, ModelFile], seed: int) -> list[PlannedConfig]:
    """Every config of the suite on every device (engines keyed by (name, label)); unsupported rows first,
    then the runnable ones in `suite.repeats` rounds, each round shuffled with the seed: labels and variants
    interleave, so drift and heat favour nobody, and every round holds one process of each config."""
    rows: dict[str, PlannedConfig] = {}
    for facts in devices:
        for spec in suite.engines:
            info = engines[(spec.name, spec.label)]
            for model_spec in suite.models:
                model = models[model_spec.name]
                # An LLM (a GGUF file) runs every request shape of the suite's `llm:`; other models run none.
                workloads: tuple[LlmWorkload | None, ...] = suite.llm if "gguf" in model.formats else (None,)
                for precision in suite.precisions:
                    for backend in suite.backends:
                        for affinity in suite.affinities:
                            for threads in suite.threads:
                                for workload in workloads:
                                    row = _row(facts, spec, info, model, precision, backend, affinity, threads,
                                               workload)
                                    rows.setdefault(row.config.identity_key(), row)
    unsupported = [r for r in rows.values() if not r.runnable]
    runnable = [r for r in rows.values() if r.runnable]
    rng = random.Random(seed)
    ordered: list[PlannedConfig] = []
    for repeat in range(suite.repeats):
        round_ = [dataclasses.replace(r, config=dataclasses.replace(r.config, repeat=repeat)) for r in runnable]
        rng.shuffle(round_)
        ordered.extend(round_)
    return unsupported + ordered


def unpinned_threads(facts: DeviceFacts, affinity: str, threads: int | str, why: str) -> tuple[int, tuple[()]] | str:
    """On a kind that cannot pin (an iPhone): `threads` run unpinned. "big" and "all" ask for no particular CPU, so
    they run (the row says pinning was not applied); "little" and CPU lists name CPUs: unsupported, with `why`."""
    if affinity not in ("big", "all"):
        return f"affinity {affinity!r} is unsupported on {facts.kind} devices: {why}"
    if threads == "all":
        if not facts.cpu_ids:
            return f"threads 'all' is unsupported on {facts.id}: it reports no CPU count (give a number)"
        return len(facts.cpu_ids), ()
    return int(threads), ()


def _row(facts: DeviceFacts, spec: EngineSpec, info: EngineInfo, model: ModelFile, precision: str,
         backend: str, affinity: str, threads: int | str, workload: LlmWorkload | None = None) -> PlannedConfig:
    spec_kind = KINDS.get(facts.kind)
    if spec_kind is not None and spec_kind.no_pinning:
        resolved = unpinned_threads(facts, affinity, threads, spec_kind.no_pinning)
    else:
        resolved = resolve_cpus(facts, affinity, threads)
    if isinstance(resolved, str):
        n, cpus, reason = (threads if isinstance(threads, int) else 0), (), resolved
    else:
        (n, cpus), reason = resolved, None
    reason = capability_reason(info, facts.kind, precision, backend, model.formats) or reason
    version = engine_version_on(facts, spec.name, info)
    config = Config(device=facts.id, engine=spec.name, label=spec.label, engine_version=version,
                    model=model.name, model_sha256=model.sha256, model_bytes=model.bytes, precision=precision,
                    backend=backend, threads=n, cpus=cpus, affinity=affinity,
                    workload=workload.key() if workload else "")
    return PlannedConfig(config, dict(spec.options), reason)
