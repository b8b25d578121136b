"""The package's shape, checked on its source (ast, imports inside functions included), so a change cannot break it
silently: the layering rules of docs/architecture.md, the two places a Result is born, and no Result amended after
birth."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import devicelab

PACKAGE = Path(devicelab.__file__).resolve().parent


def modules() -> Iterator[tuple[str, ast.Module]]:
    """(module name, its tree) for every module of the installed package."""
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        yield name, ast.parse(path.read_text(), str(path))


def imported(tree: ast.Module, module: str = "") -> set[str]:
    """Every module a tree imports, anywhere in it; `from pkg import name` counts as pkg and pkg.name; relative imports
    are resolved against `module`; importlib.import_module("...") with a literal name counts too."""
    found: set[str] = set()
    package = module.split(".")
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package[:len(package) - node.level], *([base] if base else [])])
            if base:
                found.add(base)
                found.update(f"{base}.{a.name}" for a in node.names)
        elif (isinstance(node, ast.Call) and _callee(node) in ("import_module", "importlib.import_module",
                                                                 "__import__")
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.add(node.args[0].value)
    return found


def _within(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


# (modules the rule applies to, modules they must not import, why)
RULES = [
    (("devicelab.plan", "devicelab.config", "devicelab.facts"), ("devicelab.devices",),
     "planning and configuration read device facts, never a device kind"),
    (("devicelab.analysis",), ("devicelab.devices", "devicelab.session"), "analysis is pure statistics over Results"),
    (("devicelab.store", "devicelab.store_pg"), ("devicelab.devices", "devicelab.engines", "devicelab.session"),
     "the store keeps records; it runs nothing"),
    (("devicelab.devices", "devicelab.engines", "devicelab.session", "devicelab.energy", "devicelab.measure"),
     ("devicelab.cli", "devicelab.terminal"), "only the CLI parses and renders"),
    (("devicelab.session", "devicelab.sweep", "devicelab.energy", "devicelab.measure"),
     ("devicelab.devices.host", "devicelab.devices.android"), "the session runs on any transport: no kind's module"),
    (("devicelab.result", "devicelab.rows", "devicelab.facts"), ("devicelab.devices", "devicelab.engines"),
     "the record's schema depends on nothing that runs"),
    (("devicelab.opprof",), ("devicelab.devices", "devicelab.engines", "devicelab.session", "devicelab.store"),
     "per-op profiles are built from what an engine reported: pure, like analysis"),
]


def violations(rules: list[tuple[tuple[str, ...], tuple[str, ...], str]] = RULES) -> list[str]:
    found = []
    for name, tree in modules():
        deps = imported(tree, name)
        for subjects, forbidden, why in rules:
            if _within(name, *subjects):
                bad = sorted(d for d in deps if _within(d, *forbidden))
                if bad:
                    found.append(f"{name} imports {', '.join(bad)} ({why})")
        # Third-party device libraries have one home each.
        if "adbutils" in {d.split(".")[0] for d in deps} and not _within(name, "devicelab.devices.android"):
            found.append(f"{name} imports adbutils (only devicelab.devices.android may)")
        if "pymobiledevice3" in {d.split(".")[0] for d in deps} and not _within(name, "devicelab.devices.ios"):
            found.append(f"{name} imports pymobiledevice3 (only devicelab.devices.ios may)")
        # The PostgreSQL client has one home too: SQLite users never import it.
        if "psycopg" in {d.split(".")[0] for d in deps} and not _within(name, "devicelab.store_pg"):
            found.append(f"{name} imports psycopg (only devicelab.store_pg may)")
        if {"dask", "distributed"} & {d.split(".")[0] for d in deps} and not _within(name, "devicelab.farm"):
            found.append(f"{name} imports Dask (only devicelab.farm may)")
    return found


def test_import_rules_hold() -> None:
    assert violations() == []


def test_the_import_rule_check_sees_every_way_to_import(tmp_path: Path) -> None:
    """The checker itself: an import inside a function, a relative import and importlib all count (a rule it could
    not see would pass forever)."""
    tree = ast.parse("def f():\n    from devicelab.devices import open_device\n")
    assert {"devicelab.devices", "devicelab.devices.open_device"} <= imported(tree)
    assert "devicelab.devices.host" in imported(ast.parse("from ..devices import host\n"), "devicelab.analysis.x")
    assert "devicelab.devices.host" in imported(ast.parse("import importlib\n"
                                                          "importlib.import_module('devicelab.devices.host')\n"))


def _calls(tree: ast.Module) -> Iterator[ast.Call]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def _callee(call: ast.Call) -> str:
    """What a call calls, as written: `f`, `mod.f`, `a.b.f` (the last two parts)."""
    f = call.func
    if isinstance(f, ast.Name):
        return f.id
    if isinstance(f, ast.Attribute):
        base = f.value.id if isinstance(f.value, ast.Name) else f.value.attr if isinstance(f.value, ast.Attribute) \
            else "?"
        return f"{base}.{f.attr}"
    return "?"


# The two places a Result is born (result.py holds the constructors themselves).
CREATORS = {"devicelab.session", "devicelab.rows", "devicelab.result"}


def test_results_are_created_in_the_session_and_rows_only() -> None:
    sites = {name for name, tree in modules() for call in _calls(tree)
             if _callee(call).split(".")[-1] in ("Result", "for_config") or _callee(call).endswith("Result.for_config")}
    assert sites <= CREATORS, f"Result created outside the session and rows: {sites - CREATORS}"
    assert {"devicelab.session", "devicelab.rows"} <= sites


# Every dataclasses.replace() in the package, by module and the source of its first argument. None of them is a
# Result (a Result is never amended after birth): a new one must be added here on purpose.
REPLACES = {
    ("devicelab.plan", "r"), ("devicelab.plan", "r.config"),
    ("devicelab.measure", "ProtocolSettings()"),
    ("devicelab.config", "settings"),  # the suite's `profile:` key onto its protocol settings
    ("devicelab.session", "self.tool_s"),  # a tool's profiling run: its settings with the per-op flags
    ("devicelab.sweep", "suite"), ("devicelab.sweep", "info"), ("devicelab.farm.client", "suite"),
    ("devicelab.engines.tool_base", "self"),
    ("devicelab.engines.tool_benchmark_model", "prepared"),
    ("devicelab.engines.tool_benchncnn", "run"),
    ("devicelab.engines.tool_onnxruntime_perf_test", "run"),
    # a farm worker's copy of a Job (not a Result) with its host's cached paths in place of the client's
    ("devicelab.farm.artifacts", "job"), ("devicelab.farm.artifacts", "job.source"),
    ("devicelab.farm.artifacts", "job.prepared"), ("devicelab.farm.artifacts", "job.reference"),
    # an LLM config's F32 reference pass (a Job, its config and settings; not a Result): session._reference_pass
    ("devicelab.session", "job"), ("devicelab.session", "self.cfg"), ("devicelab.session", "job.settings"),
    # how a Python runner's process began (a Start, not a Result): a shared zygote's, and a note added to it
    ("devicelab.devices.zygote", "start"),
}


def test_no_result_is_amended_after_birth() -> None:
    found = {(name, ast.unparse(call.args[0])) for name, tree in modules() for call in _calls(tree)
             if _callee(call) in ("replace", "dataclasses.replace") and call.args}
    assert found == REPLACES, ("a replace() was added or removed; a Result must never be replaced: "
                               f"new {found - REPLACES}, gone {REPLACES - found}")


@pytest.mark.parametrize("function", ["utc_now", "sha256_file"])
def test_shared_helpers_are_defined_once(function: str) -> None:
    defined = [name for name, tree in modules() for node in ast.walk(tree)
               if isinstance(node, ast.FunctionDef) and node.name == function]
    assert len(defined) == 1, defined
