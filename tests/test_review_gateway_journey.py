"""Regressions found by following docs/gateway-integration.md as a gateway engineer.

* `fail_mode="closed"` and a check service that goes away mid-stream: the first re-check that cannot be made
  stops the stream there, with the API's SSE error event. It used to be a `detector_error` block outside
  `stream_stop_categories`, so the stream went on unchecked to its end (every later trigger waiting out the
  client's timeout) and only `[DONE]` was withheld.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from stub_vllm_gateway import StubModelServer, fixtures_present, sample

from guardrails.client import GuardrailsClient, is_synthetic
from guardrails.contract import CheckResponse
from guardrails.middleware import GuardrailsMiddleware
from guardrails.middleware.sse import SSESplitter

pytestmark = pytest.mark.skipif(not fixtures_present(), reason="shared vLLM fixtures not found (GUARDRAILS_SHARED_DIR)")

CHAT = "/v1/chat/completions"
ALLOW = CheckResponse.model_json_schema()["example"] | {"verdict": "allow", "phase": "request", "findings": []}


class GoneAfterInput:
    """A check service that answers the input check, then stops accepting connections (output checks)."""

    def __init__(self) -> None:
        self.output_attempts = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if b',"response":' in request.content:
            self.output_attempts += 1
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(200, json=ALLOW)


def sse_events(raw: bytes) -> list[bytes]:
    splitter = SSESplitter()
    events = [event.raw for event in splitter.feed(raw)]
    tail = splitter.flush()
    return events + ([tail.raw] if tail else [])


async def post_stream(app: Any, body: dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as http:
        return await http.post(CHAT, content=json.dumps(body).encode(), headers={"content-type": "application/json"})


def test_fail_closed_stream_stops_at_the_first_check_the_service_cannot_answer() -> None:
    service = GoneAfterInput()
    client = GuardrailsClient("http://guardrails", transport=httpx.MockTransport(service), retries=0,
                              fail_mode="closed")
    upstream = StubModelServer()
    verdicts: list[CheckResponse] = []
    app = GuardrailsMiddleware(upstream.app, client=client, on_verdict=lambda result, _: verdicts.append(result))
    request = sample("openai_chat_stream.json")["request"]  # the fixture stream's own request (stream: true)

    resp = asyncio.run(post_stream(app, request))

    fixture = StubModelServer.chat_stream_events()
    first_trigger = next(i for i, event in enumerate(fixture) if b'"reasoning"' in event)  # first re-check
    sent = sse_events(resp.content)
    assert resp.status_code == 200
    # Everything before the unanswerable re-check went out as received; its own chunk and the rest did not.
    assert sent[:-1] == fixture[:first_trigger]
    error = json.loads(sent[-1].removeprefix(b"data: "))["error"]
    assert error["code"] == "guardrails_unavailable" and "could not check" in error["message"]
    assert b'"name":"get_weather"' not in resp.content and b"[DONE]" not in resp.content
    # Decided once, by fail_mode: no further check is attempted against a service that is gone.
    assert service.output_attempts == 1
    assert [(v.phase, v.verdict) for v in verdicts] == [("request", "allow"), ("response", "block")]
    assert is_synthetic(verdicts[-1])
    assert upstream.events_sent < len(fixture)  # the upstream was told to stop generating
