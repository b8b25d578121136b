"""Rows for configs that never reached a device — the other place a Result is born (the session makes every row
that ran on one). A failed config is a row, never a gap: the plan knows it cannot run (unsupported), its model did
not convert (failed), its device was gone before it started or a farm worker was lost with it (infra-failed)."""

from __future__ import annotations

from devicelab import llm
from devicelab.result import FAILED, INFRA_FAILED, UNSUPPORTED, Config, Result, utc_now


def _row(run_id: str, config: Config, status: str, reason: str) -> Result:
    now = utc_now()
    # An LLM config's row says which request it was, as the session's rows do (ext.llm: the workload alone).
    w = llm.workload_from_key(config.workload)
    return Result.for_config(run_id, config, status, reason=reason, started_at=now, finished_at=now,
                             ext={"llm": w.to_dict()} if w is not None else {})


def unsupported(run_id: str, config: Config, reason: str) -> Result:
    """The plan knows this combination cannot run here (engine, precision, backend, affinity...)."""
    return _row(run_id, config, UNSUPPORTED, reason)


def not_converted(run_id: str, config: Config, reason: str) -> Result:
    """The engine's converter failed on this model: the engine's message is the reason."""
    return _row(run_id, config, FAILED, reason)


class Unsupported(str):
    """A reason found while preparing a config's model that makes its row `unsupported`, not `failed`: the engine
    cannot make this variant of the model (e.g. llamacpp asked for Q8_0 of a Q4_0 file), which the plan could not
    know without reading the file."""


def not_prepared(run_id: str, config: Config, reason: str) -> Result:
    """A config whose model the engine did not prepare: `unsupported` when it said it cannot (an Unsupported
    reason), else `failed` (its converter failed)."""
    return unsupported(run_id, config, reason) if isinstance(reason, Unsupported) else \
        not_converted(run_id, config, reason)


def device_gone(run_id: str, config: Config, reason: str) -> Result:
    """The device could not be reached before the config started (or its farm worker was lost with it)."""
    named = reason.startswith(f"device {config.device}")  # a transport's own message names the device already
    return _row(run_id, config, INFRA_FAILED, reason if named else f"device {config.device}: {reason}")


def not_delivered(run_id: str, config: Config, reason: str) -> Result:
    """A farm task's file did not reach its worker's host (missing from the store, or failed its sha256 check on
    arrival): nothing of the config ran; `--resume` publishes the file again and runs it."""
    return _row(run_id, config, INFRA_FAILED, reason)
