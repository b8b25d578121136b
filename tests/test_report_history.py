"""The history page (`devicelab report --history`): its sort order as a spec, then a stored history's page in headless
Chromium (Debian's chromium, driven by Playwright): every series drawn, the alerts and the change point shown where
regress finds them, the build changes marked, hostile names kept as text, no network request, no console error.

The history is SYNTHETIC: made in this test by a seeded generator (per round, both labels of a nightly run share that
round's machine speed, as lockstep gives; each night's machine drifts), stored in the test's temporary store, labelled
so in every run's suite name and every row's engine version. It is never a measurement and never a shipped file."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from devicelab.report_history import HistorySeries, order_key
from helpers import devicelab, run_json

HOSTILE = "<script>alert(1)</script>"
HOSTILE_LABEL = "<img src=x onerror=alert(2)>"
SYNTHETIC = "SYNTHETIC history made by test_report_history.py (not a measurement)"
NIGHTS = 10


def _series(name: str, open_state: str, step: float) -> HistorySeries:
    return HistorySeries("nightly", name, open_state or "ok", open_state, step, 5)


def test_sort_order_puts_open_confirmed_first_then_suspected_then_by_step() -> None:
    items = [_series("quiet", "", 0.0), _series("acked big", "", 0.20), _series("suspected small", "suspected", 0.03),
             _series("confirmed small", "confirmed", 0.04), _series("faster", "", -0.09),
             _series("confirmed big", "confirmed", 0.12), _series("suspected big", "suspected", -0.07)]
    assert [s.name for s in sorted(items, key=order_key)] == [
        "confirmed big", "confirmed small", "suspected big", "suspected small", "acked big", "faster", "quiet"]


# ---- the synthetic history: one run per night, each holding four series on the host:
# A  nightly A/B, model and candidate label named like markup: candidate +5 % from night 6 (its build changed there),
# B  nightly A/B: +8 % from night 2, acknowledged after night 5 (judged at its level from then on),
# C  separate runs: +10 % from run 5, where the model file changed (a change point),
# D  separate runs: flat.

A_STEP, B_STEP, C_STEP = 6, 2, 5


def _night(rng: np.random.Generator, i: int, rounds: int = 6, samples: int = 30) -> list[Any]:
    from devicelab.result import OK, Config, Result

    drift = float(rng.uniform(0.92, 1.08))  # this night's machine
    out = []

    def row(engine: str, label: str, version: str, model: str, sha: str, rep: int, median: float) -> Result:
        cfg = Config("host", engine, label, version, model, sha, 1, "fp32", "cpu", 1, (1,), "big", rep)
        xs = median * rng.lognormal(0, 0.004, samples)
        return Result.for_config(f"night-{i:02d}", cfg, OK, samples_s=tuple(float(x) for x in xs))

    for rep in range(rounds):
        machine = drift * float(rng.lognormal(0, 0.03))  # this round's machine speed, shared by both labels
        a = 1.05 if i >= A_STEP else 1.0
        b = 1.08 if i >= B_STEP else 1.0
        out += [row("onnxruntime", "reference", "synthetic-ref", HOSTILE, "ab" * 32, rep, 0.010 * machine),
                row("onnxruntime", HOSTILE_LABEL, "synthetic-cand-2" if i >= A_STEP else "synthetic-cand-1", HOSTILE,
                    "ab" * 32, rep, 0.010 * a * machine),
                row("ncnn", "reference", "synthetic-ref", "squeezenet1_1", "cd" * 32, rep, 0.020 * machine),
                row("ncnn", "candidate", "synthetic-cand", "squeezenet1_1", "cd" * 32, rep, 0.020 * b * machine)]
    # Separate runs: no drift here, so the change point is the injected step alone.
    c = 1.10 if i >= C_STEP else 1.0
    out.append(row("litert", "", "synthetic-1", "mobilenet_v2", ("ef" if i >= C_STEP else "12") * 32, 0,
                   0.012 * c * float(rng.lognormal(0, 0.003))))
    out.append(row("litert", "", "synthetic-1", "resnet18", "34" * 32, 0, 0.030 * float(rng.lognormal(0, 0.003))))
    return out


def _store(store: Any, rng: np.random.Generator, nights: range) -> None:
    from devicelab.store import FINISHED, RunRecord

    for i in nights:
        run_id = f"night-{i:02d}"
        store.create_run(RunRecord(run_id, f"2026-11-{i + 1:02d}T03:00:00.000+00:00", {"name": SYNTHETIC}, i, {},
                                   "0.1.0"))
        for r in _night(rng, i):
            store.add_result(r)
        store.set_run_status(run_id, FINISHED)


@pytest.fixture
def history_store(env: dict[str, str]) -> dict[str, Any]:
    """The synthetic history in the test's store, B's alert acknowledged after night 5 through the CLI."""
    from devicelab.store import SqliteStore

    store = SqliteStore(Path(env["DEVICELAB_DB"]))
    rng = np.random.default_rng(20261206)
    _store(store, rng, range(0, A_STEP))
    code, out, err = run_json("regress", env=env)
    (b_alert,) = [a for s in out["nightly"] for a in s["alerts"] if "ncnn" in s["series"]]
    assert b_alert["state"] == "confirmed" and b_alert["opened_run"] == f"night-{B_STEP:02d}", out
    code, _, err = run_json("regress", "ack", b_alert["id"], "--note", "synthetic: seen", env=env)
    assert code == 0, err
    _store(store, rng, range(A_STEP, NIGHTS))
    store.close()
    code, out, err = run_json("regress", env=env)
    assert code == 1, err
    return {"env": env, "regress": out, "b_alert": b_alert["id"]}


def _open_page(path: Path) -> dict[str, Any]:
    if not shutil.which("chromium"):
        pytest.fail("Debian's chromium is missing: scripts/test installs it (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"),
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                          "--disable-component-update", "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        problems: list[str] = []
        requests: list[str] = []
        page.on("console", lambda m: problems.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
        page.on("dialog", lambda d: (problems.append("dialog: " + d.message), d.dismiss()))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(path.as_uri())
        page.wait_for_load_state("load")
        sections = page.locator("section.series")
        found: list[dict[str, Any]] = []
        for k in range(sections.count()):
            s = sections.nth(k)
            chart = s.locator('svg.chart[data-chart="history"]')
            box = chart.bounding_box() if chart.count() else None
            found.append({
                "heading": s.locator("h3").inner_text(), "kind": s.get_attribute("data-kind"),
                "status": s.get_attribute("data-status"), "drawn": bool(box and box["width"] > 100 and box["height"] > 100),
                "points": s.locator("svg circle").count(), "bands": s.locator("svg polygon.band").count(),
                "levels": s.locator("svg polyline.level").count(),
                "marks": [(m.get_attribute("class"), m.get_attribute("data-run"), m.get_attribute("data-state"))
                          for m in s.locator("svg g.mark").all()],
                "alerts": s.locator("table.alerts tr").all_inner_texts(),
                "change_points": s.locator("table.change-points tr").all_inner_texts(),
                "changes": s.locator("ul.changes li").all_inner_texts()})
        text = page.inner_text("body")
        browser.close()
    return {"sections": found, "problems": problems, "requests": requests, "text": text}


@pytest.mark.slow
def test_history_page_in_chromium(history_store: dict[str, Any], tmp_path: Path) -> None:
    env = history_store["env"]
    path = tmp_path / "history.html"
    p = devicelab("report", "--history", "-o", str(path), env=env)
    assert p.returncode == 0 and "(4 series)" in p.stdout, p.stderr
    html = path.read_text()
    assert HOSTILE not in html and HOSTILE_LABEL not in html  # escaped in the headings, tables and charts alike
    page = _open_page(path)
    assert page["problems"] == []
    assert [u for u in page["requests"] if not u.startswith(("file://", "data:", "blob:"))] == []
    c, a, b, d = page["sections"]  # what changed most first: C (+10 % confirmed), A (+5 % confirmed), B (acked), D
    assert [s["kind"] for s in (c, a, b, d)] == ["runs", "nightly", "nightly", "runs"]
    assert [s["status"] for s in (c, a, b, d)] == ["confirmed", "confirmed", "ok", "ok"]
    assert all(s["drawn"] for s in page["sections"])
    # Nightly: the paired ratio with its band and level, and both labels' medians, a point per night each.
    assert a["heading"] == f"host onnxruntime {HOSTILE} fp32 cpu 1t [{HOSTILE_LABEL} / reference]"
    assert a["points"] == 3 * NIGHTS and a["bands"] >= 1 and a["levels"] >= 1 and d["points"] == NIGHTS
    regress = history_store["regress"]
    (a_alert,) = [x for s in regress["nightly"] for x in s["alerts"] if "onnxruntime" in s["series"]]
    assert (a_alert["state"], a_alert["opened_run"]) == ("confirmed", f"night-{A_STEP:02d}")
    assert ("mark mark-alert", f"night-{A_STEP:02d}", "confirmed") in a["marks"]
    assert any(r.startswith(f"{a_alert['id']}\tconfirmed\tnight-{A_STEP:02d}\t+") for r in a["alerts"])
    # The build that changed the night A's step landed is marked there.
    assert ("mark mark-version", f"night-{A_STEP:02d}", "") in a["marks"]
    assert a["changes"] == [f"night-{A_STEP:02d}: candidate: engine version synthetic-cand-1 → synthetic-cand-2"]
    # B: acknowledged, not open; the level it is judged at moved after the acknowledgement.
    assert ("mark mark-alert", f"night-{B_STEP:02d}", "acknowledged") in b["marks"]
    assert any(r.startswith(f"{history_store['b_alert']}\tacknowledged\tnight-{B_STEP:02d}") for r in b["alerts"])
    # C: the change point regress found, and the model file that changed at the same run.
    (cp,) = [s for s in regress["series"] if "mobilenet_v2" in s["series"]][0]["change_points"]
    assert cp["run_id"] == f"night-{C_STEP:02d}"
    assert ("mark mark-change", f"night-{C_STEP:02d}", "") in c["marks"]
    assert ("mark mark-version", f"night-{C_STEP:02d}", "") in c["marks"]
    assert len(c["change_points"]) == 2 and c["change_points"][1].startswith(f"night-{C_STEP:02d}\tslower\t+")
    assert d["marks"] == [] and d["alerts"] == [] and d["change_points"] == []


@pytest.mark.slow
def test_history_since_and_device_filter_and_bad_values(history_store: dict[str, Any], tmp_path: Path) -> None:
    env = history_store["env"]
    path = tmp_path / "since.html"
    p = devicelab("report", "--history", "--since", f"2026-11-{A_STEP + 1:02d}", "-o", str(path), env=env)
    assert p.returncode == 0, p.stderr
    html = path.read_text()
    runs = {f"night-{i:02d}" for i in range(NIGHTS)}
    shown = {r for r in runs if f"{r}: " in html or f'data-run="{r}"' in html}
    assert f"night-{A_STEP:02d}" in shown and not any(f"night-{i:02d}" in shown for i in range(A_STEP))
    # An acknowledged alert that opened before the window is left out; the open one in it stays.
    assert history_store["b_alert"] not in html and '<tr class="alert-confirmed">' in html
    p = devicelab("report", "--history", "--device", "phone-x", "-o", str(tmp_path / "none.html"), env=env)
    assert p.returncode == 0 and "(0 series)" in p.stdout
    for args, words in ((("--since", "06/11/2026"), ("--since", "ISO date")),
                        (("--threshold", "2 percent"), ("--threshold",)),
                        (("night-01",), ("RUN_ID and --history",))):
        out = tmp_path / "bad.html"
        p = devicelab("report", "--history", *args, "-o", str(out), env=env)
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 2 and len(lines) == 1 and all(w in lines[0] for w in words), p.stderr
        assert not out.exists()  # nothing half-written
    p = devicelab("report", "night-01", "--since", "2026-11-01", env=env)
    assert p.returncode == 2 and "only allowed with --history" in p.stderr
