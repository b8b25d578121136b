"""A config's timeline (ext.timeline): the clock-offset rule as a spec, then real runs — a host config (alone and in
lockstep) whose marks must cover iter_t_s exactly, and dlbench under dlprobe on the emulated phone, whose
frequency and temperature samples (the fixture's /sys, driven by the phone's load model) must land on the
iterations' clock."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from android_env import cli_env, needs_adb, needs_namespace, needs_qemu
from devicelab.opprof.timeline import clock_offset
from helpers import FAST_PROTOCOL, run_json, write_suite


def test_clock_offset_is_bounded_by_each_batch_send_and_receive() -> None:
    # Runner clock = controller clock - 100 s; each batch was sent 1 ms before it began and read 2 ms after it ended.
    marks = [{"start_t": 10.0, "end_t": 10.5, "sent_s": 109.999, "received_s": 110.502},
             {"start_t": 11.0, "end_t": 11.2, "sent_s": 110.9995, "received_s": 111.201}]
    offset, error = clock_offset(marks)  # type: ignore[misc]
    # lo = max(sent - start) = 99.9995, hi = min(received - end) = 100.001: the middle, ± half the interval
    assert offset == pytest.approx(100.00025) and error == pytest.approx(0.00075)
    # One clock (the host's runners): the interval holds 0 and the offset is exactly 0.
    same = [{"start_t": 5.0, "end_t": 5.1, "sent_s": 4.999, "received_s": 5.102}]
    assert clock_offset(same) == (0.0, 0.0)
    assert clock_offset([{"start_t": None, "end_t": None, "sent_s": 1.0, "received_s": 2.0}]) is None


def _check_marks(r: dict[str, Any], kind: str) -> dict[str, Any]:
    """Every timed iteration lies inside the batch (or slice) mark that ran it, the marks follow each other in
    order, their counts add up to the samples, and the warmup ends before the first timed iteration."""
    tl = r["ext"]["timeline"]
    t, s = r["ext"]["iter_t_s"], r["samples_s"]
    assert t[0] == 0.0
    runs = [m for m in tl["marks"] if m["kind"] == kind]
    assert runs and sum(m["iterations"] for m in runs) == len(s)
    for m in runs:
        first, n = m["first_iteration"], m["iterations"]
        assert m["start_s"] == pytest.approx(t[first], abs=1e-6)
        assert m["end_s"] == pytest.approx(t[first + n - 1] + s[first + n - 1], abs=1e-6)
    assert all(a["end_s"] <= b["start_s"] for a, b in zip(runs, runs[1:]))
    warm = [m for m in tl["marks"] if m["kind"] == "warmup"]
    if warm:
        # the warmup ends before the first timed iteration starts, and lasts (its iterations took time)
        assert warm[0]["start_s"] < warm[0]["end_s"] <= 0.0 and warm[0]["iterations"] >= 1
        assert r["protocol"]["warmup"]["iterations"] == warm[0]["iterations"]
    assert tl["span_s"][1] == pytest.approx(t[-1] + s[-1], abs=1e-6)
    return tl


def test_host_config_timeline_marks_line_up_with_iter_t_s(env: dict[str, str], tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "s.yaml", models=["mobilenet_v2"], engines=["onnxruntime"],
                        protocol={"warmup_iterations": 3, "warmup_seconds": 0.2, "warmup_min_seconds": 0.05,
                                  "min_iterations": 10, "max_iterations": 40, "accuracy_inputs": 0})
    code, data, err = run_json("run", "--suite", str(suite), env=env)
    assert code == 0, err
    [r] = data["results"]
    tl = _check_marks(r, "batch")
    assert r["protocol"]["batches"] == len([m for m in tl["marks"] if m["kind"] == "batch"])
    assert r["protocol"]["warmup"]["by"] == "controller" and tl["marks"][0]["kind"] == "warmup"
    # The runner's perf_counter and the controller's monotonic clock are one clock on the host: every batch's send
    # and receive times bound the offset to exactly 0.
    assert tl["controller_offset"] == {"offset_s": 0.0, "error_s": 0.0}
    # The host's sampler reads /sys where it has cpufreq or thermal zones; without them the record says so.
    if tl["freq_khz"] is None:
        assert any("cpu frequencies" in u for u in tl["unavailable"]), tl["unavailable"]
    else:
        assert tl["freq_khz"]["align"]["method"].startswith("offset bounded")
        assert set(tl["freq_khz"]["values"]) <= {str(c) for c in r["cpus"]}
    print({"host timeline unavailable": tl["unavailable"]})


def test_lockstep_labels_get_slice_marks(env: dict[str, str], tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "s.yaml", models=["squeezenet1_1"],
                        engines=[{"name": "onnxruntime", "label": "a"}, {"name": "onnxruntime", "label": "b"}],
                        repeats=1, protocol={"min_seconds": 0.3, "max_seconds": 0.6, "max_iterations": 400,
                                             "accuracy_inputs": 0})
    code, data, err = run_json("run", "--suite", str(suite), env=env)
    assert code == 0, err
    assert len(data["results"]) == 2, [r["status"] for r in data["results"]]
    for r in data["results"]:
        tl = _check_marks(r, "slice")
        assert tl["lockstep_with"] == ["b" if r["label"] == "a" else "a"]
        assert not [m for m in tl["marks"] if m["kind"] == "batch"]


# ---- dlbench under dlprobe on the emulated phone: real samples of a /sys that follows the phone's load


@pytest.mark.slow
@needs_adb()
@needs_namespace()
@needs_qemu()
def test_phone_dlprobe_samples_line_up_with_the_iterations(native_arm64: dict[str, Any], phone: Any, server: Any,
                                                           env: dict[str, str], tmp_path: Path) -> None:
    suite = tmp_path / "s.yaml"
    suite.write_text(yaml.safe_dump({"name": "dlbench-phone", "models": ["digits_cnn"], "engines": ["dlbench"],
                                     "threads": [1], "devices": [phone.serial],
                                     "protocol": {**FAST_PROTOCOL, "min_iterations": 3, "max_iterations": 4,
                                                  "min_seconds": 0.5, "accuracy_inputs": 0,
                                                  "cooldown_timeout_seconds": 20}}))
    code, data, err = run_json("run", "--suite", str(suite), "--report", str(tmp_path / "r.html"),
                               env=cli_env(env, server))
    assert code == 0, err
    [r] = data["results"]
    assert r["status"] == "ok", r
    tl = _check_marks(r, "batch")
    # the report's detail draws the three panels on one time axis (Chromium checks the page in test_profile_view)
    html = (tmp_path / "r.html").read_text()
    for panel in ("iterations", "frequency", "temperature"):
        assert f'data-panel="{panel}"' in html
    freq, temp = tl["freq_khz"], tl["temp_c"]
    assert freq is not None and temp is not None, tl["unavailable"]
    assert freq["align"] == {"method": "same monotonic clock as the runner's t"}
    # qemu-user runs dlbench on the host's kernel: its steady_clock is the controller's clock, through adb too
    assert tl["controller_offset"] == {"offset_s": 0.0, "error_s": 0.0}
    assert set(freq["values"]) == {str(c) for c in r["cpus"]}
    # dlprobe started the runner, so its samples begin before the first iteration (model load, warmup), and it
    # stops sampling when the runner exits, just after the last iteration (stop, done, exit: no accuracy pass here).
    # So on the iterations' clock its last sample falls after the last iteration's end, and the tail after it is
    # shorter than everything before it (load, warmup, timing). No absolute time: a sign error or another clock
    # fails the bounds; a shift earlier than the tail fails the first.
    t = freq["t_s"]
    end = tl["span_s"][1]
    assert all(a < b for a, b in zip(t, t[1:]))
    # dlprobe samples on its own period and takes no sample at the runner's exit: the last one may come up to one
    # period (its own largest gap) before the last iteration's end, when the runner stops quickly after it.
    gap = max(b - a for a, b in zip(t, t[1:]))
    assert t[0] < 0.0 <= end and end - gap <= t[-1], (t[0], t[-1], end, gap)
    assert t[-1] - end < end - t[0], (t[0], t[-1], end)
    # The fixture's cpufreq follows load: while the pinned core runs iterations it sits above the cluster's idle
    # minimum; the readings are the cluster's own steps.
    during = [v for x, v in zip(t, freq["values"][str(r["cpus"][0])]) if 0.0 <= x <= end and v is not None]
    assert during and max(during) > min(freq["values"][str(r["cpus"][0])]), during
    assert all(v > 0 for vs in temp["values"].values() for v in vs if v is not None)
    print({"phone timeline": {"span": tl["span_s"], "freq samples": len(t), "first": t[0], "last": t[-1],
                              "during (kHz)": sorted(set(during)), "zones": list(temp["values"])}})


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to keep one free")
def test_the_controllers_sampler_keeps_off_the_runners_cpus() -> None:
    from devicelab.devices.base import Sampler

    runner_cpu = min(os.sched_getaffinity(0))
    seen: list[set[int]] = []

    def read_freq() -> dict[str, float | None]:
        seen.append(set(os.sched_getaffinity(0)))  # pid 0: the calling thread, i.e. the sampler's own
        return {str(runner_cpu): 1.0}

    sampler = Sampler("test", read_freq, lambda: {}, fast_s=0.001, avoid=[runner_cpu]).start()
    for _ in range(5000):
        if len(seen) >= 3:
            break
        time.sleep(0.001)
    sampler.stop()
    assert len(seen) >= 3 and all(runner_cpu not in cpus and cpus for cpus in seen), seen
    assert sampler.cpus is not None and runner_cpu not in sampler.cpus


def test_thinning_keeps_a_one_sample_spike() -> None:
    """Thousands of samples thinned to a few hundred: a single slow iteration and a single clock drop survive, in
    the record and in the chart (every k-th sample would have dropped them)."""
    from devicelab.charts import timeline_chart
    from devicelab.opprof.timeline import MAX_POINTS, _thin

    n = 10_000
    t = [i * 0.001 for i in range(n)]
    freq = [2_000_000.0] * n
    freq[4321] = 400_000.0
    kept_t, kept = _thin(t, {"0": freq, "1": [None] * n})
    assert len(kept_t) <= MAX_POINTS and min(v for v in kept["0"] if v is not None) == 400_000.0
    assert kept_t == sorted(kept_t)
    latency = [10.0] * n
    latency[777] = 95.0
    svg = timeline_chart("t", t, latency, [], None, None)
    assert svg.count('class="iteration"') <= 600
    ys = [float(x.split('"')[0]) for x in svg.split('class="iteration" cx="')[1:] for x in [x.split('cy="')[1]]]
    assert len(set(ys)) == 2  # the one slow iteration is drawn apart from the rest
