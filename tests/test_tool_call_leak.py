"""`tool_call_leak` and the exchange builder's recovery hook, on real vLLM response shapes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from detectors.tool_call_leak import ToolCallLeakDetector
from guardrails.adapters import read_exchange
from guardrails.detector import DetectorRegistry, ScanContext
from guardrails.exchange import Exchange, SegmentKind
from guardrails.findings import Finding, Severity
from guardrails.pointer import resolve
from guardrails.policy import PolicyStore
from guardrails.service import CheckService

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}}}}]
REQUEST = {"model": "Qwen/Qwen3-8B", "messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": TOOLS}
LEAKED = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris",}}\n</tool_call>'


def chat_response(content: str | None, reasoning: str | None = None, tool_calls: list | None = None) -> dict:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if reasoning is not None:
        message["reasoning"] = reasoning
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {"id": "chatcmpl-1", "object": "chat.completion", "model": "Qwen/Qwen3-8B",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}


def scan(body: dict[str, Any], exchange: Exchange, settings: dict | None = None) -> list[Finding]:
    detector = ToolCallLeakDetector(settings or {})
    ctx = ScanContext(segments=[s for s in exchange.segments if detector.default_scope.matches(s)], signals={})
    return asyncio.run(detector.scan(exchange, ctx))


def check(request: dict, response: Any, raw_output: str | None = None,
          settings: dict | None = None) -> tuple[dict, Exchange, list[Finding]]:
    body = {"request": request, "response": response}
    if raw_output is not None:
        body["raw_output"] = raw_output
    exchange = read_exchange(request, response, raw_output=raw_output)
    return body, exchange, scan(body, exchange, settings)


def test_malformed_hermes_call_left_in_content_is_a_leak_pointing_at_the_markup() -> None:
    content = "Let me check.\n" + LEAKED
    body, _, findings = check(REQUEST, chat_response(content))
    assert len(findings) == 1
    f = findings[0]
    assert f.pointer == "/response/choices/0/message/content"
    assert resolve(body, f.pointer)[f.start:f.end] == LEAKED
    assert f.severity is Severity.HIGH  # a declared tool
    assert f.evidence["family"] == "hermes"
    assert f.evidence["arguments"] == {"city": "Paris"}
    assert "trailing_comma" in f.evidence["repairs"]


def test_the_builder_turns_the_leaked_call_into_a_tool_call_segment() -> None:
    content = "Let me check.\n" + LEAKED
    body, exchange, _ = check(REQUEST, chat_response(content))
    [segment] = exchange.tool_calls
    call = segment.tool_call
    assert call is not None and call.recovered_from == "hermes"
    assert call.name == "get_weather" and call.arguments == {"city": "Paris"} and call.arguments_error is None
    text = resolve(body, call.name_pointer)
    assert text[call.name_offset:call.name_offset + len(call.name)] == "get_weather"
    assert text[segment.start:segment.start + len(segment.text)] == '{"city": "Paris",}'


def test_xml_call_in_reasoning_gets_schema_typed_arguments() -> None:
    reasoning = ("I should check.\n<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
                 "<parameter=days>\n3\n</parameter>\n</function>\n</tool_call>")
    body, exchange, findings = check(REQUEST, chat_response("Checking now.", reasoning=reasoning))
    assert [s.tool_call.arguments for s in exchange.tool_calls if s.tool_call] == [{"city": "Paris", "days": 3}]
    [f] = findings
    assert f.pointer == "/response/choices/0/message/reasoning"
    assert resolve(body, f.pointer)[f.start:f.end].startswith("<tool_call>\n<function=get_weather>")
    assert f.evidence["where"] == "reasoning"


def test_call_the_structured_response_carries_is_not_a_leak() -> None:
    structured = [{"id": "c1", "type": "function",
                   "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]
    raw = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    _, exchange, findings = check(REQUEST, chat_response(None, tool_calls=structured), raw_output=raw)
    assert findings == []
    assert [s.tool_call.recovered_from for s in exchange.tool_calls if s.tool_call] == [None]


def test_raw_output_leak_points_into_raw_output_and_counts_once() -> None:
    raw = 'Sure.[TOOL_CALLS]delete_all_files[ARGS]{"path": "/", "recursive": true}'
    body, exchange, findings = check(REQUEST, chat_response("Sure."), raw_output=raw)
    [f] = findings
    assert f.pointer == "/raw_output" and body["raw_output"][f.start:f.end] == raw[5:]
    assert f.severity is Severity.HIGH  # undeclared, but dangerous-looking
    assert f.evidence["family"] == "mistral_v11"
    [segment] = exchange.tool_calls
    assert segment.tool_call is not None and segment.tool_call.name_pointer == "/raw_output"
    # The same leak in content and raw_output is reported once, from the content.
    _, _, findings = check(REQUEST, chat_response(raw), raw_output=raw)
    assert [f.pointer for f in findings] == ["/response/choices/0/message/content"]


def test_undeclared_harmless_name_is_medium_and_raw_output_can_be_ignored() -> None:
    raw = '[lookup_city(name="Paris")]'
    _, _, findings = check(REQUEST, chat_response("ok"), raw_output=raw)
    assert [f.severity for f in findings] == [Severity.MEDIUM]
    _, _, findings = check(REQUEST, chat_response("ok"), raw_output=raw, settings={"raw_output": False})
    assert findings == []


def test_request_history_leaks_are_not_reported_by_default() -> None:
    request = {**REQUEST, "messages": [*REQUEST["messages"], {"role": "assistant", "content": LEAKED},
                                       {"role": "user", "content": "and Rome?"}]}
    _, exchange, findings = check(request, chat_response("It is sunny."))
    assert findings == []
    assert exchange.tool_calls == ()  # history is not re-parsed either


def test_streamed_content_leak_resolves_across_chunks() -> None:
    parts = ["Checking. <tool_", 'call>\n{"name": "get_weather", ', '"arguments": {"city": "Paris"}}\n</tool_call>']
    chunks = [{"id": "c", "object": "chat.completion.chunk", "model": "m",
               "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]} for p in parts]
    body, exchange, findings = check(REQUEST, chunks)
    [f] = findings
    assert f.pointer == "/response/0/choices/0/delta/content" and f.start == len("Checking. ")
    [segment] = exchange.tool_calls
    call = segment.tool_call
    assert call is not None and call.arguments == {"city": "Paris"}
    name_text = resolve(body, call.name_pointer)
    assert name_text[call.name_offset:call.name_offset + len("get_weather")] == "get_weather"


def test_plain_prose_and_code_are_not_leaks() -> None:
    prose = ("The weather in Paris is sunny [source](https://example.com). In Python, use "
             "`requests.get(url)` and a list like [1, 2, 3]; {\"name\": \"Alice\", \"age\": 3} is JSON.")
    _, exchange, findings = check(REQUEST, chat_response(prose))
    assert findings == [] and exchange.tool_calls == ()
    assert [s.kind for s in exchange.segments] == [SegmentKind.USER, SegmentKind.ASSISTANT]


def test_end_to_end_through_the_check_service(tmp_path: Path) -> None:
    bundle = tmp_path / "leaks"
    bundle.mkdir()
    (bundle / "config.yml").write_text("detectors:\n  tool_call_leak:\n    action: block\n  tool_undeclared: {}\n")
    service = CheckService(PolicyStore(tmp_path),
                           DetectorRegistry([ToolCallLeakDetector, _undeclared()]), default_policy="leaks")
    body = {"request": REQUEST, "response": chat_response(None),
            "raw_output": '<|python_start|>[delete_all_files(path="/")]<|python_end|>'}
    result = asyncio.run(service.check(body))
    assert result["verdict"] == "block"
    by_detector = {f["detector"]: f for f in result["findings"]}
    leak = by_detector["tool_call_leak"]
    assert leak["location"]["pointer"] == "/raw_output"
    start, end = leak["location"]["start"], leak["location"]["end"]
    assert body["raw_output"][start:end] == body["raw_output"]
    # The recovered call goes through the other tool checks like a real one.
    undeclared = by_detector["tool_undeclared"]
    assert undeclared["evidence"]["recovered_from"] == "llama4_pythonic"
    s, e = undeclared["location"]["start"], undeclared["location"]["end"]
    assert body["raw_output"][s:e] == "delete_all_files"


def _undeclared() -> type:
    from detectors.tool_undeclared import ToolUndeclared

    return ToolUndeclared
