"""The engines' own tools (tool:*) end to end, on the host and on the emulated phone: devicelab lays out the model,
builds the command line, runs it pinned, reads back the tool's files and parses its output into a Result.

No engine's benchmark binary can be built here (their sources are not on PyPI), so each tool is a stand-in shell
script that checks the command line it was given (the model is where its flags say) and replays that tool's golden
output (tests/golden/tools: benchncnn's captured from the real tool, the others reconstructed from their sources).
The parsers themselves are tested on every golden variant in test_tool_parsers."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from android_env import AdbServer, EmulatedPhone, adb_binaries, cli_env, needs_adb, needs_namespace
from helpers import FAST_PROTOCOL, run_json

pytestmark = pytest.mark.slow  # end to end: not in the fast subset (README, "Tests")

GOLDEN = Path(__file__).parent / "golden" / "tools"

# tool: (golden folder, variant, precision, the shell test that the model is where the command line says)
TOOLS: dict[str, tuple[str, str, str, str]] = {
    "tool:benchncnn": ("benchncnn", "fp16_cpu_1t_big", "fp16",
                       'for a in "$@"; do case "$a" in param=*) test -s "${a#param=}" || exit 3;; esac; done'),
    "tool:benchmark_model": ("benchmark_model", "cpu_xnnpack_percentiles", "fp32",
                             'for a in "$@"; do case "$a" in --graph=*) test -s "${a#--graph=}" || exit 3;; esac; done'),
    "tool:mnn-benchmark": ("mnn_benchmark", "cpu_fp32", "fp32", 'ls "$1"/*.mnn > /dev/null || exit 3'),
    "tool:onnxruntime_perf_test": ("onnxruntime_perf_test", "new_with_result_file", "fp32",
                                   'eval "m=\\${$(($# - 1))}"; test -s "$m" || exit 3'),
}


def stand_in(folder: Path, engine: str, args_file: str, variant: str | None = None, exit_code: int = 0) -> Path:
    """A script standing in for the tool: records its argv (NUL-separated), checks the model, replays the golden
    output; for onnxruntime_perf_test also writes the result file its last argument names."""
    golden, default, _, check = TOOLS[engine]
    variant = variant or default
    lines = ["#!/bin/sh", f"printf '%s\\0' \"$@\" > {shlex.quote(args_file)}", check]
    for stream, fd in (("stdout", 1), ("stderr", 2)):
        path = GOLDEN / golden / f"{variant}.{stream}"
        if path.is_file():
            lines += [f"cat >&{fd} <<'DEVICELAB_GOLDEN'", path.read_text().rstrip("\n"), "DEVICELAB_GOLDEN"]
    result = GOLDEN / golden / f"{variant}.result"
    if result.is_file():
        lines += ['eval "r=\\${$#}"', "cat > \"$r\" <<'DEVICELAB_GOLDEN'", result.read_text().rstrip("\n"),
                  "DEVICELAB_GOLDEN"]
    lines.append(f"exit {exit_code}")
    script = folder / engine.replace(":", "_")
    script.write_text("\n".join(lines) + "\n")
    script.chmod(0o755)
    return script


def _suite(path: Path, engine: str, binary: Path, devices: list[str] | None = None, **protocol: Any) -> Path:
    suite: dict[str, Any] = {"name": "tools", "models": ["squeezenet1_1"], "threads": [1],
                             "precisions": [TOOLS[engine][2]],
                             "engines": [{"name": engine, "options": {"binary": str(binary)}}],
                             "protocol": {**FAST_PROTOCOL, "tool_iterations": 10, **protocol}}
    if devices:
        suite["devices"] = devices
    path.write_text(yaml.safe_dump(suite))
    return path


def _check(r: dict[str, Any], engine: str, argv: list[str]) -> None:
    assert r["status"] == "ok", (r["reason"], r["stderr_tail"])
    tool = r["protocol"]["tool"]
    assert tool["argv"][1:] == argv  # what the tool received, item for item ($@ holds no argv[0])
    assert tool["iterations_asked"] == 10 and str(10) in tool["argv"] + [a.split("=")[-1] for a in tool["argv"]]
    if engine == "tool:onnxruntime_perf_test":  # the only tool that writes per-run times (its result file)
        assert not r["summary_only"] and len(r["samples_s"]) > 1 and r["median_s"] > 0
    else:
        assert r["summary_only"] and r["samples_s"] == [] and tool["avg_s"] > 0 and tool["min_s"] <= tool["max_s"]
        assert any(" prints only " in n for n in r["notes"])  # the tool's own note says what it prints
    assert r["energy_j_per_inference"] is None and r["energy_reason"]


@pytest.mark.parametrize("engine", TOOLS)
def test_tool_on_the_host(engine: str, native_host: dict[str, Any], env: dict[str, str], tmp_path: Path) -> None:
    args = tmp_path / "argv"
    binary = stand_in(tmp_path, engine, str(args))
    code, data, err = run_json("run", "--suite", str(_suite(tmp_path / "s.yaml", engine, binary)), env=env)
    assert code == 0, err
    [r] = data["results"]
    _check(r, engine, args.read_bytes().decode().split("\0")[:-1])
    assert r["protocol"]["tool"]["argv"][0] == str(binary.resolve())
    # under dlprobe (built for the host): pinned before exec, peak memory from wait4
    assert r["protocol"]["dlprobe"]["cpus"] == r["cpus"] and r["memory_method"].startswith("wait4 ru_maxrss")


@pytest.mark.parametrize("probe", [False, True], ids=["pinned-before-exec", "under-dlprobe"])
def test_a_failing_tool_is_a_failed_row_with_its_own_words(probe: bool, native_host: dict[str, Any],
                                                           env: dict[str, str], tmp_path: Path) -> None:
    if not probe:  # a data folder where no dlprobe is registered
        env = {**env, "DEVICELAB_DATA": str(tmp_path / "data")}
    binary = stand_in(tmp_path, "tool:onnxruntime_perf_test", str(tmp_path / "argv"), "error_model_missing", 255)
    code, data, err = run_json("run", "--suite", str(_suite(tmp_path / "s.yaml", "tool:onnxruntime_perf_test",
                                                            binary)), env=env)
    assert code == 1, err
    [r] = data["results"]
    assert r["status"] == "failed" and r["reason"].startswith("onnxruntime_perf_test: ") and r["samples_s"] == []
    assert ("dlprobe" in r["protocol"]) == probe


def test_a_tool_binary_is_required_and_must_exist(env: dict[str, str], tmp_path: Path) -> None:
    suite = tmp_path / "s.yaml"
    suite.write_text(yaml.safe_dump({"models": ["squeezenet1_1"], "engines": [
        {"name": "tool:benchncnn"}, {"name": "tool:benchmark_model", "options": {"binary": "./nope"}}]}))
    code, _, err = run_json("run", "--suite", str(suite), env=env)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "engines[0].options.binary: the path of your benchncnn build is required" in err
    assert "engines[1].options.binary:" in err and "nope is not a file" in err


@needs_adb()
@needs_namespace()
def test_tools_on_the_phone(env: dict[str, str], tmp_path: Path) -> None:
    with AdbServer(adb_binaries()[0][1]) as server, EmulatedPhone(server, tmp_path / "phone") as phone:
        e = cli_env(env, server)
        for engine in TOOLS:
            name = engine.split(":")[1]
            args_on_phone = f"/data/local/tmp/argv-{name}"
            binary = stand_in(tmp_path, engine, args_on_phone)
            suite = _suite(tmp_path / f"{name}.yaml", engine, binary, [phone.serial])
            code, data, err = run_json("run", "--suite", str(suite), env=e)
            assert code == 0, err
            [r] = data["results"]
            received = (phone.root / args_on_phone.lstrip("/")).read_bytes().decode().split("\0")[:-1]
            _check(r, engine, received)
            # the pushed, content-addressed binary, under dlprobe when it is built for arm64, else taskset
            assert r["protocol"]["tool"]["argv"][0].startswith("/data/local/tmp/devicelab/a/")
            assert r["protocol"]["pinning"]["cpus"] == r["cpus"] and r["state_before"]["temperatures_c"]
