"""Streamed responses: every chunk must be an event of the API the stream is read as.

Readers skip event types they do not use. Before `Adapter.check_stream`, a chunk of another API was skipped
the same way, unread: an OpenAI chunk carrying a secret after an Anthropic `message_start` got `allow`. Now
such a chunk is the documented 422 (`invalid_body`, pointer `/response/<i>`), whether the format was detected
or given, while every real stream shape (keep-alives, errors, usage-only chunks, event types added later)
is still read.
"""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

import pytest
from conftest import FIXTURES, REPO, assert_locations_resolve, fixture, sample
from fastapi.testclient import TestClient

from guardrails.adapters import ADAPTERS, read_exchange
from guardrails.config import Settings
from guardrails.errors import BodyError
from guardrails.serve import build_app
from guardrails.service import CheckService

SECRET = "AKIAQ7XK2M4PZ3LJ8VWE"  # an AWS access key id the `secret` detector flags (tests/test_secret.py)
USER = {"role": "user", "content": "What is the weather in Paris?"}
STREAM_SAMPLES = {
    "openai.chat": "openai_chat_stream.json",
    "openai.responses": "openai_responses_stream.json",
    "anthropic.messages": "anthropic_messages_stream.json",
    "gemini.interactions": "gemini_interactions_stream.json",
    "gemini": "gemini_generate_content_stream.json",
}
# One chunk of each API whose text is the secret: read as its own API, it is model output.
SECRET_CHUNKS: dict[str, dict[str, Any]] = {
    "openai.chat": {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                    "choices": [{"index": 0, "delta": {"content": f"the key is {SECRET}"}, "finish_reason": None}]},
    "openai.responses": {"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0,
                         "content_index": 0, "delta": f"the key is {SECRET}", "sequence_number": 3},
    "anthropic.messages": {"type": "content_block_delta", "index": 0,
                           "delta": {"type": "text_delta", "text": f"the key is {SECRET}"}},
    "gemini.interactions": {"event_type": "step.delta", "index": 0,
                            "delta": {"type": "text", "text": f"the key is {SECRET}"}},
    "gemini": {"candidates": [{"index": 0, "content": {"role": "model", "parts": [{"text": f"the key is {SECRET}"}]}}],
               "modelVersion": "gemini-2.5-flash"},
}
# A minimal stream of each API in which its secret chunk is read (it needs its block or item opened first).
OPENERS: dict[str, list[dict[str, Any]]] = {
    "openai.chat": [],
    "openai.responses": [{"type": "response.output_item.added", "output_index": 0, "sequence_number": 2,
                          "item": {"id": "msg_1", "type": "message", "role": "assistant", "content": []}}],
    "anthropic.messages": [{"type": "message_start", "message": {"id": "msg_1", "type": "message",
                                                                 "role": "assistant", "content": [], "model": "m"}},
                           {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}],
    "gemini.interactions": [{"event_type": "step.start", "index": 0, "step": {"type": "model_output", "content": []}}],
    "gemini": [],
}
# What each API really sends besides the events we read: keep-alives, errors, usage-only or empty chunks,
# event types we do not use or that were added after the adapter was written. All must be accepted.
KEEP_ALIVES: dict[str, list[Any]] = {
    "openai.chat": [
        {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": None}]},
        {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [],
         "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}},
        {"choices": [{"index": 0, "delta": {}}]},  # no `object`: servers that leave unset fields out
        {"id": "c", "object": "text_completion", "choices": []},
        {"error": {"message": "overloaded", "type": "InternalServerError", "param": None, "code": 500}},
        {"object": "error", "message": "overloaded", "type": "InternalServerError", "code": 500},  # older vLLM
        "[DONE]",
    ],
    "openai.responses": [
        {"type": "response.in_progress", "sequence_number": 90, "response": {"id": "resp_1", "status": "in_progress"}},
        {"type": "response.web_search_call.searching", "output_index": 5, "item_id": "ws_1", "sequence_number": 91},
        {"type": "response.some_future_event.delta", "sequence_number": 92},
        {"type": "error", "code": "server_error", "message": "overloaded", "param": None, "sequence_number": 93},
        "[DONE]",
    ],
    "anthropic.messages": [
        {"type": "ping"},
        {"event": "ping", "data": {"type": "ping"}},
        {"type": "content_block_stop", "index": 7},
        {"type": "some_future_event", "payload": {"text": "not read"}},
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
    ],
    "gemini.interactions": [
        {"event_type": "interaction.status_update", "interaction_id": "int_1", "status": "in_progress"},
        {"event_type": "step.some_future_event", "index": 9},
        {"event_type": "error", "error": {"code": 503, "message": "overloaded"}},
    ],
    "gemini": [
        {"usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9}, "modelVersion": "gemini-2.5-flash"},
        {"promptFeedback": {"blockReason": "OTHER"}},
        {"candidates": [{"index": 0, "finishReason": "STOP"}]},
        {"model_version": "gemini-2.5-flash", "usage_metadata": {"prompt_token_count": 9}},  # SDK snake_case
        {"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}},
    ],
}
REQUESTS: dict[str, dict[str, Any]] = {
    "openai.chat": {"model": "m", "messages": [USER]},
    "openai.responses": {"model": "m", "input": "What is the weather in Paris?"},
    "anthropic.messages": {"model": "m", "max_tokens": 64, "messages": [USER]},
    "gemini.interactions": {"model": "gemini-2.5-flash", "input": "What is the weather in Paris?"},
    "gemini": {"contents": [{"role": "user", "parts": [{"text": "What is the weather in Paris?"}]}]},
}
PAIRS = [(fmt, other) for fmt in ADAPTERS for other in ADAPTERS if other != fmt]


def check(service: CheckService, body: dict[str, Any]) -> dict[str, Any]:
    return asyncio.run(service.check(copy.deepcopy(body)))


def texts(body: dict[str, Any], format: str | None = None) -> list[str]:
    return [s.text for s in read_exchange(body["request"], body["response"], format=format).segments]


# --- the secret chunk is flagged when read as its own API: what the refusal below protects -----------------
@pytest.mark.parametrize("fmt", list(ADAPTERS))
def test_each_secret_chunk_is_blocked_when_read_as_its_own_api(service: CheckService, fmt: str) -> None:
    body = {"request": REQUESTS[fmt], "response": [*OPENERS[fmt], SECRET_CHUNKS[fmt]]}
    result = check(service, body)
    assert result["format"] == fmt and result["verdict"] == "block"
    assert "secret" in {f["category"] for f in result["findings"]}


# --- a chunk of another API is refused, never skipped ----------------------------------------------------
@pytest.mark.parametrize(("fmt", "other"), PAIRS)
def test_a_chunk_of_another_api_is_refused_with_its_pointer_when_the_format_is_given(fmt: str, other: str) -> None:
    chunks = [*OPENERS[fmt], *KEEP_ALIVES[fmt][:1], SECRET_CHUNKS[other]]
    with pytest.raises(BodyError) as err:
        read_exchange(REQUESTS[fmt], chunks, format=fmt)
    assert err.value.type == "invalid_body"
    assert err.value.pointer == f"/response/{len(chunks) - 1}"
    assert err.value.message.startswith(f"expected {ADAPTERS[fmt].stream_event}, got ")
    assert fmt in err.value.message


@pytest.mark.parametrize(("fmt", "other"), PAIRS)
def test_a_whole_stream_of_another_api_is_refused_at_its_first_chunk(fmt: str, other: str) -> None:
    with pytest.raises(BodyError) as err:
        read_exchange(REQUESTS[fmt], [*OPENERS[other], SECRET_CHUNKS[other]], format=fmt)
    assert (err.value.type, err.value.pointer) == ("invalid_body", "/response/0")


@pytest.mark.parametrize(("fmt", "other"), PAIRS)
def test_detection_on_a_mixed_list_is_a_422_not_a_silent_pick(fmt: str, other: str) -> None:
    body = sample(STREAM_SAMPLES[fmt])
    chunks = body["response"]
    mixed = [chunks[0], SECRET_CHUNKS[other], *chunks[1:]]
    with pytest.raises(BodyError) as err:
        read_exchange(body["request"], mixed)
    assert err.value.status == 422
    if err.value.type == "ambiguous_format":  # the chunks tied two formats: nothing was picked
        return
    # Whichever format the first chunks made detection pick, a chunk that is not of it is named (the first
    # when the foreign chunk won detection) before the request is read as that format.
    assert err.value.type == "invalid_body" and err.value.pointer in ("/response/0", "/response/1")
    assert "every chunk of a stream must be an event of the API it is read as" in err.value.message


def test_the_reviewers_case_anthropic_start_then_an_openai_chunk_with_a_secret(service: CheckService) -> None:
    body = {"request": REQUESTS["openai.chat"],
            "response": [OPENERS["anthropic.messages"][0], SECRET_CHUNKS["openai.chat"]]}
    for format in (None, "anthropic.messages"):
        with pytest.raises(BodyError) as err:
            check(service, {**body, **({"format": format} if format else {})})
        assert (err.value.type, err.value.pointer) == ("invalid_body", "/response/1")
        assert "Anthropic Messages stream event" in err.value.message
        assert "object 'chat.completion.chunk'" in err.value.message


def test_the_http_api_answers_422_with_the_documented_error_shape() -> None:
    app = build_app(Settings(policy_dir=REPO / "policies"))
    body = {"request": REQUESTS["openai.chat"], "format": "gemini",
            "response": [SECRET_CHUNKS["gemini"], SECRET_CHUNKS["openai.chat"]]}
    with TestClient(app) as client:
        resp = client.post("/v1/checks", json=body)
    assert resp.status_code == 422
    error = resp.json()["error"]
    assert error["type"] == "invalid_body" and error["pointer"] == "/response/1"
    assert error["message"].startswith("expected a Gemini streamGenerateContent chunk")


@pytest.mark.parametrize("chunk", [{}, {"id": "x", "model": "m"}, {"object": "chat.completion", "choices": []},
                                   {"type": "content_block_delta"}, {"candidates": []}, {"event_type": "step.delta"}])
def test_chat_refuses_objects_that_are_no_chat_chunk(chunk: dict[str, Any]) -> None:
    with pytest.raises(BodyError) as err:
        read_exchange(REQUESTS["openai.chat"], [SECRET_CHUNKS["openai.chat"], chunk], format="openai.chat")
    assert err.value.pointer == "/response/1"


@pytest.mark.parametrize("chunk", [{"type": "response.output_text.delta"}, {"type": "Message_Start"},
                                   {"event": "x", "data": {"candidates": []}}, {"type": 5}, {}])
def test_anthropic_refuses_what_is_no_event_name(chunk: dict[str, Any]) -> None:
    with pytest.raises(BodyError) as err:
        read_exchange(REQUESTS["anthropic.messages"], [*OPENERS["anthropic.messages"], chunk])
    assert err.value.pointer == "/response/2"


def test_a_whole_response_inside_a_chunk_list_is_refused_not_skipped() -> None:
    # A chat.completion's choice has a `message`, which the stream reader never reads: refused at the choice.
    whole = {"choices": [{"index": 0, "message": {"role": "assistant", "content": SECRET}}]}
    with pytest.raises(BodyError) as err:
        read_exchange(REQUESTS["openai.chat"], [whole])
    assert err.value.pointer == "/response/0/choices/0/message"


# --- everything real servers send is still read ----------------------------------------------------------
@pytest.mark.parametrize("fmt", list(ADAPTERS))
def test_keep_alives_errors_and_unknown_event_types_of_the_api_are_still_accepted(fmt: str) -> None:
    body = sample(STREAM_SAMPLES[fmt])
    chunks = body["response"]
    extra = KEEP_ALIVES[fmt]
    padded = {**body, "response": [chunks[0], *extra[:1], *chunks[1:], *extra[1:]]}
    assert texts(padded) == texts(body)
    assert texts(padded, fmt) == texts(body)
    assert_locations_resolve(padded, read_exchange(padded["request"], padded["response"]))


@pytest.mark.parametrize("fmt", list(ADAPTERS))
def test_every_sample_stream_reads_detected_and_with_its_format_given(fmt: str) -> None:
    body = sample(STREAM_SAMPLES[fmt])
    assert read_exchange(body["request"], body["response"]).format == fmt
    assert read_exchange(body["request"], body["response"], format=fmt).format == fmt


def test_anthropic_events_wrapped_with_their_sse_name_are_still_read() -> None:
    body = sample(STREAM_SAMPLES["anthropic.messages"])
    wrapped = {**body, "response": [{"event": e["type"], "data": e} for e in body["response"]]}
    assert texts(wrapped) == texts(body)


def test_the_vllm_sse_capture_with_its_done_marker_is_read() -> None:
    fixture("chat_completion_stream_reasoning_tool_call_logprobs.chunks.json")  # skips without shared/
    raw = (FIXTURES / "chat_completion_stream_reasoning_tool_call_logprobs.sse").read_text(encoding="utf-8")
    events = [e.removeprefix("data: ") for e in raw.split("\n\n") if e.startswith("data: ")]
    chunks = [e if e == "[DONE]" else json.loads(e) for e in events]
    assert chunks[-1] == "[DONE]"
    assert any(c.get("choices") == [] for c in chunks[:-1])  # the usage-only chunk
    assert any(ch.get("delta") == {} for c in chunks[:-1] for ch in c["choices"])  # swallowed-token chunks
    body = {"request": {"messages": [USER]}, "response": chunks}
    exchange = read_exchange(body["request"], chunks)
    assert [s.kind.value for s in exchange.segments[1:]] == ["reasoning", "tool_call"]
    assert_locations_resolve(body, exchange)
