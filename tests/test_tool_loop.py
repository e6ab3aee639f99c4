"""tool_loop: repeated calls and short cycles across the history plus the response."""

from __future__ import annotations

import pytest
from tool_bodies import FORMATS, body, located, scan

from detectors.tool_loop import ToolLoopDetector
from guardrails.findings import Severity


@pytest.mark.parametrize("fmt", FORMATS)
def test_third_identical_call_is_a_loop(fmt: str) -> None:
    history = [("search", {"q": "flights to Rome", "page": 1}, "no results")] * 2
    check = body(fmt, "search", {"page": 1, "q": "flights to Rome"}, history=history)  # key order differs
    (finding,) = scan(ToolLoopDetector(), check)
    assert finding.evidence["rule"] == "repeat" and finding.evidence["occurrences"] == 3
    assert located(check, finding) == "search" and finding.severity is Severity.MEDIUM
    assert len(finding.evidence["previous"]) == 2


def test_two_identical_calls_are_not_yet_a_loop() -> None:
    check = body("openai.chat", "search", {"q": "rome"}, history=[("search", {"q": "rome"}, "none")])
    assert scan(ToolLoopDetector(), check) == []


def test_many_repeats_escalate_to_high() -> None:
    check = body("openai.chat", "search", {"q": "rome"}, history=[("search", {"q": "rome"}, "none")] * 5)
    (finding,) = scan(ToolLoopDetector(), check)
    assert finding.severity is Severity.HIGH


def test_nearly_identical_arguments() -> None:
    history = [("search", {"q": f"cheap flights from Paris to Rome in May 202{i}"}, "none") for i in range(3)]
    check = body("openai.chat", "search", {"q": "cheap flights from Paris to Rome in May 2029"}, history=history)
    (finding,) = scan(ToolLoopDetector(), check)
    assert finding.evidence["rule"] == "near_repeat"


def test_different_arguments_are_progress() -> None:
    history = [("read_page", {"url": f"https://docs.example/{name}"}, "...") for name in ("intro", "api", "faq")]
    check = body("openai.chat", "read_page", {"url": "https://docs.example/changelog"}, history=history)
    assert scan(ToolLoopDetector(), check) == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_short_cycle(fmt: str) -> None:
    a, b = ("open_door", {"id": "d1"}, "ok"), ("close_door", {"id": "d1"}, "ok")
    check = body(fmt, "close_door", {"id": "d1"}, history=[a, b, a, b, a])
    findings = scan(ToolLoopDetector({"max_repeats": 10, "max_near_repeats": 10}), check)
    (finding,) = findings
    assert finding.evidence["rule"] == "cycle" and "open_door" in finding.message


def test_thresholds_come_from_settings() -> None:
    check = body("openai.chat", "search", {"q": "rome"}, history=[("search", {"q": "rome"}, "none")])
    (finding,) = scan(ToolLoopDetector({"max_repeats": 2}), check)
    assert finding.evidence["occurrences"] == 2


def test_near_repeats_are_looked_for_among_the_latest_calls_of_the_tool() -> None:
    similar = [("search", {"q": f"cheap flights from Paris to Rome in May 202{i}"}, "none") for i in range(3)]
    other = [("search", {"q": word}, "none") for word in ("alpha", "bravo", "charlie", "delta")]
    check = body("openai.chat", "search", {"q": "cheap flights from Paris to Rome in May 2029"},
                 history=similar + other)
    assert scan(ToolLoopDetector({"near_window": 4}), check) == []  # the similar calls are 5+ calls back
    (finding,) = scan(ToolLoopDetector({"near_window": 7}), check)
    assert finding.evidence["rule"] == "near_repeat" and finding.evidence["occurrences"] == 4
