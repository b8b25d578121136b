"""Suites and the inventory are validated whole: every problem in one line, naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from devicelab.config import ConfigError, load_inventory, load_suite_file, parse_inventory, parse_suite
from devicelab.errors import DevicelabError


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    raw = {"models": ["mobilenet_v2", str(tmp_path / "nope.onnx"), "mobilenet_v9"],
           "engines": ["onnxrt"], "threads": [0, "four", 2], "precisions": ["fp8"], "backends": ["tpu"],
           "affinity": "middle", "protocol": {"min_iterations": -1}, "colour": "red"}
    with pytest.raises(ConfigError) as e:
        parse_suite(raw, "suite.yaml")
    message = str(e.value)
    assert "\n" not in message
    for expected in ("engines[0]: unknown engine 'onnxrt' (did you mean 'onnxruntime'?); allowed: ",
                     "threads[0]: 0 is not allowed", "threads[1]: 'four' is not allowed",
                     "precisions[0]: 'fp8' is not allowed; allowed: fp32, fp16, bf16, int8",
                     "backends[0]: 'tpu'", "affinity[0]: 'middle'", "models[1].path: model file not found",
                     "models[2]: unknown zoo model 'mobilenet_v9' (did you mean", "protocol.min_iterations",
                     "colour: unknown key"):
        assert expected in message, expected
    assert len(e.value.problems) == 10


def test_defaults_and_normalization() -> None:
    s = parse_suite({"models": "squeezenet1_1", "engines": "onnxruntime", "threads": ["1", "all", 1]}, "x")
    assert s.threads == (1, "all") and s.precisions == ("fp32",) and s.backends == ("cpu",)
    assert s.affinities == ("big",) and s.devices is None
    again = parse_suite(s.to_dict(), "stored")  # what --resume reads back
    assert again == s


def test_suite_file_paths_are_relative_to_the_suite(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    from devicelab import zoo

    (tmp_path / "models" / "m.onnx").write_bytes(zoo.build_bytes("squeezenet1_1"))
    (tmp_path / "s.yaml").write_text("models: [models/m.onnx]\nengines: [onnxruntime]\n")
    s = parse_suite(load_suite_file(tmp_path / "s.yaml"), "s.yaml")
    assert s.models[0].name == "m" and Path(s.models[0].path) == tmp_path / "models" / "m.onnx"
    assert s.name == "s"


def test_suite_that_is_not_yaml(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [a, b\nengines: {")
    with pytest.raises(DevicelabError, match=r"is not valid YAML \(line \d+\)"):
        load_suite_file(bad)


def test_inventory_validation() -> None:
    inv = parse_inventory({"devices": [{"id": "host", "kind": "host", "name": "desk"}]}, "d.yaml")
    assert inv.get("host").options == {"name": "desk"}
    with pytest.raises(ConfigError) as e:
        parse_inventory({"devices": [{"id": "host", "kind": "host", "colour": "red"},
                                     {"id": "p", "kind": "androd"}, {"id": "host", "kind": "host"}],
                         "extra": 1}, "d.yaml")
    message = str(e.value)
    assert "devices[0].colour: unknown key for kind 'host'; allowed: id, kind, name" in message
    assert "devices[1].kind: unknown device kind 'androd'" in message
    assert "devices[2].id: 'host' appears twice" in message
    assert "extra: unknown key" in message


def test_fixed_performance_is_a_boolean_of_android_entries() -> None:
    inv = parse_inventory({"devices": [{"id": "p", "kind": "android", "fixed_performance": True},
                                       {"id": "q", "kind": "android", "fixed_performance": False},
                                       {"id": "r", "kind": "android"}]}, "d.yaml")
    assert [d.options.get("fixed_performance") for d in inv.devices] == [True, False, None]
    with pytest.raises(ConfigError) as e:
        parse_inventory({"devices": [{"id": "p", "kind": "android", "fixed_performance": "yes"},
                                     {"id": "q", "kind": "android", "fixed_performance": None},
                                     {"id": "r", "kind": "android", "fixed_performance": 1},
                                     {"id": "h", "kind": "host", "fixed_performance": True}]}, "d.yaml")
    message = str(e.value)
    assert "\n" not in message
    assert "devices[0].fixed_performance: 'yes' is not allowed; allowed: true, false" in message
    assert "devices[1].fixed_performance: None is not allowed; allowed: true, false" in message
    assert "devices[2].fixed_performance: 1 is not allowed; allowed: true, false" in message
    assert "devices[3].fixed_performance: unknown key for kind 'host'" in message


def test_inventory_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DEVICELAB_DEVICES", raising=False)
    assert load_inventory().source == "built-in inventory"
    (tmp_path / "devices.yaml").write_text("devices: [{id: desk, kind: host}]\n")
    assert load_inventory().devices[0].id == "desk"
    other = tmp_path / "other.yaml"
    other.write_text("devices: [{id: env, kind: host}]\n")
    monkeypatch.setenv("DEVICELAB_DEVICES", str(other))
    assert load_inventory().devices[0].id == "env"
    assert load_inventory(str(tmp_path / "devices.yaml")).devices[0].id == "desk"


def test_repository_inventory_is_valid() -> None:
    repo = Path(__file__).resolve().parent.parent / "devices.yaml"
    assert load_inventory(str(repo)).devices[0].kind == "host"


def test_an_ab_of_a_summary_only_tool_is_refused_up_front(tmp_path: Path) -> None:
    """benchncnn and friends print min/max/avg only: no samples, so compare can never decide an A/B of them (and an
    adaptive one would run all its rounds for nothing). onnxruntime_perf_test writes every run: allowed."""
    binary = tmp_path / "tool"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)

    def ab(engine: str) -> dict[str, object]:
        return {"models": ["squeezenet1_1"], "engines": [{"name": engine, "label": x, "options": {"binary": str(binary)}}
                                                         for x in ("a", "b")]}

    with pytest.raises(ConfigError, match="tool:benchncnn is listed under several labels, but benchncnn prints only "
                                          "summaries"):
        parse_suite(ab("tool:benchncnn"), "s")
    assert parse_suite(ab("tool:onnxruntime_perf_test"), "s").min_repeats == 3
