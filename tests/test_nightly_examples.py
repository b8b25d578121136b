"""examples/nightly: the nightly A/B suite validates with real runner builds in place, the job script is valid bash
whose exit code is the alert, and the systemd units parse (systemd-analyze)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from devicelab.config import ConfigError, load_suite_file, parse_suite

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture
def nightly(tmp_path: Path) -> Path:
    folder = tmp_path / "nightly"
    shutil.copytree(EXAMPLES / "nightly", folder)
    return folder


def test_the_suite_pairs_a_candidate_with_the_reference_in_adaptive_rounds(nightly: Path, tmp_path: Path) -> None:
    runner = tmp_path / "runner"
    subprocess.run(["cc", "-O2", "-o", str(runner), str(EXAMPLES / "protocol_runner.c")], check=True)
    path = nightly / "suite.yaml"
    with pytest.raises(ConfigError, match="is not a file"):  # the builds are put in place by nightly.sh
        parse_suite(load_suite_file(path), str(path))
    for label in ("reference", "candidate"):
        (nightly / "builds" / label).mkdir(parents=True)
        shutil.copy(runner, nightly / "builds" / label / "runner")
    suite = parse_suite(load_suite_file(path), str(path))
    assert [(e.name, e.label) for e in suite.engines] == [("protocol", "reference"), ("protocol", "candidate")]
    assert (suite.min_repeats, suite.repeats) == (3, 48)  # adaptive rounds, up to what docs/nightly.md measured


def test_the_job_script_is_bash_and_refuses_to_start_without_its_settings(nightly: Path) -> None:
    script = nightly / "nightly.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    p = subprocess.run([str(script)], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}, cwd=nightly)
    assert p.returncode != 0 and "REFERENCE_RUNNER" in p.stderr


def test_the_systemd_units_parse(nightly: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing (Debian's systemd package)"
    p = subprocess.run([analyze, "verify", "--man=no", str(nightly / "devicelab-nightly.timer"),
                        str(nightly / "devicelab-nightly.service")], capture_output=True, text=True, timeout=60)
    # The only complaint allowed: the job script is not installed at /opt/devicelab on this machine.
    problems = [line for line in (p.stdout + p.stderr).splitlines()
                if line.strip() and "/opt/devicelab/examples/nightly/nightly.sh" not in line]
    assert problems == [], problems
