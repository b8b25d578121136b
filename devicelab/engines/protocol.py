"""`protocol`: any program that speaks the runner protocol (docs/runner-protocol.md; README "Runner protocol"), named by the user.

This is how an in-house engine is benchmarked without changing devicelab: the suite names the binary (built for
the host, or for the phone's ABI), and devicelab runs it exactly as it runs its own runners — a fresh process per
config, pinned, under dlprobe where it is built, with the same stopping rule, cooldown, state and storage.

    engines:
      - name: protocol
        label: mogu
        options:
          binary: ./build/arm64/mogu_runner      # relative to the suite file
          libraries: [./build/arm64/libmogu.so]  # pushed beside it; LD_LIBRARY_PATH points at them
          formats: [onnx]                         # what the program reads: onnx (default) or gguf (an LLM)

The program gets the model file as the suite gives it (the zoo's or the user's ONNX), in its run folder under its
own file name; precisions and backends are passed through, and a program that cannot do one answers with an
error event, which becomes a failed row with its message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from devicelab.engines.base import Engine, PreparedModel, SourceModel, binary_option_problems, binary_version
from devicelab.result import BACKENDS, PRECISIONS

OPTION_KEYS = ("binary", "libraries", "formats")


class ProtocolEngine(Engine):
    name = "protocol"
    package = ""
    module = ""
    formats = ("onnx",)
    precisions = PRECISIONS
    backends = BACKENDS
    device_kinds = ("host", "android")

    def version(self) -> str | None:
        return None

    def version_for(self, options: dict[str, Any]) -> str | None:
        # the binary's hash; its ready event's runner_version, when it sends one, is kept with each Result too
        return binary_version(options)

    def availability(self) -> tuple[bool, str | None]:
        return True, None

    def check_options(self, options: dict[str, Any]) -> list[str]:
        problems = binary_option_problems(options, OPTION_KEYS, self.name, "the runner program's path")
        formats = options.get("formats", ["onnx"])
        if formats not in (["onnx"], ["gguf"]):
            problems.append(f"options.formats: {formats!r} is not allowed; allowed: [onnx] or [gguf] (devicelab "
                            "hands the program the suite's ONNX file, or its GGUF file for an LLM runner speaking "
                            "runner protocol v3)")
        return problems

    def user_runner(self, options: dict[str, Any]) -> tuple[Path, tuple[Path, ...]] | None:
        return Path(options["binary"]), tuple(Path(x) for x in options.get("libraries", []))

    def prepare(self, model: SourceModel, precision: str, cache_dir: Path) -> PreparedModel:
        return PreparedModel(model.path)

    def stage(self, runner_config: dict[str, Any], folder: Path) -> dict[str, Any]:
        """The model linked into the run folder under its own file name, the config pointing at it relatively
        (the folder is what a phone receives)."""
        model = Path(runner_config["model"])
        (folder / model.name).symlink_to(model.resolve())
        options = {k: v for k, v in (runner_config.get("options") or {}).items() if k not in OPTION_KEYS}
        return {**runner_config, "model": model.name, "options": options}


ENGINE = ProtocolEngine()
