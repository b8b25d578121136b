"""Independent measurement for the benchmarks: the plainest timing loop per engine, sharing no code with
devicelab (its own session setup, input and clock), in a fresh process.

usage: python _engine_loop.py ENGINE MODEL THREADS CPU_LIST ITERATIONS [WEIGHTS]
Prints the per-iteration samples (seconds) as a JSON list. fp32 only: every lower-precision switch off.
`make_step` is the set-up alone (benchmarks/allocator.py imports it).
"""

import json
import os
import sys
import time
from typing import Any, Callable


def make_step(engine: str, model: str, threads: int, weights: str | None = None) -> Callable[[], Any]:
    """One inference of `model` in `engine` on a seeded input, as a call. numpy is imported here, after the script has
    pinned itself (an unpinned import could size a BLAS pool for every CPU)."""
    import numpy as np

    x = np.random.default_rng(11).standard_normal((1, 3, 224, 224), dtype=np.float32)
    if engine == "onnxruntime":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        step = lambda: sess.run(None, {name: x})  # noqa: E731
    elif engine == "ncnn":
        import ncnn

        net = ncnn.Net()
        net.opt.num_threads = threads
        net.opt.use_fp16_storage = net.opt.use_fp16_packed = net.opt.use_fp16_arithmetic = False
        net.opt.use_bf16_storage = False
        net.load_param(model)
        net.load_model(weights)
        held = np.ascontiguousarray(x[0])
        mat = ncnn.Mat(held)

        def step(_held=held):  # ncnn.Mat wraps the array's memory without a copy: the default keeps it alive
            ex = net.create_extractor()
            ex.input("in0", mat)
            return ex.extract("out0")
    elif engine == "mnn":
        import MNN

        rt = MNN.nn.create_runtime_manager(({"backend": "CPU", "numThread": threads, "precision": "high"},))
        module = MNN.nn.load_module_from_file(model, ["input"], [], runtime_manager=rt)
        var = MNN.expr.const(x, [1, 3, 224, 224], MNN.expr.NCHW)
        # The runtime manager must outlive the module (the defaults hold it, and the input's array, at no cost a call).
        step = lambda _rt=rt, _x=x: [o.read() for o in module.onForward([var])]  # noqa: E731
    elif engine == "litert":
        from ai_edge_litert.interpreter import Interpreter

        it = Interpreter(model_path=model, num_threads=threads)
        it.allocate_tensors()
        index = it.get_input_details()[0]["index"]
        nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))

        def step():
            it.set_tensor(index, nhwc)
            it.invoke()
    elif engine == "openvino":
        import openvino as ov

        compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1,
                                                          "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"})
        req = compiled.create_infer_request()
        step = lambda: req.infer({0: x})  # noqa: E731
    else:
        raise SystemExit(f"unknown engine {engine}")

    return step


if __name__ == "__main__":
    engine, model, threads, cpus, iterations = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
    weights = sys.argv[6] if len(sys.argv) > 6 else None
    os.sched_setaffinity(0, [int(c) for c in cpus.split(",")])
    step = make_step(engine, model, threads, weights)
    end = time.perf_counter() + 0.5
    n = 0
    while n < 3 or time.perf_counter() < end:
        step()
        n += 1
    samples = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        step()
        samples.append(time.perf_counter() - t0)
    print(json.dumps(samples))
