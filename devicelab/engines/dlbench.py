"""dlbench: ncnn through devicelab's own C++ runner (native/dlbench), built by `devicelab build-native`.

The same ncnn as the pip engine (built from its sdist at the installed version), the same pnnx-converted
model and the same seeded inputs (written to files for the runner), but timed by a C++ loop speaking runner
protocol v1, with no Python in the measured process — and the same binary runs on an arm64 phone.

On an iPhone dlbench runs inside the runner app, which adds Core ML: the backends `coreml` (Core ML chooses),
`coreml-cpu`, `coreml-gpu` and `coreml-ane` (its compute units), fed a Core ML package written from the zoo's graph
(zoo_coreml). Core ML exists on Apple devices only, so these backends and the format are declared for the ios kind
alone and every other device gets an unsupported row saying so.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import Any

from devicelab.engines.base import IOS_ONLY, Engine, PreparedModel, SourceModel, make_inputs, write_feed_files

# Which registered build serves which device kind, best first: a phone runs the NDK build, else the static
# arm64 Linux build (static binaries need no bionic). An iPhone runs the runner app its inventory entry names.
TARGETS_BY_KIND: dict[str, tuple[str, ...]] = {"host": ("host",), "android": ("android-arm64", "arm64")}

# Core ML's backends and the MLComputeUnits the runner app loads the model with for each.
COMPUTE_UNITS: dict[str, str] = {"coreml": "all", "coreml-cpu": "cpuOnly", "coreml-gpu": "cpuAndGPU",
                                 "coreml-ane": "cpuAndNeuralEngine"}
COREML_BACKENDS = tuple(COMPUTE_UNITS)


def write_inputs(specs: list[dict[str, Any]], seed: int, folder: Path, index: int = 0) -> list[dict[str, Any]]:
    """Input `index` of the seeded stream the Python engines feed (make_inputs: 0 times, 1..N are the accuracy
    inputs), as raw little-endian float32 files in C order, named relative to `folder`; returns the specs with a
    "file" key each."""
    return write_feed_files(specs, make_inputs(specs, seed, index), folder, "" if index == 0 else f"accuracy{index}-")


class DlbenchEngine(Engine):
    name = "dlbench"
    package = "ncnn"  # not used for the version: see version()
    module = "ncnn"
    # ONNX is converted to ncnn .param/.bin with pnnx, like the pip ncnn engine; Core ML is written from the zoo's graph.
    formats = ("onnx", "coreml")
    precisions = ("fp32", "fp16", "bf16", "int8")  # int8: the pip engine's quantized files (ncnn_int8)
    backends = ("cpu", *COREML_BACKENDS)
    device_kinds = ("host", "android", "ios")
    native_runner = "dlbench"
    unsupported = {f"bf16/{b}": "Core ML computes in fp32 or fp16 (no bf16)" for b in COREML_BACKENDS}
    only_on = {name: (("ios",), IOS_ONLY) for name in (*COREML_BACKENDS, "coreml")}
    backend_formats = {"cpu": ("onnx",), **{b: ("coreml",) for b in COREML_BACKENDS}}

    def _record(self) -> Any:
        from devicelab import native

        for targets in TARGETS_BY_KIND.values():
            for target in targets:
                record = native.registered(target)
                if record is not None:
                    return record
        return None

    def kind_reason(self, kind: str) -> str | None:
        from devicelab import native

        if kind == "ios":
            return None  # the runner app (the entry's runner_app) is dlbench there; nothing is built on this machine
        targets = TARGETS_BY_KIND.get(kind, ())
        if any(native.registered(t) for t in targets):
            return None
        return (f"dlbench is not built for {kind} devices: run `devicelab build-native --target {targets[-1]}`"
                if targets else f"dlbench has no build for {kind} devices")

    def version(self) -> str | None:
        record = self._record()
        return record.dlbench_version if record else None

    def availability(self) -> tuple[bool, str | None]:
        # Nothing is needed engine-wide: each device kind needs its build (kind_reason; an iPhone brings the runner
        # app), and each backend its converter (backend_reason: pnnx for ncnn, coremltools for Core ML).
        return True, None

    def backend_reason(self, backend: str) -> str | None:
        if backend in COREML_BACKENDS:
            if importlib.util.find_spec("coremltools") is None:
                from devicelab.zoo_coreml import INSTALL_HINT

                return f"writing Core ML models needs coremltools ({INSTALL_HINT})"
            return None
        from devicelab.engines.ncnn import pnnx_binary

        if pnnx_binary() is None:
            return "the pnnx converter is not installed (pip install --no-deps pnnx)"
        return None

    def prepare_for(self, model: SourceModel, precision: str, backend: str, cache_dir: Path) -> PreparedModel:
        if backend not in COREML_BACKENDS:
            return self.prepare(model, precision, cache_dir)
        from devicelab import zoo, zoo_coreml

        if not model.zoo:
            raise RuntimeError("Core ML needs a Core ML model; devicelab writes Core ML for zoo models only")

        def build(out: Path) -> None:
            # Only when the package is not cached: building a trained zoo model's graph trains it.
            graph = zoo.build_graph(model.name)
            if hashlib.sha256(zoo.to_onnx(graph)).hexdigest() != model.sha256:
                raise RuntimeError(f"zoo model {model.name} changed under its cache; rebuild the zoo")
            zoo_coreml.write_package(graph, precision, out)

        # One package per model and precision serves every compute unit (chosen at load), so the cache is shared.
        package = zoo_coreml.cached_package(cache_dir.parent / "coreml", zoo_coreml.package_name(model.sha256, precision),
                                            build)
        notes = list(zoo_coreml.NOTES.get(precision, ()))
        if backend == "coreml-ane" and precision == "fp32":
            notes.append("the Neural Engine computes in fp16 only: Core ML may run this float32 program on the CPU "
                         "instead (which unit ran each layer is Core ML's choice)")
        return PreparedModel(package, tuple(notes), {"library": "coreml", "compute_units": COMPUTE_UNITS[backend]})

    def prepare(self, model: SourceModel, precision: str, cache_dir: Path) -> PreparedModel:
        from devicelab.engines.ncnn import convert_onnx

        # The pip ncnn engine's cache: one conversion serves both engines (same files, same hash).
        param, weights = convert_onnx(model.path, model.sha256, model.shapes, cache_dir.parent / "ncnn")
        notes: list[str] = []
        if precision == "int8":
            # Calibrated in this (controller) process with pip ncnn, the same library version dlbench is built
            # from; the backend then runs it with use_int8_inference on.
            from devicelab.engines.ncnn_int8 import INT8_NOTE, int8_model

            param, weights = int8_model(model, param, weights)
            notes.append(INT8_NOTE)
        if precision == "fp16":
            notes.append("fp16 storage; fp16 arithmetic only where the CPU has it (not on x86)")
        return PreparedModel(param, tuple(notes), {"weights": str(weights), "library": "ncnn"})

    def stage(self, runner_config: dict[str, Any], folder: Path) -> dict[str, Any]:
        """Make `folder` self-contained: the seeded inputs as files, and the model files linked in, every path
        in the config relative to it (dlbench resolves paths against its config's folder). A driver can push
        the folder as it is (symlinks read as their targets) and run dlbench on the config there. Accuracy inputs
        the session already staged as files (a data set's images) are kept; otherwise the seeded ones are written."""
        seed = int(runner_config.get("seed", 0))
        inputs = write_inputs(list(runner_config["inputs"]), seed, folder)
        count = int(runner_config.get("accuracy_inputs") or 0) if runner_config.get("outputs_file") else 0
        accuracy = runner_config.get("accuracy_files") or [
            write_inputs(list(runner_config["inputs"]), seed, folder, k) for k in range(1, count + 1)]
        options = dict(runner_config.get("options") or {})
        if options.get("library") == "coreml":
            # A Core ML package is a folder: the same folder, each file linked in at its place inside it.
            from devicelab.zoo_coreml import package_files

            model = "model.mlpackage"
            links = {f"{model}/{name.split('/', 1)[1]}": path
                     for name, path in package_files(Path(runner_config["model"]))}
        else:
            model = "model.param"
            links = {model: Path(runner_config["model"])}
            if options.get("weights"):
                links["model.bin"] = Path(options["weights"])
                options["weights"] = "model.bin"
        for name, target in links.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).symlink_to(target.resolve())
        return {**runner_config, "model": model, "options": options, "inputs": inputs,
                "accuracy_files": accuracy or None}


ENGINE = DlbenchEngine()
