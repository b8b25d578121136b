"""Charts as inline SVG, drawn in Python: no JavaScript library, no CDN, nothing to load, and the page's
size does not grow with the number of samples (charts draw summaries, never every point).

Every label passes through `esc`: model, engine and device names come from users.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from devicelab.opprof.timeline import extreme_indices

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f",
           "#bcbd22")


def esc(text: object) -> str:
    return escape(str(text), quote=True)


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


# One colour per shared op type (devicelab.opprof.vocab.SHARED_TYPES), the same in every chart of a report: Conv is
# Conv's blue whichever model or section it is drawn in.
TYPE_COLORS: dict[str, str] = {
    "Conv": "#1f77b4", "DepthwiseConv": "#aec7e8", "Gemm": "#d62728", "Pool": "#2ca02c", "Add": "#ff7f0e",
    "Mul": "#ffbb78", "Concat": "#9467bd", "Reshape": "#c5b0d5", "Shuffle": "#8c564b", "Activation": "#e377c2",
    "Softmax": "#f7b6d2", "Quantize": "#17becf", "Dequantize": "#9edae5", "Requantize": "#bcbd22", "Pad": "#dbdb8d",
    "Resize": "#98df8a", "Other": "#7f7f7f"}


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=10 * mag)
    start = math.floor(lo / step) * step
    ticks = []
    t = start
    while t <= hi + step * 0.5:
        ticks.append(round(t, 12))
        t += step
    return ticks


def _fmt(v: float) -> str:
    return f"{v:.3g}"


@dataclass(frozen=True)
class Frame:
    width: int = 640
    height: int = 300
    left: int = 64
    right: int = 170  # legend
    top: int = 28
    bottom: int = 44

    @property
    def plot_w(self) -> int:
        return self.width - self.left - self.right

    @property
    def plot_h(self) -> int:
        return self.height - self.top - self.bottom


def _open(frame: Frame, title: str, kind: str) -> list[str]:
    return [f'<svg class="chart" data-chart="{esc(kind)}" xmlns="http://www.w3.org/2000/svg" role="img" '
            f'viewBox="0 0 {frame.width} {frame.height}" width="{frame.width}" height="{frame.height}">',
            f"<title>{esc(title)}</title>",
            f'<rect x="0" y="0" width="{frame.width}" height="{frame.height}" fill="#fff"/>',
            f'<text x="{frame.left}" y="18" font-size="13" font-weight="bold">{esc(title)}</text>']


def _axes(frame: Frame, xticks: Sequence[tuple[float, str]], yticks: Sequence[tuple[float, str]], xlabel: str,
          ylabel: str) -> list[str]:
    out = [f'<rect x="{frame.left}" y="{frame.top}" width="{frame.plot_w}" height="{frame.plot_h}" fill="none" '
           'stroke="#999"/>']
    for x, label in xticks:
        out.append(f'<line x1="{x:.1f}" y1="{frame.top + frame.plot_h}" x2="{x:.1f}" y2="{frame.top + frame.plot_h + 4}" '
                   'stroke="#999"/>')
        out.append(f'<text x="{x:.1f}" y="{frame.top + frame.plot_h + 16}" font-size="11" text-anchor="middle">'
                   f"{esc(label)}</text>")
    for y, label in yticks:
        out.append(f'<line x1="{frame.left}" y1="{y:.1f}" x2="{frame.left + frame.plot_w}" y2="{y:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{frame.left - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end">{esc(label)}</text>')
    out.append(f'<text x="{frame.left + frame.plot_w / 2:.1f}" y="{frame.height - 8}" font-size="11" '
               f'text-anchor="middle">{esc(xlabel)}</text>')
    out.append(f'<text x="14" y="{frame.top + frame.plot_h / 2:.1f}" font-size="11" text-anchor="middle" '
               f'transform="rotate(-90 14 {frame.top + frame.plot_h / 2:.1f})">{esc(ylabel)}</text>')
    return out


def _legend(frame: Frame, names: Sequence[str], colors: Sequence[str] | None = None, most: int = 14) -> list[str]:
    out = []
    x = frame.left + frame.plot_w + 12
    for i, name in enumerate(names[:most]):
        y = frame.top + 8 + i * 16
        out.append(f'<rect x="{x}" y="{y - 8}" width="10" height="10" fill="{colors[i] if colors else color(i)}"/>')
        out.append(f'<text x="{x + 14}" y="{y + 1}" font-size="11">{esc(name[:24])}</text>')
    if len(names) > most:
        out.append(f'<text x="{x}" y="{frame.top + 8 + most * 16}" font-size="11">+{len(names) - most} more</text>')
    return out


def line_chart(title: str, series: dict[str, list[tuple[float, float]]], xlabel: str, ylabel: str) -> str:
    """Lines through (x, y) points per series, e.g. median latency against threads."""
    f = Frame()
    pts = [p for s in series.values() for p in s]
    if not pts:
        return ""
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    xt = sorted(set(xs))
    x0, x1 = min(xs), max(xs)
    yt = _nice_ticks(0.0, max(ys) * 1.05)
    y1 = yt[-1]

    def sx(x: float) -> float:
        return f.left + (0.5 if x1 == x0 else (x - x0) / (x1 - x0)) * f.plot_w

    def sy(y: float) -> float:
        return f.top + f.plot_h - (y / y1) * f.plot_h

    out = _open(f, title, "line") + _axes(f, [(sx(x), _fmt(x)) for x in xt], [(sy(y), _fmt(y)) for y in yt], xlabel,
                                          ylabel)
    for i, (name, points) in enumerate(series.items()):
        points = sorted(points)
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in points)
        out.append(f'<polyline points="{path}" fill="none" stroke="{color(i)}" stroke-width="2"/>')
        for x, y in points:
            out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3.5" fill="{color(i)}">'
                       f"<title>{esc(name)}: {_fmt(y)} at {_fmt(x)}</title></circle>")
    out += _legend(f, list(series))
    out.append("</svg>")
    return "\n".join(out)


def box_chart(title: str, boxes: Sequence[tuple[str, dict[str, float]]], unit: str = "ms") -> str:
    """Horizontal box plots (whiskers p5–p95, box p25–p75, median line, min/max ticks), one row each."""
    if not boxes:
        return ""
    row = 22
    f = Frame(height=44 + 28 + row * len(boxes), left=230, right=20)
    lo = min(b["min"] for _, b in boxes)
    hi = max(b["p95"] for _, b in boxes) * 1.05
    xt = _nice_ticks(max(0.0, lo * 0.95), hi)
    x0, x1 = xt[0], xt[-1]

    def sx(v: float) -> float:
        return f.left + min(max((v - x0) / (x1 - x0), 0.0), 1.0) * f.plot_w

    out = _open(f, title, "box") + _axes(f, [(sx(x), _fmt(x)) for x in xt], [], f"latency ({unit})", "")
    for i, (name, b) in enumerate(boxes):
        y = f.top + 6 + i * row
        mid = y + row / 2 - 3
        c = color(i)
        out.append(f'<text x="{f.left - 6}" y="{mid + 4:.1f}" font-size="11" text-anchor="end">{esc(name[:38])}</text>')
        out.append(f'<line x1="{sx(b["p5"]):.1f}" y1="{mid:.1f}" x2="{sx(b["p95"]):.1f}" y2="{mid:.1f}" stroke="{c}"/>')
        out.append(f'<rect x="{sx(b["p25"]):.1f}" y="{mid - 6:.1f}" width="{max(sx(b["p75"]) - sx(b["p25"]), 1):.1f}" '
                   f'height="12" fill="{c}" fill-opacity="0.35" stroke="{c}"><title>{esc(name)}: median '
                   f'{_fmt(b["median"])} {unit}, p25–p75 {_fmt(b["p25"])}–{_fmt(b["p75"])}, n={int(b["n"])}</title></rect>')
        out.append(f'<line x1="{sx(b["median"]):.1f}" y1="{mid - 7:.1f}" x2="{sx(b["median"]):.1f}" y2="{mid + 7:.1f}" '
                   f'stroke="{c}" stroke-width="2.5"/>')
        if b["max"] > x1:
            out.append(f'<text x="{f.left + f.plot_w - 2}" y="{mid + 4:.1f}" font-size="10" text-anchor="end">'
                       f"max {_fmt(b['max'])}</text>")
    out.append("</svg>")
    return "\n".join(out)


def scatter_chart(title: str, points: Sequence[dict[str, object]], xlabel: str, ylabel: str, log_y: bool = True) -> str:
    """Trade-off scatter: x, y, a radius from `size`, a ring around the `best` points, colored by `group`."""
    if not points:
        return ""
    f = Frame(height=340)
    xs = [float(p["x"]) for p in points]  # type: ignore[arg-type]
    floor = 1e-8
    ys = [max(float(p["y"]), floor) for p in points]  # type: ignore[arg-type]
    xt = _nice_ticks(0.0, max(xs) * 1.05)
    if log_y:
        e0, e1 = math.floor(math.log10(min(ys))), math.ceil(math.log10(max(ys))) or 1
        if e1 <= e0:
            e1 = e0 + 1
        yt = [10.0 ** e for e in range(e0, e1 + 1)]
        fy = lambda v: (math.log10(max(v, floor)) - e0) / (e1 - e0)  # noqa: E731
    else:
        yt = _nice_ticks(0.0, max(ys))
        fy = lambda v: v / yt[-1]  # noqa: E731

    def sx(v: float) -> float:
        return f.left + v / xt[-1] * f.plot_w

    def sy(v: float) -> float:
        return f.top + f.plot_h - fy(v) * f.plot_h

    sizes = [float(p.get("size") or 0) for p in points]  # type: ignore[arg-type]
    smax = max(sizes) or 1.0
    groups = list(dict.fromkeys(str(p["group"]) for p in points))
    out = _open(f, title, "scatter") + _axes(f, [(sx(x), _fmt(x)) for x in xt],
                                             [(sy(y), f"{y:.0e}" if log_y else _fmt(y)) for y in yt], xlabel, ylabel)
    for p, y, s in zip(points, ys, sizes):
        c = color(groups.index(str(p["group"])))
        r = 4 + 8 * math.sqrt(s / smax)
        cx, cy = sx(float(p["x"])), sy(y)  # type: ignore[arg-type]
        out.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{r:.1f}" fill="{c}" fill-opacity="0.55" stroke="{c}">'
                   f"<title>{esc(p['label'])}</title></circle>")
        if p.get("best"):
            out.append(f'<circle class="best" cx="{cx:.1f}" cy="{cy:.1f}" r="{r + 4:.1f}" fill="none" stroke="#000" '
                       'stroke-width="1.5"/>')
    out += _legend(f, groups)
    out.append("</svg>")
    return "\n".join(out)


# --------------------------------------------------------------------------------------------------
# The history page: one small chart per series, panels stacked over the same runs (x = the run's place in the
# series, so nights are evenly spaced whatever the calendar says).


@dataclass(frozen=True)
class HistoryPanel:
    """One panel of a history chart: lines over the runs (None where a run has no value), an optional band around the
    first line (its CI) and an optional dashed level (the value the runs were judged against)."""

    ylabel: str
    lines: dict[str, list[float | None]]
    band: tuple[list[float | None], list[float | None]] | None = None
    level: list[float | None] | None = None
    level_name: str = "level"


@dataclass(frozen=True)
class HistoryMark:
    """Something that happened at a run: kind is `change` (a change point), `version` (the build or model changed from
    the run before), or `alert` (an alert opened; state names its state)."""

    index: int
    kind: str
    text: str
    run_id: str
    state: str = ""


_MARK_COLOR = {"change": "#9467bd", "version": "#7f7f7f", "confirmed": "#d62728", "suspected": "#ff7f0e",
               "acknowledged": "#2ca02c", "cleared": "#7f7f7f"}


def _segments(xs: Sequence[float], ys: Sequence[float | None]) -> list[list[tuple[float, float]]]:
    """Runs of consecutive present values: a missing night breaks the line instead of bridging it."""
    out: list[list[tuple[float, float]]] = [[]]
    for x, y in zip(xs, ys):
        if y is None:
            if out[-1]:
                out.append([])
        else:
            out[-1].append((x, y))
    return [s for s in out if s]


def history_chart(title: str, xlabels: Sequence[str], panels: Sequence[HistoryPanel],
                  marks: Sequence[HistoryMark] = ()) -> str:
    """Stacked panels over the same runs, with vertical marks (change points, build changes) across all panels and
    alert triangles on top of the first panel. Every element that names a run has a <title> (hover text)."""
    n = len(xlabels)
    if not n or not panels:
        return ""
    panel_h, gap = 110, 26
    f = Frame(height=36 + len(panels) * (panel_h + gap) + 20, top=36, right=170)  # room for the alert marks

    def sx(i: float) -> float:
        return f.left + (0.5 if n == 1 else i / (n - 1)) * f.plot_w

    out = _open(f, title, "history")
    every = max(1, math.ceil(n / 6))  # at most ~6 tick labels: a small chart, not a table
    for p_i, panel in enumerate(panels):
        top = f.top + p_i * (panel_h + gap)
        values = [v for line in panel.lines.values() for v in line if v is not None]
        if panel.band:
            values += [v for side in panel.band for v in side if v is not None]
        if panel.level:
            values += [v for v in panel.level if v is not None]
        if not values:
            continue
        lo, hi = min(values), max(values)
        pad = (hi - lo) * 0.08 or abs(hi) * 0.02 or 1.0
        yt = _nice_ticks(lo - pad, hi + pad, 4)
        y0, y1 = yt[0], yt[-1]

        def sy(v: float, top: int = top, y0: float = y0, y1: float = y1) -> float:
            return top + panel_h - (v - y0) / (y1 - y0) * panel_h

        out.append(f'<g class="panel" data-panel="{p_i}">')
        out.append(f'<rect x="{f.left}" y="{top}" width="{f.plot_w}" height="{panel_h}" fill="none" stroke="#999"/>')
        for y in yt:
            out.append(f'<line x1="{f.left}" y1="{sy(y):.1f}" x2="{f.left + f.plot_w}" y2="{sy(y):.1f}" stroke="#eee"/>')
            out.append(f'<text x="{f.left - 6}" y="{sy(y) + 4:.1f}" font-size="10" text-anchor="end">{esc(_fmt(y))}</text>')
        out.append(f'<text x="14" y="{top + panel_h / 2:.1f}" font-size="10" text-anchor="middle" '
                   f'transform="rotate(-90 14 {top + panel_h / 2:.1f})">{esc(panel.ylabel)}</text>')
        xs = [sx(i) for i in range(n)]
        if panel.band:
            for seg_lo, seg_hi in zip(_segments(xs, panel.band[0]), _segments(xs, panel.band[1])):
                poly = [*seg_hi, *reversed(seg_lo)]
                band_pts = " ".join(f"{x:.1f},{sy(y):.1f}" for x, y in poly)
                out.append(f'<polygon class="band" points="{band_pts}" fill="{color(0)}" fill-opacity="0.18" stroke="none"/>')
        if panel.level:
            for seg in _segments(xs, panel.level):
                # A step line: the level holds from one run to the next.
                pts: list[str] = []
                for k, (x, y) in enumerate(seg):
                    if k:
                        pts.append(f"{x:.1f},{sy(seg[k - 1][1]):.1f}")
                    pts.append(f"{x:.1f},{sy(y):.1f}")
                out.append(f'<polyline class="level" points="{" ".join(pts)}" fill="none" stroke="#000" '
                           f'stroke-dasharray="5 3" stroke-width="1.2"><title>{esc(panel.level_name)}</title></polyline>')
        for li, (name, ys) in enumerate(panel.lines.items()):
            c = color(li)
            for seg in _segments(xs, ys):
                pts_text = " ".join(f"{x:.1f},{sy(y):.1f}" for x, y in seg)
                out.append(f'<polyline points="{pts_text}" fill="none" stroke="{c}" stroke-width="1.8"/>')
            for i, y in enumerate(ys):
                if y is not None:
                    out.append(f'<circle cx="{xs[i]:.1f}" cy="{sy(y):.1f}" r="2.8" fill="{c}">'
                               f"<title>{esc(name)}: {_fmt(y)} at {esc(xlabels[i])}</title></circle>")
        legend = list(panel.lines) + ([panel.level_name] if panel.level else [])
        lx = f.left + f.plot_w + 12
        for li, name in enumerate(legend):
            ly = top + 10 + li * 15
            fill = "#000" if panel.level and li == len(legend) - 1 else color(li)
            out.append(f'<rect x="{lx}" y="{ly - 8}" width="10" height="{3 if fill == "#000" else 10}" fill="{fill}"/>')
            out.append(f'<text x="{lx + 14}" y="{ly + 1}" font-size="10">{esc(name[:26])}</text>')
        out.append("</g>")
    bottom = f.top + len(panels) * (panel_h + gap) - gap
    for i in range(0, n, every):
        out.append(f'<text x="{sx(i):.1f}" y="{bottom + 14}" font-size="10" text-anchor="middle">{esc(xlabels[i])}</text>')
    for m in marks:
        if not 0 <= m.index < n:
            continue
        x = sx(m.index)
        c = _MARK_COLOR.get(m.state or m.kind, "#7f7f7f")
        attrs = f'class="mark mark-{esc(m.kind)}" data-run="{esc(m.run_id)}" data-state="{esc(m.state)}"'
        if m.kind == "alert":
            y = f.top
            out.append(f'<g {attrs}><polygon points="{x - 6:.1f},{y - 9} {x + 6:.1f},{y - 9} {x:.1f},{y + 2}" '
                       f'fill="{c}" stroke="#000" stroke-width="0.6"/><title>{esc(m.text)}</title></g>')
        else:
            dash = "6 3" if m.kind == "change" else "2 3"
            out.append(f'<g {attrs}><line x1="{x:.1f}" y1="{f.top}" x2="{x:.1f}" y2="{bottom}" stroke="{c}" '
                       f'stroke-width="{2 if m.kind == "change" else 1.5}" stroke-dasharray="{dash}"/>'
                       f'<rect x="{x - 4:.1f}" y="{bottom - 8}" width="8" height="8" fill="{c}"/>'
                       f"<title>{esc(m.text)}</title></g>")
    out.append("</svg>")
    return "\n".join(out)


# --------------------------------------------------------------------------------------------------
# Profiles: where a config's time goes, per op type; a config's timeline


def stacked_bar_chart(title: str, bars: Sequence[tuple[str, dict[str, float]]], kinds: Sequence[str],
                      unit: str = "ms") -> str:
    """Horizontal bars, one per config, each split into `kinds` (op types) in that order and color; a segment's
    tooltip names its kind and value."""
    if not bars:
        return ""
    row = 22
    f = Frame(height=44 + 28 + max(row * len(bars), 16 * (len(kinds) + 1)), left=260, right=130)
    colors = [TYPE_COLORS.get(kind, color(k)) for k, kind in enumerate(kinds)]
    hi = max(sum(v.values()) for _, v in bars) or 1.0
    xt = _nice_ticks(0.0, hi * 1.02)

    def sx(v: float) -> float:
        return f.left + v / xt[-1] * f.plot_w

    out = _open(f, title, "stacked") + _axes(f, [(sx(x), _fmt(x)) for x in xt], [], f"time per iteration ({unit})", "")
    for i, (name, values) in enumerate(bars):
        y = f.top + 6 + i * row
        out.append(f'<text x="{f.left - 6}" y="{y + row / 2 + 1:.1f}" font-size="11" text-anchor="end">'
                   f"{esc(name[:42])}</text>")
        x = 0.0
        for k, kind in enumerate(kinds):
            v = values.get(kind, 0.0)
            if v <= 0:
                continue
            out.append(f'<rect class="segment" data-type="{esc(kind)}" x="{sx(x):.1f}" y="{y + 2:.1f}" '
                       f'width="{max(sx(x + v) - sx(x), 0.5):.1f}" height="{row - 6}" fill="{colors[k]}">'
                       f"<title>{esc(name)}: {esc(kind)} {_fmt(v)} {unit}</title></rect>")
            x += v
    out += _legend(f, list(kinds), colors, most=len(kinds))  # every type: 17 at most
    out.append("</svg>")
    return "\n".join(out)


def timeline_chart(title: str, t_s: Sequence[float], latency_ms: Sequence[float], marks: Sequence[dict[str, object]],
                   freq: dict[str, object] | None, temp: dict[str, object] | None) -> str:
    """A config's timeline: each timed iteration's latency at its start (top panel), the pinned cores' frequencies
    (MHz) and the temperatures (°C) in panels below on the same time axis, warmup and batches (or lockstep slices)
    shaded behind. Points are thinned to at most 600 (each bucket's lowest and highest kept): the page's size stays bounded."""
    if not t_s:
        return ""
    panels = [("latency (ms)", {"latency": list(zip(t_s, latency_ms))}, "iterations")]
    for name, s, scale in (("frequency (MHz)", freq, 1e-3), ("temperature (°C)", temp, 1.0)):
        if s:
            ts = list(s["t_s"])  # type: ignore[call-overload]
            vals = s["values"]  # type: ignore[index]
            panels.append((name, {k: [(t, v * scale) for t, v in zip(ts, vs) if v is not None]
                                  for k, vs in vals.items()}, name.split(" ")[0]))  # type: ignore[union-attr]
    ph = 110
    f = Frame(height=40 + len(panels) * (ph + 18) + 30, left=64, right=130)
    # The axis spans the iterations, the marks and the samples around them (kept a little before and after).
    around = [t for _, series, _ in panels[1:] for pts in series.values() for t, _ in pts]
    lo = min([*t_s, *(float(m["start_s"]) for m in marks), *around])  # type: ignore[arg-type]
    ends = [t + s / 1e3 for t, s in zip(t_s, latency_ms)]
    hi = max(ends + [float(m["end_s"]) for m in marks] + around)  # type: ignore[arg-type]
    hi = hi if hi > lo else lo + 1.0

    def sx(v: float) -> float:
        return f.left + (v - lo) / (hi - lo) * f.plot_w

    out = _open(f, title, "timeline")
    xt = [x for x in _nice_ticks(lo, hi) if lo <= x <= hi]
    for p, (name, series, kind) in enumerate(panels):
        top = 30 + p * (ph + 18)
        ys = [y for pts in series.values() for _, y in pts]
        if not ys:
            continue
        ylo, yhi = min(ys), max(ys)
        pad = (yhi - ylo) * 0.1 or abs(yhi) * 0.05 or 1.0
        yt = _nice_ticks(max(0.0, ylo - pad) if ylo >= 0 else ylo - pad, yhi + pad, 3)
        y0, y1 = yt[0], max(yt[-1], yhi)
        yt = [y for y in yt if y <= y1]

        def sy(v: float, top: int = top, y0: float = y0, y1: float = y1) -> float:
            return top + ph - (v - y0) / (y1 - y0) * ph

        out.append(f'<g class="panel" data-panel="{esc(kind)}">')
        for m in marks:
            x0, x1 = sx(float(m["start_s"])), sx(float(m["end_s"]))  # type: ignore[arg-type]
            fill = "#bbb" if m["kind"] == "warmup" else "#dde8f5"
            out.append(f'<rect class="mark" data-kind="{esc(m["kind"])}" x="{x0:.1f}" y="{top}" '
                       f'width="{max(x1 - x0, 0.5):.1f}" height="{ph}" fill="{fill}" fill-opacity="0.6">'
                       f'<title>{esc(m["kind"])}: {esc(m.get("iterations"))} iterations, '
                       f'{_fmt(float(m["start_s"]))}–{_fmt(float(m["end_s"]))} s</title></rect>')
        out.append(f'<rect x="{f.left}" y="{top}" width="{f.plot_w}" height="{ph}" fill="none" stroke="#999"/>')
        for y in yt:
            out.append(f'<text x="{f.left - 6}" y="{sy(y) + 4:.1f}" font-size="10" text-anchor="end">{_fmt(y)}</text>')
        out.append(f'<text x="{f.left + 4}" y="{top + 12}" font-size="11">{esc(name)}</text>')
        for i, (key, pts) in enumerate(series.items()):
            # at most 600 points, each bucket's lowest and highest kept: a slow iteration or a clock drop stays
            pts = [pts[j] for j in extreme_indices(len(pts), [[y for _, y in pts]], 600)]
            c = color(i)
            if kind == "iterations":
                out.extend(f'<circle class="iteration" cx="{sx(t):.1f}" cy="{sy(y):.1f}" r="1.6" fill="{c}"/>'
                           for t, y in pts)
            else:
                path = " ".join(f"{sx(t):.1f},{sy(y):.1f}" for t, y in pts)
                out.append(f'<polyline class="series" data-key="{esc(key)}" points="{path}" fill="none" '
                           f'stroke="{c}" stroke-width="1.5"><title>{esc(key)}</title></polyline>')
                out.append(f'<text x="{f.left + f.plot_w + 8}" y="{top + 12 + i * 14}" font-size="10" fill="{c}">'
                           f"{esc((('cpu' + key) if kind == 'frequency' else key)[:20])}</text>")
        out.append("</g>")
    bottom = 30 + len(panels) * (ph + 18) - 18
    for x in xt:
        out.append(f'<text x="{sx(x):.1f}" y="{bottom + 14}" font-size="10" text-anchor="middle">{_fmt(x)}</text>')
    out.append(f'<text x="{f.left + f.plot_w / 2:.1f}" y="{bottom + 28}" font-size="11" text-anchor="middle">'
               "seconds from the first timed iteration (grey: warmup; blue bands: batches or lockstep slices)</text>")
    out.append("</svg>")
    return "\n".join(out)
