"""The report's LLM section (pure): per device, model and request shape, engine rows × {TTFT at P, prefill
tokens/s, decode tokens/s at 1 and N threads, peak memory} per quantization, and the decode-speed-vs-context-depth
chart. Every figure is the median over a config's processes of their per-request medians (ext.llm)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from devicelab import charts, llm
from devicelab.analysis.tables import format_bytes
from devicelab.result import OK, Result

_QUANT_ORDER = {q: i for i, q in enumerate(llm.QUANTS)}


def is_llm(r: Result) -> bool:
    return bool(r.config.workload)


def _ok(results: Sequence[Result]) -> list[Result]:
    return [r for r in results if is_llm(r) and r.status == OK and "ttft_s" in r.ext.get("llm", {})]


def _median(rs: Sequence[Result], key: str) -> float | None:
    """The processes' median of one per-request median (ext.llm[key].median)."""
    values = [r.ext["llm"][key]["median"] for r in rs]
    return float(statistics.median(values)) if values else None


def _name(r: Result, several: bool) -> str:
    return r.engine + (f" [{r.label}]" if r.label else "") + (f" · {r.run_id}" if several else "")


def _tps(x: float | None) -> str:
    return f"{x:,.1f}" if x is not None else "—"



def _by_request_shape(results: Sequence[Result]) -> list[tuple[tuple[str, str, int, int], list[Result]]]:
    """The ok LLM rows grouped by (device, model, P, G), in that order."""
    groups: dict[tuple[str, str, int, int], list[Result]] = {}
    for r in _ok(results):
        x = r.ext["llm"]
        groups.setdefault((r.device, r.model, x["prompt_tokens"], x["gen_tokens"]), []).append(r)
    return sorted(groups.items())

def llm_tables(results: Sequence[Result], several: bool) -> list[dict[str, Any]]:
    """One table per (device, model, P, G), at the shallowest context depth it ran: rows engine × quantization;
    columns TTFT at P and prefill t/s at 1 thread, decode t/s at 1 and at the most threads run, peak memory."""
    out = []
    for (device, model, p, g), rs in _by_request_shape(results):
        depth = min(r.ext["llm"]["context_depth"] for r in rs)
        rs = [r for r in rs if r.ext["llm"]["context_depth"] == depth]
        threads = sorted({r.threads for r in rs})
        low, high = threads[0], threads[-1]
        rows = []
        keys = sorted({(_name(r, several), r.ext["llm"]["quant"]) for r in rs},
                      key=lambda k: (k[0], _QUANT_ORDER.get(k[1], 9)))
        for name, quant in keys:
            mine = [r for r in rs if _name(r, several) == name and r.ext["llm"]["quant"] == quant]
            at = {t: [r for r in mine if r.threads == t] for t in (low, high)}
            ttft = _median(at[low], "ttft_s") if at[low] else None
            drift = next((r.ext["llm"]["drift"]["vs_f32"] for r in mine if "vs_f32" in r.ext["llm"].get("drift", {})),
                         None)
            rows.append({
                "engine": name, "quant": quant,
                "ttft": f"{ttft * 1e3:.2f} ms" if ttft is not None else "—",
                "prefill": _tps(_median(at[low], "prefill_tps") if at[low] else None),
                "decode_low": _tps(_median(at[low], "decode_tps") if at[low] else None),
                "decode_high": _tps(_median(at[high], "decode_tps") if at[high] else None),
                "peak": format_bytes(max((r.peak_rss_bytes or 0 for r in mine), default=0) or None),
                "model_bytes": format_bytes(mine[0].ext["llm"].get("file_bytes")),
                "kv_type": mine[0].ext["llm"].get("kv_type", "—"),
                "drift": (_drift_text(d) if (d := drift) else
                          "reference" + _engines_text(rs, mine) if quant == llm.REFERENCE_QUANT else "—"),
            })
        out.append({"device": device, "model": model, "prompt_tokens": p, "gen_tokens": g, "depth": depth,
                    "low": low, "high": high, "rows": rows})
    return out


def depth_charts(results: Sequence[Result], several: bool) -> list[dict[str, str]]:
    """Decode tokens/s against context depth, one line per engine, quantization and thread count, for every
    (device, model, P, G) that ran at two depths or more."""
    out = []
    for (device, model, p, g), rs in _by_request_shape(results):
        if len({r.ext["llm"]["context_depth"] for r in rs}) < 2:
            continue
        series: dict[str, list[tuple[float, float]]] = {}
        points: dict[tuple[str, int], list[Result]] = {}
        for r in rs:
            name = f"{_name(r, several)} {r.ext['llm']['quant']} {r.threads}t"
            points.setdefault((name, r.ext["llm"]["context_depth"]), []).append(r)
        for (name, depth), ps in sorted(points.items()):
            series.setdefault(name, []).append((float(depth), _median(ps, "decode_tps") or 0.0))
        title = f"Decode speed vs context depth: {model} on {device} (P={p}, G={g})"
        out.append({"kind": "llm-depth", "title": title,
                    "svg": charts.line_chart(title, series, "context depth (tokens in the KV cache)",
                                             "decode tokens/s (median)")})
    return out


def _engines_text(rs: Sequence[Result], mine: Sequence[Result]) -> str:
    """An F32 row's logits against the other engines' F32 logits (ext.llm.drift.vs_engines_f32), which the engine
    that ran second keeps: looked up both ways, so both engines' rows show it."""
    me = {r.engine + (f" [{r.label}]" if r.label else "") for r in mine}
    found: dict[str, dict[str, Any]] = {}
    for r in rs:
        if r.ext["llm"]["quant"] != llm.REFERENCE_QUANT:
            continue
        theirs = r.engine + (f" [{r.label}]" if r.label else "")
        for other, d in (r.ext["llm"].get("drift") or {}).get("vs_engines_f32", {}).items():
            if theirs in me and other not in me:
                found.setdefault(other, d)
            elif other in me and theirs not in me:
                found.setdefault(theirs, d)
    return "".join(f"; vs {name}: {_drift_text(d)}" for name, d in sorted(found.items()))


def _drift_text(d: dict[str, Any]) -> str:
    """Top-1 over every step; the cosine over the steps both sides decoded from the same tokens (rows stored before
    `cosine_min_shared` existed: over every step, said so)."""
    if "cosine_min_shared" in d:
        return (f"top-1 {d['top1_agreement']:.0%}, cos ≥ {d['cosine_min_shared']:.4f} over the first "
                f"{d['shared_steps']} steps (same tokens)")
    return f"top-1 {d['top1_agreement']:.0%}, cos ≥ {d['cosine_min']:.4f} (every step)"
