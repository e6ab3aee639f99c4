"""End to end over real sockets: the official openai/anthropic SDKs -> samples/gateway (with and without the
middleware) -> a stub vLLM serving the 0.33.0 fixture shapes; the middleware calls the real check service.

Allowed calls are byte-identical through both gateways; blocked calls make each SDK raise its own error
type, for plain and streamed calls, and a blocked stream stops the upstream generating.
"""

from __future__ import annotations

import asyncio
import copy
import importlib.util
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from stub_vllm_gateway import ServerThread, StubModelServer, fixtures_present, sample

from guardrails.config import Settings
from guardrails.serve import build_app

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(not fixtures_present(), reason="shared vLLM fixtures not found (GUARDRAILS_SHARED_DIR)")


def load_gateway_module() -> Any:
    spec = importlib.util.spec_from_file_location("sample_gateway", REPO / "samples/gateway/app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Stack:
    def __init__(self, vllm: ServerThread, stub: StubModelServer, plain: ServerThread,
                 guarded: ServerThread) -> None:
        self.vllm, self.stub, self.plain, self.guarded = vllm, stub, plain, guarded


def minimal_policy(root: Path) -> Path:
    """Only the always-on tool_undeclared detector: keeps the service start fast (no Presidio, no NeMo)."""
    (root / "default").mkdir()
    (root / "default" / "config.yml").write_text(
        'colang_version: "2.x"\nrails: {input: {flows: []}, output: {flows: []}}\n'
        "on_detector_error: warn\ndetectors:\n  tool_undeclared: {action: block}\n")
    return root


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    gateway = load_gateway_module()
    stub = StubModelServer(delay_s=0.002)  # a decode loop is never instant: lets a stop be observed
    policies = minimal_policy(tmp_path_factory.mktemp("policies"))
    with ServerThread(stub.app) as vllm, \
            ServerThread(build_app(Settings(policy_dir=policies, data_dir=policies / "var"))) as service, \
            ServerThread(gateway.create_gateway(vllm.url)) as plain, \
            ServerThread(gateway.create_gateway(vllm.url, guardrails_url=service.url, fail_mode="closed")) as guarded:
        assert httpx.get(service.url + "/readyz", timeout=60).status_code == 200  # builds the detectors once
        yield Stack(vllm, stub, plain, guarded)


# --- requests: what an agent sends; `blocked` leaves the called tool undeclared -----------------------

def chat_request(stream: bool, blocked: bool = False) -> dict[str, Any]:
    request = copy.deepcopy(sample("openai_chat.json")["request"])  # declares get_weather and get_time
    request["stream"] = stream
    if blocked:
        request["tools"] = [t for t in request["tools"] if t["function"]["name"] != "get_weather"]
    return request


def responses_request(stream: bool, blocked: bool = False) -> dict[str, Any]:
    request = copy.deepcopy(sample("openai_responses.json")["request"])
    request["stream"] = stream
    if blocked:
        request["tools"] = [{**request["tools"][0], "name": "get_time"}]
    return request


def messages_request(stream: bool, blocked: bool = False) -> dict[str, Any]:
    request = copy.deepcopy(sample("anthropic_messages.json")["request"])
    request["stream"] = stream
    if blocked:
        request["tools"] = [t for t in request["tools"] if t["name"] != "get_weather"]
    return request


CALLS = {"/v1/chat/completions": chat_request, "/v1/responses": responses_request, "/v1/messages": messages_request}


def raw_post(base: str, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(base + path, content=json.dumps(body).encode(), headers={"content-type": "application/json"},
                      timeout=10)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("path", list(CALLS))
def test_allowed_calls_are_byte_identical_through_the_guarded_gateway(stack: Stack, path: str, stream: bool) -> None:
    body = CALLS[path](stream)
    direct = raw_post(stack.vllm.url, path, body)
    plain = raw_post(stack.plain.url, path, body)
    guarded = raw_post(stack.guarded.url, path, body)
    assert direct.status_code == plain.status_code == guarded.status_code == 200
    assert guarded.content == plain.content == direct.content
    assert "x-guardrails-verdict" not in guarded.headers

    def headers(resp: httpx.Response) -> list[tuple[str, str]]:
        return [(k, v) for k, v in resp.headers.multi_items() if k != "date"]

    assert headers(guarded) == headers(plain)


def test_chat_fixture_bytes_reach_the_client_unchanged(stack: Stack) -> None:
    fixtures = StubModelServer
    assert raw_post(stack.guarded.url, "/v1/chat/completions", chat_request(False)).content == \
        fixtures.fixture_bytes("chat_completion_reasoning_2_tool_calls_logprobs.json")
    assert raw_post(stack.guarded.url, "/v1/chat/completions", chat_request(True)).content == \
        b"".join(fixtures.chat_stream_events())


def openai_client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.guarded.url + "/v1", api_key="test", max_retries=0)


def anthropic_client(stack: Stack) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack.guarded.url, api_key="test", max_retries=0)


def test_sdks_parse_allowed_calls(stack: Stack) -> None:
    chat = openai_client(stack).chat.completions.create(**chat_request(False))
    assert [c.function.name for c in chat.choices[0].message.tool_calls or ()] == ["get_weather", "get_time"]
    chunks = list(openai_client(stack).chat.completions.create(**chat_request(True)))
    assert chunks[-1].usage is not None
    events = list(openai_client(stack).responses.create(**responses_request(True)))
    assert events[-1].type == "response.completed"
    message = anthropic_client(stack).messages.create(**messages_request(False))
    assert message.content[-1].type == "tool_use"
    with anthropic_client(stack).messages.stream(**_without_stream(messages_request(True))) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"


def _without_stream(request: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in request.items() if k != "stream"}


def test_openai_sdk_raises_bad_request_on_blocked_calls(stack: Stack) -> None:
    client = openai_client(stack)
    with pytest.raises(openai.BadRequestError) as chat_error:
        client.chat.completions.create(**chat_request(False, blocked=True))
    assert chat_error.value.code == "guardrails_blocked" and "get_weather" in chat_error.value.message
    assert chat_error.value.response.headers["x-guardrails-verdict"] == "block"
    with pytest.raises(openai.BadRequestError) as responses_error:
        client.responses.create(**responses_request(False, blocked=True))
    assert responses_error.value.code == "guardrails_blocked"


def test_openai_sdk_raises_api_error_mid_stream(stack: Stack) -> None:
    received: list[Any] = []
    with pytest.raises(openai.APIError) as error:
        for chunk in openai_client(stack).chat.completions.create(**chat_request(True, blocked=True)):
            received.append(chunk)
    assert "tool_undeclared" in error.value.message
    # The reasoning arrived; the undeclared call's name chunk never did.
    reasoning = "".join(getattr(c.choices[0].delta, "reasoning", None) or "" for c in received if c.choices)
    assert "Paris" in reasoning
    assert not any(c.choices and c.choices[0].delta.tool_calls for c in received)
    events: list[Any] = []
    with pytest.raises(openai.APIError):
        for event in openai_client(stack).responses.create(**responses_request(True, blocked=True)):
            events.append(event)
    assert events and not any(e.type == "response.completed" for e in events)


def test_anthropic_sdk_raises_on_blocked_calls(stack: Stack) -> None:
    client = anthropic_client(stack)
    with pytest.raises(anthropic.BadRequestError) as error:
        client.messages.create(**messages_request(False, blocked=True))
    assert error.value.body["error"]["type"] == "invalid_request_error"
    events: list[Any] = []
    with pytest.raises(anthropic.APIError):
        for event in client.messages.create(**messages_request(True, blocked=True)):
            events.append(event)
    assert [e.type for e in events][:2] == ["message_start", "content_block_start"]
    assert not any(e.type == "content_block_start" and e.content_block.type == "tool_use" for e in events)


def test_async_sdks_behave_the_same(stack: Stack) -> None:
    async def run() -> None:
        client = openai.AsyncOpenAI(base_url=stack.guarded.url + "/v1", api_key="test", max_retries=0)
        with pytest.raises(openai.APIError):
            async for _ in await client.chat.completions.create(**chat_request(True, blocked=True)):
                pass
        aclient = anthropic.AsyncAnthropic(base_url=stack.guarded.url, api_key="test", max_retries=0)
        with pytest.raises(anthropic.APIError):
            async for _ in await aclient.messages.create(**messages_request(True, blocked=True)):
                pass

    asyncio.run(run())


def test_a_blocked_stream_stops_the_upstream(stack: Stack) -> None:
    total = len(StubModelServer.chat_stream_events())
    _wait_until_idle(stack.stub)  # a stream an earlier test dropped may still be sending into the counter
    stack.stub.delay_s = 0.02
    try:
        stack.stub.events_sent = 0
        resp = raw_post(stack.guarded.url, "/v1/chat/completions", chat_request(True, blocked=True))
        assert b'"code":"guardrails_blocked"' in resp.content
        time.sleep(0.3)  # had the upstream kept going, it would have sent everything by now
        assert stack.stub.events_sent < total - 5
    finally:
        stack.stub.delay_s = 0.002


def _wait_until_idle(stub: StubModelServer, quiet_s: float = 0.1, limit_s: float = 5.0) -> None:
    """Until the stub has sent nothing for `quiet_s`."""
    deadline = time.monotonic() + limit_s
    last = -1
    while stub.events_sent != last and time.monotonic() < deadline:
        last = stub.events_sent
        time.sleep(quiet_s)
