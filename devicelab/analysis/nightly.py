"""Nightly tracking of a candidate build against a reference build timed in lockstep with it (pure).

Separate nights cannot carry a 5 % signal on a machine that drifts 10 % between them: the night-to-night spread is
the drift. Two labels of one run timed in lockstep share the machine's state slice by slice, so their per-round
ratio keeps the build's change and loses most of the drift. A nightly run therefore carries the reference build as a
second label, and this module follows the *paired ratio* candidate/reference night by night; the absolute medians
stay as context.

Rules (docs/nightly.md):
* each night's paired ratio is judged by analysis.compare's paired verdict against the **level** the series is
  expected at: 1 (the candidate is as fast as the reference) until an alert is acknowledged, then the acknowledged
  level (an acknowledged +5 % is not reported again every night; a further step beyond it is);
* a night judged slower opens a **suspected** alert; a second slower night in a row makes it **confirmed**;
* a suspected alert whose next night is judged *same* or *faster* is cleared (the night was a fluke); one whose next
  night is *unknown* stays suspected;
* a confirmed alert stays open — listed, and `regress` exits 1 — until it is acknowledged. The slower level never
  becomes the new normal by itself: only an acknowledgement (`regress ack`) or an acceptance of the candidate as the
  new reference (`accept`, which restarts the series' nightly history) moves the level.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from devicelab.analysis.compare import DEFAULT_THRESHOLD, Verdict, verdict

SUSPECTED, CONFIRMED, CLEARED, ACKNOWLEDGED = "suspected", "confirmed", "cleared", "acknowledged"


@dataclass(frozen=True)
class Night:
    """One nightly run of a series: per A/B round, the reference's and the candidate's samples (index i of both
    lists ran in round i, in lockstep), and what each side ran."""

    run_id: str
    created_at: str
    reference: list[list[float]]
    candidate: list[list[float]]
    reference_version: str | None = None
    candidate_version: str | None = None


@dataclass(frozen=True)
class Ack:
    """An alert someone has seen and chose to live with (`devicelab regress ack ALERT`): the reference stays."""

    alert_id: str
    at_run: str | None = None  # the newest night when it was acknowledged: the level moves after that night
    note: str | None = None


@dataclass
class Alert:
    id: str
    series: str
    opened_run: str  # the night it was first judged slower
    state: str  # suspected, confirmed, cleared, acknowledged
    level_before: float  # the level the nights were judged against
    ratios: list[float] = field(default_factory=list)  # the paired ratios of its slower nights
    nights: list[str] = field(default_factory=list)  # their run ids
    versions: tuple[str | None, str | None] = (None, None)  # candidate version before it / at its opening night

    @property
    def level(self) -> float:
        """The paired ratio the series sits at since the alert (the median of its slower nights)."""
        return float(np.median(self.ratios)) if self.ratios else self.level_before

    @property
    def open(self) -> bool:
        return self.state in (SUSPECTED, CONFIRMED)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "series": self.series, "opened_run": self.opened_run, "state": self.state,
                "level_before": self.level_before, "level": self.level, "step": self.level / self.level_before - 1,
                "nights": self.nights, "ratios": self.ratios,
                "versions": {"before": self.versions[0], "at": self.versions[1]}}


@dataclass
class NightReport:
    run_id: str
    created_at: str
    level: float
    verdict: Verdict
    reference_median_s: float | None
    candidate_median_s: float | None
    reference_version: str | None
    candidate_version: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "created_at": self.created_at, "level": self.level,
                "ratio": self.verdict.ratio, "ci": list(self.verdict.ci) if self.verdict.ci else None,
                "verdict": self.verdict.verdict, "rounds": self.verdict.processes_base,
                "reference_median_s": self.reference_median_s, "candidate_median_s": self.candidate_median_s,
                "reference_version": self.reference_version, "candidate_version": self.candidate_version}


@dataclass
class SeriesNights:
    series: str
    status: str  # ok, suspected, confirmed, improved, insufficient
    nights: list[NightReport]
    alerts: list[Alert]
    notes: list[str] = field(default_factory=list)
    level: float = 1.0  # the level the series' next night is judged at (an acknowledgement moves it)

    @property
    def open_alerts(self) -> list[Alert]:
        return [a for a in self.alerts if a.open]

    def to_dict(self) -> dict[str, Any]:
        return {"series": self.series, "status": self.status, "nights": [n.to_dict() for n in self.nights],
                "alerts": [a.to_dict() for a in self.alerts], "notes": self.notes}


def alert_id(series_key: str, run_id: str) -> str:
    """A short, stable name for the alert a series opened on a night (what `regress ack` takes)."""
    return hashlib.sha256(f"{series_key}\0{run_id}".encode()).hexdigest()[:10]


def _scaled(processes: Sequence[Sequence[float]], level: float) -> list[list[float]]:
    return [[s / level for s in p] for p in processes]


def _median(processes: Sequence[Sequence[float]]) -> float | None:
    medians = [float(np.median(p)) for p in processes if len(p)]
    return float(np.median(medians)) if medians else None


def judge(night: Night, level: float, threshold: float = DEFAULT_THRESHOLD, noise_floor: float | None = None,
          resamples: int = 2000) -> Verdict:
    """The night's paired verdict candidate/reference against `level`: the candidate's samples divided by the level,
    so 'slower' means a CI above level·(1 + t) with p < 0.01 — the A/B rules, unchanged, with 1 moved to the level.
    The reported ratio and CI are the night's own (not divided)."""
    v = verdict(night.reference, _scaled(night.candidate, level), threshold, noise_floor, resamples=resamples,
                paired=True)
    ratio = v.ratio * level if v.ratio is not None else None
    ci = (v.ci[0] * level, v.ci[1] * level) if v.ci else None
    return Verdict(v.verdict, ratio, ci, v.p_slower, v.p_faster, v.threshold, v.n_base, v.n_candidate,
                   v.processes_base, v.processes_candidate, v.reasons, v.noise_floor)


class Tracker:
    """The module's rules one night at a time (what `track` runs over a stored history, and what a simulation of
    nights drives, acknowledging alerts as an operator would)."""

    def __init__(self, series: str, series_key: str, threshold: float = DEFAULT_THRESHOLD,
                 noise_floor: float | None = None, resamples: int = 2000, suspect_p: float | None = None) -> None:
        self.series, self.series_key = series, series_key
        self.threshold, self.noise_floor, self.resamples = threshold, noise_floor, resamples
        # With suspect_p, an undecided night (CI across level·(1 + t)) whose paired p says "slower than the level"
        # below suspect_p opens a suspected alert too; only a night judged slower confirms one.
        self.suspect_p = suspect_p
        self.counted = False  # whether the newest night counted against the level (judged slower, or suspect_p)
        self.level = 1.0
        self.alerts: list[Alert] = []
        self.nights: list[NightReport] = []
        self.current: Alert | None = None  # the open alert the next night can confirm or clear
        self._previous_version: str | None = None

    def add(self, night: Night, v: Verdict | None = None) -> NightReport:
        """Judge a night against the level (or take `v`, a verdict `judge` gave for it at this level)."""
        v = v or judge(night, self.level, self.threshold, self.noise_floor, self.resamples)
        report = NightReport(night.run_id, night.created_at, self.level, v, _median(night.reference),
                             _median(night.candidate), night.reference_version, night.candidate_version)
        self.nights.append(report)
        p_only = (self.suspect_p is not None and v.verdict == "unknown" and v.p_slower is not None
                  and v.p_slower < self.suspect_p and v.ratio is not None and v.ratio > self.level)
        self.counted = v.verdict == "slower" or p_only
        if p_only and self.current is None:
            self.current = Alert(alert_id(self.series_key, night.run_id), self.series, night.run_id, SUSPECTED,
                                 self.level, versions=(self._previous_version, night.candidate_version))
            self.alerts.append(self.current)
            assert v.ratio is not None
            self.current.ratios.append(v.ratio)
            self.current.nights.append(night.run_id)
        elif v.verdict == "slower":
            if self.current is None:
                self.current = Alert(alert_id(self.series_key, night.run_id), self.series, night.run_id, SUSPECTED,
                                     self.level, versions=(self._previous_version, night.candidate_version))
                self.alerts.append(self.current)
            elif self.current.state == SUSPECTED:
                self.current.state = CONFIRMED
            assert v.ratio is not None
            self.current.ratios.append(v.ratio)
            self.current.nights.append(night.run_id)
        elif v.verdict in ("same", "faster") and self.current is not None and self.current.state == SUSPECTED:
            self.current.state = CLEARED
            self.current = None
        self._previous_version = night.candidate_version
        return report

    def ack(self, alert_id_: str) -> bool:
        """Acknowledge the open alert with this id: from the next night on the series is judged at the level the
        alert's slower nights showed. False when no open alert has that id."""
        if self.current is None or self.current.id != alert_id_:
            return False
        self.current.state = ACKNOWLEDGED
        self.level = self.current.level
        self.current = None
        return True

    def report(self) -> SeriesNights:
        notes: list[str] = []
        last = self.nights[-1].verdict if self.nights else None
        if not self.nights:
            status = "insufficient"
        elif any(a.state == CONFIRMED for a in self.alerts):
            status = CONFIRMED
        elif any(a.state == SUSPECTED for a in self.alerts):
            status = SUSPECTED
        elif last is not None and last.verdict == "faster":
            status = "improved"
            notes.append("the newest night's candidate is faster than the reference: `devicelab accept` makes it "
                         "the reference")
        else:
            status = "ok"
        if last is not None and last.verdict == "unknown":
            notes.append("the newest night was not decided (" + "; ".join(last.reasons[-1:]) + ")")
        versions = {n.reference_version for n in self.nights if n.reference_version}
        if len(versions) > 1:
            notes.append(f"the reference label ran {len(versions)} different versions: accept a candidate with "
                         "`devicelab accept RUN:LABEL` instead of changing the reference build by hand")
        return SeriesNights(self.series, status, list(self.nights), list(self.alerts), notes, self.level)


def track(series: str, series_key: str, nights: Sequence[Night], acks: Sequence[Ack] = (),
          threshold: float = DEFAULT_THRESHOLD, noise_floor: float | None = None,
          resamples: int = 2000, suspect_p: float | None = None) -> SeriesNights:
    """The series' nights in order (oldest first, from its last acceptance or reset on): each night judged against
    the level, alerts opened, confirmed, cleared or acknowledged as the module's rules say. An acknowledgement
    counts after the night it names (`at_run`; none: as soon as its alert exists)."""
    index = {n.run_id: i for i, n in enumerate(nights)}
    acked = {a.alert_id: index.get(a.at_run, -1) if a.at_run else -1 for a in acks}
    tracker = Tracker(series, series_key, threshold, noise_floor, resamples, suspect_p)
    for i, night in enumerate(nights):
        tracker.add(night)
        current = tracker.current
        if current is not None and current.id in acked and i >= acked[current.id]:
            tracker.ack(current.id)
    return tracker.report()


def rounds_of(pairs: Sequence[tuple[int, Sequence[float], Sequence[float]]]) -> tuple[list[list[float]],
                                                                                      list[list[float]]]:
    """(repeat, reference samples, candidate samples) of one night, in any order → the two sides by round."""
    ordered = sorted(pairs, key=lambda p: p[0])
    return [list(p[1]) for p in ordered], [list(p[2]) for p in ordered]
