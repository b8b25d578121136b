"""A config's timeline (`ext.timeline`, docs/results.md): each timed iteration's latency against time, with the CPU
frequencies of the pinned cores and the temperatures sampled while the config ran, on one clock — `ext.iter_t_s`'s:
seconds from the start of the first timed iteration, on the runner's monotonic clock — and marks for the warmup, the
batches and the lockstep slices.

Pure: the session hands in what the driver and the samplers recorded; nothing here reads a device.

Two ways a series reaches the runner's clock:
* `runner` — the series was taken on the runner's own monotonic clock (dlprobe on the same device reads
  CLOCK_MONOTONIC; dlbench and the Python runner time with it too): its times minus the first iteration's `t`;
* `controller` — the series was taken on the controller's monotonic clock (the host's sampler): placed with the
  offset the batches bound. The controller sent each batch before the runner began it and read it after the runner
  finished it, so every batch says `sent <= start_t + offset` and `end_t + offset <= received`; the tightest of
  those bounds is the offset's interval. When the interval holds 0 the two clocks are one (the host's runners) and
  the offset is exactly 0; otherwise its middle, and `align.error_s` says how far off it may be.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

VERSION = 1
MAX_POINTS = 400  # per series: enough for a chart, small enough for a database row (a 10 s config at 10 ms is 1000)
MARGIN_S = 0.5  # samples this long before the first warmup and after the last iteration are kept (context)


@dataclass(frozen=True)
class Series:
    """Samples of one source: `t` on `clock` (`runner` or `controller`; absolute seconds of that monotonic clock),
    and per key (a CPU for frequencies, a zone for temperatures) one value per time, None where unread."""

    source: str  # in words, e.g. "dlprobe every 10 ms" or "the host's /sys, read by the controller every 50 ms"
    clock: str
    t: Sequence[float]
    values: Mapping[str, Sequence[float | None]]


@dataclass(frozen=True)
class Inputs:
    """What the timeline is built from (devicelab.measure's Measurement, the samplers' series)."""

    iter_t_s: Sequence[float]  # relative to the first timed iteration
    samples_s: Sequence[float]
    t0_s: float  # the first timed iteration's `t`, the runner's clock
    batch_marks: Sequence[Mapping[str, Any]]  # measure.Measurement.batch_marks
    cpus: Sequence[int]  # the pinned cores: the only frequencies kept
    lockstep_with: Sequence[str] = ()  # other labels timed in alternating slices with this one
    freq_khz: Series | None = None
    temp_c: Series | None = None
    unavailable: Sequence[str] = field(default_factory=tuple)  # why a series is missing


def clock_offset(marks: Sequence[Mapping[str, Any]]) -> tuple[float, float] | None:
    """(offset, error_s) such that runner time + offset = controller time, from the batches' bounds (module doc);
    None when no batch carries both clocks."""
    lo, hi = -math.inf, math.inf
    for m in marks:
        if m.get("start_t") is None or m.get("end_t") is None or m.get("sent_s") is None or m.get("received_s") is None:
            continue
        lo = max(lo, float(m["sent_s"]) - float(m["start_t"]))
        hi = min(hi, float(m["received_s"]) - float(m["end_t"]))
    if not math.isfinite(lo) or not math.isfinite(hi):
        return None
    if lo <= 0.0 <= hi:
        return 0.0, 0.0
    return (lo + hi) / 2, abs(hi - lo) / 2


def _thin(t: Sequence[float], values: Mapping[str, Sequence[float | None]], most: int = MAX_POINTS
          ) -> tuple[list[float], dict[str, list[float | None]]]:
    """At most `most` samples, keeping each series' lowest and highest reading per bucket of consecutive samples
    (a one-sample frequency drop or temperature spike is what a timeline is read for: every k-th would skip it)."""
    idx = extreme_indices(len(t), list(values.values()), most)
    return [round(t[i], 6) for i in idx], {k: [v[i] if i < len(v) else None for i in idx] for k, v in values.items()}


def extreme_indices(n: int, series: Sequence[Sequence[float | None]], most: int) -> list[int]:
    """Indices of at most `most` of n points: all of them when they fit, else per bucket of consecutive points the
    first, and each series' minimum and maximum (None readings skipped), in order."""
    if n <= most:
        return list(range(n))
    per_bucket = 1 + 2 * max(1, len(series))
    buckets = max(1, most // per_bucket)
    size = math.ceil(n / buckets)
    out: list[int] = []
    for start in range(0, n, size):
        keep = {start}
        for s in series:
            got = [(s[i], i) for i in range(start, min(start + size, n)) if i < len(s) and s[i] is not None]
            if got:
                keep.update((min(got)[1], max(got)[1]))
        out.extend(sorted(keep))
    return out


def _place(series: Series | None, t0: float, offset: tuple[float, float] | None, window: tuple[float, float],
           keep: Sequence[str] | None, unavailable: list[str], what: str) -> dict[str, Any] | None:
    if series is None:
        return None
    values = {k: v for k, v in series.values.items() if keep is None or k in keep}
    if not values:
        unavailable.append(f"{what}: {series.source} read none of the pinned cores' ({', '.join(keep or ())})")
        return None
    align: dict[str, Any]
    if series.clock == "runner":
        shift = -t0
        align = {"method": "same monotonic clock as the runner's t"}
    else:
        if offset is None:
            unavailable.append(f"{what}: {series.source} could not be placed on the runner's clock (no batch "
                               "carried both clocks)")
            return None
        # controller time c = runner time + offset  =>  relative runner time = c - offset - t0
        shift = -offset[0] - t0
        align = {"method": "offset bounded by the batches' send and receive times", "offset_s": offset[0],
                 "error_s": offset[1]}
    lo, hi = window
    picked = [i for i, x in enumerate(series.t) if lo - MARGIN_S <= x + shift <= hi + MARGIN_S]
    if not picked:
        unavailable.append(f"{what}: {series.source} has no sample while the config ran")
        return None
    t = [series.t[i] + shift for i in picked]
    def reading(v: Sequence[float | None], i: int) -> float | None:
        x = v[i] if i < len(v) else None
        return x if x is not None and math.isfinite(x) else None

    got = {k: [reading(v, i) for i in picked] for k, v in values.items()}
    t, thinned = _thin(t, got)
    return {"source": series.source, "align": align, "t_s": t, "values": thinned}


def build(x: Inputs) -> dict[str, Any]:
    """The `ext.timeline` record (docs/results.md)."""
    t0 = x.t0_s
    slice_kind = "slice" if x.lockstep_with else "batch"
    marks: list[dict[str, Any]] = []
    warm = [m for m in x.batch_marks if m.get("kind") == "warmup" and m.get("start_t") is not None]
    if warm:
        marks.append({"kind": "warmup", "start_s": round(float(warm[0]["start_t"]) - t0, 6),
                      "end_s": round(float(warm[-1]["end_t"]) - t0, 6),
                      "iterations": sum(int(m["iterations"]) for m in warm)})
    first = 0
    for m in x.batch_marks:
        if m.get("kind") != "run":
            continue
        n = int(m["iterations"])
        if m.get("start_t") is not None:
            start, end = float(m["start_t"]) - t0, float(m["end_t"]) - t0
        elif first + n <= len(x.iter_t_s):  # cannot happen with iter_t_s present, kept for safety
            start, end = x.iter_t_s[first], x.iter_t_s[first + n - 1] + x.samples_s[first + n - 1]
        else:
            continue
        marks.append({"kind": slice_kind, "start_s": round(start, 6), "end_s": round(end, 6), "iterations": n,
                      "first_iteration": first})
        first += n
    end = x.iter_t_s[-1] + x.samples_s[-1] if x.iter_t_s else 0.0
    start = min([0.0, *(m["start_s"] for m in marks)])
    unavailable = list(x.unavailable)
    offset = clock_offset(x.batch_marks)
    cpus = [str(c) for c in x.cpus]
    record: dict[str, Any] = {
        "version": VERSION,
        "clock": "seconds from the start of the first timed iteration, on the runner's monotonic clock (iter_t_s)",
        "span_s": [round(start, 6), round(end, 6)],
        "cpus": [int(c) for c in x.cpus],
        "marks": marks,
        "freq_khz": _place(x.freq_khz, t0, offset, (start, end), cpus or None, unavailable, "cpu frequencies"),
        "temp_c": _place(x.temp_c, t0, offset, (start, end), None, unavailable, "temperatures"),
        "unavailable": unavailable,
    }
    # How the runner's clock relates to the controller's (the batches' bounds): 0 when they are one clock (the host,
    # the emulated phone); a phone's own clock gives its offset, within error_s.
    record["controller_offset"] = {"offset_s": offset[0], "error_s": offset[1]} if offset else None
    if x.lockstep_with:
        record["lockstep_with"] = list(x.lockstep_with)
    if not warm:
        record["unavailable"].append("warmup: the runner warmed itself up before timing (runner protocol v1), "
                                     "not on this timeline")
    return record


def probe_series(doc: Mapping[str, Any], t0: float, samples_s: Sequence[float], iter_t_s: Sequence[float],
                 unavailable: list[str]) -> tuple[Series | None, Series | None]:
    """dlprobe's frequency and temperature series on the runner's clock: dlprobe reads CLOCK_MONOTONIC and says
    where it started on it (`started_monotonic_s`). A runner whose `t` is on another clock gives iterations outside
    dlprobe's span: then the series are not placed, and `unavailable` says why."""
    start = doc.get("started_monotonic_s")
    interval = doc.get("interval_ms")
    slow = doc.get("slow_interval_ms")
    if not isinstance(start, (int, float)):
        unavailable.append("cpu frequencies and temperatures: this dlprobe does not say where its clock started "
                           "(rebuild it: devicelab build-native)")
        return None, None
    wall = float(doc.get("wall_s") or 0.0)
    end = t0 + (iter_t_s[-1] + samples_s[-1] if iter_t_s else 0.0)
    if not (start <= t0 and end <= start + wall):
        unavailable.append("cpu frequencies and temperatures: the runner's iteration starts (t) fall outside "
                           "dlprobe's span on CLOCK_MONOTONIC: the runner times with another clock")
        return None, None
    fast = doc.get("samples") or {}
    slow_doc = doc.get("slow_samples") or {}
    freq = temp = None
    if fast.get("t_s") and fast.get("freq_khz"):
        freq = Series(f"dlprobe (every {interval} ms)", "runner", [start + t for t in fast["t_s"]],
                      dict(fast["freq_khz"]))
    else:
        unavailable.append("cpu frequencies: dlprobe found no cpufreq on this device")
    if slow_doc.get("t_s") and slow_doc.get("temp_c"):
        temp = Series(f"dlprobe (every {slow} ms)", "runner", [start + t for t in slow_doc["t_s"]],
                      dict(slow_doc["temp_c"]))
    else:
        unavailable.append("temperatures: dlprobe found no thermal zone on this device")
    return freq, temp


def brief(tl: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A timeline in a few figures, for `devicelab profile`: its marks counted, and per core and zone the lowest and
    highest reading while the timed iterations ran (0 to the last iteration's end), or why there is none."""
    if not tl:
        return None
    lo, hi = 0.0, float(tl["span_s"][1])
    marks = tl.get("marks") or []
    warm = [m for m in marks if m["kind"] == "warmup"]
    out: dict[str, Any] = {
        "batches": sum(1 for m in marks if m["kind"] == "batch"),
        "slices": sum(1 for m in marks if m["kind"] == "slice"),
        "warmup_iterations": warm[0]["iterations"] if warm else None,
        "warmup_s": round(warm[0]["end_s"] - warm[0]["start_s"], 6) if warm else None,
        "timed_s": round(hi - lo, 6), "unavailable": list(tl.get("unavailable") or [])}
    for key in ("freq_khz", "temp_c"):
        s = tl.get(key)
        ranges: dict[str, list[float]] = {}
        if s:
            for k, values in s["values"].items():
                got = [v for t, v in zip(s["t_s"], values) if v is not None and lo <= t <= hi]
                if got:
                    ranges[k] = [min(got), max(got)]
        out[key] = ranges or None
    return out
