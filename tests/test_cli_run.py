"""`devicelab run` end to end on the host with real ONNX Runtime: JSON contract, store, report, resume,
Ctrl-C, killed and hung runners."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devicelab.result import RESULT_FIELDS
from helpers import DEVICELAB, ctrl_c_able, devicelab, run_json, write_suite

JSON_FIELDS = ("run_id device engine label engine_version model model_sha256 model_bytes precision backend threads "
               "cpus status reason samples_s median_s p90_s load_s first_s rss_before_load_bytes peak_rss_bytes "
               "energy_j_per_inference state_before state_after").split()


def test_run_stores_results_and_writes_a_report(env: dict[str, str], tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "s.yaml", models=["squeezenet1_1", "shufflenet_v2_x1_0"], threads=[1, "all"],
                        precisions=["fp32", "bf16"], protocol={"min_iterations": 6, "max_iterations": 6})
    code, out, err = run_json("run", "--suite", str(suite), env=env)
    assert code == 0, err
    results = out["results"]
    assert len(results) == 8 and set(JSON_FIELDS) <= set(results[0])
    ok = [r for r in results if r["status"] == "ok"]
    unsupported = [r for r in results if r["status"] == "unsupported"]
    assert len(ok) == 4 and len(unsupported) == 4
    assert all("no bf16 inference mode" in r["reason"] for r in unsupported)
    # The engine's import is timed apart, and the RSS before load is read after it: at least what a bare interpreter
    # holds once numpy and onnxruntime are imported (the v1 runner read it before the import: ~22 of ~47 MB).
    imported = subprocess.run([sys.executable, "-c", "import re, numpy, onnxruntime; print(re.search("
                               r"r'VmRSS:\s+(\d+)', open('/proc/self/status').read()).group(1))"],
                              capture_output=True, text=True, check=True)
    for r in ok:
        assert r["ext"]["import_s"] > 0 and r["rss_before_load_bytes"] >= 0.9 * int(imported.stdout) * 1024
    ncpu = len(os.sched_getaffinity(0))
    assert {(r["threads"], len(r["cpus"])) for r in ok} == {(1, 1), (ncpu, ncpu)}
    for r in ok:
        assert len(r["samples_s"]) == 6 and all(s > 0 for s in r["samples_s"])  # exactly the capped count
        assert r["protocol"]["stop_reason"] == "max_iterations" and r["warmups"] >= 1
        assert r["median_s"] == pytest.approx(sum(sorted(r["samples_s"])[2:4]) / 2, rel=1e-12)
        assert r["load_s"] > 0 and r["first_s"] > 0 and r["engine_version"]
        assert 0 < r["rss_before_load_bytes"] < r["peak_rss_bytes"]
        assert "VmHWM" in r["memory_method"] and r["energy_j_per_inference"] is None and r["energy_reason"]
        assert r["state_before"]["loadavg"] and r["state_after"]["at"] >= r["state_before"]["at"]
        assert len(r["model_sha256"]) == 64 and r["model_bytes"] > 0
        assert r["accuracy"]["inputs"] == 4 and r["accuracy"]["max_abs_diff"] < 1e-3  # ORT fp32 vs its reference
    # the human output: the slides' table and the report path
    report = Path(out["report"])
    html = report.read_text()
    assert "squeezenet1_1 on host" in html and "1 thread" in html and "peak memory" in html
    # show --json returns the same stored results
    p = devicelab("show", out["run_id"], "--json", env=env)
    assert p.returncode == 0 and json.loads(p.stdout)["results"] == results
    runs = json.loads(devicelab("runs", "--json", env=env).stdout)
    assert runs[0]["run_id"] == out["run_id"] and runs[0]["status"] == "finished"
    assert runs[0]["seed"] is not None and runs[0]["suite"]["name"] == "test"


@pytest.mark.slow
def test_human_output_has_the_slides_table(env: dict[str, str], tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "s.yaml", threads=[1, "all"])
    p = devicelab("run", "--suite", str(suite), env=env)
    assert p.returncode == 0, p.stderr
    assert "squeezenet1_1 on host" in p.stdout
    header = next(line for line in p.stdout.splitlines() if "1 thread" in line)
    assert "engine" in header and "peak memory" in header
    assert any(line.strip().startswith("│ onnxruntime") and " ms " in line for line in p.stdout.splitlines())
    assert "report: " in p.stdout


@pytest.mark.slow
def test_user_model_path_and_narrowing(env: dict[str, str], tmp_path: Path) -> None:
    from devicelab import zoo

    mine = tmp_path / "my model.onnx"
    mine.write_bytes(zoo.build_bytes("squeezenet1_1"))
    suite = write_suite(tmp_path / "s.yaml", models=["mobilenet_v2", "resnet18"], threads=[1, 2])
    code, out, err = run_json("run", "--suite", str(suite), "--model", str(mine), "--threads", "1", env=env)
    assert code == 0, err
    (r,) = out["results"]
    assert r["model"] == "my model" and r["threads"] == 1 and r["status"] == "ok"
    assert r["model_sha256"] == zoo.sha256_file(mine)


def _processes() -> dict[int, tuple[int, list[bytes]]]:
    """pid -> (parent pid, argv) of every process we can read."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        out[int(entry.name)] = (ppid, cmdline)
    return out


def _runner_pids(parent: int) -> list[int]:
    """The runners `parent` started: exec'd (`-m devicelab.runners.host`) or forked by one of its zygotes (a child
    of a `-m devicelab.runners.zygote` process, whose argv it keeps)."""
    procs = _processes()
    zygotes = {pid for pid, (ppid, argv) in procs.items() if ppid == parent and b"devicelab.runners.zygote" in argv}
    return [pid for pid, (ppid, argv) in procs.items()
            if (ppid == parent and b"devicelab.runners.host" in argv) or ppid in zygotes]


def _leftovers(env: dict[str, str]) -> list[int]:
    """Runners and zygotes of the test's own CLI runs still alive (found by the test's private DEVICELAB_DB in their
    environment, wherever they were reparented)."""
    mark = f"DEVICELAB_DB={env['DEVICELAB_DB']}".encode()
    found = []
    for pid, (_, argv) in _processes().items():
        if any(b"devicelab.runners." in a for a in argv):
            try:
                if mark in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                    found.append(pid)
            except OSError:
                continue
    return found


def _start(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([DEVICELAB, "run", *args, "--json"], env=env, text=True, preexec_fn=ctrl_c_able,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for(predicate, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out waiting"
        time.sleep(0.05)


@pytest.mark.slow
def test_killed_runner_becomes_a_failed_row(env: dict[str, str], tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "s.yaml", protocol={"min_seconds": 60, "max_seconds": 60, "max_iterations": 100000})
    proc = _start(env, "--suite", str(suite))
    pids: list[int] = []
    _wait_for(lambda: bool(pids.extend(_runner_pids(proc.pid)) or pids))
    time.sleep(0.5)
    os.kill(pids[0], signal.SIGKILL)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    (r,) = json.loads(out)["results"]
    assert r["status"] == "failed" and "killed by signal SIGKILL" in r["reason"]
    assert r["samples_s"] == []


@pytest.mark.slow
def test_hung_runner_is_killed_after_the_timeout(env: dict[str, str], tmp_path: Path) -> None:
    # A warmup far longer than the timeout (never steady, capped at 600 s): the runner never finishes it.
    suite = write_suite(tmp_path / "s.yaml", protocol={"warmup_seconds": 600, "warmup_steady": 1e-9,
                                                       "timeout_seconds": 3})
    t0 = time.monotonic()
    code, out, err = run_json("run", "--suite", str(suite), env=env)
    assert code == 1
    (r,) = out["results"]
    assert r["status"] == "failed" and "timeout" in r["reason"] and "killed" in r["reason"]
    assert time.monotonic() - t0 < 60
    assert not _leftovers(env)


@pytest.mark.slow
def test_sigint_keeps_finished_results_and_resume_finishes(env: dict[str, str], tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "s.yaml", models=["squeezenet1_1", "shufflenet_v2_x1_0", "mobilenet_v2"],
                        threads=[1], protocol={"min_seconds": 1.0, "max_seconds": 1.0, "max_iterations": 100000})
    proc = _start(env, "--suite", str(suite))
    db = Path(env["DEVICELAB_DB"])

    def stored() -> int:
        if not db.exists():
            return 0
        with sqlite3.connect(db) as c:
            try:
                return c.execute("SELECT COUNT(*) FROM results").fetchone()[0]
            except sqlite3.OperationalError:
                return 0

    _wait_for(lambda: stored() >= 1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "--resume" in err
    run_id = err.split("--resume ")[1].split()[0]
    kept = json.loads(devicelab("show", run_id, "--json", env=env).stdout)
    assert kept["run"]["status"] == "interrupted"
    assert 1 <= len(kept["results"]) < 3 and all(r["status"] == "ok" for r in kept["results"])
    assert not _leftovers(env)

    code, out, err = run_json("run", "--resume", run_id, env=env)
    assert code == 0, err
    assert out["run_id"] == run_id and len(out["results"]) == 3
    by_key = {(r["model"], r["threads"]): r for r in out["results"]}
    for r in kept["results"]:  # finished rows are kept as they were, never re-run
        assert by_key[(r["model"], r["threads"])] == r
    final = json.loads(devicelab("show", run_id, "--json", env=env).stdout)
    assert final["run"]["status"] == "finished"


@pytest.mark.slow
def test_result_fields_are_the_schema(env: dict[str, str], tmp_path: Path) -> None:
    code, out, err = run_json("run", "--suite", str(write_suite(tmp_path / "s.yaml")), env=env)
    assert code == 0, err
    # a row that is not an LLM config leaves its empty `workload` out (its JSON is what it was before the field)
    assert list(out["results"][0]) == [f for f in RESULT_FIELDS if f != "workload"]


def _script_runner(path: Path, body: str) -> Path:
    """A runner-protocol program written as a user would from docs/runner-protocol.md (Python, v1)."""
    import sys

    path.write_text(f"#!{sys.executable}\nimport json, sys, time\n{body}")
    path.chmod(0o755)
    return path


@pytest.mark.slow
def test_a_runner_without_warmup_s_is_timed_in_bounded_batches(env: dict[str, str], tmp_path: Path) -> None:
    """Its ready line has the required fields only: the first batch is sized from first_s (v1 code: from 0 s per
    iteration, a batch of 1,000,000 that ran into the timeout), so every config runs to the stopping rule."""
    runner = _script_runner(tmp_path / "r.py", """
print(json.dumps({"event": "ready", "protocol": 1, "load_s": 0.01, "first_s": 0.002, "warmups": 3}), flush=True)
for line in sys.stdin:
    cmd = json.loads(line)
    if cmd["cmd"] == "stop":
        print(json.dumps({"event": "done"}), flush=True)
        break
    for _ in range(cmd["iterations"]):
        t0 = time.perf_counter(); time.sleep(0.002); print(json.dumps({"event": "iter", "s": time.perf_counter() - t0}))
    print(json.dumps({"event": "batch"}), flush=True)
""")
    engines = [{"name": "protocol", "label": x, "options": {"binary": str(runner)}} for x in ("a", "b")]
    suite = write_suite(tmp_path / "s.yaml", engines=engines, repeats=2,
                        protocol={"min_seconds": 0.2, "max_iterations": 400, "timeout_seconds": 60})
    code, out, err = run_json("run", "--suite", str(suite), env=env)
    assert code == 0, err
    assert [r["status"] for r in out["results"]] == ["ok"] * 4
    for r in out["results"]:
        assert r["protocol"]["stop_reason"] and len(r["samples_s"]) <= 400 and sum(r["samples_s"]) >= 0.2


@pytest.mark.slow
def test_an_adaptive_ab_whose_label_never_runs_stops_after_a_round(env: dict[str, str], tmp_path: Path) -> None:
    """Its later rounds would fail the same way: they are skipped, with the reason; another pair goes on."""
    broken = _script_runner(tmp_path / "broken.py", """
print(json.dumps({"event": "error", "message": "this build cannot load the model"}), flush=True)
sys.exit(1)
""")
    engines = [{"name": "protocol", "label": x, "options": {"binary": str(broken)}} for x in ("a", "b")]
    engines += [{"name": "onnxruntime", "label": x} for x in ("a", "b")]
    suite = write_suite(tmp_path / "s.yaml", engines=engines, repeats={"min": 3, "max": 4})
    code, out, err = run_json("run", "--suite", str(suite), env=env)
    assert code == 1
    broken_rows = [r for r in out["results"] if r["engine"] == "protocol"]
    assert len(broken_rows) == 2 and all("cannot load the model" in r["reason"] for r in broken_rows)
    assert "A/B after round 1: no ok process of protocol [a] in round 1" in err
    assert "its later rounds are skipped" in err
    assert len([r for r in out["results"] if r["engine"] == "onnxruntime"]) >= 6  # 3 rounds or more of the other pair
