"""The history page (`devicelab report --history`): one self-contained HTML file with a small chart per series over
the stored runs, sorted by what changed most.

Nothing here judges anything: nightly A/B series come from verdicts.nightly (paired ratio per night, its CI, the
level it was judged at, the alerts), other series from verdicts.regress (change points, the newest run's status),
the same calls `devicelab regress` makes, so the page and the command never disagree. This module only picks what
to draw: per-run medians (analysis.regress.RunPoint's centre, as regress computes it), where the engine version or
the model's sha256 changed between consecutive runs, and the order of the series.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

import devicelab
from devicelab import charts, verdicts
from devicelab.analysis import regress as rg
from devicelab.errors import DevicelabError
from devicelab.result import Result
from devicelab.store import Store

SINCE_FORMAT = "an ISO date like 2026-11-01 (or a date and time like 2026-11-01T03:00)"
OPEN_RANK = {"confirmed": 0, "suspected": 1}


def parse_since(text: str) -> datetime:
    """--since: an ISO date (or date and time); without a zone it is UTC, as runs' created_at are."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise DevicelabError(f"--since: {text!r} is not allowed; allowed: {SINCE_FORMAT}") from None
    return _utc(when)


def _utc(when: datetime) -> datetime:
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when


def _on_or_after(created_at: str, since: datetime | None) -> bool:
    if since is None:
        return True
    try:
        return _utc(datetime.fromisoformat(created_at)) >= since
    except ValueError:
        return True  # a run whose time cannot be read is shown rather than silently dropped


@dataclass
class HistorySeries:
    """One series of the page: what it shows and what it is sorted by."""

    kind: str  # "nightly" (candidate / reference, paired) or "runs" (separate runs)
    name: str
    status: str
    open_state: str  # "confirmed", "suspected" or "" (nothing open)
    step: float  # the change that ranks it: candidate/reference level step, or a change point's / newest run's ratio − 1
    runs: int
    alerts: list[dict[str, Any]] = field(default_factory=list)
    change_points: list[dict[str, Any]] = field(default_factory=list)
    changes: list[dict[str, str]] = field(default_factory=list)  # build/model changes between consecutive runs
    notes: list[str] = field(default_factory=list)
    newest: str = ""
    svg: str = ""


def order_key(s: HistorySeries) -> tuple[int, float, str]:
    """What changed most first: open confirmed alerts (or confirmed regressions), then open suspected ones, then the
    rest; within each, the largest |step| first; then by name (a stable page)."""
    return OPEN_RANK.get(s.open_state, 2), -abs(s.step), s.name


def _version_changes(runs: Sequence[tuple[str, dict[str, tuple[str, str]]]]) -> list[dict[str, Any]]:
    """Per consecutive pair of runs, what changed: (run_id, {side: (engine_version, model_sha256)}) in order."""
    out: list[dict[str, Any]] = []
    for i in range(1, len(runs)):
        (_, before), (run_id, after) = runs[i - 1], runs[i]
        for side in sorted(set(before) & set(after)):
            (v0, m0), (v1, m1) = before[side], after[side]
            prefix = f"{side}: " if side else ""
            if v0 != v1:
                out.append({"index": i, "run_id": run_id, "text": f"{prefix}engine version {v0} → {v1}"})
            if m0 != m1:
                out.append({"index": i, "run_id": run_id, "text": f"{prefix}model sha256 {m0[:12]} → {m1[:12]}"})
    return out


def _ms(v: float | None) -> float | None:
    return None if v is None else v * 1e3


def _nightly_series(s: verdicts.NightlySeries, builds: dict[tuple[str, str], dict[str, tuple[str, str]]],
                    reference: str, since: datetime | None) -> HistorySeries | None:
    base, label, _ = json.loads(s.key)
    r = s.report
    nights = [n for n in r.nights if _on_or_after(n.created_at, since)]
    shown = {n.run_id for n in nights}
    alerts = [a for a in r.alerts if a.open or a.opened_run in shown]
    if not nights and not alerts:
        return None
    index = {n.run_id: i for i, n in enumerate(nights)}
    per_run = [(n.run_id, {side: builds[(base, lab)][n.run_id] for side, lab in (("candidate", label),
                                                                              ("reference", reference))
                           if n.run_id in builds.get((base, lab), {})}) for n in nights]
    changes = _version_changes(per_run)
    marks = [charts.HistoryMark(c["index"], "version", c["text"], c["run_id"]) for c in changes]
    alert_rows = []
    for a in alerts:
        d = a.to_dict()
        alert_rows.append({"id": a.id, "state": a.state, "opened_run": a.opened_run, "step": d["step"],
                           "level_before": a.level_before, "level": a.level, "nights": len(a.nights),
                           "versions": d["versions"]})
        if a.opened_run in index:
            marks.append(charts.HistoryMark(index[a.opened_run], "alert",
                                            f"alert {a.id} {a.state}: {d['step']:+.1%} on level {a.level_before:.3f}, "
                                            f"opened at {a.opened_run}", a.opened_run, a.state))
    xlabels = [n.created_at[:10] for n in nights]
    ratio = charts.HistoryPanel(
        "candidate / reference", {"paired ratio": [n.verdict.ratio for n in nights]},
        band=([n.verdict.ci[0] if n.verdict.ci else None for n in nights],
              [n.verdict.ci[1] if n.verdict.ci else None for n in nights]),
        level=[n.level for n in nights], level_name="judged at level")
    medians = charts.HistoryPanel("median (ms)", {f"{label} median": [_ms(n.candidate_median_s) for n in nights],
                                                  f"{reference} median": [_ms(n.reference_median_s) for n in nights]})
    svg = charts.history_chart(r.series, xlabels, [ratio, medians], marks)
    open_alerts = [a for a in alerts if a.open]
    open_state = ("confirmed" if any(a.state == "confirmed" for a in open_alerts)
                  else "suspected" if open_alerts else "")
    steps = [a["step"] for a in alert_rows if a["state"] in ("confirmed", "suspected")] or [a["step"] for a in alert_rows]
    newest = ""
    if nights and nights[-1].verdict.ratio is not None and nights[-1].verdict.ci:
        v = nights[-1].verdict
        newest = (f"{v.ratio:.3f} [{v.ci[0]:.3f}, {v.ci[1]:.3f}] {v.verdict} at level {nights[-1].level:.3f} "
                  f"({nights[-1].run_id})")
    return HistorySeries("nightly", r.series, r.status, open_state, max(steps, key=abs, default=0.0), len(nights),
                         alert_rows, [], [{"run_id": c["run_id"], "text": c["text"]} for c in changes],
                         list(r.notes), newest, svg)


def _runs_series(rows: Sequence[tuple[str, str, Result]], report: rg.SeriesReport,
                 since: datetime | None) -> HistorySeries | None:
    points: list[tuple[str, str, list[list[float]], tuple[str, str]]] = []
    for run_id, created, result in rows:
        if not _on_or_after(created, since):
            continue
        if points and points[-1][0] == run_id:
            points[-1][2].append(list(result.samples_s))
        else:
            points.append((run_id, created, [list(result.samples_s)], (result.engine_version, result.model_sha256)))
    if not points:
        return None
    index = {p[0]: i for i, p in enumerate(points)}
    medians = [rg.RunPoint(run_id, created, procs).median if any(len(x) for x in procs) else None
               for run_id, created, procs, _ in points]
    changes = _version_changes([(p[0], {"": p[3]}) for p in points])
    marks = [charts.HistoryMark(c["index"], "version", c["text"], c["run_id"]) for c in changes]
    cps = [c for c in report.change_points if c["run_id"] in index]
    for c in cps:
        marks.append(charts.HistoryMark(index[c["run_id"]], "change",
                                        f"change point at {c['run_id']}: {c['ratio'] - 1:+.1%} ({c['direction']}), "
                                        f"{c['before_s'] * 1e3:.3f} → {c['after_s'] * 1e3:.3f} ms", c["run_id"]))
    open_state = report.status if report.status in OPEN_RANK else ""
    steps = [c["ratio"] - 1 for c in cps]
    newest = ""
    if report.newest and report.newest.get("ratio") is not None:
        n = report.newest
        if open_state:
            steps.append(n["ratio"] - 1)
        ci = f" [{n['ci'][0]:.3f}, {n['ci'][1]:.3f}]" if n.get("ci") else ""
        newest = f"{n['ratio']:.3f}{ci} {n['verdict']} against the {n['baseline_runs']} runs before it ({n['run_id']})"
    svg = charts.history_chart(report.series, [p[1][:10] for p in points],
                               [charts.HistoryPanel("median (ms)", {"run median": [_ms(m) for m in medians]})], marks)
    return HistorySeries("runs", report.series, report.status, open_state, max(steps, key=abs, default=0.0),
                         len(points), [], [{**c, "step": c["ratio"] - 1} for c in cps],
                         [{"run_id": c["run_id"], "text": c["text"]} for c in changes], list(report.notes), newest, svg)


def build(store: Store, threshold: float, reference: str = verdicts.REFERENCE_LABEL, device: str | None = None,
          since: datetime | None = None) -> list[HistorySeries]:
    """Every series of the store (or of one device), sorted by order_key, each as the page shows it."""
    nightly = verdicts.nightly(store, threshold, reference, device)
    covered = verdicts.nightly_labels(store, reference, device)
    reports = verdicts.regress(store, threshold, device, exclude=covered)
    history = store.history(device)
    builds: dict[tuple[str, str], dict[str, tuple[str, str]]] = {}
    for rows in history.values():
        first = rows[0][2]
        per_run = builds.setdefault((verdicts.series_without_label(first), first.label), {})
        for run_id, _, r in rows:
            per_run.setdefault(run_id, (r.engine_version, r.model_sha256))
    out: list[HistorySeries] = []
    for s in nightly:
        item = _nightly_series(s, builds, reference, since)
        if item:
            out.append(item)
    separate = {k: rows for k, rows in history.items() if k not in covered}
    names: dict[str, list[str]] = {}
    for key, rows in separate.items():
        names.setdefault(verdicts.display_name(rows[0][2]), []).append(key)
    by_name = {r.series: r for r in reports}
    for key, rows in separate.items():
        name = verdicts.display_name(rows[0][2])
        if len(names[name]) == 1:
            report = by_name[name]
        else:  # two series share a display name (they differ in CPUs): regress this one alone
            (report,) = verdicts.regress(store, threshold, device, exclude=set(history) - {key})
        item = _runs_series(rows, report, since)
        if item:
            out.append(item)
    return sorted(out, key=order_key)


def render(series: Sequence[HistorySeries], title: dict[str, Any]) -> str:
    assets = resources.files("devicelab.reports")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined,
                             loader=jinja2.FunctionLoader(lambda name: assets.joinpath(name).read_text()))
    return env.get_template("history.html.j2").render(
        series=series, title=title, css=assets.joinpath("report.css").read_text(), version=devicelab.__version__,
        svg=lambda s: jinja2.utils.markupsafe.Markup(s))  # charts escape their own text (charts.esc)


def write(path: Path, store: Store, threshold: float, reference: str = verdicts.REFERENCE_LABEL,
          device: str | None = None, since: datetime | None = None) -> tuple[Path, int]:
    from devicelab.paths import write_atomic

    series = build(store, threshold, reference, device, since)
    title = {"device": device, "since": since.isoformat() if since else None, "threshold": threshold,
             "reference": reference}
    write_atomic(path, render(series, title).encode())  # a reader never sees half a page
    return path, len(series)
