"""The shortcuts that keep format detection and normalization cheap decide exactly what the long way would.

Detection runs adapters by falling top score and stops when the rest can neither win nor tie; sniffs skip
scans whose answer cannot change their score; dicts skip the Mapping ABC check. Each is checked against the
plain rule it stands for, on the samples, on variants of them, and on bodies made to reach each branch.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from guardrails.adapters import ADAPTERS, detect_format, read_exchange
from guardrails.adapters.anthropic_messages import AnthropicMessagesAdapter
from guardrails.adapters.base import parse_arguments, slice_pieces
from guardrails.adapters.gemini_generate import GeminiGenerateContentAdapter
from guardrails.adapters.gemini_interactions import GeminiInteractionsAdapter
from guardrails.adapters.openai_chat import OpenAIChatAdapter
from guardrails.adapters.openai_responses import OpenAIResponsesAdapter
from guardrails.errors import AmbiguousFormat, BodyError, GuardrailsError, UnknownFormat
from guardrails.exchange import Generation, Piece, SegmentKind

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
USER = {"role": "user", "content": "hi"}
CHAT_RESPONSE = {"object": "chat.completion", "choices": []}
FUNCTION_TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


def sample_bodies() -> list[tuple[Any, Any]]:
    bodies = []
    for path in sorted(SAMPLES.glob("**/*.json")):
        body = json.loads(path.read_text(encoding="utf-8"))
        bodies.append((body["request"], body.get("response")))
    return bodies


def detect_by_every_sniff(request: Any, response: Any) -> str:
    """The rule detection stands for: every adapter sniffs, the highest score wins, a tie is refused."""
    scores = sorted(((cls.sniff(request, response), name) for name, cls in ADAPTERS.items()), reverse=True)
    (best_score, best), (second_score, second) = scores[0], scores[1]
    if best_score <= 0:
        raise UnknownFormat("unknown", "/request")
    if second_score == best_score:
        raise AmbiguousFormat(f"the body reads equally well as {best} and {second}; set \"format\" to choose",
                              "/request")
    return best


def outcome(fn: Any, *args: Any) -> tuple[str, str]:
    try:
        return "ok", fn(*args)
    except GuardrailsError as exc:
        message = exc.message if isinstance(exc, AmbiguousFormat) else ""
        return type(exc).__name__, message
    except AttributeError:  # a request that is not an object
        return "AttributeError", ""


JUNK: list[Any] = [None, 0, "", "x", [], {}, "system", "model", "message", "function_call", "tool_use",
                   "response.created", "interaction.created", [{}], {"type": "message"}, {"role": "model"},
                   {"format": {"type": "json_schema"}}, {"type": "user_input"}, {"function": {}}]
KEYS = ["messages", "input", "contents", "system", "tools", "prompt", "instructions", "text", "role", "type",
        "content", "choices", "candidates", "output", "object", "steps", "event_type", "function", "input_schema",
        "functionDeclarations", "model", "generation_config", "system_instruction", "tool_calls", "call_id",
        "arguments", "thinking", "tool_choice", "anthropic_version", "usageMetadata", "created_at"]


def variant(body: Any, rng: random.Random) -> Any:
    """A copy with a few values replaced, keys added or removed, or lists shuffled."""
    body = copy.deepcopy(body)
    for _ in range(rng.randint(1, 3)):
        spots: list[tuple[Any, Any]] = []
        stack = [body]
        while stack:
            node = stack.pop()
            items = list(node.items()) if isinstance(node, dict) else list(enumerate(node[:4]))
            for key, value in items:
                spots.append((node, key))
                if isinstance(value, (dict, list)):
                    stack.append(value)
        if not spots:
            return body
        parent, key = rng.choice(spots)
        roll = rng.random()
        if roll < 0.5:
            parent[key] = copy.deepcopy(rng.choice(JUNK))
        elif roll < 0.7 and isinstance(parent, dict):
            del parent[key]
        elif isinstance(parent[key], dict):
            parent[key][rng.choice(KEYS)] = copy.deepcopy(rng.choice(JUNK))
        elif isinstance(parent[key], list):
            rng.shuffle(parent[key])
    return body


def variants(count: int) -> list[tuple[Any, Any]]:
    rng = random.Random(20260918)
    bases = sample_bodies()
    out = []
    for _ in range(count):
        request, response = rng.choice(bases)
        both = variant({"request": request, "response": response}, rng)
        out.append((both.get("request", {}), both.get("response")))
    return out


def proxied(node: Any) -> Any:
    """The same JSON with every object a read-only Mapping that is not a dict (as a library caller may pass)."""
    if isinstance(node, dict):
        return MappingProxyType({k: proxied(v) for k, v in node.items()})
    if isinstance(node, list):
        return [proxied(v) for v in node]
    return node


# --- detection stops early only when the rest can neither win nor tie -----------------------------------------
def test_no_sniff_scores_above_its_top_score() -> None:
    for request, response in sample_bodies() + variants(600):
        if not isinstance(request, Mapping):
            continue
        for cls in ADAPTERS.values():
            assert cls.sniff(request, response) <= cls.top_score, (cls.format, request, response)


def test_detection_decides_what_running_every_sniff_decides() -> None:
    bodies = sample_bodies() + variants(600) + [({"model": "x"}, None), ({"input": "hi"}, {"object": "response",
                                                                                          "candidates": []})]
    assert {outcome(detect_format, *body)[0] for body in bodies} >= {"ok", "UnknownFormat", "AmbiguousFormat"}
    for request, response in bodies:
        if isinstance(request, Mapping):
            assert outcome(detect_format, request, response) == outcome(detect_by_every_sniff, request, response)


def test_two_top_scores_are_still_refused_as_ambiguous() -> None:
    # 95 for OpenAI Responses (object: response) and for generateContent (candidates): neither may win.
    request, response = {"input": "hi"}, {"object": "response", "candidates": []}
    with pytest.raises(AmbiguousFormat) as caught:
        detect_format(request, response)
    assert caught.value.message == ("the body reads equally well as openai.responses and gemini; "
                                    "set \"format\" to choose")
    assert outcome(detect_format, request, response) == outcome(detect_by_every_sniff, request, response)


def test_a_unique_top_score_wins_without_the_lower_adapters() -> None:
    body = json.loads((SAMPLES / "openai_responses.json").read_text(encoding="utf-8"))
    assert OpenAIResponsesAdapter.sniff(body["request"], body["response"]) == OpenAIResponsesAdapter.top_score
    assert detect_format(body["request"], body["response"]) == "openai.responses"


@pytest.mark.parametrize("index", range(len(sample_bodies())))
def test_mappings_that_are_not_dicts_read_like_dicts(index: int) -> None:
    request, response = sample_bodies()[index]
    fmt = detect_format(request, response)
    assert detect_format(proxied(request), proxied(response)) == fmt
    # The Anthropic adapter takes dicts only, and the Gemini ones serialize object arguments with json: they
    # refuse other Mappings, as they always did. The OpenAI adapters read any Mapping.
    if fmt.startswith("openai."):
        assert read_exchange(proxied(request), proxied(response)) == read_exchange(request, response)


def test_a_request_that_is_not_an_object_fails_as_before() -> None:
    for request in (None, [], "messages"):
        with pytest.raises(AttributeError):
            detect_format(request, None)  # type: ignore[arg-type]
    with pytest.raises(BodyError) as caught:
        read_exchange({"messages": [5]}, None)
    assert (caught.value.pointer, caught.value.message.endswith("got a number")) == ("/request/messages/0", True)


# --- OpenAI Chat: the message scan runs only when its answer matters -------------------------------------------
@pytest.mark.parametrize(("request_", "response", "score"), [
    ({"messages": [USER]}, None, 50),
    ({"messages": [USER, {"role": "system", "content": "x"}]}, None, 80),  # a chat-only role, found at the end
    ({"messages": [USER, {"role": "assistant", "tool_calls": []}]}, None, 80),
    ({"messages": [USER], "tools": [FUNCTION_TOOL]}, None, 80),
    ({"messages": [USER]}, CHAT_RESPONSE, 90),
    ({"messages": [{"role": "tool", "content": "x"}]}, [{"choices": []}], 90),
    ({"messages": [USER], "system": "Be kind."}, None, 10),  # Anthropic's top-level system prompt
    ({"messages": [{"role": "developer", "content": "x"}], "system": "x"}, None, 80),  # markers matter <= 50 only
    ({"system": "x", "anthropic_version": "2023-06-01"}, None, 0),  # nothing of chat: stays 0
    ({"prompt": "x", "anthropic_version": "2023-06-01"}, None, 10),
    ({"model": "x"}, CHAT_RESPONSE, 60),
    ({"messages": [USER, {"role": "user", "content": [{"type": "tool_result"}]}]}, None, 10),
])
def test_chat_sniff(request_: dict[str, Any], response: Any, score: int) -> None:
    assert OpenAIChatAdapter.sniff(request_, response) == score
    assert OpenAIChatAdapter.sniff(proxied(request_), proxied(response)) == score


# --- Anthropic: a message response decides before the history is scanned --------------------------------------
@pytest.mark.parametrize(("request_", "response", "score"), [
    ({"messages": [{"role": "system", "content": "x"}, USER]}, {"type": "message", "content": []}, 90),
    ({"messages": [{"role": "system", "content": "x"}, USER]}, None, 20),
    ({"messages": [USER, USER, {"role": "assistant", "content": [{"type": "text"}, {"type": "tool_use"}]}]},
     None, 90),
    ({"messages": [5, {"role": "user", "content": [{"type": "thinking", "thinking": "x"}]}]}, None, 90),
    ({"messages": [USER, {"role": "assistant", "content": [{"type": 7}, {"type": "image"}]}]}, None, 20),
    ({"messages": [USER], "tools": [{"name": "f"}, {"name": "g", "input_schema": {}}]}, None, 90),
    ({"model": "x"}, [{"type": "ping"}, {"type": "message_start", "message": {}}], 90),
    ({"model": "x"}, None, 0),
])
def test_anthropic_sniff(request_: dict[str, Any], response: Any, score: int) -> None:
    assert AnthropicMessagesAdapter.sniff(request_, response) == score


# --- OpenAI Responses vs Gemini Interactions input items ---------------------------------------------------------
@pytest.mark.parametrize(("items", "score"), [
    ([{"type": "function_call", "name": "f", "arguments": {"a": 1}}], 0),  # Interactions: an object, no call_id
    ([{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}], 90),
    ([{"type": "function_call", "call_id": "c", "name": "f", "arguments": {}}], 90),  # call_id: Responses
    ([{"type": "function_call", "name": "f", "arguments": "{}"}], 90),
    ([USER, {"type": "thought", "summary": []}], 0),
    ([USER, {"role": "model", "content": "x"}], 0),
    ([USER, "text", {"type": "message", "role": "user", "content": "x"}], 90),
    ([USER], 50),
])
def test_responses_sniff_on_input_items(items: list[Any], score: int) -> None:
    assert OpenAIResponsesAdapter.sniff({"input": items}, None) == score


@pytest.mark.parametrize(("request_", "response", "score"), [
    ({"input": [USER, {"type": "model_output", "content": []}]}, None, 85),
    ({"input": [USER, {"role": "model", "content": "x"}]}, None, 85),
    ({"input": [{"type": 5}, {"type": "function_call"}]}, None, 85),
    ({"input": [{"type": 5}]}, None, 10),
    ({"input": "hi"}, [{"event_type": 1}, {}, {"event_type": "step.delta"}], 95),
    ({"input": "hi"}, [{}, {}, {}, {"event_type": "step.delta"}], 10),  # only the first three events count
    ({"input": "hi"}, {"outputs": []}, 95),
    ({"input": "hi"}, {"steps": None}, 10),
])
def test_interactions_sniff(request_: dict[str, Any], response: Any, score: int) -> None:
    assert GeminiInteractionsAdapter.sniff(request_, response) == score


@pytest.mark.parametrize(("request_", "response", "score"), [
    ({"tools": [{"googleSearch": {}}, {"function_declarations": []}]}, None, 85),
    ({"tools": [{"googleSearch": {}}]}, None, 0),
    ({"safetySettings": []}, None, 85),
    ({"model": "x"}, [{"promptFeedback": {}}], 95),
    ({"model": "x"}, [{"other": 1}, {"candidates": []}], 0),  # the first chunk decides
])
def test_generate_content_sniff(request_: dict[str, Any], response: Any, score: int) -> None:
    assert GeminiGenerateContentAdapter.sniff(request_, response) == score


# --- read paths ----------------------------------------------------------------------------------------------
def test_slicing_the_whole_text_keeps_the_pieces_and_a_part_rebases_them() -> None:
    pieces = (Piece(offset=0, length=3, pointer="/a", start=0), Piece(offset=3, length=4, pointer="/b", start=2))
    assert slice_pieces(pieces, 0, 7) == pieces
    assert slice_pieces(pieces, 0, 9) == pieces
    assert slice_pieces(pieces, 0, 5) == (Piece(0, 3, "/a", 0), Piece(3, 2, "/b", 2))
    assert slice_pieces(pieces, 2, 7) == (Piece(0, 1, "/a", 2), Piece(1, 4, "/b", 2))
    empty = (Piece(offset=0, length=0, pointer="/e", start=0), *pieces)
    assert slice_pieces(empty, 0, 7) == pieces  # an empty piece is dropped, as any slice drops it


def test_streamed_text_split_at_think_tags_points_into_each_delta() -> None:
    deltas = ["<think>plan", " it</think>", "Answer"]
    chunks = [{"choices": [{"index": 0, "delta": {"content": d}}]} for d in deltas]
    chunks.insert(1, {"choices": [{"index": 0, "delta": {}, "logprobs": {"content": [{"token": "x"}]}}]})
    ex = read_exchange({"messages": [USER]}, chunks)
    assert [(s.kind, s.text) for s in ex.segments[1:]] == [(SegmentKind.REASONING, "plan it"),
                                                         (SegmentKind.ASSISTANT, "Answer")]
    assert ex.segments[1].pieces == (Piece(0, 4, "/response/0/choices/0/delta/content", 7),
                                     Piece(4, 3, "/response/2/choices/0/delta/content", 0))
    assert ex.segments[2].pieces == (Piece(0, 6, "/response/3/choices/0/delta/content", 0),)
    assert [s.pointer for s in ex.logprobs] == ["/response/1/choices/0/logprobs/content"]


def test_interleaved_stream_choices_each_keep_their_own_text() -> None:
    chunks = [{"choices": [{"index": i % 2, "delta": {"content": f"{'ab'[i % 2]}{i}"}}]} for i in range(4)]
    ex = read_exchange({"messages": [USER]}, chunks)
    assert [s.text for s in ex.segments[1:]] == ["a0a2", "b1b3"]


def test_calls_in_the_request_history_do_not_make_the_response_a_tool_call() -> None:
    history = [USER, {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
               {"type": "function_call_output", "call_id": "c", "output": "ok"}]
    answer = {"object": "response", "status": "completed",
              "output": [{"type": "message", "content": [{"type": "output_text", "text": "done"}]}]}
    assert read_exchange({"input": history}, answer).generation.finish_reason == "stop"
    calling = {**answer, "output": [{"type": "function_call", "call_id": "d", "name": "f", "arguments": "{}"}]}
    assert read_exchange({"input": history}, calling).generation.finish_reason == "tool_calls"
    contents = [{"role": "user", "parts": [{"text": "hi"}]},
                {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}]}]
    stop = {"candidates": [{"content": {"role": "model", "parts": [{"text": "done"}]}, "finishReason": "STOP"}]}
    assert read_exchange({"contents": contents}, stop).generation.finish_reason == "stop"
    called = {"candidates": [{"content": {"role": "model", "parts": [{"functionCall": {"name": "f"}}]},
                              "finishReason": "STOP"}]}
    assert read_exchange({"contents": contents}, called).generation.finish_reason == "tool_calls"


@pytest.mark.parametrize(("raw", "parsed"), [("", {}), ("  \n\t", {}), ("\u2028\u3000", {}), (" {} ", {}),
                                             ("[1]", [1])])
def test_blank_arguments_read_as_an_empty_object(raw: str, parsed: Any) -> None:
    assert parse_arguments(raw) == (parsed, None)


def test_zero_width_space_is_not_blank_arguments() -> None:
    value, error = parse_arguments("\u200b")
    assert value is None and error is not None and error.startswith("arguments are not valid JSON")


def test_a_request_without_response_has_an_empty_generation() -> None:
    assert read_exchange({"messages": [USER]}, None).generation == Generation()
