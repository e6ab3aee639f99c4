"""OpenAI Responses adapter: request items, output items, stream events, sniffing, locations, bad input."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from conftest import assert_locations_resolve, fixture, sample
from test_adapter_openai_chat import mutated

from guardrails.adapters import detect_format, read_exchange
from guardrails.adapters.openai_responses import OpenAIResponsesAdapter
from guardrails.errors import BodyError
from guardrails.exchange import Exchange, Phase, SegmentKind, Trust
from guardrails.pointer import resolve
from guardrails.service import CheckService

FORMAT = "openai.responses"
ASK = {"model": "Qwen/Qwen3-8B", "input": "What's the weather in Paris?"}
REASONING = "\nThe user wants the weather in Paris; I will call get_weather.\n"
MESSAGE = "\n\nLet me check the current conditions in Paris.\n"
ARGUMENTS = "{\"city\": \"Paris\", \"unit\": \"celsius\"}"


def normalize(body: dict[str, Any], format: str | None = None) -> Exchange:
    return read_exchange(body["request"], body.get("response"), format=format)


def texts(exchange: Exchange) -> list[tuple[str, int, str]]:
    return [(s.kind.value, s.turn, s.text) for s in exchange.segments]


# --- the vLLM fixture and the samples ------------------------------------------------------------------
def test_fixture_reasoning_message_and_function_call() -> None:
    body = {"request": ASK, "response": fixture("responses_reasoning_function_call_message_logprobs.json")}
    exchange = normalize(body)
    assert exchange.format == FORMAT
    assert texts(exchange) == [("user", 0, ASK["input"]), ("reasoning", 1, REASONING), ("assistant", 1, MESSAGE),
                               ("tool_call", 1, ARGUMENTS)]
    reasoning, _, call = exchange.segments[1:]
    assert reasoning.source == "reasoning_text" and reasoning.pointer == "/response/output/0/content/0/text"
    assert call.phase is Phase.RESPONSE and call.trust is Trust.MODEL
    assert (call.tool_call.name, call.tool_call.id, call.tool_call.arguments) == (
        "get_weather", "chatcmpl-tool-81f60d2a150d1195", {"city": "Paris", "unit": "celsius"})
    assert call.tool_call.name_pointer == "/response/output/2/name"
    (logprobs,) = exchange.logprobs
    assert (logprobs.shape, logprobs.pointer) == ("responses", "/response/output/1/content/0/logprobs")
    assert len(logprobs.data) == 58 and {"token", "logprob", "bytes", "top_logprobs"} <= set(logprobs.data[0])
    g = exchange.generation
    assert (g.model, g.response_id, g.created, g.finish_reason) == (
        "Qwen/Qwen3-8B", "resp_7c1f0e5a9b3d2e48a6f1c0b9d8e7f6a5", 1767225600, "tool_calls")
    assert (g.usage.input_tokens, g.usage.output_tokens, g.usage.reasoning_tokens, g.usage.cached_tokens,
            g.usage.total_tokens) == (29, 58, 17, 0, 87)
    assert_locations_resolve(body, exchange)


@pytest.mark.parametrize("name", ["openai_responses.json", "openai_responses_stream.json"])
def test_samples_are_complete_check_bodies_that_resolve(name: str) -> None:
    body = sample(name)
    assert set(body) == {"request", "response", "context"} and body["context"]["tenant"] == "acme"
    assert detect_format(body["request"], body["response"]) == FORMAT
    exchange = normalize(body)
    assert_locations_resolve(body, exchange)
    assert [s.tool_call.name for s in exchange.tool_calls] == ["get_weather"] and "get_weather" in exchange.tools
    assert exchange.logprobs


def test_stream_assembles_deltas_into_the_same_segments_with_pieces() -> None:
    whole, stream = sample("openai_responses.json"), sample("openai_responses_stream.json")
    streamed = normalize(stream)
    assert texts(streamed) == texts(normalize(whole))
    reasoning, message, call = streamed.segments[1:]
    assert (len(reasoning.pieces), len(message.pieces), len(call.pieces)) == (17, 12, 12)
    events = stream["response"]
    first_event = int(reasoning.pieces[0].pointer.split("/")[2])
    assert events[first_event]["type"] == "response.reasoning_text.delta" and events[first_event]["delta"] == "\n"
    start = reasoning.text.index("Paris")
    loc = reasoning.locate(start, start + len("Paris"))
    assert resolve(stream, loc.pointer)[loc.start:loc.end] == "Paris"
    assert loc.pointer.endswith("/delta") and resolve(stream, loc.pointer) == " Paris"
    assert call.tool_call.name_pointer.endswith("/item/name") and call.tool_call.arguments["city"] == "Paris"
    assert call.tool_call.id == "chatcmpl-tool-81f60d2a150d1195"
    # Logprobs come from the text deltas only; the final response repeats them and is not read twice.
    assert len(streamed.logprobs) == 12 and all(s.pointer.endswith("/logprobs") for s in streamed.logprobs)
    assert [s.data[0]["token"] for s in streamed.logprobs][:3] == ["\n", "\n", "Let"]
    assert streamed.generation.finish_reason == "tool_calls" and streamed.generation.usage.reasoning_tokens == 17


def test_stream_with_only_the_completed_response_reads_it() -> None:
    response = fixture("responses_reasoning_function_call_message_logprobs.json")
    events = [{"type": "response.created", "response": {"id": response["id"], "status": "in_progress"}},
              {"type": "response.completed", "response": response}]
    body = {"request": ASK, "response": events}
    exchange = normalize(body)
    assert texts(exchange)[1:] == [("reasoning", 1, REASONING), ("assistant", 1, MESSAGE), ("tool_call", 1, ARGUMENTS)]
    assert exchange.segments[1].pointer == "/response/1/response/output/0/content/0/text"
    assert [s.pointer for s in exchange.logprobs] == ["/response/1/response/output/1/content/0/logprobs"]
    assert exchange.generation.usage.output_tokens == 58
    assert_locations_resolve(body, exchange)


def test_stream_without_deltas_reads_the_finished_items() -> None:
    call = {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather", "arguments": "{}"}
    message = {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Done."}]}
    events = [
        {"type": "response.output_item.added", "output_index": 0, "item": {**call, "arguments": ""}},
        {"type": "response.output_item.done", "output_index": 0, "item": call},
        {"type": "response.output_item.done", "output_index": 1, "item": message},
        {"type": "response.incomplete", "response": {"status": "incomplete",
                                                     "incomplete_details": {"reason": "max_output_tokens"}}},
    ]
    body = {"request": ASK, "response": events}
    exchange = normalize(body)
    assert texts(exchange)[1:] == [("tool_call", 1, "{}"), ("assistant", 1, "Done.")]
    assert exchange.tool_calls[0].tool_call.name_pointer == "/response/1/item/name"
    assert exchange.generation.finish_reason == "length"
    assert_locations_resolve(body, exchange)


def test_streamed_summary_and_arguments_done_name() -> None:
    events = [
        {"type": "response.reasoning_summary_text.delta", "output_index": 0, "summary_index": 0, "delta": "Need "},
        {"type": "response.reasoning_summary_text.delta", "output_index": 0, "summary_index": 0, "delta": "data."},
        {"type": "response.function_call_arguments.delta", "output_index": 1, "delta": "{\"q\": 1}"},
        {"type": "response.function_call_arguments.done", "output_index": 1, "arguments": "{\"q\": 1}",
         "name": "lookup"},
    ]
    body = {"request": ASK, "response": events}
    exchange = normalize(body)
    summary, call = exchange.segments[1:]
    assert (summary.text, summary.source) == ("Need data.", "summary_text")
    assert call.tool_call.name == "lookup" and call.tool_call.name_pointer == "/response/3/name"
    assert_locations_resolve(body, exchange)


# --- request items -----------------------------------------------------------------------------------------
HISTORY = {
    "model": "Qwen/Qwen3-8B",
    "instructions": "You are a travel agent.",
    "input": [
        {"role": "developer", "content": "Answer briefly."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather in Oslo?"},
                                                        {"type": "input_image", "image_url": "https://x/y.png"}]},
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Call the tool."}],
         "content": [{"type": "reasoning_text", "text": "I should call get_weather."}]},
        {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather",
         "arguments": "{\"city\": \"Oslo\"}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "Snow, -3 C"},
        {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
         "content": [{"type": "output_text", "text": "<think>It snows.</think>It is snowing.", "annotations": []}]},
        {"role": "user", "content": "And tomorrow?"},
        {"type": "function_call_output", "call_id": "call_1", "output": [{"type": "input_text", "text": "Sun"}]},
        {"type": "item_reference", "id": "msg_0"},
        {"type": "web_search_call", "id": "ws_1", "status": "completed"},
    ],
    "tools": [{"type": "function", "name": "get_weather", "description": "Weather for a city.", "strict": True,
               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
              {"type": "web_search_preview"}],
    "tool_choice": {"type": "function", "name": "get_weather"},
    "text": {"format": {"type": "json_schema", "name": "answer", "schema": {"type": "object"}}},
}


def test_request_items_instructions_turns_and_tool_results() -> None:
    body = {"request": HISTORY, "response": None}
    exchange = normalize(body)
    assert texts(exchange) == [
        ("system", 0, "You are a travel agent."),
        ("system", 1, "Answer briefly."),
        ("user", 2, "Weather in Oslo?"),
        ("reasoning", 3, "I should call get_weather."),
        ("reasoning", 3, "Call the tool."),
        ("tool_call", 3, "{\"city\": \"Oslo\"}"),
        ("tool_result", 4, "Snow, -3 C"),
        ("reasoning", 5, "It snows."),
        ("assistant", 5, "It is snowing."),
        ("user", 6, "And tomorrow?"),
        ("tool_result", 7, "Sun"),
    ]
    assert [s.source for s in exchange.of_kind(SegmentKind.REASONING)] == ["reasoning_text", "summary_text",
                                                                            "think_tag"]
    result = exchange.segments[6]
    assert (result.trust, result.tool_call_id, result.tool_name, result.role) == (
        Trust.UNTRUSTED, "call_1", "get_weather", "tool")
    assert exchange.segments[6].pointer == "/request/input/4/output"
    assert exchange.tool_calls[0].tool_call.id == "call_1" and exchange.tool_calls[0].phase is Phase.REQUEST
    assert not exchange.has_response
    assert_locations_resolve(body, exchange)


def test_tools_tool_choice_and_text_format_constraints() -> None:
    exchange = read_exchange(HISTORY, None)
    spec = exchange.tools["get_weather"]
    assert list(exchange.tools) == ["get_weather", "web_search"] and spec.strict and spec.pointer == "/request/tools/0"
    # The hosted web search tool is declared under the name its calls carry, without its `_preview` suffix.
    hosted = exchange.tools["web_search"]
    assert (hosted.hosted, hosted.parameters, hosted.pointer) == (True, None, "/request/tools/1") and not spec.hosted
    assert spec.parameters == HISTORY["tools"][0]["parameters"] and spec.description == "Weather for a city."
    c = exchange.constraints
    assert c.tool_choice_forced and c.strict_tools and c.response_format
    assert exchange.tool_choice == {"type": "function", "name": "get_weather"}


@pytest.mark.parametrize(
    ("extra", "forced", "response_format"),
    [
        ({}, False, False),
        ({"tool_choice": "auto"}, False, False),
        ({"tool_choice": "required"}, True, False),
        ({"tool_choice": {"type": "allowed_tools", "mode": "required", "tools": []}}, True, False),
        ({"tool_choice": {"type": "allowed_tools", "mode": "auto", "tools": []}}, False, False),
        ({"text": {"format": {"type": "text"}}}, False, False),
        ({"text": {"format": {"type": "json_object"}}}, False, True),
    ],
)
def test_constraints(extra: dict[str, Any], forced: bool, response_format: bool) -> None:
    exchange = read_exchange({**ASK, **extra}, None)
    assert (exchange.constraints.tool_choice_forced, exchange.constraints.response_format) == (forced, response_format)


# --- format sniffing ------------------------------------------------------------------------------------------
def test_a_bare_input_is_the_responses_api() -> None:
    assert OpenAIResponsesAdapter.sniff({"input": "hi"}, None) == 50
    assert detect_format({"input": "hi"}, None) == FORMAT
    assert detect_format({"input": [{"role": "user", "content": "hi"}], "instructions": "Be kind."}, None) == FORMAT
    assert detect_format({"previous_response_id": "resp_1", "input": [
        {"type": "function_call_output", "call_id": "c", "output": "ok"}]}, None) == FORMAT


@pytest.mark.parametrize(
    ("request_", "response"),
    [
        ({"system_instruction": "Be kind.", "input": "hi"}, None),
        ({"input": [{"type": "user_input", "content": [{"type": "text", "text": "hi"}]}],
          "tools": [{"type": "function", "name": "f"}]}, None),
        ({"input": "hi"}, {"object": "interaction", "status": "completed", "steps": []}),
        ({"input": [{"role": "model", "content": "hi"}]}, None),
        ({"input": "hi", "generation_config": {"max_output_tokens": 5}}, None),
        ({"input": "hi"}, [{"event_type": "interaction.created", "interaction": {}}]),
        ({"model": "claude", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}, None),
        ({"messages": [{"role": "user", "content": "hi"}]}, {"choices": []}),
    ],
)
def test_gemini_interactions_anthropic_and_chat_bodies_are_not_claimed(request_: dict[str, Any],
                                                                       response: Any) -> None:
    assert OpenAIResponsesAdapter.sniff(request_, response) == 0


# --- bad input --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("request_", "response", "pointer"),
    [
        ({"input": 5}, None, "/request/input"),
        ({"input": ["hi"]}, None, "/request/input/0"),
        ({"input": [{"type": 3}]}, None, "/request/input/0/type"),
        ({"input": [{"type": "message", "content": "hi"}]}, None, "/request/input/0/role"),
        ({"input": [{"role": "user", "content": 5}]}, None, "/request/input/0/content"),
        ({"input": [{"role": "user", "content": [{"type": "input_text", "text": None}]}]}, None,
         "/request/input/0/content/0/text"),
        ({"input": [{"type": "function_call", "arguments": "{}", "call_id": "c"}]}, None, "/request/input/0/name"),
        ({"input": [{"type": "function_call_output", "call_id": "c", "output": 7}]}, None, "/request/input/0/output"),
        ({"input": [{"type": "reasoning", "summary": "x"}]}, None, "/request/input/0/summary"),
        ({"input": [{"type": "reasoning", "content": [{"text": 1}]}]}, None, "/request/input/0/content/0/text"),
        ({"input": "hi", "instructions": 5}, None, "/request/instructions"),
        ({"input": "hi", "tools": {"type": "function"}}, None, "/request/tools"),
        ({"input": "hi", "tools": [{"type": "function"}]}, None, "/request/tools/0/name"),
        (ASK, {"output": {"type": "message"}}, "/response/output"),
        (ASK, {"output": [None]}, "/response/output/0"),
        (ASK, [3], "/response/0"),
        (ASK, [{"type": None}], "/response/0/type"),
        (ASK, [{"type": "response.output_text.delta", "output_index": 0, "delta": 5}], "/response/0/delta"),
        (ASK, [{"type": "response.output_item.added", "output_index": 0}], "/response/0/item"),
        (ASK, [{"type": "response.completed", "response": {"output": "x"}}], "/response/0/response/output"),
    ],
)
def test_bad_input_is_a_body_error_with_the_pointer(request_: dict[str, Any], response: Any, pointer: str) -> None:
    with pytest.raises(BodyError) as info:
        read_exchange(request_, response, format=FORMAT)
    assert info.value.pointer == pointer


def test_mutated_bodies_give_a_body_error_or_locations_that_resolve() -> None:
    rng = random.Random(20260802)
    whole = sample("openai_responses.json")
    whole["response"]["output"][1]["content"][0]["logprobs"] = whole["response"]["output"][1]["content"][0][
        "logprobs"][:2]
    stream = sample("openai_responses_stream.json")
    events = stream["response"]
    # A small stream: a few events of each kind, and a small final response.
    stream["response"] = events[:3] + events[4:6] + events[21:27] + events[37:43] + events[52:56] + [
        {"type": "response.completed", "response": whole["response"]}]
    bodies = [whole, stream, {"request": HISTORY, "response": None}]
    succeeded = 0
    for body in bodies:
        for _ in range(300):
            candidate = mutated(body, rng)
            if not isinstance(candidate["request"], dict):
                continue
            try:
                exchange = read_exchange(candidate["request"], candidate["response"], format=FORMAT)
            except BodyError as exc:
                assert exc.pointer is not None and exc.pointer.startswith(("/request", "/response"))
                continue
            succeeded += 1
            assert_locations_resolve(candidate, exchange)
    assert succeeded > 300


# --- speed and the service end to end ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["openai_responses.json", "openai_responses_stream.json"])
def test_samples_pass_the_default_policy_end_to_end(service: CheckService, name: str) -> None:
    result = asyncio.run(service.check(sample(name)))
    assert result["format"] == FORMAT and result["phase"] == "response"
    assert result["verdict"] == "allow", result["findings"]
    assert result["signals"]["exchange"]["tool_calls"] == 1


def test_an_undeclared_tool_in_a_stream_is_blocked_at_its_name_end_to_end(service: CheckService) -> None:
    body = sample("openai_responses_stream.json")
    body["request"]["tools"][0]["name"] = "get_forecast"
    result = asyncio.run(service.check(body))
    assert result["verdict"] == "block"
    (finding,) = [f for f in result["findings"] if f["category"] == "tool_undeclared"]
    loc = finding["location"]
    assert resolve(body, loc["pointer"])[loc["start"]:loc["end"]] == "get_weather"
