"""GuardrailsMiddleware in process: an upstream stub speaking every API, the real check service over ASGI.

Allowed traffic must be byte-identical (status, headers, body) with and without the middleware; blocks must
come back in each API's native error shape, and streams must end with that API's SSE error event right
before the first blocked chunk.
"""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from stub_vllm_gateway import StubModelServer, fixtures_present, sample

from guardrails.client import GuardrailsClient
from guardrails.config import Settings
from guardrails.contract import CheckResponse
from guardrails.middleware import GuardrailsMiddleware
from guardrails.middleware.sse import SSESplitter
from guardrails.serve import build_app

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(not fixtures_present(), reason="shared vLLM fixtures not found (GUARDRAILS_SHARED_DIR)")

POLICIES = {
    # a content term in the reasoning blocks; in the user's text it blocks or warns
    "reasoning_block": {"terms": ["Paris"], "action": "block", "applies_to": {"kinds": ["reasoning"]}},
    "reasoning_warn": {"terms": ["Paris"], "action": "warn", "applies_to": {"kinds": ["reasoning"]}},
    "input_block": {"terms": ["weather"], "action": "block", "applies_to": {"kinds": ["user"]}},
    "input_warn": {"terms": ["weather"], "action": "warn", "applies_to": {"kinds": ["user"]}},
    # a banned term in the streamed answer text
    "answer_block": {"terms": ["launch code"], "action": "block", "applies_to": {"kinds": ["assistant"]}},
}


def write_policies(root: Path) -> Path:
    for name, content in {"default": None, **POLICIES}.items():
        (root / name).mkdir(parents=True)
        detectors: dict[str, Any] = {"tool_undeclared": {"action": "block"}}
        if content is not None:
            detectors["content"] = content
        config = {"colang_version": "2.x", "rails": {"input": {"flows": []}, "output": {"flows": []}},
                  "on_detector_error": "warn", "detectors": detectors}
        (root / name / "config.yml").write_text(json.dumps(config))  # JSON is YAML
    return root


@pytest.fixture(scope="module")
def service_app(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("service")
    return build_app(Settings(policy_dir=write_policies(root / "policies"), data_dir=root / "var"))


# One call per API and streaming mode: (name, path, sample file whose request is sent, stream flag).
CASES = [
    ("chat", "/v1/chat/completions", "openai_chat.json", False),
    ("chat-stream", "/v1/chat/completions", "openai_chat_stream.json", True),
    ("responses", "/v1/responses", "openai_responses.json", False),
    ("responses-stream", "/v1/responses", "openai_responses_stream.json", True),
    ("messages", "/v1/messages", "anthropic_messages.json", False),
    ("messages-stream", "/v1/messages", "anthropic_messages_stream.json", True),
    ("gemini", "/v1beta/models/gemini-3.7-flash:generateContent", "gemini_generate_content.json", False),
    ("gemini-stream-sse", "/v1beta/models/gemini-3.7-flash:streamGenerateContent?alt=sse",
     "gemini_generate_content_stream.json", True),
    ("gemini-stream-array", "/v1beta/models/gemini-3.7-flash:streamGenerateContent",
     "gemini_generate_content_stream.json", False),
    ("interactions", "/v1beta/interactions", "gemini_interactions.json", False),
    ("interactions-stream", "/v1beta/interactions", "gemini_interactions_stream.json", True),
]
# The tool each upstream answer calls: leaving it out of the declared tools makes the call undeclared.
CALLED_TOOL = {"chat": "get_weather", "responses": "get_weather", "messages": "get_weather",
               "gemini": "search_flights", "interactions": "search_flights"}

# How the first chunk of that call reads on the wire, per API.
TOOL_CALL_START = {
    "chat": b'"function":{"name":"get_weather"',
    "responses": b'"name":"get_weather","type":"function_call"',
    "messages": b'"content_block":{"type":"tool_use"',
    "gemini": b'"functionCall":{"name":"search_flights"',
    "interactions": b'"step":{"type":"function_call"',
}


def request_for(case: tuple[str, str, str, bool], drop_tool: bool = False) -> dict[str, Any]:
    name, path, sample_file, stream = case
    request = copy.deepcopy(sample(sample_file)["request"])
    if "generateContent" not in path:
        request["stream"] = stream
    if drop_tool:
        _drop_tool(request, CALLED_TOOL[name.split("-")[0]])
    return request


def _drop_tool(request: dict[str, Any], tool: str) -> None:
    def keep(t: dict[str, Any]) -> bool:
        return (t.get("name") or (t.get("function") or {}).get("name")) != tool

    tools = [t for t in request["tools"] if keep(t)]
    for group in tools:
        if "functionDeclarations" in group:
            group["functionDeclarations"] = [d for d in group["functionDeclarations"] if d["name"] != tool]
    request["tools"] = tools


class CountingClient(GuardrailsClient):
    checks = 0
    last_format: str | None = None

    async def check_raw(self, body: bytes, **options: Any) -> CheckResponse:
        self.checks += 1
        self.bodies = [*getattr(self, "bodies", []), json.loads(body)]
        self.last_format = options.get("format")
        return await super().check_raw(body, **options)


class Harness:
    """The upstream alone and the upstream behind the middleware, called over in-process ASGI."""

    def __init__(self, service_app: Any, **options: Any) -> None:
        self.upstream = StubModelServer()
        self.verdicts: list[CheckResponse] = []
        client = CountingClient("http://guardrails", transport=httpx.ASGITransport(app=service_app),
                                  fail_mode=options.pop("fail_mode", "open"))
        self.guarded = GuardrailsMiddleware(self.upstream.app, client=client,
                                            on_verdict=lambda r, _: self.verdicts.append(r), **options)

    @staticmethod
    async def call(app: Any, path: str, body: dict[str, Any],
                   headers: dict[str, str] | None = None) -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as http:
            return await http.post(path, content=json.dumps(body).encode(), headers={
                "content-type": "application/json", **(headers or {})})

    def both(self, path: str, body: dict[str, Any]) -> tuple[httpx.Response, httpx.Response]:
        async def run() -> tuple[httpx.Response, httpx.Response]:
            return await Harness.call(self.upstream.app, path, body), await Harness.call(self.guarded, path, body)

        return asyncio.run(run())

    def guarded_call(self, path: str, body: dict[str, Any], **kw: Any) -> httpx.Response:
        return asyncio.run(self.call(self.guarded, path, body, **kw))


def sse_events(raw: bytes) -> list[bytes]:
    splitter = SSESplitter()
    events = [e.raw for e in splitter.feed(raw)]
    tail = splitter.flush()
    return events + ([tail.raw] if tail else [])


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_allowed_traffic_is_byte_identical(service_app: Any, case: tuple[str, str, str, bool]) -> None:
    harness = Harness(service_app)
    plain, guarded = harness.both(case[1], request_for(case))
    assert plain.status_code == guarded.status_code == 200
    assert guarded.content == plain.content and len(plain.content) > 200
    assert guarded.headers.raw == plain.headers.raw
    # Both phases really were checked (and allowed): passing through is not skipping.
    assert [v.phase for v in harness.verdicts] == ["request", "response"]
    assert all(v.verdict == "allow" for v in harness.verdicts)
    assert harness.verdicts[1].format == harness.guarded.client.last_format


def _native_error(api: str, payload: dict[str, Any]) -> str:
    """Assert `payload` is `api`'s error shape; return its message."""
    if api in ("chat", "responses"):
        assert set(payload["error"]) == {"message", "type", "param", "code"}
        assert payload["error"]["code"] == "guardrails_blocked"
        return payload["error"]["message"]
    if api == "messages":
        assert payload["type"] == "error" and set(payload["error"]) == {"type", "message"}
        return payload["error"]["message"]
    assert set(payload["error"]) == {"code", "message", "status"}
    assert payload["error"]["code"] == 400 and payload["error"]["status"] == "INVALID_ARGUMENT"
    return payload["error"]["message"]


NON_STREAM = [c for c in CASES if not c[3]]
STREAM = [c for c in CASES if c[3]]


@pytest.mark.parametrize("case", NON_STREAM, ids=[c[0] for c in NON_STREAM])
def test_undeclared_tool_call_blocks_with_native_error(service_app: Any, case: tuple[str, str, str, bool]) -> None:
    harness = Harness(service_app)
    resp = harness.guarded_call(case[1], request_for(case, drop_tool=True))
    assert resp.status_code == 400
    assert resp.headers["content-type"] == "application/json"
    assert resp.headers["x-guardrails-verdict"] == "block"
    assert resp.headers["x-guardrails-check-id"] == harness.verdicts[-1].check_id
    message = _native_error(case[0].split("-")[0], resp.json())
    assert "tool_undeclared" in message and CALLED_TOOL[case[0].split("-")[0]] in message
    # Each phase reaches on_verdict once: a hook that counts or audits must not see the block twice.
    assert [(v.phase, v.verdict) for v in harness.verdicts] == [("request", "allow"), ("response", "block")]


def _expected_error_event(api: str, event: bytes) -> dict[str, Any]:
    lines = event.strip().splitlines()
    data = json.loads(lines[-1].removeprefix(b"data: "))
    if api == "chat":
        assert len(lines) == 1  # a bare data event, like OpenAI's
    elif api == "gemini":
        assert len(lines) == 1 and event.endswith(b"\r\n\r\n")  # Google frames SSE with CRLF
    else:
        assert lines[0] == b"event: error"
    if api == "responses":
        assert data["type"] == "error" and data["code"] == "guardrails_blocked"
    if api == "interactions":
        assert data.pop("event_type") == "error"
    return data


@pytest.mark.parametrize("case", STREAM, ids=[c[0] for c in STREAM])
def test_stream_stops_at_the_undeclared_tool_call(service_app: Any, case: tuple[str, str, str, bool]) -> None:
    harness = Harness(service_app)
    allowed_request = request_for(case)
    plain, _ = harness.both(case[1], allowed_request)
    upstream_events = sse_events(plain.content)
    resp = harness.guarded_call(case[1], request_for(case, drop_tool=True))
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
    events = sse_events(resp.content)
    # Everything before the tool call's first chunk passes verbatim; that chunk never does.
    api = case[0].split("-")[0]
    first_tool_event = next(i for i, e in enumerate(upstream_events) if TOOL_CALL_START[api] in e)
    assert first_tool_event > 0
    assert events[:-1] == upstream_events[:first_tool_event]
    payload = _expected_error_event(api, events[-1])
    assert "tool_undeclared" in _native_error(api, payload)
    assert harness.verdicts[-1].verdict == "block"


def test_stream_stops_at_the_first_blocked_reasoning_chunk(service_app: Any) -> None:
    harness = Harness(service_app, policy="reasoning_block", stream_check_interval_s=0.0)
    case = CASES[1]
    resp = harness.guarded_call(case[1], request_for(case))
    events = sse_events(resp.content)
    upstream = StubModelServer.chat_stream_events()
    blocked_at = next(i for i, e in enumerate(upstream) if b'"reasoning":" Paris"' in e)
    assert events[:-1] == upstream[:blocked_at]
    assert "content" in _native_error("chat", _expected_error_event("chat", events[-1]))


def test_reasoning_checks_run_at_bounded_frequency(service_app: Any) -> None:
    case = CASES[1]
    reasoning_chunks = sum(b'"reasoning"' in e for e in StubModelServer.chat_stream_events())
    every_chunk = Harness(service_app, stream_check_interval_s=0.0)
    every_chunk.guarded_call(case[1], request_for(case))
    bounded = Harness(service_app, stream_check_interval_s=60.0)
    bounded.guarded_call(case[1], request_for(case))
    # input + each reasoning fragment + tool start + each argument fragment + [DONE]
    assert every_chunk.guarded.client.checks > reasoning_chunks + 2
    # input, the first fragment, the tool call's name, the final check: nothing else within the interval
    assert bounded.guarded.client.checks == 4
    assert [v.phase for v in bounded.verdicts] == ["request", "response"]


def test_input_block_answers_before_the_upstream_is_called(service_app: Any) -> None:
    harness = Harness(service_app, policy="input_block")
    for name, path, file, stream in (CASES[0], CASES[1], CASES[5]):
        resp = harness.guarded_call(path, request_for((name, path, file, stream)))
        assert resp.status_code == 400 and resp.headers["content-type"] == "application/json"
        assert "content" in _native_error(name.split("-")[0], resp.json())
    assert harness.upstream.requests == []


def test_warn_adds_headers_only(service_app: Any) -> None:
    harness = Harness(service_app, policy="reasoning_warn")
    plain, guarded = harness.both(CASES[0][1], request_for(CASES[0]))
    assert guarded.content == plain.content
    assert guarded.headers["x-guardrails-verdict"] == "warn"
    assert guarded.headers["x-guardrails-check-id"] == harness.verdicts[-1].check_id
    extra = set(guarded.headers.keys()) - set(plain.headers.keys())
    assert extra == {"x-guardrails-verdict", "x-guardrails-check-id"}


def test_input_warn_on_a_stream_goes_in_the_response_headers(service_app: Any) -> None:
    harness = Harness(service_app, policy="input_warn")
    plain, guarded = harness.both(CASES[1][1], request_for(CASES[1]))
    assert guarded.content == plain.content
    assert guarded.headers["x-guardrails-verdict"] == "warn"
    assert guarded.headers["x-guardrails-check-id"] == harness.verdicts[0].check_id
    assert harness.verdicts[0].phase == "request"


def test_output_warn_on_a_stream_is_reported_not_sent(service_app: Any) -> None:
    harness = Harness(service_app, policy="reasoning_warn")
    plain, guarded = harness.both(CASES[1][1], request_for(CASES[1]))
    assert guarded.content == plain.content and "x-guardrails-verdict" not in guarded.headers
    assert harness.verdicts[-1].verdict == "warn" and harness.verdicts[-1].phase == "response"


@pytest.mark.parametrize("fail_mode, status", [("open", 200), ("closed", 503)])
def test_unreachable_service_fails_open_or_closed(fail_mode: str, status: int) -> None:
    """Failing closed is the service's outage, not the caller's mistake: a 503 server error the SDKs retry."""
    upstream = StubModelServer()
    client = GuardrailsClient("http://127.0.0.1:9", retries=0, timeout=0.5, fail_mode=fail_mode)  # type: ignore[arg-type]
    app = GuardrailsMiddleware(upstream.app, client=client)
    resp = asyncio.run(Harness.call(app, CASES[0][1], request_for(CASES[0])))
    assert resp.status_code == status
    if fail_mode == "closed":
        error = resp.json()["error"]
        assert error["type"] == "api_error" and error["code"] == "guardrails_unavailable"
        assert error["message"].startswith("Guardrails could not check this call: guardrails service unavailable")
        assert upstream.requests == []
    else:
        assert resp.content == StubModelServer.fixture_bytes("chat_completion_reasoning_2_tool_calls_logprobs.json")


def test_untouched_paths_methods_and_bodies_pass_through(service_app: Any) -> None:
    harness = Harness(service_app)

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=harness.guarded), base_url="http://gw") as h:
            return [await h.get("/v1/chat/completions"), await h.post("/v1/models", json={})]

    async def not_json() -> httpx.Response:
        transport = httpx.ASGITransport(app=harness.guarded, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as h:
            return await h.post("/v1/chat/completions", content=b"not json")

    statuses = [r.status_code for r in asyncio.run(run())]
    assert statuses == [405, 404]
    assert asyncio.run(not_json()).status_code == 500  # the upstream's own answer to a bad body
    assert harness.verdicts == []


def test_context_headers_reach_input_and_final_checks_only(service_app: Any) -> None:
    harness = Harness(service_app, stream_check_interval_s=0.0)
    harness.guarded_call(CASES[1][1], request_for(CASES[1]), headers={
        "x-agent-id": "travel-agent", "x-session-id": "s-1",
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
    bodies = harness.guarded.client.bodies
    with_context = [i for i, b in enumerate(bodies) if "context" in b]
    # The input check and the final output check carry the caller; mid-stream re-checks spend nothing.
    assert with_context == [0, len(bodies) - 1] and len(bodies) > 5
    assert bodies[0]["context"] == {"agent_id": "travel-agent", "session_id": "s-1",
                                    "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7"}
    assert "response" not in bodies[0] and len(bodies[-1]["response"]) == len(StubModelServer.chat_stream_events()) - 1
    assert all(b["format"] == "openai.chat" and b["request"] == request_for(CASES[1]) for b in bodies)


def test_a_given_clients_policy_is_the_middlewares(service_app: Any) -> None:
    client = CountingClient("http://guardrails", transport=httpx.ASGITransport(app=service_app), policy="minimal")
    middleware = GuardrailsMiddleware(StubModelServer().app, client=client)
    asyncio.run(Harness.call(middleware, CASES[0][1], request_for(CASES[0])))
    assert client.bodies and all(b["policy"] == "minimal" for b in client.bodies)
    explicit = GuardrailsMiddleware(StubModelServer().app, client=client, policy="default")
    assert explicit.policy == "default"


class TextAnswerServer(StubModelServer):
    """A plain streamed answer (no reasoning, no tool call) that writes out a banned term midway."""

    @staticmethod
    def chat_stream_events() -> list[bytes]:
        pieces = ["Sure. ", "Deploy with ", "the launch code ", "and then ", "restart the service."]
        chunks = [{"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                   "choices": [{"index": 0, "delta": {"role": "assistant", "content": p}, "finish_reason": None}]}
                  for p in pieces]
        chunks.append({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                       "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        return [b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks] + [b"data: [DONE]\n\n"]


def test_a_banned_term_in_streamed_answer_text_stops_the_stream_before_it_is_sent(service_app: Any) -> None:
    client = CountingClient("http://guardrails", transport=httpx.ASGITransport(app=service_app))
    upstream = TextAnswerServer()
    middleware = GuardrailsMiddleware(upstream.app, client=client, stream_check_interval_s=0.0,
                                      policy="answer_block")
    request = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "How do I deploy?"}]}
    response = asyncio.run(Harness.call(middleware, "/v1/chat/completions", request))
    events = sse_events(response.content)
    assert events[:-1] == upstream.chat_stream_events()[:2]  # the two chunks before the term, nothing after
    assert not any(b"launch code" in e for e in events[:-1])
    assert b"content" in events[-1] and b"guardrails_blocked" in events[-1]


class UnreachableCounting(GuardrailsClient):
    """A client whose service never answers; counts the checks it was asked to send."""

    sent = 0

    async def check_raw(self, body: bytes, **options: Any) -> CheckResponse:
        self.sent += 1
        return await super().check_raw(body, **options)


@pytest.mark.parametrize("case", [CASES[0], CASES[1]], ids=["json", "stream"])
def test_after_a_check_gets_no_verdict_the_rest_of_the_call_is_decided_without_waiting(
        case: tuple[str, str, str, bool]) -> None:
    upstream = StubModelServer()
    client = UnreachableCounting("http://127.0.0.1:9", retries=0, timeout=0.5, fail_mode="open")
    app = GuardrailsMiddleware(upstream.app, client=client, stream_check_interval_s=0.0)
    guarded = asyncio.run(Harness.call(app, case[1], request_for(case)))
    direct = asyncio.run(Harness.call(StubModelServer().app, case[1], request_for(case)))
    assert guarded.status_code == 200 and guarded.content == direct.content  # fail open: passed unaltered
    assert client.sent == 1  # the input check; every later one was decided by fail_mode at once
