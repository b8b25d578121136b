"""The profiling pass inside a sweep: it never changes the row's timing or peak memory, a failed or malformed pass
never loses the row nor stops the sweep, and the figures it adds (overhead, coverage) come from the pass itself.
Runners here are real processes: devicelab's host runner under dlprobe, and `protocol` runner scripts that misbehave
on purpose."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from devicelab import opprof
from tests.helpers import run_json, write_suite


def _run(tmp_path: Path, env: dict[str, str], name: str, *flags: str, **suite: Any) -> list[dict[str, Any]]:
    path = write_suite(tmp_path / f"{name}.yaml", **suite)
    code, data, stderr = run_json("run", "--suite", str(path), *flags, env=env)
    assert code == 0, stderr[-3000:]
    return data["results"]


def test_peak_memory_under_dlprobe_is_the_timed_runs(native_host: dict[str, Any], tmp_path: Path,
                                                     env: dict[str, str]) -> None:
    """ONNX Runtime started afresh runs under dlprobe, whose ru_maxrss covers the whole process: with --profile that
    includes the profiling pass's second session. The row's peak is the runner's own, read before the pass, so it
    agrees with the same config's peak without --profile; ru_maxrss stays in protocol.dlprobe."""
    # no accuracy pass: dlprobe's ru_maxrss (the run without --profile) would include it, the runner's own peak not
    suite = {"models": ["mobilenet_v2"], "precisions": ["fp32"], "protocol": {"accuracy_inputs": 0},
             "engines": [{"name": "onnxruntime", "options": {"process": "exec"}}]}
    (plain,) = _run(tmp_path, env, "plain", **suite)
    (profiled,) = _run(tmp_path, env, "profiled", "--profile", **suite)
    for r in (plain, profiled):
        assert r["status"] == "ok", r["reason"]
        assert r["protocol"]["dlprobe"]["ru_maxrss_bytes"]
    assert profiled["ext"]["profile"]["ops"]
    assert "before its profiling pass" in profiled["memory_method"], profiled["memory_method"]
    assert "before its profiling pass" not in plain["memory_method"]
    # the second session of the pass is in dlprobe's figure, not in the row's
    assert profiled["protocol"]["dlprobe"]["ru_maxrss_bytes"] > profiled["peak_rss_bytes"]
    # the same config's peak with and without the pass: two ONNX Runtime processes differ by a few MB (its arena;
    # seen ±6 %), the pass's second session adds far more (seen +59 % when ru_maxrss was stored)
    assert abs(profiled["peak_rss_bytes"] - plain["peak_rss_bytes"]) <= 0.15 * plain["peak_rss_bytes"], \
        (profiled["peak_rss_bytes"], plain["peak_rss_bytes"])



def test_peak_memory_under_dlprobe_leaves_the_accuracy_pass_out(native_host: dict[str, Any], tmp_path: Path,
                                                                env: dict[str, str]) -> None:
    """The accuracy inputs run after timing, in the runner's process: dlprobe's ru_maxrss covers them, the runner's
    own peak (read at stop, before them) does not, and that is the row's."""
    # A label no other test uses: a variant of its own, so its first run makes the accuracy pass.
    label = f"acc{tmp_path.name[-12:].replace('-', '').replace('_', '')}"
    suite = {"models": ["mobilenet_v2"], "precisions": ["fp32"], "protocol": {"accuracy_inputs": 16},
             "engines": [{"name": "onnxruntime", "label": label, "options": {"process": "exec"}}]}
    (r,) = _run(tmp_path, env, "acc", **suite)
    assert r["status"] == "ok" and r["accuracy"] and r["protocol"]["dlprobe"]["ru_maxrss_bytes"], r["reason"]
    assert "before its accuracy pass" in r["memory_method"], r["memory_method"]
    (again,) = _run(tmp_path, env, "again", **suite)  # the variant's accuracy is reused: no pass, dlprobe's figure
    assert "accuracy pass" not in again["memory_method"] and "ru_maxrss" in again["memory_method"].split(",")[0]


# A `protocol` runner that times a busy loop and answers `profile` as MODE says: `ok` (valid op lines), `malformed`
# (the lines a careless third-party runner sends), `crash` (dies in the middle of the pass), `error` (an error event).
RUNNER = '''
import json, os, sys, time

MODE = {mode!r}
config = json.load(open(sys.argv[1]))

def emit(event):
    sys.stdout.write(json.dumps(event) + "\\n")
    sys.stdout.flush()

def work():
    t0 = time.perf_counter()
    sum(i * i for i in range(20000))
    return t0, time.perf_counter() - t0

emit({{"event": "ready", "protocol": 2, "load_s": 0.0, "first_s": work()[1], "warmups": 0,
      "profile": MODE != "selfops"}})
for line in sys.stdin:
    cmd = json.loads(line)
    if cmd["cmd"] in ("run", "warmup"):
        got = [work() for _ in range(cmd["iterations"])]
        for t, s in got:
            emit({{"event": "iter", "s": s, "t": t}})
        emit({{"event": "batch"}})
    elif cmd["cmd"] == "profile":
        walls = []
        for _ in range(cmd["iterations"]):
            walls.append(work()[1])
        wall = sorted(walls)[len(walls) // 2]
        if MODE == "ok":
            emit({{"event": "op", "name": "conv", "type": "Conv", "s": wall * 0.7}})
            emit({{"event": "op", "name": "relu", "type": "Relu", "s": wall * 0.2}})
            emit({{"event": "profiled", "iterations": cmd["iterations"], "source": "busy loop", "node_link": "none",
                   "wall_s": wall}})
        elif MODE == "hostile":  # names a page must show as text
            emit({{"event": "op", "name": "<img src=x onerror=alert(1)>", "type": "Conv", "s": wall * 0.5,
                   "node": "</td><script>alert(2)</script>", "fused": ["&amp;<b>f</b>"]}})
            emit({{"event": "profiled", "iterations": cmd["iterations"], "source": "<i>src</i>", "node_link": "exact",
                   "wall_s": wall, "notes": ["<script>alert(3)</script>"]}})
        elif MODE == "malformed":
            emit({{"event": "op", "name": "conv", "type": "Conv", "s": "fast", "node": 5}})
            emit({{"event": "op", "name": "relu", "type": "Relu"}})
            emit({{"event": "profiled", "iterations": "x", "node_link": "maybe"}})
        elif MODE == "crash":
            emit({{"event": "op", "name": "conv", "type": "Conv", "s": 0.001}})
            os._exit(7)
        else:
            emit({{"event": "error", "message": "the op profiler is broken"}})
    elif cmd["cmd"] == "stop":
        if MODE == "selfops":  # op events sent by itself, one of them without a number of seconds
            emit({{"event": "op", "name": "conv", "type": "Conv", "s": 0.001, "passes": 3}})
            emit({{"event": "op", "name": "relu", "type": "Relu", "s": "0.001", "passes": 3}})
        emit({{"event": "done", "peak_rss_bytes": 10000000, "peak_rss_method": "VmHWM"}})
        sys.exit(0)
'''


def _runner(tmp_path: Path, mode: str) -> str:
    path = tmp_path / f"runner_{mode}.py"
    path.write_text(f"#!{sys.executable}\n" + RUNNER.format(mode=mode))
    path.chmod(0o755)
    return str(path)


def _protocol_rows(tmp_path: Path, env: dict[str, str], *modes: str) -> list[dict[str, Any]]:
    engines = [{"name": "protocol", "label": m, "options": {"binary": _runner(tmp_path, m)}} for m in modes]
    return _run(tmp_path, env, "-".join(modes), "--profile", engines=engines, precisions=["fp32"], threads=[1, 2], repeats=1,
                protocol={"lockstep": False})


def test_a_malformed_or_failed_profiling_pass_keeps_the_timing_and_the_sweep(tmp_path: Path,
                                                                            env: dict[str, str]) -> None:
    """A runner whose op lines are malformed, one that sends an error event, one that dies in the middle of the
    pass: each row keeps its timed iterations, its profile says `profiling pass failed: …`, and every config of the
    sweep runs (two thread counts each, the good runner after them)."""
    rows = _protocol_rows(tmp_path, env, "malformed", "error", "crash", "ok")
    assert len(rows) == 8
    by = {(r["label"], r["threads"]): r for r in rows}
    for (mode, threads), r in by.items():
        assert r["status"] == "ok", (mode, r["reason"])
        assert len(r["samples_s"]) >= 5 and r["median_s"] > 0
        p = r["ext"]["profile"]
        assert opprof.problems(p) == []
        if mode == "ok":
            assert [o["type"] for o in p["ops"]] == ["Conv", "Activation"]
            continue
        assert p["unsupported"].startswith("profiling pass failed: "), p
    malformed = by[("malformed", 1)]["ext"]["profile"]["unsupported"]
    assert "op line 1: 's' must be a non-negative number of seconds" in malformed and "2 more" in malformed
    assert by[("error", 1)]["ext"]["profile"]["unsupported"].endswith("the op profiler is broken")
    crash = by[("crash", 1)]
    assert crash["ext"]["profile"]["unsupported"] == "profiling pass failed: the runner ended during its profiling pass"
    # no `done` from a runner that died: no peak of its own (dlprobe's, where it ran, says it is dlprobe's)
    assert crash["peak_rss_bytes"] is None or "runner reported no peak" in crash["memory_method"]
    assert any("timed iterations stand" in n for n in crash["notes"])
    # after an error event or malformed lines the runner still answers `stop`: its `done` is read as always
    for mode in ("error", "malformed"):
        assert by[(mode, 2)]["peak_rss_bytes"] and not any("no 'done'" in n for n in by[(mode, 2)]["notes"])


def test_overhead_is_the_profiled_wall_against_the_timed_median(tmp_path: Path, env: dict[str, str]) -> None:
    """The runner times each profiled iteration whole (`wall_s`) and its ops add up to 90 % of it: the overhead is
    that wall time against the row's timed median, the coverage the ops' share of it, the op sum against the median
    a figure of its own."""
    (r, _) = _protocol_rows(tmp_path, env, "ok")
    p = r["ext"]["profile"]
    assert p["wall_s"] > 0 and p["median_s"] == r["median_s"]
    assert p["overhead"] == pytest.approx(p["wall_s"] / r["median_s"] - 1)
    assert p["coverage"] == pytest.approx(0.9)
    assert p["op_sum_vs_median"] == pytest.approx(p["total_s"] / r["median_s"] - 1)
    assert p["op_sum_vs_median"] != pytest.approx(p["overhead"])
    # the state after is the timed run's: read when timing ended, before the pass
    assert r["state_after"] is not None
    assert "state after: read when timing ended, before the profiling pass" in r["notes"]


GOLDEN = Path(__file__).parent / "golden" / "tools" / "benchmark_model"


def _tool_stand_in(folder: Path, profile_exit: int) -> Path:
    """benchmark_model's stand-in: the golden timed output, or with --enable_op_profiling=true the golden op tables
    (and `profile_exit` as its exit status: a profiling run that fails)."""
    def heredoc(variant: str) -> str:
        return f"cat <<'DEVICELAB_GOLDEN'\n{(GOLDEN / f'{variant}.stdout').read_text().rstrip()}\nDEVICELAB_GOLDEN"

    script = folder / "benchmark_model"
    script.write_text("\n".join([
        "#!/bin/sh",
        'case " $* " in *" --enable_op_profiling=true "*)',
        heredoc("op_profiling_xnnpack"), f"exit {profile_exit};;", "esac",
        heredoc("cpu_xnnpack_percentiles"), "exit 0"]) + "\n")
    script.chmod(0o755)
    return script


def test_a_tools_profiling_run_becomes_the_profile_or_says_it_failed(tmp_path: Path, env: dict[str, str]) -> None:
    """The session's own profiling run of an engine tool (_Attempt.profile_tool): a second run with the tool's op
    profiling flags, its op table the row's profile; a profiling run that fails leaves the timed row as it was."""
    rows = {}
    for code in (0, 1):
        (tmp_path / f"t{code}").mkdir()
        binary = _tool_stand_in(tmp_path / f"t{code}", code)
        (r,) = _run(tmp_path, env, f"tool{code}", "--profile", models=["squeezenet1_1"], precisions=["fp32"],
                    engines=[{"name": "tool:benchmark_model", "options": {"binary": str(binary)}}],
                    protocol={"tool_iterations": 10})
        assert r["status"] == "ok", r["reason"]
        rows[code] = r
    p = rows[0]["ext"]["profile"]
    assert opprof.problems(p) == [] and p["engine_source"].startswith("benchmark_model")
    assert [o["type"] for o in p["ops"]] == ["Conv", "DepthwiseConv", "Conv", "Pool", "Gemm"]
    assert p["median_s"] == rows[0]["median_s"] and p["iterations"] == 20
    assert rows[1]["ext"]["profile"] == {"version": 1, "unsupported": "profiling pass failed: benchmark_model "
                                                                      "exited with 1"}
    assert rows[1]["median_s"] == rows[0]["median_s"]  # the same golden timed output: the timing stands


def test_hostile_op_and_node_names_are_text_in_the_report(tmp_path: Path, env: dict[str, str]) -> None:
    """A runner's op, node, fused-node and source names reach the report's profile sections as text: no dialog, no
    script, no request, and each name reads back as the runner sent it."""
    import shutil

    if not shutil.which("chromium"):
        pytest.fail("Debian's chromium is missing: scripts/test installs it (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    report = tmp_path / "report.html"
    engines = [{"name": "protocol", "label": "hostile", "options": {"binary": _runner(tmp_path, "hostile")}}]
    (r,) = _run(tmp_path, env, "hostile", "--profile", "--report", str(report), engines=engines,
                precisions=["fp32"], repeats=1)
    assert r["ext"]["profile"]["ops"][0]["name"] == "<img src=x onerror=alert(1)>"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        dialogs: list[str] = []
        requests: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.on("request", lambda q: requests.append(q.url))
        page.goto(report.as_uri())
        page.wait_for_load_state("load")
        page.locator("details.config-detail summary").first.click()
        top = page.locator("table.top-nodes").first.inner_text()
        totals = page.locator("table.profile-totals").first.inner_text()
        browser.close()
    assert not dialogs, dialogs
    assert all(u.startswith(("file:", "data:", "about:")) for u in requests), requests
    assert "<img src=x onerror=alert(1)>" in top and "</td><script>alert(2)</script>" in top
    assert "&amp;<b>f</b>" in top
    assert "<i>src</i>" in totals and "<script>alert(3)</script>" in totals


def test_op_events_a_runner_sent_by_itself_are_counted_when_dropped(tmp_path: Path, env: dict[str, str]) -> None:
    """A runner without the `profile` command whose own op events hold a time that is not a number: the profile
    keeps the others and says how many it dropped."""
    (r, _) = _protocol_rows(tmp_path, env, "selfops")
    p = r["ext"]["profile"]
    assert opprof.problems(p) == [] and [o["name"] for o in p["ops"]] == ["conv"]
    assert "1 op event(s) dropped: their 's' is not a number of seconds" in p["notes"]
    assert p["wall_s"] is None and p["overhead"] is None  # no pass of its own: nothing timed it whole
