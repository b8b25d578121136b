"""`devicelab build-native --target ios`: the iOS runner app is built and signed with Xcode on a Mac, so the command
prints the steps and builds nothing. The steps are checked against the project they describe (runners/ios)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import yaml

from helpers import devicelab

REPO = Path(__file__).resolve().parent.parent


def _env(env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    return dict(env, DEVICELAB_DATA=str(tmp_path / "data"), DEVICELAB_CACHE=str(tmp_path / "cache"))


def test_prints_the_xcode_steps_and_builds_nothing(env: dict[str, str], tmp_path: Path) -> None:
    p = devicelab("build-native", "--target", "ios", "--json", env=_env(env, tmp_path))
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["target"] == "ios" and doc["built"] is False
    commands = [c for step in doc["steps"] for c in step["commands"]]
    # Nothing was downloaded, built or registered.
    assert not (tmp_path / "data").exists() and not (tmp_path / "cache").exists()

    # The project step names the real project and only options that project declares.
    (generate,) = [shlex.split(c) for c in commands if c.startswith("cmake -S runners/ios ")]
    assert generate[generate.index("-G") + 1] == "Xcode" and "-DCMAKE_SYSTEM_NAME=iOS" in generate
    project = (REPO / "runners" / "ios" / "CMakeLists.txt").read_text()
    declared = set(re.findall(r"^\s*(?:set|option)\((\w+)", project, re.M))
    named = {a[2:].split("=")[0] for step in doc["steps"] for text in (step["title"], *step["commands"])
             for a in shlex.split(text.replace("(", " ").replace(")", " ").replace(";", " "), posix=False)
             if a.startswith("-D") and not a.startswith(("-DCMAKE_", "-DNCNN_", "-DVulkan_"))}
    assert {"DEVELOPMENT_TEAM", "RUNNER_BUNDLE_ID", "DLBENCH_WITH_NCNN", "DLBENCH_WITH_MNN", "MNN_ROOT"} <= named
    assert named - {"ncnn_DIR"} <= declared, named - declared
    # Every file the project compiles exists (the app's own and the shared dlbench core).
    code = "\n".join(line.split("#", 1)[0] for line in project.splitlines())
    sources = [s for call in re.findall(r"(?:add_executable|target_sources)\(([^)]*)\)", code)
               for s in call.split() if s.endswith((".mm", ".cpp"))]
    assert "AppDelegate.mm" in sources and "backend_coreml.mm" in sources and len(sources) >= 7
    assert "${CORE}/backend_mnn.cpp" in sources and "${CORE}/backend_ncnn.cpp" in sources
    for source in sources:
        path = source.replace("${CORE}", str(REPO / "native" / "dlbench"))
        assert (REPO / "runners" / "ios" / path).is_file() or Path(path).is_file(), source
    for name in ("Info.plist", "DevicelabRunner.entitlements"):
        assert name in project and (REPO / "runners" / "ios" / name).is_file()

    # Where the app lands follows from the project's target name; devices.yaml gets a kind: ios entry naming it.
    assert "add_executable(DevicelabRunner MACOSX_BUNDLE" in project
    assert any("build-ios/Release-iphoneos/DevicelabRunner.app" in step["title"] for step in doc["steps"])
    fragment = yaml.safe_load("\n".join(doc["steps"][-1]["commands"]))
    (entry,) = fragment["devices"]
    assert entry["kind"] == "ios" and set(entry) == {"id", "kind", "udid", "runner_app"}
    assert entry["runner_app"].endswith("/build-ios/Release-iphoneos/DevicelabRunner.app")


def test_the_text_form_numbers_the_same_steps(env: dict[str, str], tmp_path: Path) -> None:
    text = devicelab("build-native", "--target", "ios", env=_env(env, tmp_path))
    doc = json.loads(devicelab("build-native", "--target", "ios", "--json", env=_env(env, tmp_path)).stdout)
    assert text.returncode == 0 and "cannot build the ios runner app on this machine" in text.stdout
    for i, step in enumerate(doc["steps"], 1):
        assert f"{i}. {step['title'][:40]}" in text.stdout
        assert all(c in text.stdout for c in step["commands"])


def test_bad_combinations_are_one_line_and_exit_2(env: dict[str, str], tmp_path: Path) -> None:
    p = devicelab("build-native", "--target", "ios", "--with", "openvino", env=_env(env, tmp_path))
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.strip().splitlines() == ["error: --with: only for --target host (the iOS app's backends are chosen in "
                                             "its CMake project; `devicelab build-native --target ios` prints how)"]
    p = devicelab("build-native", "--target", "iso", env=_env(env, tmp_path))
    assert p.returncode == 2 and "unknown target 'iso' (did you mean 'ios'?)" in p.stderr
    assert "allowed: android-arm64, arm64, host, ios" in p.stderr
    assert not (tmp_path / "data").exists()
