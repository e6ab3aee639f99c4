"""OpenAI Chat Completions adapter (vLLM dialects, legacy Completions): normalization, locations, bad input."""

from __future__ import annotations

import asyncio
import copy
import json
import random
from typing import Any

import pytest
from conftest import assert_locations_resolve, fixture, sample

from guardrails.adapters import detect_format, read_exchange
from guardrails.errors import BodyError
from guardrails.exchange import Exchange, Phase, SegmentKind, Trust
from guardrails.pointer import resolve
from guardrails.service import CheckService

FORMAT = "openai.chat"
CHAT_FIXTURES = (
    "chat_completion_reasoning_2_tool_calls_logprobs.json",
    "chat_completion_content_logprobs.json",
    "chat_completion_prompt_logprobs.json",
    "completion_echo_max_tokens0_logprobs0_scoring.json",
    "chat_completion_stream_reasoning_tool_call_logprobs.chunks.json",
)
USER_TURN = {"model": "Qwen/Qwen3-8B", "messages": [{"role": "user", "content": "What is the capital of France?"}]}


def normalize(body: dict[str, Any], format: str | None = None) -> Exchange:
    return read_exchange(body["request"], body.get("response"), format=format)


def kinds(exchange: Exchange) -> list[tuple[str, str, int, Phase]]:
    return [(s.kind.value, s.role, s.turn, s.phase) for s in exchange.segments]


# --- fixtures and samples -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", CHAT_FIXTURES)
def test_every_fixture_normalizes_and_every_location_resolves(name: str) -> None:
    response = fixture(name)
    request = {"prompt": "The capital of France is"} if name.startswith("completion") else USER_TURN
    body = {"request": request, "response": response}
    exchange = normalize(body)
    assert exchange.format == FORMAT and exchange.has_response
    assert [s for s in exchange.segments if s.phase is Phase.RESPONSE]
    assert_locations_resolve(body, exchange)


@pytest.mark.parametrize("name", ["openai_chat.json", "openai_chat_stream.json"])
def test_samples_are_complete_check_bodies_that_resolve(name: str) -> None:
    body = sample(name)
    assert set(body) == {"request", "response", "context"}
    assert body["context"]["agent_id"] == "travel-agent"
    assert detect_format(body["request"], body["response"]) == FORMAT
    exchange = normalize(body)
    assert_locations_resolve(body, exchange)
    assert {s.tool_call.name for s in exchange.tool_calls} <= set(exchange.tools)
    assert exchange.logprobs


def test_reasoning_two_tool_calls_and_logprobs() -> None:
    body = sample("openai_chat.json")
    exchange = normalize(body)
    assert kinds(exchange) == [
        ("user", "user", 0, Phase.REQUEST),
        ("reasoning", "assistant", 1, Phase.RESPONSE),
        ("tool_call", "assistant", 1, Phase.RESPONSE),
        ("tool_call", "assistant", 1, Phase.RESPONSE),
    ]
    reasoning = exchange.segments[1]
    assert reasoning.source == "reasoning" and reasoning.trust is Trust.MODEL
    assert reasoning.pointer == "/response/choices/0/message/reasoning"
    weather, clock = (s.tool_call for s in exchange.tool_calls)
    assert (weather.name, weather.arguments, weather.id) == (
        "get_weather", {"city": "Paris", "unit": "celsius"}, "chatcmpl-tool-883feee78af1319f")
    assert (clock.name, clock.arguments) == ("get_time", {"city": "Tokyo"})
    assert weather.name_pointer == "/response/choices/0/message/tool_calls/0/function/name"
    assert set(exchange.tools) == {"get_weather", "get_time"}
    assert exchange.tools["get_weather"].parameters["required"] == ["city"]
    assert exchange.tool_choice == "auto" and not exchange.constraints.any
    (logprobs,) = exchange.logprobs
    assert logprobs.shape == "chat" and logprobs.pointer == "/response/choices/0/logprobs/content"
    assert len(logprobs.data) == 75 and logprobs.data[0]["token"] == "<think>"
    g = exchange.generation
    assert (g.finish_reason, g.model, g.system_fingerprint) == ("tool_calls", "Qwen/Qwen3-8B", "vllm-0.33.0-3f9c2a1b")
    assert (g.usage.input_tokens, g.usage.output_tokens, g.usage.reasoning_tokens, g.usage.total_tokens) == (
        35, 75, 21, 110)


def test_stream_assembles_reasoning_and_argument_fragments_with_pieces() -> None:
    body = sample("openai_chat_stream.json")
    exchange = normalize(body)
    reasoning, call = exchange.segments[1:]
    assert reasoning.kind is SegmentKind.REASONING and reasoning.text == "\nNeed the weather for Paris.\n"
    assert len(reasoning.pieces) == 8 and reasoning.pieces[1].pointer == "/response/3/choices/0/delta/reasoning"
    # "Paris" is one delta: its location is that delta's string.
    start = reasoning.text.index("Paris")
    loc = reasoning.locate(start, start + 5)
    assert (loc.pointer, loc.start, loc.end) == ("/response/7/choices/0/delta/reasoning", 1, 6)
    assert call.tool_call.name == "get_weather" and call.tool_call.arguments == {"city": "Paris"}
    assert call.tool_call.id == "chatcmpl-tool-8f133d4bc9505afe"
    assert call.tool_call.name_pointer == "/response/22/choices/0/delta/tool_calls/0/function/name"
    assert len(call.pieces) == 6
    # The two "\n" content deltas between </think> and <tool_call> are whitespace: no assistant segment.
    assert not list(exchange.of_kind(SegmentKind.ASSISTANT))
    # One logprob source per chunk that carried logprobs, empty-delta chunks included.
    assert len(exchange.logprobs) == 33 and all(s.shape == "chat" for s in exchange.logprobs)
    assert exchange.logprobs[0].pointer == "/response/1/choices/0/logprobs/content"
    g = exchange.generation
    assert (g.finish_reason, g.response_id, g.usage.reasoning_tokens, g.usage.output_tokens) == (
        "tool_calls", "chatcmpl-c4e82f1a07b3d596", 8, 33)


@pytest.mark.parametrize(
    ("fields", "source"),
    [
        ({"reasoning_content": "Think."}, "reasoning_content"),  # vLLM <= 0.11.0
        ({"reasoning": "Think.", "reasoning_content": "Think."}, "reasoning"),  # 0.11.1 - 0.15
        ({"reasoning": "Think."}, "reasoning"),  # >= 0.16
        ({"reasoning": None, "content": "<think>Think.</think>Paris."}, "think_tag"),  # no reasoning parser
    ],
)
def test_every_reasoning_dialect_yields_one_reasoning_segment(fields: dict[str, Any], source: str) -> None:
    message = {"role": "assistant", "content": None, **fields}
    body = {"request": USER_TURN, "response": {"choices": [{"index": 0, "message": message}]}}
    exchange = normalize(body)
    reasoning = list(exchange.of_kind(SegmentKind.REASONING))
    assert [(s.text, s.source) for s in reasoning] == [("Think.", source)]
    assert_locations_resolve(body, exchange)


def test_stream_reasoning_content_dialect_reads_one_key() -> None:
    chunks = [
        {"choices": [{"index": 0, "delta": {"reasoning": "Hm", "reasoning_content": "Hm"}}]},
        {"choices": [{"index": 0, "delta": {"reasoning": "m.", "reasoning_content": "m."}}]},
        {"choices": [{"index": 0, "delta": {"content": "Paris."}, "finish_reason": "stop"}]},
        "[DONE]",
    ]
    body = {"request": USER_TURN, "response": chunks}
    exchange = normalize(body)
    assert [(s.kind.value, s.text) for s in exchange.segments[1:]] == [("reasoning", "Hmm."), ("assistant", "Paris.")]
    assert exchange.generation.finish_reason == "stop"
    assert_locations_resolve(body, exchange)


def test_history_roles_parts_tool_results_and_inline_think() -> None:
    request = {
        "messages": [
            {"role": "system", "content": "You are a travel agent."},
            {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
            {"role": "user", "content": [{"type": "text", "text": "Weather?"},
                                         {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
            {"role": "assistant", "content": "<think>Need the tool.</think>Checking.",
             "tool_calls": [{"id": "c1", "type": "function",
                             "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "c1", "name": "get_weather", "content": "18 C, cloudy"},
            {"role": "assistant", "refusal": "I can't share that."},
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
    }
    body = {"request": request, "response": None}
    exchange = normalize(body)
    assert not exchange.has_response and exchange.phase is Phase.REQUEST
    assert [(s.kind.value, s.turn, s.text) for s in exchange.segments] == [
        ("system", 0, "You are a travel agent."),
        ("system", 1, "Be brief."),
        ("user", 2, "Weather?"),
        ("reasoning", 3, "Need the tool."),
        ("assistant", 3, "Checking."),
        ("tool_call", 3, "{\"city\": \"Paris\"}"),
        ("tool_result", 4, "18 C, cloudy"),
        ("assistant", 5, "I can't share that."),
    ]
    result = exchange.segments[6]
    assert (result.trust, result.tool_call_id, result.tool_name) == (Trust.UNTRUSTED, "c1", "get_weather")
    assert exchange.segments[3].pointer == "/request/messages/3/content" and exchange.segments[3].start == 7
    assert_locations_resolve(body, exchange)


def test_legacy_functions_and_function_call() -> None:
    request = {
        "messages": [{"role": "user", "content": "Weather in Rome?"}],
        "functions": [{"name": "get_weather", "parameters": {"type": "object"}}],
        "function_call": {"name": "get_weather"},
    }
    response = {"choices": [{"index": 0, "finish_reason": "function_call", "message": {
        "role": "assistant", "content": None,
        "function_call": {"name": "get_weather", "arguments": "{\"city\": \"Rome\"}"}}}]}
    body = {"request": request, "response": response}
    exchange = normalize(body)
    (call,) = exchange.tool_calls
    assert call.tool_call.name == "get_weather" and call.tool_call.arguments == {"city": "Rome"}
    assert call.pointer == "/response/choices/0/message/function_call/arguments"
    assert "get_weather" in exchange.tools and exchange.constraints.tool_choice_forced
    assert_locations_resolve(body, exchange)


def test_legacy_function_call_stream_and_two_parallel_calls() -> None:
    chunks = [
        {"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "id": "a", "function": {"name": "get_weather", "arguments": "{\"city\":"}},
            {"index": 1, "id": "b", "function": {"name": "get_time", "arguments": ""}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 1, "function": {"arguments": "{}"}},
                                                           {"index": 0, "function": {"arguments": " \"Oslo\"}"}}]}}]},
    ]
    body = {"request": USER_TURN, "response": chunks}
    exchange = normalize(body)
    assert [(s.tool_call.name, s.tool_call.id, s.tool_call.arguments) for s in exchange.tool_calls] == [
        ("get_weather", "a", {"city": "Oslo"}), ("get_time", "b", {})]
    assert_locations_resolve(body, exchange)
    legacy = [{"choices": [{"index": 0, "delta": {"function_call": {"name": "get_time", "arguments": "{}"}}}]}]
    body = {"request": USER_TURN, "response": legacy}
    (call,) = normalize(body).tool_calls
    assert call.tool_call.name == "get_time" and call.pointer == "/response/0/choices/0/delta/function_call/arguments"


@pytest.mark.parametrize(
    ("extra", "forced", "response_format"),
    [
        ({"tool_choice": "auto"}, False, False),
        ({"tool_choice": "none"}, False, False),
        ({"tool_choice": "required"}, True, False),
        ({"tool_choice": {"type": "function", "function": {"name": "get_weather"}}}, True, False),
        ({"tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": []}}}, True, False),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}}, False, True),
        ({"response_format": {"type": "text"}}, False, False),
        ({"guided_json": {"type": "object"}}, False, True),
        ({"structured_outputs": {"regex": "[a-z]+"}}, False, True),
    ],
)
def test_constraints_from_tool_choice_and_response_format(extra: dict[str, Any], forced: bool,
                                                          response_format: bool) -> None:
    exchange = read_exchange({**USER_TURN, **extra}, None)
    assert exchange.constraints.tool_choice_forced is forced
    assert exchange.constraints.response_format is response_format


def test_strict_tools_mark_constrained_decoding() -> None:
    tool = {"type": "function", "function": {"name": "f", "strict": True, "parameters": {"type": "object"}}}
    exchange = read_exchange({**USER_TURN, "tools": [tool, {"type": "code_interpreter"}]}, None)
    assert exchange.constraints.strict_tools and list(exchange.tools) == ["f"]


def test_legacy_completions_logprobs_and_prompt_logprobs() -> None:
    response = fixture("completion_echo_max_tokens0_logprobs0_scoring.json")
    prompt = "The capital of France is Paris. Ça va très bien."
    body = {"request": {"prompt": prompt, "max_tokens": 0, "echo": True, "logprobs": 0}, "response": response}
    exchange = normalize(body)
    # This scoring call (echo, max_tokens 0) returns the prompt alone as `text`. It used to be read as assistant
    # text, so detectors judged the user's own prompt as model output and low_confidence warned on its scores.
    # The echoed prompt is the caller's: no assistant segment, and the completions source keeps no token of it.
    assert [s.kind.value for s in exchange.segments] == ["user"]
    assert response["choices"][0]["text"] == prompt
    shapes = [(s.shape, s.pointer) for s in exchange.logprobs]
    assert shapes == [("completions", "/response/choices/0/logprobs"),
                      ("prompt", "/response/choices/0/prompt_logprobs")]
    completion = exchange.logprobs[0].data
    assert completion["tokens"] == completion["token_logprobs"] == completion["top_logprobs"] == []
    assert completion["text_offset"] == []
    assert len(response["choices"][0]["logprobs"]["tokens"]) == 12  # the body itself is never altered
    assert exchange.logprobs[1].data[0] is None and len(exchange.logprobs[1].data) == 12  # the prompt's scores
    assert exchange.generation.finish_reason == "length" and exchange.generation.usage.output_tokens == 1


def test_chat_prompt_logprobs_are_top_level() -> None:
    body = {"request": USER_TURN, "response": fixture("chat_completion_prompt_logprobs.json")}
    exchange = normalize(body)
    assert [(s.shape, s.pointer) for s in exchange.logprobs] == [("prompt", "/response/prompt_logprobs")]
    assert exchange.logprobs[0].data[0] is None
    assert exchange.segments[-1].text == "The capital of France is Paris."


def test_legacy_completions_stream() -> None:
    chunks = [
        {"id": "cmpl-1", "object": "text_completion", "choices": [{"index": 0, "text": " Cel", "logprobs": {
            "text_offset": [0], "token_logprobs": [-0.5], "tokens": [" Cel"], "top_logprobs": [{" Cel": -0.5}]}}]},
        {"id": "cmpl-1", "object": "text_completion", "choices": [{"index": 0, "text": "sius",
                                                                   "finish_reason": "length"}]},
    ]
    body = {"request": {"prompt": "Water boils at 100 degrees"}, "response": chunks}
    exchange = normalize(body)
    assert exchange.segments[-1].text == " Celsius" and len(exchange.segments[-1].pieces) == 2
    assert [s.shape for s in exchange.logprobs] == ["completions"]
    assert exchange.generation.finish_reason == "length"
    assert_locations_resolve(body, exchange)


# --- format sniffing --------------------------------------------------------------------------------------
def test_sniffing() -> None:
    assert detect_format(USER_TURN, None) == FORMAT
    assert detect_format({"prompt": "x"}, None) == FORMAT
    assert detect_format({"input": "x"}, fixture("chat_completion_content_logprobs.json")) == FORMAT
    anthropic_like = {"system": "Be kind.", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}
    assert detect_format(anthropic_like, None) != FORMAT


# --- bad input --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("request_", "response", "pointer"),
    [
        ({"messages": {"role": "user"}}, None, "/request/messages"),
        ({"messages": ["hi"]}, None, "/request/messages/0"),
        ({"messages": [{"content": "hi"}]}, None, "/request/messages/0/role"),
        ({"messages": [{"role": "user", "content": 5}]}, None, "/request/messages/0/content"),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}, None,
         "/request/messages/0/content/0/text"),
        ({"messages": [{"role": "user", "content": [7]}]}, None, "/request/messages/0/content/0"),
        ({"messages": [{"role": "assistant", "tool_calls": [{"function": {"arguments": "{}"}}]}]}, None,
         "/request/messages/0/tool_calls/0/function/name"),
        ({"messages": [{"role": "assistant", "tool_calls": [{"id": "x"}]}]}, None,
         "/request/messages/0/tool_calls/0/function"),
        ({"messages": [{"role": "assistant", "tool_calls": {"id": "x"}}]}, None, "/request/messages/0/tool_calls"),
        ({**USER_TURN, "tools": {"a": 1}}, None, "/request/tools"),
        ({**USER_TURN, "tools": ["get_weather"]}, None, "/request/tools/0"),
        ({"prompt": 5}, None, "/request/prompt"),
        (USER_TURN, {"choices": {"0": {}}}, "/response/choices"),
        (USER_TURN, {"choices": [[]]}, "/response/choices/0"),
        (USER_TURN, [{"choices": [{"delta": 3}]}], "/response/0/choices/0/delta"),
        (USER_TURN, [{"choices": 1}], "/response/0/choices"),
        (USER_TURN, [7], "/response/0"),
        (USER_TURN, [{"choices": [{"delta": {"tool_calls": [{"function": {"name": 3}}]}}]}],
         "/response/0/choices/0/delta/tool_calls/0/function/name"),
    ],
)
def test_bad_input_is_a_body_error_with_the_pointer(request_: dict[str, Any], response: Any, pointer: str) -> None:
    with pytest.raises(BodyError) as info:
        read_exchange(request_, response, format=FORMAT)
    assert info.value.pointer == pointer


MUTATIONS: tuple[Any, ...] = (1, "x", None, [], {}, True, -1.5, [1], {"a": None})


def mutated(body: Any, rng: random.Random) -> Any:
    """A deep copy of `body` with one random subtree replaced, or one random list truncated."""
    body = copy.deepcopy(body)
    paths: list[tuple[Any, Any]] = []

    def walk(node: Any) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, child in items:
            paths.append((node, key))
            walk(child)

    walk(body)
    parent, key = rng.choice(paths)
    if isinstance(parent[key], list) and parent[key] and rng.random() < 0.3:
        del parent[key][rng.randrange(len(parent[key])):]
    else:
        parent[key] = rng.choice(MUTATIONS)
    return body


def test_mutated_bodies_give_a_body_error_or_locations_that_resolve() -> None:
    rng = random.Random(20260801)
    # Keep the bodies small (the test is O(size)): few stream chunks, few logprob entries.
    stream = sample("openai_chat_stream.json")
    stream["response"] = stream["response"][:3] + stream["response"][20:]
    for chunk in stream["response"]:
        for choice in chunk["choices"]:
            if choice.get("logprobs"):
                choice["logprobs"]["content"][0]["top_logprobs"] = []
    chat = sample("openai_chat.json")
    chat["response"]["choices"][0]["logprobs"]["content"] = chat["response"]["choices"][0]["logprobs"]["content"][:2]
    bodies = [chat, stream, {
        "request": {"messages": [{"role": "system", "content": "s"}, {"role": "tool", "content": [{"text": "t"}]},
                                 {"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}}],
                    "functions": [{"name": "f"}], "tool_choice": {"type": "function"}},
        "response": {"choices": [{"text": "x", "logprobs": {"tokens": ["x"]}}], "prompt_logprobs": [None]}}]
    succeeded = 0
    for body in bodies:
        for _ in range(300):
            candidate = mutated(body, rng)
            request = candidate["request"]
            if not isinstance(request, dict):
                continue
            try:
                exchange = read_exchange(request, candidate["response"], format=FORMAT)
            except BodyError as exc:
                assert exc.pointer is not None and exc.pointer.startswith(("/request", "/response"))
                continue
            succeeded += 1
            assert_locations_resolve(candidate, exchange)
    assert succeeded > 300  # most mutations are harmless; the property must have been exercised


# --- speed and the service end to end --------------------------------------------------------------------
def agent_session(turns: int) -> dict[str, Any]:
    """A chat request carrying an agent's whole history: `turns` tool round trips."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": "You are a travel agent. " * 20},
                                      {"role": "user", "content": "Plan a weekend in Paris for two."}]
    for i in range(turns):
        messages.append({"role": "assistant", "content": None, "reasoning": f"Step {i}: look up more. " * 10,
                         "tool_calls": [{"id": f"call-{i}", "type": "function", "function": {
                             "name": "search_hotels", "arguments": json.dumps({"city": "Paris", "page": i})}}]})
        messages.append({"role": "tool", "tool_call_id": f"call-{i}", "content": f"Hotel {i}: 120 EUR. " * 15})
    tools = [{"type": "function", "function": {"name": "search_hotels", "parameters": {"type": "object"}}}]
    return {"messages": messages, "tools": tools}


@pytest.mark.parametrize("name", ["openai_chat.json", "openai_chat_stream.json"])
def test_samples_pass_the_default_policy_end_to_end(service: CheckService, name: str) -> None:
    body = sample(name)
    result = asyncio.run(service.check(body))
    assert result["format"] == FORMAT and result["phase"] == "response"
    assert result["verdict"] == "allow", result["findings"]
    assert result["signals"]["exchange"]["tool_calls"] == len(normalize(body).tool_calls) > 0


def test_an_undeclared_tool_in_a_stream_is_blocked_at_its_name_end_to_end(service: CheckService) -> None:
    body = sample("openai_chat_stream.json")
    body["request"]["tools"] = [{"type": "function", "function": {"name": "get_time"}}]
    result = asyncio.run(service.check(body))
    assert result["verdict"] == "block"
    (finding,) = [f for f in result["findings"] if f["category"] == "tool_undeclared"]
    loc = finding["location"]
    assert resolve(body, loc["pointer"])[loc["start"]:loc["end"]] == "get_weather"
