"""The engine: detectors run under the policy, failures become findings, history is cached."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import ClassVar

import pytest

from guardrails.adapters import HistoryMemo, read_exchange
from guardrails.detector import Detector, DetectorRegistry, ScanContext, Scope, SegmentDetector
from guardrails.engine import Engine
from guardrails.exchange import Exchange, Segment, SegmentKind
from guardrails.findings import Action, Category, Finding, Hit, Severity
from guardrails.pointer import resolve
from guardrails.policy import Policy, PolicyError, load_policy

REQUEST = {
    "model": "m",
    "messages": [{"role": "user", "content": "Weather in Paris?"}],
    "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
}


def response_calling(name: str) -> dict:
    return {"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": None,
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": name, "arguments": "{}"}}]}}]}


class Boom(Detector):
    name = "boom"
    category = Category.CUSTOM

    async def scan(self, exchange: Exchange, ctx: ScanContext) -> list[Finding]:
        raise RuntimeError("kaput")


class Slow(Detector):
    name = "slow"
    category = Category.CUSTOM
    io_bound = True

    async def scan(self, exchange: Exchange, ctx: ScanContext) -> list[Finding]:
        await asyncio.sleep(5)
        return []


class CountingWords(SegmentDetector):
    """Flags the word 'Paris' and counts how often it had to look at a segment."""

    name = "counting"
    category = Category.CONTENT
    default_scope = Scope(kinds=frozenset({SegmentKind.USER}))
    calls: ClassVar[list[str]] = []

    def analyze(self, segment: Segment) -> list[Hit]:
        type(self).calls.append(segment.text)
        at = segment.text.find("Paris")
        return [Hit("Paris mentioned", at, at + 5, Severity.MEDIUM)] if at >= 0 else []


def make_policy(tmp_path: Path, yaml_text: str) -> Policy:
    bundle = tmp_path / "p"
    bundle.mkdir(exist_ok=True)
    (bundle / "config.yml").write_text(yaml_text)
    return load_policy(bundle)


def registry() -> DetectorRegistry:
    reg = DetectorRegistry.from_entry_points()
    for cls in (Boom, Slow, CountingWords):
        reg.register(cls)
    return reg


def test_undeclared_tool_blocks_and_points_at_the_name(tmp_path: Path) -> None:
    policy = make_policy(tmp_path, "detectors:\n  tool_undeclared: {}\n")
    body = {"request": REQUEST, "response": response_calling("delete_files")}
    result = asyncio.run(Engine(policy, registry()).run(read_exchange(body["request"], body["response"])))
    assert result.verdict is Action.BLOCK
    [finding] = result.findings
    assert finding.category is Category.TOOL_UNDECLARED
    assert resolve(body, finding.pointer)[finding.start:finding.end] == "delete_files"


def test_declared_tool_is_allowed(tmp_path: Path) -> None:
    policy = make_policy(tmp_path, "detectors:\n  tool_undeclared: {}\n")
    result = asyncio.run(Engine(policy, registry()).run(read_exchange(REQUEST, response_calling("get_weather"))))
    assert result.verdict is Action.ALLOW
    assert result.findings == []


def test_policy_action_overrides_severity_default(tmp_path: Path) -> None:
    policy = make_policy(tmp_path, "detectors:\n  tool_undeclared: {action: warn}\n")
    result = asyncio.run(Engine(policy, registry()).run(read_exchange(REQUEST, response_calling("rm"))))
    assert result.verdict is Action.WARN


def test_failing_detector_becomes_a_detector_error_finding(tmp_path: Path) -> None:
    policy = make_policy(tmp_path, "on_detector_error: block\ndetectors:\n  boom: {}\n  tool_undeclared: {}\n")
    result = asyncio.run(Engine(policy, registry()).run(read_exchange(REQUEST, response_calling("get_weather"))))
    [error] = result.findings
    assert error.category is Category.DETECTOR_ERROR
    assert "kaput" in error.message
    assert error.action is Action.BLOCK
    assert result.verdict is Action.BLOCK


def test_io_bound_detector_times_out_into_a_finding(tmp_path: Path) -> None:
    policy = make_policy(tmp_path, "detectors:\n  slow: {timeout_ms: 50}\n")
    result = asyncio.run(Engine(policy, registry()).run(read_exchange(REQUEST, None)))
    [error] = result.findings
    assert error.category is Category.DETECTOR_ERROR and "timed out" in error.message
    assert error.action is Action.WARN  # the default on_detector_error


def test_history_is_analyzed_once_per_content(tmp_path: Path) -> None:
    policy = make_policy(tmp_path, "detectors:\n  counting: {}\n")
    engine = Engine(policy, registry())
    CountingWords.calls.clear()
    history = [{"role": "user", "content": f"turn {i} about Paris"} for i in range(10)]
    first = asyncio.run(engine.run(read_exchange({"messages": history}, None)))
    assert len(first.findings) == 10
    assert len(CountingWords.calls) == 10
    history.append({"role": "user", "content": "and Rome?"})
    second = asyncio.run(engine.run(read_exchange({"messages": history}, None)))
    assert len(second.findings) == 10
    assert CountingWords.calls[10:] == ["and Rome?"]  # only the new turn was analyzed
    body = {"request": {"messages": history}}
    for f in second.findings:
        assert resolve(body, f.pointer)[f.start:f.end] == "Paris"


def test_scope_from_policy_overrides_default(tmp_path: Path) -> None:
    policy = make_policy(tmp_path, "detectors:\n  counting:\n    applies_to: {kinds: [system]}\n")
    messages = [{"role": "system", "content": "Paris office"}, {"role": "user", "content": "Paris?"}]
    result = asyncio.run(Engine(policy, registry()).run(read_exchange({"messages": messages}, None)))
    assert [f.pointer for f in result.findings] == ["/request/messages/0/content"]


def test_unknown_detector_in_policy_is_a_policy_error(tmp_path: Path) -> None:
    policy = make_policy(tmp_path, "detectors:\n  no_such_detector: {}\n")
    with pytest.raises(PolicyError, match="no_such_detector"):
        Engine(policy, registry())


def test_detectors_are_discovered_through_entry_points() -> None:
    assert "tool_undeclared" in DetectorRegistry.from_entry_points()


class FailsOnRome(CountingWords):
    """Raises on one text; flags 'Paris' like CountingWords."""

    name = "fails_on_rome"
    calls: ClassVar[list[str]] = []

    def analyze(self, segment: Segment) -> list[Hit]:
        if "Rome" in segment.text:
            type(self).calls.append(segment.text)
            raise ValueError("no Rome today")
        return super().analyze(segment)


def test_unchanged_history_reuses_its_placed_findings(tmp_path: Path) -> None:
    policy = make_policy(tmp_path, "detectors:\n  counting: {}\n")
    engine, memo = Engine(policy, registry()), HistoryMemo()
    history = [{"role": "user", "content": f"turn {i} about Paris"} for i in range(3)]
    first = asyncio.run(engine.run(read_exchange({"messages": history}, None, memo=memo)))
    history.append({"role": "user", "content": "Paris again, new turn"})
    second = asyncio.run(engine.run(read_exchange({"messages": history}, None, memo=memo)))
    # The three unchanged turns hand back the very findings of the first check; the new turn gets its own.
    assert [id(f) for f in second.findings[:3]] == [id(f) for f in first.findings]
    assert [f.pointer for f in second.findings] == [f"/request/messages/{i}/content" for i in range(4)]
    # An edited earlier turn is a new segment: its finding is placed again, in the edited text.
    history[1] = {"role": "user", "content": "edited: Paris"}
    third = asyncio.run(engine.run(read_exchange({"messages": history}, None, memo=memo)))
    body = {"request": {"messages": history}}
    assert third.findings[1] is not second.findings[1]
    assert all(resolve(body, f.pointer)[f.start:f.end] == "Paris" for f in third.findings)
    assert third.findings[1].start == len("edited: ")


def test_segment_detector_failure_is_reported_and_retried(tmp_path: Path) -> None:
    reg = registry()
    reg.register(FailsOnRome)
    policy = make_policy(tmp_path, "detectors:\n  fails_on_rome: {}\n  counting: {}\n")
    engine, memo = Engine(policy, reg), HistoryMemo()
    messages = [{"role": "user", "content": "Paris first"}, {"role": "user", "content": "then Rome"}]
    FailsOnRome.calls.clear()
    for _ in range(2):
        result = asyncio.run(engine.run(read_exchange({"messages": messages}, None, memo=memo)))
        by_detector = {f.detector: f for f in result.findings}
        assert by_detector["fails_on_rome"].category is Category.DETECTOR_ERROR
        assert "no Rome today" in by_detector["fails_on_rome"].message
        assert by_detector["counting"].pointer == "/request/messages/0/content"  # the others still ran
    assert FailsOnRome.calls.count("then Rome") == 2  # a failure is not remembered as "no hits"


class Busy(Detector):
    """A CPU-bound detector (no `io_bound`) that finds something and takes longer than its timeout."""

    name = "busy"
    category = Category.CUSTOM

    async def scan(self, exchange: Exchange, ctx: ScanContext) -> list[Finding]:
        time.sleep(0.03)  # blocks, as computing does: nothing can cancel it
        return [Finding(category=self.category, detector=self.name, severity=Severity.LOW, message="found",
                        pointer="/request/messages/0/content")]


class BusyWords(CountingWords):
    name = "busy_words"

    def analyze(self, segment: Segment) -> list[Hit]:
        time.sleep(0.03)
        return super().analyze(segment)


class LockWaiter(Busy):
    """Waits on a lock another thread holds (as a detector does on a state store's SQLite lock), not the CPU."""

    name = "lock_waiter"

    async def scan(self, exchange: Exchange, ctx: ScanContext) -> list[Finding]:
        lock = threading.Lock()
        lock.acquire()
        threading.Timer(0.03, lock.release).start()
        with lock:
            pass
        return [Finding(category=self.category, detector=self.name, severity=Severity.LOW, message="found",
                        pointer="/request/messages/0/content")]


@pytest.mark.parametrize("name", ["busy", "busy_words", "lock_waiter"])
def test_inline_detector_past_its_timeout_keeps_its_findings_and_reports_the_overrun(
        tmp_path: Path, name: str) -> None:
    reg = registry()
    reg.register(Busy)
    reg.register(BusyWords)
    reg.register(LockWaiter)
    policy = make_policy(tmp_path, f"on_detector_error: block\ndetectors:\n  {name}: {{timeout_ms: 1}}\n")
    result = asyncio.run(Engine(policy, reg).run(read_exchange(REQUEST, None)))
    [found, overrun] = result.findings
    assert found.category is not Category.DETECTOR_ERROR and found.detector == name
    assert overrun.category is Category.DETECTOR_ERROR and overrun.detector == name
    assert overrun.evidence["error_type"] == "Overrun" and overrun.evidence["timeout_ms"] == 1
    assert overrun.evidence["elapsed_ms"] >= 30 and "over its timeout of 1 ms" in overrun.message
    # True whether the time went to computing or to waiting on a lock: no cause claimed.
    assert overrun.message.endswith("(it ran inline, so it finished; its findings are kept)")
    assert "CPU" not in overrun.message
    assert result.verdict is Action.BLOCK  # on_detector_error decides, as for a failure
    relaxed = make_policy(tmp_path, f"detectors:\n  {name}: {{timeout_ms: 60000}}\n")
    assert [f.category for f in asyncio.run(Engine(relaxed, reg).run(read_exchange(REQUEST, None))).findings] \
        == [found.category]


class SlowWords(CountingWords):
    """Takes 30 ms of the engine's clock per new text, as a detector does on long or hostile text."""

    name = "slow_words"
    calls: ClassVar[list[str]] = []
    clock: ClassVar[list[float]] = [0.0]

    def analyze(self, segment: Segment) -> list[Hit]:
        type(self).clock[0] += 0.03
        return super().analyze(segment)


def test_segment_detector_past_its_timeout_reads_no_more_new_text_and_says_where_it_stopped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A per-check limit: a check of many segments costs the timeout, not segments x time per segment. What was
    not read is never passed as clean: the finding points at the first skipped segment, and the next check reads
    the skipped texts (they were not remembered as judged)."""
    import guardrails.engine as engine_module

    class FakeTime:
        @staticmethod
        def perf_counter() -> float:
            return SlowWords.clock[0]

    monkeypatch.setattr(engine_module, "time", FakeTime)
    reg = registry()
    reg.register(SlowWords)
    policy = make_policy(tmp_path, "on_detector_error: block\ndetectors:\n  slow_words: {timeout_ms: 50}\n")
    engine = Engine(policy, reg)
    texts = [f"message {n} about Paris" for n in range(6)]
    request = {"model": "m", "messages": [{"role": "user", "content": t} for t in texts]}
    result = asyncio.run(engine.run(read_exchange(request, None)))
    assert SlowWords.calls == texts[:2]  # 60 ms spent after two: past 50 ms, no third call
    *found, overrun = result.findings
    assert [f.pointer for f in found] == ["/request/messages/0/content", "/request/messages/1/content"]
    assert overrun.category is Category.DETECTOR_ERROR and overrun.evidence["segments_not_analyzed"] == 4
    assert overrun.pointer == "/request/messages/2/content"
    assert "4 segments from here on not analyzed" in overrun.message
    assert result.verdict is Action.BLOCK

    SlowWords.calls.clear()
    again = asyncio.run(engine.run(read_exchange(request, None)))
    assert SlowWords.calls == texts[2:4]  # the two read before come from the cache; the skipped ones are read now
    assert [f.pointer for f in again.findings[:4]] == [f"/request/messages/{n}/content" for n in range(4)]
    assert again.findings[-1].evidence["segments_not_analyzed"] == 2

    relaxed = Engine(make_policy(tmp_path, "detectors:\n  slow_words: {timeout_ms: 60000}\n"), reg)
    SlowWords.calls.clear()
    assert len(asyncio.run(relaxed.run(read_exchange(request, None))).findings) == 6


def test_normalize_timing_leaves_out_building_the_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A policy's first check builds its engine (Presidio...: seconds); `timings_ms.normalize` is the reading."""
    import guardrails.service as service_module
    from guardrails.policy import PolicyStore
    from guardrails.service import CheckService

    make_policy(tmp_path, "detectors:\n  tool_undeclared: {}\n")
    service = CheckService(PolicyStore(tmp_path), registry(), default_policy="p")
    clock = [0.0]

    class FakeTime:
        @staticmethod
        def perf_counter() -> float:
            clock[0] += 0.001
            return clock[0]

        time = staticmethod(time.time)

    build = service.engine_for

    def slow_build(policy: object) -> Engine:
        clock[0] += 10.0  # what building the detectors costs, as the clock sees it
        return build(policy)  # type: ignore[arg-type]

    monkeypatch.setattr(service_module, "time", FakeTime)
    monkeypatch.setattr(service, "engine_for", slow_build)
    timings = asyncio.run(service.check({"request": REQUEST}))["timings_ms"]
    assert timings["normalize"] < 1000 < timings["total"]
