"""Start-up of the CLI: `devicelab --help`, `devicelab runs` and every command's --help load no heavy module.

Checked on what a fresh interpreter has imported, never on a time: a time depends on the machine and its load
(README: "Commands" gives the figure; benchmarks/startup.py measures it)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from devicelab.store import SqliteStore
from helpers import DEVICELAB, HISTORY_RUNS, devicelab, store_history

# The data stack, the report's templates, the engines, the phone library; and pydantic, which typer (0.29) loads to
# convert parameters unless devicelab.cli._defer_typer_coercion keeps it for the values that need converting; Dask,
# which only the farm commands load.
HEAVY = ("numpy", "pandas", "scipy", "jinja2", "onnx", "onnxruntime", "adbutils", "pyarrow", "sklearn", "openvino",
         "ncnn", "MNN", "ai_edge_litert", "pydantic", "dask", "distributed")

# A fresh interpreter runs devicelab.cli.main(argv) and writes the names in sys.modules to a file, whatever the exit.
PROBE = """
import json, sys
from devicelab.cli import main
try:
    code = main(json.loads(sys.argv[1]))
finally:
    with open(sys.argv[2], "w") as f:
        json.dump(sorted(sys.modules), f)
sys.exit(code)
"""


def heavy_in(modules: list[str]) -> list[str]:
    """The heavy packages among `modules` (their submodules count as the package)."""
    return sorted({m.split(".")[0] for m in modules} & set(HEAVY))


def loaded(argv: list[str], env: dict[str, str], tmp_path: Path) -> tuple[int, list[str]]:
    listing = tmp_path / "modules.json"
    # -P: the installed devicelab, not the source tree the tests run from
    p = subprocess.run([sys.executable, "-P", "-c", PROBE, json.dumps(argv), str(listing)], env=env, capture_output=True,
                       text=True, timeout=120)
    assert listing.exists(), p.stderr[-2000:]
    return p.returncode, json.loads(listing.read_text())


def commands() -> list[str]:
    from typer.main import get_command

    from devicelab.cli import app

    return sorted(get_command(app).commands)  # type: ignore[attr-defined]


@pytest.fixture
def history(env: dict[str, str]) -> dict[str, str]:
    store_history(Path(env["DEVICELAB_DB"]))
    return env


def test_help_and_runs_import_nothing_heavy(history: dict[str, str], tmp_path: Path) -> None:
    empty = tmp_path / "empty.sqlite"
    SqliteStore(empty).close()
    for argv, env in ((["--help"], history), (["runs"], history), (["runs"], {**history, "DEVICELAB_DB": str(empty)}),
                      (["runs", "--json"], history), (["show", "--help"], history)):
        code, modules = loaded(argv, env, tmp_path)
        assert code == 0, argv
        assert heavy_in(modules) == [], f"devicelab {' '.join(argv)} imported {heavy_in(modules)}"
        assert "devicelab.store" in modules or argv[-1] == "--help"  # `runs` really read the database


def test_every_commands_help_imports_nothing_heavy(env: dict[str, str], tmp_path: Path) -> None:
    names = commands()
    assert {"run", "runs", "show", "compare", "devices", "engines", "models", "build-native"} <= set(names)
    for name in names:
        code, modules = loaded([name, "--help"], env, tmp_path)
        assert code == 0, name
        assert heavy_in(modules) == [], f"devicelab {name} --help imported {heavy_in(modules)}"


def test_the_console_script_imports_nothing_heavy(history: dict[str, str]) -> None:
    """The installed `devicelab` as a user starts it, under PYTHONPROFILEIMPORTTIME (python -X importtime)."""
    for argv in (["--help"], ["runs"]):
        p = subprocess.run([DEVICELAB, *argv], env={**history, "PYTHONPROFILEIMPORTTIME": "1"}, capture_output=True,
                           text=True, timeout=120)
        assert p.returncode == 0, p.stderr[-2000:]
        imported = [line.rsplit("|", 1)[1].strip() for line in p.stderr.splitlines() if line.startswith("import time:")]
        assert "devicelab.cli" in imported, p.stderr[-2000:]
        assert heavy_in(imported) == [], f"devicelab {' '.join(argv)} imported {heavy_in(imported)}"
    assert all(run_id in p.stdout for run_id in HISTORY_RUNS)


def test_typed_values_still_go_through_typers_conversion(history: dict[str, str]) -> None:
    """Only values that need no conversion skip typer's; a typed number is converted and checked by typer."""
    p = devicelab("runs", "--limit", "0", env=history)
    assert p.returncode == 2 and "Invalid value for '--limit'" in p.stderr and "greater than or equal to 1" in p.stderr
    p = devicelab("runs", "--limit", "one", env=history)
    assert p.returncode == 2 and "Invalid value for '--limit'" in p.stderr and "valid integer" in p.stderr
    p = devicelab("runs", "--limit", "1", "--json", env=history)
    assert p.returncode == 0 and [r["run_id"] for r in json.loads(p.stdout)] == [HISTORY_RUNS[-1]]
    assert json.loads(p.stdout)[0]["results"] == 124
    p = devicelab("noise", "host", "--repeats", "2", env=history)
    assert p.returncode == 2 and "Invalid value for '--repeats'" in p.stderr
