"""The stopping rule as specs, and the controller's protocol driver against a scripted runner."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import pytest

from devicelab.measure import (ChannelClosedError, Driver, Measurement, ProtocolSettings, RunnerError, lockstep,
                                next_batch, settings_from_dict, stop_reason, warmup_stop)

S = ProtocolSettings()


def measure(channel: Any, s: ProtocolSettings, deadline: float) -> Measurement:
    """One runner from 'ready' to 'done' under the stopping rule, as the session drives a runner alone."""
    d = Driver(channel, s, deadline, controller_warmup=True)
    d.start()
    d.time_alone()
    return d.finish()


def test_minimums_come_first() -> None:
    assert stop_reason([0.01] * 9, S) is None  # 9 < 10 iterations, even though the CI is perfect
    assert stop_reason([0.05] * 19, S) is None  # 0.95 s < 1 s
    assert stop_reason([0.05] * 20, S) == "ci"  # both minimums met, zero spread


def test_caps_apply_only_after_the_minimums() -> None:
    noisy = [0.001 * (1 + (i % 7) * 0.2) for i in range(199)]
    assert stop_reason(noisy, S) is None  # 0.2 s < 1 s: the 200 cap is not yet reachable
    many = [0.006 * (1 + (i % 7) * 0.2) for i in range(400)]
    assert stop_reason(many, S) == "max_iterations"
    slow = [1.1 * (1 + (i % 2) * 0.5) for i in range(10)]
    assert stop_reason(slow, S) == "max_seconds"


def test_ci_rule_needs_precision() -> None:
    rng = __import__("numpy").random.default_rng(0)
    wide = list(0.01 * rng.lognormal(0, 0.3, 150))
    assert stop_reason(wide, S) is None
    tight = list(0.01 * rng.lognormal(0, 0.005, 150))
    assert stop_reason(tight, S) == "ci"


def test_next_batch_reaches_both_minimums_then_grows_by_a_tenth() -> None:
    assert next_batch([], S, estimate_s=0.01) == 100  # 1 s / 10 ms
    assert next_batch([], S, estimate_s=0.5) == 10  # 10 iterations dominate
    assert next_batch([0.01] * 100, S, 0.01) == 10
    assert next_batch([0.01] * 195, S, 0.01) == 5  # never past max_iterations
    assert next_batch([0.9] * 10, S, 0.9) == 1  # never far past max_seconds


def test_settings_validation_lists_every_problem() -> None:
    problems: list[str] = []
    settings_from_dict({"min_iterations": "ten", "target_ci": 2, "warmup_sec": 1}, "protocol", problems)
    assert len(problems) == 3
    assert any("protocol.warmup_sec: unknown key" in p for p in problems)
    assert any("protocol.min_iterations" in p for p in problems)
    ok: list[str] = []
    s = settings_from_dict({"min_iterations": 3, "max_seconds": 2.5}, "protocol", ok)
    assert not ok and s.min_iterations == 3 and s.max_seconds == 2.5


class ScriptedRunner:
    """Plays the runner side of protocol v1 in memory: every iteration takes `seconds`."""

    def __init__(self, seconds: float = 0.01, fail_after: int | None = None, protocol: int = 1) -> None:
        self.seconds, self.fail_after, self.protocol = seconds, fail_after, protocol
        self.queue: list[dict[str, Any]] = [{"event": "ready", "protocol": protocol, "load_s": 0.1,
                                             "first_s": 0.02, "warmups": 50, "warmup_s": 0.5}]
        self.asked: list[int] = []
        self.total = 0

    def send(self, message: dict[str, Any]) -> None:
        if message["cmd"] == "run":
            n = message["iterations"]
            self.asked.append(n)
            for _ in range(n):
                self.total += 1
                if self.fail_after is not None and self.total > self.fail_after:
                    self.queue.append({"event": "error", "message": "engine exploded"})
                    return
                self.queue.append({"event": "iter", "s": self.seconds})
            self.queue.append({"event": "batch"})
        elif message["cmd"] == "stop":
            self.queue.append({"event": "done", "peak_rss_bytes": 123})

    def receive(self, deadline: float) -> dict[str, Any]:
        if not self.queue:
            raise ChannelClosedError("no more output")
        return self.queue.pop(0)


def test_measure_drives_the_runner_to_the_stopping_rule() -> None:
    runner = ScriptedRunner(seconds=0.01)
    m = measure(runner, S, time.monotonic() + 10)
    assert m.stop_reason == "ci" and len(m.samples_s) == 100 == sum(runner.asked)
    assert m.done["peak_rss_bytes"] == 123 and m.ready["load_s"] == 0.1


def test_measure_reports_runner_errors_and_protocol_mismatch() -> None:
    with pytest.raises(RunnerError, match="engine exploded"):
        measure(ScriptedRunner(fail_after=30), S, time.monotonic() + 10)
    with pytest.raises(RunnerError, match="protocol 4"):  # 3 is the LLM version (tests/test_llm.py)
        measure(ScriptedRunner(protocol=4), S, time.monotonic() + 10)


class LoggedRunner(ScriptedRunner):
    """A ScriptedRunner that writes its name to a shared log per batch asked; `jitter` alternates its iteration
    times by ±jitter, so the CI rule is never met and only the caps stop it."""

    def __init__(self, name: str, log: list[str], jitter: float = 0.0, **kw: Any) -> None:
        super().__init__(**kw)
        self.name, self.log, self.jitter = name, log, jitter

    def send(self, message: dict[str, Any]) -> None:
        if message["cmd"] == "run":
            self.log.append(self.name)
        before = len(self.queue)
        super().send(message)
        if self.jitter:
            for k, event in enumerate(self.queue[before:], start=before):
                if event.get("event") == "iter":
                    self.queue[k] = {"event": "iter", "s": self.seconds + (self.jitter if k % 2 else -self.jitter)}


def test_lockstep_alternates_slices_until_every_runner_may_stop() -> None:
    log: list[str] = []
    noisy, steady, broken = (LoggedRunner("a", log, jitter=0.005), LoggedRunner("b", log),
                             LoggedRunner("c", log, fail_after=30))
    drivers = [Driver(r, S, time.monotonic() + 10) for r in (noisy, steady, broken)]
    for d in drivers:
        d.start()
    failed: list[tuple[int, Exception]] = []
    lockstep(drivers, lambda i, e: failed.append((i, e)), slice_s=0.1)
    # slices of ~0.1 s (10 iterations of 10 ms), the order reversed every cycle; c drops out when it fails
    assert log[:6] == ["a", "b", "c", "c", "b", "a"] and noisy.asked[:3] == [10, 10, 10]
    assert [i for i, _ in failed] == [2] and "engine exploded" in str(failed[0][1])
    assert log.count("c") == 4  # 10 + 10 + 10, then the batch it failed in
    # a never meets the CI rule, so it runs to max_iterations; b, done at 100 alone, keeps pace with it
    a, b = drivers[0], drivers[1]
    assert len(a.samples) == S.max_iterations and a.reason() == "max_iterations"
    assert len(b.samples) == S.max_iterations
    assert len(measure(ScriptedRunner(), S, time.monotonic() + 10).samples_s) == 100  # alone it stops at 100
    assert b.finish().done["peak_rss_bytes"] == 123


class V2Runner(ScriptedRunner):
    """Runner protocol v2: leaves warmup to the controller (warmups 0) and stamps each iteration with `t`."""

    def __init__(self, seconds: float = 0.01, **kw: Any) -> None:
        super().__init__(seconds=seconds, protocol=2, **kw)
        self.queue[0] = {"event": "ready", "protocol": 2, "load_s": 0.1, "first_s": 0.02, "warmups": 0}
        self.clock = 100.0
        self.warmup_asked: list[int] = []

    def send(self, message: dict[str, Any]) -> None:
        if message["cmd"] == "warmup":
            self.warmup_asked.append(message["iterations"])
        if message["cmd"] in ("run", "warmup"):
            for _ in range(message["iterations"]):
                self.queue.append({"event": "iter", "s": self.seconds, "t": self.clock})
                self.clock += self.seconds
            self.queue.append({"event": "batch"})
        elif message["cmd"] == "stop":
            self.queue.append({"event": "done", "peak_rss_bytes": 123})


def test_v2_warmup_is_driven_by_the_controller_until_timing_is_steady() -> None:
    runner = V2Runner(seconds=0.01)
    d = Driver(runner, S, time.monotonic() + 10, controller_warmup=True)
    d.start()
    # first batch from first_s (0.02 s): two 3-iteration windows (0.05 s / 0.02 s -> 3); 6 x 0.01 s is under the
    # 0.1 s minimum, so one more window at the measured 0.01 s (5 iterations); then the last two windows agree
    assert runner.warmup_asked == [6, 5] and d.warmup_by == "controller"
    d.time_alone()
    m = d.finish()
    assert (m.warmup_by, m.warmup_iterations, round(m.warmup_seconds or 0, 6)) == ("controller", 11, 0.11)
    assert m.warmup_stopped == "steady"
    assert m.protocol == 2 and m.starts_s is not None and len(m.starts_s) == len(m.samples_s)
    assert m.starts_s[0] == 0.0 and m.starts_s[1] == pytest.approx(0.01)  # relative to the first timed iteration


def test_warmup_rule_minimums_first_then_steady_windows() -> None:
    flat = [0.01] * 11
    assert warmup_stop(flat[:2], S) is None  # under 3 iterations
    assert warmup_stop([0.001] * 20, S) is None  # steady, but 0.02 s is under warmup_min_seconds
    assert warmup_stop(flat, S) == "steady"
    # still getting faster by 1 % an iteration: the last 5-iteration window is ~5 % faster than the one before
    decaying = [0.01 * 0.99 ** i for i in range(11)]
    assert warmup_stop(decaying, S) is None
    # the windows may differ by up to warmup_steady (2 %), no more
    assert warmup_stop([0.0102] * 5 + [0.01] * 5, S) == "steady"
    assert warmup_stop([0.0103] * 5 + [0.01] * 5, S) is None


def test_warmup_rule_caps_and_floor() -> None:
    # never steady (alternating 10 % apart windows): the 0.5 s cap ends it
    zigzag = [0.01 if (i // 5) % 2 else 0.011 for i in range(48)]
    assert warmup_stop(zigzag[:40], S) is None and warmup_stop(zigzag, S) == "cap"
    # a model slower than 0.2 s: its 3 minimum iterations, no more
    assert warmup_stop([0.3, 0.3], S) is None and warmup_stop([0.3, 0.3, 0.3], S) == "slow model"
    assert warmup_stop([0.25] * 3, dataclasses.replace(S, warmup_seconds=5.0)) == "slow model"
    # phones: steady after 0.11 s, but the floor keeps it going to warmup_seconds
    assert warmup_stop([0.01] * 11, S, floor_s=0.5) is None
    assert warmup_stop([0.01] * 50, S, floor_s=0.5) == "cap"


def test_a_phone_is_warmed_up_to_its_floor() -> None:
    runner = V2Runner(seconds=0.01)
    d = Driver(runner, S, time.monotonic() + 10, controller_warmup=True, warmup_floor_s=0.5)
    d.start()
    assert round(sum(d.warmups), 6) == 0.5 and d.warmup_stopped == "cap"


def test_a_v1_runner_is_never_sent_a_warmup_command() -> None:
    runner = ScriptedRunner()
    d = Driver(runner, S, time.monotonic() + 10, controller_warmup=True)
    d.start()
    d.time_alone()
    m = d.finish()
    assert m.warmup_by == "runner" and m.warmup_iterations == 50 and m.warmup_seconds == 0.5
    assert m.starts_s is None  # v1 sends no t


@pytest.mark.parametrize("line, says", [
    ({"event": "iter"}, "'s' must be a positive number"),
    ({"event": "iter", "s": "fast"}, "'s' must be a positive number"),
    ({"event": "iter", "s": 0}, "'s' must be a positive number"),
    ({"event": "iter", "s": 0.01, "t": "now"}, "'t' must be a non-negative number"),
    ({"event": "tick"}, "unexpected line"),
])
def test_a_malformed_line_is_a_runner_error_naming_it(line: dict[str, Any], says: str) -> None:
    runner = ScriptedRunner()
    runner.send = lambda message: runner.queue.extend([line, {"event": "batch"}])  # type: ignore[method-assign]
    d = Driver(runner, S, time.monotonic() + 10)
    d.start()
    with pytest.raises(RunnerError, match=says) as e:
        d.step()
    assert str(line["event"]) in str(e.value)


@pytest.mark.parametrize("ready, says", [
    ({"event": "ready", "protocol": 1, "first_s": 0.01, "warmups": 3}, "'load_s'"),
    ({"event": "ready", "protocol": 1, "load_s": 0.1, "warmups": 3}, "'first_s'"),
    ({"event": "ready", "protocol": 1, "load_s": 0.1, "first_s": 0.01}, "'warmups'"),
    ({"event": "ready", "protocol": 1, "load_s": 0.1, "first_s": 0.01, "warmups": -1}, "'warmups'"),
])
def test_the_ready_line_needs_its_required_fields(ready: dict[str, Any], says: str) -> None:
    runner = ScriptedRunner()
    runner.queue[0] = ready
    with pytest.raises(RunnerError, match=says):
        Driver(runner, S, time.monotonic() + 10).start()


def test_lockstep_reaches_the_minimums_before_any_cap() -> None:
    """At 3 ms an iteration, 200 iterations take 0.6 s: below min_seconds. Alone a runner goes on to 1 s; in lockstep
    it must too (the cap counts only once both minimums hold), whatever the other runner does."""
    alone = measure(ScriptedRunner(seconds=0.003), S, time.monotonic() + 10)
    assert sum(alone.samples_s) >= S.min_seconds and alone.stop_reason == "max_iterations"
    log: list[str] = []
    drivers = [Driver(LoggedRunner(x, log, seconds=0.003, jitter=0.001), S, time.monotonic() + 10) for x in "ab"]
    for d in drivers:
        d.start()
    lockstep(drivers, lambda i, e: None)
    for d in drivers:
        m = d.finish()
        assert sum(m.samples_s) >= S.min_seconds, (len(m.samples_s), sum(m.samples_s))
        assert m.stop_reason == "max_iterations" and len(m.samples_s) >= len(alone.samples_s)


class BatchFile:
    """What a batch-mode runner left in its results file: every event line, written without any command."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.queue, self.sent = list(events), []  # type: list[dict[str, Any]], list[dict[str, Any]]

    def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)
        raise ChannelClosedError("batch mode: the runner reads no commands")

    def receive(self, deadline: float) -> dict[str, Any]:
        if not self.queue:
            raise ChannelClosedError("no more output")
        return self.queue.pop(0)


def test_batch_mode_reads_one_fixed_batch_and_sends_nothing() -> None:
    from devicelab.measure import batch_iterations

    n = batch_iterations(S)
    assert n == S.max_iterations
    ready = {"event": "ready", "protocol": 2, "load_s": 0.1, "first_s": 0.02, "warmups": 0}
    lines = [ready, *({"event": "iter", "s": 0.01 + k * 1e-4} for k in range(n)), {"event": "batch"},
             {"event": "done", "peak_rss_bytes": 9}]
    runner = BatchFile(lines)
    d = Driver(runner, S, time.monotonic() + 10, controller_warmup=True, batch=n)
    d.start()  # a v2 runner that left warmup to the controller is not warmed up: nothing can be sent to it
    d.time_alone()
    m = d.finish(lambda run_more, samples: {"energy": run_more(5)})  # no window: it would need commands
    assert runner.sent == [] and m.stop_reason == "batch" and m.batches == 1 and len(m.samples_s) == n
    assert m.done["peak_rss_bytes"] == 9 and m.extra == {} and m.warmup_by == "runner"
    short = BatchFile([ready, *({"event": "iter", "s": 0.01} for _ in range(3)), {"event": "batch"}])
    d = Driver(short, S, time.monotonic() + 10, batch=n)
    d.start()
    with pytest.raises(RunnerError, match=f"asked for {n} iterations, got 3"):
        d.time_alone()
