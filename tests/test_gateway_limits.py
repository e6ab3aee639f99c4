"""Gateway limits: what the middleware does with a body too large to check, how long the client may take when the
service does not accept connections, and how context headers are decoded.

* A request over `max_check_bytes` (default: the service's own body limit) is not read for a check: it streams to
  the upstream unchanged (fail open) or is blocked (fail closed), with no check call; a 413 from a service whose
  limit is lower is decided the same way, and the call sends no bigger check body after it.
* `timeout` is one deadline per check, retries included: a blackholed service costs one timeout, not three.
* A UTF-8 `x-user-id` reaches the check's `context` as the text the client sent.
"""

from __future__ import annotations

import asyncio
import json
import time
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from guardrails.client import GuardrailsClient, is_synthetic
from guardrails.config import Settings
from guardrails.contract import CheckResponse
from guardrails.middleware import GuardrailsMiddleware
from guardrails.middleware.sse import SSESplitter
from guardrails.middleware.stream import StreamChecker
from guardrails.serve import build_app

CHAT = "/v1/chat/completions"
LIMIT = 64 * 1024  # a small max_check_bytes keeps the bodies quick to build
ALLOW = CheckResponse.model_json_schema()["example"] | {"verdict": "allow", "findings": []}
COMPLETION = json.dumps({
    "id": "chatcmpl-1", "object": "chat.completion", "model": "Qwen/Qwen3-8B", "choices": [{
        "index": 0, "finish_reason": "stop", "logprobs": None,
        "message": {"role": "assistant", "content": "It is sunny in Paris."}}]}).encode()


def chat_body(size: int, **extra: Any) -> bytes:
    """A Chat Completions request of exactly `size` bytes (the user's text pads it)."""
    base = {"model": "Qwen/Qwen3-8B", "messages": [{"role": "user", "content": ""}], **extra}
    empty = json.dumps(base).encode()
    base["messages"][0]["content"] = "a" * (size - len(empty))
    body = json.dumps(base).encode()
    assert len(body) == size
    return body


class Upstream:
    """A model server stand-in: records every request message it reads, answers a Chat completion (JSON) or,
    when given `events`, a stream of them."""

    def __init__(self, events: list[bytes] | None = None) -> None:
        self.events = events
        self.received: list[dict[str, Any]] = []

    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.received)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            self.received.append(message)
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        stream = self.events is not None
        content_type = b"text/event-stream" if stream else b"application/json"
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", content_type)]})
        for event in self.events or [COMPLETION]:
            await send({"type": "http.response.body", "body": event, "more_body": stream})
        if stream:
            await send({"type": "http.response.body", "body": b"", "more_body": False})


class StubService:
    """The check service's place in front of a MockTransport: counts the check bodies it is sent; allows."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(json.loads(request.content))
        return httpx.Response(200, json=ALLOW)


def guarded(upstream: Any, fail_mode: str = "open", **options: Any) -> tuple[Any, StubService, list[CheckResponse]]:
    service = StubService()
    client = GuardrailsClient("http://guardrails", transport=httpx.MockTransport(service),
                              fail_mode=fail_mode)  # type: ignore[arg-type]
    verdicts: list[CheckResponse] = []
    app = GuardrailsMiddleware(upstream, client=client, on_verdict=lambda r, _: verdicts.append(r), **options)
    return app, service, verdicts


async def post(app: Any, content: bytes | AsyncIterator[bytes], headers: dict[str, Any] | None = None,
               path: str = CHAT) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as http:
        return await http.post(path, content=content, headers={"content-type": "application/json", **(headers or {})})


def in_pieces(body: bytes, size: int = 8192) -> AsyncIterator[bytes]:
    """The body sent chunked, without a content-length: the middleware only learns its size by reading it."""

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(body), size):
            yield body[start:start + size]

    return pieces()


# --- 1. a request too large to check --------------------------------------------------------------------------

def test_default_limit_is_the_services_default_body_limit() -> None:
    assert GuardrailsMiddleware(Upstream()).max_check_bytes == Settings().max_body_bytes


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_request_just_over_the_limit_is_forwarded_unchanged_without_a_check(framing: str) -> None:
    body = chat_body(Settings().max_body_bytes + 1)  # the service would answer 413 to any check holding it
    upstream = Upstream()
    app, service, verdicts = guarded(upstream, "open")
    content = body if framing == "content-length" else in_pieces(body)
    resp = asyncio.run(post(app, content))
    assert resp.status_code == 200 and resp.content == COMPLETION
    assert upstream.body() == body  # byte for byte
    if framing == "chunked":  # streamed to the upstream as it came, not gathered into one message
        assert len([m for m in upstream.received if m.get("body")]) == len(body) // 8192 + 1
    assert service.bodies == []  # neither phase sent a check
    assert "x-guardrails-verdict" not in resp.headers
    # The fail-open decision is recorded, with why.
    [verdict] = verdicts
    assert verdict.verdict == "allow" and is_synthetic(verdict) and verdict.phase == "request"
    assert "max_check_bytes" in verdict.signals["client"]["reason"]
    assert verdict.findings[0].category == "detector_error" and "too large" in verdict.findings[0].message


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_request_over_the_limit_fails_closed_without_a_check(framing: str) -> None:
    body = chat_body(LIMIT + 1)
    upstream = Upstream()
    app, service, verdicts = guarded(upstream, "closed", max_check_bytes=LIMIT)
    resp = asyncio.run(post(app, body if framing == "content-length" else in_pieces(body)))
    assert resp.status_code == 400 and resp.headers["x-guardrails-verdict"] == "block"
    error = resp.json()["error"]
    assert error["code"] == "guardrails_blocked" and "too large" in error["message"]
    assert upstream.received == [] and service.bodies == []
    assert [v.verdict for v in verdicts] == ["block"] and is_synthetic(verdicts[0])


def test_request_under_the_limit_is_still_checked_in_both_phases() -> None:
    body = chat_body(LIMIT - 1024)
    upstream = Upstream()
    app, service, _ = guarded(upstream, "closed", max_check_bytes=LIMIT)
    resp = asyncio.run(post(app, in_pieces(body)))
    assert resp.status_code == 200 and upstream.body() == body
    assert [("response" in b) for b in service.bodies] == [False, True]
    assert service.bodies[0]["request"] == json.loads(body)


def test_response_too_large_to_check_is_decided_without_its_check() -> None:
    # The request fits, the response does not: the output phase fails as configured, without a check call.
    upstream = Upstream()
    app, service, verdicts = guarded(upstream, "closed", max_check_bytes=len(COMPLETION) + 100)
    resp = asyncio.run(post(app, chat_body(150)))
    assert resp.status_code == 400 and "too large" in resp.json()["error"]["message"]
    assert len(service.bodies) == 1 and "response" not in service.bodies[0]  # the input check only
    assert [(v.verdict, is_synthetic(v)) for v in verdicts] == [("allow", False), ("block", True)]
    assert verdicts[-1].phase == "response"


def test_memory_stays_bounded_for_a_request_far_over_the_limit() -> None:
    # 32 MiB arriving in fresh 64 KiB chunks, limit 1 MiB: the middleware may hold about the limit, never the body.
    size, piece = 32 * 1024 * 1024, 64 * 1024
    upstream_bytes = 0

    async def upstream(scope: Any, receive: Any, send: Any) -> None:
        nonlocal upstream_bytes
        while True:  # drains and drops each chunk, like a proxy streaming it on
            message = await receive()
            upstream_bytes += len(message.get("body", b""))
            if not message.get("more_body", False):
                break
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})

    app, service, _ = guarded(upstream, "open", max_check_bytes=1024 * 1024)
    sent = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        sent += piece
        return {"type": "http.request", "body": bytes(piece), "more_body": sent < size}

    async def send(message: dict[str, Any]) -> None:
        pass

    scope = {"type": "http", "method": "POST", "path": CHAT, "headers": [(b"content-type", b"application/json")]}
    tracemalloc.start()
    try:
        asyncio.run(app(scope, receive, send))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert upstream_bytes == size and service.bodies == []
    assert peak < 8 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB for a 32 MiB body"


@pytest.fixture(scope="module")
def small_service(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The real check service, with a body limit far below the middleware's default."""
    root = tmp_path_factory.mktemp("limits")
    (root / "policies" / "default").mkdir(parents=True)
    (root / "policies" / "default" / "config.yml").write_text(
        'colang_version: "2.x"\nrails: {input: {flows: []}, output: {flows: []}}\n'
        "detectors:\n  tool_undeclared: {action: block}\n")
    return build_app(Settings(policy_dir=root / "policies", data_dir=root / "var", max_body_bytes=3000))


class Recorder(GuardrailsClient):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sizes: list[int] = []

    async def check_raw(self, body: bytes, **options: Any) -> CheckResponse:
        self.sizes.append(len(body))
        return await super().check_raw(body, **options)


def _text_chunk(text: str) -> bytes:
    chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "Qwen/Qwen3-8B",
             "choices": [{"index": 0, "delta": {"reasoning": text}, "finish_reason": None}]}
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


@pytest.mark.parametrize("fail_mode", ["open", "closed"])
def test_a_413_from_the_service_is_decided_like_the_limit_and_not_repeated(small_service: Any,
                                                                          fail_mode: str) -> None:
    # The service's limit (3000 bytes) is below the middleware's: the growing stream re-checks cross it.
    events = [_text_chunk(f"step {i} of the plan") for i in range(40)] + [b"data: [DONE]\n\n"]
    client = Recorder("http://guardrails", transport=httpx.ASGITransport(app=small_service),
                      fail_mode=fail_mode)  # type: ignore[arg-type]
    verdicts: list[CheckResponse] = []
    app = GuardrailsMiddleware(Upstream(events), client=client, stream_check_interval_s=0.0,
                               on_verdict=lambda r, _: verdicts.append(r))
    resp = asyncio.run(post(app, chat_body(300, stream=True)))
    refused = [size for size in client.sizes if size > 3000]
    # One 413, and it is the last check sent: no later check of this stream could fit, so none is built.
    assert refused and len(refused) == 1 and client.sizes[-1] == refused[0]
    assert len(client.sizes) > 3  # the stream was re-checked while its check bodies fitted
    # That 413 decides the stream by fail_mode, once, and it is the call's last verdict.
    final = verdicts[-1]
    assert final.phase == "response" and is_synthetic(final) and "too large" in final.findings[0].message
    assert "the service refused a response check body" in final.signals["client"]["reason"]
    assert sum(is_synthetic(v) for v in verdicts) == 1
    sent = [e.raw for e in SSESplitter().feed(resp.content)]
    if fail_mode == "open":  # the rest passes unchecked, byte for byte
        assert resp.content == b"".join(events) and final.verdict == "allow"
    else:  # stopped there, long before [DONE], with the API's error event
        assert b"[DONE]" not in resp.content and b"guardrails_blocked" in sent[-1] and final.verdict == "block"
        assert len(sent) < len(events) - 5


def test_a_stream_that_outgrows_the_limit_passes_on_without_being_held(monkeypatch: pytest.MonkeyPatch) -> None:
    # Fail open: once the stream's check body is over max_check_bytes, the rest passes byte for byte and the
    # middleware keeps none of it (a 4 MB stream is not held until it ends).
    events = [_text_chunk(f"step {i} of a long plan") for i in range(20_000)] + [b"data: [DONE]\n\n"]
    sizes: list[int] = []  # the check bodies' sizes only: a stub holding them would dwarf what is measured

    def service(request: httpx.Request) -> httpx.Response:
        sizes.append(len(request.content))
        return httpx.Response(200, json=ALLOW)

    # What the stream's checker holds is read off it, not off the process's allocations (tracemalloc counts
    # whatever else the test process allocates meanwhile, and moved with the tests run before this one).
    checkers: list[StreamChecker] = []
    held_after_release: list[int] = []
    original_init, original_keep = StreamChecker.__init__, StreamChecker._keep

    def init(self: StreamChecker, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        checkers.append(self)

    def keep(self: StreamChecker, chunk: Any, data: bytes) -> None:
        original_keep(self, chunk, data)
        if released:
            held_after_release.append(len(self.response_chunks()))

    released: list[bool] = []
    original_release = StreamChecker.release

    def release(self: StreamChecker) -> None:
        original_release(self)
        released.append(True)

    monkeypatch.setattr(StreamChecker, "__init__", init)
    monkeypatch.setattr(StreamChecker, "_keep", keep)
    monkeypatch.setattr(StreamChecker, "release", release)
    client = GuardrailsClient("http://guardrails", transport=httpx.MockTransport(service), fail_mode="open")
    verdicts: list[CheckResponse] = []
    app = GuardrailsMiddleware(Upstream(events), client=client, max_check_bytes=LIMIT, stream_check_interval_s=0.0,
                               on_verdict=lambda r, _: verdicts.append(r) if is_synthetic(r) else None)
    resp = asyncio.run(post(app, chat_body(300, stream=True)))
    assert resp.content == b"".join(events)
    assert len(sizes) > 10 and max(sizes) <= LIMIT  # checked while it fitted
    assert [v.verdict for v in verdicts] == ["allow"]  # then decided once, by fail_mode
    [checker] = checkers
    assert released == [True] and checker.response_chunks() == []  # nothing kept once decided...
    assert not any(held_after_release)  # ...nor anything that arrived after


# --- 2. one deadline per check ------------------------------------------------------------------------------

class Blackholed(httpx.AsyncBaseTransport):
    """A service that never accepts: each attempt waits out its connect timeout (or `connect_s`), then fails."""

    def __init__(self, connect_s: float | None = None) -> None:
        self.connect_s = connect_s
        self.calls = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        await asyncio.sleep(self.connect_s or request.extensions["timeout"]["connect"])
        raise httpx.ConnectTimeout("timed out", request=request)


def timed_check(transport: httpx.AsyncBaseTransport, **options: Any) -> tuple[CheckResponse, float]:
    async def run() -> tuple[CheckResponse, float]:
        async with GuardrailsClient("http://svc", transport=transport, fail_mode="closed", **options) as client:
            start = time.monotonic()
            result = await client.check({"messages": [{"role": "user", "content": "hi"}]})
            return result, time.monotonic() - start

    return asyncio.run(run())


def test_a_blackholed_service_costs_one_timeout_not_one_per_retry() -> None:
    result, elapsed = timed_check(Blackholed(), timeout=0.3, retries=2)
    assert elapsed < 0.6, f"{elapsed:.2f} s for a 0.3 s deadline"
    assert result.verdict == "block" and is_synthetic(result)


def test_connect_errors_are_retried_while_the_deadline_leaves_time() -> None:
    transport = Blackholed(connect_s=0.1)  # fails fast: there is time for more attempts
    result, elapsed = timed_check(transport, timeout=0.35, retries=10, backoff_s=0.01)
    assert transport.calls >= 2  # retried
    assert elapsed < 0.7, f"{elapsed:.2f} s for a 0.35 s deadline"  # but not all 11 attempts (1.1 s)
    assert result.verdict == "block" and is_synthetic(result)


class Flaky(httpx.AsyncBaseTransport):
    def __init__(self, failures: list[Exception]) -> None:
        self.failures = failures
        self.calls = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if self.failures:
            await asyncio.sleep(0.02)
            raise self.failures.pop(0)
        return httpx.Response(200, json=ALLOW)


def test_a_connect_error_then_an_answer_within_the_deadline_gives_the_real_verdict() -> None:
    transport = Flaky([httpx.ConnectError("refused"), httpx.ConnectTimeout("timed out")])
    result, _ = timed_check(transport, timeout=2.0, retries=2, backoff_s=0.01)
    assert transport.calls == 3 and result.verdict == "allow" and not is_synthetic(result)


# --- 3. context headers -----------------------------------------------------------------------------------------

def test_utf8_context_headers_reach_the_check_as_sent() -> None:
    app, service, _ = guarded(Upstream())
    headers = {"x-user-id": "José".encode(), "x-agent-id": "agent-ü".encode(), "x-tenant-id": b"caf\xe9"}
    resp = asyncio.run(post(app, chat_body(200), headers=headers))
    assert resp.status_code == 200
    context = service.bodies[0]["context"]
    assert context["user"] == "José" and context["agent_id"] == "agent-ü"
    assert context["tenant"] == "café"  # not UTF-8: read as latin-1, as before
