"""OpenAI Chat `tool` messages name their tool through the call they answer (`name` is optional)."""

from __future__ import annotations

from guardrails.adapters import HistoryMemo, read_exchange
from guardrails.exchange import SegmentKind


def history(turns: int) -> list[dict]:
    messages: list[dict] = [{"role": "user", "content": "What are the rates?"}]
    for i in range(turns):
        name = "lookup_rates" if i % 2 == 0 else "convert"
        messages.append({"role": "assistant", "content": None, "tool_calls": [
            {"id": f"call_{i}", "type": "function", "function": {"name": name, "arguments": "{}"}}]})
        messages.append({"role": "tool", "tool_call_id": f"call_{i}", "content": f"result {i}"})
    return messages


def tool_results(messages: list[dict], memo: HistoryMemo | None = None) -> list[tuple[str | None, str | None]]:
    exchange = read_exchange({"model": "m", "messages": messages}, None, memo=memo)
    return [(s.tool_call_id, s.tool_name) for s in exchange.segments if s.kind is SegmentKind.TOOL_RESULT]


def test_a_tool_result_without_name_is_named_after_its_call() -> None:
    assert tool_results(history(3)) == [("call_0", "lookup_rates"), ("call_1", "convert"), ("call_2", "lookup_rates")]


def test_an_explicit_name_is_kept_and_an_unknown_id_stays_unnamed() -> None:
    messages = history(1)
    messages.append({"role": "tool", "tool_call_id": "call_0", "name": "legacy_name", "content": "x"})
    messages.append({"role": "tool", "tool_call_id": "call_nowhere", "content": "y"})
    assert tool_results(messages) == [("call_0", "lookup_rates"), ("call_0", "legacy_name"), ("call_nowhere", None)]


def test_names_hold_when_the_history_comes_from_the_memo() -> None:
    memo = HistoryMemo()
    tool_results(history(2), memo)  # step N: its history is memoized
    assert tool_results(history(3), memo) == [("call_0", "lookup_rates"), ("call_1", "convert"),
                                              ("call_2", "lookup_rates")]
