"""One detector's findings per check are bounded: a reply of thousands of leaked-call markups made a 24 MB answer."""

from __future__ import annotations

import asyncio
from collections import Counter

from guardrails.engine import MAX_FINDINGS_PER_DETECTOR, capped_findings
from guardrails.findings import Action, Category, Finding, Severity
from guardrails.pointer import resolve
from guardrails.service import CheckService


def leaked_calls(n: int) -> dict:
    content = "Calling tools now. " + "<function=get_weather>{\"city\": \"Paris\"}</function>\n" * n
    return {"request": {"model": "m", "messages": [{"role": "user", "content": "Weather in Paris?"}],
                        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {
                            "type": "object", "properties": {"city": {"type": "string"}}}}}]},
            "response": {"choices": [{"index": 0, "finish_reason": "stop",
                                      "message": {"role": "assistant", "content": content}}]}}


def test_thousands_of_leaked_calls_answer_a_bounded_list_the_same_verdict_and_the_count_left_out(
        service: CheckService) -> None:
    body = leaked_calls(3000)
    result = asyncio.run(service.check(body))
    per_detector = Counter(f["detector"] for f in result["findings"])
    assert per_detector["tool_call_leak"] == MAX_FINDINGS_PER_DETECTOR
    assert result["signals"]["findings_capped"]["tool_call_leak"] == 3000 - MAX_FINDINGS_PER_DETECTOR
    assert result["verdict"] == asyncio.run(service.check(leaked_calls(3)))["verdict"] == "block"
    # The newest findings (the reply's end) are kept, not only the first ones.
    last = max(f["location"]["start"] for f in result["findings"] if f["detector"] == "tool_call_leak")
    assert last > len(resolve(body, "/response/choices/0/message/content")) - 200


def test_a_few_findings_are_not_capped(service: CheckService) -> None:
    result = asyncio.run(service.check(leaked_calls(3)))
    assert "findings_capped" not in result["signals"]


def finding(severity: Severity, action: Action, n: int) -> Finding:
    return Finding(category=Category.PII, detector="pii", severity=severity, message=str(n), pointer="/x",
                   action=action)


def test_the_cap_keeps_a_stricter_finding_from_the_middle() -> None:
    findings = [finding(Severity.MEDIUM, Action.WARN, i) for i in range(3000)]
    findings[1500] = finding(Severity.HIGH, Action.BLOCK, 1500)
    kept = capped_findings(findings, 1000)
    assert [f.message for f in kept[:500]] == [str(i) for i in range(500)]
    assert [f.message for f in kept[-500:]] == [str(i) for i in range(2500, 3000)]
    assert [f.message for f in kept[500:-500]] == ["1500"]
