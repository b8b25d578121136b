"""The Engine seam: what an engine can do (declared), how a model reaches its format, and how the
runner drives it inside the measured process.

This module is imported by the host runner inside the measured process: keep it light (numpy and the
engine's own library are imported lazily, after the runner has pinned itself).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

# Deterministic data sets: timing uses input 0 of INPUT_SEED's stream; accuracy inputs 1..N of the same
# stream; calibration draws from its own stream so no variant is judged on the data it was calibrated on. A zoo model
# with a labelled data set (devicelab.datasets) is judged on its test split and calibrated on its train split instead.
# Fixed, not the run's seed (which orders configs): every run feeds the same inputs, so runs compare on identical
# data, the fp32 reference is computed once per model, and a phone already holds the input files of a second run.
INPUT_SEED = 1_000_003
CALIBRATION_SEED = 7_000_001
CALIBRATION_SAMPLES = 16

# Core ML exists on Apple devices only: every engine's Core ML backends are declared for the ios kind with this reason.
IOS_ONLY = "Core ML runs only on iPhones/iPads (the ios device kind)"


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class EngineInfo:
    """Capabilities and availability, as `devicelab engines --json` shows them."""

    name: str
    version: str | None
    available: bool
    reason: str | None
    formats: tuple[str, ...]
    precisions: tuple[str, ...]
    backends: tuple[str, ...]
    device_kinds: tuple[str, ...]
    # Why a declared-but-missing combination can't run, e.g. {"int8": "needs ncnn2int8..."}, and what a
    # probe of this host found, e.g. {"fp16/cpu": "the CPU has no fp16 arithmetic"}.
    unsupported: dict[str, str] = field(default_factory=dict)
    probes: dict[str, str] = field(default_factory=dict)
    # Why the engine cannot run on a device kind it declares, here and now (e.g. dlbench not built for arm64).
    kind_reasons: dict[str, str] = field(default_factory=dict)
    # Backends or formats that exist only on some device kinds: name → (those kinds, the reason a config elsewhere
    # reads), e.g. {"coreml-ane": (("ios",), "Core ML runs only on iPhones/iPads (the ios device kind)")}.
    only_on: dict[str, tuple[tuple[str, ...], str]] = field(default_factory=dict)
    # The formats a backend reads, where that is not every format of the engine (Core ML reads Core ML only).
    backend_formats: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Why this controller cannot prepare models for a declared backend now (e.g. its converter is not installed).
    backend_reasons: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "available": self.available, "reason": self.reason,
                "formats": list(self.formats), "precisions": list(self.precisions),
                "backends": list(self.backends), "device_kinds": list(self.device_kinds),
                "unsupported": dict(self.unsupported), "host_probes": dict(self.probes),
                "device_kind_reasons": dict(self.kind_reasons),
                "only_on": {k: {"kinds": list(kinds), "reason": why} for k, (kinds, why) in self.only_on.items()},
                "backend_formats": {k: list(v) for k, v in self.backend_formats.items()},
                "backend_reasons": dict(self.backend_reasons)}


@dataclass(frozen=True)
class SourceModel:
    """The ONNX model a config names (zoo or user file), as engines receive it for conversion."""

    name: str
    path: Path
    sha256: str
    inputs: tuple[dict[str, Any], ...]  # name, shape (NCHW for images), dtype: what the runner feeds
    zoo: bool = False  # zoo models can also be written natively (TFLite) from the zoo's graph
    calibration: Path | None = None  # the user's folder of .npy/.npz inputs for int8 calibration
    dataset: str | None = None  # a zoo model's labelled data set: accuracy on its test split, calibration on train

    @property
    def shapes(self) -> list[list[int]]:
        return [list(i["shape"]) for i in self.inputs]


@dataclass(frozen=True)
class PreparedModel:
    """A model in the engine's own format, ready to hand to a runner."""

    path: Path
    notes: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)  # engine options the runner must apply


class Session(Protocol):
    """One loaded model inside the runner. Only `run` is timed: input conversion (layouts, engine
    tensor types) happens once in `prepare`, output conversion in `outputs`. A session may also say which device it
    runs on (`device()`: {"name", "type", "software"}, for GPU backends), read by the runner through getattr."""

    def prepare(self, feeds: dict[str, Any]) -> Any: ...

    def run(self, prepared: Any) -> Any: ...

    def outputs(self, raw: Any) -> list[Any]: ...


class UnsupportedError(RuntimeError):
    """Found while loading: this engine cannot do what the config asks here (e.g. a GPU backend the build lacks, which
    the engine would silently replace by its CPU). The runner reports it as such; the row is `unsupported`, never a
    CPU run filed as a GPU one."""


# GPU drivers that run on the CPU (Debian's lavapipe/llvmpipe for Vulkan, pocl for OpenCL, SwiftShader): their timings
# are not GPU timings, and every Result says so.
SOFTWARE_GPUS = ("llvmpipe", "lavapipe", "swiftshader", "pocl", "softpipe")


def is_software_gpu(name: str) -> bool:
    return any(s in name.lower() for s in SOFTWARE_GPUS)


def with_native_output(call: Any) -> tuple[Any, str]:
    """call() with what native code prints on fds 1 and 2 captured (an engine's own word on what it did, e.g. MNN's
    "Can't Find type=7 backend, use 0 instead"), and passed on to stderr afterwards so it still reaches the log."""
    import sys
    import tempfile

    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            result = call()
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
        f.seek(0)
        text = f.read().decode(errors="replace")
    sys.stderr.write(text)
    sys.stderr.flush()
    return result, text


class Engine:
    """Base of every engine plug-in. Subclasses declare capabilities as class attributes."""

    name: ClassVar[str]
    package: ClassVar[str]  # the distribution whose version is the engine version
    module: ClassVar[str]  # the importable module that proves the engine is installed
    formats: ClassVar[tuple[str, ...]]
    precisions: ClassVar[tuple[str, ...]]
    backends: ClassVar[tuple[str, ...]]
    device_kinds: ClassVar[tuple[str, ...]] = ("host",)
    # Precisions or backends this engine cannot do, with the reason a user should read; a "precision/backend" key names
    # one pair the engine cannot do although it has both (e.g. "bf16/coreml").
    unsupported: ClassVar[dict[str, str]] = {}
    # Backends or formats that exist only on some device kinds (EngineInfo.only_on), and the formats a backend reads
    # where that is not every format of the engine (EngineInfo.backend_formats).
    only_on: ClassVar[dict[str, tuple[tuple[str, ...], str]]] = {}
    backend_formats: ClassVar[dict[str, tuple[str, ...]]] = {}
    # How the runner starts. None: devicelab's Python runner (devicelab.runners.host) imports this engine in the
    # measured process. Otherwise the name of a native artifact from `devicelab build-native` (devicelab.native's
    # registry, per target) that speaks runner protocol v1 itself, e.g. "dlbench".
    native_runner: ClassVar[str | None] = None
    # The modules open_session imports, which the Python runner imports (and times, as import_s) before it reads the
    # RSS before load and starts the load clock. Empty: just `module`.
    runtime_imports: ClassVar[tuple[str, ...]] = ()
    # What a reader must know of this engine's figures when its runner is forked from a zygote without glibc's mmap
    # threshold fixed at devicelab's default (measured in benchmarks/zygote.py); None: nothing (its figures match a
    # fresh process's).
    fork_caveat: ClassVar[str | None] = None
    # The engine's versions (major.minor) whose import was traced to decide nothing from the CPU set or the thread
    # count: for these, one zygote per repeat round serves every CPU set and thread count (it imports unpinned and
    # without OMP_NUM_THREADS; the child pins itself and takes its thread count after the fork). Traced: no
    # sched_getaffinity of its own beyond numpy's, no open of the process's status/stat or a cpuset file, no OpenMP
    # runtime mapped, no thread or CPU variable read (getenv or os.environ) — tests/test_zygote.py repeats it for the
    # installed version. Other versions get pinned zygotes; the zygote itself re-checks the OpenMP rule.
    zygote_any_cpus: ClassVar[tuple[str, ...]] = ()

    def shares_zygote(self, version: str | None) -> bool:
        """Whether this version's import was traced to read no CPU set (zygote_any_cpus)."""
        return version is not None and ".".join(version.split(".")[:2]) in self.zygote_any_cpus

    def imports(self) -> tuple[str, ...]:
        return self.runtime_imports or ((self.module,) if self.module else ())

    def version(self) -> str | None:
        try:
            return importlib.metadata.version(self.package)
        except importlib.metadata.PackageNotFoundError:
            return None

    def availability(self) -> tuple[bool, str | None]:
        # find_spec, not import: importing an engine costs memory and time in the controller.
        if importlib.util.find_spec(self.module) is None:
            return False, f"Python package '{self.package}' is not installed (pip install {self.package})"
        return True, None

    def kind_reason(self, kind: str) -> str | None:
        """Why this engine cannot run on devices of `kind` (one it declares) on this machine now, or None."""
        return None

    def backend_reason(self, backend: str) -> str | None:
        """Why this controller cannot prepare models for `backend` (one the engine declares) now, or None."""
        return None

    def probe_host(self, precision: str, backend: str) -> str | None:
        """Why this precision/backend cannot run on this host (e.g. no GPU, no bf16 in the CPU), or None.
        Called in the controller, only for combinations a suite asks for."""
        return None

    def info(self, probe: Sequence[tuple[str, str]] = ()) -> EngineInfo:
        available, reason = self.availability()
        probes: dict[str, str] = {}
        if available:
            for precision, backend in probe:
                if precision in self.precisions and backend in self.backends:
                    why = self.probe_host(precision, backend)
                    if why:
                        probes[f"{precision}/{backend}"] = why
        kind_reasons = {k: why for k in self.device_kinds if (why := self.kind_reason(k))} if available else {}
        backend_reasons = {b: why for b in self.backends if (why := self.backend_reason(b))} if available else {}
        return EngineInfo(self.name, self.version(), available, reason, self.formats, self.precisions,
                          self.backends, self.device_kinds, dict(self.unsupported), probes, kind_reasons,
                          dict(self.only_on), dict(self.backend_formats), backend_reasons)

    def prepare(self, model: SourceModel, precision: str, cache_dir: Path) -> PreparedModel:
        """Convert (and cache by content) the source model into what the runner loads."""
        raise NotImplementedError

    def prepare_for(self, model: SourceModel, precision: str, backend: str, cache_dir: Path) -> PreparedModel:
        """prepare() for one backend: an engine whose backends read different formats (dlbench: ncnn files for the CPU,
        a Core ML package for Core ML) overrides this; the others convert once for every backend."""
        return self.prepare(model, precision, cache_dir)

    def version_for(self, options: dict[str, Any]) -> str | None:
        """The version a suite's engine entry runs (the protocol engine: its binary's content hash)."""
        return self.version()

    def check_options(self, options: dict[str, Any]) -> list[str]:
        """Problems with a suite's `options` for this engine (each names the key and what is allowed)."""
        return []

    def user_runner(self, options: dict[str, Any]) -> tuple[Path, tuple[Path, ...]] | None:
        """A runner binary the user supplies (and the shared libraries it needs), for engines whose program is
        not devicelab's own: the `protocol` engine, the engines' own tools. None: devicelab's runner."""
        return None

    def stage(self, runner_config: dict[str, Any], folder: Path) -> dict[str, Any]:
        """Write what the runner reads besides the model into `folder` (the runner's working folder, the one
        pushed to a phone) and return the config to hand it. The Python runner makes its own inputs."""
        return runner_config

    # ---- runner side (inside the measured process) ----

    def open_session(self, config: dict[str, Any]) -> Session:
        raise NotImplementedError


class SimpleSession:
    """A Session whose engine takes numpy feeds as they are and returns numpy outputs."""

    def prepare(self, feeds: dict[str, Any]) -> Any:
        return feeds

    def run(self, prepared: Any) -> Any:
        raise NotImplementedError

    def outputs(self, raw: Any) -> list[Any]:
        return list(raw)


def make_inputs(specs: Sequence[dict[str, Any]], seed: int, index: int = 0) -> dict[str, Any]:
    """Input `index` of the seeded stream, identical across engines and processes, so outputs compare."""
    import numpy as np

    rng = np.random.default_rng([seed, index])
    feeds: dict[str, Any] = {}
    for spec in specs:
        dtype = np.dtype(spec.get("dtype", "float32"))
        shape = tuple(int(d) for d in spec["shape"])
        if dtype.kind == "f":
            feeds[spec["name"]] = rng.standard_normal(shape, dtype=np.float32).astype(dtype)
        else:
            feeds[spec["name"]] = rng.integers(0, 2, size=shape).astype(dtype)
    return feeds


def calibration_inputs(model: SourceModel, count: int = CALIBRATION_SAMPLES) -> list[dict[str, Any]]:
    """The int8 calibration set: the user's folder of inputs when given, else a deterministic draw.

    A folder holds .npz files (arrays named like the model's inputs) or, for single-input models, .npy files.
    """
    import numpy as np

    if model.calibration is None and model.dataset is not None:
        return _dataset_feeds(model, "train")[:count]
    if model.calibration is None:
        return [make_inputs(model.inputs, CALIBRATION_SEED, i) for i in range(count)]
    names = [i["name"] for i in model.inputs]
    samples: list[dict[str, Any]] = []
    for path in sorted(model.calibration.iterdir()):
        if path.suffix == ".npz":
            with np.load(path) as data:
                samples.append({n: np.asarray(data[n], np.float32).reshape(s["shape"]) for n, s in zip(names, model.inputs)})
        elif path.suffix == ".npy" and len(names) == 1:
            samples.append({names[0]: np.load(path).astype(np.float32).reshape(model.inputs[0]["shape"])})
    if not samples:
        raise ValueError(f"no .npz/.npy calibration inputs in {model.calibration}")
    return samples


def calibration_key(model: SourceModel) -> str:
    """Names the calibration set in cache keys: 'seeded', or a hash of the user's files."""
    if model.calibration is None and model.dataset is not None:
        return f"{model.dataset}-train{CALIBRATION_SAMPLES}"
    if model.calibration is None:
        return f"seeded{CALIBRATION_SAMPLES}"
    import hashlib

    h = hashlib.sha256()
    for path in sorted(model.calibration.iterdir()):
        if path.suffix in (".npy", ".npz"):
            h.update(path.name.encode() + path.read_bytes())
    return "user" + h.hexdigest()[:12]


def _dataset_feeds(model: SourceModel, part: str) -> list[dict[str, Any]]:
    """A split of the model's data set as feeds for its single input, one image per feed."""
    from devicelab import datasets

    assert model.dataset is not None
    if len(model.inputs) != 1:
        raise ValueError(f"data set {model.dataset} feeds one input; {model.name} has {len(model.inputs)}")
    name = model.inputs[0]["name"]
    return [{name: image[None]} for image in datasets.split(model.dataset, part).images]


def write_feed_files(specs: Sequence[dict[str, Any]], feeds: dict[str, Any], folder: Path, stem: str
                     ) -> list[dict[str, Any]]:
    """`feeds` as raw little-endian float32 files in C order (what dlbench and other file-reading runners read),
    named `{stem}input{i}.f32` in `folder`; returns the specs with a "file" key each, relative to `folder`."""
    import numpy as np

    out: list[dict[str, Any]] = []
    for i, spec in enumerate(specs):
        name = f"{stem}input{i}.f32"
        np.ascontiguousarray(feeds[spec["name"]], dtype="<f4").tofile(folder / name)
        out.append({**spec, "dtype": "float32", "file": name})
    return out


def read_feed_files(specs: Sequence[dict[str, Any]], folder: Path | None = None) -> dict[str, Any]:
    """The feeds `write_feed_files` wrote, from specs with a "file" key (relative to `folder`, else the working
    folder)."""
    import numpy as np

    return {spec["name"]: np.fromfile((folder or Path()) / spec["file"], dtype="<f4").reshape(
        [int(d) for d in spec["shape"]]) for spec in specs}


def accuracy_feeds(model: SourceModel, seed: int, count: int) -> list[dict[str, Any]]:
    """What the accuracy pass feeds, in order, and the fp32 reference too: a labelled data set's whole test split
    (its labels stay with the controller), else inputs 1..count of the seeded stream. Controller side only."""
    if model.dataset is not None:
        return _dataset_feeds(model, "test")
    return [make_inputs(model.inputs, seed, i) for i in range(1, count + 1)]


def accuracy_key(model: SourceModel, seed: int, count: int) -> str:
    """Names the accuracy inputs in cache keys (the fp32 reference's file)."""
    return f"{model.dataset}-test" if model.dataset is not None else f"seed{seed}-n{count}"


# Keys devicelab reads itself for the process of any engine, the user's programs included (checked in config).
PROCESS_OPTIONS = ("mmap_threshold",)


def binary_option_problems(options: dict[str, Any], allowed: tuple[str, ...], engine: str, missing: str) -> list[str]:
    """Problems with a suite's options for an engine that runs the user's program (`protocol`, `tool:*`): the keys,
    `binary` (an executable file) and `libraries` (files). `missing` says what the binary is, for its error."""
    allowed = (*allowed, *PROCESS_OPTIONS)
    problems = [f"options.{k}: unknown key for engine '{engine}'; allowed: {', '.join(allowed)}"
                for k in options if k not in allowed]
    binary = options.get("binary")
    if not isinstance(binary, str) or not binary:
        problems.append(f"options.binary: {missing} is required for engine '{engine}'")
    elif not Path(binary).is_file():
        problems.append(f"options.binary: {binary} is not a file")
    elif not os.access(binary, os.X_OK):
        problems.append(f"options.binary: {binary} is not executable (chmod +x)")
    libraries = options.get("libraries", [])
    if not isinstance(libraries, list) or not all(isinstance(x, str) for x in libraries):
        problems.append("options.libraries: must be a list of shared library paths")
    else:
        problems += [f"options.libraries: {x} is not a file" for x in libraries if not Path(x).is_file()]
    return problems


def binary_version(options: dict[str, Any]) -> str | None:
    """A user's program's version: its content hash (a rebuilt binary continues the same series)."""
    from devicelab.paths import sha256_file

    binary = options.get("binary")
    return f"sha256:{sha256_file(Path(binary))[:12]}" if binary and Path(binary).is_file() else None


def has_library(name: str) -> bool:
    """Whether a shared library (e.g. the Vulkan loader or OpenCL ICD loader) can be found on this host."""
    import ctypes.util

    return ctypes.util.find_library(name) is not None
