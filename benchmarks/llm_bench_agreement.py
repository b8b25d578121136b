#!/usr/bin/env python3
"""devicelab's llama.cpp decode speed against llama-bench's: both through the controller, one `devicelab run`.

The suite, as a user would write it (one build of `devicelab build-native --target host --llm`: the same libllama,
ggml and flags for both programs; the same model file; one thread, pinned by dlprobe to the same CPU):

    models: [MODEL]
    engines: [llamacpp, tool:llama-bench]     # dlllm (runner protocol v3) and llama-bench as it is
    threads: [1]
    affinity: [big]
    llm: {prompt_tokens: 1, gen_tokens: G, context_depth: D, quant: QUANT}
    repeats: R                                # a round runs every config once, in a seeded shuffled order
    protocol: {min_iterations: N, max_iterations: N, tool_iterations: N, ...}

**The same depth, the same work per step.** llama-bench's generation test (`-n G -d D`) decodes G tokens at
positions D .. D+G-1 after D tokens of depth, in a context of n_prompt + n_gen + n_depth = 0 + G + D tokens. A
devicelab request at depth D with P = 1 decodes its depth, its prompt token (at D), then G tokens at D+1 .. D+G, in a
context of D+1+G. The one position between them changes no computation's size: libllama pads the context to a multiple
of 256 (both 256 for D 128, G 32) and each decode step attends over n_kv = min(cells, max(256, PAD(used, 256)))
cells (llama-kv-cache.cpp, get_n_kv), 256 at every step of both — as long as no multiple of 256 lies in D+1 .. D+G,
which the script checks. (An earlier form paired llamacpp at D-1 with llama-bench at D, the exact positions; a suite's
`llm:` applies to every engine, so half of each round was then two unpaired processes between the paired ones: 120
rounds gave 0.9890 [0.9677, 1.0143], the paired processes' speeds correlating only 0.47. Now a round is the two paired
processes alone, back to back in a shuffled order.) llama-bench's `-p 1` prompt test runs too; it is not used.

**Why llama-bench through the controller** (the `tool:llama-bench` engine) rather than run directly: both programs
then start the same way (a fresh process per config, exec'd by dlprobe after sched_setaffinity to the same CPU), every
round holds one process of each, and the plan shuffles each round's order afresh (seeded), as `compare` pairs two
labels of one run. llama-bench still times itself (its JSON `samples_ns`, one per repetition of its tg test).

**Their settings, read in llama.cpp 0c1e57098** (the llama-cpp-python 0.3.36 sdist's vendor/llama.cpp: dlllm's
native/llm/dlllm.cpp against llama-bench.cpp's cmd_params_defaults, to_llama_mparams, to_llama_cparams, test_gen and
llama-context.cpp's llama_context_default_params, llama-model.cpp's llama_model_default_params):

    setting            dlllm                                       llama-bench (defaults; -t 1)
    n_ctx              depth + P + G = D + 1 + G                    n_prompt + n_gen + n_depth = 0 + G + D
                       (libllama pads both alike: ext.llm.n_ctx is the padded size, 256 for D 128, G 32)
    n_batch / n_ubatch 2048 / 512                                   2048 / 512
    flash_attn         LLAMA_FLASH_ATTN_TYPE_AUTO                   LLAMA_FLASH_ATTN_TYPE_AUTO
    type_k / type_v    F16 / F16                                    F16 / F16
    threads            cparams n_threads = n_threads_batch = 1      llama_set_n_threads(ctx, 1, 1) in test_gen
    thread pool        ggml_threadpool_params_default(1):           the same, then cpumask from "0x0" (all zero),
                       poll 50, strict_cpu false, prio 0, cpumask   cpu_strict false, poll 50, prio NORMAL (0)
                       all zero (inherit the pinned mask)
    model loading      llama_model_default_params(): load_mode     load_mode AUTO, lazy_mode AUTO (its defaults),
                       AUTO (= mmap: llama-model-loader.cpp),       use_extra_bufts = the library default (true)
                       lazy_mode AUTO, use_extra_bufts true (repack)
    n_gpu_layers       0                                            -1 — no effect here: the build has no GPU backend,
                                                                    so every layer is on the CPU (llama-model.cpp:
                                                                    act_gpu_layers = 0 without devices)
    offload_kqv, op_offload   true, true (defaults)                 !no_kv_offload = true, !no_op_offload = true
    swa_full           true (default)                               false — no effect: a Llama model has no SWA layer
    embeddings         false                                        false
    warmup             the controller's, whole requests (>= 1)      one untimed generated token
    depth              decoded each request after                   decoded once, its state saved and restored
                       llama_memory_clear(data=true), untimed       before each repetition, untimed
    decode call        llama_decode(llama_batch_get_one(&t, 1)):    llama_process(DECODE) of a reused common_batch of
                       a llama_batch_ext allocated per call          one token with its logits on
    timed span         each step's decode + llama_synchronize,      the G steps as one span, std::rand() and the
                       summed (argmax and logits copy outside)      batch refill inside

The last three rows differ: they cost microseconds per token, which matters only for a model whose decode step is
that short (llama-tiny: ~0.1-0.3 ms); llama-100m's steps take milliseconds.

Prints each round's medians; on its last line the ratio devicelab/llama-bench of decode tokens/s with its 95 % CI,
the round as the unit (benchmarks/_common.paired_ratio, as `compare` pairs two labels of one run). Run it on an
otherwise idle machine, with the DEVICELAB_DATA that holds the host --llm build (the zoo's quantized files are made
there on first use).

usage: python benchmarks/llm_bench_agreement.py [ROUNDS] [MODEL] [QUANT] [DEPTH] [GEN] [REQUESTS]
       (defaults 10, llama-100m, Q4_0, 128, 32, 10; more than 100 rounds are split evenly over several runs)
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from _common import devicelab_run, machine, paired_ratio

from devicelab import native_llm


MAX_REPEATS = 100  # a suite's `repeats` limit


def suite(model: str, quant: str, depth: int, gen: int, requests: int, rounds: int, seed: int = 1) -> dict[str, Any]:
    return {"name": "llm-bench-agreement", "models": [model], "engines": ["llamacpp", "tool:llama-bench"],
            "threads": [1], "affinity": ["big"], "repeats": rounds, "seed": seed,
            "llm": {"prompt_tokens": 1, "gen_tokens": gen, "context_depth": [depth], "quant": [quant]},
            # N requests a llamacpp config, N repetitions a llama-bench one; no time cap cuts a side short.
            "protocol": {"min_iterations": requests, "max_iterations": requests, "min_seconds": 0.0,
                         "max_seconds": 3600.0, "tool_iterations": requests, "accuracy_inputs": 0,
                         "timeout_seconds": 3600.0}}


def pairs(rows: list[dict[str, Any]], depth: int, rounds: int) -> tuple[list[list[float]], list[list[float]]]:
    """(llama-bench's samples, devicelab's) per round: decode seconds per token, both at depth D."""
    bad = [f"{r['engine']} D{r['ext']['llm']['context_depth']} repeat {r['repeat']}: {r['status']}: {r.get('reason')}"
           for r in rows if r["status"] != "ok"]
    if bad:
        raise SystemExit("not every config ran: " + "; ".join(bad))
    mine = {r["repeat"]: r for r in rows if r["engine"] == "llamacpp" and r["ext"]["llm"]["context_depth"] == depth}
    bench = {r["repeat"]: r for r in rows if r["engine"] == "tool:llama-bench"
             and r["ext"]["llm"]["context_depth"] == depth}
    if sorted(mine) != list(range(rounds)) or sorted(bench) != list(range(rounds)):
        raise SystemExit(f"expected one llamacpp and one llama-bench row per round; got {sorted(mine)}, "
                         f"{sorted(bench)}")
    for i in range(rounds):
        a, b = mine[i], bench[i]
        if a["cpus"] != b["cpus"] or a["threads"] != 1 or b["threads"] != 1:
            raise SystemExit(f"round {i + 1}: not the same single CPU: {a['cpus']} vs {b['cpus']}")
        if (a["ext"]["llm"]["prompt_tokens"], a["ext"]["llm"]["context_depth"]) != (1, depth):
            raise SystemExit(f"round {i + 1}: llamacpp ran {a['workload']}, not P=1 at depth D")
        argv = b["protocol"]["tool"]["argv"]
        if argv[argv.index("-d") + 1] != str(depth) or argv[argv.index("-t") + 1] != "1":
            raise SystemExit(f"round {i + 1}: llama-bench ran as {argv}")
    return [bench[i]["samples_s"] for i in range(rounds)], [mine[i]["samples_s"] for i in range(rounds)]


def main() -> None:
    args = sys.argv[1:]
    rounds = int(args[0]) if len(args) > 0 else 10
    model = args[1] if len(args) > 1 else "llama-100m"
    quant = args[2] if len(args) > 2 else "Q4_0"
    depth = int(args[3]) if len(args) > 3 else 128
    gen = int(args[4]) if len(args) > 4 else 32
    requests = int(args[5]) if len(args) > 5 else 10
    if depth < 1 or gen < 1 or rounds < 1 or requests < 1:
        raise SystemExit("ROUNDS, GEN, REQUESTS and DEPTH must be >= 1")
    if any(k % 256 == 0 for k in range(depth + 1, depth + gen + 1)):
        raise SystemExit(f"a multiple of 256 lies in D+1 .. D+G ({depth + 1} .. {depth + gen}): libllama's padding "
                         "would then give the two programs different attention sizes; choose D and GEN around it")
    build = native_llm.registered("host")
    if build is None or "llama-bench" not in build.artifacts:
        raise SystemExit("run `devicelab build-native --target host --llm` first (same DEVICELAB_DATA)")
    print(f"machine: {machine()}; {build.version}; model {model} {quant}; llama-bench vs llamacpp (P=1) at D={depth}; "
          f"G={gen}; 1 thread; {rounds} rounds x {requests} requests/repetitions", flush=True)
    started = time.monotonic()
    bench: list[list[float]] = []
    mine: list[list[float]] = []
    runs: list[str] = []
    # A suite allows at most 100 repeats: more rounds are split evenly over several runs (one seed each), every
    # round still one llamacpp and one llama-bench process of the same run.
    parts = -(-rounds // MAX_REPEATS)
    sizes = [rounds // parts + (1 if i < rounds % parts else 0) for i in range(parts)]
    for part, size in enumerate(sizes):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "agreement.yaml"
            path.write_text(yaml.safe_dump(suite(model, quant, depth, gen, requests, size, seed=1 + part)))
            data = devicelab_run(path, {**os.environ, "DEVICELAB_DB": str(Path(tmp) / "db.sqlite")})
        b, m = pairs(data["results"], depth, size)
        bench += b
        mine += m
        runs.append(data["run_id"])
    for i, (b, m) in enumerate(zip(bench, mine, strict=True)):
        print(f"round {i + 1}: llama-bench {1 / statistics.median(b):.1f} tok/s, "
              f"devicelab {1 / statistics.median(m):.1f} tok/s, ratio {statistics.median(b) / statistics.median(m):.4f}")
    print(f"run{'s' if len(runs) > 1 else ''} {', '.join(runs)}: {time.monotonic() - started:.0f} s")
    ratio_t, ci_t = paired_ratio(bench, mine)  # devicelab/llama-bench of seconds per token
    ratio = 1 / ratio_t
    ci = (1 / ci_t[1], 1 / ci_t[0]) if ci_t else None
    ci_text = f"[{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "n/a (fewer than 2 rounds)"
    within = ci is not None and 0.98 <= ci[0] and ci[1] <= 1.02
    print(f"decode tok/s devicelab/llama-bench = {ratio:.4f}, 95% CI {ci_text} over {rounds} rounds; "
          f"within ±2 %: {'yes' if within else 'no'}")


if __name__ == "__main__":
    main()
