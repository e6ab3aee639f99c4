"""Redacted audit content: which label a span gets when several findings cover it."""

from __future__ import annotations

from guardrails.adapters import read_exchange
from guardrails.audit.record import redact
from guardrails.findings import Category, Finding, Severity

KEY = "AKIAIOSFODNN7EXAMPLE"
ANSWER = f"Use {KEY} to deploy."
POINTER = "/response/choices/0/message/content"


def finding(category: Category, start: int | None, end: int | None) -> Finding:
    return Finding(category=category, detector=category.value, severity=Severity.HIGH, message="m",
                   pointer=POINTER, start=start, end=end)


def answer_segment():  # type: ignore[no-untyped-def]
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
