"""dlbench: ncnn through devicelab's own C++ runner (native/dlbench), built by `devicelab build-native`.

The same ncnn as the pip engine (built from its sdist at the installed version), the same pnnx-converted
model and the same seeded inputs (written to files for the runner), but timed by a C++ loop speaking runner
protocol v1, with no Python in the measured process — and the same binary runs on an arm64 phone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from devicelab.engines.base import Engine, PreparedModel, SourceModel, make_inputs, write_feed_files

# Which registered build serves which device kind, best first: a phone runs the NDK build, else the static
# arm64 Linux build (static binaries need no bionic).
TARGETS_BY_KIND: dict[str, tuple[str, ...]] = {"host": ("host",), "android": ("android-arm64", "arm64")}


def write_inputs(specs: list[dict[str, Any]], seed: int, folder: Path, index: int = 0) -> list[dict[str, Any]]:
    """Input `index` of the seeded stream the Python engines feed (make_inputs: 0 times, 1..N are the accuracy
    inputs), as raw little-endian float32 files in C order, named relative to `folder`; returns the specs with a
    "file" key each."""
    return write_feed_files(specs, make_inputs(specs, seed, index), folder, "" if index == 0 else f"accuracy{index}-")


class DlbenchEngine(Engine):
    name = "dlbench"
    package = "ncnn"  # not used for the version: see version()
    module = "ncnn"
    formats = ("onnx",)  # converted to ncnn .param/.bin with pnnx, like the pip ncnn engine
    precisions = ("fp32", "fp16", "bf16", "int8")  # int8: the pip engine's quantized files (ncnn_int8)
    backends = ("cpu",)
    device_kinds = ("host", "android", "ios")
    native_runner = "dlbench"

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

        if kind == "ios":  # dlbench's core runs as the runner app the user brings; the iPhone's transport installs it
            return None
        targets = TARGETS_BY_KIND.get(kind, ())
        if any(native.registered(t) for t in targets):
            return None
        return (f"dlbench is not built for {kind} devices: run `devicelab build-native --target {targets[-1]}`"
                if targets else f"dlbench has no build for {kind} devices")

    def version(self) -> str | None:
        record = self._record()
        return record.dlbench_version if record else None

    def availability(self) -> tuple[bool, str | None]:
        from devicelab.engines.ncnn import pnnx_binary

        if self._record() is None:
            return False, "dlbench is not built: run `devicelab build-native --target host` (or arm64, android-arm64)"
        if pnnx_binary() is None:
            return False, "the pnnx converter is not installed (pip install --no-deps pnnx)"
        return True, None

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
        links = {"model.param": Path(runner_config["model"])}
        if options.get("weights"):
            links["model.bin"] = Path(options["weights"])
            options["weights"] = "model.bin"
        for name, target in links.items():
            (folder / name).symlink_to(target.resolve())
        return {**runner_config, "model": "model.param", "options": options, "inputs": inputs,
                "accuracy_files": accuracy or None}


ENGINE = DlbenchEngine()
