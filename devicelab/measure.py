"""The measurement protocol: settings, the stopping rule, and the controller side of the runner protocol
(docs/runner-protocol.md), whatever carries it (a host pipe, an adb shell stream, ...).

The controller owns the stopping rule (and, with protocol v2 runners, the warmup); the runner only times.
Everything here except the Driver's I/O is pure.
"""

from __future__ import annotations

import dataclasses
import json
import math
import queue
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from devicelab.analysis import stats
from devicelab.llm import Request

SUPPORTED_PROTOCOLS = (1, 2, 3)  # the runner protocol versions this controller drives (docs/runner-protocol.md)
LLM_PROTOCOL = 3  # the version that adds LLM requests (prefill and token events)


@dataclass(frozen=True)
class ProtocolSettings:
    """Defaults are the measurement protocol's (docs/architecture.md); every field can be overridden in a suite."""

    # Warmup (controller-driven, runner protocol v2): at least warmup_iterations and warmup_min_seconds, then until
    # the median of the last window is within warmup_steady of the window before, capped at warmup_seconds (and at
    # warmup_iterations for models slower than SLOW_MODEL_S). A v1 runner warms itself up for warmup_iterations and
    # warmup_seconds.
    warmup_iterations: int = 3
    warmup_seconds: float = 0.5
    warmup_min_seconds: float = 0.1
    warmup_steady: float = 0.02
    min_iterations: int = 10
    min_seconds: float = 1.0
    max_iterations: int = 200
    max_seconds: float = 10.0
    target_ci: float = 0.01  # stop once the 95 % CI of the median is within ±1 % of it
    confidence: float = 0.95
    timeout_seconds: float = 300.0  # the whole runner process, load to exit; then it is killed
    cooldown_seconds: float = 0.1  # fixed pause between configs where no temperature sensor exists
    cooldown_tolerance_c: float = 2.0  # where sensors exist: wait until within this of the idle baseline
    cooldown_timeout_seconds: float = 120.0
    accuracy_inputs: int = 16  # seeded inputs run after timing to compare outputs with the fp32 reference
    tool_iterations: int = 50  # timed runs asked of an engine's own tool (tool:*), which has no stopping rule
    # Energy (phones): after timing, an idle window then a window of continuous inference, battery sampled on the
    # device; windows shorter than energy_min_window_seconds give None (the fuel gauge averages over seconds).
    energy: bool = False
    energy_window_seconds: float = 30.0
    energy_min_window_seconds: float = 30.0
    energy_idle_seconds: float = 10.0
    energy_allow_charging: bool = False  # measure even when a charger feeds the phone (the figure is then wrong)
    # A/B labels of one config (same round, device, CPUs) alive together and timed in alternating ~0.1 s slices:
    # the machine's drift then falls on both sides alike.
    lockstep: bool = True
    # Per-op profile (the suite's `profile: true`, `run --profile`): after timing, a separate pass of
    # profile_iterations iterations with the engine's op profiler on; its ops become the row's ext.profile.
    profile: bool = False
    profile_iterations: int = 20

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_FIELDS = {f.name: f for f in dataclasses.fields(ProtocolSettings)}
FRACTIONS = ("target_ci", "confidence", "warmup_steady")


def settings_from_dict(raw: Any, where: str, problems: list[str]) -> ProtocolSettings:
    """Validate a suite's `protocol:` mapping; append every problem, return the defaults on error."""
    if raw is None:
        return ProtocolSettings()
    if not isinstance(raw, dict):
        problems.append(f"{where}: must be a mapping of {', '.join(_FIELDS)}")
        return ProtocolSettings()
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in _FIELDS:
            problems.append(f"{where}.{key}: unknown key; allowed: {', '.join(_FIELDS)}")
            continue
        if _FIELDS[key].type in (bool, "bool"):
            if not isinstance(value, bool):
                problems.append(f"{where}.{key}: {value!r} is not allowed; allowed: true, false")
            else:
                values[key] = value
            continue
        want_int = _FIELDS[key].type in (int, "int")
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if ok and want_int:
            ok = float(value).is_integer()
        if not ok or value < 0 or (key in FRACTIONS and not 0 < value < 1):
            kind = "a non-negative integer" if want_int else "a non-negative number"
            if key in FRACTIONS:
                kind = "a number between 0 and 1"
            problems.append(f"{where}.{key}: {value!r} is not {kind}")
            continue
        values[key] = int(value) if want_int else float(value)
    result = dataclasses.replace(ProtocolSettings(), **values)
    if result.max_iterations < 1:
        problems.append(f"{where}.max_iterations: must be at least 1")
    if result.timeout_seconds <= 0:
        problems.append(f"{where}.timeout_seconds: must be above 0")
    if result.profile_iterations < 1:
        problems.append(f"{where}.profile_iterations: must be at least 1")
    return result


# --------------------------------------------------------------------------------------------------
# Stopping rule (pure)


def minimums_met(samples: Sequence[float], s: ProtocolSettings, spent: Sequence[float] | None = None) -> bool:
    """`spent`: each sample's wall time when a sample is not one (an LLM request's sample is its decode time per
    token; the time minimums and caps count the whole request)."""
    return len(samples) >= max(1, s.min_iterations) and \
        float(sum(samples if spent is None else spent)) >= s.min_seconds


def stop_reason(samples: Sequence[float], s: ProtocolSettings, spent: Sequence[float] | None = None) -> str | None:
    """Why timing may stop now, or None to keep sampling.

    Both minimums come first (iterations and seconds); only then does the first of precision reached,
    iteration cap or time cap apply.
    """
    if not minimums_met(samples, s, spent):
        return None
    n, total = len(samples), float(sum(samples if spent is None else spent))
    if n >= s.max_iterations:
        return "max_iterations"
    if total >= s.max_seconds:
        return "max_seconds"
    half = stats.relative_ci_halfwidth(samples, s.confidence)
    if half is not None and half <= s.target_ci:
        return "ci"
    return None


def next_batch(samples: Sequence[float], s: ProtocolSettings, estimate_s: float | None,
               spent: Sequence[float] | None = None) -> int:
    """How many iterations to ask for next: enough to reach both minimums, then ~10 % more at a time (so the rule
    is checked often without a round trip per iteration). Never more than the time cap allows at the estimated
    speed, never past the iteration cap once the minimums hold; one iteration when there is no estimate yet."""
    if estimate_s is None or estimate_s <= 0:
        return 1
    n, total = len(samples), float(sum(samples if spent is None else spent))
    if not minimums_met(samples, s, spent):
        want = max(s.min_iterations - n, math.ceil((s.min_seconds - total) / estimate_s), 1)
    else:
        want = min(max(1, math.ceil(0.1 * n)), max(1, s.max_iterations - n))
    return int(min(want, max(1, math.ceil((s.max_seconds - total) / estimate_s))))


# --------------------------------------------------------------------------------------------------
# Warmup rule (pure)

# The stop reason of a batch-mode run: its iteration count was fixed up front (batch_iterations), so the stopping
# rule could not apply.
BATCH_STOP = "batch"


def batch_iterations(s: ProtocolSettings) -> int:
    """Iterations a batch-mode runner is asked for up front, before any time is known: max_iterations, the most
    the stopping rule ever takes by count (it cannot stop a batch early at its precision target, and max_seconds
    cannot cut a batch short; timeout_seconds still kills a runner that overruns)."""
    return max(1, s.max_iterations)


SLOW_MODEL_S = 0.2  # a model this slow per inference is warmed up for warmup_iterations only
WARMUP_WINDOW_S = 0.05  # a steadiness window holds at least this much inference (and 3 iterations)
EPSILON_S = 1e-9  # sums of float seconds: ten 0.01 s iterations are 0.1 s, not 0.09999999999999999


def warmup_window(estimate_s: float | None) -> int:
    """Iterations per steadiness window at this speed."""
    if not estimate_s or estimate_s <= 0:
        return 3
    return max(3, math.ceil(WARMUP_WINDOW_S / estimate_s))


def warmup_stop(warmups: Sequence[float], s: ProtocolSettings, floor_s: float = 0.0) -> str | None:
    """Why the controller's warmup may end now, or None to go on: "cap" (warmup_seconds reached), "slow model"
    (warmup_iterations of a model slower than SLOW_MODEL_S), "steady" (past both minimums, the median of the last
    window within warmup_steady of the window before). `floor_s`: seconds it never ends before (phones, whose clocks
    ramp slowly), within the cap."""
    n, total = len(warmups), float(sum(warmups))
    if n < max(1, s.warmup_iterations):
        return None
    if float(stats.median(warmups) or 0) > SLOW_MODEL_S:  # before the cap, which 3 such iterations reach too
        return "slow model"
    if total >= s.warmup_seconds - EPSILON_S:
        return "cap"
    if total < max(s.warmup_min_seconds, floor_s) - EPSILON_S:
        return None
    w = warmup_window(float(stats.median(warmups[-3:]) or 0))
    if n < 2 * w:
        return None
    before, last = float(stats.median(warmups[-2 * w:-w]) or 0), float(stats.median(warmups[-w:]) or 0)
    if before > 0 and abs(last - before) <= s.warmup_steady * before:
        return "steady"
    return None


def warmup_batch(warmups: Sequence[float], s: ProtocolSettings, estimate_s: float | None, floor_s: float = 0.0
                 ) -> int:
    """How many warmup iterations to ask for next: enough for the minimums and two windows at first, then a window
    at a time; never past the cap at the estimated speed; one when there is no estimate."""
    if estimate_s is None or estimate_s <= 0:
        return 1
    n, total = len(warmups), float(sum(warmups))
    w = warmup_window(estimate_s)
    want = max(s.warmup_iterations - n, 2 * w - n, math.ceil((max(s.warmup_min_seconds, floor_s) - total) / estimate_s),
               w if n else 1)
    return int(max(1, min(want, math.ceil((s.warmup_seconds - total) / estimate_s))))


# --------------------------------------------------------------------------------------------------
# Controller side of the runner protocol


class RunnerError(Exception):
    """The runner reported an error event or broke the protocol. `unsupported`: the runner said the engine cannot do
    this config here (its error event carried `"unsupported": true`), which makes an `unsupported` row."""

    def __init__(self, message: str, unsupported: bool = False) -> None:
        super().__init__(message)
        self.unsupported = unsupported


def _error(event: dict[str, Any]) -> RunnerError:
    return RunnerError(str(event.get("message", "runner error")), unsupported=event.get("unsupported") is True)


class ChannelClosedError(Exception):
    """The runner's output ended (exit, crash, device gone) before the protocol finished."""


class ChannelTimeoutError(Exception):
    """No complete answer before the deadline."""


class Channel(Protocol):
    """A line-oriented JSON link to one runner process."""

    def send(self, message: dict[str, Any]) -> None: ...

    def receive(self, deadline: float) -> dict[str, Any]:
        """The next JSON event; raises ChannelClosedError at end of output, ChannelTimeoutError at the
        deadline (time.monotonic())."""
        ...


class Lines(Protocol):
    """A program's stdin and stdout as bytes and lines (a device kind's spawned Process)."""

    def write(self, data: bytes) -> None: ...

    def read_line(self, deadline: float) -> bytes: ...


class LineQueue:
    """Lines handed from a reader thread to `get` (None marks the end of the output), so that a silent program is
    timed out instead of blocking the controller forever."""

    def __init__(self) -> None:
        self._queue: queue.Queue[bytes | None] = queue.Queue()

    def put(self, line: bytes | None) -> None:
        self._queue.put(line)

    def get(self, deadline: float) -> bytes:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ChannelTimeoutError()
        try:
            line = self._queue.get(timeout=remaining)
        except queue.Empty:
            raise ChannelTimeoutError() from None
        if line is None:
            self._queue.put(None)  # stay closed for later calls
            raise ChannelClosedError("runner output ended")
        return line


class JsonLines:
    """The runner protocol's framing over a program's stdin/stdout: one JSON object per line. Lines that are not
    JSON objects are not protocol lines (a runner's stray prints): they are skipped."""

    def __init__(self, lines: Lines) -> None:
        self._lines = lines

    def send(self, message: dict[str, Any]) -> None:
        self._lines.write(json.dumps(message).encode() + b"\n")

    def receive(self, deadline: float) -> dict[str, Any]:
        while True:
            raw = self._lines.read_line(deadline)
            try:
                event = json.loads(raw)
            except ValueError:
                continue
            if isinstance(event, dict):
                return event


def seconds_field(event: dict[str, Any], key: str, required: bool = True, positive: bool = False) -> float | None:
    """A time field of an event: a finite number of seconds, >= 0 (> 0 for `positive`); RunnerError naming the line
    otherwise, so a runner's bad line is its row's reason, never a crash of the sweep."""
    value = event.get(key)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0 \
            or (positive and value == 0):
        raise RunnerError(f"runner protocol: bad '{event.get('event')}' line {json.dumps(event)[:200]}: '{key}' "
                          f"must be a {'positive' if positive else 'non-negative'} number of seconds")
    return float(value)


def byte_count(event: dict[str, Any], key: str) -> int | None:
    """A memory field of an event: an integer number of bytes, or None when absent or negative (runners say -1 for
    "could not read it"); RunnerError naming the line when it is not a number at all."""
    value = event.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RunnerError(f"runner protocol: bad '{event.get('event')}' line {json.dumps(event)[:200]}: '{key}' "
                          "must be a number of bytes")
    return int(value) if value >= 0 else None


@dataclass
class Batch:
    samples: list[float]
    starts: list[float] | None  # protocol v2's `t` of each iteration, when every line carried one
    requests: list[Request] | None = None  # protocol v3's LLM requests (samples: each one's whole time)


@dataclass(frozen=True)
class LlmShape:
    """What a v3 runner is asked per request: P prompt tokens, G generated tokens."""

    prompt_tokens: int
    gen_tokens: int


def _expect(channel: Channel, deadline: float, want: str, ops: list[dict[str, Any]]) -> dict[str, Any]:
    while True:
        event = channel.receive(deadline)
        kind = event.get("event")
        if kind == "error":
            raise _error(event)
        if kind == "op":
            ops.append(event)
            continue
        if kind == want:
            return event
        raise RunnerError(f"runner protocol: expected '{want}' event, got {json.dumps(event)[:200]}")


def run_batch(channel: Channel, n: int, deadline: float, ops: list[dict[str, Any]], cmd: str = "run",
              llm: LlmShape | None = None) -> Batch:
    """Ask for n iterations (`run`, or v2's `warmup`); their times and, when the runner sends them, their starts."""
    channel.send({"cmd": cmd, "iterations": n})
    return receive_batch(channel, n, deadline, ops, llm)


def _bad(event: dict[str, Any], why: str) -> RunnerError:
    return RunnerError(f"runner protocol: bad '{event.get('event')}' line {json.dumps(event)[:200]}: {why}")


def receive_batch(channel: Channel, n: int, deadline: float, ops: list[dict[str, Any]],
                  llm: LlmShape | None = None) -> Batch:
    """A batch of n iterations as the runner reports it (asked for by `run_batch`, or by the config in batch mode).
    With `llm` (protocol v3) each iteration is a request: a `prefill`, then G `token` lines, then its `iter`."""
    got: list[float] = []
    starts: list[float | None] = []
    requests: list[Request] = []
    prefill: float | None = None
    tokens: list[float] = []
    while True:
        event = channel.receive(deadline)
        kind = event.get("event")
        if llm is not None and kind == "prefill":
            if prefill is not None:
                raise _bad(event, "a second prefill before the request's 'iter'")
            if event.get("tokens") != llm.prompt_tokens:
                raise _bad(event, f"'tokens' must be the prompt's {llm.prompt_tokens} tokens")
            prefill = seconds_field(event, "s", positive=True)
            tokens = []
        elif llm is not None and kind == "token":
            if prefill is None:
                raise _bad(event, "a token before the request's prefill")
            tokens.append(seconds_field(event, "s", positive=True))  # type: ignore[arg-type]
        elif kind == "iter":
            if llm is not None:
                if prefill is None:
                    raise _bad(event, "a request's 'iter' without its prefill")
                if len(tokens) != llm.gen_tokens:
                    raise _bad(event, f"the request had {len(tokens)} token lines; asked for {llm.gen_tokens}")
            got.append(seconds_field(event, "s", positive=True))  # type: ignore[arg-type]
            starts.append(seconds_field(event, "t", required=False))
            if llm is not None:
                assert prefill is not None
                if got[-1] < prefill:
                    raise _bad(event, "a request's 's' is shorter than its prefill")
                requests.append(Request(prefill, tuple(tokens), got[-1]))
                prefill, tokens = None, []
        elif kind == "batch":
            break
        elif kind == "op":
            ops.append(event)
        elif kind == "error":
            raise _error(event)
        else:
            raise RunnerError(f"runner protocol: unexpected line {json.dumps(event)[:200]} during a batch")
    if prefill is not None:
        raise RunnerError("runner protocol: the batch ended inside a request (a prefill without its 'iter')")
    if len(got) != n:
        raise RunnerError(f"runner protocol: asked for {n} iterations, got {len(got)}")
    return Batch(got, None if any(t is None for t in starts) else [float(t) for t in starts],  # type: ignore[arg-type]
                 requests if llm is not None else None)


@dataclass
class Measurement:
    ready: dict[str, Any]
    done: dict[str, Any]
    protocol: int
    samples_s: list[float] = field(default_factory=list)
    starts_s: list[float] | None = None  # iteration starts relative to the first timed one (v2 `t`)
    # The first timed iteration's `t` as the runner sent it (its monotonic clock): what ties devices' own samples
    # (dlprobe's, the host's) to iter_t_s. None when the runner sent no `t`.
    t0_s: float | None = None
    # Every batch as the runner timed it, in order (the timeline's marks): {kind: warmup | run, iterations,
    # start_t, end_t (the runner's clock, when it sent `t`), sent_s, received_s (the controller's monotonic clock)}.
    batch_marks: list[dict[str, Any]] = field(default_factory=list)
    ops: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str = ""
    batches: int = 0
    warmup_by: str = "runner"
    warmup_iterations: int | None = None
    warmup_seconds: float | None = None
    warmup_stopped: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # The profiling pass (runner protocol v2 `profile`): its op lines and its `profiled` line; or why none ran.
    profile_ops: list[dict[str, Any]] = field(default_factory=list)
    profiled: dict[str, Any] | None = None
    no_profile: str | None = None
    requests: list[Request] | None = None  # protocol v3: the timed requests (samples_s: their decode s per token)
    # The runner ended or went silent during its profiling pass (what happened): the timed iterations above stand,
    # but there is no `done` line (no peak memory, no outputs) from it.
    profile_lost: str | None = None


# Called once timing has stopped, before "stop": what a device measures with the runner still warm and loaded
# (an energy window). It gets a function that runs n more iterations and returns their times.
RunMore = Callable[[int], list[float]]
BeforeStop = Callable[[RunMore, list[float]], dict[str, Any]]


class Driver:
    """One runner under the stopping rule, a batch at a time: `time_alone` drives one, `lockstep` several
    (devicelab.session starts, drives and finishes them)."""

    def __init__(self, channel: Channel, s: ProtocolSettings, deadline: float, controller_warmup: bool = False,
                 warmup_floor_s: float = 0.0, batch: int | None = None, llm: LlmShape | None = None) -> None:
        self.channel, self.s, self.deadline = channel, s, deadline
        # Batch mode (a runner that reads no commands): its config asked for `batch` iterations up front; the runner
        # warms itself, times them as one batch and stops by itself, and the driver only reads what it reported.
        self.batch = batch
        self.controller_warmup = controller_warmup  # the runner was told to leave warmup to us (if it speaks v2)
        self.warmup_floor_s = warmup_floor_s  # seconds of warmup the device needs whatever the rule says
        self.ops: list[dict[str, Any]] = []
        self.samples: list[float] = []
        self.starts: list[float] | None = []
        self.batches = 0
        self.ready: dict[str, Any] = {}
        self.protocol = 1
        self.estimate: float | None = None
        self.warmup_by = "runner"
        self.warmups: list[float] = []
        self.warmup_stopped: str | None = None
        self.marks: list[dict[str, Any]] = []  # every batch, for the timeline (Measurement.batch_marks)
        # An LLM config (protocol v3): a sample is a request's decode time per token, while the time minimums, caps
        # and batch sizes count each request's whole time (`spent`).
        self.llm = llm
        self.requests: list[Request] = []
        self.spent: list[float] | None = [] if llm is not None else None

    def _mark(self, kind: str, batch: Batch, sent: float | None) -> None:
        end = None
        if batch.starts:
            end = batch.starts[-1] + batch.samples[-1]
        self.marks.append({"kind": kind, "iterations": len(batch.samples),
                           "start_t": batch.starts[0] if batch.starts else None, "end_t": end,
                           "sent_s": sent, "received_s": time.monotonic()})

    def start(self) -> None:
        """Wait for 'ready' (the runner has loaded; a v1 runner has warmed up too), then warm up a v2 runner that
        left warmup to the controller."""
        self.ready = _expect(self.channel, self.deadline, "ready", self.ops)
        self.protocol = self.ready.get("protocol")  # type: ignore[assignment]
        if self.protocol not in SUPPORTED_PROTOCOLS:
            raise RunnerError(f"runner speaks protocol {self.protocol!r}; devicelab speaks "
                              f"{', '.join(map(str, SUPPORTED_PROTOCOLS))}")
        if self.llm is not None and self.protocol != LLM_PROTOCOL:
            raise RunnerError(f"an LLM config needs runner protocol {LLM_PROTOCOL} (prefill and token events); the "
                              f"runner speaks {self.protocol}")
        if self.llm is not None and not isinstance(self.ready.get("llm"), dict):
            raise RunnerError(f"runner protocol: bad 'ready' line {json.dumps(self.ready)[:200]}: protocol 3 for an "
                              "LLM config carries 'llm' (n_params, model_bytes, quant, kv_type, n_ctx, n_vocab)")
        first = seconds_field(self.ready, "first_s")
        warmups = self.ready.get("warmups")
        if not (isinstance(warmups, int) and not isinstance(warmups, bool) and warmups >= 0):
            raise RunnerError(f"runner protocol: bad 'ready' line {json.dumps(self.ready)[:200]}: 'warmups' must be "
                              "a non-negative integer")
        seconds_field(self.ready, "load_s")
        warm_s = seconds_field(self.ready, "warmup_s", required=False)
        # The first batch is sized from what every runner sends: the warmup's mean when it reports one, else the
        # first inference (slower than steady state, so the first batch errs short, never runs away).
        self.estimate = (warm_s / warmups) if warmups and warm_s else (first or None)
        if self.protocol >= 2 and self.controller_warmup and warmups == 0 and self.batch is None:
            self._warm_up()

    def _warm_up(self) -> None:
        """Protocol v2: warmup batches until the warmup rule (warmup_stop) says timing is steady or capped."""
        self.warmup_by = "controller"
        while (why := warmup_stop(self.warmups, self.s, self.warmup_floor_s)) is None:
            n = warmup_batch(self.warmups, self.s, self.estimate, self.warmup_floor_s)
            sent = time.monotonic()
            batch = run_batch(self.channel, n, self.deadline, self.ops, cmd="warmup", llm=self.llm)
            self._mark("warmup", batch, sent)
            got = batch.samples
            self.warmups.extend(got)
            self.estimate = float(stats.median(got) or 0) or self.estimate
        self.warmup_stopped = why

    def reason(self) -> str | None:
        if self.batch is not None:
            return BATCH_STOP if self.batches else None
        return stop_reason(self.samples, self.s, self.spent)

    def capped(self) -> bool:
        """No more batches, whatever the others need: both minimums hold and an iteration or time cap is reached."""
        if self.batch is not None:
            return bool(self.batches)
        spent = self.samples if self.spent is None else self.spent
        return minimums_met(self.samples, self.s, self.spent) and (
            len(self.samples) >= self.s.max_iterations or float(sum(spent)) >= self.s.max_seconds)

    def step(self, most: int | None = None) -> None:
        # In batch mode nothing is sent: the runner may have begun before this, so no bound on its clock is known.
        sent: float | None = time.monotonic() if self.batch is None else None
        if self.batch is not None:
            batch = receive_batch(self.channel, self.batch, self.deadline, self.ops, self.llm)
        else:
            n = next_batch(self.samples, self.s, self.estimate, self.spent)
            batch = run_batch(self.channel, min(n, most) if most else n, self.deadline, self.ops, llm=self.llm)
        self._mark("run", batch, sent)
        if batch.requests is not None and self.spent is not None:
            self.requests.extend(batch.requests)
            self.spent.extend(batch.samples)
            self.samples.extend(r.per_token_s for r in batch.requests)
        else:
            self.samples.extend(batch.samples)
        if self.starts is not None and batch.starts is not None:
            self.starts.extend(batch.starts)
        else:
            self.starts = None
        self.batches += 1
        self.estimate = float(stats.median(batch.samples) or 0) or self.estimate

    def time_alone(self) -> None:
        """Batches until the stopping rule holds (no other runner to keep pace with)."""
        while self.reason() is None:
            self.step()

    def profile(self, n: int) -> tuple[list[dict[str, Any]], dict[str, Any] | None, str | None]:
        """The profiling pass, after timing and before `stop`: (op lines, the `profiled` line, None), or ([], None,
        why no pass could be asked for). Only a runner whose `ready` line says `"profile": true` is asked: a v1 or
        third-party runner would fail on a command it does not know."""
        if self.batch is not None:
            return [], None, "batch mode: the runner reads no commands, so it cannot be asked for a profiling pass"
        if self.ready.get("profile") is not True:
            return [], None, (f"the runner (protocol {self.protocol}) does not offer the 'profile' command (no "
                              "\"profile\": true in its ready line) and sent no op events")
        self.channel.send({"cmd": "profile", "iterations": n})
        ops: list[dict[str, Any]] = []
        bad: list[str] = []
        # a pass of its own: as long as a whole runner may take, from now, once (not renewed by each line)
        deadline = max(self.deadline, time.monotonic() + self.s.timeout_seconds)
        while True:
            event = self.channel.receive(deadline)
            kind = event.get("event")
            if kind == "op":
                why = op_problem(event)
                if why:
                    bad.append(f"op line {len(ops) + len(bad) + 1}: {why}")
                else:
                    ops.append(event)
            elif kind == "profiled":
                why = profiled_problem(event)
                if why:
                    bad.append(f"'profiled' line: {why}")
                if bad:  # a malformed pass is no profile; the runner still answers `stop` (the timing stands)
                    more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
                    return [], {"error": f"runner protocol: {bad[0]}{more}"}, None
                return ops, event, None
            elif kind == "error":
                return [], {"error": str(_error(event))}, None
            else:
                bad.append(f"unexpected line {json.dumps(event)[:200]}")

    def finish(self, before_stop: BeforeStop | None = None, profile_iterations: int = 0,
               profile_in_stop: bool = False, before_profile: Callable[[], None] | None = None) -> Measurement:
        """Stop the runner and gather what it measured. `profile_iterations`: a profiling pass (the `profile`
        command) first; `profile_in_stop`: the runner profiles while answering `stop` (dlbench's layer_times). A
        runner that fails during either keeps its timed iterations: the Measurement says so (profile_lost).
        `before_profile`: called once timing (and the energy window) is over, before any profiling."""
        extra: dict[str, Any] = {}
        if before_stop is not None and self.batch is None:
            # An LLM runner's energy window counts whole requests (prefill and G decode steps each).
            extra = before_stop(lambda n: run_batch(self.channel, n, self.deadline, [], llm=self.llm).samples,
                                self.samples if self.spent is None else self.spent)
        profile_ops: list[dict[str, Any]] = []
        profiled: dict[str, Any] | None = None
        no_profile: str | None = None
        if before_profile is not None and (profile_iterations > 0 or profile_in_stop):
            before_profile()
        if profile_iterations > 0:  # after the timed iterations and the energy window: never mixed into them
            try:
                profile_ops, profiled, no_profile = self.profile(profile_iterations)
            except (ChannelClosedError, ChannelTimeoutError) as e:
                return self._measurement({}, extra, [], None, None, _lost(e, "its profiling pass"))
        if self.batch is None:
            self.channel.send({"cmd": "stop"})  # in batch mode the runner stops by itself after its batch
        # Energy and layer passes run between `stop` and `done`: they get a deadline of their own.
        wait = max(self.deadline, time.monotonic() + (self.s.timeout_seconds if profile_in_stop else 60)) \
            if extra or profile_in_stop else self.deadline
        try:
            done = _expect(self.channel, wait, "done", self.ops)
        except RUNNER_FAULTS as e:
            if not profile_in_stop:
                raise
            return self._measurement({}, extra, [], None, None, _lost(e, "its per-layer passes after 'stop'"))
        return self._measurement(done, extra, profile_ops, profiled, no_profile, None)

    def _measurement(self, done: dict[str, Any], extra: dict[str, Any], profile_ops: list[dict[str, Any]],
                     profiled: dict[str, Any] | None, no_profile: str | None, lost: str | None) -> Measurement:
        starts, t0 = None, None
        if self.starts and len(self.starts) == len(self.samples):
            t0 = self.starts[0]
            starts = [t - t0 for t in self.starts]
        if self.warmup_by == "controller":
            w_n, w_s = len(self.warmups), float(sum(self.warmups))
        else:
            w_n, w_s = self.ready.get("warmups"), seconds_field(self.ready, "warmup_s", required=False)
        return Measurement(ready=self.ready, done=done, protocol=self.protocol, samples_s=self.samples,
                           starts_s=starts, t0_s=t0, batch_marks=self.marks, ops=self.ops,
                           stop_reason=self.reason() or "", batches=self.batches,
                           warmup_by=self.warmup_by, warmup_iterations=w_n, warmup_seconds=w_s,
                           warmup_stopped=self.warmup_stopped, extra=extra, profile_ops=profile_ops,
                           profiled={"error": lost} if lost else profiled, no_profile=no_profile, profile_lost=lost,
                           requests=list(self.requests) if self.llm is not None else None)


def _lost(e: Exception, during: str) -> str:
    """What happened to a runner that failed during its profiling pass, in words for the row's profile."""
    if isinstance(e, ChannelTimeoutError):
        return f"the runner did not answer during {during}"
    if isinstance(e, ChannelClosedError):
        return f"the runner ended during {during}"
    return f"the runner failed during {during}: {e}"


def _positive_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x >= 0


def op_problem(event: dict[str, Any]) -> str | None:
    """What is wrong with a profiling pass's `op` line (None: fine): name and type text, `s` seconds per iteration,
    `node` text when given."""
    if not _positive_number(event.get("s")):
        return f"'s' must be a non-negative number of seconds, got {json.dumps(event.get('s'))[:40]}"
    for key in ("name", "type"):
        if not isinstance(event.get(key), str):
            return f"'{key}' must be text, got {json.dumps(event.get(key))[:40]}"
    if event.get("node") is not None and not isinstance(event["node"], str):
        return f"'node' must be text or null, got {json.dumps(event['node'])[:40]}"
    if event.get("fused") is not None and not (isinstance(event["fused"], list)
                                                and all(isinstance(n, str) for n in event["fused"])):
        return "'fused' must be a list of model node names"
    return None


NODE_LINKS = ("exact", "best-effort", "none")  # as devicelab.opprof (measure imports no profile code)


def profiled_problem(event: dict[str, Any]) -> str | None:
    """What is wrong with a `profiled` line (None: fine)."""
    it = event.get("iterations")
    if it is not None and not (isinstance(it, int) and not isinstance(it, bool) and it >= 1):
        return f"'iterations' must be a positive integer, got {json.dumps(it)[:40]}"
    if event.get("node_link") is not None and event["node_link"] not in NODE_LINKS:
        return f"'node_link' must be one of {', '.join(NODE_LINKS)}, got {json.dumps(event['node_link'])[:40]}"
    for key in ("source", "unsupported", "error"):
        if event.get(key) is not None and not isinstance(event[key], str):
            return f"'{key}' must be text, got {json.dumps(event[key])[:40]}"
    if event.get("notes") is not None and not (isinstance(event["notes"], list)
                                                and all(isinstance(n, str) for n in event["notes"])):
        return "'notes' must be a list of text"
    if event.get("wall_s") is not None and not (_positive_number(event["wall_s"]) and event["wall_s"] > 0):
        return f"'wall_s' must be a positive number of seconds, got {json.dumps(event['wall_s'])[:40]}"
    return None


# Lockstep slices: short enough that the machine's drift (seconds to minutes on shared VMs) is the same for every
# runner of a slice cycle, long enough that a switch (the other process's caches) touches few iterations.
LOCKSTEP_SLICE_S = 0.1


# What a runner can do wrong while it is driven (a transport adds its own: the device going away).
RUNNER_FAULTS: tuple[type[Exception], ...] = (RunnerError, ChannelClosedError, ChannelTimeoutError)


def lockstep(drivers: Sequence[Driver], failed: Callable[[int, Exception], None],
             slice_s: float = LOCKSTEP_SLICE_S, faults: tuple[type[Exception], ...] = RUNNER_FAULTS) -> None:
    """Time several started runners (the labels of one A/B config, pinned to the same CPUs) in alternating slices
    of about `slice_s` each, the order reversed every cycle, until every one's stopping rule holds (one that is
    done keeps pace with the others until its caps, so all samples stay interleaved). A runner that raises one of
    `faults` is handed to `failed` (by its index) and dropped; the others go on."""
    live = list(range(len(drivers)))
    cycle = 0
    while live and any(drivers[i].reason() is None for i in live):
        stepping = [i for i in live if not drivers[i].capped()]
        if not stepping:
            break
        for i in stepping if cycle % 2 == 0 else reversed(stepping):
            d = drivers[i]
            try:
                d.step(max(1, math.ceil(slice_s / d.estimate)) if d.estimate else 1)
            except faults as e:
                live.remove(i)
                failed(i, e)
        cycle += 1


def now_deadline(seconds: float) -> float:
    return time.monotonic() + seconds
