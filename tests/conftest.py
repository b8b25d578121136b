"""Shared fixtures. Integration tests run the real CLI in subprocesses against real ONNX Runtime; every
test gets its own database, while the zoo cache is shared per session (building it is deterministic)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# Test modules share helpers.py. Only this folder goes on sys.path, never the repository root: the tests
# must import the installed devicelab (what `pip install .` ships), not the source tree.
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("devicelab-data")


@pytest.fixture
def env(data_dir: Path, tmp_path: Path) -> dict[str, str]:
    e = dict(os.environ)
    e.update({"DEVICELAB_DATA": str(data_dir), "DEVICELAB_DB": str(tmp_path / "db.sqlite"),
              "HOME": str(tmp_path / "home"), "COLUMNS": "200"})
    e.pop("DEVICELAB_DEVICES", None)
    return e


