#!/usr/bin/env python3
"""A runner speaking runner protocol v3 (LLM requests) for the `protocol` engine's tests of the controller side:
edge cases and malformed event streams (options.mode). It is no language model and no stand-in for llama.cpp: a
"prefill" and a "decode step" are busy loops whose length grows with the tokens (and the KV depth) they stand for,
timed with the monotonic clock like a real runner's spans; the logits are a seeded pseudo-random function of the
step, with noise per quantization. Standard library only (it runs under any python3).
"""

from __future__ import annotations

import array
import json
import random
import sys
import time
from typing import Any

NOISE = {"F32": 0.0, "F16": 0.001, "Q8_0": 0.01, "Q4_0": 0.3, "Q4_K": 0.2}


def say(event: dict[str, Any]) -> None:
    print(json.dumps(event), flush=True)


def busy(units: int) -> float:
    start = time.perf_counter()
    x = 0
    for i in range(200 * units):
        x += i * i
    return time.perf_counter() - start


def main() -> int:
    cfg = json.loads(open(sys.argv[1]).read())
    opts, req = cfg.get("options") or {}, cfg.get("llm") or {}
    mode = opts.get("mode", "ok")
    with open(cfg["model"], "rb") as f:
        if f.read(4) != b"GGUF":
            say({"event": "error", "message": f"{cfg['model']} is not a GGUF file"})
            return 1
    quant = req.get("quant", "F32")
    if quant in opts.get("lacks", []):
        say({"event": "error", "message": f"this build has no {quant} kernels", "unsupported": True})
        return 1
    prompt, depth, gen = req["prompt"], req["depth"], int(req["gen_tokens"])
    n_vocab = int(opts.get("n_vocab", 64))
    if any(not 0 <= t < n_vocab for t in prompt + depth):
        say({"event": "error", "message": "token id out of the vocabulary"})
        return 1
    say({"event": "ready", "protocol": 2 if mode == "v2" else 3, "load_s": 0.001, "first_s": busy(len(prompt)),
         "warmups": 0, "runner_version": "llm-fixture-1",
         **({} if mode == "no-llm-ready" else {"llm": {"n_params": 1000, "model_bytes": 4096,
                                                       # options.ready_quant: a runner that reads the file as it is
                                                       "quant": opts.get("ready_quant", quant),
                                                       "kv_type": "f16", "n_ctx": 4096, "n_vocab": n_vocab}})})
    logits: list[float] = []
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "stop":
            rng = random.Random(int(req.get("seed", 0)))
            noise = random.Random(sum(quant.encode()))  # str hash() differs per process
            logits = []
            for _ in range(gen + 1):
                row = [rng.gauss(0, 1) for _ in range(n_vocab)]
                logits.extend(v + noise.gauss(0, NOISE[quant]) for v in row)
            with open(cfg["outputs_file"], "wb") as f:
                array.array("f", logits).tofile(f)
            say({"event": "done", "peak_rss_bytes": 1 << 20, "outputs_file": cfg["outputs_file"]})
            return 0
        out = []
        for _ in range(int(cmd["iterations"])):
            busy(len(depth))  # the depth tokens into an emptied cache: untimed
            t0 = time.monotonic()
            pre = busy(len(prompt))
            if mode == "wrong-prompt":
                out.append({"event": "prefill", "s": pre, "tokens": len(prompt) + 1})
            elif mode != "no-prefill":
                out.append({"event": "prefill", "s": pre, "tokens": len(prompt)})
            total = pre
            for i in range(gen - (1 if mode == "short" else 0)):
                s = busy(1 + (len(depth) + len(prompt) + i) // 8)
                total += s
                out.append({"event": "token", "s": -1 if mode == "negative-token" else s})
            out.append({"event": "iter", "s": total, "t": t0})
        out.append({"event": "batch"})
        print("\n".join(json.dumps(e) for e in out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
