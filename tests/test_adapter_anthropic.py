"""Anthropic Messages adapter: request, response and stream normalization, sniffing, locations, bad input."""

from __future__ import annotations

import asyncio
import copy
import random
from typing import Any

import orjson
import pytest
from conftest import assert_locations_resolve, fixture, sample

from guardrails.adapters import HistoryMemo, detect_format, read_exchange
from guardrails.adapters.anthropic_messages import AnthropicMessagesAdapter
from guardrails.errors import BodyError
from guardrails.exchange import CallerContext, Exchange, Phase, SegmentKind, Trust
from guardrails.pointer import join, resolve
from guardrails.service import CheckService

FORMAT = "anthropic.messages"


def load(name: str) -> dict[str, Any]:
    body: dict[str, Any] = sample(name)
    return body


def normalize(body: dict[str, Any], format: str | None = None) -> Exchange:
    return read_exchange(body["request"], body.get("response"), format=format)


def summary(exchange: Exchange) -> list[tuple[str, str, int, str]]:
    return [(s.kind.value, s.role, s.turn, s.text) for s in exchange.segments]


# --- real payload shapes ----------------------------------------------------------------------------
def test_vllm_fixture_response_thinking_text_and_tool_use() -> None:
    body = {"request": {"model": "Qwen/Qwen3-8B", "max_tokens": 256,
                        "messages": [{"role": "user", "content": "What's the weather in Paris?"}],
                        "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}]},
            "response": fixture("anthropic_messages_thinking_tool_use.json")}
    ex = normalize(body)
    assert ex.format == FORMAT
    kinds = [s.kind for s in ex.segments if s.phase is Phase.RESPONSE]
    assert kinds == [SegmentKind.REASONING, SegmentKind.ASSISTANT, SegmentKind.TOOL_CALL]
    reasoning, text, call = (s for s in ex.segments if s.phase is Phase.RESPONSE)
    assert reasoning.text.strip() == "The user wants the weather in Paris. I should call get_weather."
    assert reasoning.source == "thinking" and reasoning.trust is Trust.MODEL
    assert text.text == "\n\nLet me look that up.\n"
    assert call.tool_call is not None and call.tool_call.arguments == {"city": "Paris", "unit": "celsius"}
    assert call.tool_call.arguments_is_object and call.tool_call.id == "chatcmpl-tool-aabfd2310e3373a1"
    assert call.tool_call.arguments_pointer == "/response/content/2/input"
    assert ex.generation.finish_reason == "tool_calls" and ex.generation.model == "Qwen/Qwen3-8B"
    assert (ex.generation.usage.input_tokens, ex.generation.usage.output_tokens) == (35, 55)
    assert not ex.logprobs
    assert all("d0564d912fb647999d9051cbdbf8d4f2" not in s.text for s in ex.segments)  # signature is opaque
    assert_locations_resolve(body, ex)


def test_sample_agent_step_normalizes() -> None:
    body = load("anthropic_messages.json")
    ex = normalize(body)
    assert ex.format == FORMAT
    assert [(s.kind.value, s.role, s.turn) for s in ex.segments] == [
        ("system", "system", 0), ("user", "user", 1),
        ("reasoning", "assistant", 2), ("assistant", "assistant", 2), ("tool_call", "assistant", 2),
        ("tool_result", "tool", 3),
        ("reasoning", "assistant", 4), ("assistant", "assistant", 4), ("tool_call", "assistant", 4),
    ]
    result = ex.segments[5]
    assert result.trust is Trust.UNTRUSTED
    assert result.tool_call_id == "chatcmpl-tool-9b8e7d6c5a4f3e21" and result.tool_name == "search_flights"
    assert [c.tool_call.name for c in ex.tool_calls if c.tool_call] == ["search_flights", "get_weather"]
    assert set(ex.tools) == {"search_flights", "get_weather"}
    assert ex.tools["get_weather"].pointer == "/request/tools/1"
    assert ex.tool_choice == {"type": "auto"} and not ex.constraints.tool_choice_forced
    assert ex.has_response and ex.phase is Phase.RESPONSE
    assert_locations_resolve(body, ex)


def test_stream_sample_matches_the_complete_response() -> None:
    body = load("anthropic_messages_stream.json")
    ex = normalize(body)
    assert ex.format == FORMAT
    assert summary(ex) == summary(normalize(load("anthropic_messages.json")))
    reasoning, text, call = (s for s in ex.segments if s.phase is Phase.RESPONSE)
    assert len(reasoning.pieces) > 1 and len(text.pieces) > 1 and len(call.pieces) > 1
    assert call.tool_call is not None and not call.tool_call.arguments_is_object
    assert call.tool_call.arguments == {"city": "Tokyo", "date": "2026-03-14", "unit": "celsius"}
    assert call.tool_call.name_pointer.endswith("/content_block/name")
    assert ex.generation.finish_reason == "tool_calls"
    assert (ex.generation.usage.input_tokens, ex.generation.usage.output_tokens) == (512, 96)
    assert_locations_resolve(body, ex)


def test_stream_accepts_sse_wrapped_events() -> None:
    body = load("anthropic_messages_stream.json")
    body["response"] = [{"event": e["type"], "data": e} for e in body["response"]]
    ex = normalize(body)
    assert ex.format == FORMAT
    assert summary(ex) == summary(normalize(load("anthropic_messages_stream.json")))
    assert all("/data/" in s.pointer for s in ex.segments if s.phase is Phase.RESPONSE)
    assert_locations_resolve(body, ex)


def test_stream_with_inline_think_tags_and_no_start_events() -> None:
    # A truncated capture: deltas without their content_block_start, text that keeps <think> inline.
    events = [{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}}
              for t in ("<thi", "nk>check the ", "date</think>", "It is sunny.")]
    events.append({"type": "content_block_delta", "index": 1,
                   "delta": {"type": "input_json_delta", "partial_json": '{"city": "Tok'}})
    events.append({"type": "content_block_delta", "index": 1,
                   "delta": {"type": "input_json_delta", "partial_json": 'yo"}'}})
    body = {"request": {"system": "s", "messages": [{"role": "user", "content": "hi"}]}, "response": events}
    ex = normalize(body)
    response = [(s.kind, s.text, s.source) for s in ex.segments if s.phase is Phase.RESPONSE]
    assert response[:2] == [(SegmentKind.REASONING, "check the date", "think_tag"),
                            (SegmentKind.ASSISTANT, "It is sunny.", "")]
    assert response[2][0] is SegmentKind.TOOL_CALL and response[2][1] == '{"city": "Tokyo"}'
    assert_locations_resolve(body, ex)


def test_streamed_tool_use_without_input_deltas_keeps_the_start_object() -> None:
    events = [
        {"type": "content_block_start", "index": 0,
         "content_block": {"type": "tool_use", "id": "t1", "name": "get_time", "input": {}}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "max_tokens", "stop_sequence": None}},
    ]
    body = {"request": {"messages": [{"role": "user", "content": "time?"}]}, "response": events}
    ex = normalize(body, FORMAT)
    (call,) = ex.tool_calls
    assert call.tool_call is not None and call.tool_call.arguments == {} and call.tool_call.arguments_is_object
    assert call.pointer == "/response/0/content_block/input"
    assert ex.generation.finish_reason == "length"
    assert_locations_resolve(body, ex)


# --- end to end ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["anthropic_messages.json", "anthropic_messages_stream.json"])
def test_samples_are_benign_under_the_default_policy(service: CheckService, name: str) -> None:
    result = asyncio.run(service.check(load(name)))
    assert result["format"] == FORMAT and result["phase"] == "response"
    assert result["verdict"] == "allow", result["findings"]
    assert result["signals"]["exchange"]["tool_calls"] == 2


def test_undeclared_tool_use_is_blocked_and_located_through_the_service(service: CheckService) -> None:
    stream_start = next(k for k, e in enumerate(load("anthropic_messages_stream.json")["response"])
                        if e.get("content_block", {}).get("type") == "tool_use")
    for name, block_pointer in (("anthropic_messages.json", "/response/content/2"),
                                ("anthropic_messages_stream.json", f"/response/{stream_start}/content_block")):
        body = load(name)
        resolve(body, block_pointer)["name"] = "transfer_funds"
        result = asyncio.run(service.check(body))
        assert result["verdict"] == "block"
        (finding,) = [f for f in result["findings"] if f["category"] == "tool_undeclared"]
        loc = finding["location"]
        assert loc["pointer"] == f"{block_pointer}/name"
        assert resolve(body, loc["pointer"])[loc["start"]:loc["end"]] == "transfer_funds"


def test_history_memo_reuses_the_prefix_and_reads_like_a_fresh_request() -> None:
    memo = HistoryMemo()
    context = CallerContext(session_id="s-123")
    step = load("anthropic_messages.json")
    first = read_exchange(step["request"], step["response"], context=context, memo=memo)
    # Next agent step: the response becomes history, then the tool result answering its call.
    nxt = copy.deepcopy(step["request"])
    nxt["messages"].append({"role": "assistant", "content": step["response"]["content"]})
    nxt["messages"].append({"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "chatcmpl-tool-1f2e3d4c5b6a7980", "content": "12 C, clear"},
        # a late result for a call made in the reused part of the history: its name must still be found
        {"type": "tool_result", "tool_use_id": "chatcmpl-tool-9b8e7d6c5a4f3e21", "content": "AF274: 3 seats"}]})
    memoized = read_exchange(nxt, None, context=context, memo=memo)
    fresh = read_exchange(nxt, None, context=context)
    assert memoized.segments == fresh.segments
    assert [(x.tool_name, x.turn) for x in memoized.segments[-2:]] == [("get_weather", 5), ("search_flights", 5)]
    assert memoized.segments[4] is first.segments[4]  # the unchanged prefix was reused, not read again


# --- request details --------------------------------------------------------------------------------
def test_system_as_string_and_as_blocks() -> None:
    plain = {"request": {"system": "Be brief.", "messages": [{"role": "user", "content": "hi"}]}}
    blocks = {"request": {"system": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind."}],
                          "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}}
    ex_plain, ex_blocks = normalize(plain), normalize(blocks)
    assert [(s.kind, s.pointer) for s in ex_plain.segments] == [
        (SegmentKind.SYSTEM, "/request/system"), (SegmentKind.USER, "/request/messages/0/content")]
    assert [(s.kind, s.pointer) for s in ex_blocks.segments] == [
        (SegmentKind.SYSTEM, "/request/system/0/text"), (SegmentKind.SYSTEM, "/request/system/1/text"),
        (SegmentKind.USER, "/request/messages/0/content/0/text")]
    assert not ex_plain.has_response
    assert_locations_resolve(plain, ex_plain)
    assert_locations_resolve(blocks, ex_blocks)


def test_tool_results_string_nested_blocks_and_errors() -> None:
    body = {"request": {"messages": [
        {"role": "user", "content": "list files"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "a", "name": "ls", "input": {"dir": "/tmp"}},
                                          {"type": "tool_use", "id": "b", "name": "cat", "input": {"f": "x"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "a", "content": "notes.txt"},
            {"type": "tool_result", "tool_use_id": "b", "is_error": True, "content": [
                {"type": "text", "text": "permission denied"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0K"}},
                {"type": "text", "text": "retry as root"}]},
            {"type": "tool_result", "tool_use_id": "zzz"},
            {"type": "text", "text": "thanks"}]},
    ]}}
    ex = normalize(body)
    results = [(s.text, s.tool_call_id, s.tool_name, s.source, s.role) for s in ex.segments
               if s.kind is SegmentKind.TOOL_RESULT]
    assert results == [("notes.txt", "a", "ls", "", "tool"),
                       ("permission denied", "b", "cat", "tool_error", "tool"),
                       ("retry as root", "b", "cat", "tool_error", "tool")]
    assert all(s.trust is Trust.UNTRUSTED for s in ex.segments if s.kind is SegmentKind.TOOL_RESULT)
    assert ex.segments[-1].kind is SegmentKind.USER and ex.segments[-1].text == "thanks"
    assert "iVBORw0K" not in "".join(s.text for s in ex.segments)
    assert_locations_resolve(body, ex)


def test_server_tool_calls_are_hosted_calls_and_fetched_pages_are_untrusted_results() -> None:
    page = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "Page text."}}
    body = {"request": {"messages": [{"role": "user", "content": "read example.org"}],
                        "tools": [{"type": "web_fetch_20250910", "name": "web_fetch"}]},
            "response": {"type": "message", "role": "assistant", "stop_reason": "end_turn", "content": [
                {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_fetch",
                 "input": {"url": "https://example.org"}},
                {"type": "web_fetch_tool_result", "tool_use_id": "srvtoolu_1",
                 "content": {"type": "web_fetch_result", "url": "https://example.org", "content": page}},
                {"type": "mcp_tool_result", "tool_use_id": "mcptoolu_1", "is_error": False,
                 "content": [{"type": "text", "text": "MCP says hi."}]},
                {"type": "text", "text": "The page says hello."}]}}
    ex = normalize(body)
    # Anthropic runs the fetch itself: a hosted call of the server tool the request declares by name.
    (call,) = [s.tool_call for s in ex.tool_calls]
    assert call is not None and (call.name, call.arguments, call.hosted, call.arguments_pointer) == (
        "web_fetch", {"url": "https://example.org"}, True, "/response/content/0/input")
    assert ex.tools["web_fetch"].hosted and ex.tools["web_fetch"].parameters is None
    results = [(s.text, s.pointer, s.tool_call_id, s.tool_name) for s in ex.segments
               if s.kind is SegmentKind.TOOL_RESULT]
    assert results == [("Page text.", "/response/content/1/content/content/source/data", "srvtoolu_1", "web_fetch"),
                       ("MCP says hi.", "/response/content/2/content/0/text", "mcptoolu_1", None)]
    assert ex.generation.finish_reason == "stop"
    assert_locations_resolve(body, ex)


def test_documents_and_search_results_are_untrusted() -> None:
    body = {"request": {"messages": [{"role": "user", "content": [
        {"type": "document", "title": "memo", "source": {"type": "text", "media_type": "text/plain",
                                                         "data": "Quarterly memo text."}},
        {"type": "document", "source": {"type": "content", "content": [{"type": "text", "text": "Chunk one."}]}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}},
        {"type": "search_result", "source": "https://example.org", "title": "t",
         "content": [{"type": "text", "text": "Result body."}]},
        {"type": "text", "text": "Summarize these."}]}]}}
    ex = normalize(body)
    docs = [(s.text, s.pointer) for s in ex.segments if s.kind is SegmentKind.DOCUMENT]
    assert docs == [("Quarterly memo text.", "/request/messages/0/content/0/source/data"),
                    ("Chunk one.", "/request/messages/0/content/1/source/content/0/text"),
                    ("Result body.", "/request/messages/0/content/3/content/0/text")]
    assert all(s.trust is Trust.UNTRUSTED for s in ex.segments if s.kind is SegmentKind.DOCUMENT)
    assert ex.format == FORMAT
    assert_locations_resolve(body, ex)


def test_redacted_thinking_and_signatures_never_become_segments() -> None:
    body = {"request": {"messages": [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": [
            {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4a"},
            {"type": "thinking", "thinking": "visible plan", "signature": "SIGNATURE-BYTES"},
            {"type": "text", "text": "Answer. <think>inline plan</think>Done."}]},
    ]}}
    ex = normalize(body)
    texts = "".join(s.text for s in ex.segments)
    assert "EmwKAhgB" not in texts and "SIGNATURE" not in texts
    assistant = [(s.kind, s.text, s.phase) for s in ex.segments if s.turn == 1]
    assert assistant == [(SegmentKind.REASONING, "visible plan", Phase.REQUEST),
                         (SegmentKind.ASSISTANT, "Answer. ", Phase.REQUEST),
                         (SegmentKind.REASONING, "inline plan", Phase.REQUEST),
                         (SegmentKind.ASSISTANT, "Done.", Phase.REQUEST)]
    assert_locations_resolve(body, ex)


@pytest.mark.parametrize(("choice", "forced"), [
    ({"type": "auto"}, False), ({"type": "none"}, False), ({"type": "any"}, True),
    ({"type": "tool", "name": "get_weather"}, True),
])
def test_tool_choice(choice: dict[str, Any], forced: bool) -> None:
    request = {"messages": [{"role": "user", "content": "hi"}], "tool_choice": choice,
               "tools": [{"name": "get_weather", "input_schema": {"type": "object"}},
                         {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}]}
    ex = read_exchange(request, None)
    assert ex.format == FORMAT
    assert ex.constraints.tool_choice_forced is forced and ex.tool_choice == choice
    # The server tool is declared under its name, as a hosted tool without a schema.
    assert [(name, spec.hosted) for name, spec in ex.tools.items()] == [("get_weather", False), ("web_search", True)]
    assert ex.tools["web_search"].parameters is None


def test_strict_tools_and_structured_output_are_constraints() -> None:
    request = {"messages": [{"role": "user", "content": "hi"}],
               "tools": [{"name": "f", "strict": True, "input_schema": {"type": "object"}}],
               "output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}}}
    ex = read_exchange(request, None, format=FORMAT)
    assert ex.constraints.strict_tools and ex.constraints.response_format


def test_response_stop_sequence_and_cache_usage() -> None:
    request = {"messages": [{"role": "user", "content": "count"}]}
    response = {"type": "message", "role": "assistant", "content": [{"type": "text", "text": "1 2 3"}],
                "model": "m", "stop_reason": "stop_sequence", "stop_sequence": "4",
                "usage": {"input_tokens": 3, "output_tokens": 5, "cache_read_input_tokens": 2}}
    ex = read_exchange(request, response)
    assert ex.format == FORMAT
    assert (ex.generation.finish_reason, ex.generation.stop_reason) == ("stop", "4")
    assert ex.generation.usage.cached_tokens == 2
    assert [(s.kind, s.turn) for s in ex.segments] == [(SegmentKind.USER, 0), (SegmentKind.ASSISTANT, 1)]


# --- sniffing ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("request_body", "response", "expected"), [
    ({"messages": [{"role": "user", "content": "hi"}]}, None, "openai.chat"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}, None, "openai.chat"),
    ({"system": "x", "messages": [{"role": "user", "content": "hi"}]}, None, FORMAT),
    ({"messages": [{"role": "user", "content": "hi"}], "thinking": {"type": "enabled", "budget_tokens": 1024}},
     None, FORMAT),
    ({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "a", "content": "x"}]}]},
     None, FORMAT),
    ({"messages": [{"role": "user", "content": "hi"}], "tools": [{"name": "f", "input_schema": {}}]}, None, FORMAT),
    ({"messages": [{"role": "user", "content": "hi"}], "tool_choice": {"type": "any"}}, None, FORMAT),
    ({"messages": [{"role": "user", "content": "hi"}]}, {"type": "message", "content": []}, FORMAT),
    ({"messages": [{"role": "user", "content": "hi"}]}, [{"type": "message_start", "message": {}}], FORMAT),
    ({"messages": [{"role": "user", "content": "hi"}]}, [{"event": "ping", "data": {"type": "ping"}},
                                                         {"event": "message_start", "data": {"type": "message_start"}}],
     FORMAT),
    ({"messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "hi"}],
      "tools": [{"type": "function", "function": {"name": "f"}}]}, None, "openai.chat"),
])
def test_sniffing(request_body: dict[str, Any], response: Any, expected: str) -> None:
    assert detect_format(request_body, response) == expected


# --- bad input --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("request_body", "response", "pointer"), [
    ({"messages": {"role": "user"}}, None, "/request/messages"),
    ({"messages": ["hi"]}, None, "/request/messages/0"),
    ({"messages": [{"role": 1, "content": "hi"}]}, None, "/request/messages/0/role"),
    ({"messages": [{"role": "user", "content": 5}]}, None, "/request/messages/0/content"),
    ({"messages": [{"role": "user", "content": [{"text": "no type"}]}]}, None, "/request/messages/0/content/0/type"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": None}]}]}, None,
     "/request/messages/0/content/0/text"),
    ({"messages": [{"role": "assistant", "content": [{"type": "tool_use", "name": "f", "input": [1]}]}]}, None,
     "/request/messages/0/content/0/input"),
    ({"messages": [{"role": "user", "content": [{"type": "document", "source": "x"}]}]}, None,
     "/request/messages/0/content/0/source"),
    ({"system": 3, "messages": []}, None, "/request/system"),
    ({"messages": [], "tools": [{"name": 7, "input_schema": {}}]}, None, "/request/tools/0/name"),
    ({"messages": [], "tool_choice": "any"}, None, "/request/tool_choice"),
    ({"messages": []}, {"type": "message", "content": "x", "role": "assistant"}, None),  # a string is fine
    ({"messages": []}, {"type": "message", "content": [{"type": "text", "text": 1}]}, "/response/content/0/text"),
    ({"messages": []}, [{"type": "content_block_start", "index": "0", "content_block": {}}], "/response/0/index"),
    ({"messages": []}, [{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": 3}}],
     "/response/0/delta/text"),
    ({"messages": []}, [{"event": "x", "data": "not an object"}], "/response/0/data"),
    ({"messages": []}, [{"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use"}}],
     "/response/0/content_block/name"),
])
def test_bad_input_raises_body_error_with_pointer(request_body: dict[str, Any], response: Any,
                                                  pointer: str | None) -> None:
    if pointer is None:
        read_exchange(request_body, response, format=FORMAT)
        return
    with pytest.raises(BodyError) as info:
        read_exchange(request_body, response, format=FORMAT)
    assert info.value.pointer == pointer


def test_deeply_nested_tool_input_is_a_body_error() -> None:
    depth = 1010  # within what the API's JSON parser accepts, beyond Python's recursion limit
    text = ('{"messages": [{"role": "assistant", "content": [{"type": "tool_use", "name": "f", "input": '
            + '{"a": ' * depth + "{}" + "}" * depth + "}]}]}")
    with pytest.raises(BodyError) as info:
        read_exchange(orjson.loads(text), None, format=FORMAT)
    assert info.value.pointer == "/request/messages/0/content/0/input"


def _subtree_pointers(node: Any, pointer: str) -> list[str]:
    out = [pointer]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _subtree_pointers(value, join(pointer, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _subtree_pointers(value, join(pointer, i))
    return out


def _replace(body: dict[str, Any], pointer: str, value: Any) -> None:
    parent_pointer, _, token = pointer.rpartition("/")
    parent = resolve(body, parent_pointer)
    if isinstance(parent, list):
        parent[int(token)] = value
    elif isinstance(parent, dict):
        parent[token.replace("~1", "/").replace("~0", "~")] = value
    else:
        raise KeyError(pointer)  # an earlier mutation replaced the parent with a scalar


def _truncate(body: dict[str, Any], pointer: str, rng: random.Random) -> None:
    node = resolve(body, pointer)
    if isinstance(node, list):
        del node[rng.randrange(len(node) + 1):]
    elif isinstance(node, dict) and node:
        del node[rng.choice(list(node))]


def test_mutated_and_truncated_bodies_raise_only_body_error() -> None:
    rng = random.Random(20260313)
    replacements: list[Any] = [1, "x", None, [], {}, True, 2.5, [1], {"type": 1}]
    outcomes = {"ok": 0, "body_error": 0}
    wrapped = load("anthropic_messages_stream.json")
    wrapped["response"] = [{"event": e["type"], "data": e} for e in wrapped["response"]]
    for original in (load("anthropic_messages.json"), load("anthropic_messages_stream.json"), wrapped):
        pointers = [p for side in ("request", "response")
                    for p in _subtree_pointers(original[side], join("", side))]
        for _ in range(900):
            body = copy.deepcopy(original)
            for pointer in rng.sample(pointers, rng.choice((1, 1, 2, 3))):
                try:
                    if rng.random() < 0.25:
                        _truncate(body, pointer, rng)
                    else:
                        _replace(body, pointer, rng.choice(replacements))
                except (KeyError, IndexError, ValueError):
                    continue  # an earlier mutation removed this path
            request, response = body["request"], body["response"]
            if not isinstance(request, dict):
                continue  # the check-body schema rejects these before any adapter runs
            AnthropicMessagesAdapter.sniff(request, response)
            try:
                ex = read_exchange(request, response, format=FORMAT)
            except BodyError as exc:
                assert exc.pointer is None or exc.pointer.startswith(("/request", "/response"))
                outcomes["body_error"] += 1
                continue
            assert_locations_resolve(body, ex)
            outcomes["ok"] += 1
    assert outcomes["ok"] > 100 and outcomes["body_error"] > 100, outcomes


# --- performance ------------------------------------------------------------------------------------
def _session(turns: int) -> dict[str, Any]:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Plan my trip to Tokyo, flights and hotels."}]
    for t in range(turns // 2):
        call_id = f"toolu_{t:04d}"
        messages.append({"role": "assistant", "content": [
            {"type": "thinking", "thinking": f"Step {t}: I should look up option {t}.", "signature": "sig"},
            {"type": "text", "text": f"Checking option {t}."},
            {"type": "tool_use", "id": call_id, "name": "search_flights",
             "input": {"origin": "CDG", "destination": "HND", "date": "2026-03-13"}}]})
        messages.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": call_id,
             "content": [{"type": "text", "text": f'{{"flight": "AF{t}", "price_eur": {800 + t}}}'}]}]})
    return {"system": "You are a travel assistant.", "messages": messages,
            "tools": [{"name": "search_flights", "input_schema": {"type": "object"}}]}


