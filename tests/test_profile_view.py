"""What the per-op profiles say: the diff math as a spec (the only hand-written profiles here), then REAL profiles of
a host run (ONNX Runtime fp32 and int8 of one model, `run --profile`): the diff table between the two, `devicelab
profile` in text and --json, its bad input, `export --what profiles`, and the report's new sections in headless
Chromium."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from devicelab.opprof.diff import TypeRow, sentence, type_rows
from helpers import devicelab, run_json, write_suite


def test_type_rows_and_the_sentence() -> None:
    a = {"by_type": {"Conv": 0.0046, "Gemm": 0.001, "Activation": 0.0004}}
    b = {"by_type": {"Conv": 0.002, "Gemm": 0.001, "Quantize": 0.0004, "Dequantize": 0.00005}}
    rows = type_rows(a, b)
    # largest change first; every type either config has (Dequantize, under 2 % of both totals, stays out of the
    # sentence, never out of the table)
    assert [r.type for r in rows] == ["Conv", "Activation", "Quantize", "Dequantize", "Gemm"]
    conv = rows[0]
    assert conv.ratio == pytest.approx(0.002 / 0.0046) and conv.delta_s == pytest.approx(-0.0026)
    assert rows[2] == TypeRow("Quantize", 0.0, 0.0004) and rows[2].ratio is None
    assert sentence(rows, "int8") == ("int8 made Conv 2.3× faster, dropped Activation (0.4 ms) and added "
                                      "Quantize 0.4 ms")
    big = type_rows({"by_type": {"Conv": 0.012, "Gemm": 0.0124}}, {"by_type": {"Conv": 0.0001, "Gemm": 0.001}})
    assert sentence(big, "int8") == "int8 made Conv 120× faster and made Gemm 12× faster"
    same = type_rows({"by_type": {"Conv": 1.0}}, {"by_type": {"Conv": 1.01}})
    assert sentence(same, "ncnn") == "ncnn: no op type changed by more than 5%"


# ---- a real host run with profiles


@pytest.fixture(scope="module")
def profiled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    import os

    base = tmp_path_factory.mktemp("profiled")
    env = {**os.environ, "DEVICELAB_DATA": str(base / "data"), "DEVICELAB_DB": str(base / "db.sqlite"),
           "HOME": str(base / "home"), "COLUMNS": "80"}
    env.pop("DEVICELAB_DEVICES", None)
    suite = write_suite(base / "s.yaml", models=["mobilenet_v2"], engines=["onnxruntime", "ncnn"],
                        precisions=["fp32", "int8"], protocol={"accuracy_inputs": 0})
    code, out, err = run_json("run", "--suite", str(suite), "--profile", "--report", str(base / "report.html"),
                              env=env)
    assert code == 0, err
    every = {(r["engine"], r["precision"]): r for r in out["results"]}
    assert len(every) == 4 and all(r["status"] == "ok" for r in every.values()), every
    results = {p: every[("onnxruntime", p)] for p in ("fp32", "int8")}
    return {"env": env, "run_id": out["run_id"], "results": results, "every": every, "base": base}


def _name(r: dict[str, Any]) -> str:
    return f"{r['engine']}/{r['model']}/{r['precision']}/{r['backend']}/{r['threads']}t"


def test_profile_json_diffs_fp32_and_int8_of_real_profiles(profiled: dict[str, Any]) -> None:
    code, out, err = run_json("profile", profiled["run_id"], env=profiled["env"])
    assert code == 0, err
    fp32, int8 = profiled["results"]["fp32"], profiled["results"]["int8"]
    configs = {c["config"]: c for c in out["configs"]}
    assert set(configs) == {_name(r) for r in profiled["every"].values()}
    for r in (fp32, int8):
        p, stored = configs[_name(r)]["profile"], r["ext"]["profile"]
        assert p["total_s"] == stored["total_s"] and p["overhead"] == stored["overhead"]
        assert p["median_s"] == r["median_s"]
        tl = configs[_name(r)]["timeline"]  # the timeline in brief: its marks counted, what it lacks
        assert tl["batches"] == r["protocol"]["batches"]
        assert tl["warmup_iterations"] == r["protocol"]["warmup"]["iterations"]
        assert tl["unavailable"] == r["ext"]["timeline"]["unavailable"]
        assert list(p["by_type"].values()) == sorted(p["by_type"].values(), reverse=True)
        top = p["top"]
        assert 0 < len(top) <= 10 and [n["s"] for n in top] == sorted((o["s"] for o in stored["ops"]),
                                                                       reverse=True)[:len(top)]
    # one diff per engine that ran fp32 and int8: the two engines' int8 side by side
    assert sorted((d["a"], d["b"]) for d in out["diffs"]) == sorted(
        (_name(profiled["every"][(e, "fp32")]), _name(profiled["every"][(e, "int8")])) for e in ("ncnn", "onnxruntime"))
    [d] = [d for d in out["diffs"] if d["a"] == _name(fp32)]
    by = {x["type"]: x for x in d["rows"]}
    for t in {*fp32["ext"]["profile"]["by_type"], *int8["ext"]["profile"]["by_type"]}:
        a, b = fp32["ext"]["profile"]["by_type"].get(t, 0.0), int8["ext"]["profile"]["by_type"].get(t, 0.0)
        if a or b:
            assert by[t]["a_s"] == pytest.approx(a) and by[t]["b_s"] == pytest.approx(b)
            assert by[t]["ratio"] == (pytest.approx(b / a) if a else None)
    # The sentence names at most 4 changes, the largest first; what int8 added (types fp32 has not) is named only
    # when it is 2 % or more of int8's op total, and always then while fewer than 4 changes are named.
    total_b = int8["ext"]["profile"]["total_s"]
    named = d["sentence"].count(", ") + d["sentence"].count(" and ") + 1
    for x in d["rows"]:
        if x["a_s"] == 0 and x["b_s"] > 0:
            said = f"added {x['type']} " in d["sentence"]
            assert not said or x["b_s"] >= 0.02 * total_b, (x, d["sentence"])
            assert said or x["b_s"] < 0.02 * total_b or named == 4, (x, d["sentence"])
        else:
            assert f"added {x['type']} " not in d["sentence"]
    assert d["sentence"].startswith("int8 ")
    print(json.dumps({"diff": d["sentence"], "overhead": {k: v["profile"]["overhead"] for k, v in configs.items()}}))


def test_profile_text_fits_80_columns_and_two_configs_diff(profiled: dict[str, Any]) -> None:
    fp32, int8 = profiled["results"]["fp32"], profiled["results"]["int8"]
    p = devicelab("profile", profiled["run_id"], "--config", _name(fp32), "--config", _name(int8),
                  env=profiled["env"])
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert max(len(x) for x in lines) <= 80, max(lines, key=len)
    assert "profiling overhead" in p.stdout and "top" in p.stdout and "int8 " in p.stdout
    # each config's timeline sentence: its timed seconds in its batches (the numbers of the stored row)
    text = " ".join(p.stdout.split())
    timed = fp32["ext"]["timeline"]["span_s"][1]
    assert f"timeline {timed:.3g} s timed in {fp32['protocol']['batches']} batch" in text, text[:600]
    assert f"A {_name(fp32)}" in p.stdout.replace("\n", " ")


@pytest.mark.parametrize("args, words", [
    (["no-such-run"], "no-such-run"),
    (["RUN", "--config", "onnxruntime/mobilenet_v2/fp16/cpu/1t"], "--config"),
    (["RUN", "--config", "a", "--config", "b", "--config", "c"], "--config"),
])
def test_profile_bad_input_is_one_line_exit_2(profiled: dict[str, Any], args: list[str], words: str) -> None:
    args = [profiled["run_id"] if a == "RUN" else a for a in args]
    p = devicelab("profile", *args, env=profiled["env"])
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and words in p.stderr, p.stderr
    assert p.stdout == ""


def test_export_profiles_csv_and_json(profiled: dict[str, Any]) -> None:
    env, run_id = profiled["env"], profiled["run_id"]
    p = devicelab("export", run_id, "--what", "profiles", env=env)
    assert p.returncode == 0, p.stderr
    rows = list(csv.DictReader(io.StringIO(p.stdout)))
    for (engine, prec), r in profiled["every"].items():
        mine = [x for x in rows if x["precision"] == prec and x["engine"] == engine]
        assert len(mine) == len(r["ext"]["profile"]["ops"])
        assert sum(float(x["seconds"]) for x in mine) == pytest.approx(r["ext"]["profile"]["total_s"])
        assert {x["type"] for x in mine} == set(r["ext"]["profile"]["by_type"])
    p = devicelab("export", run_id, "--what", "profiles", "--format", "json", env=env)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert len(out) == 4 and all(len(c["profile"]["ops"]) > 0 for c in out)
    for c in out:
        r = profiled["every"][(c["engine"], c["precision"])]
        assert c["profile"]["ops"] == r["ext"]["profile"]["ops"]
        assert c["profile"]["overhead"] == r["ext"]["profile"]["overhead"]
    p = devicelab("export", run_id, "--what", "ops", env=env)
    assert p.returncode == 2 and "--what" in p.stderr and "profiles" in p.stderr


def test_report_profile_sections_in_chromium(profiled: dict[str, Any]) -> None:
    if not shutil.which("chromium"):
        pytest.fail("Debian's chromium is missing: scripts/test installs it (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    path: Path = profiled["base"] / "report.html"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=shutil.which("chromium"),
                                     args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                           "--disable-component-update", "--disable-sync", "--no-first-run"])
        page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        console: list[str] = []
        requests: list[str] = []
        page.on("console", lambda m: console.append(m.text) if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: console.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(path.as_uri())
        page.wait_for_load_state("load")
        section = page.locator("section.profile")
        assert section.count() == 1
        every = profiled["every"]
        # one stacked bar per config, a segment per op type it has, drawn with a width; engines side by side, each
        # engine's precisions side by side
        chart = page.locator('[data-kind="profile"] svg[data-chart="stacked"]')
        bars = chart.locator("rect.segment")
        assert bars.count() == sum(len(r["ext"]["profile"]["by_type"]) for r in every.values())
        assert all(float(bars.nth(i).get_attribute("width") or 0) > 0 for i in range(bars.count()))
        names = [t for t in chart.locator("text").all_text_contents() if t.endswith(" 1t")]
        assert names == ["ncnn fp32 1t", "ncnn int8 1t", "onnxruntime fp32 1t", "onnxruntime int8 1t"], names
        totals = page.locator("table.profile-totals tr").all_inner_texts()
        assert len(totals) == 5 and all("%" in row for row in totals[1:])  # the overhead, with every profile
        tables = page.locator("table.profile-diff")
        assert tables.count() == 2
        for k, engine in enumerate(("ncnn", "onnxruntime")):
            a, b = every[(engine, "fp32")], every[(engine, "int8")]
            types = {t for r in (a, b) for t, v in r["ext"]["profile"]["by_type"].items() if v > 0}
            assert tables.nth(k).locator("tr").count() == 1 + len(types)
            assert page.locator("p.diff-sentence").nth(k).inner_text().startswith("int8 ")
        # each config's detail: its timeline (iterations drawn, batch marks) and its top nodes
        details = page.locator("details.config-detail")
        assert details.count() == 4
        details.nth(0).locator("summary").click()
        svg = details.nth(0).locator('svg[data-chart="timeline"]')
        assert svg.is_visible()
        summary = details.nth(0).locator("summary").inner_text()
        r0 = next(r for (e, p), r in every.items() if summary.startswith(f"{e} {p} "))
        assert svg.locator("circle.iteration").count() == len(r0["samples_s"])
        marks = svg.locator('g[data-panel="iterations"] rect.mark[data-kind="batch"]')
        assert marks.count() == r0["protocol"]["batches"]
        top = details.nth(0).locator("table.top-nodes tr")
        assert top.count() == 1 + min(10, len(r0["ext"]["profile"]["ops"]))
        browser.close()
    assert not console, console
    assert all(u.startswith(("file:", "data:", "about:")) for u in requests), requests


def test_config_names_tell_devices_and_cpus_apart(tmp_path: Path) -> None:
    """A run on two devices, an affinity sweep: every row keeps a name of its own in `devicelab profile` (none is
    dropped) and `--config` picks the one named."""
    import os

    from devicelab.opprof.diff import config_names
    from devicelab.result import OK, Config, Result
    from helpers import HISTORY_RUNS, PHONE, store_history

    db = tmp_path / "db.sqlite"
    store_history(db)
    env = {**os.environ, "DEVICELAB_DB": str(db), "DEVICELAB_DATA": str(tmp_path / "data"),
           "HOME": str(tmp_path / "home"), "COLUMNS": "80"}
    code, out, err = run_json("profile", HISTORY_RUNS[0], env=env)
    assert code == 0, err
    names = [c["config"] for c in out["configs"]]
    assert len(names) == len(set(names)) == 2 * (3 * 4 * 5 + 2)  # every row of both devices
    host, phone = "host/onnxruntime/mobilenet_v2/int8/cpu/4t#2", f"{PHONE}/onnxruntime/mobilenet_v2/int8/cpu/4t#2"
    assert {host, phone} <= set(names)
    code, out, err = run_json("profile", HISTORY_RUNS[0], "--config", phone, env=env)
    assert code == 0, err
    (only,) = out["configs"]
    assert only["config"] == phone
    # an affinity sweep: the same config on the big and the little cores
    rows = [Result.for_config("r", Config("host", "onnxruntime", "", "1", "m", "0" * 64, 1, "fp32", "cpu", 2, cpus,
                                          "big"), OK, samples_s=(0.004,)) for cpus in ((0, 1), (2, 3))]
    assert set(config_names(rows)) == {"onnxruntime/m/fp32/cpu/2t@cpus0,1", "onnxruntime/m/fp32/cpu/2t@cpus2,3"}
    with pytest.raises(ValueError, match="both named onnxruntime/m/fp32/cpu/2t@cpus0,1"):
        config_names([rows[0], rows[0]])


def test_charts_escape_hostile_names_and_keep_one_colour_per_op_type() -> None:
    """Names from devices and engines (a thermal zone, a mark's fields) are escaped whole, never cut inside an entity:
    the SVG parses as XML and the text reads back as given. Each shared op type has one colour in every chart."""
    import xml.etree.ElementTree as ET

    from devicelab.charts import TYPE_COLORS, stacked_bar_chart, timeline_chart
    from devicelab.opprof.vocab import SHARED_TYPES

    zone = "x" * 19 + "&<script>alert(1)</script>"
    marks = [{"kind": "batch", "start_s": 0.0, "end_s": 0.02, "iterations": "<b>5</b>"}]
    svg = timeline_chart("t <i>", [0.0, 0.01], [10.0, 10.0], marks, None,
                         {"t_s": [0.0, 0.01], "values": {zone: [40.0, 41.0]}})
    root = ET.fromstring(svg)  # an entity cut in two, or a raw '<', would not parse
    texts = ["".join(e.itertext()) for e in root.iter()]
    assert (zone[:20]) in texts and any("<b>5</b> iterations" in t for t in texts)
    assert "<script>" not in svg
    assert set(TYPE_COLORS) == set(SHARED_TYPES) and len(set(TYPE_COLORS.values())) == len(SHARED_TYPES)
    a = stacked_bar_chart("a", [("x", {"Conv": 2.0, "Add": 1.0})], ["Conv", "Add"])
    b = stacked_bar_chart("b", [("y", {"Quantize": 3.0, "Add": 0.5, "Conv": 1.0})], ["Quantize", "Conv", "Add"])
    for svg in (a, b):
        fills = {e.get("data-type"): e.get("fill") for e in ET.fromstring(svg).iter() if e.get("data-type")}
        assert fills["Conv"] == TYPE_COLORS["Conv"] and fills["Add"] == TYPE_COLORS["Add"]
    # every one of 17 types in the legend, none cut to "+3 more"
    every = stacked_bar_chart("c", [("z", {t: 1.0 for t in SHARED_TYPES})], list(SHARED_TYPES))
    assert "more</text>" not in every and all(f">{t}</text>" in every for t in SHARED_TYPES)


def test_a_timeline_with_non_numbers_is_refused() -> None:
    from devicelab.result import OK, Config, Result

    cfg = Config("host", "onnxruntime", "", "1", "m", "0" * 64, 1, "fp32", "cpu", 1, (0,), "big")
    good = {"version": 1, "marks": [{"kind": "batch", "start_s": 0.0, "end_s": 0.01, "iterations": 2}],
            "unavailable": []}
    Result.for_config("r", cfg, OK, samples_s=(0.004, 0.004), ext={"timeline": good})
    for bad in ({**good, "marks": [{**good["marks"][0], "iterations": "<b>2</b>"}]},
                {**good, "marks": [{**good["marks"][0], "start_s": "0"}]},
                {**good, "temp_c": {"t_s": ["0"], "values": {"z": [40.0]}}}):
        with pytest.raises(ValueError):
            Result.for_config("r", cfg, OK, samples_s=(0.004, 0.004), ext={"timeline": bad})
