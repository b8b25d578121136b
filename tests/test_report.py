"""The review report: scorecard math and escaping as specs, then a real host run's report in headless
Chromium (Debian's chromium, driven by Playwright): no console errors, charts that draw, the expected
cells, a hostile name that stays text, downloads of the raw samples, and no network request."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from devicelab import charts
from devicelab.report import accuracy_gate, contest_score, pareto, size_gate
from helpers import devicelab, run_json, write_suite


HOSTILE = "<script>alert(1)</script>"


def test_contest_gates_and_score() -> None:
    assert [accuracy_gate(a) for a in (0.99, 0.97, 0.968, 0.965, 0.96, None)] == [1, 1, 0.9, 0.9, 0, None]
    assert [size_gate(s) for s in (10, 40, 45, 50, 60, 63, 64)] == [1, 1, 0.9, 0.9, 0.8, 0.8, 0]
    # 2× faster and 4× smaller than fp32, agreement 0.99, 3.5 MB: 0.5 × 20 + 3 × 80 = 250
    assert contest_score(t=5.0, t0=10.0, s_mb=3.5, s0_mb=14.0, agreement=0.99) == pytest.approx(250.0)
    assert contest_score(t=5.0, t0=10.0, s_mb=45.0, s0_mb=90.0, agreement=0.966) == pytest.approx(
        (10 + 80) * 0.9 * 0.9)
    assert contest_score(t=5.0, t0=10.0, s_mb=3.5, s0_mb=14.0, agreement=0.5) == 0.0


def test_pareto_front() -> None:
    assert pareto([(1, 3), (2, 2), (3, 1), (3, 3), (2, 2.5)]) == [True, True, True, False, False]


def test_chart_text_is_escaped() -> None:
    svg = charts.line_chart(HOSTILE, {HOSTILE: [(1, 2.0), (2, 1.0)]}, "x", "y")
    assert HOSTILE not in svg and "&lt;script&gt;" in svg


@pytest.fixture(scope="module")
def report_page(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    import os

    if not shutil.which("chromium"):
        pytest.fail("Debian's chromium is missing: scripts/test installs it (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    from devicelab import zoo

    base = tmp_path_factory.mktemp("report")
    env = {**os.environ, "DEVICELAB_DATA": str(base / "data"), "DEVICELAB_DB": str(base / "db.sqlite"),
           "HOME": str(base / "home")}
    hostile = base / "model.onnx"
    hostile.write_bytes(zoo.build_bytes("squeezenet1_1"))
    suite = write_suite(base / "s.yaml", models=["mobilenet_v2", {"path": str(hostile), "name": HOSTILE}],
                        engines=["onnxruntime", "litert"], precisions=["fp32", "int8"], threads=[1, "all"], seed=1)
    code, out, err = run_json("run", "--suite", str(suite), "--report", str(base / "report.html"), env=env)
    assert code == 0, err
    page_data: dict[str, Any] = {"results": out["results"], "run_id": out["run_id"], "path": base / "report.html"}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"),
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                          "--disable-component-update", "--disable-sync", "--no-first-run"])
        context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
        page = context.new_page()
        console: list[str] = []
        requests: list[str] = []
        dialogs: list[str] = []
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
        page.on("request", lambda r: requests.append(r.url))
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(page_data["path"].as_uri())
        page.wait_for_load_state("load")
        page_data["text"] = page.inner_text("body")
        page_data["engines_rows"] = page.locator('h3:has-text("mobilenet_v2 on host") + table.engines tr').all_inner_texts()
        page_data["hostile_engines_rows"] = page.locator("table.engines").first.locator("tr").all_inner_texts()
        page_data["precision_rows"] = page.locator("table.precision tr").all_inner_texts()
        page_data["charts"] = {}
        for kind in ("line", "box", "scatter"):
            loc = page.locator(f'svg.chart[data-chart="{kind}"]')
            page_data["charts"][kind] = (loc.count(), loc.first.screenshot() if loc.count() else b"")
        scorecards = {}
        for key in ("contest", "latency", "size"):
            page.locator(f"label[for=w-{key}]").click()
            scorecards[key] = page.locator(f".w-{key}").first.is_visible()
        page_data["scorecard_toggle"] = scorecards
        for fmt in ("csv", "json"):
            with page.expect_download() as info:
                page.locator(f"button[data-download={fmt}]").click()
            page_data[fmt] = Path(info.value.path()).read_text()
        page_data.update(console=console, requests=requests, dialogs=dialogs)
        browser.close()
    return page_data


@pytest.mark.slow
def test_opens_without_errors_or_network(report_page: dict[str, Any]) -> None:
    assert report_page["console"] == []
    assert report_page["dialogs"] == []  # the hostile model name did not execute
    others = [u for u in report_page["requests"] if not u.startswith(("file://", "blob:", "data:"))]
    assert others == [] and report_page["requests"][0] == report_page["path"].as_uri()


@pytest.mark.slow
def test_hostile_name_renders_as_text(report_page: dict[str, Any]) -> None:
    """The model named like a script is text where it is rendered — the section headings, escaped in the HTML — and
    nowhere in the file as markup (the raw-data block escapes '<' as \\u003c)."""
    html = report_page["path"].read_text()
    assert f"{HOSTILE} on host" in report_page["text"]
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert f"<h3>{escaped} on host</h3>" in html and HOSTILE not in html


@pytest.mark.slow
def test_tables_hold_the_expected_cells(report_page: dict[str, Any]) -> None:
    rows = report_page["engines_rows"]
    assert any(r.startswith("engine\t1 thread\t") and "peak memory" in r for r in rows)
    for engine in ("onnxruntime", "litert"):
        row = next(r for r in rows if r.startswith(engine + "\t"))
        assert row.count(" ms") == 2 and "MiB" in row
    # The user's model (named like a script) cannot reach LiteRT: its row says so rather than vanishing.
    assert any(r.startswith("litert\tn/a\tn/a") for r in report_page["hostile_engines_rows"])
    int8 = [r for r in report_page["precision_rows"] if r.startswith("int8")]
    assert len(int8) == 3 and all(r.count("×") == 2 for r in int8)  # speed-up over fp32 at each thread count
    assert report_page["scorecard_toggle"] == {"contest": True, "latency": True, "size": True}
    for section in ("Engines", "Precision", "Charts", "Model variants scorecard", "Devices", "All results", "Raw data"):
        assert section in report_page["text"]


@pytest.mark.slow
def test_charts_draw(report_page: dict[str, Any]) -> None:
    from PIL import Image

    for kind, (count, png) in report_page["charts"].items():
        assert count >= 1, kind
        image = Image.open(io.BytesIO(png)).convert("RGB")
        colors = image.getcolors(maxcolors=1 << 20)
        # A drawn chart has its series' colors, not just the white background, grid and text.
        palette = {tuple(int(c[i:i + 2], 16) for i in (1, 3, 5)) for c in charts.PALETTE}
        near = [n for n, rgb in colors if any(sum(abs(a - b) for a, b in zip(rgb, p)) < 60 for p in palette)]
        assert sum(near) > 200, (kind, len(colors))


@pytest.mark.slow
def test_raw_samples_download(report_page: dict[str, Any]) -> None:
    results = [r for r in report_page["results"] if r["samples_s"]]
    rows = list(csv.DictReader(io.StringIO(report_page["csv"])))
    assert len(rows) == sum(len(r["samples_s"]) for r in results)
    first = results[0]
    mine = [r for r in rows if r["engine"] == first["engine"] and r["model"] == first["model"]
            and r["precision"] == first["precision"] and int(r["threads"]) == first["threads"]]
    assert [float(r["seconds"]) for r in mine] == pytest.approx(first["samples_s"], rel=1e-6)
    data = json.loads(report_page["json"])
    assert sum(len(r["samples_s"]) for r in data) == len(rows) and data[0]["run_id"] == report_page["run_id"]


@pytest.mark.slow
def test_report_and_export_commands(env: dict[str, str], tmp_path: Path) -> None:
    import pandas as pd

    code, out, err = run_json("run", "--suite", str(write_suite(tmp_path / "s.yaml")), env=env)
    assert code == 0, err
    run_id = out["run_id"]
    p = devicelab("report", run_id, run_id, "-o", str(tmp_path / "two.html"), env=env)
    assert p.returncode == 0 and (tmp_path / "two.html").stat().st_size > 0
    n = len(out["results"][0]["samples_s"])
    assert len(devicelab("export", run_id, env=env).stdout.strip().splitlines()) == n + 1
    assert devicelab("export", run_id, "--format", "parquet", "-o", str(tmp_path / "s.parquet"), env=env).returncode == 0
    df = pd.read_parquet(tmp_path / "s.parquet")
    assert len(df) == n and list(df["seconds"]) == out["results"][0]["samples_s"]
    assert json.loads(devicelab("export", run_id, "--format", "json", env=env).stdout)[0]["run_id"] == run_id
    p = devicelab("export", run_id, "--format", "xlsx", env=env)
    assert p.returncode == 2 and "allowed: csv, json, parquet" in p.stderr


def _process(cfg: Any, samples: list[float], **fields: Any) -> Any:
    from devicelab.result import OK, Result

    return Result.for_config("r1", cfg, OK, samples_s=tuple(samples), median_s=float(np.median(samples)), **fields)


def test_every_section_shows_the_median_of_process_medians() -> None:
    """A config run in three processes (medians 1, 2 and 3 ms; the first sampled longest) is 2 ms in every section, as
    in the CLI tables: not the pooled median (1 ms), nor the last process (3 ms), nor the first fp32 process."""
    import dataclasses

    from devicelab.report import build
    from devicelab.result import Config, RunProtocol
    from devicelab.store import RunRecord

    def config(precision: str, backend: str = "cpu") -> Config:
        return Config("host", "ncnn", "", "1.0", "m", "ab" * 32, 1, precision, backend, 1, (1,), "big", 0)

    def three(cfg: Config, scale: float, **fields: Any) -> list[Any]:
        shapes = ([1.0] * 10, [2.0] * 3, [3.0] * 3)  # process medians 1, 2, 3 ms; pooled median 1 ms
        return [_process(dataclasses.replace(cfg, repeat=k), [x * scale * 1e-3 for x in xs], **fields)
                for k, xs in enumerate(shapes)]

    accuracy = {"cosine": 0.999, "max_abs_diff": 1e-3, "top1_agreement": 1.0, "inputs": 4}
    results = (three(config("fp32"), 1.0, protocol=RunProtocol({}, artifact_bytes=8_000_000))
               + three(config("int8"), 0.5, protocol=RunProtocol({}, artifact_bytes=2_000_000), accuracy=accuracy)
               + three(config("fp32", "vulkan"), 0.25))
    data = build([RunRecord("r1", "2026-11-01T00:00:00", {"name": "s"}, 1, {}, "0.1.0")], results)
    ((engine_row,),) = [t.rows for t in data.engines]
    assert engine_row.cells[1].text() == "2.00 ms"  # the CLI's table, the reference
    (precision,) = data.precision
    assert [(row["precision"], row["cells"][0]["median"], row["cells"][0]["speedup"]) for row in precision["rows"]] == [
        ("fp32", "2.00 ms", ""), ("int8", "1.00 ms", "2.00×")]
    (backends,) = data.backends
    assert {row["name"]: row["cells"] for row in backends["rows"]} == {
        "ncnn fp32 vulkan": ["0.50 ms"], "ncnn fp32": ["2.00 ms"], "ncnn int8": ["1.00 ms"]}
    (card,) = data.scorecards
    rows = card["by"]["latency"]
    assert [(row["name"], row["latency"], row["latency0"], row["latency_score"]) for row in rows] == [
        ("ncnn int8 1t", "1.00 ms", "2.00 ms", 2.0)]
    (tradeoff,) = [c["svg"] for c in data.charts if c["kind"] == "tradeoff"]
    assert tradeoff.count("ncnn int8 1t: ") == 1 and "ncnn int8 1t: 1.00 ms" in tradeoff  # one point per config


# ---- Core ML and GPU rows beside the CPU engines. No iPhone ran here (the emulated one runs the host build of
# dlbench, on the CPU), so these Results are SYNTHETIC: made up in memory by this test to check the rendering, labelled so
# in the run's suite name, every row's version and notes, and never stored as a measurement.

SYNTHETIC = "synthetic: made up by test_report.py to check the rendering, not a measurement"
HOSTILE_LABEL = "<img src=x onerror=alert(2)>"


def _synthetic_iphone_run() -> tuple[list[Any], list[Any]]:
    from devicelab.result import Config, Result
    from devicelab.store import RunRecord

    def row(engine: str, precision: str, backend: str, threads: int, median_ms: float, label: str = "",
            **fields: Any) -> Result:
        cfg = Config("iphone-13", engine, label, "synthetic", HOSTILE, "ab" * 32, 1, precision, backend, threads, (),
                     "all", 0)
        samples = tuple(median_ms * 1e-3 * f for f in (0.98, 1.0, 1.02))
        return Result.for_config("synthetic-run", cfg, "ok", samples_s=samples, median_s=median_ms * 1e-3,
                                 notes=(SYNTHETIC,), **fields)

    results = [
        row("dlbench", "fp32", "cpu", 1, 20.0), row("dlbench", "fp32", "cpu", 2, 11.0),
        row("dlbench", "fp16", "coreml-ane", 1, 2.0), row("dlbench", "fp16", "coreml-gpu", 1, 4.0),
        row("dlbench", "fp32", "coreml", 1, 3.0, label=HOSTILE_LABEL),
        row("ncnn", "fp32", "vulkan", 1, 6.0, ext={"gpu_device": {"name": "Apple A15 GPU", "type": "integrated",
                                                                  "software": False}}),
        row("ncnn", "fp32", "cpu", 1, 18.0),
    ]
    facts = {"id": "iphone-13", "kind": "ios", "model": "iPhone14,5", "os": "iOS 16.7.2", "abi": "arm64e", "cpus": 6,
             "cpu_ids": list(range(6)), "clusters": []}
    run = RunRecord("synthetic-run", "2026-12-06T00:00:00", {"name": "SYNTHETIC rendering fixture"}, 1,
                    {"platform": "synthetic", "python": "3.11", "devices": {"iphone-13": facts}}, "0.1.0")
    return [run], results


def test_backends_table_lists_core_ml_and_gpu_rows_beside_the_cpu() -> None:
    from devicelab.report import build

    runs, results = _synthetic_iphone_run()
    (table,) = build(runs, results).backends
    assert (table["device"], table["model"], table["threads"], table["coreml"]) == ("iphone-13", HOSTILE, [1, 2], True)
    assert [(row["name"], row["runs_on"], row["cells"]) for row in table["rows"]] == BACKEND_ROWS


# The Backends table of the synthetic run: the other backends first, then the CPU rows, each at its thread counts.
BACKEND_ROWS = [
    (f"dlbench [{HOSTILE_LABEL}] fp32 coreml", "Core ML, all units (Core ML chooses)", ["3.00 ms", "—"]),
    ("dlbench fp16 coreml-ane", "Core ML, CPU and Neural Engine", ["2.00 ms", "—"]),
    ("dlbench fp16 coreml-gpu", "Core ML, CPU and GPU", ["4.00 ms", "—"]),
    ("ncnn fp32 vulkan (Apple A15 GPU)", "GPU (Vulkan)", ["6.00 ms", "—"]),
    ("dlbench fp32", "CPU", ["20.00 ms", "11.00 ms"]),
    ("ncnn fp32", "CPU", ["18.00 ms", "—"]),
]


def test_backends_section_renders_in_chromium_with_names_escaped(tmp_path: Path) -> None:
    """The synthetic run's report in headless Chromium: the Backends table lists every Core ML and GPU row beside the
    CPU rows, the model and label named like markup stay text, nothing runs, nothing is fetched."""
    if not shutil.which("chromium"):
        pytest.fail("Debian's chromium is missing: scripts/test installs it (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    from devicelab import report

    runs, results = _synthetic_iphone_run()
    path = report.write(tmp_path / "synthetic.html", runs, results)
    html = path.read_text()
    assert HOSTILE not in html and HOSTILE_LABEL not in html  # escaped everywhere, the raw-data block included
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"),
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                          "--disable-component-update", "--disable-sync", "--no-first-run"])
        page = browser.new_page()
        problems: list[str] = []
        requests: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on("dialog", lambda d: (problems.append("dialog: " + d.message), d.dismiss()))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(path.as_uri())
        page.wait_for_load_state("load")
        heading = page.locator("#backends ~ h3").first.inner_text()
        rows = page.locator("table.backends tr").all_inner_texts()
        nav = page.locator("nav a").all_inner_texts()
        text = page.inner_text("body")
        browser.close()
    assert problems == [] and all(u.startswith(("file://", "data:", "blob:")) for u in requests)
    assert heading == f"{HOSTILE} on iphone-13" and "backends" in nav
    assert rows[0].split("\t") == ["engine / backend", "runs on", "1 thread", "2 threads"]
    assert [r.split("\t") for r in rows[1:]] == [[name, runs_on, *cells] for name, runs_on, cells in BACKEND_ROWS]
    assert "Core ML schedules its own threads" in text and "iphone-13 (ios)" in text
