"""Building llama.cpp (libllama, llama-bench) and devicelab's LLM runner dlllm for a target, cached by version and flags.

`devicelab build-native --target host|arm64 --llm` calls `build()` after the usual dlprobe/dlbench build:

1. the llama-cpp-python source distribution (``pip download --no-deps --no-binary :all: llama-cpp-python==V``) into
   ``<cache>/src``; its ``vendor/llama.cpp`` is the whole of llama.cpp at the commit its CHANGELOG names;
2. one CMake project (native/llm) that adds llama.cpp as a subdirectory and builds only the targets ``dlllm`` and
   ``llama-bench`` (so: ggml, libllama, llama-common) — in a build folder
   ``<cache>/llamacpp-<version>-<target>-<key>/`` that is KEPT, keyed by the llama.cpp version, the flags below and
   the compiler: the first build compiles llama.cpp (minutes), a changed dlllm.cpp recompiles dlllm alone;
3. the programs are copied into the data folder's native registry beside dlprobe (``<data>/native/<target>/``), so
   devices push them as they push dlbench; ``registry.json`` keeps the build's facts under ``"llm"``.

Flags, the same on every machine (``FLAGS``): GGML_NATIVE=OFF, so the build never depends on the CPU it was built on
(``-march=native`` would make a cached or shipped binary die with SIGILL on an older CPU, and two machines'
"same version" builds would run different kernels); ggml then compiles its x86-64 default set (SSE4.2, AVX, AVX2,
FMA, F16C, BMI2 — `host_cpu_problem` refuses a host without them) and plain armv8-a for arm64 (no dotprod/i8mm: a phone
that has them runs slower than a native build would). GGML_OPENMP=OFF: ggml's own thread pool on every target
(libgomp cannot be linked into a static arm64 binary by ggml's CMake), the same one llama-bench uses here. Static
libraries everywhere, and fully static executables for arm64 (they run on any arm64 Linux, under qemu, on a phone).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devicelab import paths
from devicelab.errors import DevicelabError
from devicelab.native import (Log, NativeBuildError, _cmake_generator, _locked, _now, _run, cache_dir, read_registry,
                              registry_path, sources_dir, toolchain)
from devicelab.paths import sha256_file

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
LLM_TARGETS = ("host", "arm64")
# What each target builds: llama-bench needs llama.cpp's common library (about a third of the compile time), so the
# arm64 build (phones, qemu) has dlllm only; tool:llama-bench on a phone uses a llama-bench the user names.
LLM_ARTIFACTS: dict[str, tuple[str, ...]] = {"host": ("dlllm", "llama-bench"), "arm64": ("dlllm",)}
FLAGS = ("-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=OFF", "-DGGML_OPENMP=OFF", "-DBUILD_SHARED_LIBS=OFF")
# What a compile job may take: llama.cpp is ~140 translation units, some heavy; the default keeps a shared 2-core
# machine usable (nice 10 as well).
DEFAULT_JOBS = 2
# What the dlllm build reads from the package's native sources (its own, and dlbench's shared parts).
_SOURCES = ("llm/CMakeLists.txt", "llm/dlllm.cpp", "dlbench/json.hpp", "dlbench/digest.hpp", "dlbench/platform.hpp",
            "dlbench/runner.hpp", "dlbench/channel.cpp", "dlbench/platform_linux.cpp")
X86_FEATURES = ("sse4_2", "avx", "avx2", "fma", "f16c", "bmi2")


@dataclass(frozen=True)
class LlmBuild:
    target: str
    llama_cpp_commit: str  # what llama-cpp-python's CHANGELOG says its vendor/llama.cpp is
    llama_cpp_python: str
    dlllm_sha256: str  # of native/llm's sources
    flags: tuple[str, ...]
    toolchain: str
    artifacts: dict[str, Path]
    seconds: float  # this call's build time (0 when everything was cached)
    built_at: str

    @property
    def version(self) -> str:
        """The engine version Results carry: the llama.cpp commit, and dlllm's own sources."""
        return f"llama.cpp-{self.llama_cpp_commit}+dlllm-{self.dlllm_sha256[:12]}"

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "llama_cpp_commit": self.llama_cpp_commit,
                "llama_cpp_python": self.llama_cpp_python, "dlllm_sha256": self.dlllm_sha256,
                "version": self.version, "flags": list(self.flags), "toolchain": self.toolchain,
                "artifacts": {k: str(v) for k, v in self.artifacts.items()}, "seconds": self.seconds,
                "built_at": self.built_at}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LlmBuild:
        return cls(d["target"], d["llama_cpp_commit"], d["llama_cpp_python"], d["dlllm_sha256"], tuple(d["flags"]),
                   d["toolchain"], {k: Path(v) for k, v in d["artifacts"].items()}, float(d.get("seconds", 0)),
                   d.get("built_at", ""))


def llm_sources_sha256() -> str:
    h = hashlib.sha256()
    for name in _SOURCES:
        h.update(name.encode() + b"\0" + (sources_dir() / name).read_bytes() + b"\0")
    return h.hexdigest()


def host_cpu_problem() -> str | None:
    """Why this x86-64 host cannot run the GGML_NATIVE=OFF build (which assumes AVX2/FMA/F16C), or None."""
    import platform

    if platform.machine() not in ("x86_64", "AMD64"):
        return None
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    missing = [f for f in X86_FEATURES if f not in flags]
    return (f"the llama.cpp build needs a CPU with {', '.join(X86_FEATURES)}; this one lacks {', '.join(missing)}"
            if missing else None)


def sdist(log: Log, version: str = LLAMA_CPP_PYTHON_VERSION) -> Path:
    """The llama-cpp-python source distribution, downloaded once into <cache>/src."""
    dest = cache_dir() / "src"
    archive = dest / f"llama_cpp_python-{version}.tar.gz"
    if archive.is_file():
        return archive
    with _locked(dest / f".llama-cpp-python-{version}.lock"):
        if archive.is_file():
            return archive
        log(f"downloading the llama-cpp-python {version} source distribution (it vendors llama.cpp)")
        with tempfile.TemporaryDirectory(dir=dest, prefix=".download-") as tmp:
            log_path = dest / f"llama-cpp-python-{version}-download.log"
            log_path.write_text("")
            _run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                  f"llama-cpp-python=={version}", "-d", tmp], log_path, f"pip download llama-cpp-python=={version}")
            got = list(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
            if not got:
                raise NativeBuildError(f"pip download llama-cpp-python=={version} left no .tar.gz — full log: {log_path}")
            os.replace(got[0], archive)
    return archive


_COMMIT = re.compile(r"update llama\.cpp to ggml-org/llama\.cpp@([0-9a-f]{7,40})")


def vendored_commit(changelog: str, version: str) -> str:
    """The llama.cpp commit llama-cpp-python `version` vendors, from its CHANGELOG's section for that version."""
    section = changelog.split(f"## [{version}]", 1)
    if len(section) < 2:
        raise NativeBuildError(f"llama-cpp-python {version}: its CHANGELOG.md has no section for this version")
    body = section[1].split("\n## [", 1)[0]
    found = _COMMIT.findall(body)
    if not found:
        raise NativeBuildError(f"llama-cpp-python {version}: its CHANGELOG.md names no llama.cpp commit")
    return found[0]


def unpacked(log: Log, version: str = LLAMA_CPP_PYTHON_VERSION) -> tuple[Path, str]:
    """(vendor/llama.cpp of the unpacked sdist, the llama.cpp commit), unpacked once into <cache>/src."""
    root = cache_dir() / "src" / f"llama_cpp_python-{version}"
    done = root / ".devicelab-unpacked"
    with _locked(cache_dir() / "src" / f".llama-cpp-python-{version}-unpack.lock"):
        if not done.is_file():
            archive = sdist(log, version)
            if root.exists():
                shutil.rmtree(root)
            unpack = root.with_name(root.name + ".unpack")
            shutil.rmtree(unpack, ignore_errors=True)
            with tarfile.open(archive) as tar:
                top = tar.getnames()[0].split("/")[0]
                tar.extractall(unpack, filter="data")
            os.replace(unpack / top, root)
            shutil.rmtree(unpack, ignore_errors=True)
            done.write_text(version)
    llama = root / "vendor" / "llama.cpp"
    if not (llama / "include" / "llama.h").is_file():
        raise NativeBuildError(f"llama-cpp-python {version}: the sdist has no vendor/llama.cpp/include/llama.h")
    return llama, vendored_commit((root / "CHANGELOG.md").read_text(), version)


def build_key(version: str, commit: str, flags: tuple[str, ...], identity: str) -> str:
    return hashlib.sha256(json.dumps([version, commit, list(flags), identity]).encode()).hexdigest()[:12]



def _forget_other_toolchain(build_dir: Path, cmake_args: Sequence[str]) -> None:
    """A build folder configured with another toolchain file (e.g. from a checkout since removed) cannot be
    configured again: CMake includes the old file by its absolute path. Its configuration is dropped (the compiled
    objects stay, and ninja reuses those whose commands did not change)."""
    cache = build_dir / "CMakeCache.txt"
    wanted = next((a.partition("=")[2] for a in cmake_args if a.startswith("-DCMAKE_TOOLCHAIN_FILE=")), None)
    if wanted is None or not cache.is_file():
        return
    for line in cache.read_text(errors="replace").splitlines():
        if line.startswith("CMAKE_TOOLCHAIN_FILE:") and line.partition("=")[2] != wanted:
            cache.unlink()
            shutil.rmtree(build_dir / "CMakeFiles", ignore_errors=True)
            return

def build(target: str, *, jobs: int | None = None, log: Log | None = None,
          version: str = LLAMA_CPP_PYTHON_VERSION) -> LlmBuild:
    """Build (or reuse) dlllm and llama-bench for `target` and register them beside the target's dlprobe."""
    say = log or (lambda _msg: None)
    if target not in LLM_TARGETS:
        raise DevicelabError(f"--llm: --target {target} is not allowed; allowed: {', '.join(LLM_TARGETS)}")
    chain = toolchain(target)
    if target == "host" and (problem := host_cpu_problem()):
        raise DevicelabError(f"--llm: {problem}")
    if shutil.which("cmake") is None:
        raise DevicelabError("build-native needs cmake (apt-get install cmake ninja-build)")
    llama, commit = unpacked(say, version)
    flags = (*FLAGS, f"-DLLAMA_BUILD_COMMIT={commit}", "-DLLAMA_BUILD_NUMBER=0",
             f"-DDEVICELAB_STATIC={'ON' if chain.static else 'OFF'}")
    key = build_key(version, commit, flags, chain.identity)
    root = cache_dir() / f"llamacpp-{version}-{target}-{key}"
    digest = llm_sources_sha256()
    start = time.monotonic()
    with _locked(cache_dir() / f".llamacpp-{target}.lock"):
        # The sources are copied to a fixed place (CMake's build folder is tied to its source folder), each only
        # when changed: the kept build folder then recompiles only what changed.
        src = root / "sources"
        for name in _SOURCES:
            new = (sources_dir() / name).read_bytes()
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            if not (src / name).is_file() or (src / name).read_bytes() != new:
                (src / name).write_bytes(new)
        build_dir, log_path = root / "build", root / "build.log"
        # A toolchain file from the package is copied beside the sources too: CMake keeps its absolute path in the
        # build folder, and the package's path changes with the checkout or venv that installed it.
        cmake_args: list[str] = []
        for arg in chain.cmake_args:
            name, _, value = arg.partition("=")
            if name == "-DCMAKE_TOOLCHAIN_FILE" and Path(value).is_relative_to(sources_dir()):
                kept = src / "cmake" / Path(value).name
                kept.parent.mkdir(parents=True, exist_ok=True)
                if not kept.is_file() or kept.read_bytes() != Path(value).read_bytes():
                    kept.write_bytes(Path(value).read_bytes())
                arg = f"{name}={kept}"
            cmake_args.append(arg)
        _forget_other_toolchain(build_dir, cmake_args)
        stamp = root / "devicelab-build.json"
        recorded = json.loads(stamp.read_text()) if stamp.is_file() else {}
        fresh = recorded.get("dlllm_sha256") != digest or not all(built(build_dir, n) for n in LLM_ARTIFACTS[target]) \
            or not (build_dir / "CMakeCache.txt").is_file()
        if fresh:
            say(f"building llama.cpp {commit} (llama-cpp-python {version}) and dlllm for {target} "
                f"(the first time compiles llama.cpp: tens of minutes on 2 busy cores; later only what changed): {log_path}")
            # At least niceness 10, not 10 more than the caller's (a caller already at 10 would otherwise get 19,
            # starved on a busy machine).
            bump = max(0, 10 - os.nice(0))
            nice = ["nice", "-n", str(bump)] if bump and shutil.which("nice") else []
            _run(["cmake", "-S", str(src / "llm"), "-B", str(build_dir), *_cmake_generator(), f"-DLLAMA_CPP_DIR={llama}",
                  *cmake_args, *flags, f"-DDLLLM_VERSION=dlllm-{digest[:12]}"], log_path,
                 f"configuring llama.cpp/dlllm for {target}")
            _run([*nice, "cmake", "--build", str(build_dir), "--target", *LLM_ARTIFACTS[target], "--parallel",
                  str(jobs or DEFAULT_JOBS)], log_path, f"building llama.cpp/dlllm for {target}")
        seconds = round(time.monotonic() - start, 1)
        if fresh:
            first = recorded.get("first_build_seconds") or seconds
            stamp.write_text(json.dumps({"version": version, "commit": commit, "flags": list(flags),
                                         "toolchain": chain.identity, "dlllm_sha256": digest,
                                         "first_build_seconds": first, "last_build_seconds": seconds,
                                         "built_at": _now()}, indent=1))
    return register(target, build_dir, LlmBuild(target, commit, version, digest, flags, chain.identity, {}, seconds,
                                                _now()))


def built(build_dir: Path, name: str) -> Path | None:
    """A program of the build: dlllm lands in the build folder, llama.cpp's own targets in its bin/ (llama.cpp sets
    CMAKE_RUNTIME_OUTPUT_DIRECTORY for them)."""
    for path in (build_dir / name, build_dir / "bin" / name):
        if path.is_file():
            return path
    return None


def register(target: str, build_dir: Path, info: LlmBuild) -> LlmBuild:
    """Copy dlllm and llama-bench into the target's registry folder, add them to its record's artifacts (beside
    dlprobe, which runs them), and keep the build's facts under the registry's "llm" key."""
    from devicelab.native import Artifact, BuildRecord

    dest = paths.data_dir() / "native" / target
    dest.mkdir(parents=True, exist_ok=True)
    artifacts: dict[str, Artifact] = {}
    for name in LLM_ARTIFACTS[target]:
        tmp = dest / f".{name}.tmp"
        src = built(build_dir, name)
        if src is None:
            raise NativeBuildError(f"the build left no {name} in {build_dir}")
        shutil.copy2(src, tmp)
        os.replace(tmp, dest / name)
        artifacts[name] = Artifact(name, dest / name, sha256_file(dest / name), (dest / name).stat().st_size)
    result = LlmBuild(info.target, info.llama_cpp_commit, info.llama_cpp_python, info.dlllm_sha256, info.flags,
                      info.toolchain, {k: a.path for k, a in artifacts.items()}, info.seconds, info.built_at)
    with _locked(registry_path().with_suffix(".lock")):
        data = read_registry()
        entry = data["targets"].get(target)
        if not entry:
            raise DevicelabError(f"--llm: no dlprobe for {target} in the registry; run `devicelab build-native "
                                 f"--target {target}` first")
        record = BuildRecord.from_dict(entry)
        merged = {**record.artifacts, **artifacts}
        data["targets"][target] = {**entry, "artifacts": {k: a.to_dict() for k, a in merged.items()}}
        data.setdefault("llm", {})[target] = result.to_dict()
        tmp_path = registry_path().with_suffix(".tmp")
        tmp_path.write_text(json.dumps(data, indent=1))
        os.replace(tmp_path, registry_path())
    return result


def registered(target: str) -> LlmBuild | None:
    """The target's LLM build, if registered in this data folder and its programs are still there."""
    entry = read_registry().get("llm", {}).get(target)
    if not entry:
        return None
    try:
        record = LlmBuild.from_dict(entry)
    except (KeyError, TypeError, ValueError):
        return None
    return record if all(p.is_file() for p in record.artifacts.values()) else None


def run_quantize(dlllm: Path, src: Path, dst: Path, quant: str) -> None:
    """`dlllm --quantize SRC DST QUANT`: libllama's llama_model_quantize, in the host build (controller side)."""
    p = subprocess.run([str(dlllm), "--quantize", str(src), str(dst), quant], capture_output=True, text=True)
    if p.returncode != 0:
        lines = [line for line in (p.stderr or p.stdout).splitlines() if line.strip()]
        raise DevicelabError(f"quantizing {src.name} to {quant} failed: {lines[-1] if lines else p.returncode}")
