"""Runner protocol v3 (LLM requests) for engines driven from Python: devicelab's host runner hands an LLM config (one
with an `llm` key) here, after it has pinned itself and imported the engine (docs/runner-protocol.md, "v3").

The engine gives an LLM session (`Engine.open_llm_session(config)`) whose `request()` runs one request as the
protocol defines it: the KV cache emptied, the depth tokens decoded untimed, the prompt's prefill timed until the
first generated token's logits are ready, then G decode steps of one token each, timed one by one; greedy argmax and
every copy of the logits outside the timed spans. This module only speaks the protocol: the same events and fields as
dlllm (native/llm/dlllm.cpp), so devicelab.llm builds ext.llm from either unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Any, Protocol, TextIO

PROTOCOL = 3


class LlmRequest(Protocol):
    start: float  # the prefill's start on this process's monotonic clock (perf_counter)
    prefill_s: float
    token_s: list[float]


class LlmSession(Protocol):
    """One loaded LLM inside the runner."""

    def request(self) -> LlmRequest: ...

    def info(self) -> dict[str, Any]:
        """ready's `llm` record: n_params, model_bytes, quant, kv_type, n_ctx, n_vocab (and what else it knows)."""
        ...

    def logits(self) -> bytes:
        """The last request's G + 1 rows of logits, float32 little-endian, row-major."""
        ...


def _emit(out: TextIO, event: dict[str, Any]) -> None:
    out.write(json.dumps(event, separators=(",", ":")) + "\n")
    out.flush()


def _lines(r: LlmRequest, prompt_tokens: int) -> str:
    total = r.prefill_s + sum(r.token_s)
    text = json.dumps({"event": "prefill", "s": r.prefill_s, "tokens": prompt_tokens, "t": r.start},
                      separators=(",", ":")) + "\n"
    text += "".join(f'{{"event":"token","s":{s!r}}}\n' for s in r.token_s)
    return text + json.dumps({"event": "iter", "s": total, "t": r.start}, separators=(",", ":")) + "\n"


def _os_threads() -> int | None:
    """The process's threads (Linux): what the engine really started, next to what it was asked for."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return None


def run(engine: Any, config: dict[str, Any], out: TextIO, commands: TextIO, import_s: float, start: dict[str, Any],
        status_bytes: Any, peak_rss: Any, thread_cpus: Any) -> int:
    """One LLM config, from the load to `done` (the host runner's helpers passed in: it owns RSS and CPU reading)."""
    prompt_tokens = len(config["llm"]["prompt"])
    rss_before = status_bytes("VmRSS")
    t0 = time.perf_counter()
    session: LlmSession = engine.open_llm_session(config)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    session.request()
    first_s = time.perf_counter() - t0

    warm = config.get("warmup") or {}
    warmups, warm_total = 0, 0.0
    if warm.get("by") != "controller":  # a v1-style config: warm up here until both minimums hold
        min_iter, min_s = int(warm.get("min_iterations", 3)), float(warm.get("min_seconds", 0.5))
        while warmups < min_iter or warm_total < min_s:
            r = session.request()
            warm_total += r.prefill_s + sum(r.token_s)
            warmups += 1

    _emit(out, {"event": "ready", "protocol": PROTOCOL, "import_s": import_s, "load_s": load_s, "first_s": first_s,
                "warmups": warmups, "warmup_s": warm_total, "rss_before_load_bytes": rss_before,
                "exec_path": start["exec_path"], "preloaded": start["preloaded"], "pid": os.getpid(),
                "cpus": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
                "runner": "devicelab.runners.host", "os_threads": _os_threads(), "llm": session.info()})

    fixed = config.get("iterations")  # batch mode: for callers that cannot write to stdin
    lines = iter(commands) if fixed is None else iter([json.dumps({"cmd": "run", "iterations": fixed}),
                                                       json.dumps({"cmd": "stop"})])
    for line in lines:
        if not line.strip():
            continue
        cmd = json.loads(line)
        if cmd.get("cmd") in ("run", "warmup"):
            done = [session.request() for _ in range(int(cmd["iterations"]))]
            # Printed after the batch: writing is not inference.
            out.write("".join(_lines(r, prompt_tokens) for r in done) + '{"event":"batch"}\n')
            out.flush()
        elif cmd.get("cmd") == "stop":
            peak, method = peak_rss()
            logits = session.logits()
            path = config.get("outputs_file")
            if path:
                with open(path, "wb") as f:
                    f.write(logits)
            _emit(out, {"event": "done", "peak_rss_bytes": peak, "peak_rss_method": method,
                        "thread_cpus": thread_cpus(), "os_threads": _os_threads(),
                        "outputs_sha256": hashlib.sha256(logits).hexdigest(), "outputs_file": path or None})
            return 0
        else:
            _emit(out, {"event": "error", "message": f"unknown command {cmd!r}; allowed: warmup, run, stop"})
            return 2
    _emit(out, {"event": "error", "message": "stdin closed before 'stop'"})
    return 3
