"""dlprobe, the native launcher and sampler, built by `devicelab build-native --target host` and run for real."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from devicelab import native

pytestmark = pytest.mark.slow  # end to end: not in the fast subset (README, "Tests")

MIB = 1 << 20
HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def dlprobe(native_host: dict[str, Any]) -> str:
    return native_host["artifacts"]["dlprobe"]["path"]


@pytest.fixture(scope="module")
def alloc_touch(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A C program that allocates and touches N MiB: no interpreter around it, so its peak is N MiB plus libc."""
    out = tmp_path_factory.mktemp("alloc") / "alloc_touch"
    subprocess.run(["cc", "-O1", "-o", str(out), str(HERE / "native" / "alloc_touch.c")], check=True)
    return str(out)


def _last_cpu() -> int:
    return max(os.sched_getaffinity(0))


def test_peak_of_100_mib_from_vmhwm_and_ru_maxrss(dlprobe: str, alloc_touch: str, tmp_path: Path) -> None:
    out = tmp_path / "probe.json"
    p = subprocess.run([dlprobe, "--cpus", str(_last_cpu()), "--out", str(out), "--", alloc_touch, "100", "100"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    doc = json.loads(out.read_text())
    peak = doc["peak"]
    # 100 MiB of touched pages plus the C runtime (~1-2 MiB): both counters within a few percent of 100 MiB.
    for key in ("ru_maxrss_bytes", "vmhwm_bytes"):
        assert 100 * MIB <= peak[key] <= 103 * MIB, (key, peak[key] / MIB)
    assert abs(peak["ru_maxrss_bytes"] - peak["vmhwm_bytes"]) <= 1 * MIB
    assert doc["cpus"] == [_last_cpu()] and doc["exit"] == {"code": 0, "signal": 0, "forwarded_signal": 0}
    series = doc["samples"]
    assert len(series["t_s"]) == len(series["vmrss_bytes"]) == len(series["vmhwm_bytes"]) >= 5
    assert series["t_s"] == sorted(series["t_s"])
    assert max(v for v in series["vmrss_bytes"] if v is not None) >= 100 * MIB
    assert doc["probe"]["cpu_s"] >= 0 and doc["probe"]["fast_samples"] == len(series["t_s"])
    if len(os.sched_getaffinity(0)) > 1:  # a free core exists: the probe keeps off the pinned one
        assert _last_cpu() not in doc["probe_cpus"] and doc["probe_shares_cpus"] is False


def test_passes_stdio_through_pins_before_exec_and_keeps_the_exit_code(dlprobe: str, tmp_path: Path) -> None:
    cpu = _last_cpu()
    script = "read line; echo got:$line; grep Cpus_allowed_list /proc/self/status; echo on-stderr >&2; exit 7"
    p = subprocess.run([dlprobe, "--cpus", str(cpu), "--out", str(tmp_path / "p.json"), "--", "sh", "-c", script],
                       input="hello\n", capture_output=True, text=True, timeout=30)
    assert p.returncode == 7
    lines = p.stdout.splitlines()
    assert lines[0] == "got:hello" and lines[1].split()[-1] == str(cpu)
    assert p.stderr == "on-stderr\n"  # nothing of dlprobe's own on the child's streams
    assert json.loads((tmp_path / "p.json").read_text())["exit"]["code"] == 7


def test_report_goes_to_stderr_without_out(dlprobe: str) -> None:
    p = subprocess.run([dlprobe, "--", "true"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and p.stdout == ""
    doc = json.loads(p.stderr)
    assert doc["dlprobe"] == 1 and doc["argv"] == ["true"] and doc["cpus"] is None


def test_killed_child_and_forwarded_signal(dlprobe: str, tmp_path: Path) -> None:
    p = subprocess.run([dlprobe, "--out", str(tmp_path / "k.json"), "--", "sh", "-c", "kill -9 $$"], timeout=30)
    assert p.returncode == 128 + 9
    assert json.loads((tmp_path / "k.json").read_text())["exit"]["signal"] == 9
    # SIGTERM to dlprobe reaches the child; dlprobe still writes its report and returns the child's status.
    proc = subprocess.Popen([dlprobe, "--out", str(tmp_path / "t.json"), "--", "sleep", "30"])
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 128 + signal.SIGTERM
    doc = json.loads((tmp_path / "t.json").read_text())
    assert doc["exit"]["signal"] == signal.SIGTERM and doc["exit"]["forwarded_signal"] == signal.SIGTERM
    assert doc["wall_s"] < 10


def test_killing_dlprobe_kills_the_child(dlprobe: str, tmp_path: Path) -> None:
    marker = tmp_path / "still-alive"
    proc = subprocess.Popen([dlprobe, "--", "sh", "-c", f"sleep 2; touch {marker}"], stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    proc.kill()
    proc.wait(timeout=10)
    time.sleep(2.5)
    assert not marker.exists(), "the child outlived dlprobe"


@pytest.mark.parametrize("args, field", [
    (["--interval-ms", "0", "--", "true"], "--interval-ms"),
    (["--cpus", "x", "--", "true"], "--cpus"),
    (["--cpus", "4000", "--", "true"], "--cpus"),
    (["--frobnicate", "--", "true"], "unknown option"),
    (["--out", "/nonexistent/dir/x.json", "--", "true"], "--out"),
])
def test_bad_input_is_one_line_and_exit_2(dlprobe: str, args: list[str], field: str) -> None:
    p = subprocess.run([dlprobe, *args], capture_output=True, text=True, timeout=30)
    assert p.returncode == 2
    first = p.stderr.splitlines()[0]
    assert first.startswith("dlprobe: ") and field in first


def test_missing_command_exits_127(dlprobe: str, tmp_path: Path) -> None:
    p = subprocess.run([dlprobe, "--", str(tmp_path / "no-such-program")], capture_output=True, text=True, timeout=30)
    assert p.returncode == 127 and "cannot run" in p.stderr


def test_probe_argv_and_report_parsing(dlprobe: str, alloc_touch: str, tmp_path: Path) -> None:
    """The seam the host device and the Android driver share: build the command, read the report."""
    out = tmp_path / "r.json"
    argv = native.probe_argv(dlprobe, [alloc_touch, "20", "50"], (_last_cpu(),), str(out), interval_ms=5)
    assert argv[:3] == [dlprobe, "--cpus", str(_last_cpu())] and argv[argv.index("--") + 1] == alloc_touch
    assert subprocess.run(argv, timeout=30).returncode == 0
    report = native.ProbeReport.read(out)
    assert report is not None and report.exit_code == 0 and report.exit_signal is None
    assert report.ru_maxrss_bytes is not None and 20 * MIB <= report.ru_maxrss_bytes <= 23 * MIB
    summary = report.summary()
    assert summary["interval_ms"] == 5 and summary["samples"] >= 3 and "freq_khz_range" in summary
    assert native.ProbeReport.read(tmp_path / "missing.json") is None


def test_peak_memory_cross_check() -> None:
    def report(maxrss: int | None) -> native.ProbeReport:
        return native.ProbeReport.parse({"peak": {"ru_maxrss_bytes": maxrss}})

    peak, method, note = native.peak_memory(report(101 * MIB), 100 * MIB, "VmHWM")
    assert peak == 101 * MIB and "ru_maxrss" in method and "cross-checked" in method and note is None
    peak, method, note = native.peak_memory(report(150 * MIB), 100 * MIB, "VmHWM")
    assert peak == 150 * MIB and "differs" in method and note and "+50.0 %" in note
    assert native.peak_memory(None, 100 * MIB, "VmHWM")[:2] == (100 * MIB, "VmHWM of the runner process at stop")
    assert native.peak_memory(report(90 * MIB), None, None)[0] == 90 * MIB
