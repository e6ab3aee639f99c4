"""samples/gateway/litellm_guardrail.py, the LiteLLM hook of docs/gateway-integration.md §4.

Its pure parts are tested always. Its hooks run against this project's app in-process (httpx ASGI transport) when
LiteLLM is importable, with LiteLLM's own objects (ModelResponse, ModelResponseStream, Responses events, the
logging object, UserAPIKeyAuth); they skip otherwise. To run them:

    python3 -m venv /tmp/litellm-venv && /tmp/litellm-venv/bin/pip install 'litellm[proxy]' pytest <this project's deps>
    PYTHONPATH=. /tmp/litellm-venv/bin/python -m pytest tests/test_litellm_hook.py

`litellm_data` builds the request dict the way LiteLLM 1.106.2's proxy hands it to the hooks (its keys were
recorded from a real proxy in front of a vLLM-shaped upstream).
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import importlib.util
import json
import os
from collections.abc import AsyncIterator, Iterable
from types import ModuleType, SimpleNamespace
from typing import Any

import httpx
import pytest
from conftest import REPO, sample

from guardrails.config import Settings
from guardrails.serve import build_app

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # importing litellm would fetch its price list


def _load_hook() -> ModuleType:
    spec = importlib.util.spec_from_file_location("litellm_guardrail", REPO / "samples/gateway/litellm_guardrail.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hook = _load_hook()
CALLER_KEY = "sk-caller-0123456789abcdef"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class NotJson:
    """Stands for the live objects LiteLLM puts in the dict (aiohttp session, Deployment, Logging)."""


def litellm_data(request: dict[str, Any], logging_obj: Any, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """`request` as LiteLLM's proxy hands it to a post-call hook: what it added before and after the pre-call."""
    sent_headers = {"host": "litellm:4000", "content-type": "application/json", **(headers or {})}
    return {
        **copy.deepcopy(request),
        "metadata": {"headers": sent_headers, "used_client_oauth_token": False, "requester_metadata": {}},
        "proxy_server_request": {"url": "http://litellm:4000/v1/chat/completions", "method": "POST",
                                 "headers": sent_headers, "body": copy.deepcopy(request)},
        "secret_fields": {"raw_headers": {"authorization": f"Bearer {CALLER_KEY}"}},
        "litellm_call_id": "67c3aa8d-55fd-4701-85a7-1c9208228242",
        "litellm_logging_obj": logging_obj,
        "_litellm_client_requested_model": request.get("model"),
        "shared_session": NotJson(),  # added after the pre-call hook, with the next two
        "deployment": NotJson(),
    }


def stand_in_logging(call_type: str) -> SimpleNamespace:
    return SimpleNamespace(call_type=call_type)


# --- the pure parts (no LiteLLM) -------------------------------------------------------------------

@pytest.mark.parametrize("name", ["openai_chat.json", "openai_responses.json", "anthropic_messages.json",
                                  "openai_chat_stream.json"])
def test_api_request_is_exactly_what_the_caller_sent(name: str) -> None:
    request = sample(name)["request"]
    assert hook.api_request(litellm_data(request, stand_in_logging("acompletion"))) == request


def test_api_request_never_carries_the_callers_key_or_litellm_objects() -> None:
    data = litellm_data(sample("openai_chat.json")["request"], stand_in_logging("acompletion"))
    sent = json.dumps(hook.api_request(data))  # raises on a live object
    assert CALLER_KEY not in sent and "litellm" not in sent


def test_check_format_follows_litellm_call_types() -> None:
    assert hook.check_format("acompletion") == "openai.chat"
    assert hook.check_format("atext_completion") == "openai.chat"
    assert hook.check_format("aresponses") == "openai.responses"
    assert hook.check_format("anthropic_messages") == "anthropic.messages"
    assert hook.check_format(SimpleNamespace(value="aresponses")) == "openai.responses"  # a CallTypes member
    assert hook.check_format("aembedding") is None
    assert hook.check_format(None) is None


def test_context_from_the_key_litellm_session_and_headers() -> None:
    key = SimpleNamespace(team_id="acme", user_id="u-42", agent_id=None)
    data = litellm_data({"model": "qwen3", "messages": []}, stand_in_logging("acompletion"), headers={
        "X-Agent-Id": "travel-agent", "x-tenant-id": "forged", "traceparent": TRACEPARENT})
    data["metadata"]["session_id"] = "s-123"
    assert hook.check_context(key, data) == {
        "tenant": "acme", "user": "u-42", "agent_id": "travel-agent", "session_id": "s-123",
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7"}


def test_context_ignores_a_malformed_traceparent_and_a_key_without_identity() -> None:
    data = litellm_data({"model": "qwen3", "messages": []}, stand_in_logging("acompletion"),
                        headers={"traceparent": "garbage", "x-session-id": "s-9"})
    assert hook.check_context(SimpleNamespace(team_id=None, user_id=None), data) == {"session_id": "s-9"}


def test_as_json_drops_litellm_hidden_params_from_anthropic_answers() -> None:
    answer = sample("anthropic_messages.json")["response"]
    assert hook.as_json({**answer, "_hidden_params": {"model_id": "e94d"}}) == answer


def sse_frames(events: Iterable[dict[str, Any]]) -> list[bytes]:
    """Anthropic Messages events the way the streaming hook gets them from LiteLLM: SSE bytes."""
    return [f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events]


def test_stream_events_reads_anthropic_sse_bytes() -> None:
    events = sample("anthropic_messages_stream.json")["response"]
    assert [e for frame in sse_frames(events) for e in hook.stream_events(frame)] == events


@pytest.mark.parametrize(("name", "first_tool", "completions"), [
    ("openai_chat_stream.json", 22, []),  # complete when it ends
    ("openai_responses_stream.json", 41, [56]), ("anthropic_messages_stream.json", 13, [19])])
def test_stream_trigger_finds_the_first_tool_call_and_the_completion(name: str, first_tool: int,
                                                                      completions: list[int]) -> None:
    triggers = [hook.stream_trigger(event) for event in sample(name)["response"]]
    assert triggers.index("tool") == first_tool
    assert [i for i, trigger in enumerate(triggers) if trigger == "final"] == completions


def test_block_message_names_categories_first_finding_and_check_id() -> None:
    result = {"verdict": "block", "check_id": "chk_1", "findings": [
        {"category": "tool_schema", "action": "block", "message": "missing required 'city'"},
        {"category": "pii", "action": "warn", "message": "email address"}]}
    assert hook.block_message(result) == "Blocked by guardrails (tool_schema): missing required 'city' [check chk_1]"
    assert hook.block_message(result, hook.STOP_MID_STREAM) is None  # more chunks can still fix a schema
    assert hook.block_message({**result, "verdict": "warn"}) is None


# --- the hooks, with LiteLLM, against this project's app ----------------------------------------------

@pytest.fixture(scope="module")
def litellm() -> ModuleType:
    return pytest.importorskip("litellm", reason="LiteLLM is not installed here: run this file with a LiteLLM "
                                                   "venv to test the hooks (docs/gateway-integration.md §4)")


@pytest.fixture(scope="module")
def app() -> Any:
    return build_app(Settings(policy_dir=REPO / "policies"))


class Recording(httpx.AsyncBaseTransport):
    """The check bodies the hook sends, passed on to the app."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.bodies: list[dict[str, Any]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(json.loads(request.content))
        return await self.inner.handle_async_request(request)


def guardrail(transport: httpx.AsyncBaseTransport, **params: Any) -> Any:
    """Built as LiteLLM's guardrail registry builds it from litellm_config.yaml."""
    return hook.InferenceGuardrails(guardrail_name="inference-guardrails", event_hook=["pre_call", "post_call"],
                                    default_on=True, api_base="http://guardrails.test", transport=transport,
                                    **params)


def logging_obj(call_type: str) -> Any:
    from litellm.litellm_core_utils.litellm_logging import Logging

    return Logging(model="qwen3", messages=[], stream=False, call_type=call_type,
                   start_time=datetime.datetime.now(), litellm_call_id="call-1", function_id="fn-1")


def api_key(**identity: Any) -> Any:
    from litellm.proxy._types import UserAPIKeyAuth

    return UserAPIKeyAuth(**identity)


def blocked(litellm: ModuleType) -> type[Exception]:
    return litellm.exceptions.GuardrailRaisedException


def test_pre_call_checks_the_request_and_returns_it_unchanged(litellm: ModuleType, app: Any) -> None:
    async def run() -> None:
        recording = Recording(httpx.ASGITransport(app=app))
        data = litellm_data(sample("openai_chat.json")["request"], logging_obj("acompletion"))
        returned = await guardrail(recording).async_pre_call_hook(api_key(team_id="acme", user_id="u-42"), None,
                                                                  data, "acompletion")
        assert returned is data
        assert recording.bodies == [{"request": sample("openai_chat.json")["request"], "format": "openai.chat",
                                     "context": {"tenant": "acme", "user": "u-42"}}]

    asyncio.run(run())


def test_pre_call_blocks_an_injection_in_a_tool_message(litellm: ModuleType, app: Any) -> None:
    async def run() -> None:
        data = litellm_data(sample("attacks/openai_chat_exfiltration.json")["request"], logging_obj("acompletion"))
        with pytest.raises(blocked(litellm)) as raised:
            await guardrail(httpx.ASGITransport(app=app)).async_pre_call_hook(api_key(), None, data, "acompletion")
        assert raised.value.status_code == 400
        assert raised.value.message.startswith("Blocked by guardrails (prompt_injection): ")
        assert "[check chk_" in raised.value.message

    asyncio.run(run())


def chat_model_response(litellm: ModuleType, body: dict[str, Any]) -> Any:
    """What LiteLLM makes of a vLLM Chat answer (reasoning_content, provider_specific_fields...)."""
    from litellm.litellm_core_utils.llm_response_utils.convert_dict_to_response import (
        convert_to_model_response_object,
    )

    return convert_to_model_response_object(response_object=copy.deepcopy(body),
                                            model_response_object=litellm.ModelResponse())


def test_post_call_checks_litellm_model_response_and_blocks_an_undeclared_tool(litellm: ModuleType,
                                                                                app: Any) -> None:
    async def run() -> None:
        exchange = sample("openai_chat.json")
        response = chat_model_response(litellm, exchange["response"])
        declared = litellm_data(exchange["request"], logging_obj("acompletion"))
        assert await guardrail(httpx.ASGITransport(app=app)).async_post_call_success_hook(
            declared, api_key(), response) is response
        undeclared = litellm_data({**exchange["request"], "tools": []}, logging_obj("acompletion"))
        with pytest.raises(blocked(litellm), match=r"\(tool_undeclared\): tool call to undeclared tool"):
            await guardrail(httpx.ASGITransport(app=app)).async_post_call_success_hook(undeclared, api_key(), response)

    asyncio.run(run())


def test_post_call_reads_responses_and_anthropic_answers_as_their_api(litellm: ModuleType, app: Any) -> None:
    from litellm.types.llms.openai import ResponsesAPIResponse

    async def run() -> None:
        recording = Recording(httpx.ASGITransport(app=app))
        responses, messages = sample("openai_responses.json"), sample("anthropic_messages.json")
        await guardrail(recording).async_post_call_success_hook(
            litellm_data(responses["request"], logging_obj("aresponses")), api_key(),
            ResponsesAPIResponse(**responses["response"]))
        await guardrail(recording).async_post_call_success_hook(  # LiteLLM answers /v1/messages with a dict
            litellm_data(messages["request"], logging_obj("anthropic_messages")), api_key(),
            {**messages["response"], "_hidden_params": {"model_id": "e94d"}})
        assert [body["format"] for body in recording.bodies] == ["openai.responses", "anthropic.messages"]
        assert recording.bodies[1]["response"] == messages["response"]

    asyncio.run(run())


async def chunks_of(items: Iterable[Any]) -> AsyncIterator[Any]:
    for item in items:
        yield item


async def drain(stream: AsyncIterator[Any], into: list[Any]) -> None:
    async for chunk in stream:
        into.append(chunk)


def test_chat_stream_stops_before_the_chunk_naming_an_undeclared_tool(litellm: ModuleType, app: Any) -> None:
    from litellm.types.utils import ModelResponseStream

    async def run() -> None:
        exchange = sample("openai_chat_stream.json")
        chunks = [ModelResponseStream(**chunk) for chunk in exchange["response"]]
        recording = Recording(httpx.ASGITransport(app=app))
        data = litellm_data({**exchange["request"], "tools": []}, logging_obj("acompletion"))
        passed: list[Any] = []
        with pytest.raises(blocked(litellm), match=r"\(tool_undeclared\)"):
            await drain(guardrail(recording).async_post_call_streaming_iterator_hook(
                api_key(team_id="acme"), chunks_of(chunks), data), passed)
        assert len(passed) == 22  # every chunk before the tool call's name
        mid_stream, final = recording.bodies  # the block then counts for the caller (budgets, audit, streaks)
        assert "context" not in mid_stream and final == {**mid_stream, "context": {"tenant": "acme"}}

    asyncio.run(run())


def test_chat_stream_passes_every_chunk_and_is_checked_complete(litellm: ModuleType, app: Any) -> None:
    from litellm.types.utils import ModelResponseStream

    async def run() -> None:
        exchange = sample("openai_chat_stream.json")
        chunks = [ModelResponseStream(**chunk) for chunk in exchange["response"]]
        recording = Recording(httpx.ASGITransport(app=app))
        passed: list[Any] = []
        await drain(guardrail(recording).async_post_call_streaming_iterator_hook(
            api_key(team_id="acme"), chunks_of(chunks), litellm_data(exchange["request"], logging_obj("acompletion"))),
            passed)
        assert passed == chunks
        final = recording.bodies[-1]
        assert final["context"] == {"tenant": "acme"} and len(final["response"]) == len(chunks)  # the whole stream

    asyncio.run(run())


def test_responses_and_anthropic_streams_stop_at_an_undeclared_tool(litellm: ModuleType, app: Any) -> None:
    from litellm.llms.openai.responses.transformation import OpenAIResponsesAPIConfig

    def responses_event(event: dict[str, Any]) -> Any:
        return OpenAIResponsesAPIConfig.get_event_model_class(event_type=event["type"])(**event)

    async def run(name: str, call_type: str, chunks: list[Any], stop_at: int) -> None:
        exchange = sample(name)
        passed: list[Any] = []
        data = litellm_data({**exchange["request"], "tools": []}, logging_obj(call_type))
        with pytest.raises(blocked(litellm), match=r"\(tool_undeclared\)"):
            await drain(guardrail(httpx.ASGITransport(app=app)).async_post_call_streaming_iterator_hook(
                api_key(), chunks_of(chunks), data), passed)
        assert len(passed) == stop_at

    responses = sample("openai_responses_stream.json")["response"]
    asyncio.run(run("openai_responses_stream.json", "aresponses", [responses_event(e) for e in responses], 41))
    messages = sample("anthropic_messages_stream.json")["response"]
    asyncio.run(run("anthropic_messages_stream.json", "anthropic_messages", sse_frames(messages), 13))


def refused(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("All connection attempts failed", request=request)


def test_no_verdict_fails_closed_with_503_or_open_when_configured(litellm: ModuleType) -> None:
    async def run() -> None:
        data = litellm_data(sample("openai_chat.json")["request"], logging_obj("acompletion"))
        with pytest.raises(blocked(litellm), match="guardrails service gave no verdict: ConnectError") as raised:
            await guardrail(httpx.MockTransport(refused)).async_pre_call_hook(api_key(), None, data, "acompletion")
        assert raised.value.status_code == 503
        fail_open = guardrail(httpx.MockTransport(refused), unreachable_fallback="fail_open")
        assert await fail_open.async_pre_call_hook(api_key(), None, data, "acompletion") is data

    asyncio.run(run())


def test_a_refused_check_is_no_verdict(litellm: ModuleType) -> None:
    keyed_app = build_app(Settings(policy_dir=REPO / "policies", api_keys=("right-key",)))

    async def run() -> None:
        data = litellm_data(sample("openai_chat.json")["request"], logging_obj("acompletion"))
        wrong_key = guardrail(httpx.ASGITransport(app=keyed_app), api_key="wrong-key")
        with pytest.raises(blocked(litellm), match="401"):
            await wrong_key.async_pre_call_hook(api_key(), None, data, "acompletion")
        right_key = guardrail(httpx.ASGITransport(app=keyed_app), api_key="right-key")
        assert await right_key.async_pre_call_hook(api_key(), None, data, "acompletion") is data

    asyncio.run(run())


def test_calls_of_other_apis_pass_unchecked(litellm: ModuleType) -> None:
    async def run() -> None:
        data = {"model": "embedder", "input": ["hello"], "litellm_logging_obj": logging_obj("aembedding")}
        unreachable = guardrail(httpx.MockTransport(refused))
        assert await unreachable.async_pre_call_hook(api_key(), None, data, "aembedding") is data

    asyncio.run(run())
