"""An independent measurement for benchmarks/overhead: the plainest possible ONNX Runtime timing loop.

Deliberately shares no code with devicelab: pins, builds the session with the same options, feeds the
same seeded input, warms up, then times N iterations with perf_counter and prints the samples as JSON.
usage: python _tight_loop.py MODEL.onnx THREADS CPU_LIST ITERATIONS SEED
"""

import json
import os
import sys
import time

model, threads, cpus, iterations, seed = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
os.sched_setaffinity(0, [int(c) for c in cpus.split(",")])

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

so = ort.SessionOptions()
so.intra_op_num_threads = threads
so.inter_op_num_threads = 1
so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
x = np.random.default_rng(seed).standard_normal((1, 3, 224, 224), dtype=np.float32)
feeds = {sess.get_inputs()[0].name: x}
end = time.perf_counter() + 0.5
n = 0
while n < 3 or time.perf_counter() < end:
    sess.run(None, feeds)
    n += 1
samples = []
for _ in range(iterations):
    t0 = time.perf_counter()
    sess.run(None, feeds)
    samples.append(time.perf_counter() - t0)
print(json.dumps(samples))
