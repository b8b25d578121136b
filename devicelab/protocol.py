"""The measurement protocol (design.md): settings, the stopping rule, and the controller side of the
runner protocol v1, independent of how the runner is reached (host pipe, adb shell, ...).

The controller owns the stopping rule; the runner only times. Everything here except `measure` is pure.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from devicelab.analysis import stats

RUNNER_PROTOCOL = 1


@dataclass(frozen=True)
class ProtocolSettings:
    """Defaults are design.md's measurement protocol; every field can be overridden in a suite."""

    warmup_iterations: int = 3
    warmup_seconds: float = 0.5
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
    # A/B labels of one config (same round, device, CPUs) alive together and timed in alternating ~0.1 s slices,
    # where the device can (the host): the machine's drift then falls on both sides alike.
    lockstep: bool = True

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_FIELDS = {f.name: f for f in dataclasses.fields(ProtocolSettings)}


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
        if not ok or value < 0 or (key in ("target_ci", "confidence") and not 0 < value < 1):
            kind = "a non-negative integer" if want_int else "a non-negative number"
            if key in ("target_ci", "confidence"):
                kind = "a number between 0 and 1"
            problems.append(f"{where}.{key}: {value!r} is not {kind}")
            continue
        values[key] = int(value) if want_int else float(value)
    result = dataclasses.replace(ProtocolSettings(), **values)
    if result.max_iterations < 1:
        problems.append(f"{where}.max_iterations: must be at least 1")
    if result.timeout_seconds <= 0:
        problems.append(f"{where}.timeout_seconds: must be above 0")
    return result


# --------------------------------------------------------------------------------------------------
# Stopping rule (pure)


def stop_reason(samples: Sequence[float], s: ProtocolSettings) -> str | None:
    """Why timing may stop now, or None to keep sampling.

    Both minimums come first (iterations and seconds); only then does the first of precision reached,
    iteration cap or time cap apply.
    """
    n, total = len(samples), float(sum(samples))
    if n < max(1, s.min_iterations) or total < s.min_seconds:
        return None
    if n >= s.max_iterations:
        return "max_iterations"
    if total >= s.max_seconds:
        return "max_seconds"
    half = stats.relative_ci_halfwidth(samples, s.confidence)
    if half is not None and half <= s.target_ci:
        return "ci"
    return None


def next_batch(samples: Sequence[float], s: ProtocolSettings, estimate_s: float) -> int:
    """How many iterations to ask for next: enough to reach both minimums, then ~10 % more at a time
    (so the rule is checked often without a round trip per iteration), never past a cap."""
    estimate_s = max(estimate_s, 1e-6)
    n, total = len(samples), float(sum(samples))
    if n < s.min_iterations or total < s.min_seconds:
        want = max(s.min_iterations - n, math.ceil((s.min_seconds - total) / estimate_s), 1)
    else:
        want = max(1, math.ceil(0.1 * n))
        want = min(want, max(1, s.max_iterations - n), max(1, math.ceil((s.max_seconds - total) / estimate_s)))
    return int(want)


# --------------------------------------------------------------------------------------------------
# Controller side of the runner protocol


class RunnerError(Exception):
    """The runner reported an error event or broke the protocol."""


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


class EventQueue:
    """Runner events handed from a reader thread to `receive` (None marks the end of the runner's output), so that
    a silent runner is timed out instead of blocking the controller forever."""

    def __init__(self) -> None:
        import queue

        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._empty = queue.Empty

    def put(self, event: dict[str, Any] | None) -> None:
        self._queue.put(event)

    def receive(self, deadline: float) -> dict[str, Any]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ChannelTimeoutError()
        try:
            event = self._queue.get(timeout=remaining)
        except self._empty:
            raise ChannelTimeoutError() from None
        if event is None:
            self._queue.put(None)  # stay closed for later calls
            raise ChannelClosedError("runner output ended")
        return event


@dataclass
class Measurement:
    ready: dict[str, Any]
    done: dict[str, Any]
    samples_s: list[float] = field(default_factory=list)
    ops: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str = ""
    batches: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def _expect(channel: Channel, deadline: float, want: str, ops: list[dict[str, Any]]) -> dict[str, Any]:
    while True:
        event = channel.receive(deadline)
        kind = event.get("event")
        if kind == "error":
            raise RunnerError(str(event.get("message", "runner error")))
        if kind == "op":
            ops.append(event)
            continue
        if kind == want:
            return event
        raise RunnerError(f"runner protocol: expected '{want}' event, got {event!r:.200}")


def run_batch(channel: Channel, n: int, deadline: float, ops: list[dict[str, Any]]) -> list[float]:
    """Ask for n iterations; their times."""
    channel.send({"cmd": "run", "iterations": n})
    got: list[float] = []
    while True:
        event = channel.receive(deadline)
        kind = event.get("event")
        if kind == "iter":
            got.append(float(event["s"]))
        elif kind == "batch":
            break
        elif kind == "op":
            ops.append(event)
        elif kind == "error":
            raise RunnerError(str(event.get("message", "runner error")))
        else:
            raise RunnerError(f"runner protocol: unexpected event {event!r:.200} during a batch")
    if len(got) != n:
        raise RunnerError(f"runner protocol: asked for {n} iterations, got {len(got)}")
    return got


# Called once timing has stopped, before "stop", with the channel and the timed samples: what a device measures
# with the runner still warm and loaded (e.g. an energy window); its answer is kept in Measurement.extra.
BeforeStop = Callable[[Channel, list[float]], dict[str, Any]]


class Driver:
    """One runner under the stopping rule, a batch at a time: `measure` drives one alone, `lockstep` several."""

    def __init__(self, channel: Channel, s: ProtocolSettings, deadline: float) -> None:
        self.channel, self.s, self.deadline = channel, s, deadline
        self.ops: list[dict[str, Any]] = []
        self.samples: list[float] = []
        self.batches = 0
        self.ready: dict[str, Any] = {}
        self.estimate = 0.01

    def start(self) -> None:
        """Wait for 'ready' (the runner has loaded and warmed up)."""
        self.ready = _expect(self.channel, self.deadline, "ready", self.ops)
        if self.ready.get("protocol") != RUNNER_PROTOCOL:
            raise RunnerError(f"runner speaks protocol {self.ready.get('protocol')!r}; devicelab speaks "
                              f"{RUNNER_PROTOCOL}")
        warmups = int(self.ready.get("warmups") or 0)
        self.estimate = (float(self.ready.get("warmup_s") or 0) / warmups) if warmups \
            else float(self.ready.get("first_s") or 0.01)

    def reason(self) -> str | None:
        return stop_reason(self.samples, self.s)

    def capped(self) -> bool:
        """At an iteration or time cap: no more batches, whatever the others need."""
        return len(self.samples) >= self.s.max_iterations or float(sum(self.samples)) >= self.s.max_seconds

    def step(self, most: int | None = None) -> None:
        n = next_batch(self.samples, self.s, self.estimate)
        got = run_batch(self.channel, min(n, most) if most else n, self.deadline, self.ops)
        self.samples.extend(got)
        self.batches += 1
        self.estimate = float(stats.median(got) or self.estimate)

    def time_alone(self) -> None:
        """Batches until the stopping rule holds (no other runner to keep pace with)."""
        while self.reason() is None:
            self.step()

    def finish(self, before_stop: BeforeStop | None = None) -> Measurement:
        extra = before_stop(self.channel, self.samples) if before_stop is not None else {}
        self.channel.send({"cmd": "stop"})
        done = _expect(self.channel, max(self.deadline, time.monotonic() + 60) if extra else self.deadline, "done",
                       self.ops)
        return Measurement(ready=self.ready, done=done, samples_s=self.samples, ops=self.ops,
                           stop_reason=self.reason() or "", batches=self.batches, extra=extra)


def measure(channel: Channel, s: ProtocolSettings, deadline: float, before_stop: BeforeStop | None = None
            ) -> Measurement:
    """Drive one runner from 'ready' to 'done' under the stopping rule."""
    d = Driver(channel, s, deadline)
    d.start()
    d.time_alone()
    return d.finish(before_stop)


# Lockstep slices: short enough that the machine's drift (seconds to minutes on shared VMs) is the same for every
# runner of a slice cycle, long enough that a switch (the other process's caches) touches few iterations.
LOCKSTEP_SLICE_S = 0.1


# What a runner can do wrong while it is driven (a device kind adds its own, e.g. the phone going away).
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
                d.step(max(1, math.ceil(slice_s / max(d.estimate, 1e-6))))
            except faults as e:
                live.remove(i)
                failed(i, e)
        cycle += 1


def lockstep_record(labels: Sequence[str], own: str) -> dict[str, Any]:
    """What a Result of a lockstep group records (protocol.lockstep_run)."""
    return {"with": [x for x in labels if x != own], "slice_s": LOCKSTEP_SLICE_S}


def now_deadline(seconds: float) -> float:
    return time.monotonic() + seconds
