"""A gateway engineer's walkthrough (client, ASGI middleware, sample gateway), over real sockets where the HTTP
framing matters: what broke for a client SDK, and stays fixed.

* The sample gateway decompressed a non-streamed answer but kept the upstream's `content-encoding: gzip`:
  every client (httpx, the OpenAI SDK) failed to decode it ("Connection error").
* It copied the upstream's `date` and `server` headers beside its own server's: two of each reached clients.
* A checked stream kept the upstream's `content-length`: a block (cut stream plus error event) broke the HTTP
  framing, and the server dropped the connection.
* With `fail_mode="closed"`, a compressed (unreadable) answer passed unchecked.
* A raising `on_verdict` hook (the gateway's metrics) failed every call it reported on.
"""

from __future__ import annotations

import asyncio
import copy
import gzip
import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from starlette.responses import Response
from stub_vllm_gateway import CHAT_FIXTURE, ServerThread, StubModelServer, fixtures_present, sample

from guardrails.client import GuardrailsClient, is_synthetic
from guardrails.config import Settings
from guardrails.contract import CheckResponse
from guardrails.middleware import GuardrailsMiddleware
from guardrails.serve import build_app

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(not fixtures_present(), reason="shared vLLM fixtures not found (GUARDRAILS_SHARED_DIR)")
CHAT = "/v1/chat/completions"


def load_gateway_module() -> Any:
    spec = importlib.util.spec_from_file_location("sample_gateway_walkthrough2", REPO / "samples/gateway/app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def service_app(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The real service, with only the always-on tool_undeclared detector (fast to build)."""
    root = tmp_path_factory.mktemp("walkthrough2")
    (root / "default").mkdir()
    (root / "default" / "config.yml").write_text(
        'colang_version: "2.x"\nrails: {input: {flows: []}, output: {flows: []}}\n'
        "on_detector_error: warn\ndetectors:\n  tool_undeclared: {action: block}\n")
    return build_app(Settings(policy_dir=root, data_dir=root / "var"))


def chat_request(stream: bool, blocked: bool = False) -> dict[str, Any]:
    """The Chat sample's request; `blocked` leaves get_weather (which the recorded answer calls) undeclared."""
    request = copy.deepcopy(sample("openai_chat.json")["request"])
    request["stream"] = stream
    if blocked:
        request["tools"] = [t for t in request["tools"] if t["function"]["name"] != "get_weather"]
    return request


async def _drain(receive: Any) -> None:
    while (await receive()).get("more_body"):
        pass


async def gzip_upstream(scope: Any, receive: Any, send: Any) -> None:
    """An upstream (or a proxy before it) that compresses whatever the gateway asked for."""
    await _drain(receive)
    body = gzip.compress(StubModelServer.fixture_bytes(CHAT_FIXTURE))
    await Response(body, media_type="application/json", headers={"content-encoding": "gzip"})(scope, receive, send)


async def buffered_sse_upstream(scope: Any, receive: Any, send: Any) -> None:
    """The vLLM Chat stream fixture sent whole, with a `content-length` (a buffering proxy, a recorded stream)."""
    await _drain(receive)
    body = b"".join(StubModelServer.chat_stream_events())
    await Response(body, media_type="text/event-stream")(scope, receive, send)


def guarded(upstream: Any, service_app: Any, **options: Any) -> GuardrailsMiddleware:
    client = GuardrailsClient("http://guardrails", transport=httpx.ASGITransport(app=service_app),
                              fail_mode=options.pop("fail_mode", "closed"))
    return GuardrailsMiddleware(upstream, client=client, **options)


def post(base: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(base + CHAT, json=body, timeout=30)


@pytest.fixture(scope="module")
def sample_gateway() -> Iterator[str]:
    """samples/gateway without guardrails in front of an upstream that gzips its answers."""
    gateway = load_gateway_module()
    with ServerThread(gzip_upstream) as upstream, ServerThread(gateway.create_gateway(upstream.url)) as proxy:
        yield proxy.url


def test_sample_gateway_passes_a_compressed_answer_on_as_sent(sample_gateway: str) -> None:
    resp = post(sample_gateway, chat_request(False))
    assert resp.status_code == 200 and resp.headers["content-encoding"] == "gzip"
    assert resp.content == StubModelServer.fixture_bytes(CHAT_FIXTURE)  # httpx decoded what was sent
    answer = openai.OpenAI(base_url=sample_gateway + "/v1", api_key="test", max_retries=0).chat.completions.create(
        **chat_request(False))
    assert [c.function.name for c in answer.choices[0].message.tool_calls or ()] == ["get_weather", "get_time"]


def test_sample_gateway_answers_carry_one_date_and_one_server_header(sample_gateway: str) -> None:
    resp = post(sample_gateway, chat_request(False))
    assert len(resp.headers.get_list("date")) == 1 and len(resp.headers.get_list("server")) == 1


def test_a_stream_blocked_after_an_upstream_content_length_ends_with_its_error_event(service_app: Any) -> None:
    with ServerThread(guarded(buffered_sse_upstream, service_app)) as gateway:
        allowed = post(gateway.url, chat_request(True))
        assert allowed.content == b"".join(StubModelServer.chat_stream_events())
        blocked = post(gateway.url, chat_request(True, blocked=True))  # used to raise RemoteProtocolError
        assert blocked.status_code == 200 and "content-length" not in blocked.headers
        assert blocked.text.endswith('"code":"guardrails_blocked"}}\n\n')
        assert '"name":"get_weather"' not in blocked.text  # stopped before the undeclared call's name
        sdk = openai.OpenAI(base_url=gateway.url + "/v1", api_key="test", max_retries=0)
        with pytest.raises(openai.APIError, match="tool_undeclared"):
            for _ in sdk.chat.completions.create(**chat_request(True, blocked=True)):
                pass


def call(app: Any, body: dict[str, Any]) -> httpx.Response:
    async def run() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as http:
            return await http.post(CHAT, json=body)

    return asyncio.run(run())


def test_a_compressed_answer_fails_closed_in_the_apis_error_shape(service_app: Any) -> None:
    verdicts: list[CheckResponse] = []
    resp = call(guarded(gzip_upstream, service_app, on_verdict=lambda r, _: verdicts.append(r)), chat_request(False))
    assert resp.status_code == 400 and resp.headers["x-guardrails-verdict"] == "block"
    error = resp.json()["error"]
    assert error["code"] == "guardrails_blocked" and "content-encoding gzip" in error["message"]
    assert verdicts[-1].verdict == "block" and is_synthetic(verdicts[-1])


def test_a_compressed_answer_passes_as_sent_when_failing_open(service_app: Any) -> None:
    verdicts: list[CheckResponse] = []
    app = guarded(gzip_upstream, service_app, fail_mode="open", on_verdict=lambda r, _: verdicts.append(r))
    resp = call(app, chat_request(False))
    assert resp.status_code == 200 and resp.content == StubModelServer.fixture_bytes(CHAT_FIXTURE)
    assert [v.phase for v in verdicts] == ["request", "response"] and is_synthetic(verdicts[-1])


def test_a_failing_on_verdict_hook_does_not_fail_the_call(service_app: Any, caplog: pytest.LogCaptureFixture) -> None:
    def broken_metrics(result: CheckResponse, info: Any) -> None:
        raise RuntimeError("metrics backend down")

    upstream = StubModelServer()
    app = guarded(upstream.app, service_app, on_verdict=broken_metrics)
    assert call(app, chat_request(False)).content == StubModelServer.fixture_bytes(CHAT_FIXTURE)
    streamed = call(app, chat_request(True))
    assert streamed.content == b"".join(StubModelServer.chat_stream_events())
    blocked = call(app, chat_request(False, blocked=True))
    assert blocked.status_code == 400 and "tool_undeclared" in blocked.json()["error"]["message"]
    assert "on_verdict hook failed" in caplog.text

