"""dlbench, the C++ runner: protocol v1 against the real binary (host build, and the arm64 build under
qemu-aarch64), outputs compared with the pip ncnn engine on the same seeded inputs, and `devicelab run
--engine dlbench` end to end. qemu proves correctness only: its timings are never looked at."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from devicelab import zoo
from devicelab.engines.base import make_inputs
from devicelab.engines.dlbench import write_inputs
from devicelab.engines.ncnn import convert_onnx
from helpers import run_json, write_suite

pytestmark = pytest.mark.slow  # end to end: not in the fast subset (README, "Tests")

SEED = 1234
MODEL = "squeezenet1_1"  # the fastest zoo model under qemu that still has every common layer type


@pytest.fixture(scope="module")
def model(data_dir: Path) -> dict[str, Any]:
    mf = zoo.zoo_model(MODEL, data_dir / "zoo")
    inputs = zoo.onnx_inputs(mf.path, {})
    param, weights = convert_onnx(mf.path, mf.sha256, [list(i["shape"]) for i in inputs], data_dir / "converted" / "ncnn")
    return {"param": str(param), "weights": str(weights), "inputs": inputs, "onnx": mf.path}


def _config(folder: Path, source: dict[str, Any], /, **extra: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"engine": "dlbench", "model": source["param"], "threads": 1, "cpus": [max(os.sched_getaffinity(0))],
           "precision": "fp32", "backend": "cpu", "seed": SEED,
           "inputs": write_inputs(list(source["inputs"]), SEED, folder),
           "options": {"weights": source["weights"]}, "warmup": {"min_iterations": 1, "min_seconds": 0},
           "outputs_file": "outputs.npz"}
    options = extra.pop("options", {})
    cfg["options"].update(options)
    cfg.update(extra)
    path = folder / "config.json"
    path.write_text(json.dumps(cfg))
    return path


def _events(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def _pip_ncnn_outputs(model: dict[str, Any], threads: int = 1) -> np.ndarray:
    from devicelab.engines import get_engine

    session = get_engine("ncnn").open_session({"threads": threads, "precision": "fp32", "model": model["param"],
                                                "options": {"weights": model["weights"]},
                                                "inputs": list(model["inputs"])})
    return np.asarray(session.outputs(session.run(session.prepare(make_inputs(list(model["inputs"]), SEED))))[0])


def test_protocol_v1_over_stdin(native_host: dict[str, Any], model: dict[str, Any], tmp_path: Path) -> None:
    dlbench = native_host["artifacts"]["dlbench"]["path"]
    config = _config(tmp_path / "run", model, options={"layer_times": 2})
    commands = '{"cmd":"run","iterations":3}\n{"cmd":"run","iterations":2}\n{"cmd":"stop"}\n'
    started = time.monotonic()
    p = subprocess.run([dlbench, str(config)], input=commands, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    events = _events(p.stdout)
    ready = events[0]
    assert ready["event"] == "ready" and ready["protocol"] == 1 and ready["warmups"] >= 1
    assert ready["load_s"] > 0 and ready["first_s"] > 0 and ready["rss_before_load_bytes"] > 0
    assert ready["cpus"] == [max(os.sched_getaffinity(0))] and ready["library"] == "ncnn"
    assert ready["library_version"] and ready["runner_version"] == native_host["dlbench_version"]
    kinds = [e["event"] for e in events[1:]]
    assert kinds[:8] == ["iter"] * 3 + ["batch"] + ["iter"] * 2 + ["batch", "op"]
    assert all(e["s"] > 0 for e in events if e["event"] == "iter")
    # `t`: each iteration's start on CLOCK_MONOTONIC (dlprobe's clock), after the previous one ended
    its = [e for e in events if e["event"] == "iter"]
    assert all(a["t"] + a["s"] <= b["t"] for a, b in zip(its, its[1:]))
    assert its[0]["t"] >= started and its[-1]["t"] <= time.monotonic()
    ops = [e for e in events if e["event"] == "op"]
    assert len(ops) > 20 and {"Convolution", "Pooling"} <= {o["type"] for o in ops} and all(o["s"] >= 0 for o in ops)
    done = events[-1]
    assert done["event"] == "done" and kinds[-1] == "done"
    assert done["peak_rss_bytes"] > ready["rss_before_load_bytes"] and done["peak_rss_method"] == "VmHWM"
    # Outputs: a numpy-readable .npz, the digest convention of the Python runner, and the pip engine's values.
    with np.load(done["outputs_file"]) as npz:
        out = npz["arr_0"]
    assert out.shape == (1, 1000) and out.dtype == np.float32
    import hashlib

    assert done["outputs_sha256"] == hashlib.sha256(b"float32" + str(out.shape).encode() + out.tobytes()).hexdigest()
    reference = _pip_ncnn_outputs(model)
    np.testing.assert_allclose(out, reference.reshape(1, -1), rtol=1e-5, atol=1e-5)


def test_fixed_iterations_without_stdin(native_host: dict[str, Any], model: dict[str, Any], tmp_path: Path) -> None:
    dlbench = native_host["artifacts"]["dlbench"]["path"]
    config = _config(tmp_path / "fixed", model, iterations=4)
    p = subprocess.run([dlbench, str(config)], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    kinds = [e["event"] for e in _events(p.stdout)]
    assert kinds == ["ready"] + ["iter"] * 4 + ["batch", "done"]


@pytest.mark.parametrize("change, code, words", [
    ({"precision": "fp8"}, 2, ["precision", "'fp8'", "allowed: fp32, fp16, bf16, int8"]),
    ({"threads": 0}, 2, ["threads", ">= 1"]),
    ({"backend": "metal"}, 2, ["backend", "allowed: cpu"]),
    ({"options": {"library": "tflite"}}, 2, ["options.library", "allowed: ncnn"]),
    ({"model": "/nonexistent.param"}, 1, ["could not load", "/nonexistent.param"]),
])
def test_bad_config_is_an_error_event(native_host: dict[str, Any], model: dict[str, Any], tmp_path: Path,
                                      change: dict[str, Any], code: int, words: list[str]) -> None:
    dlbench = native_host["artifacts"]["dlbench"]["path"]
    config = _config(tmp_path / "bad", model, **change)
    p = subprocess.run([dlbench, str(config)], input="", capture_output=True, text=True, timeout=60)
    assert p.returncode == code
    (event,) = _events(p.stdout)
    assert event["event"] == "error" and all(w in event["message"] for w in words), event


def test_short_input_file_and_stdin_closed(native_host: dict[str, Any], model: dict[str, Any], tmp_path: Path) -> None:
    dlbench = native_host["artifacts"]["dlbench"]["path"]
    config = _config(tmp_path / "short", model)
    (tmp_path / "short" / "input0.f32").write_bytes(b"\0" * 16)
    p = subprocess.run([dlbench, str(config)], input="", capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "inputs[0].file" in _events(p.stdout)[0]["message"]
    config = _config(tmp_path / "closed", model)
    p = subprocess.run([dlbench, str(config)], input="", capture_output=True, text=True, timeout=60)
    assert p.returncode == 3 and _events(p.stdout)[-1] == {"event": "error", "message": "stdin closed before 'stop'"}


def test_devicelab_run_engine_dlbench_under_dlprobe(native_host: dict[str, Any], env: dict[str, str],
                                                   tmp_path: Path) -> None:
    # The Python runners asked to start afresh (the default forks them from a zygote, which dlprobe cannot wrap)
    exec_ = {"process": "exec"}
    # No accuracy pass: a row that makes one keeps the runner's own peak, read before it (test_opprof_session.py);
    # here every row's peak is dlprobe's, cross-checked.
    suite = write_suite(tmp_path / "s.yaml", models=[MODEL], threads=[1], protocol={"accuracy_inputs": 0}, engines=[
        "dlbench", {"name": "ncnn", "options": exec_}, {"name": "onnxruntime", "options": exec_}])
    code, out, err = run_json("run", "--suite", str(suite), env=env)
    assert code == 0, err
    by_engine = {r["engine"]: r for r in out["results"]}
    assert set(by_engine) == {"dlbench", "ncnn", "onnxruntime"}
    for r in by_engine.values():
        assert r["status"] == "ok", r["reason"]
        assert r["engine"] == "dlbench" or r["ext"]["exec_path"] == "exec"
        # Every runner ran under dlprobe: peak from wait4 ru_maxrss, cross-checked with the runner's VmHWM.
        assert "ru_maxrss" in r["memory_method"] and "cross-checked" in r["memory_method"], r["memory_method"]
        probe = r["protocol"]["dlprobe"]
        assert probe["ru_maxrss_bytes"] == r["peak_rss_bytes"] and probe["cpus"] == r["cpus"]
        assert probe["exit"]["code"] == 0 and probe["samples"] >= 1
    d = by_engine["dlbench"]
    assert d["engine_version"] == native_host["dlbench_version"] and len(d["samples_s"]) >= 5
    assert d["protocol"]["runner_version"] == native_host["dlbench_version"]
    # no Python interpreter in the measured process: far smaller than the pip engine's runner
    assert d["peak_rss_bytes"] < by_engine["ncnn"]["peak_rss_bytes"]


def test_dlbench_not_built_is_unsupported(env: dict[str, str], tmp_path: Path) -> None:
    env = dict(env, DEVICELAB_DATA=str(tmp_path / "empty-data"))
    suite = write_suite(tmp_path / "s.yaml", engines=["dlbench"])
    code, out, err = run_json("run", "--suite", str(suite), env=env)
    assert code == 0, err
    (r,) = out["results"]
    assert r["status"] == "unsupported" and "devicelab build-native --target host" in r["reason"]


# ---- arm64 --------------------------------------------------------------------------------------------


def _elf_machine_and_static(path: str) -> tuple[int, bool]:
    data = Path(path).read_bytes()
    assert data[:4] == b"\x7fELF" and data[4] == 2  # 64-bit
    machine = int.from_bytes(data[18:20], "little")
    phoff = int.from_bytes(data[32:40], "little")
    phentsize, phnum = int.from_bytes(data[54:56], "little"), int.from_bytes(data[56:58], "little")
    types = [int.from_bytes(data[phoff + i * phentsize:phoff + i * phentsize + 4], "little") for i in range(phnum)]
    return machine, 3 not in types  # PT_INTERP = 3: a dynamic executable names its loader


def test_arm64_build_is_static_aarch64(native_arm64: dict[str, Any]) -> None:
    for name in ("dlprobe", "dlbench"):
        machine, static = _elf_machine_and_static(native_arm64["artifacts"][name]["path"])
        assert machine == 183 and static, name  # EM_AARCH64


def test_arm64_dlbench_under_qemu_matches_the_host(native_arm64: dict[str, Any], native_host: dict[str, Any],
                                                   model: dict[str, Any], tmp_path: Path) -> None:
    qemu = shutil.which("qemu-aarch64-static")
    assert qemu
    # fp32 with every lower-precision switch off: the emulated CPU has fp16, which ncnn would otherwise use.
    results = {}
    for target, art in (("host", native_host), ("arm64", native_arm64)):
        config = _config(tmp_path / target, model, iterations=1, warmup={"min_iterations": 0, "min_seconds": 0})
        dlbench = art["artifacts"]["dlbench"]["path"]
        probe_out = tmp_path / f"{target}-probe.json"
        if target == "arm64":
            # the arm64 dlprobe under qemu, launching the arm64 dlbench under qemu (no binfmt_misc needed)
            cmd = [qemu, art["artifacts"]["dlprobe"]["path"], "--out", str(probe_out), "--", qemu, dlbench, str(config)]
        else:
            cmd = [dlbench, str(config)]
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, (target, p.stdout[-2000:], p.stderr[-2000:])
        done = _events(p.stdout)[-1]
        assert done["event"] == "done"
        with np.load(done["outputs_file"]) as npz:
            results[target] = npz["arr_0"]
    host, arm = results["host"], results["arm64"]
    # NEON and AVX kernels sum in different orders: equal to float32 rounding, far inside this bound.
    np.testing.assert_allclose(arm, host, rtol=1e-4, atol=1e-4 * float(np.abs(host).max()))
    assert int(np.argmax(arm)) == int(np.argmax(host))
    doc = json.loads((tmp_path / "arm64-probe.json").read_text())
    assert doc["exit"]["code"] == 0 and doc["peak"]["ru_maxrss_bytes"] > 0


def test_openvino_backend_from_the_wheel(native_host: dict[str, Any], model: dict[str, Any], env: dict[str, str],
                                         tmp_path: Path) -> None:
    """The second backend, built against the openvino wheel's headers and OpenVINOConfig.cmake: fp32 (every
    lower-precision hint off) matches ONNX Runtime on the same ONNX file and inputs; per-layer times come from
    OpenVINO's performance counters."""
    pytest.importorskip("openvino", reason="the openvino wheel is not installed (pip install openvino)")
    from helpers import devicelab

    build_env = dict(env, DEVICELAB_DATA=str(tmp_path / "ov-data"))
    p = devicelab("build-native", "--target", "host", "--with", "openvino", "--json", env=build_env, timeout=1800)
    assert p.returncode == 0, p.stderr[-2000:]
    record = json.loads(p.stdout)
    assert record["backends"] == ["ncnn", "openvino"]
    config = _config(tmp_path / "ov", model, model=str(model["onnx"]), options={"library": "openvino", "layer_times": 1},
                     iterations=3)
    p = subprocess.run([record["artifacts"]["dlbench"]["path"], str(config)], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    events = _events(p.stdout)
    assert events[0]["library"] == "openvino" and events[-1]["event"] == "done"
    ops = [e for e in events if e["event"] == "op"]
    assert ops and "Convolution" in {o["type"] for o in ops}
    with np.load(events[-1]["outputs_file"]) as npz:
        out = npz["arr_0"]
    from devicelab.engines import get_engine

    session = get_engine("onnxruntime").open_session({"threads": 1, "model": str(model["onnx"])})
    reference = np.asarray(session.outputs(session.run(session.prepare(make_inputs(list(model["inputs"]), SEED))))[0])
    np.testing.assert_allclose(out, reference, rtol=1e-4, atol=1e-4)


def test_staged_folder_is_self_contained(native_host: dict[str, Any], model: dict[str, Any], tmp_path: Path) -> None:
    """The seam for drivers that push to a device: after stage(), the folder holds everything dlbench reads,
    referenced relatively, so a copy of it anywhere (symlinks read as their targets, as a push does) runs."""
    from devicelab.engines import get_engine

    folder = tmp_path / "stage"
    folder.mkdir()
    cfg = get_engine("dlbench").stage({
        "engine": "dlbench", "model": model["param"], "options": {"weights": model["weights"], "library": "ncnn"},
        "inputs": list(model["inputs"]), "seed": SEED, "threads": 1, "cpus": [], "precision": "fp32",
        "backend": "cpu", "warmup": {"min_iterations": 0, "min_seconds": 0}, "iterations": 2}, folder)
    (folder / "config.json").write_text(json.dumps(cfg))
    assert not any(str(v).startswith("/") for v in (cfg["model"], cfg["options"]["weights"], cfg["inputs"][0]["file"]))
    pushed = tmp_path / "device" / "data" / "local" / "tmp" / "run"
    shutil.copytree(folder, pushed)  # copies what the links point at
    p = subprocess.run([native_host["artifacts"]["dlbench"]["path"], "run/config.json"], cwd=pushed.parent,
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert _events(p.stdout)[-1]["event"] == "done"


# ---- the TCP channel (--listen, --port-file) and batch mode (results_file): what the iOS runner app speaks --------


class _SocketLines:
    """The controller's end of dlbench's TCP channel as devicelab.measure's `Lines` (what a device kind hands
    JsonLines), so the real Driver runs the protocol over the socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buffer = sock, b""

    def write(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_line(self, deadline: float) -> bytes:
        from devicelab.measure import ChannelClosedError, ChannelTimeoutError

        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ChannelTimeoutError()
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                raise ChannelTimeoutError() from None
            if not chunk:
                raise ChannelClosedError("dlbench closed the connection")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line


def _wait_for_port_file(path: Path, proc: subprocess.Popen[str], seconds: float = 60) -> dict[str, Any]:
    """Poll as a controller polls a phone's container: every read must be the whole document or nothing."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists():
            return json.loads(path.read_text())  # a half-written file would not parse
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.005)
    raise AssertionError(f"no port file {path}")


Listen = Callable[..., "subprocess.Popen[str]"]


@pytest.fixture
def listen() -> Iterator[Listen]:
    """Starts dlbench (or the hooks harness) in --listen mode; whatever a failed test left waiting is killed."""
    started: list[subprocess.Popen[str]] = []

    def start(dlbench: str, config: Path, cwd: Path, *extra: str) -> subprocess.Popen[str]:
        # The config by a path relative to the working folder, as the iOS app gets it (cwd = its container root).
        proc = subprocess.Popen([dlbench, "--listen", "0", "--port-file", "port.json", *extra,
                                 str(config.relative_to(cwd))], cwd=cwd, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_listen_speaks_the_protocol_over_one_tcp_connection(native_host: dict[str, Any], model: dict[str, Any],
                                                            tmp_path: Path, listen: Listen) -> None:
    from devicelab.measure import Driver, JsonLines, ProtocolSettings, now_deadline

    dlbench = native_host["artifacts"]["dlbench"]["path"]
    home = tmp_path / "container"
    config = _config(home / "Documents" / "run", model)
    # The port file's name is a dangling link: writing the file in place would go through the link and create
    # its target; the atomic write (a temporary file, then rename) replaces the link itself.
    (home / "port.json").symlink_to(tmp_path / "elsewhere.json")
    proc = listen(dlbench, config, home)
    doc = _wait_for_port_file(home / "port.json", proc)
    assert set(doc) == {"port", "pid"} and doc["pid"] == proc.pid and 0 < doc["port"] < 65536
    assert not (home / "port.json").is_symlink() and not (tmp_path / "elsewhere.json").exists()
    assert sorted(p.name for p in home.iterdir()) == ["Documents", "port.json"]  # no temporary file left behind
    with socket.create_connection(("127.0.0.1", doc["port"]), timeout=30) as sock:
        # devicelab's own controller side of the protocol, over the socket
        driver = Driver(JsonLines(_SocketLines(sock)), ProtocolSettings(min_iterations=4, min_seconds=0,
                                                                         max_iterations=6), now_deadline(120))
        driver.start()
        driver.time_alone()
        measurement = driver.finish()
        assert sock.recv(1) == b""  # dlbench closes its end after `done`
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out == ""  # every protocol line went over the socket
    assert "listening on 127.0.0.1:" in err
    assert measurement.ready["pid"] == proc.pid and measurement.ready["protocol"] == 1
    assert measurement.ready["cpus"] == [max(os.sched_getaffinity(0))]
    assert len(measurement.samples_s) >= 4 and all(s > 0 for s in measurement.samples_s)
    done = measurement.done
    assert done["peak_rss_method"] == "VmHWM" and done["peak_rss_bytes"] > measurement.ready["rss_before_load_bytes"]
    # The same outputs as over stdin/stdout.
    p = subprocess.run([dlbench, str(_config(tmp_path / "stdio", model, iterations=1))], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and _events(p.stdout)[-1]["outputs_sha256"] == done["outputs_sha256"]


def test_listen_ends_when_the_connection_closes(native_host: dict[str, Any], model: dict[str, Any],
                                               tmp_path: Path, listen: Listen) -> None:
    proc = listen(native_host["artifacts"]["dlbench"]["path"], _config(tmp_path / "run", model), tmp_path)
    doc = _wait_for_port_file(tmp_path / "port.json", proc)
    with socket.create_connection(("127.0.0.1", doc["port"]), timeout=30) as sock:
        first = sock.makefile("rb").readline()
        assert json.loads(first)["event"] == "ready"
    out, err = proc.communicate(timeout=60)
    # A closed connection is a closed stdin: exit 3, and stderr (the only channel left) says why.
    assert proc.returncode == 3 and out == ""
    assert err.strip().splitlines()[-1] == "dlbench: the connection closed before 'stop'"


def test_nobody_connecting_ends_the_wait(native_host: dict[str, Any], model: dict[str, Any], tmp_path: Path,
                                         listen: Listen) -> None:
    proc = listen(native_host["artifacts"]["dlbench"]["path"], _config(tmp_path / "run", model), tmp_path,
                  "--accept-timeout", "1")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "listening on 127.0.0.1:" in err
    assert _events(out) == [{"event": "error", "message": "--listen: nobody connected within 1 s (--accept-timeout)"}]
    assert not (tmp_path / "port.json").exists()  # it would name a port nobody listens on


def test_batch_mode_writes_every_event_to_the_results_file(native_host: dict[str, Any], model: dict[str, Any],
                                                           tmp_path: Path) -> None:
    config = _config(tmp_path / "Documents" / "run", model, iterations=3, results_file="Documents/run/results.jsonl")
    p = subprocess.run([native_host["artifacts"]["dlbench"]["path"], "Documents/run/config.json"], cwd=tmp_path,
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    # results_file is relative to the working folder (not the config's): the controller names where it pulls from
    written = (config.parent / "results.jsonl").read_text()
    assert written == p.stdout
    kinds = [e["event"] for e in _events(written)]
    assert kinds == ["ready"] + ["iter"] * 3 + ["batch", "done"]


def test_results_file_gets_errors_too(native_host: dict[str, Any], model: dict[str, Any], tmp_path: Path) -> None:
    _config(tmp_path, model, iterations=1, precision="fp8", results_file="results.jsonl")
    p = subprocess.run([native_host["artifacts"]["dlbench"]["path"], "config.json"], cwd=tmp_path,
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    (event,) = _events((tmp_path / "results.jsonl").read_text())
    assert event["event"] == "error" and "precision" in event["message"]


@pytest.mark.parametrize("args, words", [
    (["--listen", "abc"], ["--listen", "'abc'", "allowed: a port number 0-65535"]),
    (["--listen", "70000"], ["--listen", "'70000'", "0-65535"]),
    (["--port-file", "port.json"], ["--port-file", "only with --listen"]),
    (["--bogus"], ["unknown option '--bogus'", "allowed: --listen PORT, --port-file FILE, --accept-timeout SECONDS"]),
    (["--accept-timeout", "5"], ["--accept-timeout", "only with --listen"]),
    (["--listen", "0", "--accept-timeout", "0"], ["--accept-timeout", "'0'", "allowed: whole seconds 1-86400"]),
    (["--listen", "0", "--port-file", "port.json", "other.json"], ["one config file only"]),
    (["--listen", "0", "--port-file", "no/such/folder/port.json"], ["--port-file", "cannot write"]),
])
def test_bad_flags_are_one_line_and_a_nonzero_exit(native_host: dict[str, Any], model: dict[str, Any], tmp_path: Path,
                                                   args: list[str], words: list[str]) -> None:
    _config(tmp_path, model)
    p = subprocess.run([native_host["artifacts"]["dlbench"]["path"], *args, "config.json"], cwd=tmp_path,
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert p.returncode != 0
    (event,) = _events(p.stdout)
    assert event["event"] == "error" and all(w in event["message"] for w in words), event
    assert not (tmp_path / "port.json").exists()
    assert p.returncode == (1 if "cannot write" in words else 2)


HOOKS_HARNESS = """
// Stands in for runners/ios/AppDelegate.mm, which cannot be compiled here: the same dl::bench_main and dl::Hooks,
// with fixed strings where the app asks iOS (qos_class_self, ProcessInfo.thermalState). Never a measurement.
#include "dlbench.hpp"
int main(int argc, char** argv) {
    dl::Hooks hooks;
    hooks.ready = [](dl::JsonObject& e) { e.add("qos", "harness-qos"); };
    int batches = 0;
    hooks.batch = [&batches](dl::JsonObject& e) { e.add("thermal_state", batches++ ? "harness-2" : "harness-1"); };
    return dl::bench_main(argc, argv, hooks);
}
"""


def test_the_app_hooks_add_keys_to_ready_and_each_batch(native_host: dict[str, Any], model: dict[str, Any],
                                                        tmp_path: Path, listen: Listen) -> None:
    """The iOS app's part in C++ terms: bench_main with Hooks, compiled from the installed sources against the
    cached ncnn, driven over --listen like the app."""
    from devicelab import native

    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        pytest.skip(f"no C++ compiler ({compiler})")
    cache = Path(os.environ.get("DEVICELAB_CACHE") or Path.home() / ".cache" / "devicelab")
    ncnn = cache / f"ncnn-{native_host['ncnn_version']}-host" / "install"
    src = native.sources_dir() / "dlbench"
    (tmp_path / "harness.cpp").write_text(HOOKS_HARNESS)
    exe = tmp_path / "harness"
    build = subprocess.run([compiler, "-std=c++17", "-O1", "-DDLBENCH_WITH_NCNN", f"-I{src}", f"-I{ncnn / 'include' / 'ncnn'}",
                            str(tmp_path / "harness.cpp"), *(str(src / f) for f in (
                                "dlbench.cpp", "channel.cpp", "backends.cpp", "platform_linux.cpp", "backend_ncnn.cpp")),
                            str(ncnn / "lib" / "libncnn.a"), "-fopenmp", "-lpthread", "-o", str(exe)],
                           capture_output=True, text=True, timeout=900)
    assert build.returncode == 0, build.stderr[-3000:]
    proc = listen(str(exe), _config(tmp_path / "run", model), tmp_path)
    doc = _wait_for_port_file(tmp_path / "port.json", proc)
    with socket.create_connection(("127.0.0.1", doc["port"]), timeout=60) as sock:
        sock.sendall(b'{"cmd":"run","iterations":2}\n{"cmd":"run","iterations":1}\n{"cmd":"stop"}\n')
        events = _events(sock.makefile("rb").read().decode())
    assert proc.wait(timeout=60) == 0
    assert events[0]["event"] == "ready" and events[0]["qos"] == "harness-qos"
    assert [e.get("thermal_state") for e in events if e["event"] == "batch"] == ["harness-1", "harness-2"]
    assert [e["event"] for e in events] == ["ready", "iter", "iter", "batch", "iter", "batch", "done"]
    assert not any("qos" in e or "thermal_state" in e for e in events if e["event"] in ("iter", "done"))
