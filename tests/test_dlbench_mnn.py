"""dlbench's MNN backend behind -DDLBENCH_WITH_MNN=ON: the CMake logic that finds a user's MNN, configure only.

No MNN C++ SDK exists on this machine (the pip wheel has no headers), so backend_mnn.cpp is never compiled here; what
is tested is what CMake does with MNN_ROOT — the one-line errors when it is missing or wrong, and, against a prefix
laid out like MNN's `cmake --install` but holding EMPTY placeholder files (so nothing can be compiled or linked
against it), which source, definition, include folder and link items the generated build names."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from devicelab.native import sources_dir

pytestmark = pytest.mark.skipif(shutil.which("cmake") is None, reason="needs cmake")


def _configure(build: Path, *args: str) -> subprocess.CompletedProcess[str]:
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    # ncnn off: the MNN flag alone must carry dlbench (no other backend, no ncnn_DIR needed).
    return subprocess.run(["cmake", "-S", str(sources_dir()), "-B", str(build), *generator, "-DDLBENCH_WITH_NCNN=OFF",
                           "-DDLBENCH_WITH_MNN=ON", *args], capture_output=True, text=True, timeout=300)


def _error(p: subprocess.CompletedProcess[str]) -> str:
    """The FATAL_ERROR's text: CMake wraps a long message over indented lines; joined back, it is one line."""
    m = re.search(r"CMake Error at [^\n]*\(message\):\n((?:  [^\n]*\n)+)", p.stderr)
    assert m, p.stderr
    return " ".join(m.group(1).split())


def _prefix(root: Path, library: str, *extra: str) -> Path:
    (root / "include" / "MNN").mkdir(parents=True)
    (root / "include" / "MNN" / "Interpreter.hpp").write_text("")
    (root / "lib").mkdir()
    for name in (library, *extra):
        (root / "lib" / name).write_bytes(b"")
    return root


def _build_rules(build: Path) -> str:
    files = [build / "build.ninja"] if (build / "build.ninja").is_file() else list(build.rglob("*.make")) + list(
        build.rglob("link.txt")) + list(build.rglob("flags.make"))
    return "\n".join(f.read_text() for f in files)


def test_without_mnn_root_configure_stops_with_one_line(tmp_path: Path) -> None:
    p = _configure(tmp_path / "build")
    assert p.returncode != 0
    assert _error(p) == ("DLBENCH_WITH_MNN: pass -DMNN_ROOT=<MNN install prefix> (with include/MNN/Interpreter.hpp and "
                         "lib/libMNN); see native/README.md, 'MNN'")
    assert "not written yet" not in p.stderr


def test_an_mnn_root_without_mnn_names_what_is_missing(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    p = _configure(tmp_path / "build", f"-DMNN_ROOT={empty}")
    assert p.returncode != 0
    assert _error(p) == (f"DLBENCH_WITH_MNN: MNN_ROOT={empty} has no include/MNN/Interpreter.hpp or lib/libMNN (give "
                         "the prefix MNN's own `cmake --install` wrote); see native/README.md, 'MNN'")
    # Headers alone: only the library is named.
    (empty / "include" / "MNN").mkdir(parents=True)
    (empty / "include" / "MNN" / "Interpreter.hpp").write_text("")
    p = _configure(tmp_path / "build", f"-DMNN_ROOT={empty}")
    assert p.returncode != 0 and f"MNN_ROOT={empty} has no lib/libMNN (give" in _error(p)


def test_a_shared_mnn_with_its_gpu_libraries(tmp_path: Path) -> None:
    root = _prefix(tmp_path / "mnn", "libMNN.so", "libMNN_CL.so")
    build = tmp_path / "build"
    p = _configure(build, f"-DMNN_ROOT={root}")
    assert p.returncode == 0, p.stderr
    assert "dlbench backends: mnn" in p.stdout
    rules = _build_rules(build)
    assert "backend_mnn.cpp" in rules and "-DDLBENCH_WITH_MNN" in rules and f"-I{root}/include" in rules
    assert "backend_ncnn.cpp" not in rules and "--whole-archive" not in rules
    # The separately built OpenCL backend registers itself when loaded: linked even though nothing calls into it.
    # (CMake links a library without an SONAME, as these empty files are, by -l and -L rather than by its path.)
    assert re.search(r"--push-state,--no-as-needed\s+(\S*libMNN_CL\.so|-lMNN_CL)\s+-Wl,--pop-state", rules), rules[-3000:]
    assert f"{root}/lib/libMNN.so" in rules


def test_a_static_mnn_is_linked_whole(tmp_path: Path) -> None:
    root = _prefix(tmp_path / "mnn", "libMNN.a")
    build = tmp_path / "build"
    p = _configure(build, f"-DMNN_ROOT={root}")
    assert p.returncode == 0, p.stderr
    rules = _build_rules(build)
    assert re.search(r"-Wl,--whole-archive\s+\S*libMNN\.a\s+-Wl,--no-whole-archive", rules), rules[-3000:]
    assert "libMNN_CL" not in rules

    # A second configure with another MNN_ROOT finds that one, not the first one's cached paths.
    other = _prefix(tmp_path / "other", "libMNN.so")
    p = _configure(build, f"-DMNN_ROOT={other}")
    assert p.returncode == 0, p.stderr
    rules = _build_rules(build)
    assert f"{other}/lib/libMNN.so" in rules and f"{root}/lib" not in rules
