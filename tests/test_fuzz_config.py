"""Any suite or inventory, however malformed, is either accepted or refused with a ConfigError (one line, exit 2):
never a traceback. Hypothesis generates the YAML-shaped values (bounded: a few hundred examples per run)."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devicelab.config import parse_inventory, parse_suite
from devicelab.errors import DevicelabError

# What YAML can give: scalars, lists and mappings, nested; keys are what YAML allows as mapping keys.
scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 300), st.floats(allow_nan=True), st.text(max_size=12),
                    st.sampled_from(["mobilenet_v2", "squeezenet1_1", "onnxruntime", "ncnn", "tool:benchncnn",
                                     "protocol", "fp32", "int8", "cpu", "vulkan", "big", "all", "0-1", "host",
                                     "android", "x.onnx", "min", "max"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                        st.dictionaries(st.one_of(st.text(max_size=8), scalars),
                                                                        inner, max_size=4)), max_leaves=12)
SUITE_KEYS = ["name", "models", "engines", "threads", "precisions", "backends", "affinity", "devices", "protocol",
              "seed", "repeats"]
ENTRY_KEYS = ["name", "path", "input_shapes", "calibration", "label", "options", "binary", "kind", "id", "serial",
              "address", "python"]
entries = st.dictionaries(st.sampled_from(ENTRY_KEYS), values, max_size=4)
suites = st.dictionaries(st.sampled_from(SUITE_KEYS), st.one_of(values, st.lists(entries, max_size=3), entries),
                         max_size=8)
inventories = st.one_of(values, st.fixed_dictionaries({"devices": st.one_of(values, st.lists(entries, max_size=3))},
                                                      optional={"version": values}))

FUZZ = settings(max_examples=400, deadline=None, database=None, suppress_health_check=list(HealthCheck))


@FUZZ
@given(suites)
def test_any_suite_parses_or_is_refused_in_one_error(raw: dict[str, Any]) -> None:
    try:
        parse_suite(raw, "fuzz")
    except DevicelabError as e:
        assert "\n" not in str(e)


@FUZZ
@given(inventories)
def test_any_inventory_parses_or_is_refused_in_one_error(raw: Any) -> None:
    try:
        parse_inventory(raw, "fuzz")
    except DevicelabError as e:
        assert "\n" not in str(e)


def test_digits_int_refuses_are_refused_in_one_error() -> None:
    """Found by the fuzzer: '²'.isdigit() is true, int('²') raises ValueError."""
    import pytest

    with pytest.raises(DevicelabError, match=r"threads\[0\]: '²' is not allowed"):
        parse_suite({"name": "x", "models": ["mobilenet_v2"], "engines": ["onnxruntime"], "threads": "²"}, "t")
    with pytest.raises(DevicelabError):
        parse_inventory({"devices": [{"id": "p", "kind": "android", "address": "10.0.0.1:5²5"}]}, "t")
