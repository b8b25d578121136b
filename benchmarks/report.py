#!/usr/bin/env python3
"""How fast and how big is the report over a real-sized history?

Builds 1 M synthetic samples (5 models × 5 engines × 4 precisions × 2 thread counts × 5 000 samples, lognormal
around plausible medians, with accuracy and state like real Results), renders the report, and prints the
render time and the file size; with Chromium and Playwright present, also the time to load and lay it out.

usage: python benchmarks/report.py [SAMPLES_PER_RESULT]   (default 5000)
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from devicelab import report
from devicelab.result import OK, Config, Result
from devicelab.store import RunRecord


def synthetic(per_result: int) -> tuple[RunRecord, list[Result]]:
    rng = np.random.default_rng(0)
    results = []
    for m, model in enumerate(["mobilenet_v1", "mobilenet_v2", "squeezenet1_1", "shufflenet_v2_x1_0", "resnet18"]):
        for e, engine in enumerate(["onnxruntime", "ncnn", "mnn", "litert", "openvino"]):
            for p, precision in enumerate(["fp32", "fp16", "bf16", "int8"]):
                for threads in (1, 4):
                    median = 0.004 * (1 + m) * (1 + 0.1 * e) / (1 + 0.5 * p) / (threads ** 0.7)
                    samples = median * rng.lognormal(0, 0.03, per_result)
                    cfg = Config("phone", engine, "", "1.0", model, f"{m:064x}", 10_000_000, precision, "cpu", threads,
                                 tuple(range(threads)), "big")
                    results.append(Result.for_config(
                        "synthetic", cfg, OK, samples_s=tuple(samples.tolist()), median_s=float(np.median(samples)),
                        p90_s=float(np.percentile(samples, 90)), warmups=10, load_s=0.1, first_s=median * 2,
                        peak_rss_bytes=int(80e6 + 1e7 * e), rss_before_load_bytes=int(40e6),
                        accuracy={"cosine": 1 - 10 ** (-6 + 1.3 * p), "max_abs_diff": 1e-6 * 10 ** p,
                                  "top1_agreement": 1.0 - 0.01 * p, "top1_inputs": 16 - p, "inputs": 16},
                        state_before={"temperatures_c": {"cpu": 40.0}, "loadavg": [0.1]},
                        protocol={"artifact_bytes": int(14e6 / (1 + p))}))
    run = RunRecord("synthetic", "2026-11-22T00:00:00+00:00", {"name": "synthetic"}, 0, {"platform": "synthetic",
                    "python": "3.11"}, "0.1.0")
    return run, results


def main() -> None:
    per_result = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    run, results = synthetic(per_result)
    n = sum(len(r.samples_s) for r in results)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "report.html"
        t0 = time.perf_counter()
        report.write(path, [run], results)
        render_s = time.perf_counter() - t0
        size = path.stat().st_size
        print(f"{n:,} samples in {len(results)} results: rendered in {render_s:.2f} s, {size / 1e6:.2f} MB "
              f"({size / n:.2f} bytes per sample)")
        try:
            from playwright.sync_api import sync_playwright
        except ImportError:
            return
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page()
            t0 = time.perf_counter()
            page.goto(path.as_uri())
            page.wait_for_load_state("load")
            print(f"Chromium loaded and laid it out in {time.perf_counter() - t0:.2f} s")
            browser.close()


if __name__ == "__main__":
    main()
