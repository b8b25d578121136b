"""What the per-op profiles (`ext.profile`, docs/results.md) say, for the report, `devicelab profile` and export:
per op type, two configs side by side (time A, time B, ratio, in words: "int8 made Conv 2.3× faster but added
Quantize 0.4 ms"), a config's top nodes, and its totals with the profiling overhead.

Pure: Results or profile mappings in, plain data out. A profile's times are seconds per iteration.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from devicelab.result import OK, Result

TOP_N = 10
# Two op-type times within this ratio of each other are "about the same" in the sentence (the table keeps the number).
SAME_WITHIN = 0.05
# Op types under this share of both configs' totals are left out of the sentence (never out of the table).
SENTENCE_SHARE = 0.02


def config_name(r: Result) -> str:
    """How `devicelab profile --config` and the report name one config of a run: engine (with its label when it is
    not the engine's name), model, precision, backend, threads, and the repeat when it is not the first."""
    engine = r.engine if r.label in ("", r.engine) else f"{r.engine}:{r.label}"
    name = f"{engine}/{r.model}/{r.precision}/{r.backend}/{r.threads}t"
    return name if not r.repeat else f"{name}#{r.repeat}"


def config_names(results: Sequence[Result]) -> dict[str, Result]:
    """Each config of `results` by a name of its own: config_name, with the run first when the results span several
    runs, the device first when they span several devices, and the pinned CPUs last when two configs differ only in
    them (an affinity sweep). Raises ValueError when two configs would still share a name (never one picked
    silently)."""
    runs = len({r.run_id for r in results}) > 1
    devices = len({r.device for r in results}) > 1

    def name(r: Result, cpus: bool) -> str:
        n = config_name(r)
        n = f"{r.device}/{n}" if devices else n
        n = f"{r.run_id}/{n}" if runs else n
        return f"{n}@cpus{','.join(map(str, r.cpus))}" if cpus else n

    plain = [name(r, False) for r in results]
    clash = {n for n in plain if plain.count(n) > 1}
    out: dict[str, Result] = {}
    for r, n in zip(results, plain):
        n = name(r, True) if n in clash else n
        if n in out:
            raise ValueError(f"two configs are both named {n}: they differ in nothing a name shows")
        out[n] = r
    return out


def profile_of(r: Result) -> dict[str, Any] | None:
    """The row's profile, or None when the run did not profile it."""
    p = r.ext.get("profile")
    return p if isinstance(p, dict) else None


def usable(p: Mapping[str, Any] | None) -> bool:
    return p is not None and not p.get("unsupported") and isinstance(p.get("by_type"), Mapping)


@dataclass(frozen=True)
class TypeRow:
    """One op type in two configs: seconds per iteration (0 when the config has no op of that type)."""

    type: str
    a_s: float
    b_s: float

    @property
    def delta_s(self) -> float:
        return self.b_s - self.a_s

    @property
    def ratio(self) -> float | None:
        """B / A; None when A has no such op."""
        return self.b_s / self.a_s if self.a_s > 0 else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "delta_s": self.delta_s, "ratio": self.ratio}


def type_rows(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[TypeRow]:
    """Per op type, A's and B's time, the largest change first (every type either has)."""
    ta, tb = a.get("by_type") or {}, b.get("by_type") or {}
    rows = [TypeRow(t, float(ta.get(t) or 0.0), float(tb.get(t) or 0.0)) for t in {*ta, *tb}]
    rows = [r for r in rows if r.a_s > 0 or r.b_s > 0]
    return sorted(rows, key=lambda r: (-abs(r.delta_s), r.type))


def _ms(s: float) -> str:
    return f"{s * 1e3:.3g} ms"


def sentence(rows: Sequence[TypeRow], name_b: str) -> str:
    """The table in words, from B's side: what got faster or slower and what B added or dropped, the biggest
    changes first; op types below SENTENCE_SHARE of both totals are left out."""
    total_a, total_b = sum(r.a_s for r in rows), sum(r.b_s for r in rows)
    parts: list[str] = []
    for r in rows:
        if r.a_s < SENTENCE_SHARE * total_a and r.b_s < SENTENCE_SHARE * total_b:
            continue
        if r.a_s == 0:
            parts.append(f"added {r.type} {_ms(r.b_s)}")
        elif r.b_s == 0:
            parts.append(f"dropped {r.type} ({_ms(r.a_s)})")
        elif r.b_s < r.a_s * (1 - SAME_WITHIN):
            parts.append(f"made {r.type} {_times(r.a_s / r.b_s)} faster")
        elif r.b_s > r.a_s * (1 + SAME_WITHIN):
            parts.append(f"made {r.type} {_times(r.b_s / r.a_s)} slower")
        if len(parts) == 4:
            break
    if not parts:
        return f"{name_b}: no op type changed by more than {SAME_WITHIN:.0%}"
    return f"{name_b} " + ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + parts[-1]


def _times(x: float) -> str:
    """A factor as a reader says it: 2.3×, 12×, 120× (never 1.2e+02×)."""
    return f"{x:.1f}×" if x < 10 else f"{x:.0f}×"


def diff(a: Result, b: Result, names: tuple[str, str] | None = None) -> dict[str, Any]:
    """A against B: per op type, totals, the sentence. Raises ValueError when either has no usable profile.
    `names`: A's and B's names from config_names (default: config_name)."""
    pa, pb = profile_of(a), profile_of(b)
    name_a, name_b = names or (config_name(a), config_name(b))
    for r, p, n in ((a, pa, name_a), (b, pb, name_b)):
        if not usable(p):
            why = (p or {}).get("unsupported") or "no profile (run with --profile)"
            raise ValueError(f"{n}: {why}")
    assert pa is not None and pb is not None
    rows = type_rows(pa, pb)
    total_a, total_b = float(pa.get("total_s") or 0.0), float(pb.get("total_s") or 0.0)
    return {"a": name_a, "b": name_b, "rows": [r.to_dict() for r in rows],
            "total_a_s": total_a, "total_b_s": total_b, "ratio": total_b / total_a if total_a > 0 else None,
            "median_a_s": a.median_s, "median_b_s": b.median_s,
            "sentence": sentence(rows, _short(a, b))}


def _short(a: Result, b: Result) -> str:
    """What B differs from A in (the subject of the sentence): "int8", "ncnn", "4 threads"..."""
    words = []
    if a.engine != b.engine or a.label != b.label:
        words.append(b.engine if b.label in ("", b.engine) else f"{b.engine}:{b.label}")
    if a.precision != b.precision:
        words.append(b.precision)
    if a.backend != b.backend:
        words.append(b.backend)
    if a.threads != b.threads:
        words.append(f"{b.threads} threads")
    return " ".join(words) or config_name(b)


def top_nodes(p: Mapping[str, Any], n: int = TOP_N) -> list[dict[str, Any]]:
    """The `n` slowest ops: name, the engine's type, the shared type, the model node, seconds, share of the total,
    and the nodes fused into it."""
    ops = [o for o in p.get("ops") or [] if isinstance(o, Mapping)]
    total = float(p.get("total_s") or 0.0) or sum(float(o.get("s") or 0.0) for o in ops)
    ops = sorted(ops, key=lambda o: -float(o.get("s") or 0.0))[:n]
    return [{"name": o.get("name"), "engine_type": o.get("engine_type"), "type": o.get("type"), "node": o.get("node"),
             "s": float(o.get("s") or 0.0), "share": (float(o.get("s") or 0.0) / total) if total > 0 else None,
             "fused": list(o.get("fused") or [])} for o in ops]


def summary(r: Result, name: str | None = None) -> dict[str, Any]:
    """One config's profile in brief: where it came from, totals, the overhead, the share mapped to a shared type,
    by type (largest first), the top nodes — or why there is none; and its timeline in a few figures
    (timeline.brief), or None. `name`: the config's name from config_names (default: config_name)."""
    from devicelab.opprof import timeline

    p = profile_of(r)
    base: dict[str, Any] = {"config": name or config_name(r), "model": r.model, "engine": r.engine, "label": r.label,
                            "precision": r.precision, "backend": r.backend, "threads": r.threads, "status": r.status,
                            "timeline": timeline.brief(r.ext.get("timeline"))}
    if p is None:
        return {**base, "profile": None, "why": "not profiled (run with --profile)"}
    if p.get("unsupported"):
        return {**base, "profile": None, "why": f"unsupported: {p['unsupported']}"}
    by_type = sorted(((t, float(s)) for t, s in (p.get("by_type") or {}).items()), key=lambda x: -x[1])
    return {**base, "profile": {
        "engine_source": p.get("engine_source"), "iterations": p.get("iterations"),
        "total_s": p.get("total_s"), "median_s": p.get("median_s"), "wall_s": p.get("wall_s"),
        "overhead": p.get("overhead"), "coverage": p.get("coverage"), "op_sum_vs_median": p.get("op_sum_vs_median"),
        "mapped": p.get("mapped"), "node_link": p.get("node_link"), "notes": list(p.get("notes") or []),
        "by_type": dict(by_type), "top": top_nodes(p)}}


def precision_pairs(results: Sequence[Result]) -> list[tuple[Result, Result]]:
    """The pairs the report diffs: per engine, model, backend, threads and repeat, fp32 against every other
    precision that has a usable profile."""
    ok = [r for r in results if r.status == OK and usable(profile_of(r))]
    pairs = []
    for a in ok:
        if a.precision != "fp32":
            continue
        for b in ok:
            if b is not a and b.precision != "fp32" and (b.device, b.engine, b.label, b.model, b.backend, b.threads,
                                                        b.cpus, b.repeat, b.run_id) == \
                    (a.device, a.engine, a.label, a.model, a.backend, a.threads, a.cpus, a.repeat, a.run_id):
                pairs.append((a, b))
    return pairs
