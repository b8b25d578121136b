"""The host's zygotes: the Python runner forked from a process that imported the engine once, with the same figures
as a fresh exec; the fall-backs when an import leaves a thread behind; exits and kills of forked children."""

from __future__ import annotations

import ctypes
import mmap
import os
import sys
import time
from pathlib import Path

import pytest

from devicelab.devices.base import Start
from devicelab.devices.zygote import ZygotePool
from helpers import run_json, write_suite

RUNNER = "devicelab.runners.host"


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", **extra}


def test_each_engine_says_which_path_it_took(env: dict[str, str], tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "s.yaml", engines=["ncnn", "litert", "onnxruntime"], threads=[1])
    code, out, err = run_json("run", "--suite", str(suite), env=env)
    assert code == 0, err
    by = {r["engine"]: r for r in out["results"]}
    for r in by.values():
        assert r["status"] == "ok" and r["ext"]["exec_path"] == "zygote", r
        assert r["ext"]["import_s"] > 0
        assert "zygote's exec" in r["protocol"]["pinning"]["method"]
        assert not any("outside the pinned" in n for n in r["notes"]), r["notes"]
        # each engine's import leaves one thread (ONNX Runtime's only with its telemetry off: CI=true), so every
        # zygote pre-imports the engine itself and no row carries a fall-back note
        assert not any("leaves" in n or "afresh" in n for n in r["notes"]), r["notes"]
    # ONNX Runtime's peak memory moves under a fork (benchmarks/zygote.py): its rows say so; the others' do not
    assert any(n.startswith("peak memory: ONNX Runtime") for n in by["onnxruntime"]["notes"])
    assert not any("zygote" in n for n in by["ncnn"]["notes"] + by["litert"]["notes"])


def test_forked_and_execd_runners_hold_the_same_memory(env: dict[str, str], tmp_path: Path) -> None:
    # A forked child does not inherit the zygote's clean file pages in its page tables; it maps again those the
    # zygote had resident, so RSS before load and the peak are a fresh process's (without that: ~35 % less here).
    suite = write_suite(tmp_path / "s.yaml", engines=[{"name": "ncnn", "label": "zygote"},
                                                      {"name": "ncnn", "label": "exec", "options": {"process": "exec"}}])
    code, out, err = run_json("run", "--suite", str(suite), env=env)
    assert code == 0, err
    by = {r["label"]: r for r in out["results"]}
    assert by["zygote"]["ext"]["exec_path"] == "zygote" and by["exec"]["ext"]["exec_path"] == "exec"
    # Before load within 1 %: the zygote's own work (its page scan, its modules) must not stay resident in the child
    # (it was 1.3-2 % above while the scan ran numpy code). The peak gets 5 %: it depends on the heap's history.
    assert by["zygote"]["rss_before_load_bytes"] == pytest.approx(by["exec"]["rss_before_load_bytes"], rel=0.01)
    assert by["zygote"]["peak_rss_bytes"] == pytest.approx(by["exec"]["peak_rss_bytes"], rel=0.05)


def test_resident_file_pages_are_the_mapped_file_pages(tmp_path: Path) -> None:
    from devicelab.runners.zygote import PAGE, resident_file_pages

    data = tmp_path / "pages.bin"
    data.write_bytes(os.urandom(64 * PAGE))
    with open(data, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY) as m:
        view = ctypes.c_char.from_buffer(m)  # private and writable only so that ctypes gives its address; never written
        start = ctypes.addressof(view)
        del view

        def runs_in_mapping() -> list[tuple[int, int]]:
            runs = resident_file_pages()
            pairs = list(zip(runs[0::2], runs[1::2]))
            return [(a, n) for a, n in pairs if a < start + 64 * PAGE and a + n > start]

        assert runs_in_mapping() == []  # mapped, never touched: not resident in this process
        # Two far-apart pages touched: the kernel maps a window of neighbours with each (fault-around), so the truth
        # for the count is the mapping's Rss in smaps; the runs must hold both pages and add up to exactly that.
        assert m[10 * PAGE] >= 0 and m[50 * PAGE] >= 0
        runs = runs_in_mapping()
        assert sum(n for _, n in runs) == _smaps_rss(start)
        for page in (10, 50):
            assert any(a <= start + page * PAGE < a + n for a, n in runs), page
        assert sum(m[i * PAGE] for i in range(64)) >= 0  # now every page
        assert runs_in_mapping() == [(start, 64 * PAGE)]


def _smaps_rss(start: int) -> int:
    """Rss of the mapping that begins at `start`, from /proc/self/smaps (bytes)."""
    found = False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()[0]
            if "-" in head and ":" not in head:
                found = int(head.split("-")[0], 16) == start
            elif found and head == "Rss:":
                return int(line.split()[1]) * 1024
    raise AssertionError("mapping not found in smaps")


def test_an_import_that_starts_a_thread_means_a_fresh_exec(tmp_path: Path) -> None:
    (tmp_path / "threaded.py").write_text("import threading, time\n"
                                          "threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n")
    pool = ZygotePool()
    try:
        env = _env(PYTHONPATH=f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
        got = pool.spawn(sys.executable, ["unused.json"], env, None, ("threaded", "json"), key={"k": "1"})
        assert isinstance(got, Start) and got.path == "exec"
        assert got.note and "importing threaded leaves 2 threads" in got.note
        # and a numpy-first preload whose engine starts the thread: the zygote keeps numpy only
        got = pool.spawn(sys.executable, [str(tmp_path / "missing.json")], env, None, ("numpy", "threaded"),
                         key={"k": "2"})
        assert not isinstance(got, Start)
        child, start = got
        assert start.path == "zygote" and start.preloaded == ("numpy",) and "threaded leaves 2" in (start.note or "")
        exit_ = child.wait(60)
        assert exit_ is not None and exit_.code == 1  # the runner's own exit for a config it cannot read
        assert b"No such file" in child.stderr().encode() or "missing.json" in child.read_line(time.monotonic() + 5
                                                                                              ).decode()
    finally:
        pool.close()


def test_a_forked_child_is_killed_with_its_group_and_the_zygote_lives_on(tmp_path: Path) -> None:
    fifo = tmp_path / "config.json"
    os.mkfifo(fifo)  # the runner blocks opening it: a child that never ends by itself
    pool = ZygotePool()
    again = None
    try:
        got = pool.spawn(sys.executable, [str(fifo)], _env(), None, ("numpy",), key={})
        assert not isinstance(got, Start)
        child, _ = got
        assert child.wait(0.5) is None
        assert "process group was killed" in child.kill()
        exit_ = child.wait(10)
        assert exit_ is not None and exit_.signal == 9 and exit_.code == 137
        # the same zygote forks the next one
        again = pool.spawn(sys.executable, [str(tmp_path / "none.json")], _env(), None, ("numpy",), key={})
        assert not isinstance(again, Start) and again[0].pid != child.pid
        assert again[0].wait(60) is not None
    finally:
        zygote = again[0].zygote if again and not isinstance(again, Start) else None
        pool.close()
        if "child" in locals():  # never leave the blocked child behind when an assertion above failed
            try:
                os.kill(child.pid, 9)
            except ProcessLookupError:
                pass
    # closing the pool ends the zygote by its socket (exit 0), not by the kill after a timeout (-9)
    assert zygote is not None and zygote.proc.returncode == 0


def test_process_option_is_checked(env: dict[str, str], tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "s.yaml", engines=[{"name": "ncnn", "options": {"process": "fork"}}])
    code, _, err = run_json("run", "--suite", str(suite), env=env)
    assert code == 2 and "options.process: 'fork' is not allowed; allowed: zygote, exec" in err
    suite = write_suite(tmp_path / "d.yaml", engines=[{"name": "dlbench", "options": {"process": "exec"}}])
    code, _, err = run_json("run", "--suite", str(suite), env=env)
    assert code == 2 and "options.process: only for engines devicelab's Python runner runs (dlbench runs dlbench)" in err


def test_each_repeat_round_and_each_cpu_set_gets_its_own_zygote(tmp_path: Path) -> None:
    pool = ZygotePool()
    try:
        def parent(generation: int, cpus: tuple[int, ...], omp: str) -> int:
            got = pool.spawn(sys.executable, [str(tmp_path / "none.json")], _env(OMP_NUM_THREADS=omp), None,
                             ("numpy",), key={"OMP_NUM_THREADS": omp}, cpus=cpus, generation=generation)
            assert not isinstance(got, Start)
            got[0].wait(60)
            return got[0].zygote.proc.pid

        first = parent(0, (0,), "1")
        assert parent(0, (0,), "1") == first  # the same round, CPU set and environment: the same zygote
        # libgomp counts its CPUs and reads OMP_NUM_THREADS as the engine loads: another set is another zygote
        assert parent(0, (0, 1) if os.cpu_count() and os.cpu_count() > 1 else (0,), "2") != first
        # a new round: new zygotes (the children of one config across rounds never share a parent), old ones closed
        assert parent(1, (0,), "1") != first
        assert all(k[-1] == 1 for k in pool._zygotes)
    finally:
        pool.close()


def test_a_child_whose_zygote_died_is_not_taken_for_ended(tmp_path: Path) -> None:
    fifo = tmp_path / "config.json"
    os.mkfifo(fifo)  # blocks the runner: a child still running
    pool = ZygotePool()
    try:
        got = pool.spawn(sys.executable, [str(fifo)], _env(), None, ("numpy",), key={})
        assert not isinstance(got, Start)
        child, _ = got
        os.kill(child.zygote.proc.pid, 9)
        child.zygote.proc.wait()
        assert child.wait(1.0) is None  # still running: nobody reports its exit, but its pid is there
        assert "killed" in child.kill()
        exit_ = child.wait(10)
        assert exit_ is not None and exit_.code is None and "unknown" in (exit_.detail or "")
    finally:
        pool.close()
        if "child" in locals():  # never leave it behind, even when an assertion above failed (it blocks forever)
            try:
                os.kill(child.pid, 9)
            except ProcessLookupError:
                pass

