"""Per-op profiles (`ext.profile`, version 1): the record a config's profiling pass leaves, built and checked here.

Not `devicelab.profiles`, which holds *device* profiles (battery calibrations). This package is pure (no engine and
no device is imported): the session hands it the ops an engine reported after timing, and it maps them onto the
shared vocabulary (vocab.py), sums them per type and sets them against the config's un-profiled median.

A profile (docs/results.md, "ext.profile"):
    {"version": 1, "engine_source": "...", "iterations": N, "ops": [{name, engine_type, type, s, node, fused,
     extra?}], "by_type": {type: s}, "total_s": s, "median_s": s, "wall_s": s, "overhead": x, "coverage": f,
     "op_sum_vs_median": x, "mapped": f, "node_link": "exact" | "best-effort" | "none", "notes": [...]}
or, when the engine cannot profile: {"version": 1, "unsupported": "the reason"}.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from devicelab.opprof.vocab import OTHER, SHARED_TYPES, classify, engine_family

VERSION = 1
NODE_LINKS = ("exact", "best-effort", "none")
DEFAULT_ITERATIONS = 20  # profiled iterations when the suite does not say (protocol.profile_iterations)

__all__ = ["DEFAULT_ITERATIONS", "NODE_LINKS", "OTHER", "SHARED_TYPES", "VERSION", "build", "classify",
           "engine_family", "problems", "unsupported", "valid"]


def unsupported(reason: str) -> dict[str, Any]:
    """The profile of a config whose engine cannot profile (the reason says why, in words a reader can act on)."""
    return {"version": VERSION, "unsupported": reason}


def build(ops: Iterable[Mapping[str, Any]], *, engine: str, engine_source: str, iterations: int,
          median_s: float | None, node_link: str, notes: Sequence[str] = (), wall_s: float | None = None
          ) -> dict[str, Any]:
    """The profile from an engine's ops. Each op: `name`, `engine_type` (or `type`, as runner `op` events say it),
    `s` (seconds per iteration), optional `node` (the model node), `fused` (model nodes attributed to it), `hint`
    (for the vocabulary: depthwise, original_type), `extra` (anything else worth keeping). `median_s`: the config's
    un-profiled median; `wall_s`: the profiled iterations' median wall time, as the pass measured it around each
    whole iteration.

    Three figures, each for one question: `overhead` = wall_s / median_s - 1 (how much slower an iteration runs with
    the profiler on: the profiling overhead); `coverage` = total_s / wall_s (how much of a profiled iteration the op
    times account for: kernel-only sums leave out the time between ops, per-op calls add to it); `op_sum_vs_median`
    = total_s / median_s - 1 (the op sum against the timed median: mixes both, kept for comparison). A figure whose
    inputs are missing is None, said in the notes."""
    family = engine_family(engine)
    out: list[dict[str, Any]] = []
    dropped = 0
    for op in ops:
        engine_type = str(op.get("engine_type", op.get("type", "")))
        s = float(op["s"])
        if not math.isfinite(s) or s < 0:
            dropped += 1  # an engine's timer glitch is not a time; the op is dropped (and counted) rather than
            continue      # poison the sums
        entry: dict[str, Any] = {"name": str(op.get("name", "")), "engine_type": engine_type,
                                 "type": classify(family, engine_type, op.get("hint")), "s": s,
                                 "node": op.get("node"), "fused": [str(n) for n in op.get("fused") or ()]}
        if op.get("extra"):
            entry["extra"] = dict(op["extra"])
        out.append(entry)
    by_type: dict[str, float] = {}
    for entry in out:
        by_type[entry["type"]] = by_type.get(entry["type"], 0.0) + entry["s"]
    total = sum(by_type.values())
    profile: dict[str, Any] = {
        "version": VERSION, "engine_source": engine_source, "iterations": int(iterations), "ops": out,
        "by_type": dict(sorted(by_type.items(), key=lambda kv: -kv[1])), "total_s": total,
        "median_s": median_s, "wall_s": wall_s,
        "overhead": (wall_s / median_s - 1) if median_s and wall_s else None,
        "coverage": (total / wall_s) if wall_s and total else None,
        "op_sum_vs_median": (total / median_s - 1) if median_s and total else None,
        "mapped": (1.0 - by_type.get(OTHER, 0.0) / total) if total else None,
        "node_link": node_link, "notes": list(notes)}
    if dropped:
        profile["notes"].append(f"{dropped} op time(s) dropped: not a finite, non-negative number of seconds")
    if median_s is None:
        profile["notes"].append("no un-profiled median to set the op times against: overhead not given")
    if wall_s is None:
        profile["notes"].append("the profiling pass did not report its wall time per iteration: overhead and "
                                "coverage not given")
    return profile


def problems(p: Any) -> list[str]:
    """What is wrong with a stored profile (empty: valid)."""
    if not isinstance(p, dict):
        return ["must be a mapping"]
    if p.get("version") != VERSION:
        return [f"version: {p.get('version')!r}; this devicelab reads version {VERSION}"]
    if "unsupported" in p:
        extra = set(p) - {"version", "unsupported"}
        bad = [] if isinstance(p["unsupported"], str) and p["unsupported"] else ["unsupported: must be a reason"]
        return bad + ([f"{', '.join(sorted(extra))}: not allowed beside 'unsupported'"] if extra else [])
    out: list[str] = []
    need = ("engine_source", "iterations", "ops", "by_type", "total_s", "median_s", "overhead", "mapped",
            "node_link", "notes")
    out.extend(f"{k}: missing" for k in need if k not in p)
    if out:
        return out
    if not isinstance(p["engine_source"], str) or not p["engine_source"]:
        out.append("engine_source: must be text")
    if not (_int(p["iterations"]) and p["iterations"] >= 1):
        out.append("iterations: must be a positive integer")
    if p["node_link"] not in NODE_LINKS:
        out.append(f"node_link: {p['node_link']!r}; allowed: {', '.join(NODE_LINKS)}")
    if not (isinstance(p["notes"], list) and all(isinstance(n, str) for n in p["notes"])):
        out.append("notes: must be a list of text")
    for key in ("total_s",):
        if not (_num(p[key]) and p[key] >= 0):
            out.append(f"{key}: must be a non-negative number of seconds")
    for key in ("median_s", "overhead", "mapped", "wall_s", "coverage", "op_sum_vs_median"):
        if p.get(key) is not None and not _num(p[key]):  # wall_s, coverage, op_sum_vs_median: newer profiles only
            out.append(f"{key}: must be a number or null")
    if _num(p["mapped"]) and not -1e-9 <= p["mapped"] <= 1 + 1e-9:
        out.append("mapped: must be a fraction between 0 and 1")
    if not isinstance(p["by_type"], dict) or any(k not in SHARED_TYPES or not _num(v) for k, v in p["by_type"].items()):
        out.append(f"by_type: must map shared types ({', '.join(SHARED_TYPES)}) to seconds")
    if not isinstance(p["ops"], list):
        return out + ["ops: must be a list"]
    for i, op in enumerate(p["ops"]):
        where = f"ops[{i}]"
        if not isinstance(op, dict):
            out.append(f"{where}: must be a mapping")
            continue
        if op.get("type") not in SHARED_TYPES:
            out.append(f"{where}.type: {op.get('type')!r}; allowed: {', '.join(SHARED_TYPES)}")
        if not (_num(op.get("s")) and op["s"] >= 0):
            out.append(f"{where}.s: must be a non-negative number of seconds")
        if not isinstance(op.get("name"), str) or not isinstance(op.get("engine_type"), str):
            out.append(f"{where}: name and engine_type must be text")
        if op.get("node") is not None and not isinstance(op["node"], str):
            out.append(f"{where}.node: must be text or null")
        if not (isinstance(op.get("fused"), list) and all(isinstance(n, str) for n in op["fused"])):
            out.append(f"{where}.fused: must be a list of model node names")
        if len(out) > 20:
            break
    return out


def valid(p: Any) -> bool:
    """For result.EXTENSIONS: a profile this devicelab can read."""
    return not problems(p)


def _num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)
