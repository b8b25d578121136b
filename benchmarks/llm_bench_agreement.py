#!/usr/bin/env python3
"""devicelab's llama.cpp decode speed (dlllm, runner protocol v3) against llama-bench's, same model, same build.

Both programs come from one `devicelab build-native --target host --llm` (the same libllama, ggml and flags), run on
the same model file, one thread, pinned to the same CPU, alternating process by process (round i runs one of each,
the order swapped every round) so drift and heat hit both alike:

* llama-bench `-m MODEL -p 0 -n G -d D -t 1 -r REPS -o json`: one generation test of G tokens after D tokens of
  depth; its samples_ts are tokens/s per repetition.
* dlllm with depth D-1 and a prompt of one token, then G decode steps: its decode steps sit at the same KV positions
  (D .. D+G-1) as llama-bench's, in a context of the same size (D+G); one untimed warmup request, then REPS requests;
  a request's decode tokens/s is G / (sum of its G token times).

Prints each round's medians, and on its last line the ratio devicelab/llama-bench of decode tokens/s with its 95 % CI
(the round as the unit, as `compare` pairs two labels of one run: benchmarks/_common.paired_ratio). Run it on an
otherwise idle machine.

usage: python benchmarks/llm_bench_agreement.py [ROUNDS] [MODEL] [QUANT] [DEPTH] [GEN] [REPS] [CPU]
       (defaults 6, llama-tiny, F32, 128, 64, 5, the last CPU)
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import machine, paired_ratio

from devicelab import native_llm, paths, zoo_llm
from devicelab.engines.llamacpp import host_quantizer


def pinned(cpu: int) -> Any:
    return lambda: os.sched_setaffinity(0, {cpu})


def run_llama_bench(binary: Path, model: Path, depth: int, gen: int, reps: int, cpu: int) -> list[float]:
    """Per-repetition decode seconds per token (1 / samples_ts)."""
    argv = [str(binary), "-m", str(model), "-p", "0", "-n", str(gen), "-d", str(depth), "-t", "1", "-r", str(reps),
            "--delay", "0", "-o", "json"]
    p = subprocess.run(argv, capture_output=True, text=True, preexec_fn=pinned(cpu), timeout=3600)
    if p.returncode != 0:
        raise SystemExit(f"llama-bench failed ({p.returncode}): {p.stderr[-1000:]}")
    [test] = [t for t in json.loads(p.stdout[p.stdout.find("["):]) if t["n_gen"] == gen]
    return [1.0 / float(ts) for ts in test["samples_ts"]]


def run_dlllm(binary: Path, model: Path, depth: int, gen: int, reps: int, cpu: int, folder: Path,
              n_vocab: int) -> list[float]:
    """Per-request decode seconds per token (sum of the G token times / G)."""
    first = zoo_llm.first_plain_token()
    ids = [first + (7919 * i) % (n_vocab - first) for i in range(depth)]
    cfg = {"model": str(model), "threads": 1, "cpus": [cpu], "warmup": {"by": "controller"},
           "llm": {"depth": ids[:depth - 1], "prompt": ids[depth - 1:depth] or [first], "gen_tokens": gen, "seed": 0}}
    path = folder / "config.json"
    path.write_text(json.dumps(cfg))
    commands = json.dumps({"cmd": "warmup", "iterations": 1}) + "\n" + json.dumps(
        {"cmd": "run", "iterations": reps}) + "\n" + json.dumps({"cmd": "stop"}) + "\n"
    p = subprocess.run([str(binary), str(path)], input=commands, capture_output=True, text=True, timeout=3600)
    if p.returncode != 0:
        raise SystemExit(f"dlllm failed ({p.returncode}): {p.stdout[-500:]} {p.stderr[-1000:]}")
    events = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
    batches = [i for i, e in enumerate(events) if e["event"] == "batch"]
    timed = events[batches[0] + 1:batches[1]]  # after the warmup batch
    out: list[float] = []
    tokens: list[float] = []
    for e in timed:
        if e["event"] == "prefill":
            tokens = []
        elif e["event"] == "token":
            tokens.append(float(e["s"]))
        elif e["event"] == "iter":
            out.append(sum(tokens) / len(tokens))
    return out


def main() -> None:
    args = sys.argv[1:]
    rounds = int(args[0]) if len(args) > 0 else 6
    name = args[1] if len(args) > 1 else "llama-tiny"
    quant = args[2] if len(args) > 2 else "F32"
    depth = int(args[3]) if len(args) > 3 else 128
    gen = int(args[4]) if len(args) > 4 else 64
    reps = int(args[5]) if len(args) > 5 else 5
    cpu = int(args[6]) if len(args) > 6 else max(os.sched_getaffinity(0))
    if depth < 1:
        raise SystemExit("DEPTH: must be >= 1 (dlllm's prompt token takes position D-1)")
    build = native_llm.registered("host")
    if build is None or "llama-bench" not in build.artifacts:
        raise SystemExit("run `devicelab build-native --target host --llm` first (same DEVICELAB_DATA)")
    model = zoo_llm.llm_model(name, quant, paths.zoo_dir() / "llm",
                              None if quant == "F32" else host_quantizer())
    print(f"machine: {machine()}; {build.version}; model {name} {quant} ({model.bytes} bytes); "
          f"D={depth} G={gen} t=1 cpu {cpu}; {rounds} rounds x {reps} repetitions")
    bench: list[list[float]] = []
    mine: list[list[float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(rounds):
            order = ("llama-bench", "devicelab") if i % 2 == 0 else ("devicelab", "llama-bench")
            got: dict[str, list[float]] = {}
            for who in order:
                if who == "llama-bench":
                    got[who] = run_llama_bench(build.artifacts["llama-bench"], model.path, depth, gen, reps, cpu)
                else:
                    got[who] = run_dlllm(build.artifacts["dlllm"], model.path, depth, gen, reps, cpu, Path(tmp),
                                         model.n_vocab)
            bench.append(got["llama-bench"])
            mine.append(got["devicelab"])
            print(f"round {i + 1}: llama-bench {1 / statistics.median(got['llama-bench']):.1f} tok/s, "
                  f"devicelab {1 / statistics.median(got['devicelab']):.1f} tok/s")
    ratio_t, ci_t = paired_ratio(bench, mine)  # devicelab/llama-bench of seconds per token
    ratio = 1 / ratio_t
    ci = (1 / ci_t[1], 1 / ci_t[0]) if ci_t else None
    ci_text = f"[{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "n/a (fewer than 2 rounds)"
    within = ci is not None and 0.98 <= ci[0] and ci[1] <= 1.02
    print(f"decode tok/s devicelab/llama-bench = {ratio:.4f}, 95% CI {ci_text} over {rounds} rounds; "
          f"within ±2 %: {'yes' if within else 'no'}")


if __name__ == "__main__":
    main()
