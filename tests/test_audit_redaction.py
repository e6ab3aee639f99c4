"""Redacted audit content: which label a span gets when several findings cover it."""

from __future__ import annotations

from guardrails.adapters import read_exchange
from guardrails.audit.record import redact
from guardrails.exchange import Segment
from guardrails.findings import Category, Finding, Severity

KEY = "AKIAIOSFODNN7EXAMPLE"
ANSWER = f"Use {KEY} to deploy."
POINTER = "/response/choices/0/message/content"


def finding(category: Category, start: int | None, end: int | None) -> Finding:
    return Finding(category=category, detector=category.value, severity=Severity.HIGH, message="m",
                   pointer=POINTER, start=start, end=end)


def answer_segment() -> Segment:
    exchange = read_exchange({"messages": [{"role": "user", "content": "key?"}]},
                             {"choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER}}]})
    return next(s for s in exchange.segments if s.pointer == POINTER)


def test_a_span_two_findings_share_is_labelled_by_what_it_hides() -> None:
    segment = answer_segment()
    start = ANSWER.index(KEY)
    both = [finding(Category.CUSTOM, start, start + len(KEY)), finding(Category.SECRET, start, start + len(KEY))]
    assert redact(segment, both) == "Use [secret] to deploy."
    assert redact(segment, both[::-1]) == "Use [secret] to deploy."


def test_the_widest_span_starting_at_a_point_is_cut() -> None:
    segment = answer_segment()
    start = ANSWER.index(KEY)
    shorter = finding(Category.SECRET, start, start + 4)  # e.g. a rule that matched the prefix only
    wider = finding(Category.PII, start, start + len(KEY))
    assert redact(segment, [shorter, wider]) == "Use [pii] to deploy."
    assert KEY[4:] not in redact(segment, [shorter, wider])


def test_a_hit_across_object_argument_values_redacts_only_its_span() -> None:
    exchange = read_exchange(
        {"model": "claude", "max_tokens": 100, "messages": [{"role": "user", "content": "send it"}],
         "tools": [{"name": "send", "input_schema": {"type": "object"}}]},
        {"type": "message", "role": "assistant", "content": [
            {"type": "tool_use", "id": "t1", "name": "send", "input": {"to": "ops", "body": "deploy now"}}]})
    segment = next(s for s in exchange.segments if s.tool_call is not None)
    start = segment.text.index("ops")
    end = segment.text.index("deploy") + len("deploy")
    located = segment.locate(start, end)  # spans a value, a key and another value: the object, no offsets
    assert located.pointer == segment.pointer and located.start is None
    across = Finding(category=Category.CONTENT, detector="content", severity=Severity.HIGH, message="m",
                     pointer=located.pointer, span=(start, end))
    assert redact(segment, [across]) == segment.text[:start] + "[content]" + segment.text[end:]


def test_recognizer_spans_are_masked_beside_the_findings_and_clipped_to_the_text() -> None:
    segment = answer_segment()
    start = ANSWER.index(KEY)
    whole_key = finding(Category.CUSTOM, start, start + len(KEY))
    tail = len(ANSWER) - len("deploy.")
    found = [(start, start + len(KEY), "secret"), (tail, len(ANSWER) + 40, "pii"), (3, 3, "pii")]  # past the end, empty
    assert redact(segment, [whole_key], found) == "Use [secret] to [pii]"
    assert redact(segment, [], found[1:]) == f"Use {KEY} to [pii]"
