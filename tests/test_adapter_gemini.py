"""Gemini adapters: Interactions API (`gemini.interactions`) and generateContent (`gemini`).

Request, response and stream normalization on the documented shapes (shared/reference/google-interactions.md),
format sniffing against OpenAI Responses, body locations, bad input and the normalization cost.
"""

from __future__ import annotations

import asyncio
import copy
import json
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_locations_resolve

from guardrails.adapters import HistoryMemo, detect_format, read_exchange
from guardrails.adapters.gemini_generate import GeminiGenerateContentAdapter
from guardrails.adapters.gemini_interactions import GeminiInteractionsAdapter
from guardrails.errors import BodyError
from guardrails.exchange import CallerContext, Exchange, Phase, SegmentKind, Trust
from guardrails.pointer import resolve

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_NAMES = ("gemini_interactions.json", "gemini_interactions_stream.json", "gemini_generate_content.json",
                "gemini_generate_content_stream.json")
WEATHER_TOOL = {"type": "function", "name": "get_weather", "description": "Current weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
SIGNATURE = "EpQBCpEBAXLI2nw8kQz5vT0c1pX9gYb3Hd8sLwq2mN5eKjU6oA4fZyC"


def load(name: str) -> dict[str, Any]:
    return json.loads((ROOT / "samples" / name).read_text(encoding="utf-8"))


def normalize(body: dict[str, Any], format: str | None = None) -> Exchange:
    return read_exchange(body["request"], body.get("response"), format=format or body.get("format"))


def summary(exchange: Exchange, phase: Phase | None = None) -> list[tuple[str, str, int, str]]:
    return [(s.kind.value, s.role, s.turn, s.text) for s in exchange.segments if phase in (None, s.phase)]


def interactions_body(input_: Any, response: Any = None, **request: Any) -> dict[str, Any]:
    return {"request": {"model": "gemini-3.7-flash", "input": input_, **request}, "response": response,
            "format": "gemini.interactions"}


# --- samples ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_samples_are_complete_check_bodies_that_resolve(name: str) -> None:
    body = load(name)
    assert body["context"] == {"agent_id": "travel-agent", "session_id": "s-123", "tenant": "acme", "user": "u-42"}
    ex = normalize(body)
    assert ex.format == ("gemini.interactions" if "interactions" in name else "gemini")
    assert_locations_resolve(body, ex)
    response = [s for s in ex.segments if s.phase is Phase.RESPONSE]
    assert [s.kind for s in response if s.kind is not SegmentKind.ASSISTANT] == [
        SegmentKind.REASONING, SegmentKind.TOOL_CALL]
    call = response[-1].tool_call
    assert call is not None and call.name == "search_flights" and call.name in ex.tools
    assert call.arguments == {"origin": "BER", "destination": "LIS", "date": "2026-09-18", "cabin": "economy"}
    assert ex.generation.finish_reason == "tool_calls" and ex.generation.model == "gemini-3.7-flash"
    # No thought signature (opaque base64) ever becomes text to scan.
    assert not any(s.text.startswith(("Ep", "Eq", "Ci")) for s in ex.segments)


def test_interactions_sample_history_turns_and_trust() -> None:
    ex = normalize(load("gemini_interactions.json"))
    assert summary(ex, Phase.REQUEST)[1:] == [
        ("user", "user", 1, "What's the weather in Lisbon today? I might fly there from Berlin."),
        ("reasoning", "assistant", 2, "The user asks for Lisbon weather first; call get_weather."),
        ("tool_call", "assistant", 2, '{"city": "Lisbon"}'),
        ("tool_result", "tool", 3, "light rain"),
        ("tool_result", "tool", 3, "Light rain until 15:00, clearing in the evening."),
        ("assistant", "assistant", 4,
         "It's 17 °C with light rain in Lisbon, clearing this evening. Want me to look for flights from Berlin?"),
        ("user", "user", 5, "Yes, economy, on 2026-09-18 please."),
    ]
    assert ex.segments[0].kind is SegmentKind.SYSTEM and ex.segments[0].turn == 0
    results = [s for s in ex.segments if s.kind is SegmentKind.TOOL_RESULT]
    assert {(s.trust, s.tool_call_id, s.tool_name) for s in results} == {(Trust.UNTRUSTED, "fc_4k2q9", "get_weather")}
    assert {s.turn for s in ex.segments if s.phase is Phase.RESPONSE} == {6}
    assert sorted(ex.tools) == ["get_weather", "google_search", "search_flights"]
    assert [name for name, spec in ex.tools.items() if spec.hosted] == ["google_search"]  # a built-in Google runs
    assert ex.tools["search_flights"].pointer == "/request/tools/0"
    usage = ex.generation.usage
    assert (usage.input_tokens, usage.output_tokens, usage.reasoning_tokens, usage.cached_tokens,
            usage.total_tokens) == (412, 38 + 64, 64, 256, 514)
    assert ex.generation.response_id == "v1_ChdkZW1vLWxpc2JvbiIs"
    assert not ex.constraints.any


def test_interactions_stream_assembles_summary_and_argument_fragments() -> None:
    body = load("gemini_interactions_stream.json")
    ex = normalize(body)
    reasoning, call = (s for s in ex.segments if s.phase is Phase.RESPONSE)
    assert reasoning.text == ("The user confirmed economy on 2026-09-18 from Berlin to Lisbon. "
                              "I should search flights BER to LIS.")
    assert [p.pointer for p in reasoning.pieces] == ["/response/3/delta/content/text", "/response/4/delta/content/text"]
    loc = reasoning.locate(reasoning.text.index("Berlin"), reasoning.text.index("Berlin") + 6)
    assert loc.pointer == "/response/4/delta/content/text" and resolve(body, loc.pointer)[loc.start:loc.end] == "Berlin"
    assert call.tool_call is not None and not call.tool_call.arguments_is_object
    assert call.tool_call.id == "fc_7m3x1" and call.tool_call.name_pointer == "/response/7/step/name"
    loc = call.locate(call.text.index("LIS"), call.text.index("LIS") + 3)
    assert loc.pointer == "/response/9/delta/arguments" and resolve(body, loc.pointer)[loc.start:loc.end] == "LIS"
    assert ex.generation.usage.total_tokens == 514 and ex.generation.response_id == "v1_ChdkZW1vLWxpc2JvbiIs"


def test_generate_content_sample_logprobs_tools_and_usage() -> None:
    body = load("gemini_generate_content.json")
    ex = normalize(body)
    assert [(s.kind.value, s.turn) for s in ex.segments if s.phase is Phase.REQUEST] == [
        ("system", 0), ("user", 1), ("tool_call", 2), ("tool_result", 3), ("tool_result", 3), ("assistant", 4),
        ("user", 5)]
    assert [s.turn for s in ex.segments if s.phase is Phase.RESPONSE] == [6, 6]
    (source,) = ex.logprobs
    assert source.shape == "gemini" and source.pointer == "/response/candidates/0/logprobsResult"
    assert resolve(body, source.pointer) is source.data
    assert [c["token"] for c in source.data["chosenCandidates"]] == ["search", "_flights", "BER", "LIS"]
    # OpenAPI-subset `parameters` become JSON Schema; `parametersJsonSchema` is kept as is.
    flights = ex.tools["search_flights"].parameters
    assert flights is not None and flights["type"] == "object"
    assert flights["properties"]["origin"] == {"type": "string", "description": "IATA code of the departure airport"}
    assert flights["properties"]["cabin"]["type"] == ["string", "null"]
    assert ex.tools["get_weather"].parameters == body["request"]["tools"][0]["functionDeclarations"][1][
        "parametersJsonSchema"]
    usage = ex.generation.usage
    assert (usage.input_tokens, usage.output_tokens, usage.reasoning_tokens, usage.cached_tokens,
            usage.total_tokens) == (398, 36 + 58, 58, 256, 492)
    assert ex.generation.response_id == "6GqlaP2-KsOb1dkPq4WjwAQ"


def test_generate_content_stream_assembles_thought_and_text_per_candidate() -> None:
    body = load("gemini_generate_content_stream.json")
    ex = normalize(body)
    reasoning, text, call = (s for s in ex.segments if s.phase is Phase.RESPONSE)
    assert reasoning.kind is SegmentKind.REASONING and len(reasoning.pieces) == 2
    assert reasoning.text.endswith("I should search flights BER to LIS.")
    assert text.kind is SegmentKind.ASSISTANT
    assert text.pieces[0].pointer == "/response/2/candidates/0/content/parts/0/text"
    assert call.tool_call is not None and call.pointer == "/response/3/candidates/0/content/parts/0/functionCall/args"
    assert [s.pointer for s in ex.logprobs] == ["/response/2/candidates/0/logprobsResult",
                                                "/response/3/candidates/0/logprobsResult"]
    assert ex.generation.usage.total_tokens == 505 and ex.generation.finish_reason == "tool_calls"


# --- Interactions: the input and response variants --------------------------------------------------
def test_interactions_input_as_string_content_and_content_list() -> None:
    ex = normalize(interactions_body("Is it raining in Lisbon?"))
    assert summary(ex) == [("user", "user", 0, "Is it raining in Lisbon?")]
    assert ex.segments[0].pointer == "/request/input"
    ex = normalize(interactions_body({"type": "text", "text": "Hello"}))
    assert [(s.text, s.pointer) for s in ex.segments] == [("Hello", "/request/input/text")]
    body = interactions_body([{"type": "text", "text": "Describe this"}, {"type": "image", "uri": "gs://b/x.png",
                                                                          "mime_type": "image/png"}])
    ex = normalize(body)
    assert summary(ex) == [("user", "user", 0, "Describe this")]
    assert_locations_resolve(body, ex)


def test_interactions_legacy_turns_and_outputs_response() -> None:
    body = interactions_body(
        [{"role": "user", "content": "Is it raining in Lisbon?"},
         {"role": "model", "content": [
             {"type": "thought", "signature": SIGNATURE, "summary": [{"type": "text", "text": "Call get_weather."}]},
             {"type": "function_call", "id": "fc_1", "name": "get_weather", "arguments": {"city": "Lisbon"},
              "signature": SIGNATURE}]},
         {"role": "user", "content": [{"type": "function_result", "call_id": "fc_1", "name": "get_weather",
                                       "result": [{"type": "text", "text": "light rain"}]}]}],
        {"id": "int_123", "role": "model", "status": "completed",
         "outputs": [{"type": "text", "text": "Yes, <think>check units</think>light rain in Lisbon."}],
         "usage": {"total_input_tokens": 96, "total_output_tokens": 9, "total_tokens": 105}},
        tools=[WEATHER_TOOL], response_mime_type="application/json", response_format={"type": "object"})
    ex = normalize(body)
    assert ex.format == "gemini.interactions"
    assert summary(ex) == [
        ("user", "user", 0, "Is it raining in Lisbon?"),
        ("reasoning", "assistant", 1, "Call get_weather."),
        ("tool_call", "assistant", 1, '{"city": "Lisbon"}'),
        ("tool_result", "tool", 2, "light rain"),
        ("assistant", "assistant", 3, "Yes, "),
        ("reasoning", "assistant", 3, "check units"),
        ("assistant", "assistant", 3, "light rain in Lisbon."),
    ]
    assert ex.constraints.response_format
    assert ex.generation.finish_reason == "stop" and ex.generation.response_id == "int_123"
    assert_locations_resolve(body, ex)


def test_interactions_server_state_function_result_and_string_result() -> None:
    body = interactions_body(
        [{"type": "function_result", "call_id": "fc_1", "name": "get_weather", "result": "light rain"},
         {"type": "function_result", "call_id": "fc_2", "result": {"items": [{"note": "bring an umbrella"}],
                                                                    "ok": True}, "is_error": False}],
        {"status": "completed", "steps": [
            {"type": "user_input", "content": [{"type": "text", "text": "echoed input"}]},
            {"type": "thought", "signature": SIGNATURE},
            {"type": "model_output", "content": [{"type": "text", "text": "Yes, light rain."}]}]},
        previous_interaction_id="v1_abc", tools=[WEATHER_TOOL])
    ex = normalize(body)
    assert summary(ex) == [("tool_result", "tool", 0, "light rain"),
                           ("tool_result", "tool", 1, "bring an umbrella"),
                           ("assistant", "assistant", 2, "Yes, light rain.")]
    assert ex.segments[1].pointer == "/request/input/1/result/items/0/note"
    assert ex.segments[1].tool_call_id == "fc_2" and ex.segments[1].tool_name is None
    assert_locations_resolve(body, ex)


def test_interactions_result_without_name_takes_the_name_of_its_call() -> None:
    body = interactions_body([
        {"type": "function_call", "id": "fc_1", "name": "get_weather", "arguments": {"city": "Lisbon"}},
        {"type": "function_result", "call_id": "fc_1", "result": "light rain"}])
    ex = normalize(body)
    assert [(s.kind, s.tool_name, s.tool_call_id) for s in ex.segments] == [
        (SegmentKind.TOOL_CALL, "get_weather", "fc_1"), (SegmentKind.TOOL_RESULT, "get_weather", "fc_1")]


@pytest.mark.parametrize(("choice", "forced"), [
    ("auto", False), ("none", False), ("any", True), ("validated", True),
    ({"allowed_tools": {"mode": "any", "tools": ["get_weather"]}}, True),
    ({"allowed_tools": {"mode": "auto", "tools": ["get_weather"]}}, False),
])
def test_interactions_tool_choice_forcing(choice: Any, forced: bool) -> None:
    body = interactions_body("hi", tools=[WEATHER_TOOL], generation_config={"tool_choice": choice})
    ex = normalize(body)
    assert ex.constraints.tool_choice_forced is forced
    assert ex.tool_choice == choice
    assert ex.constraints.strict_tools is (choice == "validated")


def test_interactions_response_format_steps_schema_constrains() -> None:
    fmt = {"type": "text", "mime_type": "application/json", "schema": {"type": "object"}}
    assert normalize(interactions_body("hi", response_format=fmt)).constraints.response_format
    assert normalize(interactions_body("hi", response_format=[fmt])).constraints.response_format
    assert not normalize(interactions_body("hi", response_format={"type": "text"})).constraints.response_format


def test_interactions_legacy_stream_content_events() -> None:
    events = [
        {"event_type": "interaction.start", "interaction": {"id": "int_9", "model": "gemini-2.5-flash",
                                                            "status": "in_progress"}},
        {"event_type": "content.start", "index": 0, "content": {"type": "thought", "signature": SIGNATURE}},
        {"event_type": "content.delta", "index": 0, "delta": {"type": "thought_summary",
                                                              "content": {"type": "text", "text": "Weather? "}}},
        {"event_type": "content.delta", "index": 0, "delta": {"type": "thought_summary", "content": "Call it."}},
        {"event_type": "content.stop", "index": 0},
        {"event_type": "content.start", "index": 1, "content": {"type": "text", "text": ""}},
        {"event_type": "content.delta", "index": 1, "delta": {"type": "text", "text": "Checking "}},
        {"event_type": "content.delta", "index": 1, "delta": {"type": "text", "text": "now."}},
        {"event_type": "content.start", "index": 2, "content": {"type": "function_call"}},
        {"event_type": "content.delta", "index": 2, "delta": {"type": "function_call", "id": "fc_1",
                                                              "name": "get_weather", "arguments": {"city": "Lisbon"}}},
        {"event_type": "interaction.complete", "interaction": {"id": "int_9", "status": "requires_action",
                                                               "usage": {"total_tokens": 120}}},
    ]
    body = interactions_body("Weather in Lisbon?", events, tools=[WEATHER_TOOL])
    ex = normalize(body)
    assert ex.format == "gemini.interactions"
    assert summary(ex, Phase.RESPONSE) == [("reasoning", "assistant", 1, "Weather? Call it."),
                                           ("assistant", "assistant", 1, "Checking now."),
                                           ("tool_call", "assistant", 1, '{"city": "Lisbon"}')]
    call = ex.tool_calls[0].tool_call
    assert call is not None and call.arguments_is_object and call.arguments_pointer == "/response/9/delta/arguments"
    assert ex.generation.finish_reason == "tool_calls" and ex.generation.model == "gemini-2.5-flash"
    assert_locations_resolve(body, ex)


def test_interactions_think_tags_in_streamed_text_are_split_with_locations() -> None:
    events = [{"event_type": "step.start", "index": 0, "step": {"type": "model_output", "content": []}},
              {"event_type": "step.delta", "index": 0, "delta": {"type": "text", "text": "<think>plan"}},
              {"event_type": "step.delta", "index": 0, "delta": {"type": "text", "text": " it</think>Done."}}]
    body = interactions_body("Go", events)
    ex = normalize(body)
    assert summary(ex, Phase.RESPONSE) == [("reasoning", "assistant", 1, "plan it"),
                                           ("assistant", "assistant", 1, "Done.")]
    assert_locations_resolve(body, ex)


# --- generateContent variants -----------------------------------------------------------------------
def test_generate_content_snake_case_request_and_single_part_objects() -> None:
    body = {"request": {
        "system_instruction": {"parts": {"text": "Be brief."}},
        "contents": [{"parts": [{"text": "Weather in Lisbon?"}]},
                     {"role": "model", "parts": [
                         {"function_call": {"name": "get_weather", "args": {"city": "Lisbon"}}}]},
                     {"role": "function", "parts": [{"function_response": {
                         "name": "get_weather", "response": {"result": "light rain"}}}]}],
        "tools": [{"function_declarations": [{"name": "get_weather", "parameters": {"type": "OBJECT"}}]}],
        "tool_config": {"function_calling_config": {"mode": "ANY", "allowed_function_names": ["get_weather"]}},
        "generation_config": {"response_mime_type": "application/json"},
    }, "response": None}
    assert detect_format(body["request"], None) == "gemini"
    ex = normalize(body)
    assert summary(ex) == [("system", "system", 0, "Be brief."), ("user", "user", 1, "Weather in Lisbon?"),
                           ("tool_call", "assistant", 2, '{"city": "Lisbon"}'),
                           ("tool_result", "tool", 3, "light rain")]
    assert ex.segments[0].pointer == "/request/system_instruction/parts/text"
    assert ex.constraints.tool_choice_forced and ex.constraints.response_format
    assert ex.tools["get_weather"].parameters == {"type": "object"}
    assert ex.phase is Phase.REQUEST
    assert_locations_resolve(body, ex)


@pytest.mark.parametrize(("mode", "forced", "strict"), [("AUTO", False, False), ("NONE", False, False),
                                                         ("ANY", True, False), ("VALIDATED", True, True)])
def test_generate_content_function_calling_modes(mode: str, forced: bool, strict: bool) -> None:
    request = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
               "tools": [{"functionDeclarations": [{"name": "get_weather"}]}],
               "toolConfig": {"functionCallingConfig": {"mode": mode}}}
    ex = read_exchange(request, None)
    assert (ex.constraints.tool_choice_forced, ex.constraints.strict_tools) == (forced, strict)


def test_generate_content_response_schema_constrains() -> None:
    for config in ({"responseSchema": {"type": "OBJECT"}}, {"responseJsonSchema": {"type": "object"}},
                   {"responseMimeType": "application/json"}):
        request = {"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": config}
        assert read_exchange(request, None).constraints.response_format
    assert not read_exchange({"contents": [], "generationConfig": {"temperature": 0}}, None).constraints.any


def test_generate_content_multi_candidate_stream_and_finish_reasons() -> None:
    chunks = [
        {"candidates": [{"index": 0, "content": {"role": "model", "parts": [{"text": "Hel"}]}},
                        {"index": 1, "content": {"role": "model", "parts": [{"text": "Hi"}]}}]},
        {"candidates": [{"index": 1, "content": {"role": "model", "parts": [{"text": " there"}]},
                         "finishReason": "STOP"},
                        {"index": 0, "content": {"role": "model", "parts": [{"text": "lo"}]},
                         "finishReason": "MAX_TOKENS"}],
         "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 4, "totalTokenCount": 7}},
    ]
    body = {"request": {"contents": [{"role": "user", "parts": [{"text": "Greet me"}]}]}, "response": chunks}
    ex = normalize(body)
    assert summary(ex, Phase.RESPONSE) == [("assistant", "assistant", 1, "Hello"),
                                           ("assistant", "assistant", 1, "Hi there")]
    assert ex.generation.finish_reason == "length" and ex.generation.usage.output_tokens == 4
    assert_locations_resolve(body, ex)


def test_generate_content_safety_block_without_content() -> None:
    body = {"request": {"contents": [{"role": "user", "parts": [{"text": "..."}]}]},
            "response": {"candidates": [{"finishReason": "SAFETY", "index": 0}],
                         "usageMetadata": {"promptTokenCount": 5, "totalTokenCount": 5}}}
    ex = normalize(body)
    assert ex.generation.finish_reason == "content_filter" and ex.has_response
    assert [s.phase for s in ex.segments] == [Phase.REQUEST]


def test_generate_content_code_execution_parts() -> None:
    body = {"request": {"contents": [{"role": "user", "parts": [{"text": "Sum 1..10"}]}]}, "response": {
        "candidates": [{"content": {"role": "model", "parts": [
            {"executableCode": {"language": "PYTHON", "code": "print(sum(range(11)))"}},
            {"codeExecutionResult": {"outcome": "OUTCOME_OK", "output": "55\n"}},
            {"text": "The sum is 55."}]}, "finishReason": "STOP"}]}}
    ex = normalize(body)
    # The sandboxed code is a call of the code_execution built-in, which Google runs (not text, nor a leaked
    # `print` tool call); its output is untrusted.
    assert [(s.kind, s.trust, s.text) for s in ex.segments if s.phase is Phase.RESPONSE] == [
        (SegmentKind.TOOL_CALL, Trust.MODEL, '{"language": "PYTHON", "code": "print(sum(range(11)))"}'),
        (SegmentKind.TOOL_RESULT, Trust.UNTRUSTED, "55\n"), (SegmentKind.ASSISTANT, Trust.MODEL, "The sum is 55.")]
    call = ex.tool_calls[0].tool_call
    assert call is not None and (call.name, call.hosted, call.arguments_pointer) == (
        "code_execution", True, "/response/candidates/0/content/parts/0/executableCode")
    assert ex.generation.finish_reason == "stop"  # Google ran the code: nothing is left for the client to run
    # No string in the body holds the built-in's name: the name is located at the executableCode object.
    assert_locations_resolve(body, replace(ex, segments=tuple(s for s in ex.segments if s.tool_call is None)))


# --- sniffing ---------------------------------------------------------------------------------------
def test_sniffing_keeps_bare_input_for_openai_responses() -> None:
    assert GeminiInteractionsAdapter.sniff({"input": "hi"}, None) < 50
    assert GeminiInteractionsAdapter.sniff({"input": "hi", "model": "gpt-5"}, None) < 50
    assert GeminiInteractionsAdapter.sniff({"input": "hi", "model": "gemini-3.7-flash"}, None) > 50
    assert GeminiGenerateContentAdapter.sniff({"input": "hi"}, None) == 0
    flat_tools = {"input": "hi", "tools": [WEATHER_TOOL]}
    assert GeminiInteractionsAdapter.sniff(flat_tools, None) < 50


@pytest.mark.parametrize(("request_", "response", "expected"), [
    ({"input": "hi", "system_instruction": "Be brief."}, None, "gemini.interactions"),
    ({"input": "hi", "generation_config": {"thinking_level": "low"}}, None, "gemini.interactions"),
    ({"input": [{"type": "function_result", "call_id": "c", "result": "x"}], "previous_interaction_id": "v1"}, None,
     "gemini.interactions"),
    ({"input": [{"type": "user_input", "content": [{"type": "text", "text": "hi"}]}]}, None, "gemini.interactions"),
    ({"input": "hi"}, {"object": "interaction", "status": "completed", "steps": []}, "gemini.interactions"),
    ({"input": "hi"}, [{"event_type": "interaction.created", "interaction": {"id": "x"}}], "gemini.interactions"),
    ({"contents": [{"parts": [{"text": "hi"}]}]}, None, "gemini"),
    ({"contents": [], "system_instruction": {"parts": [{"text": "x"}]}, "generation_config": {}}, None, "gemini"),
    ({"model": "x"}, {"candidates": [], "usageMetadata": {}}, "gemini"),
    ({"model": "x"}, [{"candidates": [], "modelVersion": "gemini-3.7-flash"}], "gemini"),
])
def test_format_detection(request_: dict[str, Any], response: Any, expected: str) -> None:
    assert detect_format(request_, response) == expected


# --- bad input --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("body", "pointer"), [
    (interactions_body(5), "/request/input"),
    (interactions_body("hi", system_instruction=["x"]), "/request/system_instruction"),
    (interactions_body(["hi"]), "/request/input/0"),
    (interactions_body([{"type": "user_input", "content": [{"type": "text", "text": 3}]}]),
     "/request/input/0/content/0/text"),
    (interactions_body([{"type": "function_call", "name": 7, "arguments": {}}]), "/request/input/0/name"),
    (interactions_body([{"type": "function_call", "name": "f", "arguments": [1]}]), "/request/input/0/arguments"),
    (interactions_body([{"role": "admin", "content": "x"}]), "/request/input/0/role"),
    (interactions_body("hi", tools={"name": "f"}), "/request/tools"),
    (interactions_body("hi", tools=[{"type": "function", "name": None}]), "/request/tools/0/name"),
    (interactions_body("hi", generation_config="fast"), "/request/generation_config"),
    (interactions_body("hi", {"steps": {"type": "thought"}}), "/response/steps"),
    (interactions_body("hi", {"steps": [{"type": "thought", "summary": "x"}]}), "/response/steps/0/summary"),
    (interactions_body("hi", [{"event_type": "step.start", "index": 0, "step": {"type": "function_call"}}]),
     "/response/0"),
    (interactions_body("hi", [{"event_type": "step.delta", "index": 0, "delta": "x"}]), "/response/0/delta"),
    ({"request": {"contents": [{"parts": [{"text": ["x"]}]}]}}, "/request/contents/0/parts/0/text"),
    ({"request": {"contents": [{"role": 1, "parts": []}]}}, "/request/contents/0/role"),
    ({"request": {"contents": "hi"}}, "/request/contents"),
    ({"request": {"contents": [], "tools": [{"functionDeclarations": [{"description": "x"}]}]}},
     "/request/tools/0/functionDeclarations/0/name"),
    ({"request": {"contents": [], "toolConfig": []}}, "/request/toolConfig"),
    ({"request": {"contents": []}, "response": {"candidates": [{"content": {"parts": [
        {"functionCall": {"name": "f", "args": "{}"}}]}}]}},
     "/response/candidates/0/content/parts/0/functionCall/args"),
    ({"request": {"contents": []}, "response": [{"candidates": [None]}]}, "/response/0/candidates/0"),
])
def test_bad_bodies_raise_body_error_with_pointer(body: dict[str, Any], pointer: str) -> None:
    with pytest.raises(BodyError) as info:
        normalize(body)
    assert info.value.pointer == pointer


REPLACEMENTS = (1, "x", None, [], {})


def _subtree_pointers(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(node, dict):
        for key, value in node.items():
            out.extend(_subtree_pointers(value, (*path, key)))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out.extend(_subtree_pointers(value, (*path, i)))
    return out


def _mutated(body: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    body = copy.deepcopy(body)
    paths = [p for p in _subtree_pointers(body) if len(p) >= 2]
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(paths)
        parent = body
        try:
            for key in path[:-1]:
                parent = parent[key]
            if rng.random() < 0.2 and isinstance(parent, list):
                del parent[path[-1]:]  # truncate
            else:
                parent[path[-1]] = copy.deepcopy(rng.choice(REPLACEMENTS))
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed this path
    return body


def test_mutated_and_truncated_bodies_only_raise_body_error() -> None:
    rng = random.Random(20260901)
    bodies = [load(name) for name in SAMPLE_NAMES]
    outcomes = {"ok": 0, "body_error": 0}
    for body in bodies:
        fmt = "gemini.interactions" if "system_instruction" in body["request"] else "gemini"
        for _ in range(250):
            mutated = _mutated(body, rng)
            try:
                ex = read_exchange(mutated["request"], mutated.get("response"), format=fmt)
            except BodyError as exc:
                assert exc.pointer is not None and exc.pointer.startswith(("/request", "/response"))
                outcomes["body_error"] += 1
                continue
            assert_locations_resolve(mutated, ex)
            outcomes["ok"] += 1
    assert outcomes["ok"] > 100 and outcomes["body_error"] > 100


# --- cost -------------------------------------------------------------------------------------------
def _fifty_turn_interactions_session() -> dict[str, Any]:
    steps: list[dict[str, Any]] = []
    for i in range(13):
        steps += [
            {"type": "user_input", "content": [{"type": "text", "text": f"Find me option {i} for the Lisbon trip."}]},
            {"type": "thought", "signature": SIGNATURE, "summary": [{"type": "text", "text": f"Look up option {i}."}]},
            {"type": "function_call", "id": f"fc_{i}", "name": "get_weather", "arguments": {"city": "Lisbon"}},
            {"type": "function_result", "call_id": f"fc_{i}", "name": "get_weather",
             "result": {"condition": "light rain", "temperature_c": 17}},
            {"type": "model_output", "content": [{"type": "text", "text": f"Option {i}: light rain, 17 °C."}]},
        ]
    return {"model": "gemini-3.7-flash", "system_instruction": "You are a travel assistant.", "input": steps,
            "tools": [WEATHER_TOOL], "generation_config": {"tool_choice": "auto"}}


def _fifty_turn_generate_session() -> dict[str, Any]:
    contents: list[dict[str, Any]] = []
    for i in range(13):
        contents += [
            {"role": "user", "parts": [{"text": f"Find me option {i} for the Lisbon trip."}]},
            {"role": "model", "parts": [{"text": f"Look up option {i}.", "thought": True},
                                        {"functionCall": {"name": "get_weather", "args": {"city": "Lisbon"}},
                                         "thoughtSignature": SIGNATURE}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "get_weather",
                                                             "response": {"condition": "light rain"}}}]},
            {"role": "model", "parts": [{"text": f"Option {i}: light rain, 17 °C."}]},
        ]
    return {"systemInstruction": {"parts": [{"text": "You are a travel assistant."}]}, "contents": contents,
            "tools": [{"functionDeclarations": [{"name": "get_weather", "parameters": {
                "type": "OBJECT", "properties": {"city": {"type": "STRING"}}}}]}]}


@pytest.mark.parametrize(("session", "history_key"), [(_fifty_turn_interactions_session, "input"),
                                                      (_fifty_turn_generate_session, "contents")])
def test_next_step_reuses_the_unchanged_history(session: Any, history_key: str) -> None:
    step = session()
    next_step = copy.deepcopy(step)
    next_step[history_key] = next_step[history_key] + copy.deepcopy(next_step[history_key][-3:])
    memo, context = HistoryMemo(), CallerContext(session_id="s-123")
    first = read_exchange(step, None, context=context, memo=memo)
    reused = read_exchange(next_step, None, context=context, memo=memo)
    fresh = read_exchange(next_step, None, context=context)
    assert reused.segments == fresh.segments
    assert first.segments[0].kind is SegmentKind.SYSTEM  # read anew; the history after it is reused
    assert all(a is b for a, b in zip(first.segments[1:], reused.segments[1:], strict=False))
    assert len(reused.segments) > len(first.segments)


# --- end to end through the check service -----------------------------------------------------------
@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_samples_are_benign_under_the_default_policy(service: Any, name: str) -> None:
    body = load(name)
    payload = asyncio.run(service.check(body))
    assert payload["format"] == ("gemini.interactions" if "interactions" in name else "gemini")
    assert payload["phase"] == "response"
    assert payload["verdict"] == "allow", payload["findings"]
    assert payload["signals"]["exchange"]["tool_calls"] == 2


@pytest.mark.parametrize(("name", "name_pointer"), [
    ("gemini_interactions.json", "/response/steps/1/name"),
    ("gemini_interactions_stream.json", "/response/7/step/name"),
    ("gemini_generate_content.json", "/response/candidates/0/content/parts/1/functionCall/name"),
    ("gemini_generate_content_stream.json", "/response/3/candidates/0/content/parts/0/functionCall/name"),
])
def test_undeclared_tool_call_blocks_and_points_at_the_name(service: Any, name: str, name_pointer: str) -> None:
    body = load(name)
    parent_pointer, _, _ = name_pointer.rpartition("/")
    resolve(body, parent_pointer)["name"] = "delete_bookings"
    payload = asyncio.run(service.check(body))
    assert payload["verdict"] == "block"
    (finding,) = [f for f in payload["findings"] if f["category"] == "tool_undeclared"]
    loc = finding["location"]
    assert loc["pointer"] == name_pointer
    assert resolve(body, loc["pointer"])[loc["start"]:loc["end"]] == "delete_bookings"
