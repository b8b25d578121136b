"""`devicelab build-native`: the registry it writes, reuse from the cache, and a failing step."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from helpers import devicelab

pytestmark = pytest.mark.slow  # end to end: not in the fast subset (README, "Tests")


def test_registry_records_targets_with_hashes(native_host: dict[str, Any], data_dir: Path) -> None:
    registry = json.loads((data_dir / "native" / "registry.json").read_text())
    entry = registry["targets"]["host"]
    assert registry["version"] == 1 and entry["backends"][0] == "ncnn"
    import hashlib

    for name in ("dlprobe", "dlbench"):
        art = entry["artifacts"][name]
        path = Path(art["path"])
        assert path.parent == data_dir / "native" / "host" and path.is_file()
        assert hashlib.sha256(path.read_bytes()).hexdigest() == art["sha256"] and path.stat().st_size == art["bytes"]
    assert entry["dlbench_version"].startswith("dlbench-") and entry["ncnn_version"] in entry["dlbench_version"]


def test_second_build_reuses_the_cache(native_host: dict[str, Any], env: dict[str, str], tmp_path: Path) -> None:
    p = devicelab("build-native", "--json", env=dict(env, DEVICELAB_DATA=str(tmp_path / "other-data")))
    assert p.returncode == 0, p.stderr
    # Nothing compiled: the same binaries, registered into another data folder.
    record = json.loads(p.stdout)
    # (the session's registry may hold the LLM build's programs too, registered beside these by another test)
    mine = {k: a["sha256"] for k, a in record["artifacts"].items()}
    assert mine and mine == {k: a["sha256"] for k, a in native_host["artifacts"].items() if k in mine}
    assert set(mine) >= {"dlprobe", "dlbench"}
    assert "building" not in p.stderr  # nothing compiled (no wall-clock bound: this machine is shared)


def test_a_failing_step_is_one_line_naming_its_log(env: dict[str, str], tmp_path: Path) -> None:
    # A version PyPI does not have: pip download fails; exit 1 (not bad input), one line with the log's path.
    p = devicelab("build-native", "--ncnn-version", "1.0.20000101", env=dict(
        env, DEVICELAB_DATA=str(tmp_path / "data"), DEVICELAB_CACHE=str(tmp_path / "cache")), timeout=600)
    assert p.returncode == 1
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("error: pip download ncnn==1.0.20000101 failed") and "full log: " in last
    assert Path(last.rsplit("full log: ", 1)[1]).is_file()
    assert not (tmp_path / "data" / "native").exists()
