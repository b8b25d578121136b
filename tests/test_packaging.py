"""`pip install .` ships everything `devicelab run` needs (README: packaging)."""

from __future__ import annotations

import importlib.util
from importlib import resources
from pathlib import Path

import devicelab


def test_installed_package_carries_runners_templates_and_data() -> None:
    assert importlib.util.find_spec("devicelab.runners.host") is not None
    assert importlib.util.find_spec("devicelab.devices.android.device") is not None  # subpackages are listed too
    assert resources.files("devicelab.reports").joinpath("report.html.j2").is_file()
    assert resources.files("devicelab.reports").joinpath("report.css").is_file()
    assert resources.files("devicelab.reports").joinpath("report.js").is_file()
    for name in ("devices.yaml", "suite-default.yaml", "suite-quick.yaml"):
        assert resources.files("devicelab.data").joinpath(name).is_file(), name


def test_tests_import_the_installed_package_not_the_source_tree() -> None:
    source = Path(__file__).resolve().parent.parent / "devicelab"
    # An editable install maps to the source tree on purpose; a regular install must not.
    if "site-packages" in devicelab.__file__:
        assert Path(devicelab.__file__).resolve().parent != source
        assert (Path(devicelab.__file__).parent / "runners" / "host.py").is_file()


def test_native_sources_ship_as_package_data() -> None:
    """`devicelab build-native` builds from the installed package, so the C/C++ sources must be in it."""
    root = resources.files("devicelab.native_src")
    for name in ("CMakeLists.txt", "README.md", "cmake/aarch64-linux-gnu.cmake", "dlprobe/dlprobe.c",
                 "dlbench/main.cpp", "dlbench/backend.hpp", "dlbench/backends.cpp", "dlbench/backend_ncnn.cpp",
                 "dlbench/json.hpp", "dlbench/digest.hpp", "dlbench/dlbench.cpp", "dlbench/dlbench.hpp",
                 "dlbench/channel.cpp", "dlbench/platform.hpp", "dlbench/platform_linux.cpp",
                 "dlbench/platform_apple.cpp", "dlbench/runner.hpp", "llm/CMakeLists.txt", "llm/dlllm.cpp"):
        assert root.joinpath(name).is_file(), name


def test_the_ios_app_project_stays_in_the_repository() -> None:
    """runners/ios is built with Xcode on a Mac from a checkout (its CMakeLists.txt names ../../native/dlbench, the
    repository's layout); an installed devicelab only needs the signed app a user names in devices.yaml, so the
    package does not carry the project (`devicelab build-native --target ios` says to clone the repository)."""
    runners = resources.files("devicelab.runners")
    assert runners.joinpath("host.py").is_file()
    assert not runners.joinpath("ios").is_dir()
    repo_project = Path(__file__).resolve().parent.parent / "runners" / "ios" / "CMakeLists.txt"
    assert "../../native/dlbench" in repo_project.read_text()
