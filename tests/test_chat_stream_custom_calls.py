"""OpenAI Chat Completions: a streamed `custom` tool call is read as the whole response's call.

A custom call streams as `choices[].delta.tool_calls[]` fragments `{"index", "id", "type": "custom", "custom":
{"name", "input"}}` (openai-python's `ChoiceDeltaToolCall.custom`): the name in the first fragment, the free-form
`input` in pieces. It used to come out with an empty name and no arguments, so a secret in the input got `allow`.
Each test reads real-shaped chunks with `read_exchange` and over HTTP with the default policy: the call has the
name and arguments `{"input": ...}` of the whole response's call, and a finding in the input points into the
chunk's fragment that holds it, with offsets into that string.
"""

from __future__ import annotations

import asyncio
import random
from itertools import pairwise
from typing import Any

import pytest
from conftest import assert_findings_resolve
from fastapi.testclient import TestClient
from test_review_adapters import assert_arguments_resolve, assert_mangled_bodies_read_or_refused, check

from detectors.secret import SecretDetector
from guardrails.adapters import read_exchange
from guardrails.detector import ScanContext
from guardrails.errors import BodyError
from guardrails.exchange import Exchange, SegmentKind, ToolCall, Trust
from guardrails.pointer import resolve

TOKEN = "ghp_R8xQ2mVt7LpZ4nKc9WbY3sJd6HfA1gEu5TqN"  # the `secret` detector's github_token rule
COMMAND = f"curl -s -H 'Authorization: token {TOKEN}' https://api.github.com/user/repos"
AT = COMMAND.index(TOKEN)
CUSTOM_TOOL = {"type": "custom", "custom": {"name": "run_shell", "description": "Runs a shell command."}}
WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
REQUEST = {"model": "gpt-5.1", "stream": True, "tools": [WEATHER_TOOL, CUSTOM_TOOL],
           "messages": [{"role": "user", "content": "List my repos, and the weather in Oslo."}]}
CHUNK = "/response/{}/choices/0/delta/tool_calls/0/custom/{}"


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1767225600, "model": "gpt-5.1",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}


def stream(calls: list[dict[str, Any]]) -> list[Any]:
    """Chunks as the API sends them: the role, one tool call fragment per chunk, the finish reason, [DONE]."""
    return [chunk({"role": "assistant", "content": None}), *[chunk({"tool_calls": [c]}) for c in calls],
            chunk({}, "tool_calls"), "[DONE]"]


def custom_fragments(text: str, cuts: tuple[int, ...], index: int = 0) -> list[dict[str, Any]]:
    """The custom call's first fragment (id, type, name, an empty input), then `text` cut at `cuts`."""
    bounds = [0, *cuts, len(text)]
    first = {"index": index, "id": "call_sh1", "type": "custom", "custom": {"name": "run_shell", "input": ""}}
    return [first, *[{"index": index, "custom": {"input": text[a:b]}} for a, b in pairwise(bounds)]]


def whole(tool_calls: list[dict[str, Any]], tools: list[dict[str, Any]]) -> dict[str, Any]:
    message = {"role": "assistant", "content": None, "tool_calls": tool_calls}
    return {"request": {**REQUEST, "stream": False, "tools": tools},
            "response": {"id": "chatcmpl-1", "object": "chat.completion", "created": 1767225600, "model": "gpt-5.1",
                         "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}]}}


def read(body: dict[str, Any]) -> Exchange:
    return read_exchange(body["request"], body["response"])


def calls(exchange: Exchange) -> list[ToolCall]:
    out = []
    for segment in exchange.tool_calls:
        assert segment.kind is SegmentKind.TOOL_CALL and segment.trust is Trust.MODEL and segment.tool_call
        out.append(segment.tool_call)
    return out


def located(body: dict[str, Any], payload: dict[str, Any], category: str) -> list[tuple[str, str]]:
    """(pointer, the text its offsets name) of each finding of `category`, each resolving to a string."""
    assert_findings_resolve(body, payload["findings"])
    out = []
    for finding in payload["findings"]:
        if finding["category"] == category:
            loc = finding["location"]
            assert "start" in loc, finding
            out.append((loc["pointer"], resolve(body, loc["pointer"])[loc["start"]:loc["end"]]))
    return out


def scanned_secrets(body: dict[str, Any]) -> list[tuple[str, str]]:
    """The `secret` detector run on `read_exchange`'s segments: (pointer, text named) of each finding."""
    exchange = read(body)
    detector = SecretDetector({})
    ctx = ScanContext(segments=[s for s in exchange.segments if detector.default_scope.matches(s)], signals={})
    findings = asyncio.run(detector.scan(exchange, ctx))
    return [(f.pointer, resolve(body, f.pointer)[f.start:f.end]) for f in findings]


# (cuts of COMMAND, chunk index of the fragment the token starts in, what of the token that fragment holds)
# The role chunk is 0, the first fragment (name, empty input) 1, so input piece i is in chunk 2 + i.
CUTS = [
    pytest.param((AT - 6, AT + len(TOKEN) + 3), 3, TOKEN, id="token-in-one-chunk"),
    pytest.param((AT + 9,), 2, TOKEN[:9], id="token-split-across-two-chunks"),
]


@pytest.mark.parametrize(("cuts", "at", "held"), CUTS)
def test_secret_in_streamed_custom_input_points_into_the_chunk_that_holds_it(
        client: TestClient, cuts: tuple[int, ...], at: int, held: str) -> None:
    body = {"request": REQUEST, "response": stream(custom_fragments(COMMAND, cuts))}
    expected = [(CHUNK.format(at, "input"), held)]
    assert scanned_secrets(body) == expected
    payload = check(client, body)
    assert located(body, payload, "secret") == expected and payload["verdict"] == "block"
    # A split token is located as a split function argument is: from its start, in the chunk it starts in.
    assert held == TOKEN or resolve(body, CHUNK.format(at + 1, "input")).startswith(TOKEN[len(held):])


@pytest.mark.parametrize(("cuts", "at", "held"), CUTS)
def test_streamed_custom_call_is_the_call_the_whole_response_makes(cuts: tuple[int, ...], at: int,
                                                                   held: str) -> None:
    body = {"request": REQUEST, "response": stream(custom_fragments(COMMAND, cuts))}
    exchange = read(body)
    (call,) = calls(exchange)
    (segment,) = exchange.tool_calls
    complete = whole([{"id": "call_sh1", "type": "custom", "custom": {"name": "run_shell", "input": COMMAND}}],
                     REQUEST["tools"])
    (expected,) = calls(read(complete))
    assert (call.name, call.arguments, call.id) == (expected.name, expected.arguments, expected.id) == (
        "run_shell", {"input": COMMAND}, "call_sh1")
    assert (call.arguments_error, call.name_pointer, call.arguments_pointer) == (
        None, CHUNK.format(1, "name"), CHUNK.format(2, "input"))
    # The text is the input as streamed, one piece per non-empty fragment, each in its own chunk.
    assert segment.text == COMMAND and [p.pointer for p in segment.pieces] == [
        CHUNK.format(2 + i, "input") for i in range(len(cuts) + 1)]
    assert exchange.tools["run_shell"].pointer == "/request/tools/1/custom"
    assert_arguments_resolve(body, exchange)


def test_streamed_custom_call_to_an_undeclared_tool_is_undeclared(client: TestClient) -> None:
    declared = {"request": REQUEST, "response": stream(custom_fragments("ls -la", (2,)))}
    assert not located(declared, check(client, declared), "tool_undeclared")
    undeclared = {**declared, "request": {**REQUEST, "tools": [WEATHER_TOOL]}}
    assert located(undeclared, check(client, undeclared), "tool_undeclared") == [
        (CHUNK.format(1, "name"), "run_shell")]


def mixed_stream() -> list[Any]:
    """A function call at index 0 and a custom call at index 1, their fragments interleaved, the token split."""
    weather = [{"index": 0, "id": "call_w1", "type": "function", "function": {"name": "get_weather",
                                                                               "arguments": ""}},
               {"index": 0, "function": {"arguments": '{"city": '}}, {"index": 0, "function": {"arguments": '"Oslo"}'}}]
    custom = custom_fragments(COMMAND, (AT + 20,), index=1)
    return stream([weather[0], custom[0], weather[1], custom[1], custom[2], weather[2]])


def test_mixed_stream_reads_the_function_call_and_the_custom_call(client: TestClient) -> None:
    body = {"request": REQUEST, "response": mixed_stream()}
    exchange = read(body)
    custom_input = "/response/{}/choices/0/delta/tool_calls/0/custom/input"
    assert [(c.name, c.id, c.arguments, c.arguments_pointer) for c in calls(exchange)] == [
        ("get_weather", "call_w1", {"city": "Oslo"}, "/response/3/choices/0/delta/tool_calls/0/function/arguments"),
        ("run_shell", "call_sh1", {"input": COMMAND}, custom_input.format(4))]
    complete = whole([{"id": "call_w1", "type": "function", "function": {"name": "get_weather",
                                                                         "arguments": '{"city": "Oslo"}'}},
                      {"id": "call_sh1", "type": "custom", "custom": {"name": "run_shell", "input": COMMAND}}],
                     REQUEST["tools"])
    assert [(c.name, c.arguments) for c in calls(exchange)] == [(c.name, c.arguments) for c in calls(read(complete))]
    assert_arguments_resolve(body, exchange)
    payload = check(client, body)
    assert located(body, payload, "secret") == [(custom_input.format(4), TOKEN[:20])]
    assert resolve(body, custom_input.format(5)).startswith(TOKEN[20:])  # the rest, in the next custom chunk
    assert not located(body, payload, "tool_undeclared") and not located(body, payload, "tool_schema")


BAD_FRAGMENTS = [
    pytest.param({"index": 0, "custom": {"input": 42}}, "/response/2/choices/0/delta/tool_calls/0/custom/input",
                 id="input-not-a-string"),
    pytest.param({"index": 0, "custom": ["ls"]}, "/response/2/choices/0/delta/tool_calls/0/custom",
                 id="custom-not-an-object"),
    pytest.param({"index": 0, "custom": {"name": 7}}, "/response/2/choices/0/delta/tool_calls/0/custom/name",
                 id="name-not-a-string"),
    pytest.param({"index": 0, "custom": {"input": "ls"}, "function": {"arguments": "{}"}},
                 "/response/2/choices/0/delta/tool_calls/0/custom", id="function-and-custom"),
    pytest.param({"index": 0, "function": {"arguments": "{}"}}, "/response/2/choices/0/delta/tool_calls/0/function",
                 id="function-fragment-for-the-custom-call"),
]


@pytest.mark.parametrize(("fragment", "pointer"), BAD_FRAGMENTS)
def test_wrongly_typed_custom_fragments_are_a_body_error_naming_them(fragment: dict[str, Any], pointer: str) -> None:
    first = custom_fragments("", ())[0]
    with pytest.raises(BodyError) as raised:
        read_exchange(REQUEST, stream([first, fragment]))
    assert raised.value.pointer == pointer


def test_mangled_custom_call_streams_are_a_body_error_or_read_with_locations_that_resolve() -> None:
    body = {"request": REQUEST, "response": mixed_stream()}
    # The unmangled stream holds both calls, the custom one named (it used to come out nameless, unread).
    assert [(c.name, c.arguments) for c in calls(read(body))] == [
        ("get_weather", {"city": "Oslo"}), ("run_shell", {"input": COMMAND})]
    assert_mangled_bodies_read_or_refused(body, "openai.chat", random.Random(20261204), rounds=400)
