"""compare, noise and regress: the stored history through the pure analysis (analysis.compare,
analysis.regress), plus the JUnit and markdown files CI systems read. No printing here."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devicelab.analysis import compare as cmp
from devicelab.analysis import nightly as nt
from devicelab.analysis import regress as rg
from devicelab.analysis.tables import config_median
from devicelab.errors import DevicelabError
from devicelab.result import OK, Result
from devicelab.store import Store


def parse_threshold(text: str) -> float:
    """'2%' or '0.02' → 0.02."""
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value < 1:
        raise DevicelabError(f"--threshold: {text!r} is not allowed; allowed: a percentage like 2% or a fraction like 0.02")
    return value


def display_name(r: Result, with_label: bool = True) -> str:
    label = f" [{r.label}]" if with_label and r.label else ""
    workload = f" {r.config.workload}" if r.config.workload else ""  # an LLM's quant, P, G, depth
    return f"{r.device} {r.engine}{label} {r.model}{workload} {r.precision} {r.backend} {r.threads}t"


@dataclass(frozen=True)
class Side:
    run_id: str
    label: str | None
    results: list[Result]


def resolve_side(store: Store, spec: str) -> Side:
    """RUN_ID, RUN_ID:LABEL, or several runs pooled as one side: RUN_A,RUN_B[:LABEL] (more samples when a
    verdict was unknown)."""
    runs, _, label = spec.partition(":")
    run_ids = [r.strip() for r in runs.split(",") if r.strip()]
    results: list[Result] = []
    for run_id in run_ids:
        store.get_run(run_id)  # unknown ids are a one-line error naming the close ones
        results.extend(r for r in store.results(run_id) if r.status == OK)
    if label:
        labels = sorted({r.label for r in results})
        results = [r for r in results if r.label == label]
        if not results:
            raise DevicelabError(f"{runs} has no ok results with label '{label}'; labels there: "
                                 f"{', '.join(repr(x) for x in labels)}")
    return Side(",".join(run_ids), label or None, results)


def series_without_label(r: Result) -> str:
    return json.dumps([r.device, r.engine, r.model, r.precision, r.backend, r.threads, list(r.cpus),
                       *([r.config.workload] if r.config.workload else [])])


def _rounds(base: Side, cand: Side, rb: list[Result], rc: list[Result]) -> list[tuple[Result, Result]] | None:
    """Two labels of one run: their processes paired by round (the sweep ran each round's processes next to each
    other, so a round shares the machine's drift). None when the sides are different runs (nothing ran together)
    or when fewer than 3 rounds have both."""
    if "," in base.run_id or base.run_id != cand.run_id or base.label == cand.label:
        return None
    by_b, by_c = {r.repeat: r for r in rb}, {r.repeat: r for r in rc}
    common = sorted(set(by_b) & set(by_c))
    if len(common) < 3 or len(by_b) != len(rb) or len(by_c) != len(rc):
        return None
    return [(by_b[i], by_c[i]) for i in common]


def device_noise_floor(store: Store, device: str, paired: bool) -> float | None:
    """The device's latest A/A noise floor if it was measured the way the comparison is made, else None.

    An unpaired floor (`devicelab noise`: processes one after another) measures the drift between separate processes,
    which a paired comparison (lockstep rounds) cancels: applied there it hid real changes (issue 14: +3 % of work,
    CI 1.021–1.039, was called same under a 5 % unpaired floor). So paired comparisons take only a floor measured
    paired (`devicelab noise --paired`, a lockstep A/A), and separate runs only an unpaired one. How it was measured
    is stored with the floor (its detail's `paired`); the latest floor of the matching kind is used."""
    found = store.noise_floor(device, paired)
    return found[0] if found else None


def compare_sides(store: Store, base: Side, cand: Side, threshold: float, pair: bool = True
                  ) -> list[cmp.Comparison]:
    """Matched configs and their verdicts; two labels of one run are paired by round unless `pair` is False."""
    by_label = base.label is not None or cand.label is not None
    key: Callable[[Result], str] = series_without_label if by_label else (lambda r: r.config.series_key())
    groups_b: dict[str, list[Result]] = {}
    groups_c: dict[str, list[Result]] = {}
    for r in base.results:
        groups_b.setdefault(key(r), []).append(r)
    for r in cand.results:
        groups_c.setdefault(key(r), []).append(r)
    out: list[cmp.Comparison] = []
    for k in sorted(set(groups_b) & set(groups_c)):
        rb, rc = groups_b[k], groups_c[k]
        pairs = _rounds(base, cand, rb, rc) if pair else None
        floor = device_noise_floor(store, rb[0].device, paired=pairs is not None)
        if pairs is not None:
            v = cmp.verdict([list(b.samples_s) for b, _ in pairs], [list(c.samples_s) for _, c in pairs], threshold,
                            floor, paired=True)
        else:
            v = cmp.verdict([list(r.samples_s) for r in rb], [list(r.samples_s) for r in rc], threshold, floor)
        out.append(cmp.Comparison(display_name(rb[0], not by_label), k, v, config_median(rb), config_median(rc),
                                  cmp.state_warnings(rb, rc)))
    if not out:
        raise DevicelabError(f"no configuration of {base.run_id}{':' + base.label if base.label else ''} matches one of "
                             f"{cand.run_id}{':' + cand.label if cand.label else ''} (same device, engine, model, "
                             "precision, backend, threads and CPUs)")
    return out


# --------------------------------------------------------------------------------------------------
# regress


def regress(store: Store, threshold: float, device: str | None = None, exclude: frozenset[str] | set[str] = frozenset()
            ) -> list[rg.SeriesReport]:
    """Separate-runs history per series (series keys in `exclude` are left out: nightly tracking covers them)."""
    resets = store.baselines()
    runs_order = {r.run_id: i for i, r in enumerate(reversed(store.runs(limit=1_000_000)))}
    reports: list[rg.SeriesReport] = []
    for key, rows in store.history(device).items():
        if key in exclude:
            continue
        start = resets.get(key) or resets.get("*")
        points: list[rg.RunPoint] = []
        for run_id, created, result in rows:
            if start and runs_order.get(run_id, 0) < runs_order.get(start, 0):
                continue  # before the baseline reset: an intended change, not a regression
            if points and points[-1].run_id == run_id:
                points[-1].processes.append(list(result.samples_s))
            else:
                points.append(rg.RunPoint(run_id, created, [list(result.samples_s)]))
        first = rows[0][2]
        # History compares separate runs: an unpaired floor.
        report = rg.analyze(display_name(first), points, threshold, device_noise_floor(store, first.device, False))
        reports.append(report)
    return sorted(reports, key=lambda r: r.series)


REFERENCE_LABEL = "reference"


@dataclass(frozen=True)
class NightlySeries:
    """A candidate label tracked against the reference label of the same runs (docs/nightly.md)."""

    key: str  # the series without its label, plus the candidate's label
    candidate_key: str  # the candidate's own series key (what --reset-baseline names)
    report: nt.SeriesNights


def _paired_groups(store: Store, reference: str, device: str | None
                   ) -> dict[str, dict[str, list[tuple[str, str, Result]]]]:
    """Series without label → label → rows, for the series whose history has the reference label and another."""
    groups: dict[str, dict[str, list[tuple[str, str, Result]]]] = {}
    for rows in store.history(device).values():
        r = rows[0][2]
        groups.setdefault(series_without_label(r), {}).setdefault(r.label, []).extend(rows)
    return {k: v for k, v in groups.items() if reference in v and len(v) > 1}


def _night(run_id: str, created: str, ref: dict[int, Result], cand: dict[int, Result]) -> nt.Night | None:
    """A run's night of a nightly series from its rows by round (repeat): the rounds both labels have, in order;
    None when no round has both."""
    common = sorted(set(ref) & set(cand))
    if not common:
        return None
    return nt.Night(run_id, created, [list(ref[i].samples_s) for i in common],
                    [list(cand[i].samples_s) for i in common], ref[common[0]].engine_version,
                    cand[common[0]].engine_version)


def nightly(store: Store, threshold: float, reference: str = REFERENCE_LABEL, device: str | None = None,
            suspect_p: float | None = None) -> list[NightlySeries]:
    """Every candidate label that ran beside the reference label, tracked night by night by the paired ratio of
    their lockstep rounds, from its last acceptance (`accept`) or baseline reset on."""
    resets = store.baselines()
    accepted = store.acceptances()
    acks = [nt.Ack(a["alert_id"], a["at_run"], a.get("note")) for a in store.acks()]
    order = {r.run_id: i for i, r in enumerate(reversed(store.runs(limit=1_000_000)))}
    out: list[NightlySeries] = []
    for base_key, labels in sorted(_paired_groups(store, reference, device).items()):
        ref_by_run: dict[str, dict[int, Result]] = {}
        for run_id, _, r in labels[reference]:
            ref_by_run.setdefault(run_id, {})[r.repeat] = r
        for label in sorted(lab for lab in labels if lab != reference):
            rows = labels[label]
            first = rows[0][2]
            key = json.dumps([base_key, label, reference])
            # History starts after the latest acceptance of this candidate (the reference then runs its build) or
            # at a baseline reset of the candidate's series, whichever is later.
            starts = [order.get(accepted[key], -1) + 1] if key in accepted else []
            reset = resets.get(first.config.series_key()) or resets.get("*")
            if reset:
                starts.append(order.get(reset, 0))
            start = max(starts, default=0)
            cand_by_run: dict[str, dict[int, Result]] = {}
            created: dict[str, str] = {}
            for run_id, when, r in rows:
                if order.get(run_id, 0) >= start:
                    cand_by_run.setdefault(run_id, {})[r.repeat] = r
                    created[run_id] = when
            nights: list[nt.Night] = []
            for run_id in sorted(cand_by_run, key=lambda x: order.get(x, 0)):
                night = _night(run_id, created[run_id], ref_by_run.get(run_id, {}), cand_by_run[run_id])
                if night is not None:  # a run without the reference beside it is not a nightly A/B run
                    nights.append(night)
            name = f"{display_name(first, False)} [{label} / {reference}]"
            report = nt.track(name, key, nights, acks, threshold, device_noise_floor(store, first.device, True),
                              suspect_p=suspect_p)
            out.append(NightlySeries(key, first.config.series_key(), report))
    return out


def levels_for_run(store: Store, run_id: str, threshold: float = cmp.DEFAULT_THRESHOLD,
                   reference: str = REFERENCE_LABEL) -> dict[str, float | None]:
    """Nightly series key → the level `regress` (at this threshold and reference label, without --suspect-p: its
    defaults) judges RUN_ID's night of that series at, for every series an acknowledged alert moved off 1: the level
    of the night when RUN_ID is one of its nights already (a resumed run), else the level its next night gets. None
    for a series with an acknowledgement these settings cannot place (its alert is not one they open, e.g. one opened
    by `--suspect-p`): its level is not known here. Empty, with nothing computed, while the store has no
    acknowledgement."""
    acks = store.acks()
    if not acks:
        return {}
    out: dict[str, float | None] = {}
    for s in nightly(store, threshold, reference):
        nights = [n.run_id for n in s.report.nights]
        applied = {a.id for a in s.report.alerts if a.state == nt.ACKNOWLEDGED}
        if any(a["series_key"] == s.key and a["at_run"] in nights and a["alert_id"] not in applied for a in acks):
            out[s.key] = None
            continue
        level = s.report.nights[nights.index(run_id)].level if run_id in nights else s.report.level
        if level != 1.0:
            out[s.key] = level
    return out


def verdicts_at_levels(store: Store, run_id: str, engine: str, label_a: str, label_b: str,
                       levels: dict[str, float | None], threshold: float) -> dict[str, str]:
    """Nightly series key → the verdict of RUN_ID's night of it at the series' level in `levels` (nt.judge, as
    `regress` judges it: the rounds both labels have, the device's paired noise floor), for the configs of `engine`
    whose two labels (either one the reference) make a series `levels` names; unknown where the level is None."""
    by: dict[tuple[str, str], dict[int, Result]] = {}
    for r in store.results(run_id):
        if r.status == OK and r.engine == engine and r.label in (label_a, label_b):
            by.setdefault((series_without_label(r), r.label), {})[r.repeat] = r
    out: dict[str, str] = {}
    for base_key in sorted({k for k, _ in by}):
        for ref, cand in ((label_a, label_b), (label_b, label_a)):
            key = json.dumps([base_key, cand, ref])
            if key not in levels:
                continue
            level = levels[key]
            rr = by.get((base_key, ref), {})
            night = _night(run_id, "", rr, by.get((base_key, cand), {}))
            if level is None or night is None:
                out[key] = "unknown"
                continue
            floor = device_noise_floor(store, next(iter(rr.values())).device, True)
            out[key] = nt.judge(night, level, threshold, floor).verdict
    return out


def nightly_labels(store: Store, reference: str = REFERENCE_LABEL, device: str | None = None) -> set[str]:
    """Series keys (with label) that nightly tracking covers: the reference and its candidates. Separate-runs
    regress leaves them out (their nights drift; the paired ratio is what is tracked)."""
    keys: set[str] = set()
    for labels in _paired_groups(store, reference, device).values():
        for rows in labels.values():
            keys.update(r.config.series_key() for _, _, r in rows)
    return keys


def acknowledge(store: Store, alert: str, note: str | None, threshold: float, reference: str = REFERENCE_LABEL,
                suspect_p: float | None = None) -> nt.Alert:
    """`regress ack ALERT`: the alert is seen; the reference stays, and from the newest night on the series is
    judged at the level the alert showed."""
    every = nightly(store, threshold, reference, suspect_p=suspect_p)
    found: list[tuple[NightlySeries, nt.Alert]] = [(s, a) for s in every for a in s.report.alerts if a.id == alert]
    if not found:
        open_ids = [a.id for s in every for a in s.report.open_alerts]
        raise DevicelabError(f"ALERT: {alert!r} is not an alert of this store; open alerts: "
                             f"{', '.join(open_ids) or 'none'}")
    series, a = found[0]
    if not a.open:
        raise DevicelabError(f"alert {alert} is {a.state}: there is nothing to acknowledge")
    store.add_ack(alert, series.key, series.report.nights[-1].run_id, note)
    return a


def accept(store: Store, spec: str, note: str | None, reference: str = REFERENCE_LABEL) -> list[str]:
    """`accept RUN:LABEL`: LABEL's build in RUN becomes the reference of every series it ran beside the reference
    in; their nightly history restarts after RUN."""
    run_id, _, label = spec.partition(":")
    if not run_id or not label:
        raise DevicelabError(f"RUN:LABEL: {spec!r} is not allowed; allowed: a run id and a candidate label, like "
                             "20261206-0300-ab12:candidate")
    store.get_run(run_id)
    if label == reference:
        raise DevicelabError(f"LABEL: '{label}' is the reference itself; name the candidate label to accept")
    results = [r for r in store.results(run_id) if r.status == OK]
    refs = {series_without_label(r) for r in results if r.label == reference}
    accepted: list[str] = []
    for r in results:
        base = series_without_label(r)
        if r.label == label and base in refs:
            key = json.dumps([base, label, reference])
            if key not in accepted:
                store.add_acceptance(key, run_id, label, r.engine_version, note)
                accepted.append(key)
    if not accepted:
        labels = sorted({r.label for r in results})
        raise DevicelabError(f"{run_id} has no ok results of label '{label}' beside the '{reference}' label; labels "
                             f"there: {', '.join(repr(x) for x in labels)}")
    return [display_name(next(r for r in results if r.label == label and json.dumps(
        [series_without_label(r), label, reference]) == k), False) for k in accepted]


def reset_baseline(store: Store, run_id: str, pattern: str | None, note: str | None) -> list[str]:
    """Make `run_id` the start of history for every series it holds whose name contains `pattern`."""
    store.get_run(run_id)
    names = {}
    for r in store.results(run_id):
        if r.status == OK and (pattern is None or pattern in display_name(r)):
            names[r.config.series_key()] = display_name(r)
    if not names:
        raise DevicelabError(f"run {run_id} holds no ok series" + (f" matching '{pattern}'" if pattern else ""))
    for key in names:
        store.reset_baseline(key, run_id, note)
    return sorted(names.values())


# --------------------------------------------------------------------------------------------------
# files for CI systems


def junit_compare(comparisons: Sequence[cmp.Comparison], title: str) -> str:
    suite = ET.Element("testsuite", name=title, tests=str(len(comparisons)),
                       failures=str(sum(c.verdict.verdict == "slower" for c in comparisons)),
                       skipped=str(sum(c.verdict.verdict == "unknown" for c in comparisons)))
    for c in comparisons:
        case = ET.SubElement(suite, "testcase", classname="devicelab.compare", name=c.name)
        v = c.verdict
        text = _verdict_text(v)
        if v.verdict == "slower":
            ET.SubElement(case, "failure", message=f"slower: {text}").text = "\n".join(v.reasons + tuple(c.warnings))
        elif v.verdict == "unknown":
            ET.SubElement(case, "skipped", message=f"unknown: {text}")
        ET.SubElement(case, "system-out").text = f"{v.verdict}: {text}"
    return ET.tostring(suite, encoding="unicode", xml_declaration=True)


def junit_regress(reports: Sequence[rg.SeriesReport], strict: bool, nightly_series: Sequence[NightlySeries] = ()
                  ) -> str:
    bad = ("confirmed", "suspected") if strict else ("confirmed",)
    nightly_cases = junit_nightly(nightly_series, strict)
    suite = ET.Element("testsuite", name="devicelab regress", tests=str(len(reports) + len(nightly_cases)),
                       failures=str(sum(r.status in bad for r in reports)
                                    + sum(s.report.status in bad for s in nightly_series)),
                       skipped=str(sum(r.status == "no data" for r in reports)))
    for r in reports:
        case = ET.SubElement(suite, "testcase", classname="devicelab.regress", name=r.series)
        if r.status in bad:
            ET.SubElement(case, "failure", message=f"{r.status} regression").text = "\n".join(r.notes)
        elif r.status == "no data":
            ET.SubElement(case, "skipped", message="no data: " + "; ".join(r.notes))
        ET.SubElement(case, "system-out").text = f"{r.status}: " + "; ".join(r.notes)
    suite.extend(nightly_cases)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True)


def junit_nightly(series: Sequence[NightlySeries], strict: bool) -> list[ET.Element]:
    """Test cases for nightly series (appended to regress's suite)."""
    bad = ("confirmed", "suspected") if strict else ("confirmed",)
    cases = []
    for s in series:
        r = s.report
        case = ET.Element("testcase", classname="devicelab.regress.nightly", name=r.series)
        text = "; ".join(_alert_text(a) for a in r.open_alerts) or "no open alert"
        if r.status in bad:
            ET.SubElement(case, "failure", message=f"{r.status} regression").text = text + "\n" + "; ".join(r.notes)
        ET.SubElement(case, "system-out").text = f"{r.status}: {text}"
        cases.append(case)
    return cases


def _alert_text(a: nt.Alert) -> str:
    return (f"alert {a.id} {a.state} since {a.opened_run}: candidate/reference {a.level:.3f} "
            f"({a.level / a.level_before - 1:+.1%} on {a.level_before:.3f})")


def markdown_nightly(series: Sequence[NightlySeries]) -> str:
    lines = ["### devicelab regress: nightly candidate / reference", "",
             "| series | status | nights | newest ratio | 95 % CI | open alerts | notes |", "|---|---|---|---|---|---|---|"]
    for s in series:
        r = s.report
        v = r.nights[-1].verdict if r.nights else None
        ratio = f"{v.ratio:.3f}" if v and v.ratio else "—"
        ci = f"{v.ci[0]:.3f}–{v.ci[1]:.3f}" if v and v.ci else "—"
        alerts = "; ".join(_alert_text(a) for a in r.open_alerts) or "—"
        lines.append(f"| {_md(r.series)} | **{r.status}** | {len(r.nights)} | {ratio} | {ci} | {_md(alerts)} | "
                     f"{_md('; '.join(r.notes))} |")
    return "\n".join(lines) + "\n"


def _verdict_text(v: cmp.Verdict) -> str:
    if v.ratio is None or v.ci is None:
        return "no ratio"
    floor = f", noise floor ±{v.noise_floor:.1%}" if v.noise_floor else ""
    return f"ratio {v.ratio:.4f} [{v.ci[0]:.4f}, {v.ci[1]:.4f}], threshold ±{v.threshold:.1%}{floor}"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def markdown_compare(comparisons: Sequence[cmp.Comparison], title: str) -> str:
    lines = [f"### {_md(title)}", "", "| config | verdict | base | candidate | ratio | 95 % CI | notes |",
             "|---|---|---|---|---|---|---|"]
    for c in comparisons:
        v = c.verdict
        ci = f"{v.ci[0]:.3f}–{v.ci[1]:.3f}" if v.ci else "—"
        ms = lambda s: f"{s * 1e3:.3f} ms" if s else "—"  # noqa: E731
        notes = "; ".join(list(v.reasons) + c.warnings)
        lines.append(f"| {_md(c.name)} | **{v.verdict}** | {ms(c.base_median_s)} | {ms(c.candidate_median_s)} | "
                     f"{v.ratio:.3f} | {ci} | {_md(notes)} |" if v.ratio else
                     f"| {_md(c.name)} | **{v.verdict}** | — | — | — | — | {_md(notes)} |")
    return "\n".join(lines) + "\n"


def markdown_regress(reports: Sequence[rg.SeriesReport]) -> str:
    lines = ["### devicelab regress", "", "| series | status | runs | change points | notes |", "|---|---|---|---|---|"]
    for r in reports:
        cps = ", ".join(f"{c['run_id']} ({c['ratio'] - 1:+.1%})" for c in r.change_points) or "—"
        lines.append(f"| {_md(r.series)} | **{r.status}** | {r.points} | {_md(cps)} | {_md('; '.join(r.notes))} |")
    return "\n".join(lines) + "\n"


def write(path: str | None, text: str) -> None:
    if path:
        Path(path).expanduser().write_text(text)


def noise_floor_from(comparisons: Sequence[cmp.Comparison]) -> tuple[float, dict[str, Any]]:
    """The A/A noise floor: how far from 1 the CI of a config against itself reaches (the widest one)."""
    widest = max((c for c in comparisons if c.verdict.ci), key=lambda c: max(1 - c.verdict.ci[0], c.verdict.ci[1] - 1))
    lo, hi = widest.verdict.ci  # type: ignore[misc]
    return max(1 - lo, hi - 1), {"config": widest.name, **widest.verdict.to_dict()}
