"""Inventory (devices.yaml) and suites (YAML): loading and validation.

Every problem is collected and reported at once, in one line, before any device is touched.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from devicelab.engines import ENGINE_MODULES
from devicelab.errors import DevicelabError, unknown_name_message
from devicelab.facts import KINDS, DeviceEntry
from devicelab.llm import LLM_KEYS, LlmWorkload, gguf_problem, parse_llm
from devicelab.measure import ProtocolSettings, settings_from_dict
from devicelab.result import BACKENDS, PRECISIONS
from devicelab.zoo import ZOO
from devicelab.zoo_llm import LLM_ZOO

NAMED_AFFINITIES = ("big", "little", "all")
_CPU_LIST = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")


class ConfigError(DevicelabError):
    """A suite or inventory with problems; the message lists them all."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = problems
        # One line, whatever the user's file held (a key or a value with a newline in it is shown escaped).
        super().__init__(f"{source}: " + "; ".join(p.replace("\n", "\\n").replace("\r", "\\r") for p in problems))


def _read_yaml(path: Path, what: str) -> Any:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DevicelabError(f"{what} file not found: {path}") from None
    except OSError as e:
        raise DevicelabError(f"{what} file {path}: {e.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        problem = getattr(e, "problem", None) or "invalid YAML"
        raise DevicelabError(f"{what} {path} is not valid YAML{where}: {problem}") from None


# --------------------------------------------------------------------------------------------------
# Inventory

_ENTRY_KEYS = ("id", "kind", "name")


@dataclass(frozen=True)
class Inventory:
    source: str
    devices: tuple[DeviceEntry, ...]

    def get(self, device_id: str) -> DeviceEntry:
        for d in self.devices:
            if d.id == device_id:
                return d
        raise DevicelabError(unknown_name_message("device", device_id, [d.id for d in self.devices]))

    def find(self, name: str) -> DeviceEntry | None:
        """The entry with this id, or the phone entry whose adb serial, address or iPhone UDID it is."""
        for d in self.devices:
            if name in (d.id, d.options.get("serial"), d.options.get("address"), d.options.get("udid")):
                return d
        return None


def inventory_path(explicit: str | None) -> Path | None:
    """--devices, else DEVICELAB_DEVICES, else ./devices.yaml, else None for the built-in inventory."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("DEVICELAB_DEVICES")
    if env:
        return Path(env).expanduser()
    local = Path("devices.yaml")
    return local if local.is_file() else None


def load_inventory(explicit: str | None = None) -> Inventory:
    path = inventory_path(explicit)
    if path is None:
        text = resources.files("devicelab.data").joinpath("devices.yaml").read_text()
        return parse_inventory(yaml.safe_load(text), "built-in inventory")
    return parse_inventory(_read_yaml(path, "devices"), str(path))


def parse_inventory(raw: Any, source: str) -> Inventory:
    problems: list[str] = []
    if not isinstance(raw, dict):
        raise ConfigError(source, ["must be a mapping with a 'devices' list"])
    for key in raw:
        if key not in ("devices", "version"):
            problems.append(f"{key}: unknown key; allowed: devices, version")
    if raw.get("version", 1) != 1:
        problems.append(f"version: {raw.get('version')!r} is not supported; allowed: 1")
    items = raw.get("devices")
    if not isinstance(items, list) or not items:
        problems.append("devices: must be a non-empty list")
        items = []
    entries: list[DeviceEntry] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        where = f"devices[{i}]"
        if not isinstance(item, dict):
            problems.append(f"{where}: must be a mapping with id and kind")
            continue
        kind = item.get("kind")
        if not isinstance(kind, str) or kind not in KINDS:
            problems.append(f"{where}.kind: " + unknown_name_message("device kind", str(kind), KINDS))
            continue
        allowed = _ENTRY_KEYS + tuple(KINDS[kind].keys)
        for key in item:
            if key not in allowed:
                problems.append(f"{where}.{key}: unknown key for kind '{kind}'; allowed: {', '.join(allowed)}")
        dev_id = item.get("id")
        if not isinstance(dev_id, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:@-]*", dev_id):
            problems.append(f"{where}.id: {dev_id!r} must be a name of letters, digits and . _ : @ -")
            continue
        if dev_id in seen:
            problems.append(f"{where}.id: '{dev_id}' appears twice")
        seen.add(dev_id)
        options = {k: v for k, v in item.items() if k not in ("id", "kind")}
        problems.extend(f"{where}.{p}" for p in KINDS[kind].problems(options))
        entries.append(DeviceEntry(dev_id, kind, options))
    if problems:
        raise ConfigError(source, problems)
    return Inventory(source, tuple(entries))


# --------------------------------------------------------------------------------------------------
# Suites


@dataclass(frozen=True)
class ModelSpec:
    name: str
    path: str | None = None  # None: a zoo model
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    calibration: str | None = None  # a folder of .npz/.npy inputs for int8 calibration

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name}
        if self.path is not None:
            d["path"] = self.path
        if self.input_shapes:
            d["input_shapes"] = {k: list(v) for k, v in self.input_shapes.items()}
        if self.calibration:
            d["calibration"] = self.calibration
        return d


@dataclass(frozen=True)
class EngineSpec:
    name: str
    label: str = ""
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "label": self.label, "options": self.options}


@dataclass(frozen=True)
class Suite:
    name: str
    models: tuple[ModelSpec, ...]
    engines: tuple[EngineSpec, ...]
    threads: tuple[int | str, ...]  # positive ints or "all"
    precisions: tuple[str, ...]
    backends: tuple[str, ...]
    affinities: tuple[str, ...]  # big, little, all, or a cpu list like "0,2" / "4-7"
    devices: tuple[str, ...] | None  # None: every device in the inventory
    protocol: ProtocolSettings
    seed: int | None = None
    repeats: int = 1  # processes per config, interleaved in rounds (A/B comparisons want >= 3); the most, when adaptive
    # Adaptive A/B: rounds go on past this many until compare decides every label pair (faster / slower / same),
    # at most `repeats` rounds. None: exactly `repeats` rounds.
    min_repeats: int | None = None
    # LLM request shapes (`llm:`, lists expanded): every GGUF model runs each of them; other models none.
    llm: tuple[LlmWorkload, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The normalized suite, as stored with the Run (and re-read by --resume)."""
        return {
            "name": self.name,
            "models": [m.to_dict() for m in self.models],
            "engines": [e.to_dict() for e in self.engines],
            "threads": list(self.threads),
            "precisions": list(self.precisions),
            "backends": list(self.backends),
            "affinity": list(self.affinities),
            "devices": list(self.devices) if self.devices is not None else None,
            "protocol": self.protocol.to_dict(),
            "seed": self.seed,
            "repeats": {"min": self.min_repeats, "max": self.repeats} if self.min_repeats else self.repeats,
            **({"llm": llm_to_dict(self.llm)} if self.llm else {}),
        }


def llm_to_dict(workloads: tuple[LlmWorkload, ...]) -> dict[str, list[Any]]:
    """A suite's workloads as the `llm:` mapping that expands to exactly them (they are always a full product)."""
    return {key: list(dict.fromkeys(getattr(w, key) for w in workloads)) for key in LLM_KEYS}


AB_DEFAULT_REPEATS = {"min": 3, "max": 24}

SUITE_KEYS = ("name", "models", "engines", "threads", "precisions", "backends", "affinity", "devices",
              "protocol", "seed", "repeats", "profile", "llm")

BUILTIN_SUITES = ("default", "quick")


def builtin_suite(name: str) -> dict[str, Any]:
    return yaml.safe_load(resources.files("devicelab.data").joinpath(f"suite-{name}.yaml").read_text())


def load_suite_file(path: Path) -> dict[str, Any]:
    raw = _read_yaml(path, "suite")
    if not isinstance(raw, dict):
        raise DevicelabError(f"suite {path} must be a YAML mapping with keys: {', '.join(SUITE_KEYS)}")
    base_dir = path.parent.resolve()
    # Relative model paths are relative to the suite file, not to wherever devicelab was started.
    models = raw.get("models")
    for i, m in enumerate(models if isinstance(models, list) else []):
        if isinstance(m, str) and _is_model_path(m):
            m = models[i] = {"path": m}
        for key in ("path", "calibration"):
            if isinstance(m, dict) and isinstance(m.get(key), str) and not Path(m[key]).expanduser().is_absolute():
                m[key] = str(base_dir / m[key])
    # So are the programs an engine entry names (the protocol engine's runner, an engine tool's binary).
    for e in raw.get("engines") if isinstance(raw.get("engines"), list) else []:
        options = e.get("options") if isinstance(e, dict) else None
        if not isinstance(options, dict):
            continue
        for key in ("binary", "libraries"):
            value = options.get(key)
            if isinstance(value, str) and not Path(value).expanduser().is_absolute():
                options[key] = str(base_dir / value)
            elif isinstance(value, list):
                options[key] = [str(base_dir / v) if isinstance(v, str) and not Path(v).expanduser().is_absolute()
                                else v for v in value]
    raw.setdefault("name", path.stem)
    return raw


def _onnx_problem(path: Path) -> str | None:
    """Why the file is not a loadable ONNX model, or None. Only the graph is parsed (no external data)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - any parse failure is the user's file, reported in one line
        return str(e).splitlines()[0][:160] or type(e).__name__
    if not model.graph.node:
        return "the graph has no nodes"
    return None


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _is_model_path(text: str) -> bool:
    return text.endswith((".onnx", ".gguf")) or "/" in text or os.sep in text


MODEL_FORMATS = "onnx, gguf (an LLM, with llm:)"


def parse_suite(raw: dict[str, Any], source: str) -> Suite:
    """Validate a raw suite mapping; raise one ConfigError listing every problem."""
    problems: list[str] = []
    for key in raw:
        if key not in SUITE_KEYS:
            problems.append(f"{key}: unknown key; allowed: {', '.join(SUITE_KEYS)}")

    models: list[ModelSpec] = []
    for i, m in enumerate(_as_list(raw.get("models"))):
        where = f"models[{i}]"
        if isinstance(m, str):
            m = {"path": m} if _is_model_path(m) else {"name": m}
        if not isinstance(m, dict):
            problems.append(f"{where}: must be a zoo name, an .onnx or .gguf path, or a mapping with name/path")
            continue
        for key in m:
            if key not in ("name", "path", "input_shapes", "calibration"):
                problems.append(f"{where}.{key}: unknown key; allowed: name, path, input_shapes, calibration")
        bad = [k for k in ("name", "path", "calibration") if m.get(k) is not None and not isinstance(m[k], str)]
        if bad:
            problems.extend(f"{where}.{k}: {m[k]!r} must be text" for k in bad)
            continue
        if not isinstance(m.get("input_shapes") or {}, dict):
            problems.append(f"{where}.input_shapes: {m['input_shapes']!r} must be a mapping of input name to a list "
                            "of positive integers, e.g. {input: [1, 3, 224, 224]}")
            continue
        calibration = m.get("calibration")
        if calibration is not None:
            folder = Path(str(calibration)).expanduser()
            if not folder.is_dir() or not any(f.suffix in (".npy", ".npz") for f in folder.iterdir()):
                problems.append(f"{where}.calibration: {folder} is not a folder of .npy/.npz inputs")
                calibration = None
            else:
                calibration = str(folder.resolve())
        shapes: dict[str, tuple[int, ...]] = {}
        for input_name, shape in (m.get("input_shapes") or {}).items():
            if not (isinstance(shape, list) and shape and all(isinstance(d, int) and d > 0 for d in shape)):
                problems.append(f"{where}.input_shapes.{input_name}: {shape!r} must be a list of positive integers")
            else:
                shapes[str(input_name)] = tuple(shape)
        path = m.get("path")
        if path is not None:
            p = Path(str(path)).expanduser()
            if not p.is_file():
                problems.append(f"{where}.path: model file not found: {p}")
                continue
            if p.suffix.lower() == ".gguf":
                invalid = gguf_problem(p)
                if invalid:
                    problems.append(f"{where}.path: {p} is not a GGUF language model ({invalid}); formats read: "
                                    f"{MODEL_FORMATS}")
                    continue
                models.append(ModelSpec(str(m.get("name") or p.stem), str(p.resolve()), shapes, calibration))
                continue
            if p.suffix.lower() != ".onnx":
                problems.append(f"{where}.path: {p.name} is not an .onnx or .gguf file (formats read: "
                                f"{MODEL_FORMATS})")
                continue
            invalid = _onnx_problem(p)
            if invalid:
                problems.append(f"{where}.path: {p} is not a valid ONNX model ({invalid})")
                continue
            models.append(ModelSpec(str(m.get("name") or p.stem), str(p.resolve()), shapes, calibration))
        else:
            name = m.get("name")
            if name not in ZOO and name not in LLM_ZOO:
                problems.append(f"{where}: " + unknown_name_message("zoo model", str(name), [*ZOO, *LLM_ZOO])
                                + " (or give a path to an .onnx or .gguf file)")
                continue
            models.append(ModelSpec(str(name), None, shapes, calibration))
    if not models and not any(p.startswith("models[") for p in problems):
        problems.append("models: must list at least one model")
    names = [m.name for m in models]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"models: the name '{dup}' is used twice; give one of them another name")

    engines: list[EngineSpec] = []
    for i, e in enumerate(_as_list(raw.get("engines"))):
        where = f"engines[{i}]"
        if isinstance(e, str):
            e = {"name": e}
        if not isinstance(e, dict):
            problems.append(f"{where}: must be an engine name or a mapping with name, label, options")
            continue
        for key in e:
            if key not in ("name", "label", "options"):
                problems.append(f"{where}.{key}: unknown key; allowed: name, label, options")
        name = e.get("name")
        if not isinstance(name, str) or name not in ENGINE_MODULES:
            problems.append(f"{where}: " + unknown_name_message("engine", str(name), ENGINE_MODULES))
            continue
        label = e.get("label") or ""
        if not isinstance(label, str):
            problems.append(f"{where}.label: must be text")
            continue
        options = e.get("options") or {}
        if not isinstance(options, dict):
            problems.append(f"{where}.options: must be a mapping")
            continue
        from devicelab.engines import get_engine

        problems.extend(f"{where}.{p}" for p in get_engine(name).check_options(options))
        engines.append(EngineSpec(name, label, options))
    if not engines and not any(p.startswith("engines[") for p in problems):
        problems.append(f"engines: must list at least one engine; allowed: {', '.join(ENGINE_MODULES)}")

    threads: list[int | str] = []
    for i, t in enumerate(_as_list(raw.get("threads", [1]))):
        if isinstance(t, str) and t.strip().isascii() and t.strip().isdigit():  # int() refuses '²'
            t = int(t.strip())
        if t == "all" or (isinstance(t, int) and not isinstance(t, bool) and t > 0):
            if t not in threads:
                threads.append(t)
        else:
            problems.append(f"threads[{i}]: {t!r} is not allowed; allowed: a positive integer or 'all'")

    def names_from(key: str, allowed: tuple[str, ...], default: list[str]) -> list[str]:
        out: list[str] = []
        for i, v in enumerate(_as_list(raw.get(key, default))):
            if v in allowed:
                if v not in out:
                    out.append(v)
            else:
                problems.append(f"{key}[{i}]: {v!r} is not allowed; allowed: {', '.join(allowed)}")
        if not out and not any(p.startswith(f"{key}[") for p in problems):
            problems.append(f"{key}: must list at least one of {', '.join(allowed)}")
        return out

    precisions = names_from("precisions", PRECISIONS, ["fp32"])
    backends = names_from("backends", BACKENDS, ["cpu"])

    affinities: list[str] = []
    for i, a in enumerate(_as_list(raw.get("affinity", ["big"]))):
        if isinstance(a, list) and all(isinstance(c, int) and c >= 0 for c in a) and a:
            a = ",".join(str(c) for c in a)
        if isinstance(a, int) and not isinstance(a, bool) and a >= 0:
            a = str(a)
        if isinstance(a, str) and (a in NAMED_AFFINITIES or _CPU_LIST.match(a.replace(" ", ""))):
            a = a.replace(" ", "")
            if a not in affinities:
                affinities.append(a)
        else:
            problems.append(f"affinity[{i}]: {a!r} is not allowed; allowed: big, little, all, or a CPU list like '0,2' or '4-7'")

    devices = raw.get("devices")
    device_ids: tuple[str, ...] | None = None
    if devices is not None:
        ids = _as_list(devices)
        if not all(isinstance(d, str) and d for d in ids) or not ids:
            problems.append("devices: must be a list of device ids from the inventory")
        else:
            device_ids = tuple(dict.fromkeys(ids))

    settings = settings_from_dict(raw.get("protocol"), "protocol", problems)
    if "profile" in raw:
        protocol = raw.get("protocol")
        both = sorted(k for k in ("profile", "profile_iterations") if isinstance(protocol, dict) and k in protocol)
        if both:  # two ways to say one thing could disagree: one place only
            problems.append(f"profile: given beside protocol.{' and protocol.'.join(both)}; say it once (the "
                            "top-level profile: true, false or {iterations: N})")
        elif raw["profile"] is None:
            problems.append("profile: null is not allowed; allowed: true, false, or {iterations: N}")
        else:
            settings = _profile_setting(raw["profile"], settings, problems)

    llm = parse_llm(raw.get("llm"), "llm", problems)
    gguf = [m.name for m in models if (m.path and m.path.lower().endswith(".gguf")) or
            (not m.path and m.name in LLM_ZOO)]
    if gguf and raw.get("llm") is None:
        problems.append(f"llm: GGUF model(s) {', '.join(gguf)} need the request shape: llm: {{prompt_tokens: P, "
                        "gen_tokens: G, context_depth: D (default 0), quant: F32|F16|Q8_0|Q4_0|Q4_K}")
    elif llm and not gguf:
        problems.append(f"llm: set, but no model is a GGUF language model (models: a .gguf path or one of "
                        f"{', '.join(LLM_ZOO)})")

    seed = raw.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        problems.append(f"seed: {seed!r} is not a non-negative integer")
        seed = None

    # A suite that lists an A/B pair wants a verdict, so without `repeats` it gets adaptive rounds (measured on a
    # noisy day: a fixed 3 rounds called +5 % slower in 33 % of simulated A/Bs, adaptive ones in all, 5.7 rounds on
    # average: benchmarks/stats_validation.py); otherwise one process per config.
    repeats = raw.get("repeats", dict(AB_DEFAULT_REPEATS) if ab_pairs(engines) else 1)
    min_repeats: int | None = None
    if isinstance(repeats, dict):
        lo, hi = repeats.get("min", 3), repeats.get("max")
        extra = sorted(str(k) for k in set(repeats) - {"min", "max"})
        if extra or not all(isinstance(x, int) and not isinstance(x, bool) for x in (lo, hi)) or not 3 <= lo <= hi <= 100:
            problems.append(f"repeats: {repeats!r} is not allowed; allowed: {{min: 3 or more, max: up to 100}} "
                            "(adaptive A/B rounds) or an integer from 1 to 100")
            repeats = 1
        else:
            min_repeats, repeats = lo, hi
    elif isinstance(repeats, bool) or not isinstance(repeats, int) or not 1 <= repeats <= 100:
        problems.append(f"repeats: {repeats!r} is not allowed; allowed: an integer from 1 to 100, or {{min, max}} "
                        "for adaptive A/B rounds")
        repeats = 1

    labels = [(e.name, e.label) for e in engines]
    if min_repeats and not ab_pairs(engines):
        problems.append("repeats: adaptive rounds ({min, max}) go on until compare decides each A/B pair: list one "
                        "engine twice, under two labels")
    for engine in dict.fromkeys(name for name, _, _ in ab_pairs(engines)):
        if engine.startswith("tool:"):
            from devicelab.engines import get_engine

            tool = get_engine(engine)
            if not getattr(tool, "per_iteration_times", False):
                problems.append(f"engines: {engine} is listed under several labels, but {getattr(tool, 'tool', engine)} "
                                "prints only summaries (no per-iteration times), so an A/B of it can never get a "
                                "verdict; list it once, or A/B a runner-protocol engine (dlbench, protocol) or "
                                "tool:onnxruntime_perf_test")
    for dup in sorted({x for x in labels if labels.count(x) > 1}):
        problems.append(f"engines: '{dup[0]}' is listed twice with label '{dup[1]}'; give each build its own label")
    for i, e in enumerate(engines):
        python = e.options.get("python")
        if python is not None and not (isinstance(python, str) and Path(python).expanduser().is_file()):
            problems.append(f"engines[{i}].options.python: {python!r} is not a Python interpreter on this machine")
        process = e.options.get("process")
        if process is not None and process not in PROCESS_STARTS:
            problems.append(f"engines[{i}].options.process: {process!r} is not allowed; allowed: "
                            f"{', '.join(PROCESS_STARTS)}")
        elif process is not None and (native := _native_runner(e.name)):
            problems.append(f"engines[{i}].options.process: only for engines devicelab's Python runner runs "
                            f"({e.name} runs {native})")
        threshold = e.options.get("mmap_threshold")
        if "mmap_threshold" in e.options and threshold != "dynamic" and (
                isinstance(threshold, bool) or not isinstance(threshold, int)
                or not 0 <= threshold <= MMAP_THRESHOLD_MAX):
            problems.append(f"engines[{i}].options.mmap_threshold: {threshold!r} is not allowed; allowed: dynamic, or "
                            f"bytes from 0 to {MMAP_THRESHOLD_MAX} (default {MMAP_THRESHOLD_DEFAULT})")

    name = raw.get("name") or "suite"
    if problems:
        raise ConfigError(source, problems)
    return Suite(str(name), tuple(models), tuple(engines), tuple(threads), tuple(precisions), tuple(backends),
                 tuple(affinities), device_ids, settings, seed, repeats, min_repeats, llm)


def _native_runner(engine: str) -> str | None:
    """The native program devicelab runs for this engine (dlbench), if any; None for the Python runner, for engines
    that run the user's program (their option keys are checked on their own) and for unknown engines."""
    from devicelab.engines import get_engine

    try:
        return get_engine(engine).native_runner
    except Exception:  # noqa: BLE001 - an unknown engine is reported on its own line
        return None


# How the host starts devicelab's Python runner for each config (docs/architecture.md): forked from a zygote that
# imported the engine once (the default), or a fresh interpreter every time.
PROCESS_STARTS = ("zygote", "exec")
# glibc's own starting threshold, kept fixed (docs/architecture.md, "The allocator"); glibc accepts up to 32 MiB.
MMAP_THRESHOLD_DEFAULT = 128 * 1024
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024


def ab_pairs(engines: tuple[EngineSpec, ...] | list[EngineSpec]) -> list[tuple[str, str, str]]:
    """(engine, base label, candidate label) for every engine listed under several labels: the first is the base."""
    pairs = []
    for name in dict.fromkeys(e.name for e in engines):
        labels = [e.label for e in engines if e.name == name]
        pairs += [(name, labels[0], other) for other in labels[1:]]
    return pairs


def split_values(values: list[str] | None) -> list[str] | None:
    """CLI values may repeat the flag or use comma lists: --threads 1 --threads 2 == --threads 1,2."""
    if not values:
        return None
    out: list[str] = []
    for v in values:
        out.extend(part.strip() for part in v.split(",") if part.strip())
    return out


def _profile_setting(value: Any, settings: ProtocolSettings, problems: list[str]) -> ProtocolSettings:
    """The suite's `profile:` — true/false, or {iterations: N} — onto the protocol settings (profile,
    profile_iterations), where the runners' drivers read it and the Result records it."""
    if value is None:
        return settings
    if isinstance(value, bool):
        return dataclasses.replace(settings, profile=value) if value else settings
    if isinstance(value, dict):
        n = value.get("iterations", settings.profile_iterations)
        unknown = [k for k in value if k != "iterations"]
        if unknown:
            problems.append(f"profile.{unknown[0]}: unknown key; allowed: iterations")
        elif isinstance(n, bool) or not isinstance(n, int) or n < 1:
            problems.append(f"profile.iterations: {n!r} is not a positive integer")
        else:
            return dataclasses.replace(settings, profile=True, profile_iterations=n)
        return settings
    problems.append(f"profile: {value!r} is not allowed; allowed: true, false, or {{iterations: N}}")
    return settings


def resolve_suite(suite_path: str | None, quick: bool, overrides: dict[str, list[str] | None]) -> tuple[dict[str, Any], str]:
    """The raw suite mapping to validate: a file, the quick suite, or the default; CLI flags replace axes."""
    if suite_path and quick:
        raise DevicelabError("--suite and --quick: give one of them")
    if suite_path:
        path = Path(suite_path).expanduser()
        raw, source = load_suite_file(path), str(path)
    else:
        name = "quick" if quick else "default"
        raw, source = builtin_suite(name), f"built-in suite '{name}'"
    # Flag values replace the suite's list for that axis and go through the same validation.
    axis = {"device": "devices", "engine": "engines", "model": "models", "threads": "threads",
            "precision": "precisions", "backend": "backends", "affinity": "affinity"}
    for flag, key in axis.items():
        values = split_values(overrides.get(flag))
        if values is not None:
            raw[key] = values
    return raw, source
