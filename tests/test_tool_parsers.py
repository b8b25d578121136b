"""The `tool:*` adapters, pure: each golden output (tests/golden/tools/, README there says which are captured and
which reconstructed from the tools' sources) → the ToolRun it must read as, in seconds and bytes; and each config →
the tool's command line, or the reason it cannot be asked for. No device, no binary, no conversion."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from devicelab.engines.base import PreparedModel
from devicelab.engines.tool_base import ToolEngine, ToolRun, ToolSettings, nchw_to_ncnn_shape, seconds
from devicelab.engines.tool_benchmark_model import ENGINE as TFLITE
from devicelab.engines.tool_benchncnn import ENGINE as BENCHNCNN
from devicelab.engines.tool_llama_bench import ENGINE as LLAMA_BENCH
from devicelab.engines.tool_mnn_benchmark import ENGINE as MNN
from devicelab.engines.tool_onnxruntime_perf_test import ENGINE as ORT
from devicelab.engines.tool_onnxruntime_perf_test import RESULT_FILE
from devicelab.result import BACKENDS, PRECISIONS, RESULT_FIELDS

GOLDEN = Path(__file__).parent / "golden" / "tools"
TOOLS: dict[str, ToolEngine] = {"llama_bench": LLAMA_BENCH, "benchncnn": BENCHNCNN, "benchmark_model": TFLITE,
                                "mnn_benchmark": MNN,
                                "onnxruntime_perf_test": ORT}
FOLDER = "/data/local/tmp/devicelab/run"


def read(tool: str, variant: str, ext: str) -> str:
    path = GOLDEN / tool / f"{variant}.{ext}"
    return path.read_text() if path.exists() else ""


def parse(tool: str, variant: str, exit_code: int = 0, with_result_file: bool = True) -> ToolRun:
    result = read(tool, variant, "result")
    files = {RESULT_FILE: result} if result and with_result_file else None
    return TOOLS[tool].parse(read(tool, variant, "stdout"), read(tool, variant, "stderr"), exit_code, files)


def settings(**kw: Any) -> ToolSettings:
    base: dict[str, Any] = dict(threads=4, cpus=(4, 5, 6, 7), precision="fp32", backend="cpu", iterations=50,
                                warmups=3, input_shapes=((1, 3, 224, 224),))
    return ToolSettings(**{**base, **kw})


def check(run: ToolRun, expected: dict[str, Any]) -> None:
    for key, want in expected.items():
        got = getattr(run, key)
        if isinstance(want, float):
            assert got == pytest.approx(want, rel=1e-12, abs=0), key
        else:
            assert got == want, key


# Every golden variant: exit code, and the fields it must give. Figures are the printed ones, converted exactly.
EXPECTED: dict[str, dict[str, tuple[int, dict[str, Any]]]] = {
    "benchncnn": {
        "fp16_cpu_1t_big": (0, dict(count=8, min_s=0.0063, max_s=0.00741, avg_s=0.00669, error=None)),
        "fp16_cpu_2t_all": (0, dict(count=8, min_s=0.00435, max_s=0.15364, avg_s=0.03293, error=None)),
        "int8_cpu_1t_big": (0, dict(count=8, min_s=0.00453, max_s=0.0131, avg_s=0.00725, error=None)),
        "vulkan_on_cpu_build": (0, dict(count=4, avg_s=0.00723, error=None)),
        "unrecognized_arg": (0, dict(count=4, avg_s=0.00585, error=None)),
        "vulkan_adreno": (0, dict(count=50, min_s=0.00287, max_s=0.00361, avg_s=0.00305, error=None)),
        "profile_cpu": (0, dict(count=2, min_s=0.00223, max_s=0.00237, avg_s=0.0023, error=None)),
        "profile_vulkan": (0, dict(count=2, avg_s=0.00173, error=None)),
        "default_models": (0, dict(count=None, avg_s=None)),
        "error_missing_param": (0, dict(error="fopen run/missing.param failed")),
        "error_shape_empty": (255, dict(error="input tensor shape empty!", count=None)),
        "error_input_count": (0, dict(error="input 1 tensors while model has 2 inputs", count=None)),
        "usage": (255, dict(count=None)),
        "vulkan_skipped_int8": (0, dict(count=None,
                                        error="/data/local/tmp/devicelab/run/model_int8.param  skipped "
                                              "(int8+GPU not supported)")),
    },
    "benchmark_model": {
        "cpu_xnnpack_percentiles": (0, dict(count=20, min_s=0.02439, max_s=0.025903, avg_s=0.0246685, std_s=0.00031,
                                            median_s=0.024622, percentiles_s={"p5": 0.02442, "p95": 0.025903},
                                            load_s=0.035127, first_s=0.031234, warmups=3, warmup_avg_s=0.026992,
                                            peak_memory_bytes=None, error=None)),
        "cpu_peak_memory": (0, dict(count=20, avg_s=0.0246685, load_s=0.03602, peak_memory_bytes=44892160,
                                    error=None)),
        "tf2_no_percentiles_fp16": (0, dict(count=10, min_s=0.01195, max_s=0.01223, avg_s=0.012027, std_s=0.000078,
                                            median_s=None, percentiles_s={}, load_s=0.021448, first_s=0.018811,
                                            warmups=1, warmup_avg_s=0.018811, error=None)),
        "all_same": (0, dict(count=5, min_s=0.00079, max_s=0.00079, avg_s=0.00079, std_s=0.0, median_s=0.00079,
                             first_s=0.000812, warmups=1, warmup_avg_s=0.000812, error=None)),
        "no_warmup_count0": (0, dict(count=4, avg_s=0.00081875, median_s=0.000792, warmups=0, warmup_avg_s=None,
                                     first_s=0.000905, load_s=0.003907, error=None)),
        "old_average_timings": (0, dict(count=50, min_s=0.080712, max_s=0.082192, avg_s=0.0813485, median_s=None,
                                        warmups=6, warmup_avg_s=0.0845202, first_s=0.091471, load_s=0.004108,
                                        error=None)),
        "oldest_no_stats": (0, dict(count=8, avg_s=0.138164, warmups=1, first_s=0.146161, warmup_avg_s=0.146161,
                                    load_s=0.004452, error=None)),
        "gpu_full": (0, dict(count=10, avg_s=0.0053958, median_s=0.005399, load_s=0.51277, warmups=3, error=None)),
        "gpu_partial": (0, dict(count=10, avg_s=0.0053958, error=None)),
        "gpu_unsupported_platform": (0, dict(count=10, avg_s=0.012027, error=None)),
        "unconsumed_flags": (0, dict(count=10, avg_s=0.012027, error=None)),
        "op_profiling_xnnpack": (0, dict(count=5, avg_s=0.0032108, load_s=0.0405, error=None)),
        "op_profiling_start_column": (0, dict(count=5, avg_s=0.0032108, error=None)),
        "op_profiling_csv": (0, dict(count=5, avg_s=0.0032108, error=None)),
        "error_missing_op": (1, dict(count=None, error="Didn't find op for builtin opcode 'STABLEHLO_COMPOSITE' "
                                                       "version '1'. An older version of this builtin might be "
                                                       "supported. Are you using an old TFLite binary with a newer "
                                                       "model?")),
        "error_no_model": (1, dict(count=None, error="Could not open '/data/local/tmp/devicelab/run/model.tflite'.")),
    },
    "mnn_benchmark": {
        "cpu_fp32": (0, dict(count=50, warmups=3, max_s=0.012873, min_s=0.011902, avg_s=0.012201, error=None)),
        "opencl_fp16": (0, dict(count=50, warmups=3, max_s=0.004412, min_s=0.003877, avg_s=0.004015, error=None)),
        "opencl_fallback": (0, dict(count=50, avg_s=0.012388, error=None)),
        "quant_pass": (0, dict(count=50, avg_s=0.012201, error=None)),
        "quant_pass_2023_06": (0, dict(count=50, avg_s=0.012201, error=None)),
        "pre2021_nospace": (0, dict(count=50, warmups=3, max_s=0.012873, min_s=0.011902, avg_s=0.012201, error=None)),
        "pre2020_no_warmup": (0, dict(count=50, warmups=None, avg_s=0.008891, error=None)),
        "error_no_folder": (0, dict(count=None, error="open /data/local/tmp/devicelab/run/models failed: No such "
                                                      "file or directory")),
        "two_models": (0, dict(count=None, avg_s=None)),
        "usage": (1, dict(count=None)),
    },
    "onnxruntime_perf_test": {
        "new_total_no_result_file": (0, dict(count=20, avg_s=0.01223583, min_s=0.0120702, max_s=0.0131645,
                                             median_s=0.0121532, p90_s=0.0125307,
                                             percentiles_s={"p95": 0.0131645, "p99": 0.0131645, "p999": 0.0131645},
                                             load_s=0.0472213, first_s=0.019, peak_memory_bytes=61083648,
                                             samples_s=(), summary_only=True, error=None)),
        "new_with_result_file": (0, dict(count=20, avg_s=0.01223583, median_s=0.0121532, summary_only=False,
                                         error=None)),
        "old_average": (0, dict(count=20, avg_s=0.0122358, min_s=0.0120702, first_s=0.021, error=None)),
        "oldest_2019": (0, dict(count=20, avg_s=0.0122358, load_s=None, summary_only=False, error=None)),
        "verbose_iterations": (0, dict(count=5, avg_s=0.0121812, summary_only=False, error=None)),
        "nnapi_partial": (0, dict(count=20, load_s=0.912044, summary_only=False, error=None)),
        "error_model_missing": (255, dict(count=None, error="Load model from /data/local/tmp/devicelab/run/model.onnx "
                                                            "failed:Load model /data/local/tmp/devicelab/run/"
                                                            "model.onnx failed. File doesn't exist")),
        "error_bad_flag": (255, dict(count=None, error="ERROR: Unknown command line flag 'warmup'")),
        "error_no_test_data": (255, dict(count=None, error="there is no test data for model run")),
        "error_ep_not_built": (255, dict(count=None)),
    },
    # samples: the generation test's samples_ns / n_gen (per-token decode seconds); avg_s: its avg_ns / n_gen
    "llama_bench": {
        "tiny_p16_n4_d8": (0, dict(count=3, warmups=1, avg_s=2326242 / 1e9 / 4, summary_only=False,
                                   error=None)),
        "error_not_gguf": (1, dict(count=None, error="llama_bench: error: failed to load model 'gold2/model.gguf'")),
    },
}
CASES = [(tool, variant) for tool, variants in EXPECTED.items() for variant in variants]


def test_every_golden_file_has_a_spec() -> None:
    on_disk = {(p.parent.name, p.name.split(".")[0]) for p in GOLDEN.glob("*/*") if p.suffix != ".md"}
    assert on_disk == set(CASES)


@pytest.mark.parametrize("tool,variant", CASES, ids=[f"{t}/{v}" for t, v in CASES])
def test_golden(tool: str, variant: str) -> None:
    exit_code, expected = EXPECTED[tool][variant]
    run = parse(tool, variant, exit_code)
    check(run, expected)
    if variant.startswith(("error", "usage")) or variant in ("default_models", "two_models", "vulkan_skipped_int8"):
        assert run.error, "a failed run says why"


# ---------------------------------------------------------------------------------------------------- units

def test_units_convert_exactly_in_decimal() -> None:
    assert seconds("11.74", "ms") == 0.01174  # benchncnn's "avg =   11.74"
    assert seconds("24668.5", "us") == 0.0246685  # TFLite avg=…
    assert seconds("1.23457e+06", "us") == 1.23457  # iostreams switch to %e above 1e6 µs
    assert seconds("0.0958204", "s") == 0.0958204  # ORT's latency lines
    assert seconds("12.873", "ms") == 0.012873
    assert seconds("nan", "us") != seconds("nan", "us")


def test_ncnn_shapes_drop_the_batch_and_reverse() -> None:
    assert nchw_to_ncnn_shape((1, 3, 224, 224)) == [224, 224, 3]
    assert nchw_to_ncnn_shape((1, 80, 100)) == [100, 80]
    assert nchw_to_ncnn_shape((1, 3, 8, 32, 32)) == [32, 32, 8, 3]


# ---------------------------------------------------------------------------------------------------- benchncnn

def test_benchncnn_prints_only_a_summary() -> None:
    run = parse("benchncnn", "fp16_cpu_1t_big")
    assert run.summary_only and run.samples_s == () and run.median_s is None
    assert run.raw["num_threads"] == 1 and run.raw["powersave"] == 2 and run.raw["cooling_down"] == 0
    assert any("only min/max/avg" in n for n in run.notes)


def test_benchncnn_gpu_device_lines_are_noise() -> None:
    run = parse("benchncnn", "vulkan_adreno")
    assert run.error is None and len(run.raw["gpu_info"]) == 4
    assert run.raw["gpu_info"][0].startswith("[0 Adreno (TM) 740]  queueC=0[3]")


def test_benchncnn_missing_param_prints_zeros_and_fails() -> None:
    run = parse("benchncnn", "error_missing_param")
    assert run.avg_s == 0.0 and run.error == "fopen run/missing.param failed"


def test_benchncnn_old_build_benchmarks_its_own_models() -> None:
    run = parse("benchncnn", "default_models")
    assert "35 results" in (run.error or "") and run.raw["results"]["squeezenet"] == ["8.23", "120.92", "36.51"]


def test_benchncnn_unrecognized_arg_is_a_note() -> None:
    run = parse("benchncnn", "unrecognized_arg")
    assert "benchncnn ignored an argument: unrecognized arg bogus" in run.notes


def test_benchncnn_cpu_profile_averages_the_timed_forwards_in_ms() -> None:
    run = parse("benchncnn", "profile_cpu")
    ops = {op["name"]: op for op in run.ops}
    assert len(ops) == 9 and run.raw["profile_forwards"] == 10  # 8 warmups + loop_count 2, every one printed
    assert ops["convrelu_0"]["type"] == "Convolution" and ops["convrelu_0"]["calls"] == 2
    assert ops["convrelu_0"]["s"] == pytest.approx((0.00121 + 0.00129) / 2)  # the warmups' 1.52 ms are left out
    assert ops["splitncnn_0"]["s"] == 0.0  # the shape-less "    |" variant


def test_benchncnn_vulkan_profile_is_in_microseconds() -> None:
    ops = {op["name"]: op for op in parse("benchncnn", "profile_vulkan").ops}
    assert ops["convrelu_0"]["s"] == pytest.approx((447.70e-6 + 477.30e-6) / 2)


def test_benchncnn_argv() -> None:
    s = settings(threads=1, precision="fp16", iterations=8)
    assert BENCHNCNN.argv("/data/local/tmp/benchncnn", FOLDER, s) == [
        "/data/local/tmp/benchncnn", "8", "1", "2", "-1", "0", f"param={FOLDER}/model.param", "shape=[224,224,3]"]
    argv = BENCHNCNN.argv("b", FOLDER, settings(precision="int8", backend="vulkan", big_cores=False,
                                                 input_shapes=((1, 3, 224, 224), (1, 3, 16, 16)),
                                                 extra_args=("x=1",)))
    assert argv[1:6] == ["50", "4", "0", "0", "0"]  # powersave 0 (all cores), GPU device 0, cooling down off
    assert argv[6:] == [f"param={FOLDER}/model_int8.param", "shape=[224,224,3],[16,16,3]", "x=1"]
    assert BENCHNCNN.argv("b", FOLDER, settings(precision="fp16", affinity="little"))[3] == "1"


def test_benchncnn_cannot_be_asked_for_fp32() -> None:
    assert "fp16" in (BENCHNCNN.unsupported_reason(settings(precision="fp32")) or "")
    assert BENCHNCNN.unsupported_reason(settings(precision="bf16"))
    assert BENCHNCNN.unsupported_reason(settings(precision="fp16", backend="opencl"))
    assert "vulkan" in (BENCHNCNN.unsupported_reason(settings(precision="fp16", backend="gpu")) or "")
    assert BENCHNCNN.unsupported_reason(settings(precision="fp16", input_shapes=((2, 3, 224, 224),)))
    assert BENCHNCNN.unsupported_reason(settings(precision="fp16", input_shapes=()))
    assert BENCHNCNN.unsupported_reason(settings(precision="fp16", affinity="0,3"))
    assert BENCHNCNN.unsupported_reason(settings(precision="fp16")) is None
    assert BENCHNCNN.unsupported_reason(settings(precision="int8", backend="vulkan")) is None


def test_benchncnn_reconcile_says_what_it_could_not_force() -> None:
    run = BENCHNCNN.reconcile(parse("benchncnn", "fp16_cpu_1t_big"), settings(threads=1, precision="fp16"))
    assert run.error is None and run.warmups == 8  # fixed by benchncnn.cpp, said so in a note
    assert any(n.startswith("warmups: benchncnn always runs 8") for n in run.notes)
    assert "benchncnn reports 8 timed runs; 50 were asked for" in run.notes
    two = BENCHNCNN.reconcile(parse("benchncnn", "fp16_cpu_2t_all"),
                              settings(threads=4, precision="fp16", iterations=8))
    assert "benchncnn printed num_threads = 2; 4 was asked for" in two.notes
    assert "benchncnn printed powersave = 0; 2 was asked for" in two.notes


def test_benchncnn_vulkan_on_a_cpu_only_build_is_an_error() -> None:
    s = settings(threads=1, precision="fp16", backend="vulkan", iterations=4)
    run = BENCHNCNN.reconcile(parse("benchncnn", "vulkan_on_cpu_build"), s)
    assert run.error and "NCNN_VULKAN=OFF" in run.error
    assert BENCHNCNN.reconcile(parse("benchncnn", "vulkan_adreno"), settings(
        threads=1, precision="fp16", backend="vulkan")).warmups == 10


def test_benchncnn_layout_holds_the_param_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from devicelab.engines import ncnn
    from devicelab.engines.base import SourceModel

    calls: list[tuple[str, Path]] = []

    def ncnn_prepare(m: SourceModel, precision: str, cache_dir: Path) -> PreparedModel:
        calls.append((precision, cache_dir))
        return PreparedModel(tmp_path / f"model.{precision}.ncnn.param", ("calibrated",), {"weights": "w"})

    monkeypatch.setattr(ncnn.ENGINE, "prepare", ncnn_prepare)
    model = SourceModel("m", tmp_path / "m.onnx", "ab" * 32, ({"name": "input", "shape": [1, 3, 224, 224]},))
    cache = tmp_path / "converted" / "tool:benchncnn"
    fp16 = BENCHNCNN.prepare(model, "fp16", cache)  # the tool's fp16 is a switch: the fp32 conversion
    assert BENCHNCNN.model_layout(fp16) == {"model.param": tmp_path / "model.fp32.ncnn.param"}
    int8 = BENCHNCNN.prepare(model, "int8", cache)  # int8 is a model: the ncnn engine's, from its own cache
    assert BENCHNCNN.model_layout(int8) == {"model_int8.param": tmp_path / "model.int8.ncnn.param"}
    assert "calibrated" in int8.notes and "calibrated" not in fp16.notes
    assert calls == [("fp32", tmp_path / "converted" / "ncnn"), ("int8", tmp_path / "converted" / "ncnn")]


# ---------------------------------------------------------------------------------------------------- benchmark_model

def test_tflite_argv_forces_exact_counts() -> None:
    argv = TFLITE.argv("/data/local/tmp/benchmark_model", FOLDER, settings())
    assert argv == ["/data/local/tmp/benchmark_model", f"--graph={FOLDER}/model.tflite", "--num_threads=4",
                    "--num_runs=50", "--min_secs=0", "--max_secs=3600", "--warmup_runs=3", "--warmup_min_secs=0",
                    "--run_delay=-1", "--use_xnnpack=true"]


@pytest.mark.parametrize("precision,backend,flags", [
    ("fp16", "cpu", ["--use_xnnpack=true", "--xnnpack_force_fp16=true"]),  # XNNPACK ignores --allow_fp16
    ("int8", "cpu", ["--use_xnnpack=true"]),
    ("fp32", "gpu", ["--use_gpu=true", "--gpu_precision_loss_allowed=false"]),
    ("fp16", "gpu", ["--use_gpu=true", "--gpu_precision_loss_allowed=true"]),
    ("fp16", "opencl", ["--use_gpu=true", "--gpu_precision_loss_allowed=true", "--gpu_backend=cl"]),
    ("fp32", "nnapi", ["--use_nnapi=true", "--nnapi_allow_fp16=false"]),
    ("fp16", "nnapi", ["--use_nnapi=true", "--nnapi_allow_fp16=true"]),
])
def test_tflite_precision_and_backend_flags(precision: str, backend: str, flags: list[str]) -> None:
    s = settings(precision=precision, backend=backend, extra_args=("--use_caching=true",))
    assert TFLITE.argv("b", FOLDER, s)[9:] == [*flags, "--use_caching=true"]


def test_tflite_unsupported() -> None:
    assert TFLITE.unsupported_reason(settings(precision="bf16"))
    assert TFLITE.unsupported_reason(settings(backend="vulkan"))
    assert "dequantizes" in (TFLITE.unsupported_reason(settings(precision="int8", backend="gpu")) or "")
    assert TFLITE.unsupported_reason(settings(precision="int8", backend="nnapi")) is None


def test_tflite_prefixes_and_noise() -> None:
    run = parse("benchmark_model", "cpu_xnnpack_percentiles")
    assert run.summary_only and run.samples_s == ()
    assert run.raw["delegates"] == {"XNNPACK": "full"} and run.raw["params"]["Num threads"] == "4"
    assert run.raw["footprint_delta_mb"] == {"init": "27.6367", "overall": "31.0898"}  # a delta, not a peak
    assert run.raw["timings_us"]["Inference (avg)"] == "24668.5"


def test_tflite_peak_memory_is_mebibytes() -> None:
    run = parse("benchmark_model", "cpu_peak_memory")
    assert run.peak_memory_bytes == int(42.8125 * 2**20)
    assert run.memory_method == ("TFLite periodic monitoring (50 ms): peak of ru_maxrss (MiB printed to 6 "
                                 "significant digits)")


def test_tflite_gpu_delegate_partially_applied_is_a_note() -> None:
    run = parse("benchmark_model", "gpu_partial")
    assert run.raw["delegates"] == {"GPU": "partial: 3 kernels"}
    assert any("partially applied (3 delegate kernels)" in n for n in run.notes)
    assert TFLITE.reconcile(run, settings(precision="fp16", backend="gpu", iterations=10)).error is None


def test_tflite_gpu_not_applied_is_an_error() -> None:
    run = TFLITE.reconcile(parse("benchmark_model", "gpu_unsupported_platform"), settings(backend="gpu", iterations=10))
    assert run.error and "GPU delegate was not applied" in run.error and "unsupported on this platform" in run.error
    ok = TFLITE.reconcile(parse("benchmark_model", "gpu_full"),
                          settings(precision="fp16", backend="gpu", iterations=10))
    assert ok.error is None


def test_tflite_unconsumed_flags_are_a_note() -> None:
    run = parse("benchmark_model", "unconsumed_flags")
    assert "benchmark_model ignored flags it does not know: --xnnpack_force_fp16=true" in run.notes


def test_tflite_op_profile_new_layout_with_xnnpack_rows() -> None:
    run = parse("benchmark_model", "op_profiling_xnnpack")
    assert [op["type"] for op in run.ops][:2] == ["TfLiteXNNPackDelegate", "Convolution (NHWC, F32) IGEMM"]
    assert run.ops[0] == {"name": "[logits]:6", "type": "TfLiteXNNPackDelegate", "s": 0.003113, "calls_per_run": 1}
    assert run.ops[1]["name"] == "Delegate/Convolution (NHWC, F32) IGEMM:0" and run.ops[1]["s"] == 0.001187
    assert run.ops[1]["inside_delegate"]  # also counted in the fused node's 3.113 ms
    # The initialization block (ModifyGraphWithDelegate, AllocateTensors) is not an op of the timed runs.
    assert not any(op["type"] == "AllocateTensors" for op in run.ops)
    assert set(run.raw["profile"]) == {"Run Order", "Top by Computation Time", "Summary by node type"}


@pytest.mark.parametrize("variant", ["op_profiling_start_column", "op_profiling_csv"])
def test_tflite_op_profile_is_read_by_header(variant: str) -> None:
    run = parse("benchmark_model", variant)
    assert [(op["type"], op["name"], op["s"]) for op in run.ops] == [
        ("CONV_2D", "[conv0]:0", 0.001402), ("DEPTHWISE_CONV_2D", "[dw1]:1", 0.000612),
        ("CONV_2D", "[pw1]:2", 0.000998), ("MEAN", "[pool]:3", 0.000051),
        ("FULLY_CONNECTED", "[logits]:4", 0.000244), ("SOFTMAX", "[prob]:5", 0.000012)]


def test_tflite_reconcile_counts() -> None:
    run = TFLITE.reconcile(parse("benchmark_model", "cpu_xnnpack_percentiles"), settings(iterations=20))
    assert run.error is None and not any("timed runs" in n for n in run.notes)
    short = TFLITE.reconcile(parse("benchmark_model", "cpu_xnnpack_percentiles"), settings(iterations=50, warmups=5))
    assert "benchmark_model reports 20 timed runs; 50 were asked for" in short.notes
    assert "benchmark_model ran 3 warmups; 5 were asked for" in short.notes


# ---------------------------------------------------------------------------------------------------- MNN

def test_mnn_argv() -> None:
    assert MNN.argv("/data/local/tmp/benchmark.out", FOLDER, settings()) == [
        "/data/local/tmp/benchmark.out", f"{FOLDER}/models", "50", "3", "0", "4", "1"]
    assert MNN.argv("b", FOLDER, settings(precision="fp16", backend="opencl", threads=1))[4:] == ["3", "4", "2"]
    assert MNN.argv("b", FOLDER, settings(precision="fp16", backend="vulkan"))[4] == "7"
    assert MNN.argv("b", FOLDER, settings(backend="nnapi", threads=2))[4:6] == ["5", "2"]  # NN: a thread count
    assert MNN.argv("b", FOLDER, settings(precision="bf16", extra_args=("0", "1", "1")))[6:] == ["3", "0", "1", "1"]


def test_mnn_layout_puts_the_model_alone_in_a_folder(tmp_path: Path) -> None:
    model = tmp_path / "x.mnn"
    assert MNN.model_layout(PreparedModel(model)) == {"models/model.mnn": model}


def test_mnn_unsupported() -> None:
    assert MNN.unsupported_reason(settings(precision="bf16", backend="opencl"))
    assert MNN.unsupported_reason(settings(precision="int8", backend="vulkan"))
    assert "Power_High" in (MNN.unsupported_reason(settings(affinity="little")) or "")
    assert MNN.unsupported_reason(settings(backend="gpu"))
    assert MNN.unsupported_reason(settings(precision="int8")) is None


def test_mnn_quant_pass_is_kept_apart() -> None:
    run = parse("mnn_benchmark", "quant_pass")
    assert run.raw["model"] == "model.mnn"
    assert run.raw["quant"] == {"quant-model.mnn": {"max": "7.310", "min": "6.544", "avg": "6.802"}}
    old = parse("mnn_benchmark", "quant_pass_2023_06")
    assert old.raw["second_pass"] == {"max": "7.310", "min": "6.544", "avg": "6.802"}


def test_mnn_reconcile() -> None:
    ok = MNN.reconcile(parse("mnn_benchmark", "cpu_fp32"), settings())
    assert ok.error is None and any("Power_High" in n for n in ok.notes)
    fallback = MNN.reconcile(parse("mnn_benchmark", "opencl_fallback"), settings(backend="opencl"))
    assert fallback.error and "no such backend" in fallback.error
    old = MNN.reconcile(parse("mnn_benchmark", "pre2020_no_warmup"), settings())
    assert old.error and "forward type" in old.error
    gpu = MNN.reconcile(parse("mnn_benchmark", "opencl_fp16"), settings(precision="fp16", backend="opencl"))
    assert gpu.error is None and any("GPU mode" in n for n in gpu.notes)
    wrong = MNN.reconcile(parse("mnn_benchmark", "cpu_fp32"), settings(backend="vulkan"))
    assert wrong.error == "benchmark.out printed forward type CPU; vulkan was asked for"


def test_mnn_two_models_in_the_folder_fail() -> None:
    assert "every file of the folder" in (parse("mnn_benchmark", "two_models").error or "")


# ---------------------------------------------------------------------------------------------------- ORT

def test_ort_argv() -> None:
    argv = ORT.argv("/data/local/tmp/onnxruntime_perf_test", FOLDER, settings())
    assert " ".join(argv[1:7]) == "-m times -r 50 -x 4"
    assert argv == ["/data/local/tmp/onnxruntime_perf_test", "-m", "times", "-r", "50", "-x", "4", "-e", "cpu", "-I",
                    "-s", f"{FOLDER}/model.onnx", f"{FOLDER}/{RESULT_FILE}"]
    nnapi = ORT.argv("b", FOLDER, settings(precision="fp16", backend="nnapi", extra_args=("-o", "1")))
    assert nnapi[7:] == ["-e", "nnapi", "-I", "-s", "-i", "NNAPI_FLAG_USE_FP16", "-o", "1", f"{FOLDER}/model.onnx",
                         f"{FOLDER}/{RESULT_FILE}"]


def test_ort_unsupported() -> None:
    assert ORT.unsupported_reason(settings(precision="bf16"))
    assert ORT.unsupported_reason(settings(backend="vulkan"))
    assert ORT.unsupported_reason(settings(precision="int8", backend="nnapi")) is None


def test_ort_result_file_gives_every_sample() -> None:
    run = parse("onnxruntime_perf_test", "new_with_result_file")
    assert len(run.samples_s) == 20 and run.samples_s[0] == 0.0123411 and run.samples_s[-1] == 0.0121361
    assert not run.summary_only
    without = parse("onnxruntime_perf_test", "new_with_result_file", with_result_file=False)
    assert without.samples_s == () and without.summary_only and without.median_s == 0.0121532


def test_ort_compact_lines_and_seconds() -> None:
    run = parse("onnxruntime_perf_test", "new_total_no_result_file")
    assert run.raw["Runs (compact)"] == "20" and run.raw["Avg CPU usage"] == "96"
    assert run.memory_method == "ORT Peak working set size (getrusage ru_maxrss × 1024 on Linux/Android)"


def test_ort_verbose_iterations_and_log_noise() -> None:
    run = parse("onnxruntime_perf_test", "verbose_iterations")
    assert run.samples_s == (0.0123411, 0.0121187, 0.0122054, 0.0120876, 0.0121532)
    assert run.error is None  # [I:…]/[V:…] log lines are noise


def test_ort_nnapi_partial_assignment_is_a_note() -> None:
    run = ORT.reconcile(parse("onnxruntime_perf_test", "nnapi_partial"), settings(backend="nnapi", iterations=20))
    assert run.error is None and "ORT: some nodes run on the CPU EP, not the one asked for" in run.notes


def test_ort_reconcile_fixed_warmup() -> None:
    run = ORT.reconcile(parse("onnxruntime_perf_test", "new_with_result_file"), settings(iterations=20, warmups=3))
    assert run.warmups == 1 and run.error is None
    assert any(n.startswith("warmups: onnxruntime_perf_test always runs exactly 1") for n in run.notes)
    threads = ORT.reconcile(parse("onnxruntime_perf_test", "old_average"), settings(iterations=20, threads=4))
    assert "onnxruntime_perf_test set intra_op_num_threads to 2; 4 was asked" in threads.notes


# ---------------------------------------------------------------------------------------------------- declarations

@pytest.mark.parametrize("engine", list(TOOLS.values()), ids=list(TOOLS))
def test_tool_engines_declare_honestly(engine: ToolEngine) -> None:
    assert engine.name.startswith("tool:") and engine.tool and engine.source
    assert set(engine.precisions) <= set(PRECISIONS) and set(engine.backends) <= set(BACKENDS)
    assert set(engine.precisions) | set(engine.unsupported) >= set(PRECISIONS)  # supported, or says why not
    assert engine.device_kinds == ("host", "android") and engine.version() is None
    info = engine.info()
    assert info.name == engine.name and info.formats == engine.formats
    for precision in PRECISIONS:
        for backend in BACKENDS:
            why = engine.unsupported_reason(settings(precision=precision, backend=backend))
            assert why is None or (isinstance(why, str) and why), (precision, backend)


def test_result_fields_are_result_v1_names() -> None:
    fields = parse("onnxruntime_perf_test", "new_with_result_file").result_fields()
    assert set(fields) - {"tool"} <= set(RESULT_FIELDS)
    assert fields["peak_rss_bytes"] == 61083648 and fields["tool"]["count"] == 20


# ---------------------------------------------------------------------------------------------------- failed or not

def test_a_finished_run_keeps_logged_errors_as_notes() -> None:
    stdout = read("benchmark_model", "cpu_xnnpack_percentiles", "stdout")
    stderr = "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\nERROR: failed to delegate MEAN node #3\n"
    run = TFLITE.parse(stdout, stderr, 0)
    assert run.error is None and "benchmark_model logged: failed to delegate MEAN node #3" in run.notes
    mnn = MNN.parse("Don't support type [Interp], interp_0\n" + read("mnn_benchmark", "cpu_fp32", "stdout"), "", 0)
    assert mnn.error is None and "benchmark.out: Don't support type [Interp], interp_0" in mnn.notes
    log = "2026-12-01 12:00:00.1 [E:onnxruntime:, sequential_executor.cc:516 ExecuteKernel] Non-zero status code\n"
    ort = ORT.parse(read("onnxruntime_perf_test", "old_average", "stdout"), log, 0)
    assert ort.error is None and ort.notes[-1] == "ORT logged an error: Non-zero status code"


def test_a_failure_with_exit_code_0_still_fails() -> None:
    # adb shell before Android 7 always exits 0; the tools' own lines still tell.
    assert parse("benchmark_model", "error_missing_op", exit_code=0).error
    assert parse("onnxruntime_perf_test", "error_no_test_data", exit_code=0).error
    assert parse("mnn_benchmark", "error_no_folder", exit_code=0).error
    assert parse("benchncnn", "error_input_count", exit_code=0).error
    crashed = BENCHNCNN.parse("", "loop_count = 4\nnum_threads = 1\n", -11)
    assert crashed.error == "benchncnn exited with -11 and printed no result line: num_threads = 1"


def test_options_name_the_users_binary(tmp_path: Path) -> None:
    binary = tmp_path / "benchncnn"
    binary.write_bytes(b"\x7fELF")
    assert BENCHNCNN.check_options({}) == ["options.binary: the path of your benchncnn build is required for "
                                           "engine 'tool:benchncnn'"]
    assert BENCHNCNN.check_options({"binary": str(binary)}) == [f"options.binary: {binary} is not executable "
                                                               f"(chmod +x)"]
    binary.chmod(0o755)
    options = {"binary": str(binary), "libraries": [], "args": ["--use_caching=true"]}
    assert TFLITE.check_options(options) == [] and TFLITE.extra_args(options) == ("--use_caching=true",)
    assert MNN.check_options({"binary": str(binary), "arg": "x", "args": "x"}) == [
        "options.arg: unknown key for engine 'tool:mnn-benchmark'; allowed: binary, libraries, args, mmap_threshold",
        "options.args: must be a list of strings (extra benchmark.out arguments, one per item)"]
    assert ORT.user_runner(options) == (binary, ())
    assert (ORT.version_for(options) or "").startswith("sha256:")
