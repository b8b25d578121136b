"""Bad input: one line on stderr naming the thing and what is allowed, exit 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import devicelab, write_suite


def assert_bad_input(p, *expected: str, db: Path) -> None:
    assert p.returncode == 2, (p.returncode, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    for e in expected:
        assert e in lines[0], lines[0]
    assert p.stdout == ""
    assert not db.exists(), "bad input must not create or touch the database"


@pytest.mark.parametrize("args, expected", [
    (["--engine", "onnxrt"], ["unknown engine 'onnxrt' (did you mean 'onnxruntime'?)", "; allowed: ", "ncnn", "onnxruntime"]),
    (["--threads", "0"], ["threads[0]: 0 is not allowed; allowed: a positive integer or 'all'"]),
    (["--threads", "four"], ["threads[0]: 'four' is not allowed"]),
    (["--precision", "fp8"], ["precisions[0]: 'fp8' is not allowed; allowed: fp32, fp16, bf16, int8"]),
    (["--model", "/nonexistent/model.onnx"], ["models[0].path: model file not found: /nonexistent/model.onnx"]),
    (["--device", "phone"], ["unknown device 'phone'", "allowed: host"]),
    (["--resume", "20260101-000000-dead"], ["no devicelab database"]),
    (["--quick", "--threads", "0", "--engine", "onnxrt"], ["threads[0]", "engines[0]"]),  # all problems at once
])
def test_bad_run_arguments(env: dict[str, str], args: list[str], expected: list[str]) -> None:
    assert_bad_input(devicelab("run", *args, env=env), *expected, db=Path(env["DEVICELAB_DB"]))


def test_suite_that_is_not_yaml(env: dict[str, str], tmp_path: Path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text("models: [mobilenet_v2\n  engines: {{\n")
    assert_bad_input(devicelab("run", "--suite", str(suite), env=env), "is not valid YAML",
                     db=Path(env["DEVICELAB_DB"]))


def test_suite_file_problems(env: dict[str, str], tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "s.yaml", engines=["onnxrt"], precisions=["fp8"], threads=[0])
    assert_bad_input(devicelab("run", "--suite", str(suite), env=env), "engines[0]", "precisions[0]", "threads[0]",
                     db=Path(env["DEVICELAB_DB"]))


def test_inventory_with_unknown_key(env: dict[str, str], tmp_path: Path) -> None:
    inv = tmp_path / "devices.yaml"
    inv.write_text("devices:\n  - id: host\n    kind: host\n    colour: red\n")
    for cmd in (["run", "--quick", "--devices", str(inv)], ["devices", "--devices", str(inv)]):
        assert_bad_input(devicelab(*cmd, env=env), "devices[0].colour: unknown key for kind 'host'",
                         "allowed: id, kind, name", db=Path(env["DEVICELAB_DB"]))
    env = {**env, "DEVICELAB_DEVICES": str(inv)}
    assert_bad_input(devicelab("run", "--quick", env=env), "colour", db=Path(env["DEVICELAB_DB"]))


@pytest.mark.slow
def test_resume_of_unknown_run(env: dict[str, str], tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "s.yaml")
    assert devicelab("run", "--suite", str(suite), env=env).returncode == 0
    db = Path(env["DEVICELAB_DB"])
    before = db.stat().st_mtime_ns
    p = devicelab("run", "--resume", "20260101-000000-dead", env=env)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
    assert "unknown run id '20260101-000000-dead'" in p.stderr
    assert devicelab("show", "nope", env=env).returncode == 2
    assert db.stat().st_mtime_ns == before


def test_unknown_option_is_one_line(env: dict[str, str]) -> None:
    p = devicelab("run", "--bogus", env=env)
    assert p.returncode == 2 and p.stderr.strip() == "error: No such option: --bogus"


@pytest.mark.parametrize("args, env_drop, expected", [
    (["--target", "riscv"], [], ["--target: unknown target 'riscv'", "allowed: android-arm64, arm64, host, ios"]),
    (["--target", "android-arm64"], ["ANDROID_NDK_HOME", "ANDROID_NDK_ROOT"], ["needs ANDROID_NDK_HOME"]),
    (["--jobs", "0"], [], ["--jobs"]),
    (["--with", "tflite"], [], ["--with: unknown backend 'tflite'", "allowed: openvino"]),
    (["--target", "arm64", "--with", "openvino"], [], ["--with openvino: only for --target host"]),
])
def test_bad_build_native_arguments(env: dict[str, str], tmp_path: Path, args: list[str], env_drop: list[str],
                                    expected: list[str]) -> None:
    env = {k: v for k, v in env.items() if k not in env_drop}
    env["DEVICELAB_DATA"] = str(tmp_path / "data")
    p = devicelab("build-native", *args, env=env)
    assert_bad_input(p, *expected, db=Path(env["DEVICELAB_DB"]))
    assert not (tmp_path / "data" / "native").exists()


def test_bad_ncnn_version(env: dict[str, str], tmp_path: Path) -> None:
    p = devicelab("build-native", "--ncnn-version", "latest", env=dict(env, DEVICELAB_DATA=str(tmp_path / "d")))
    assert_bad_input(p, "--ncnn-version: ncnn version 'latest' is not allowed", "1.0.YYYYMMDD", db=Path(env["DEVICELAB_DB"]))


@pytest.mark.parametrize("args, expected", [
    (["run", "--quick", "--report", "/nonexistent/dir/r.html"], ["--report", "folder /nonexistent/dir does not exist"]),
    (["compare", "a", "b", "--junit", "/nonexistent/dir/j.xml"], ["--junit", "folder /nonexistent/dir does not exist"]),
    (["regress", "--markdown", "/nonexistent/dir/m.md"], ["--markdown", "folder /nonexistent/dir does not exist"]),
    (["report", "r", "-o", "/nonexistent/dir/r.html"], ["'-o'", "folder /nonexistent/dir does not exist"]),
    (["export", "r", "-o", "/nonexistent/dir/x.csv"], ["'-o'", "folder /nonexistent/dir does not exist"]),
])
def test_an_output_into_a_missing_folder_is_one_line(env: dict[str, str], args: list[str], expected: list[str]) -> None:
    """Checked before any work: the run does not start, nothing is written."""
    assert_bad_input(devicelab(*args, env=env), *expected, db=Path(env["DEVICELAB_DB"]))


def test_a_suite_with_input_shapes_as_a_list_or_a_name_as_a_list(env: dict[str, str], tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "s.yaml", models=[{"name": "squeezenet1_1", "input_shapes": [1, 3, 224, 224]},
                                                     {"name": ["x"]}])
    assert_bad_input(devicelab("run", "--suite", str(suite), env=env),
                     "models[0].input_shapes: [1, 3, 224, 224] must be a mapping", "models[1].name: ['x'] must be text",
                     db=Path(env["DEVICELAB_DB"]))
    inv = tmp_path / "devices.yaml"
    inv.write_text("devices:\n  - {id: h, kind: [host]}\n")
    assert_bad_input(devicelab("devices", "--devices", str(inv), env=env), "devices[0].kind: unknown device kind",
                     db=Path(env["DEVICELAB_DB"]))
