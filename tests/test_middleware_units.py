"""Middleware parts on their own: path detection, SSE framing, error events, the incremental check schedule."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from stub_vllm_gateway import StubModelServer, fixtures_present

from guardrails.client import synthetic_verdict
from guardrails.contract import CheckResponse
from guardrails.middleware.apis import (
    ANTHROPIC_MESSAGES,
    GEMINI_GENERATE,
    GEMINI_INTERACTIONS,
    OPENAI_CHAT,
    OPENAI_RESPONSES,
    BlockNotice,
    EventKind,
    detect_api,
)
from guardrails.middleware.asgi import GuardrailsMiddleware, _notice
from guardrails.middleware.sse import SSESplitter
from guardrails.middleware.stream import StreamChecker


@pytest.mark.parametrize("path, api", [
    ("/v1/chat/completions", OPENAI_CHAT),
    ("/openai/v1/chat/completions", OPENAI_CHAT),
    ("/v1/responses", OPENAI_RESPONSES),
    ("/v1/messages", ANTHROPIC_MESSAGES),
    ("/v1beta/interactions", GEMINI_INTERACTIONS),
    ("/v1/interactions", GEMINI_INTERACTIONS),
    ("/v1beta/models/gemini-3.7-flash:generateContent", GEMINI_GENERATE),
    ("/v1beta/models/gemini-3.7-flash:streamGenerateContent", GEMINI_GENERATE),
    ("/v1/models", None),
    ("/v1/messages/count_tokens", None),
    ("/v1/responses/resp_123", None),
    ("/v1/completions", None),
])
def test_detect_api_from_path(path: str, api: Any) -> None:
    assert detect_api(path) is api


def test_sse_splitter_keeps_bytes_across_any_chunking() -> None:
    raw = (b"event: message_start\ndata: {\"type\":\"message_start\"}\n\n: keep-alive\n\n"
           b"data: {\"a\":\r\ndata: 1}\r\n\r\ndata: [DONE]\n\n")
    for size in (1, 3, 7, len(raw)):
        splitter = SSESplitter()
        events = [e for i in range(0, len(raw), size) for e in splitter.feed(raw[i:i + size])]
        assert b"".join(e.raw for e in events) == raw and splitter.flush() is None
        assert [e.name for e in events] == ["message_start", None, None, None]
        assert [e.data for e in events] == [b'{"type":"message_start"}', b"", b'{"a":\n1}', b"[DONE]"]
    assert splitter.separator == b"\n\n"


def test_sse_splitter_returns_an_unterminated_tail_on_flush() -> None:
    splitter = SSESplitter()
    assert splitter.feed(b"data: {\"x\": 1}") == []
    tail = splitter.flush()
    assert tail is not None and tail.raw == b"data: {\"x\": 1}" and tail.data == b'{"x": 1}'


@pytest.mark.parametrize("api, sep, name, key", [
    (OPENAI_CHAT, b"\n\n", None, "error"),
    (OPENAI_RESPONSES, b"\n\n", "error", "error"),
    (ANTHROPIC_MESSAGES, b"\n\n", "error", "error"),
    (GEMINI_GENERATE, b"\r\n\r\n", None, "error"),
    (GEMINI_INTERACTIONS, b"\n\n", "error", "event_type"),
])
def test_sse_error_events_are_single_well_framed_events(api: Any, sep: bytes, name: str | None, key: str) -> None:
    notice = BlockNotice("Blocked by guardrails (tool_undeclared) [check chk_1]", "chk_1")
    raw = api.sse_error(notice, sep)
    events = SSESplitter().feed(raw)
    assert len(events) == 1 and events[0].raw == raw and raw.endswith(sep)
    assert events[0].name == name
    payload = json.loads(events[0].data)
    assert key in payload and "chk_1" in json.dumps(payload)


class FakeService:
    """Answers each check with the next scripted verdict; records how many chunks and whether final."""

    def __init__(self, verdicts: dict[int, CheckResponse] | None = None) -> None:
        self.verdicts = verdicts or {}
        self.calls: list[tuple[int, bool]] = []

    async def __call__(self, chunks: list[bytes], final: bool) -> CheckResponse:
        self.calls.append((len(chunks), final))
        return self.verdicts.get(len(self.calls), synthetic_verdict("open", "scripted", phase="response"))


def blocking(category: str) -> CheckResponse:
    verdict = synthetic_verdict("closed", "scripted", phase="response").model_dump()
    verdict["findings"][0]["category"] = category
    return CheckResponse.model_validate(verdict)


def run_stream(checker: StreamChecker, raw: bytes) -> tuple[int, CheckResponse | None]:
    """Feed a whole stream; returns (events forwarded before a stop, the stopping verdict)."""
    async def go() -> tuple[int, CheckResponse | None]:
        splitter = SSESplitter()
        events = splitter.feed(raw)
        for index, event in enumerate(events):
            stop = await checker.admit(event)
            if stop is not None:
                return index, stop
        return len(events), await checker.finish()

    return asyncio.run(go())


pytestmark_fixtures = pytest.mark.skipif(not fixtures_present(), reason="shared vLLM fixtures not found")


@pytestmark_fixtures
def test_schedule_checks_tool_start_and_final_only_within_the_interval() -> None:
    service = FakeService()
    raw = b"".join(StubModelServer.chat_stream_events())
    forwarded, stop = run_stream(StreamChecker(OPENAI_CHAT, service, interval_s=60.0), raw)
    assert stop is None and forwarded == raw.count(b"\n\n")
    # first reasoning fragment, the tool call's name, then [DONE]: only the last is final (spends budgets)
    assert [final for _, final in service.calls] == [False, False, True]
    assert service.calls[-1][0] == raw.count(b"\n\n") - 1  # every chunk but [DONE]


@pytestmark_fixtures
def test_incomplete_tool_call_findings_wait_for_the_final_check() -> None:
    # The name-chunk check "blocks" on tool_schema (arguments not there yet): not a reason to stop mid-stream.
    service = FakeService({2: blocking("tool_schema")})
    raw = b"".join(StubModelServer.chat_stream_events())
    forwarded, stop = run_stream(StreamChecker(OPENAI_CHAT, service, interval_s=60.0), raw)
    assert stop is None and forwarded == raw.count(b"\n\n")
    service = FakeService({2: blocking("tool_undeclared")})
    forwarded, stop = run_stream(StreamChecker(OPENAI_CHAT, service, interval_s=60.0), raw)
    assert stop is not None and b'"name":"get_weather"' in SSESplitter().feed(raw)[forwarded].raw
    service = FakeService({3: blocking("tool_schema")})  # the final check: any block stops
    forwarded, stop = run_stream(StreamChecker(OPENAI_CHAT, service, interval_s=60.0), raw)
    assert stop is not None and SSESplitter().feed(raw)[forwarded].data == b"[DONE]"


def test_final_only_mode_checks_once_at_the_end_without_a_marker() -> None:
    service = FakeService()
    chunks = [{"candidates": [{"content": {"parts": [{"text": "x", "thought": True}]}}]},
              {"candidates": [{"content": {"parts": [{"functionCall": {"name": "f", "args": {}}}]}}]}]
    raw = b"".join(b"data: " + json.dumps(c).encode() + b"\r\n\r\n" for c in chunks)
    assert [GEMINI_GENERATE.classify(None, c) for c in chunks] == [EventKind.PROGRESS, EventKind.TOOL_START]
    forwarded, stop = run_stream(StreamChecker(GEMINI_GENERATE, service, incremental=False), raw)
    assert stop is None and forwarded == 2 and service.calls == [(2, True)]


@pytest.mark.parametrize("api_path", ["/v1/chat/completions", "/v1/responses", "/v1/messages",
                                      "/v1beta/models/m:generateContent", "/v1beta/interactions"])
def test_failing_closed_is_a_server_error_in_every_api_while_a_block_stays_the_callers(api_path: str) -> None:
    api = detect_api(api_path)
    assert api is not None
    owner = GuardrailsMiddleware(lambda *a: None, fail_mode="closed")
    down = _notice(synthetic_verdict("closed", "connection refused"), owner)
    too_large = _notice(synthetic_verdict("closed", "9 MB", cause="check body too large"), owner)
    assert (down.status, down.unavailable) == (503, True) and (too_large.status, too_large.unavailable) == (400, False)
    unavailable, blocked = json.dumps(api.error_body(down)), json.dumps(api.error_body(too_large))
    assert ("api_error" in unavailable or "UNAVAILABLE" in unavailable) and "invalid_request_error" not in unavailable
    assert "invalid_request_error" in blocked or "INVALID_ARGUMENT" in blocked
