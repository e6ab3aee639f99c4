"""Gateway review: defects found by running a real gateway (FastAPI proxy + GuardrailsMiddleware) against a fake
vLLM and `guardrails serve`, each pinned here with the real check service over in-process ASGI.

* A request body that vLLM (FastAPI/Starlette read JSON with Python's `json`) accepts but orjson does not — a
  UTF-8 BOM, UTF-16, `NaN`/`Infinity`, a lone `\\ud800` escape — went through unchecked, both phases.
* A Chat stream whose last chunk before `[DONE]` had just been re-checked mid-stream skipped the final check:
  `[DONE]` went out and a non-stopping block (tool_schema) came after it, where no SDK reads it.
* The client crashed on a 200 that is not a check response and did not retry a reset keep-alive connection.
"""

from __future__ import annotations

import asyncio
import copy
import json
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from stub_vllm_gateway import StubModelServer, fixtures_present, sample

from guardrails.client import GuardrailsClient, SyncGuardrailsClient, is_synthetic
from guardrails.config import Settings
from guardrails.contract import CheckResponse
from guardrails.middleware import GuardrailsMiddleware
from guardrails.middleware.apis import OPENAI_CHAT, EventKind
from guardrails.middleware.sse import SSESplitter
from guardrails.middleware.stream import StreamChecker
from guardrails.serve import build_app

CHAT = "/v1/chat/completions"


def _policy(root: Path, name: str, detectors: dict[str, Any]) -> None:
    (root / name).mkdir(parents=True)
    config = {"colang_version": "2.x", "rails": {"input": {"flows": []}, "output": {"flows": []}},
              "on_detector_error": "warn", "detectors": detectors}
    (root / name / "config.yml").write_text(json.dumps(config))  # JSON is YAML


@pytest.fixture(scope="module")
def service_app(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("review-gateway")
    policies = root / "policies"
    _policy(policies, "default", {"tool_undeclared": {"action": "block"}, "tool_schema": {"action": "block"}})
    _policy(policies, "input_block", {"content": {"terms": ["weather"], "action": "block",
                                                  "applies_to": {"kinds": ["user"]}}})
    return build_app(Settings(policy_dir=policies, data_dir=root / "var"))


class Recorder(GuardrailsClient):
    """The real client, keeping every check body it sends."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bodies: list[dict[str, Any]] = []

    async def check_raw(self, body: bytes, **options: Any) -> CheckResponse:
        self.bodies.append(json.loads(body))
        return await super().check_raw(body, **options)


def guarded(service_app: Any, upstream: Any, **options: Any) -> tuple[GuardrailsMiddleware, Recorder]:
    client = Recorder("http://guardrails", transport=httpx.ASGITransport(app=service_app))
    return GuardrailsMiddleware(upstream, client=client, **options), client


async def post(app: Any, path: str, content: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as http:
        return await http.post(path, content=content, headers={"content-type": "application/json", **(headers or {})})


# --- JSON that the upstream reads and orjson does not ---------------------------------------------------------

def _chat_request() -> dict[str, Any]:
    return copy.deepcopy(sample("openai_chat.json")["request"])


LENIENT = {
    "nan": lambda raw: raw[:-1] + b', "x": NaN}',
    "infinity": lambda raw: raw[:-1] + b', "temperature": 1e400}',
    "lone_surrogate": lambda raw: raw[:-1] + b', "x": "\\ud800"}',
    "utf8_bom": lambda raw: b"\xef\xbb\xbf" + raw,
    "utf16": lambda raw: raw.decode().encode("utf-16"),
}


@pytest.mark.skipif(not fixtures_present(), reason="shared vLLM fixtures not found (GUARDRAILS_SHARED_DIR)")
@pytest.mark.parametrize("variant", sorted(LENIENT))
def test_request_that_only_pythons_json_reads_is_still_checked(service_app: Any, variant: str) -> None:
    body = LENIENT[variant](json.dumps(_chat_request()).encode())
    assert isinstance(json.loads(body), dict)  # what vLLM (FastAPI's request.json()) will read
    upstream = StubModelServer()
    app, client = guarded(service_app, upstream.app, policy="input_block")
    resp = asyncio.run(post(app, CHAT, body))
    assert resp.status_code == 400 and resp.headers["x-guardrails-verdict"] == "block"
    assert "content" in resp.json()["error"]["message"]
    assert upstream.requests == []  # never forwarded
    # The service got a strict copy with the same structure: the finding's pointer names the user's text.
    checked = client.bodies[0]["request"]
    assert checked["messages"] == _chat_request()["messages"]


@pytest.mark.skipif(not fixtures_present(), reason="shared vLLM fixtures not found (GUARDRAILS_SHARED_DIR)")
def test_lenient_request_that_passes_is_forwarded_byte_for_byte(service_app: Any) -> None:
    body = LENIENT["lone_surrogate"](LENIENT["nan"](json.dumps(_chat_request()).encode()))
    upstream = StubModelServer()
    app, client = guarded(service_app, upstream.app)
    resp = asyncio.run(post(app, CHAT, body))
    assert resp.status_code == 200
    assert upstream.requests == [(CHAT, body)]
    assert client.bodies[0]["request"]["x"] == "\ufffd" and client.bodies[1]["request"]["x"] == "\ufffd"
    assert "response" in client.bodies[1]  # the output phase ran too


def _chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
    chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "Qwen/Qwen3-8B",
             "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}], **extra}
    return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"


def _call_start(name: str) -> dict[str, Any]:
    return {"tool_calls": [{"index": 0, "id": "chatcmpl-tool-1", "type": "function",
                            "function": {"name": name, "arguments": ""}}]}


def _args(fragment: str) -> dict[str, Any]:
    return {"tool_calls": [{"index": 0, "function": {"arguments": fragment}}]}


class ScriptedUpstream:
    """A vLLM stand-in answering every call with one scripted body (SSE events or a JSON body)."""

    def __init__(self, events: list[bytes] | None = None, body: bytes | None = None) -> None:
        self.events, self.body = events, body
        self.app = Starlette(routes=[Route(CHAT, self._chat, methods=["POST"])])

    async def _chat(self, request: Request) -> Response:
        await request.body()
        if self.events is None:
            return Response(self.body, media_type="application/json")
        events = self.events

        async def produce() -> Any:
            for event in events:
                yield event

        return StreamingResponse(produce(), media_type="text/event-stream")


def test_lenient_json_response_is_still_checked(service_app: Any) -> None:
    # An undeclared tool call in a body with a non-finite number: Python's json (every OpenAI SDK) reads it.
    response = {"id": "chatcmpl-1", "object": "chat.completion", "model": "Qwen/Qwen3-8B", "choices": [{
        "index": 0, "finish_reason": "tool_calls", "logprobs": None, "message": {
            "role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {
                "name": "delete_files", "arguments": "{}"}}]}}]}
    body = json.dumps(response).encode()[:-1] + b', "score": NaN}'
    app, _ = guarded(service_app, ScriptedUpstream(body=body).app)
    resp = asyncio.run(post(app, CHAT, json.dumps(_chat_request()).encode()))
    assert resp.status_code == 400 and "tool_undeclared" in resp.json()["error"]["message"]


def test_lenient_json_stream_chunk_is_still_checked(service_app: Any) -> None:
    request = _chat_request() | {"stream": True}
    events = [_chunk({"role": "assistant", "content": ""}),
              _chunk(_call_start("delete_files"))[:-3] + b',"x":NaN}\n\n',
              _chunk(_args('{"path": "/"}'), "tool_calls"), b"data: [DONE]\n\n"]
    app, client = guarded(service_app, ScriptedUpstream(events).app)
    resp = asyncio.run(post(app, CHAT, json.dumps(request).encode()))
    sent = [e.raw for e in SSESplitter().feed(resp.content)]
    assert sent[0] == events[0] and b"tool_undeclared" in sent[-1] and len(sent) == 2
    assert client.bodies[-1]["response"][1]["x"] is None  # the chunk reached the check, as a strict copy


# --- the final check of a Chat stream -----------------------------------------------------------------------

def _schema_violating_stream() -> list[bytes]:
    # vLLM without include_usage: the finish chunk carries the last argument fragment; then [DONE].
    return [_chunk({"role": "assistant", "content": ""}), _chunk({"reasoning": "Look up the weather."}),
            _chunk(_call_start("get_weather")), _chunk(_args('{"city": 42, ')),
            _chunk(_args('"unit": "kelvin"}'), "tool_calls"), b"data: [DONE]\n\n"]


def test_block_at_the_final_check_comes_before_done(service_app: Any) -> None:
    request = _chat_request() | {"stream": True}
    # Interval 0: every fragment, the last one included, is re-checked mid-stream as soon as it arrives.
    app, client = guarded(service_app, ScriptedUpstream(_schema_violating_stream()).app, stream_check_interval_s=0.0)
    resp = asyncio.run(post(app, CHAT, json.dumps(request).encode(), headers={"x-agent-id": "travel-agent"}))
    sent = [e.raw for e in SSESplitter().feed(resp.content)]
    assert b"[DONE]" not in resp.content  # an SDK stops reading at [DONE]: the error must come instead of it
    assert sent[:-1] == _schema_violating_stream()[:-1]
    assert b'"code":"guardrails_blocked"' in sent[-1] and b"tool_schema" in sent[-1]
    # The final, accounted check ran with the caller context on the complete stream.
    final = client.bodies[-1]
    assert final["context"] == {"agent_id": "travel-agent"} and len(final["response"]) == 5


def _allowing(finals: list[bool]) -> Callable[[list[bytes], bool], Awaitable[CheckResponse]]:
    """A stream check that allows everything and records whether each call was the final one."""

    async def check(chunks: list[bytes], final: bool) -> CheckResponse:
        finals.append(final)
        return CheckResponse.model_validate(CheckResponse.model_json_schema()["example"] | {
            "verdict": "allow", "findings": []})

    return check


def test_final_check_runs_even_when_the_last_chunk_was_just_checked() -> None:
    finals: list[bool] = []
    check = _allowing(finals)

    async def run() -> None:
        checker = StreamChecker(OPENAI_CHAT, check, interval_s=0.0)
        for raw in _schema_violating_stream():
            await checker.admit(next(iter(SSESplitter().feed(raw))))
        assert await checker.finish() is None

    asyncio.run(run())
    assert finals[-1] is True and finals.count(True) == 1


def test_stream_without_marker_gets_its_final_check_after_a_mid_stream_one() -> None:
    finals: list[bool] = []
    check = _allowing(finals)

    async def run() -> None:
        checker = StreamChecker(OPENAI_CHAT, check)
        event = next(iter(SSESplitter().feed(_chunk(_call_start("get_weather")))))
        assert OPENAI_CHAT.classify(None, json.loads(event.data)) == EventKind.TOOL_START
        await checker.admit(event)  # checked at once (mid-stream), then the upstream body ends
        await checker.finish()

    asyncio.run(run())
    assert finals == [False, True]


# --- the client against a misbehaving service ------------------------------------------------------------------

ALLOW = CheckResponse.model_json_schema()["example"] | {"verdict": "allow", "findings": []}


class Scripted(httpx.AsyncBaseTransport):
    def __init__(self, script: list[Exception | httpx.Response]) -> None:
        self.script = list(script)
        self.calls = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        step = self.script.pop(0) if self.script else httpx.Response(200, json=ALLOW)
        if isinstance(step, Exception):
            raise step
        return step


def _check(transport: Scripted, fail_mode: str) -> CheckResponse:
    async def run() -> CheckResponse:
        async with GuardrailsClient("http://svc", transport=transport, backoff_s=0.001,
                                    fail_mode=fail_mode) as client:  # type: ignore[arg-type]
            return await client.check({"messages": []})

    return asyncio.run(run())


@pytest.mark.parametrize("answer", [
    httpx.Response(200, text="<html>captive portal</html>", headers={"content-type": "text/html"}),
    httpx.Response(200, json={"status": "ok"}),  # some other service at that URL
])
@pytest.mark.parametrize("fail_mode", ["open", "closed"])
def test_a_200_that_is_not_a_check_response_fails_as_configured(answer: httpx.Response, fail_mode: str) -> None:
    transport = Scripted([answer])
    result = _check(transport, fail_mode)
    assert is_synthetic(result) and result.verdict == ("allow" if fail_mode == "open" else "block")
    assert "not a check response" in result.findings[0].message
    assert transport.calls == 1  # not retried: the same URL answers the same way


@pytest.mark.parametrize("dropped", [httpx.ReadError("[Errno 104] Connection reset by peer"),
                                     httpx.WriteError("[Errno 32] Broken pipe")])
def test_a_reset_keep_alive_connection_is_retried(dropped: Exception) -> None:
    transport = Scripted([dropped])
    result = _check(transport, "closed")
    assert transport.calls == 2 and result.verdict == "allow" and not is_synthetic(result)


def test_sync_client_with_bad_options_leaves_no_thread() -> None:
    before = {t.ident for t in threading.enumerate()}
    with pytest.raises(ValueError):
        SyncGuardrailsClient("http://svc", fail_mode="maybe")
    assert [t.name for t in threading.enumerate() if t.ident not in before] == []


@pytest.mark.parametrize("cut", [b"", b"\n"])
def test_error_event_after_an_unterminated_last_event_is_an_event_of_its_own(service_app: Any, cut: bytes) -> None:
    # The upstream's body ends mid-frame (no blank line after its last event); the final check then blocks.
    request = _chat_request() | {"stream": True}
    events = _schema_violating_stream()[:-1]
    events[-1] = events[-1].rstrip(b"\n") + cut
    app, _ = guarded(service_app, ScriptedUpstream(events).app, incremental=False)
    resp = asyncio.run(post(app, CHAT, json.dumps(request).encode()))
    assert resp.content.startswith(b"".join(events))  # what the upstream sent, unchanged
    splitter = SSESplitter()
    sent = splitter.feed(resp.content)
    assert splitter.flush() is None
    assert [json.loads(e.data) for e in sent[:-1]] == [json.loads(e[6:]) for e in events]
    assert json.loads(sent[-1].data)["error"]["code"] == "guardrails_blocked"


def test_a_stream_stopped_mid_stream_is_accounted_to_the_caller(service_app: Any) -> None:
    # Budgets, block streaks and the audit trail key on the check's context: a block that stops a stream must
    # reach them like a non-streamed block does, not only as a context-less re-check.
    request = _chat_request() | {"stream": True}
    events = [_chunk({"role": "assistant", "content": ""}), _chunk(_call_start("delete_files")),
              _chunk(_args('{"path": "/"}'), "tool_calls"), b"data: [DONE]\n\n"]
    verdicts: list[CheckResponse] = []
    app, client = guarded(service_app, ScriptedUpstream(events).app, on_verdict=lambda r, _: verdicts.append(r))
    resp = asyncio.run(post(app, CHAT, json.dumps(request).encode(), headers={"x-agent-id": "travel-agent"}))
    sent = [e.raw for e in SSESplitter().feed(resp.content)]
    assert sent[0] == events[0] and b"tool_undeclared" in sent[1] and len(sent) == 2  # stopped at the call
    final = client.bodies[-1]
    assert final["context"] == {"agent_id": "travel-agent"} and len(final["response"]) == 2
    assert [v.phase for v in verdicts] == ["request", "response"] and verdicts[-1].verdict == "block"
    assert verdicts[-1].check_id.encode() in sent[1]
