"""Worst-case bounds: tool_loop's difflib work per comparison, and the history memo's bytes."""

from __future__ import annotations

import difflib
import json
from typing import Any, ClassVar

import pytest
from tool_bodies import body, scan

import detectors.tool_loop as tool_loop
from detectors.tool_loop import ToolLoopDetector
from guardrails.adapters import HistoryMemo, read_exchange
from guardrails.exchange import CallerContext


class CountingMatcher(difflib.SequenceMatcher):
    """Records the characters each comparison hands to difflib."""

    seen: ClassVar[list[int]] = []

    def __init__(self, isjunk: Any = None, a: str = "", b: str = "", autojunk: bool = True) -> None:
        type(self).seen.append(max(len(a), len(b)))
        super().__init__(isjunk, a, b, autojunk)


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    CountingMatcher.seen = []
    monkeypatch.setattr(tool_loop.difflib, "SequenceMatcher", CountingMatcher)
    return CountingMatcher.seen


def write_call(step: int) -> dict[str, str]:
    # An agent stuck rewriting the same ~2,000-character module, changing one constant per step.
    lines = [f"def handler_{k}(event, context):\n    return process(event, retries={k % 4}, name='h{k}')\n"
             for k in range(30)]
    lines[15] = f"TIMEOUT_SECONDS = {30 + step}\n"
    return {"path": "src/handlers.py", "content": "".join(lines)}


def test_near_repeats_of_long_arguments_hand_difflib_a_bounded_prefix(counting: list[int]) -> None:
    history = [("write_file", write_call(i), "ok") for i in range(3)]
    (finding,) = scan(ToolLoopDetector(), body("openai.chat", "write_file", write_call(3), history=history))
    assert finding.evidence["rule"] == "near_repeat"  # still found
    assert len(json.dumps(write_call(0))) > 2000
    assert counting and max(counting) <= tool_loop.DIFFLIB_CHARS


def test_long_arguments_that_differ_past_the_prefix_are_not_near_repeats(counting: list[int]) -> None:
    # The same long header, then a different document each time: progress, not a loop.
    def call(name: str) -> dict[str, str]:
        return {"path": "/srv/reports/quarterly/summary.md", "header": "# Quarterly summary\n" * 10,
                "body": " ".join(f"{name}-{k} value {k * 7}" for k in range(60))}
    history = [("write_file", call(name), "ok") for name in ("north", "south", "east")]
    assert scan(ToolLoopDetector(), body("openai.chat", "write_file", call("west"), history=history)) == []
    assert max(counting, default=0) <= tool_loop.DIFFLIB_CHARS


def chat_step(turns: int, size: int) -> dict[str, Any]:
    messages = [{"role": "system", "content": "You are a coding agent."}]
    for i in range(turns):
        messages.append({"role": "user", "content": f"step {i}: " + "x" * size})
        messages.append({"role": "assistant", "content": f"done {i}"})
    return {"messages": messages}


def test_history_memo_is_bounded_by_bytes() -> None:
    memo = HistoryMemo(max_bytes=8 * 2**20, max_entry_bytes=4 * 2**20)
    # 40 sessions each send a 1 MiB history: 40 MiB of bodies would stay under the old 256-entry bound.
    for session in range(40):
        request = chat_step(4, 2**18)
        read_exchange(request, None, context=CallerContext(session_id=f"s{session}"), memo=memo)
        assert memo.bytes <= memo.max_bytes
    assert 2 <= len(memo) < 10
    kept = sum(len(json.dumps(entry.items)) for entry in memo._entries.values())
    assert kept <= memo.max_bytes


def test_history_memo_skips_a_history_over_the_entry_cap() -> None:
    memo = HistoryMemo(max_bytes=8 * 2**20, max_entry_bytes=4 * 2**20)
    read_exchange(chat_step(4, 2**20), None, context=CallerContext(session_id="big"), memo=memo)
    assert len(memo) == 0 and memo.bytes == 0


def test_history_memo_still_reuses_an_active_session() -> None:
    memo, context = HistoryMemo(), CallerContext(session_id="agent")
    request = chat_step(3, 100)
    first = read_exchange(request, None, context=context, memo=memo)
    request["messages"].append({"role": "user", "content": "one more step"})
    second = read_exchange(request, None, context=context, memo=memo)
    assert [id(s) for s in second.segments[: len(first.segments)]] == [id(s) for s in first.segments]
    assert len(memo) == 1 and 0 < memo.bytes < 2**20
