"""A response is read only as what it is: a response of another API, or of none, is a 422, never an empty `allow`.

Each adapter skips the fields it does not know. A gateway that translates between APIs can send the request of
one API and the response of another: the response was read as empty and allowed, a secret in it unread (a Chat
request with a Responses `output_text`, a Gemini request with a Chat `choices`...). So was a Chat response with no
`choices` at all, and a Chat choice whose `message` or `reasoning` was of the wrong type. Findings about a call
whose name or arguments text is empty pointed at nothing (start == end): they now cover what they are about.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_findings_resolve, fixture
from fastapi.testclient import TestClient

from guardrails.adapters import ADAPTERS, read_exchange
from guardrails.config import Settings
from guardrails.contract import CheckResponse, ErrorResponse
from guardrails.errors import BodyError
from guardrails.exchange import Phase
from guardrails.pointer import resolve
from guardrails.serve import build_app

REPO = Path(__file__).resolve().parent.parent
TOKEN = "ghp_aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5"  # a GitHub token: the default policy blocks it anywhere
SAY = f"Here is the key: {TOKEN}"
USER = [{"role": "user", "content": "hi"}]

REQUESTS: dict[str, dict[str, Any]] = {
    "openai.chat": {"model": "m", "messages": USER},
    "openai.responses": {"model": "m", "input": "hi"},
    "anthropic.messages": {"model": "m", "max_tokens": 5, "system": "s", "messages": USER},
    "gemini": {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
    "gemini.interactions": {"model": "m", "input": "hi", "generation_config": {}},
}
RESPONSES: dict[str, dict[str, Any]] = {
    "openai.chat": {"object": "chat.completion", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": SAY}, "finish_reason": "stop"}]},
    "openai.responses": {"object": "response", "status": "completed", "output": [
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": SAY}]}]},
    "anthropic.messages": {"type": "message", "role": "assistant", "content": [{"type": "text", "text": SAY}]},
    "gemini": {"candidates": [{"content": {"role": "model", "parts": [{"text": SAY}]}, "finishReason": "STOP"}]},
    "gemini.interactions": {"id": "i", "object": "interaction", "status": "completed",
                            "outputs": [{"type": "text", "text": SAY}]},
}
PAIRS = [(rq, rs) for rq in REQUESTS for rs in RESPONSES if rq != rs]
# The pairs the review found read as empty and allowed: detection picks the request's API.
ALLOWED_BEFORE = [("openai.chat", "openai.responses"), ("gemini", "openai.chat"), ("gemini", "openai.responses"),
                  ("gemini.interactions", "openai.chat"), ("gemini.interactions", "openai.responses")]
# What each API's whole response must carry (one of), as the 422 names it.
FIELDS = {"openai.chat": '"choices"', "openai.responses": '"output"', "anthropic.messages": '"content"',
          "gemini": '"candidates"', "gemini.interactions": '"steps"'}


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(build_app(Settings(policy_dir=REPO / "policies", max_body_bytes=256 * 1024)))


def check(client: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    resp = client.post("/v1/checks", json=body)
    assert resp.status_code == 200, resp.text
    payload = resp.json()
    CheckResponse.model_validate(payload)
    return payload


def error_of(client: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    resp = client.post("/v1/checks", json=body)
    assert resp.status_code == 422, resp.text
    payload = resp.json()
    ErrorResponse.model_validate(payload)
    return payload["error"]


def refused(request: Any, response: Any, format: str | None = None) -> BodyError:
    with pytest.raises(BodyError) as err:
        read_exchange(request, response, format=format)
    return err.value


# --- a response of another API ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("request_api", "response_api"), ALLOWED_BEFORE, ids=[f"{a}+{b}" for a, b in ALLOWED_BEFORE])
def test_a_response_of_another_api_is_ambiguous_not_an_empty_allow(
        client: TestClient, request_api: str, response_api: str) -> None:
    error = error_of(client, {"request": REQUESTS[request_api], "response": RESPONSES[response_api]})
    assert (error["type"], error["pointer"]) == ("ambiguous_format", "/response")
    message = error["message"]
    assert message.startswith(f"the body mixes APIs: it was detected as {request_api}, but its response carries ")
    assert f"({response_api})" in message  # what was found, and whose it is
    assert FIELDS[request_api] in message  # what was expected


@pytest.mark.parametrize(("request_api", "response_api"), PAIRS, ids=[f"{a}+{b}" for a, b in PAIRS])
def test_no_pair_of_apis_lets_the_response_text_through_unread(
        client: TestClient, request_api: str, response_api: str) -> None:
    # Every pair is a 422 (of whichever rule catches it first) or a check that read the response and blocked.
    resp = client.post("/v1/checks", json={"request": REQUESTS[request_api], "response": RESPONSES[response_api]})
    if resp.status_code == 200:
        assert [f["category"] for f in resp.json()["findings"]] == ["secret"]
    else:
        assert resp.status_code == 422 and resp.json()["error"]["type"] in ("ambiguous_format", "invalid_body")


@pytest.mark.parametrize(("format", "response_api"), PAIRS, ids=[f"{a}+{b}" for a, b in PAIRS])
def test_with_format_given_another_apis_response_is_an_invalid_body(format: str, response_api: str) -> None:
    err = refused(REQUESTS[format], RESPONSES[response_api], format)
    assert (err.type, err.pointer) == ("invalid_body", "/response")
    assert err.message.startswith(f"expected {ADAPTERS[format].response_kind}, got a response that carries ")
    assert f"({response_api})" in err.message and err.message.endswith(f"the body is read as, {format}")


@pytest.mark.parametrize("format", list(RESPONSES))
def test_a_response_with_its_own_fields_and_another_apis_is_refused_too(format: str) -> None:
    # Its own fields read, the other API's text skipped: still a response that would pass partly unread.
    other = "gemini" if format != "gemini" else "openai.chat"
    mixed = {**RESPONSES[format], **{k: v for k, v in RESPONSES[other].items() if k not in RESPONSES[format]}}
    err = refused(REQUESTS[format], mixed, format)
    assert (err.type, err.pointer) == ("invalid_body", "/response") and f"({other})" in err.message


# --- a response of no API -------------------------------------------------------------------------------------
NOT_RESPONSES = [{}, {"choice": RESPONSES["openai.chat"]["choices"]}, {"object": "chat.completion", "id": "x"},
                 {"choices": None}, {"result": SAY}]


@pytest.mark.parametrize("format", list(RESPONSES))
@pytest.mark.parametrize("response", NOT_RESPONSES, ids=["empty", "choice", "object only", "null choices", "other"])
def test_a_response_without_its_apis_fields_is_an_invalid_body(format: str, response: dict[str, Any]) -> None:
    for given in (format, None):
        if given is None and format != "openai.chat":
            continue  # detection of the other requests is covered by the given format: the same rule runs
        err = refused(REQUESTS[format], response, given)
        assert (err.type, err.pointer) == ("invalid_body", "/response"), err.message
        assert err.message.startswith(f"expected {ADAPTERS[format].response_kind}, got ")
        assert FIELDS[format] in err.message


def test_the_reviewed_empty_chat_responses_are_refused(client: TestClient) -> None:
    for response in ({}, {"choice": RESPONSES["openai.chat"]["choices"]}):
        error = error_of(client, {"request": REQUESTS["openai.chat"], "response": response})
        assert (error["type"], error["pointer"]) == ("invalid_body", "/response")
        assert error["message"].startswith('expected an OpenAI Chat Completions (or legacy Completions) response, '
                                           'with "choices", got ')


# --- what real servers send still reads -----------------------------------------------------------------------
REAL_EMPTY = [
    ("chat: no choices (n=0, a filtered prompt)", "openai.chat", {"object": "chat.completion", "choices": []}),
    ("chat: null content", "openai.chat", {"choices": [{"index": 0, "finish_reason": "stop",
                                                        "message": {"role": "assistant", "content": None}}]}),
    ("responses: queued in the background", "openai.responses",
     {"id": "resp_1", "object": "response", "status": "queued", "output": []}),
    ("anthropic: no content blocks", "anthropic.messages",
     {"type": "message", "role": "assistant", "content": [], "stop_reason": "end_turn"}),
    ("gemini: a blocked prompt", "gemini",
     {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 4}, "modelVersion": "g"}),
    ("chat: a choice filtered before any text (Azure)", "openai.chat",
     {"object": "chat.completion", "choices": [{"index": 0, "finish_reason": "content_filter",
                                                "content_filter_results": {"hate": {"filtered": True}}}]}),
    ("chat: a choice that failed (OpenRouter)", "openai.chat",
     {"object": "chat.completion", "choices": [{"index": 0, "finish_reason": "error",
                                                "error": {"code": 502, "message": "upstream error"}}]}),
    ("gemini: no candidate at all (proto JSON leaves the empty list out)", "gemini",
     {"usageMetadata": {"promptTokenCount": 5, "totalTokenCount": 5}, "modelVersion": "gemini-2.5-flash",
      "responseId": "r"}),
    ("interactions: still in progress", "gemini.interactions",
     {"id": "int_1", "status": "in_progress", "model": "gemini-3.7-flash"}),
    ("interactions: steps schema", "gemini.interactions",
     {"id": "int_1", "status": "completed", "steps": [{"type": "model_output", "content": []}]}),
]


@pytest.mark.parametrize(("format", "response"), [c[1:] for c in REAL_EMPTY], ids=[c[0] for c in REAL_EMPTY])
def test_real_responses_without_text_are_read(format: str, response: dict[str, Any]) -> None:
    exchange = read_exchange(REQUESTS[format], response, format=format)
    assert exchange.has_response
    assert not [s for s in exchange.segments if s.phase is Phase.RESPONSE]


ERROR_BODIES = [
    {"error": {"message": "overloaded", "type": "InternalServerError", "param": None, "code": 500}},  # vLLM, OpenAI
    {"object": "error", "message": "overloaded", "type": "InternalServerError", "code": 500},  # older vLLM
    {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},  # Anthropic
    {"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}},  # Google
    {"error": "Input validation error: `top_p` must be > 0.0 and < 1.0", "error_type": "validation"},  # TGI
]


@pytest.mark.parametrize("format", list(RESPONSES))
@pytest.mark.parametrize("response", ERROR_BODIES, ids=["openai", "old vllm", "anthropic", "google", "tgi"])
def test_an_api_error_body_is_nothing_generated(format: str, response: dict[str, Any]) -> None:
    exchange = read_exchange(REQUESTS[format], response, format=format)
    assert exchange.has_response and not [s for s in exchange.segments if s.phase is Phase.RESPONSE]


VLLM_FIXTURES = {
    "chat_completion_reasoning_2_tool_calls_logprobs.json": ("openai.chat", REQUESTS["openai.chat"]),
    "chat_completion_content_logprobs.json": ("openai.chat", REQUESTS["openai.chat"]),
    "chat_completion_prompt_logprobs.json": ("openai.chat", REQUESTS["openai.chat"]),
    "completion_echo_max_tokens0_logprobs0_scoring.json": (
        "openai.chat", {"model": "m", "prompt": "The capital of France is Paris. Ça va très bien.", "echo": True,
                        "max_tokens": 0, "logprobs": 0}),
    "responses_reasoning_function_call_message_logprobs.json": ("openai.responses", REQUESTS["openai.responses"]),
    "anthropic_messages_thinking_tool_use.json": ("anthropic.messages", {"model": "m", "max_tokens": 9,
                                                                         "messages": USER}),
    "chat_completion_stream_reasoning_tool_call_logprobs.chunks.json": ("openai.chat", REQUESTS["openai.chat"]),
}


@pytest.mark.parametrize("name", list(VLLM_FIXTURES))
def test_every_vllm_fixture_is_read_detected_and_given(name: str) -> None:
    format, request = VLLM_FIXTURES[name]
    response = fixture(name)
    assert read_exchange(request, response).format == format
    assert read_exchange(request, response, format=format).has_response


SAMPLES = sorted((REPO / "samples").glob("**/*.json"))


@pytest.mark.parametrize("path", SAMPLES, ids=[p.stem for p in SAMPLES])
def test_every_sample_is_read_with_its_format_given(path: Path) -> None:
    body = json.loads(path.read_text(encoding="utf-8"))
    detected = read_exchange(body["request"], body.get("response"))
    given = read_exchange(body["request"], body.get("response"), format=detected.format)
    assert len(given.segments) == len(detected.segments)


# --- Chat: wrong types are 422s, as in the other adapters --------------------------------------------------------
def chat_with(choice: dict[str, Any]) -> dict[str, Any]:
    return {"object": "chat.completion", "choices": [choice]}


WRONG_CHAT = [
    ("message string", {"index": 0, "message": SAY}, "/response/choices/0/message"),
    ("message list", {"index": 0, "message": [{"role": "assistant", "content": SAY}]}, "/response/choices/0/message"),
    ("message number", {"index": 0, "message": 7}, "/response/choices/0/message"),
    ("reasoning number", {"message": {"role": "assistant", "content": "ok", "reasoning": 1}},
     "/response/choices/0/message/reasoning"),
    ("reasoning list", {"message": {"role": "assistant", "content": "ok", "reasoning": [SAY]}},
     "/response/choices/0/message/reasoning"),
    ("reasoning object", {"message": {"role": "assistant", "content": "ok", "reasoning": {"text": SAY}}},
     "/response/choices/0/message/reasoning"),
    ("reasoning_content list", {"message": {"role": "assistant", "reasoning_content": [SAY]}},
     "/response/choices/0/message/reasoning_content"),
    ("a second reasoning key of the wrong type", {"message": {"role": "assistant", "reasoning": "thinking",
                                                              "reasoning_content": [SAY]}},
     "/response/choices/0/message/reasoning_content"),
    ("refusal list", {"message": {"role": "assistant", "content": None, "refusal": [SAY]}},
     "/response/choices/0/message/refusal"),
    ("a stream chunk's delta", {"index": 0, "delta": {"content": SAY}}, "/response/choices/0/delta"),
    ("completions text list", {"index": 0, "text": [SAY]}, "/response/choices/0/text"),
    ("neither message nor text", {"index": 0, "messages": {"role": "assistant", "content": SAY}},
     "/response/choices/0"),
]


@pytest.mark.parametrize(("choice", "pointer"), [c[1:] for c in WRONG_CHAT], ids=[c[0] for c in WRONG_CHAT])
def test_a_chat_choice_of_the_wrong_shape_is_a_422_at_its_field(choice: dict[str, Any], pointer: str) -> None:
    for format in ("openai.chat", None):
        err = refused(REQUESTS["openai.chat"], chat_with(choice), format)
        assert (err.type, err.pointer) == ("invalid_body", pointer), err.message


def test_the_reviewed_wrong_types_are_refused_at_the_first(client: TestClient) -> None:
    # The review's body: a reasoning array in choice 0, a string message in choice 1; both were read as nothing.
    choices = [{"index": 0, "message": {"role": "assistant", "content": "ok", "reasoning": [f"the key is {TOKEN}"]},
                "finish_reason": "stop"},
               {"index": 1, "message": f"the key is {TOKEN}", "finish_reason": "stop"}]
    body = {"request": REQUESTS["openai.chat"], "response": {"object": "chat.completion", "choices": choices}}
    error = error_of(client, body)
    assert (error["type"], error["pointer"]) == ("invalid_body", "/response/choices/0/message/reasoning")
    assert error["message"] == "message reasoning must be a string or null, got an array"


def test_null_fields_and_empty_reasoning_still_read_as_before() -> None:
    message = {"role": "assistant", "content": SAY, "reasoning": "", "reasoning_content": "plan", "refusal": None,
               "tool_calls": None}
    exchange = read_exchange(REQUESTS["openai.chat"], chat_with({"index": 0, "message": message}))
    texts = [(s.kind.value, s.text, s.pointer) for s in exchange.segments if s.phase is Phase.RESPONSE]
    assert texts == [("reasoning", "plan", "/response/choices/0/message/reasoning_content"),
                     ("assistant", SAY, "/response/choices/0/message/content")]


STREAM_DELTAS = [
    ("content object", {"content": {"type": "text", "text": SAY}}, "content"),
    ("reasoning number", {"reasoning": 5}, "reasoning"),
    ("reasoning_content object", {"reasoning_content": {"text": SAY}}, "reasoning_content"),
    ("refusal list", {"refusal": [SAY]}, "refusal"),
]


@pytest.mark.parametrize(("delta", "key"), [c[1:] for c in STREAM_DELTAS], ids=[c[0] for c in STREAM_DELTAS])
def test_a_chat_stream_delta_of_the_wrong_type_is_a_422(delta: dict[str, Any], key: str) -> None:
    chunks = [{"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"role": "assistant"}}]},
              {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta}]}]
    err = refused(REQUESTS["openai.chat"], chunks)
    assert (err.type, err.pointer) == ("invalid_body", f"/response/1/choices/0/delta/{key}")


def test_a_chat_stream_delta_with_content_parts_is_read() -> None:
    # Mistral's streams send `delta.content` as an array of parts: its text parts are read, at their pointers.
    chunks = [{"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"role": "assistant"}}]},
              {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": [
                  {"type": "thinking", "thinking": [{"type": "text", "text": "hmm"}]},
                  {"type": "text", "text": SAY}]}}]}]
    exchange = read_exchange(REQUESTS["openai.chat"], chunks)
    [segment] = [s for s in exchange.segments if s.phase is Phase.RESPONSE]
    assert segment.text == SAY and segment.pointer == "/response/1/choices/0/delta/content/1/text"


def test_azures_prompt_filter_frame_opens_a_chat_stream() -> None:
    # Azure OpenAI leads a stream with a frame of content-filter results: `"object": ""` and no choices.
    frame = {"id": "", "object": "", "created": 0, "model": "",
             "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}], "choices": []}
    chunks = [frame, {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": SAY}}]}]
    exchange = read_exchange(REQUESTS["openai.chat"], chunks)
    assert [s.text for s in exchange.segments if s.phase is Phase.RESPONSE] == [SAY]


# --- Responses stream: a function_call item's name of the wrong type -----------------------------------------------
def responses_stream() -> dict[str, Any]:
    return json.loads((REPO / "samples" / "openai_responses_stream.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", [1, None, ["get_weather"]], ids=["number", "null", "array"])
def test_a_streamed_function_call_item_name_of_the_wrong_type_is_a_422(name: Any) -> None:
    body = responses_stream()
    done = next(k for k, e in enumerate(body["response"])
                if e["type"] == "response.output_item.done" and e["item"]["type"] == "function_call")
    body["response"][done]["item"]["name"] = name
    err = refused(body["request"], body["response"])
    assert (err.type, err.pointer) == ("invalid_body", f"/response/{done}/item/name")


# --- findings never point at an empty span -------------------------------------------------------------------------
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string", "minLength": 1},
                                     "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    "required": ["city"]}}}
HERMES_NO_ARGUMENTS = "<tool_call>\n{\"name\": \"get_weather\"}\n</tool_call>"


def test_a_recovered_call_without_arguments_is_located_at_its_name(client: TestClient) -> None:
    body = {"request": {"model": "m", "messages": USER, "tools": [WEATHER]},
            "response": chat_with({"index": 0, "message": {"role": "assistant", "content": HERMES_NO_ARGUMENTS}})}
    payload = check(client, body)
    assert_findings_resolve(body, payload["findings"])  # and never an empty span
    schema = [f["location"] for f in payload["findings"] if f["category"] == "tool_schema"]
    assert schema == [{"pointer": "/response/choices/0/message/content", "start": 22, "end": 33}]
    assert HERMES_NO_ARGUMENTS[22:33] == "get_weather"


def test_empty_arguments_text_is_located_at_the_name_and_an_empty_value_with_its_quotes(client: TestClient) -> None:
    calls = [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": ""}},
             {"id": "c2", "type": "function", "function": {"name": "get_weather",
                                                           "arguments": "{\"city\": \"\", \"unit\": \"\"}"}}]
    body = {"request": {"model": "m", "messages": USER, "tools": [WEATHER]},
            "response": chat_with({"index": 0, "message": {"role": "assistant", "tool_calls": calls}})}
    payload = check(client, body)
    assert_findings_resolve(body, payload["findings"])  # and never an empty span
    located = {(f["location"]["pointer"], f["location"].get("start"), f["location"].get("end"))
               for f in payload["findings"] if f["category"] == "tool_schema"}
    base = "/response/choices/0/message/tool_calls"
    assert (f"{base}/0/function/name", 0, 11) in located  # "city" is required: the call named get_weather
    assert {(f"{base}/1/function/arguments", 9, 11), (f"{base}/1/function/arguments", 21, 23)} <= located
    assert calls[1]["function"]["arguments"][9:11] == calls[1]["function"]["arguments"][21:23] == '""'


def test_a_stream_call_whose_name_chunk_is_missing_is_located_without_an_empty_span(client: TestClient) -> None:
    body = json.loads((REPO / "samples" / "openai_chat_stream.json").read_text(encoding="utf-8"))
    named = next(k for k, c in enumerate(body["response"]) if "tool_calls" in json.dumps(c))
    del body["response"][named]  # the chunk with the id and the name
    payload = check(client, body)
    assert_findings_resolve(body, payload["findings"])  # and never an empty span
    undeclared = [f["location"] for f in payload["findings"] if f["category"] == "tool_undeclared"]
    assert len(undeclared) == 1 and set(undeclared[0]) == {"pointer"}
    assert resolve(body, undeclared[0]["pointer"]) == '{"'  # the call's first arguments fragment, as a whole


def test_a_responses_stream_call_without_a_name_is_located_without_an_empty_span(client: TestClient) -> None:
    body = responses_stream()
    body["response"] = [e for e in body["response"] if not (
        e["type"] in ("response.output_item.added", "response.output_item.done") and e["item"]["type"] ==
        "function_call") and e["type"] != "response.completed"]
    payload = check(client, body)
    assert_findings_resolve(body, payload["findings"])  # and never an empty span
    assert any(f["category"] == "tool_undeclared" for f in payload["findings"])


def test_an_anthropic_call_with_an_empty_name_points_at_the_name_value(client: TestClient) -> None:
    body = {"request": {"model": "m", "max_tokens": 9, "messages": USER},
            "response": {"type": "message", "role": "assistant", "content": [
                {"type": "tool_use", "id": "t1", "name": "", "input": {"city": "Paris"}}]}}
    payload = check(client, copy.deepcopy(body))
    assert_findings_resolve(body, payload["findings"])  # and never an empty span
    undeclared = [f["location"] for f in payload["findings"] if f["category"] == "tool_undeclared"]
    assert undeclared == [{"pointer": "/response/content/0/name"}]
