"""tool_call_leak's `dangerous_names`, a regex an inline config may send, is searched with a timeout: a name it could
not judge is a finding (and a high-severity leak), never a stall nor a pass. (Its refused values are listed with the
other settings' in test_policy_settings_strict.py.)"""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from detectors._schema_guard import CHECK_BUDGET_S, SEARCH_TIMEOUT_S
from detectors.tool_call_leak import ToolCallLeakDetector
from guardrails.adapters import read_exchange
from guardrails.config import Settings
from guardrails.detector import ScanContext, SettingError
from guardrails.findings import Finding, Severity
from guardrails.serve import build_app

REPO = Path(__file__).resolve().parent.parent
BACKTRACKS = "^(a|aa)+$"  # exponential on "aaa...a_x" with a backtracking engine
SLOW_NAME = "a" * 34 + "_x"  # Python's `re` takes about a second on it; `regex` stops at the search timeout


# --- tool_call_leak's dangerous_names --------------------------------------------------------------------------------
REQUEST = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def hermes(name: str) -> str:
    return f'<tool_call>\n{{"name": "{name}", "arguments": {{}}}}\n</tool_call>'


def leak_findings(content: str, settings: dict[str, Any]) -> tuple[list[Finding], dict[str, Any]]:
    message = {"role": "assistant", "content": content}
    response = {"id": "r", "object": "chat.completion", "model": "m",
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}
    exchange = read_exchange(REQUEST, response)
    detector = ToolCallLeakDetector(settings)
    ctx = ScanContext(segments=[s for s in exchange.segments if detector.default_scope.matches(s)], signals={})
    return asyncio.run(detector.scan(exchange, ctx)), ctx.signals


def test_a_backtracking_dangerous_names_pattern_is_reported_unchecked_and_the_leak_is_high() -> None:
    findings, signals = leak_findings("Calling.\n" + hermes(SLOW_NAME), {"dangerous_names": BACKTRACKS})
    leak, unchecked = findings
    assert leak.evidence["name"] == SLOW_NAME and leak.severity is Severity.HIGH  # not taken as harmless
    assert "not checked against dangerous_names" in leak.message
    assert unchecked.evidence["rule"] == "pattern_unchecked" and unchecked.evidence["reason"] == "timeout"
    assert unchecked.severity is Severity.HIGH and unchecked.pointer == leak.pointer
    assert (unchecked.start, unchecked.end) == (leak.start, leak.end)
    assert signals["tool_call_leak"]["leaked_calls"] == 1 and signals["tool_call_leak"]["names_unchecked"] == 1
    # The same pattern still judges the names it can: a match is dangerous, a miss is not.
    [match], _ = leak_findings(hermes("aaaa"), {"dangerous_names": BACKTRACKS})
    [miss], _ = leak_findings(hermes("lookup_city"), {"dangerous_names": BACKTRACKS})
    assert (match.severity, miss.severity) == (Severity.HIGH, Severity.MEDIUM)


def test_the_built_in_pattern_still_judges_names_case_insensitively() -> None:
    [rm], _ = leak_findings(hermes("Delete_Files"), {})
    [ok], _ = leak_findings(hermes("lookup_city"), {})
    assert (rm.severity, ok.severity) == (Severity.HIGH, Severity.MEDIUM)


def test_many_slow_names_spend_a_bounded_time_on_searches() -> None:
    """Twelve leaked calls each meeting the backtracking pattern: each search stops at its timeout, and once the
    check's budget is spent the rest are reported without a search."""
    content = "\n".join(hermes(SLOW_NAME + str(i)) for i in range(12))
    findings, _ = leak_findings(content, {"dangerous_names": BACKTRACKS})
    unchecked = [f for f in findings if f.evidence.get("rule") == "pattern_unchecked"]
    assert len(unchecked) == 12 and all(f.severity is Severity.HIGH for f in findings)
    timed_out = [f for f in unchecked if f.evidence["reason"] == "timeout"]
    assert 1 <= len(timed_out) <= math.ceil(CHECK_BUDGET_S / SEARCH_TIMEOUT_S)
    assert {f.evidence["reason"] for f in unchecked if f not in timed_out} <= {"budget"}


def test_an_inline_backtracking_dangerous_names_is_a_finding_not_a_stall() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"},
                                       {"role": "assistant", "content": "Calling.\n" + hermes(SLOW_NAME)}],
            "guardrails": {"config": {"detectors": {"tool_call_leak": {"dangerous_names": BACKTRACKS}}}}}
    client = TestClient(build_app(Settings(policy_dir=REPO / "policies")))
    resp = client.post("/v1/guardrail/checks", json=body)
    assert resp.status_code == 200, resp.text
    findings = [f for f in resp.json()["guardrails_data"]["findings"] if f["detector"] == "tool_call_leak"]
    assert [f["evidence"].get("rule") for f in findings] == [None, "pattern_unchecked"], json.dumps(findings)
    # A pattern that does not compile is refused, as any bad inline setting is.
    body["guardrails"]["config"]["detectors"]["tool_call_leak"]["dangerous_names"] = "(x"
    resp = client.post("/v1/guardrail/checks", json=body)
    assert resp.status_code == 422 and "dangerous_names" in resp.text


def test_a_dangerous_names_pattern_too_large_to_compile_is_refused() -> None:
    with pytest.raises(SettingError, match=r"setting dangerous_names: pattern .* compiles to more than"):
        ToolCallLeakDetector({"dangerous_names": "(?:a{1000}){1000}"})
