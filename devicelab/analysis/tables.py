"""The slides' table shape (pure): per device and model, engine rows × "1 thread", "N threads", "peak memory"."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from devicelab.analysis.accuracy import label_text, top1_text
from devicelab.result import OK, PRECISIONS, UNSUPPORTED, Result

_PRECISION_ORDER = {p: i for i, p in enumerate(PRECISIONS)}


def _workload_order(r: Result) -> tuple[int, ...]:
    """LLM rows in the order a reader scans them: quantization (F32 first), then depth, prompt and generated tokens;
    not the run's shuffled order."""
    from devicelab.llm import QUANTS, workload_from_key

    w = workload_from_key(r.config.workload) if r.config.workload else None
    if w is None:
        return ()
    return (QUANTS.index(w.quant), w.context_depth, w.prompt_tokens, w.gen_tokens)


@dataclass(frozen=True)
class Cell:
    status: str
    median_s: float | None = None
    reason: str | None = None

    def text(self) -> str:
        if self.status == OK and self.median_s is not None:
            return f"{self.median_s * 1e3:.2f} ms"
        return "n/a" if self.status == UNSUPPORTED else self.status


@dataclass
class Row:
    name: str
    cells: dict[int, Cell] = field(default_factory=dict)
    peak_rss_bytes: int | None = None
    accuracy: dict[str, Any] | None = None  # the least agreeing of the row's results

    def agreement_text(self) -> str:
        """Top-1 agreement over the inputs where it means something (accuracy.agreement), then the cosine."""
        if not self.accuracy:
            return "—"
        return f"{top1_text(self.accuracy)} · {self.accuracy['cosine']:.4f}"

    def label_text(self) -> str:
        return label_text(self.accuracy)


@dataclass
class SlidesTable:
    device: str
    model: str
    threads: list[int]
    rows: list[Row]

    @property
    def has_labels(self) -> bool:
        """The model has a labelled data set: its rows also show accuracy against the labels."""
        return any(r.accuracy and r.accuracy.get("label_accuracy") is not None for r in self.rows)

    @property
    def columns(self) -> list[str]:
        return (["engine"] + [f"{t} thread" + ("s" if t != 1 else "") for t in self.threads]
                + ["peak memory", "top-1 · cos vs fp32"] + (["accuracy (labels)"] if self.has_labels else []))

    def row_cells(self, row: Row) -> list[str]:
        """The row's text cells after the engine's name, in the order of `columns`."""
        return ([row.cells[n].text() if n in row.cells else "—" for n in self.threads]
                + [format_bytes(row.peak_rss_bytes), row.agreement_text()]
                + ([row.label_text()] if self.has_labels else []))


def process_median(r: Result) -> float | None:
    """One process's latency: the median of its samples, or the median an engine's tool printed (summary-only)."""
    return float(statistics.median(r.samples_s)) if r.samples_s else r.median_s


def config_median(results: Sequence[Result]) -> float | None:
    """A config's latency wherever devicelab shows one (CLI tables, the report, compare's centre): the median of its
    ok processes' medians. A pooled median would let the process sampled longest decide; the last or first process
    alone would ignore the others."""
    medians = [m for m in (process_median(r) for r in results if r.status == OK) if m is not None]
    return float(statistics.median(medians)) if medians else None


def row_name(r: Result, with_affinity: bool, with_run: bool = False) -> str:
    label = " ".join(x for x in (r.label, r.run_id if with_run else "") if x)
    name = r.engine + (f" [{label}]" if label else "")
    if r.precision != "fp32":
        name += f" {r.precision}"
    if r.backend != "cpu":
        name += f" {r.backend}"
    if r.config.workload:  # an LLM: each quant and request shape is its own row (cells: median s per token)
        name += " " + r.config.workload.removeprefix("llm ")
    if with_affinity:
        name += f" @{r.affinity}"
    return name


def slides_tables(results: Sequence[Result], by_run: bool = False) -> list[SlidesTable]:
    """Engine rows × thread counts per (device, model); `by_run` keeps the same config of several runs apart."""
    tables: dict[tuple[str, str], SlidesTable] = {}
    groups: dict[tuple[str, str], list[Result]] = {}
    for r in results:
        groups.setdefault((r.device, r.model), []).append(r)
    for (device, model), rs in groups.items():
        several_affinities = len({r.affinity for r in rs}) > 1
        threads = sorted({r.threads for r in rs if r.threads > 0})
        rows: dict[str, Row] = {}
        # A config run in several processes (repeats, A/B rounds) is one cell: the median of its processes'
        # medians, as compare's centre; its status ok when any process is.
        processes: dict[tuple[str, int], list[Result]] = {}
        for r in sorted(rs, key=lambda r: (r.engine, r.label, _PRECISION_ORDER.get(r.precision, 9), r.backend,
                                           _workload_order(r), r.affinity)):
            name = row_name(r, several_affinities, by_run)
            row = rows.setdefault(name, Row(name))
            if r.threads > 0:
                same = processes.setdefault((row.name, r.threads), [])
                same.append(r)
                centre = config_median(same)
                row.cells[r.threads] = Cell(OK, centre) if centre is not None else Cell(r.status, None, r.reason)
            if r.status == OK and r.peak_rss_bytes:
                row.peak_rss_bytes = max(row.peak_rss_bytes or 0, r.peak_rss_bytes)
            if r.status == OK and r.accuracy and (row.accuracy is None or r.accuracy["cosine"] < row.accuracy["cosine"]):
                row.accuracy = r.accuracy
        tables[(device, model)] = SlidesTable(device, model, threads, list(rows.values()))
    return [tables[k] for k in sorted(tables)]


def format_bytes(n: int | None) -> str:
    if not n:
        return "—"
    return f"{n / 2**20:.0f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"
