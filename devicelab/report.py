"""The review report: one self-contained HTML file (inline CSS, SVG charts drawn here, one small inline script
for downloads; no network, no server), autoescaped everywhere.

Sections follow the slides: engines (engine rows × 1 thread, N threads, peak memory), precision (float vs
int8/fp16/bf16 with speed-up and drift), backends (GPU vs CPU on one device), charts (thread scaling,
latency distributions, the latency / drift / memory trade-off with the best configurations ringed), the model
variants scorecard (with the compression contest's weighting), device facts and state, and every row with
its status and reason. Every sample is inside, compressed, downloadable as CSV or JSON.
"""

from __future__ import annotations

import base64
import hashlib
import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

import devicelab
from devicelab import charts, report_llm
from devicelab.analysis.accuracy import label_text, top1, top1_text
from devicelab.analysis.tables import config_median, format_bytes, slides_tables
from devicelab.result import OK, PRECISIONS, Result
from devicelab.store import RunRecord

_PRECISION_ORDER = {p: i for i, p in enumerate(PRECISIONS)}


def _ms(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1e3:.2f} ms"


# --------------------------------------------------------------------------------------------------
# Scorecard (pure)


def accuracy_gate(agreement: float | None) -> float | None:
    """The compression contest's A: 1 if agreement ≥ 0.97, 0.9 if ≥ 0.965, else 0; None (no score) without a
    measure that means something (gate_measure)."""
    if agreement is None:
        return None
    return 1.0 if agreement >= 0.97 else 0.9 if agreement >= 0.965 else 0.0


def size_gate(size_mb: float) -> float:
    """The compression contest's B: 1 if s ≤ 40 MB, 0.9 if ≤ 50 MB, 0.8 if ≤ 63 MB, else 0."""
    return 1.0 if size_mb <= 40 else 0.9 if size_mb <= 50 else 0.8 if size_mb <= 63 else 0.0


def contest_score(t: float, t0: float, s_mb: float, s0_mb: float, agreement: float | None) -> float | None:
    """score = (T0 − t)/T0 × 20 + (S0 − s)/s × 80, times the accuracy gate A and the size gate B; None when gate A
    has nothing to read."""
    gate = accuracy_gate(agreement)
    if gate is None:
        return None
    return ((t0 - t) / t0 * 20 + (s0_mb - s_mb) / s_mb * 80) * gate * size_gate(s_mb)


def gate_measure(variant: dict[str, Any] | None, fp32: dict[str, Any] | None) -> tuple[float | None, str]:
    """What gate A reads for a variant (accuracy dicts of the variant and of the same engine's fp32 row), and how
    the scorecard names it.

    Where the model has labels, the variant's accuracy on the data set's test split relative to the fp32 variant's
    (the contest asks how much accuracy compression keeps); else the top-1 agreement with the fp32 reference over the
    inputs whose fp32 margin exceeds the variant's error (accuracy.agreement); else None: on inputs where every
    decision is a near tie, top-1 agreement is noise, and no score is better than a noise score."""
    if variant and variant.get("label_accuracy") is not None:
        base = (fp32 or {}).get("label_accuracy")
        if base is None:
            base = variant.get("reference_label_accuracy")  # the ONNX Runtime fp32 reference on the same split
        if base:
            ratio = float(variant["label_accuracy"]) / float(base)
            return ratio, f"accuracy {variant['label_accuracy']:.1%} / fp32 {base:.1%} = {ratio:.3f}"
    t = top1(variant)
    if t is not None and t[0] is not None:
        return t[0], f"top-1 {top1_text(variant)}"
    return None, "no measure: " + ("top-1 " + top1_text(variant) if t is not None else "no margin-qualified top-1")


# --------------------------------------------------------------------------------------------------
# Building the page's data


@dataclass
class ReportData:
    runs: list[dict[str, Any]]
    results: list[Result]
    several_runs: bool
    warnings: list[str] = field(default_factory=list)
    engines: list[Any] = field(default_factory=list)
    precision: list[dict[str, Any]] = field(default_factory=list)
    backends: list[dict[str, Any]] = field(default_factory=list)
    charts: list[dict[str, str]] = field(default_factory=list)
    scorecards: list[dict[str, Any]] = field(default_factory=list)
    devices: list[dict[str, Any]] = field(default_factory=list)
    profiles: list[dict[str, Any]] = field(default_factory=list)
    details: list[dict[str, Any]] = field(default_factory=list)
    llm: list[dict[str, Any]] = field(default_factory=list)  # report_llm.llm_tables
    llm_charts: list[dict[str, str]] = field(default_factory=list)  # report_llm.depth_charts


def _run_tag(r: Result, several: bool) -> str:
    return f" · {r.run_id}" if several else ""


def _variant(r: Result, several: bool, with_precision: bool = True) -> str:
    name = r.engine + (f" [{r.label}]" if r.label else "")
    if with_precision:
        name += f" {r.precision}"
    if r.backend != "cpu":
        name += f" {r.backend}"
    return name + _run_tag(r, several)


def _ok(results: Sequence[Result]) -> list[Result]:
    """Rows with a latency to show: samples, or the median a summary-only tool printed."""
    return [r for r in results if r.status == OK and (r.samples_s or r.median_s is not None)]


def _groups(results: Sequence[Result]) -> dict[tuple[str, str], list[Result]]:
    out: dict[tuple[str, str], list[Result]] = {}
    for r in results:
        out.setdefault((r.device, r.model), []).append(r)
    return dict(sorted(out.items()))


def _configs(rs: Sequence[Result], key: Any) -> dict[Any, list[Result]]:
    """Results grouped by `key` (a config's processes together), in first-seen order."""
    out: dict[Any, list[Result]] = {}
    for r in rs:
        out.setdefault(key(r), []).append(r)
    return out


def _artifact_mb(r: Result) -> float | None:
    b = r.protocol.artifact_bytes if r.protocol else None
    return b / 1e6 if b else None


def precision_tables(results: Sequence[Result], several: bool) -> list[dict[str, Any]]:
    """Per device, model and engine: precision rows with latency per thread count, speed-up and drift."""
    out = []
    for (device, model), rs in _groups(_ok(results)).items():
        by_engine: dict[str, list[Result]] = {}
        for r in rs:
            by_engine.setdefault(f"{r.engine}{' [' + r.label + ']' if r.label else ''} {r.backend}{_run_tag(r, several)}",
                                 []).append(r)
        for engine, ers in sorted(by_engine.items()):
            if len({r.precision for r in ers}) < 2:
                continue
            threads = sorted({r.threads for r in ers})
            base = {t: config_median([r for r in ers if r.precision == "fp32" and r.threads == t]) for t in threads}
            rows = []
            for p in sorted({r.precision for r in ers}, key=lambda p: _PRECISION_ORDER.get(p, 9)):
                prs = [r for r in ers if r.precision == p]
                cells = []
                for t in threads:
                    m = config_median([r for r in prs if r.threads == t])
                    speed = base[t] / m if (m and base[t]) else None
                    cells.append({"median": _ms(m), "speedup": f"{speed:.2f}×" if speed and p != "fp32" else ""})
                acc = min((r.accuracy for r in prs if r.accuracy), key=lambda a: a["cosine"], default=None)
                mb = _artifact_mb(prs[0])
                rows.append({"precision": p, "cells": cells, "accuracy": acc, "size": f"{mb:.1f} MB" if mb else "—",
                             "notes": sorted({n for r in prs for n in r.notes if "precision" in n or "arithmetic" in n
                                              or "int8" in n or "float16" in n})})
            out.append({"device": device, "model": model, "engine": engine, "threads": threads, "rows": rows,
                        "labels": any(row["accuracy"] and row["accuracy"].get("label_accuracy") is not None
                                      for row in rows)})
    return out


def _gpu_tag(r: Result) -> str:
    """The device a GPU row ran on; a software rasterizer is named as such (its timings are CPU timings)."""
    gpu = r.ext.get("gpu_device")
    if not gpu:
        return ""
    return f" ({'software: ' if gpu.get('software') else ''}{gpu.get('name')})"


# What each backend runs on, for the Backends table (Core ML's backends are its MLComputeUnits: the units it may use).
BACKEND_TEXT = {
    "cpu": "CPU", "gpu": "GPU", "opencl": "GPU (OpenCL)", "vulkan": "GPU (Vulkan)", "metal": "GPU (Metal)",
    "nnapi": "NNAPI (Android chooses the unit)", "coreml": "Core ML, all units (Core ML chooses)",
    "coreml-cpu": "Core ML, CPU only", "coreml-gpu": "Core ML, CPU and GPU",
    "coreml-ane": "Core ML, CPU and Neural Engine",
}


def backend_tables(results: Sequence[Result], several: bool) -> list[dict[str, Any]]:
    """GPU, Core ML (or other non-CPU) backends next to the CPU engines on the same device, when any ran: the other
    backends first, then the CPU rows, each with what it ran on."""
    ok = _ok(results)
    if not any(r.backend != "cpu" for r in ok):
        return []
    out = []
    for (device, model), rs in _groups(ok).items():
        if not any(r.backend != "cpu" for r in rs):
            continue
        threads = sorted({r.threads for r in rs})
        rows: dict[str, dict[int, str]] = {}
        runs_on: dict[str, str] = {}
        ordered = sorted(rs, key=lambda r: (r.backend == "cpu", r.engine, r.backend))
        for (name, t), processes in _configs(ordered, lambda r: (_variant(r, several) + _gpu_tag(r), r.threads)).items():
            rows.setdefault(name, {})[t] = _ms(config_median(processes))
            runs_on[name] = BACKEND_TEXT.get(processes[0].backend, processes[0].backend)
        out.append({"device": device, "model": model, "threads": threads,
                    "coreml": any(r.backend.startswith("coreml") for r in rs),
                    "rows": [{"name": k, "runs_on": runs_on[k], "cells": [v.get(t, "—") for t in threads]}
                             for k, v in rows.items()]})
    return out


def _box_stats(samples: Sequence[float]) -> dict[str, float]:
    a = np.asarray(samples) * 1e3
    q = np.percentile(a, [5, 25, 50, 75, 95])
    return {"min": float(a.min()), "p5": q[0], "p25": q[1], "median": q[2], "p75": q[3], "p95": q[4],
            "max": float(a.max()), "n": len(a)}


def pareto(points: Sequence[Sequence[float]]) -> list[bool]:
    """True where no other point is at least as good on every axis (lower is better) and better on one."""
    best = []
    for i, p in enumerate(points):
        dominated = any(all(a <= b for a, b in zip(q, p)) and any(a < b for a, b in zip(q, p))
                        for j, q in enumerate(points) if j != i)
        best.append(not dominated)
    return best


def chart_sections(results: Sequence[Result], several: bool) -> list[dict[str, str]]:
    ok = _ok(results)
    out: list[dict[str, str]] = []
    for (device, model), rs in _groups(ok).items():
        series: dict[str, list[tuple[float, float]]] = {}
        for (name, t), processes in _configs(rs, lambda r: (_variant(r, several), r.threads)).items():
            series.setdefault(name, []).append((t, (config_median(processes) or 0) * 1e3))
        if any(len(v) > 1 for v in series.values()):
            out.append({"kind": "threads", "title": f"{model} on {device}",
                        "svg": charts.line_chart(f"Thread scaling: {model} on {device}", series, "threads",
                                                 "median latency (ms)")})
        boxes = [(f"{_variant(r, several)} {r.threads}t" + (f" #{r.repeat}" if r.repeat else ""), _box_stats(r.samples_s))
                 for r in sorted(rs, key=lambda r: (r.engine, _PRECISION_ORDER.get(r.precision, 9), r.threads, r.repeat))
                 if r.samples_s]  # a distribution needs samples
        out.append({"kind": "distribution", "title": f"{model} on {device}",
                    "svg": charts.box_chart(f"Latency distributions: {model} on {device}", boxes)})
    by_device: dict[str, list[Result]] = {}
    for r in ok:
        if r.accuracy:
            by_device.setdefault(r.device, []).append(r)
    for device, rs in sorted(by_device.items()):
        for model in sorted({r.model for r in rs}):
            # One point per config: its processes' median of medians, least agreeing accuracy, highest peak memory.
            configs = _configs([r for r in rs if r.model == model], lambda r: (_variant(r, several), r.threads))
            pts = [(ps[0], config_median(ps), min((x.accuracy for x in ps if x.accuracy), key=lambda a: a["cosine"]),
                    max((x.peak_rss_bytes or 0 for x in ps), default=0) or None) for ps in configs.values()]
            # Best: nothing else is both faster and closer to the fp32 outputs (memory is the point's size and
            # breaks exact ties); a 3-axis front rings almost everything and tells a reviewer nothing.
            best = pareto([((m or 0), max(1 - acc["cosine"], 1e-8), float(peak or 0) / 1e12) for _, m, acc, peak in pts])
            points = [{"x": (m or 0) * 1e3, "y": 1 - acc["cosine"], "size": peak or 0,
                       "group": _variant(r, several, with_precision=False).split(" · ")[0], "best": b,
                       "label": f"{_variant(r, several)} {r.threads}t: {_ms(m)}, 1−cos "
                                f"{1 - acc['cosine']:.1e}, {format_bytes(peak)}"}
                      for (r, m, acc, peak), b in zip(pts, best)]
            out.append({"kind": "tradeoff", "title": f"{model} on {device}",
                        "svg": charts.scatter_chart(f"Latency / drift / memory: {model} on {device}",
                                                    points, "median latency (ms)", "1 − cosine vs fp32 reference"),
                        "best": ", ".join(p["label"].split(":")[0] for p in points if p["best"])})
    return out


WEIGHTINGS = {
    "contest": "compression contest: (T0−t)/T0×20 + (S0−s)/s×80, × accuracy gate A × size gate B",
    "latency": "latency only: speed-up over fp32",
    "size": "size only: fp32 size / variant size",
}


def _score_key(weighting: str) -> str:
    return "contest" if weighting == "contest" else f"{weighting}_score"


def drift_text(acc: dict[str, Any] | None) -> str:
    """The drift cell of the scorecard and the result tables: label accuracy (where there are labels), margin-qualified
    top-1, cosine."""
    if not acc:
        return "—"
    labels = f"acc {label_text(acc)} · " if acc.get("label_accuracy") is not None else ""
    return f"{labels}top-1 {top1_text(acc)} · cos {acc['cosine']:.4f}"


def scorecards(results: Sequence[Result], several: bool) -> list[dict[str, Any]]:
    """Model variants (engine × precision) against the same engine's fp32 at the same threads."""
    out = []
    for (device, model), rs in _groups(_ok(results)).items():
        rows = []
        configs = _configs(rs, lambda r: (r.engine, r.label, r.precision, r.backend, r.threads, r.run_id))
        for (engine, label, precision, backend, threads, run_id), processes in configs.items():
            if precision == "fp32":
                continue
            ref = configs.get((engine, label, "fp32", backend, threads, run_id), [])
            r = processes[0]
            s, s0 = _artifact_mb(r), (_artifact_mb(ref[0]) if ref else None)
            t, t0 = config_median(processes), config_median(ref)
            if not ref or not s or not s0 or not t or not t0:
                continue
            # A config run in several processes is one row; its drift is its worst process's (lowest cosine).
            accuracy = min((x.accuracy for x in processes if x.accuracy), key=lambda a: a["cosine"], default=None)
            ref_accuracy = min((x.accuracy for x in ref if x.accuracy), key=lambda a: a["cosine"], default=None)
            measure, basis = gate_measure(accuracy, ref_accuracy)
            gate = accuracy_gate(measure)
            rows.append({"name": f"{_variant(r, several)} {r.threads}t", "size": f"{s:.1f}", "size0": f"{s0:.1f}",
                         "latency": _ms(t), "latency0": _ms(t0), "drift": drift_text(accuracy),
                         "gates": f"A {'—' if gate is None else f'{gate:g}'} ({basis}) · B {size_gate(s):g}",
                         "contest": contest_score(t, t0, s, s0, measure), "latency_score": t0 / t,
                         "size_score": s0 / s})
        if rows:
            # Rows without a contest score ("—") go last.
            sorted_by = {k: sorted(rows, key=lambda row, k=k: (row[_score_key(k)] is None, -(row[_score_key(k)] or 0)))
                         for k in WEIGHTINGS}
            out.append({"device": device, "model": model, "by": sorted_by})
    return out


def _max_temp(state: dict[str, Any] | None) -> float | None:
    temps = (state or {}).get("temperatures_c") or {}
    return max(temps.values()) if temps else None


def state_warnings(results: Sequence[Result]) -> list[str]:
    """Visible when results compared side by side were taken in different device states."""
    out = []
    for (device, model), rs in _groups(_ok(results)).items():
        temps = [t for t in (_max_temp(r.state_before) for r in rs) if t is not None]
        if temps and max(temps) - min(temps) > 5:
            out.append(f"{model} on {device}: results started at temperatures from {min(temps):.0f} to {max(temps):.0f} °C")
        if len({bool(r.throttled) for r in rs}) > 1:
            out.append(f"{model} on {device}: some results were throttled, others not")
        charging = {(r.state_before or {}).get("charging") for r in rs}
        if len(charging) > 1:
            out.append(f"{model} on {device}: charging state differs between results")
        loads = [(r.state_before or {}).get("loadavg", [0])[0] for r in rs]
        if loads and max(loads) - min(loads) > 1.0:
            out.append(f"{model} on {device}: the 1-minute load average ranged {min(loads):.1f}–{max(loads):.1f} "
                       "(something else was running for some results)")
    return out


def device_facts(runs: Sequence[RunRecord]) -> list[dict[str, Any]]:
    facts: dict[str, dict[str, Any]] = {}
    for run in runs:
        for dev_id, f in (run.host.get("devices") or {}).items():
            facts[f"{dev_id}{' · ' + run.run_id if len(runs) > 1 else ''}"] = f
    return [{"id": k, **v} for k, v in facts.items()]


def _pct(x: Any, signed: bool = False) -> str:
    if not isinstance(x, (int, float)):
        return "—"
    return f"{x * 100:+.1f} %" if signed else f"{x * 100:.1f} %"


def profile_sections(results: Sequence[Result], several: bool) -> list[dict[str, Any]]:
    """Per device and model with profiled configs: a stacked bar per config by op type (engines side by side,
    precisions side by side), each config's profile totals with its profiling overhead (or why it has none), and the
    op-type diff between fp32 and each other precision of the same engine (devicelab.opprof.diff)."""
    from devicelab.opprof import diff

    out = []
    for (device, model), rs in _groups([r for r in results if r.status == OK and diff.profile_of(r)]).items():
        rs = sorted(rs, key=lambda r: (r.engine, r.label, r.backend, r.threads, _PRECISION_ORDER.get(r.precision, 9),
                                       r.repeat, r.run_id))
        usable = [r for r in rs if diff.usable(diff.profile_of(r))]
        totals: dict[str, float] = {}
        for r in usable:
            for t, v in (diff.profile_of(r) or {}).get("by_type", {}).items():
                totals[t] = totals.get(t, 0.0) + float(v)
        kinds = sorted(totals, key=lambda t: -totals[t])
        name = {id(r): f"{_variant(r, several)} {r.threads}t" + (f" #{r.repeat}" if r.repeat else "") for r in rs}
        bars = [(name[id(r)], {t: float(v) * 1e3 for t, v in (diff.profile_of(r) or {})["by_type"].items()})
                for r in usable]
        rows = []
        for r in rs:
            sm = diff.summary(r)
            p = sm["profile"]
            rows.append({"name": name[id(r)], "why": sm.get("why"), "source": p and p["engine_source"],
                         "iterations": p and p["iterations"], "total": _ms(p and p["total_s"]),
                         "median": _ms(p and p["median_s"]), "wall": _ms(p and p["wall_s"]),
                         "overhead": _pct(p and p["overhead"], signed=True), "coverage": _pct(p and p["coverage"]),
                         "op_sum": _pct(p and p["op_sum_vs_median"], signed=True),
                         "mapped": _pct(p and p["mapped"]), "node_link": p and p["node_link"],
                         "notes": p["notes"] if p else []})
        diffs = []
        for a, b in diff.precision_pairs(rs):
            d = diff.diff(a, b)
            diffs.append({"a": name[id(a)], "b": name[id(b)], "sentence": d["sentence"],
                          "total_a": _ms(d["total_a_s"]), "total_b": _ms(d["total_b_s"]),
                          "rows": [{"type": x["type"], "a": _ms(x["a_s"]) if x["a_s"] else "—",
                                    "b": _ms(x["b_s"]) if x["b_s"] else "—",
                                    "ratio": f"{x['ratio']:.2f}×" if x["ratio"] else "new"} for x in d["rows"]]})
        out.append({"device": device, "model": model, "rows": rows, "diffs": diffs,
                    "svg": charts.stacked_bar_chart(f"Time by op type: {model} on {device}", bars, kinds)})
    return out


def config_details(results: Sequence[Result], several: bool) -> list[dict[str, Any]]:
    """Each config's detail: its timeline chart (ext.timeline: latency, frequencies and temperatures over time,
    warmup and batch marks) and, when profiled, its top nodes."""
    from devicelab.opprof import diff

    out = []
    for i, r in enumerate(results):
        tl = r.ext.get("timeline")
        p = diff.profile_of(r)
        if r.status != OK or (tl is None and not diff.usable(p)):
            continue
        title = f"{_variant(r, several)} {r.threads}t" + (f" #{r.repeat}" if r.repeat else "") + \
            f" · {r.model} on {r.device}"
        svg, missing = "", []
        if tl is not None:
            t_s = list(r.ext.get("iter_t_s") or [])
            svg = charts.timeline_chart(f"Timeline: {title}", t_s, [s * 1e3 for s in r.samples_s], tl["marks"],
                                        tl.get("freq_khz"), tl.get("temp_c"))
            missing = list(tl.get("unavailable") or [])
        top = []
        if diff.usable(p):
            assert p is not None
            top = [{"name": n["name"], "engine_type": n["engine_type"], "type": n["type"], "node": n["node"],
                    "time": _ms(n["s"]), "share": _pct(n["share"]), "fused": "+".join(map(str, n["fused"]))}
                   for n in diff.top_nodes(p)]
        out.append({"id": f"config-{i}", "title": title, "svg": svg, "unavailable": missing, "top": top,
                    "overhead": _pct(p.get("overhead"), signed=True) if diff.usable(p) and p else None})
    return out


def build(runs: Sequence[RunRecord], results: Sequence[Result]) -> ReportData:
    several = len(runs) > 1
    data = ReportData([r.to_dict() for r in runs], list(results), several)
    # LLM rows have their own section: a sample of theirs is a request's decode time per token, not a latency.
    data.llm, data.llm_charts = report_llm.llm_tables(results, several), report_llm.depth_charts(results, several)
    results = [r for r in results if not report_llm.is_llm(r)]
    fp32 = [r for r in results if r.precision == "fp32" and r.backend == "cpu"]
    # The same config from two runs is kept apart in the engines tables (its rows name their run).
    data.engines = slides_tables(fp32 if fp32 else list(results), by_run=several)
    data.precision = precision_tables(results, several)
    data.backends = backend_tables(results, several)
    data.charts = chart_sections(results, several)
    data.scorecards = scorecards(results, several)
    data.warnings = state_warnings(results)
    data.devices = device_facts(runs)
    data.profiles = profile_sections(results, several)
    data.details = config_details(results, several)
    return data


# --------------------------------------------------------------------------------------------------
# Raw data for downloads


def raw_payload(results: Sequence[Result]) -> tuple[str, str]:
    """(metadata JSON, base64 of the deflated float32 samples). Float32 keeps 7 significant digits: ~1 ns at
    10 ms; `devicelab export` gives the stored float64 values."""
    meta, arrays, offset = [], [], 0
    keep = ("run_id", "device", "engine", "label", "engine_version", "model", "model_sha256", "precision", "backend",
            "threads", "cpus", "repeat", "status", "reason", "median_s", "p90_s", "load_s", "first_s",
            "rss_before_load_bytes", "peak_rss_bytes", "warmups", "accuracy", "started_at", "finished_at")
    for r in results:
        d = {k: getattr(r, k) for k in keep}
        d["cpus"] = list(r.cpus)
        d["samples"] = [offset, len(r.samples_s)]
        offset += len(r.samples_s)
        arrays.append(np.asarray(r.samples_s, dtype=np.float32))
        meta.append(d)
    values = np.concatenate(arrays) if arrays else np.zeros(0, np.float32)
    # Byte-shuffled (all first bytes, then all second bytes...): exponents and high mantissa bytes repeat,
    # so deflate shrinks 1 M samples to ~2.6 MB instead of ~3.2 MB. The page's script un-shuffles.
    shuffled = values.view(np.uint8).reshape(-1, 4).T.copy().tobytes()
    blob = base64.b64encode(zlib.compress(shuffled, 6)).decode()
    # "<" escaped so no value (a hostile model name) can close the data block's <script> element.
    text = json.dumps(meta, separators=(",", ":")).replace("<", "\\u003c").replace(">", "\\u003e")
    return text, blob


# --------------------------------------------------------------------------------------------------
# Rendering


def render(runs: Sequence[RunRecord], results: Sequence[Result]) -> str:
    assets = resources.files("devicelab.reports")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined,
                             loader=jinja2.FunctionLoader(lambda name: assets.joinpath(name).read_text()))
    script = assets.joinpath("report.js").read_text()
    csp_hash = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    meta, blob = raw_payload(results)
    data = build(runs, results)
    return env.get_template("report.html.j2").render(
        d=data, runs=data.runs, results=results, css=assets.joinpath("report.css").read_text(), script=script,
        csp_hash=csp_hash, raw_meta=jinja2.utils.markupsafe.Markup(meta), raw_blob=blob, ms=_ms,
        format_bytes=format_bytes, weightings=WEIGHTINGS, version=devicelab.__version__, top1_text=top1_text,
        label_text=label_text,
        sample_count=sum(len(r.samples_s) for r in results),
        svg=lambda s: jinja2.utils.markupsafe.Markup(s))  # charts escape their own text (charts.esc)


def write(path: Path, runs: Sequence[RunRecord], results: Sequence[Result]) -> Path:
    from devicelab.paths import write_atomic

    write_atomic(path, render(runs, results).encode())  # a reader never sees half a report
    return path
