"""The HTML report: one self-contained file (inline CSS, no network), autoescaped everywhere."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import jinja2

import devicelab
from devicelab.analysis.tables import format_bytes, slides_tables
from devicelab.result import Result
from devicelab.store import RunRecord


def _ms(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1e3:.2f} ms"


def render(runs: Sequence[RunRecord], results: Sequence[Result]) -> str:
    assets = resources.files("devicelab.reports")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined,
                             loader=jinja2.FunctionLoader(lambda name: assets.joinpath(name).read_text()))
    methods = sorted({r.memory_method.split(";")[0] for r in results if r.memory_method})
    return env.get_template("report.html.j2").render(
        runs=[r.to_dict() for r in runs], results=results, tables=slides_tables(results),
        css=assets.joinpath("report.css").read_text(), ms=_ms, format_bytes=format_bytes,
        memory_method=", ".join(methods) or "not measured", version=devicelab.__version__)


def write(path: Path, runs: Sequence[RunRecord], results: Sequence[Result]) -> Path:
    html = render(runs, results)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".report-")
    with os.fdopen(fd, "w") as f:
        f.write(html)
    os.replace(tmp, path)  # a reader never sees half a report
    return path
