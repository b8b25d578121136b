"""Tables a person can read in 80 columns and in a pipe: no cell cut to "127.0…", no line wider than the width, every
value whole somewhere in the output. The commands run in subprocesses (stdout a pipe, not a terminal) on real data:
the host's facts, the engines and the zoo as this machine has them, and runs written through the store."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from devicelab.terminal import print_table
from helpers import CRASH, HISTORY_RUNS, PHONE, devicelab, store_history

WIDTH = 80
# Rich's box drawing: a word in a table sits between these and spaces.
_RULES = re.compile(r"[\s\u2500-\u257f]+")


def words(text: str) -> set[str]:
    """The words of an output: between spaces and rules, and a block's keys without their colon."""
    found = set(_RULES.split(text)) - {""}
    return found | {w[:-1] for w in found if w.endswith(":")}


def flat(text: str) -> str:
    """The text with every run of spaces and line breaks as one space: a value wrapped onto indented lines (a block's
    value, a reason) reads as it was."""
    return " ".join(text.split())


def readable(p: object, width: int = WIDTH) -> str:
    """The command's stdout, checked: no line wider than `width`, nothing cut with an ellipsis."""
    out: str = p.stdout  # type: ignore[attr-defined]
    too_wide = [line for line in out.splitlines() if len(line) > width]
    assert not too_wide, f"{len(too_wide)} lines wider than {width}:\n" + "\n".join(too_wide[:5])
    assert "…" not in out, f"a cell was cut:\n{out}"
    return out


@pytest.fixture
def narrow(env: dict[str, str]) -> dict[str, str]:
    """80 columns, set as a user sets it; stdout is a pipe, as when piped into a file or `less`."""
    return {**env, "COLUMNS": str(WIDTH)}


def test_devices_at_80_columns(narrow: dict[str, str]) -> None:
    p = devicelab("devices", env=narrow)
    assert p.returncode == 0, p.stderr
    out = readable(p)
    facts = json.loads(devicelab("devices", "--json", env=narrow).stdout)
    for f in facts:
        assert f["id"] in words(out)
        # Nine columns never fit 80 with an OS string: the devices are blocks, every value on "key: value" lines.
        assert f"os: {flat(f['os'])}" in flat(out)
        assert f"abi: {f['abi']}" in flat(out) and f"cpus: {f['cpus']}" in flat(out)


def test_engines_and_models_at_80_columns(narrow: dict[str, str]) -> None:
    p = devicelab("engines", env=narrow)
    assert p.returncode == 0, p.stderr
    out = readable(p)
    for e in json.loads(devicelab("engines", "--json", env=narrow).stdout):
        assert e["name"] in words(out)
        if e["version"]:
            assert e["version"] in words(out)
        if e["reason"]:
            assert flat(e["reason"]) in flat(out)
        host = next(d for d in e["devices"] if d["kind"] == "host")
        assert set(host["runs"]) <= words(out)
    p = devicelab("models", env=narrow)
    assert p.returncode == 0, p.stderr
    out = readable(p)
    for m in json.loads(devicelab("models", "--json", env=narrow).stdout):
        assert m["name"] in words(out) and m["sha256"][:12] in words(out)
        assert flat(m["description"]) in flat(out)


def test_stored_runs_at_80_columns(narrow: dict[str, str]) -> None:
    store_history(Path(narrow["DEVICELAB_DB"]))
    base, cand = HISTORY_RUNS
    out = readable(devicelab("runs", env=narrow))
    assert {base, cand, "nightly-phone-and-host", "120/124"} <= words(out)

    p = devicelab("show", base, env=narrow)
    assert p.returncode == 0, p.stderr
    out = readable(p)
    assert f"mobilenet_v2 on {PHONE}" in out and "tool:onnxruntime_perf_test" in words(out)
    assert "1 thread: failed" in flat(out) and "peak memory: 98 MiB" in flat(out)
    assert f"failed: {PHONE} litert mobilenet_v2 fp32 cpu 1t: {CRASH}" in flat(out)

    p = devicelab("compare", base, cand, env=narrow)
    assert p.returncode == 1, p.stderr  # the phone is 10 % slower in the candidate
    out = readable(p)
    assert f"{PHONE} tool:onnxruntime_perf_test mobilenet_v2 fp32 cpu 8t" in flat(out)
    assert f"devicelab compare {base} → {cand}" in flat(out)

    p = devicelab("regress", env=narrow)
    assert p.returncode == 0, p.stderr
    out = readable(p)
    assert f"{PHONE} onnxruntime mobilenet_v2 int8 cpu 4t" in flat(out)
    assert "fewer than 2 stable runs before the newest: it cannot be checked yet" in flat(out)


def test_wide_terminals_keep_the_table(env: dict[str, str]) -> None:
    """Where the table fits (the tests' 200 columns), it stays a table, one line per row."""
    store_history(Path(env["DEVICELAB_DB"]))
    out = readable(devicelab("show", HISTORY_RUNS[0], env=env), width=200)
    assert "┃ engine" in out and any(line.startswith("│ tool:onnxruntime_perf_test │ 12.0") for line in out.splitlines())


def render(columns: list[str], rows: list[list[str]], width: int, title: str | None = None) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None, highlight=False, markup=False,
                      soft_wrap=True)
    print_table(console, columns, rows, title=title)
    return console.file.getvalue()  # type: ignore[attr-defined]


def test_the_three_layouts() -> None:
    columns = ["id", "kind", "os"]
    os_name = "Linux 6.18.44-fc-v1272 (Debian GNU/Linux 12 (bookworm))"
    wide = render(columns, [[PHONE, "android", os_name]], 100)
    assert wide.count("\n") == 5 and os_name in wide  # fits: rules, header, one line
    wrapped = render(columns, [[PHONE, "android", os_name]], 70)
    assert "┃ id" in wrapped and "6.18.44-fc-v1272" in words(wrapped) and "(bookworm))" in words(wrapped)
    assert max(map(len, wrapped.splitlines())) <= 70
    blocks = render(columns, [[PHONE, "android", os_name], ["host", "host", ""]], 40, title="devices")
    assert blocks.splitlines()[:5] == ["devices", f"  {PHONE}", "    kind: android",
                                       "    os:   Linux 6.18.44-fc-v1272 (Debian", "          GNU/Linux 12 (bookworm))"]
    assert "  host" in blocks.splitlines() and "os:" not in blocks.split("  host")[1]  # empty cells are left out


_word = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789.:-/()%", min_size=1, max_size=30)
_cell = st.lists(_word, min_size=0, max_size=8).map(" ".join)


@settings(max_examples=100, deadline=None)
@given(columns=st.lists(_word, min_size=1, max_size=9),
       rows=st.lists(st.lists(_cell, min_size=9, max_size=9), min_size=1, max_size=5),
       width=st.integers(min_value=40, max_value=160), title=st.none() | _cell)
def test_any_table_fits_whole(columns: list[str], rows: list[list[str]], width: int, title: str | None) -> None:
    """Whatever the cells and the width: no line wider than the width, no ellipsis, every word whole (a word is
    folded only when it is wider than a block's value column under its key: 6 less than the width, and words here
    are at most 30 long)."""
    rows = [r[:len(columns)] for r in rows]
    out = render(columns, rows, width, title)
    assert max(map(len, out.splitlines()), default=0) <= width
    assert "…" not in out
    # Headers too, but a block names no first column, and no column whose cells are all empty (those it leaves out).
    shown = [c for i, c in enumerate(columns) if i and any(r[i].strip() for r in rows)]
    assert {w for r in [shown, *rows, [title or ""]] for cell in r for w in cell.split()} <= words(out)
