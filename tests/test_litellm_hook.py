"""samples/gateway/litellm_guardrail.py, the LiteLLM hook of docs/gateway-integration.md §4.

Its pure parts are tested always, and so is its stream handling: the hooks run against this project's app
in-process (httpx ASGI transport) with stand-ins for the two LiteLLM classes the file imports. With LiteLLM
importable, those tests run with LiteLLM's classes too, and the hooks are tested with LiteLLM's own objects
(ModelResponse, ModelResponseStream, Responses events, the logging object, UserAPIKeyAuth); they skip otherwise.
To run them:

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
import itertools
import json
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from types import ModuleType, SimpleNamespace
from typing import Any
from unittest import mock

import httpx
import pytest
from conftest import REPO, sample

from guardrails.config import Settings
from guardrails.serve import build_app

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # importing litellm would fetch its price list


def _load_hook(name: str = "litellm_guardrail") -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, REPO / "samples/gateway/litellm_guardrail.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class StandInBlocked(Exception):
    """LiteLLM's GuardrailRaisedException, as far as the hook uses it."""

    def __init__(self, guardrail_name: str | None = None, message: str = "",
                 should_wrap_with_default_message: bool = True, status_code: int = 400,
                 blocked_content: bool = False) -> None:
        super().__init__(message)
        self.message, self.status_code = message, status_code


class StandInGuardrail:
    """LiteLLM's CustomGuardrail, as far as the hook uses it."""

    def __init__(self, guardrail_name: str | None = None, timeout: float | None = None, **kwargs: Any) -> None:
        self.guardrail_name, self.timeout = guardrail_name, timeout


def _load_hook_with_stand_ins() -> ModuleType:
    litellm = ModuleType("litellm")
    exceptions, integrations = ModuleType("litellm.exceptions"), ModuleType("litellm.integrations")
    custom_guardrail = ModuleType("litellm.integrations.custom_guardrail")
    exceptions.GuardrailRaisedException = StandInBlocked  # type: ignore[attr-defined]
    custom_guardrail.CustomGuardrail = StandInGuardrail  # type: ignore[attr-defined]
    with mock.patch.dict(sys.modules, {"litellm": litellm, "litellm.exceptions": exceptions,
                                       "litellm.integrations": integrations,
                                       "litellm.integrations.custom_guardrail": custom_guardrail}):
        return _load_hook("litellm_guardrail_with_stand_ins")


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


def anthropic_sse(events: Iterable[dict[str, Any]], line_end: str = "\n") -> bytes:
    """A Messages stream as an Anthropic upstream sends it (UTF-8 text unescaped)."""
    return "".join(f"event: {e['type']}{line_end}data: {json.dumps(e, ensure_ascii=False)}{line_end}{line_end}"
                   for e in events).encode()


def accented_stream() -> list[dict[str, Any]]:
    """The Messages sample stream with answer text in 2-, 3- and 4-byte UTF-8 characters."""
    events = copy.deepcopy(sample("anthropic_messages_stream.json")["response"])
    first_text = next(e for e in events if (e.get("delta") or {}).get("type") == "text_delta")
    first_text["delta"]["text"] = "Voilà : deux vols du matin pour 東京 🌧, "
    return events


def sliced(data: bytes, size: int) -> list[bytes]:
    """`data` cut the way `aiter_bytes()` may hand it on: anywhere."""
    return [data[at:at + size] for at in range(0, len(data), size)]


def cuts_inside_characters(data: bytes) -> list[int]:
    """Each offset in `data` that falls inside a multi-byte UTF-8 character."""
    return [at for at in range(1, len(data)) if data[at] & 0xC0 == 0x80]


def cut_inside_each_character(data: bytes) -> list[bytes]:
    """`data` cut at each offset inside a multi-byte UTF-8 character."""
    bounds = [0, *cuts_inside_characters(data), len(data)]
    return [data[start:end] for start, end in itertools.pairwise(bounds)]


def read_stream(module: ModuleType, chunks: Iterable[Any]) -> tuple[list[dict[str, Any]], list[Any]]:
    """The events a StreamReader reads from `chunks`, and the chunks it passes on."""
    reader, events, passed = module.StreamReader(), [], []
    for chunk in chunks:
        events += reader.read(chunk)
        passed += reader.take()
    events += reader.end()
    return events, passed + reader.take()


@pytest.mark.parametrize("size", [1, 7, 40, 1 << 20])
def test_anthropic_sse_bytes_cut_anywhere_read_as_the_whole_stream(size: int) -> None:
    events = accented_stream()
    whole = anthropic_sse(events)
    read, passed = read_stream(hook, sliced(whole, size))
    assert read == events
    assert b"".join(passed) == whole
    assert all(chunk.endswith(b"\n\n") for chunk in passed)  # whole events only: a stop never leaves half of one


def test_anthropic_sse_cut_inside_a_multi_byte_character() -> None:
    events = accented_stream()
    whole = anthropic_sse(events)
    cuts = cuts_inside_characters(whole)
    assert len(cuts) == 1 + 2 + 2 + 3  # à, 東, 京, 🌧
    for cut in cuts:
        with pytest.raises(UnicodeDecodeError):
            whole[:cut].decode()
        read, passed = read_stream(hook, [whole[:cut], whole[cut:]])
        assert read == events and b"".join(passed) == whole


def test_anthropic_sse_with_crlf_line_ends() -> None:
    events = accented_stream()
    whole = anthropic_sse(events, "\r\n")
    read, passed = read_stream(hook, sliced(whole, 7))
    assert read == events
    assert b"".join(passed) == whole and all(chunk.endswith(b"\r\n\r\n") for chunk in passed)


def test_sse_events_skip_comments_and_done_and_join_data_lines() -> None:
    stream = (b": keep-alive\n\n"
              b"event: ping\ndata: {\"type\":\ndata: \"ping\"}\n\n"
              b"data: [DONE]\n\n"
              b"event: message_stop\ndata: {\"type\": \"message_stop\"}")  # the last one without its blank line
    read, passed = read_stream(hook, sliced(stream, 5))
    assert read == [{"type": "ping"}, {"type": "message_stop"}]
    assert b"".join(passed) == stream


@pytest.mark.parametrize("event", [b'data: {"type": "content_block_delta", "ind\n\n', b'data: {"text": "\xe9"}\n\n',
                                   b"data: [1, 2]\n\n"])
def test_an_unreadable_sse_event_raises_and_the_reader_releases_what_it_holds(event: bytes) -> None:
    reader = hook.StreamReader()
    assert reader.read(b'data: {"type": "ping"}\n\n' + event[:9]) == [{"type": "ping"}]
    assert reader.take() == [b'data: {"type": "ping"}\n\n']
    with pytest.raises(ValueError):
        reader.read(event[9:] + b"data: {}")
    assert reader.release() == [event + b"data: {}"]


def test_litellm_objects_are_read_one_event_each() -> None:
    chunks = sample("openai_chat_stream.json")["response"]
    assert read_stream(hook, chunks) == (chunks, chunks)


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
        routing, mid_stream, final = recording.bodies  # the block then counts for the caller (budgets, audit, ...)
        assert routing == {"request": data_request(data), "format": "openai.chat", "context": {"tenant": "acme"}}
        assert "context" not in mid_stream and mid_stream.pop("policy") == "default"  # what routing gives acme
        assert final == {**mid_stream, "context": {"tenant": "acme"}}

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


# --- streams, with stand-ins for LiteLLM's classes (and with LiteLLM's when it is importable) ------------------

class StandInLogging:
    """LiteLLM's logging object of a call, as far as the hook uses it (weakly referenced, as the real one)."""

    def __init__(self, call_type: str) -> None:
        self.call_type = call_type


@dataclass(frozen=True)
class Kit:
    """The hook module with the LiteLLM classes it runs with, and the hooks' arguments made as those want them."""

    hook: ModuleType
    blocked: type[Exception]
    logging_obj: Callable[[str], Any]
    api_key: Callable[..., Any]
    chat_chunk: Callable[[dict[str, Any]], Any]

    def guardrail(self, transport: httpx.AsyncBaseTransport, **params: Any) -> Any:
        return self.hook.InferenceGuardrails(guardrail_name="inference-guardrails",
                                             event_hook=["pre_call", "post_call"], default_on=True,
                                             api_base="http://guardrails.test", transport=transport, **params)


@pytest.fixture(scope="module", params=["stand-ins", "litellm"])
def kit(request: pytest.FixtureRequest) -> Kit:
    if request.param == "stand-ins":
        return Kit(_load_hook_with_stand_ins(), StandInBlocked, StandInLogging, SimpleNamespace, dict)
    litellm = request.getfixturevalue("litellm")
    from litellm.types.utils import ModelResponseStream

    return Kit(hook, blocked(litellm), logging_obj, api_key, lambda chunk: ModelResponseStream(**chunk))


@pytest.fixture(scope="module")
def routed_app(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The service with a routing.yml that puts tenant `bank` on a stricter policy than everyone else."""
    root = tmp_path_factory.mktemp("policies")
    strict = "detectors:\n  tool_undeclared:\n    action: block\n"
    for name, config in (("lenient", "detectors: {}\n"), ("strict", strict)):
        (root / name).mkdir()
        (root / name / "config.yml").write_text(config)
    (root / "routing.yml").write_text("default: lenient\ntenants:\n  bank: strict\n")
    return build_app(Settings(policy_dir=root))


def data_request(data: dict[str, Any]) -> dict[str, Any]:
    return data["proxy_server_request"]["body"]


async def run_stream(guard: Any, key: Any, chunks: Iterable[Any], data: dict[str, Any]) -> tuple[list[Any], Any]:
    """What the streaming hook passes on, and what it raised (None: nothing)."""
    passed: list[Any] = []
    try:
        await drain(guard.async_post_call_streaming_iterator_hook(key, chunks_of(chunks), data), passed)
    except Exception as exc:
        return passed, exc
    return passed, None


def without_check_id(message: str) -> str:
    return message.split(" [check ")[0]


@pytest.mark.parametrize("tools", ["declared", "undeclared"])
def test_an_anthropic_stream_cut_anywhere_gets_the_checks_of_its_whole_events(kit: Kit, app: Any, tools: str) -> None:
    exchange = sample("anthropic_messages_stream.json")
    request = exchange["request"] if tools == "declared" else {**exchange["request"], "tools": []}
    events = accented_stream()
    whole = anthropic_sse(events)

    async def run(chunks: list[bytes]) -> tuple[bytes, str | None, list[dict[str, Any]]]:
        recording = Recording(httpx.ASGITransport(app=app))
        data = litellm_data(request, kit.logging_obj("anthropic_messages"))
        passed, raised = await run_stream(kit.guardrail(recording), kit.api_key(), chunks, data)
        assert raised is None or isinstance(raised, kit.blocked), repr(raised)
        return b"".join(passed), raised and without_check_id(raised.message), recording.bodies

    frames = [anthropic_sse([event]) for event in events]
    by_event = asyncio.run(run(frames))  # one SSE event per chunk
    in_characters = [piece for frame in frames for piece in cut_inside_each_character(frame)]
    assert len(in_characters) == len(frames) + 8  # à, 東, 京 and 🌧 each cut after every byte but their last
    for chunks in (sliced(whole, 7), sliced(whole, 1), in_characters):
        assert asyncio.run(run(chunks)) == by_event
    passed, message, bodies = by_event
    if tools == "declared":
        assert (passed, message, bodies[-1]["response"]) == (whole, None, events)
    else:  # stopped before the tool_use block, on whole events only
        assert passed == anthropic_sse(events[:13])
        assert message == ("Blocked by guardrails (tool_undeclared): tool call to undeclared tool 'get_weather' "
                           "(the request declared no tools)")


@pytest.mark.parametrize("garbled", [b'event: content_block_delta\ndata: {"type": "content_block_delta", "ind\n\n',
                                     b'data: {"type": "content_block_delta", "text": "caf\xe9"}\n\n'])
def test_an_unreadable_event_is_decided_by_the_fail_mode(kit: Kit, app: Any, garbled: bytes) -> None:
    exchange = sample("anthropic_messages_stream.json")
    events = accented_stream()
    head = anthropic_sse(events[:3])
    stream = head + garbled + anthropic_sse(events[3:])

    async def run(**params: Any) -> tuple[bytes, Any]:
        data = litellm_data(exchange["request"], kit.logging_obj("anthropic_messages"))
        passed, raised = await run_stream(kit.guardrail(httpx.ASGITransport(app=app), **params), kit.api_key(),
                                          sliced(stream, 7), data)
        return b"".join(passed), raised

    passed, raised = asyncio.run(run())
    assert passed == head and isinstance(raised, kit.blocked) and raised.status_code == 503
    assert raised.message.startswith("unreadable stream event: ")
    assert asyncio.run(run(unreachable_fallback="fail_open")) == (stream, None)  # the rest goes on unchecked


@pytest.mark.parametrize("pre_call", [True, False])  # False: a guardrail in `mode: post_call`
def test_mid_stream_checks_use_the_policy_routing_gives_the_caller(kit: Kit, routed_app: Any, pre_call: bool) -> None:
    exchange = sample("openai_chat_stream.json")
    request = {**exchange["request"], "tools": []}
    chunks = [kit.chat_chunk(chunk) for chunk in exchange["response"]]

    async def run() -> tuple[list[Any], Any, list[dict[str, Any]]]:
        recording = Recording(httpx.ASGITransport(app=routed_app))
        guard, key = kit.guardrail(recording), kit.api_key(team_id="bank")
        data = litellm_data(request, kit.logging_obj("acompletion"))
        if pre_call:
            await guard.async_pre_call_hook(key, None, data, "acompletion")
        passed, raised = await run_stream(guard, key, chunks, data)
        return passed, raised, recording.bodies

    passed, raised, bodies = asyncio.run(run())
    assert isinstance(raised, kit.blocked) and "(tool_undeclared)" in raised.message
    assert len(passed) == 22  # the strict policy stopped it before the tool call's name, not at the end
    request_check, mid_stream, final = bodies  # the pre-call check, or the one that asks for the routed policy
    assert request_check == {"request": request, "format": "openai.chat", "context": {"tenant": "bank"}}
    assert mid_stream == {"request": request, "response": mid_stream["response"], "format": "openai.chat",
                          "policy": "strict", "partial": True}  # no context: budgets count the call once
    assert len(mid_stream["response"]) == 23 and final["context"] == {"tenant": "bank"} and "policy" not in final
    assert "partial" not in final  # the final check's verdict is the one that counts
