"""Chat Completions with `echo: true`: an echoed assistant prefill is the caller's text, not the model's.

vLLM (chat_completion/serving.py) answers `echo: true`, where the last request message has the role of the
response's message, with that message's text before each choice's `message.content` (text parts joined with
"\\n"); a stream sends it as an extra chunk after the role chunk, with `logprobs: null`. The logprobs never
cover it (shared/reference/vllm.md §1.1, §1.5). Only the text after the prefix is assistant text, located at
offset len(prefix) of the content; the prefix is read once, as the request's last message.
"""

from __future__ import annotations

import copy
from typing import Any

from conftest import assert_locations_resolve
from fastapi.testclient import TestClient

from guardrails.adapters import read_exchange
from guardrails.exchange import Exchange, Phase, SegmentKind
from guardrails.logprobs import align_exchange
from guardrails.pointer import resolve

SECRET = "AKIAQ7XK2M4PZ3LJ8VWE"  # flagged by the `secret` detector (tests/test_secret.py)
EMAIL = "jane.doe@example.com"  # flagged by the `pii` detector (tests/test_pii.py)
PREFILL = "Sure, here is the plan:"
TOKENS = [" First", ",", " book", " the", " train", "."]  # what the model generated after the prefill
GENERATED = "".join(TOKENS)
CONTENT = "/response/choices/0/message/content"


def chat_logprobs(tokens: list[str], logprob: float = -0.1) -> dict[str, Any]:
    """`choices[i].logprobs` as vLLM builds it for chat: one entry per generated token."""
    entries = []
    for token in tokens:
        raw = list(token.encode("utf-8"))
        entries.append({"token": token, "logprob": logprob, "bytes": raw,
                        "top_logprobs": [{"token": token, "logprob": logprob, "bytes": raw}]})
    return {"content": entries}


def request(last: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A prefill request: the model continues the last message (vLLM's `continue_final_message`)."""
    return {"model": "Qwen/Qwen3-8B", "echo": True, "add_generation_prompt": False, "continue_final_message": True,
            "messages": [{"role": "user", "content": "Plan my trip to Lyon."}, last], **extra}


def prefill(content: Any, role: str = "assistant") -> dict[str, Any]:
    return {"role": role, "content": content}


def choice(index: int, content: str | None, role: str = "assistant", **extra: Any) -> dict[str, Any]:
    return {"index": index, "message": {"role": role, "content": content, **extra}, "logprobs": None,
            "finish_reason": "stop", "stop_reason": None}


def response(*choices: dict[str, Any]) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "Qwen/Qwen3-8B",
            "choices": list(choices), "usage": {"prompt_tokens": 20, "completion_tokens": 6, "total_tokens": 26}}


def read(body: dict[str, Any]) -> Exchange:
    return read_exchange(body["request"], body["response"])


def answered(exchange: Exchange) -> list[tuple[str, str, int]]:
    """(text, pointer, start) of the response's assistant segments."""
    return [(s.text, s.pointer, s.start) for s in exchange.segments
            if s.kind is SegmentKind.ASSISTANT and s.phase is Phase.RESPONSE]


# --- whole responses ---------------------------------------------------------------------------------------------
def test_a_string_prefill_is_left_out_of_the_answer_which_starts_after_it() -> None:
    body = {"request": request(prefill(PREFILL)), "response": response(choice(0, PREFILL + GENERATED))}
    exchange = read(body)
    assert answered(exchange) == [(GENERATED, CONTENT, len(PREFILL))]
    assert_locations_resolve(body, exchange)
    # The prefill is read once: as the request's last message, where the caller wrote it.
    assert [(s.text, s.pointer) for s in exchange.segments if s.text == PREFILL] == [
        (PREFILL, "/request/messages/1/content")]


def test_a_prefill_of_text_parts_is_echoed_joined_with_newlines() -> None:
    parts = [{"type": "text", "text": "Sure."}, {"type": "text", "text": "Here is the plan:"}]
    echoed = "Sure.\nHere is the plan:"  # vLLM joins the parts' texts with "\n"
    body = {"request": request(prefill(parts)), "response": response(choice(0, echoed + GENERATED))}
    exchange = read(body)
    assert answered(exchange) == [(GENERATED, CONTENT, len(echoed))]
    assert_locations_resolve(body, exchange)


def test_every_choice_starts_after_the_prefill() -> None:
    body = {"request": request(prefill(PREFILL), n=2),
            "response": response(choice(0, PREFILL + GENERATED), choice(1, PREFILL + " Take the plane."))}
    exchange = read(body)
    assert answered(exchange) == [(GENERATED, CONTENT, len(PREFILL)),
                                  (" Take the plane.", "/response/choices/1/message/content", len(PREFILL))]
    assert_locations_resolve(body, exchange)


def test_a_last_message_of_another_role_is_not_echoed_and_the_content_is_read_whole() -> None:
    # The user's message is last and the answer is the assistant's: vLLM echoes nothing, even where the model
    # happens to start with the user's words.
    question = "Plan my trip"
    body = {"request": request(prefill(question, role="user"), add_generation_prompt=True),
            "response": response(choice(0, question + GENERATED))}
    assert answered(read(body)) == [(question + GENERATED, CONTENT, 0)]


def test_a_last_message_of_the_responses_role_is_echoed_whatever_that_role() -> None:
    # With `add_generation_prompt: false` vLLM answers in the last message's role, here the user's, and echoes it.
    question = "Plan my trip"
    body = {"request": request(prefill(question, role="user")),
            "response": response(choice(0, question + GENERATED, role="user"))}
    assert answered(read(body)) == [(GENERATED, CONTENT, len(question))]


def test_a_content_that_does_not_start_with_the_prefill_is_read_whole() -> None:
    body = {"request": request(prefill(PREFILL)), "response": response(choice(0, "Sure: " + GENERATED))}
    assert answered(read(body)) == [("Sure: " + GENERATED, CONTENT, 0)]


def test_without_echo_a_content_starting_with_the_prefill_is_all_the_models() -> None:
    body = {"request": request(prefill(PREFILL), echo=False), "response": response(choice(0, PREFILL + GENERATED))}
    assert answered(read(body)) == [(PREFILL + GENERATED, CONTENT, 0)]


def test_a_choice_that_generated_only_a_tool_call_has_no_answer_text() -> None:
    # vLLM sets the content of a tool-calling choice to the prefill alone.
    call = {"id": "c1", "type": "function", "function": {"name": "book_train", "arguments": '{"to": "Lyon"}'}}
    body = {"request": request(prefill(PREFILL)),
            "response": response(choice(0, PREFILL, tool_calls=[call]))}
    exchange = read(body)
    assert answered(exchange) == []
    assert [s.tool_call.name for s in exchange.segments if s.tool_call is not None] == ["book_train"]


def test_reasoning_after_a_prefilled_think_tag_is_still_reasoning() -> None:
    # The prefill opens the think block: the generated text holds only its end tag.
    body = {"request": request(prefill("<think>\n")),
            "response": response(choice(0, "<think>\nThe train is faster.</think>\n\nTake the train."))}
    exchange = read(body)
    response_side = [(s.kind, s.text, s.start) for s in exchange.segments if s.phase is Phase.RESPONSE]
    answer_at = len("<think>\nThe train is faster.</think>")
    assert response_side == [(SegmentKind.REASONING, "The train is faster.", len("<think>\n")),
                             (SegmentKind.ASSISTANT, "\n\nTake the train.", answer_at)]
    assert_locations_resolve(body, exchange)


def test_the_generated_tokens_align_to_the_text_after_the_prefill() -> None:
    resp = response(choice(0, PREFILL + GENERATED))
    resp["choices"][0]["logprobs"] = chat_logprobs(TOKENS)
    body = {"request": request(prefill(PREFILL), logprobs=True, top_logprobs=1), "response": resp}
    (aligned,) = [a for a in align_exchange(read(body)) if a.origin == "response"]
    (unit,) = aligned.units
    assert aligned.stream.tokens[unit.token_start:unit.token_end] == tuple(TOKENS)
    location = unit.locate(unit.text_start, unit.text_end)
    assert (location.pointer, location.start, location.end) == (CONTENT, len(PREFILL), len(PREFILL + GENERATED))
    assert resolve(body, location.pointer)[location.start:location.end] == GENERATED


# --- streams -----------------------------------------------------------------------------------------------------
def chunk(delta: dict[str, Any], logprobs: dict[str, Any] | None = None, finish: str | None = None,
          index: int = 0) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "Qwen/Qwen3-8B",
            "choices": [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]}


def stream(echoed: str | None, tokens: list[str], role: str = "assistant") -> list[Any]:
    """vLLM's stream: the role chunk, the echo chunk (when it echoes), then one generated token per chunk."""
    chunks: list[Any] = [chunk({"role": role, "content": ""})]
    if echoed is not None:
        chunks.append(chunk({"content": echoed}))
    for i, token in enumerate(tokens):
        chunks.append(chunk({"content": token}, chat_logprobs([token]), "stop" if i == len(tokens) - 1 else None))
    return [*chunks, "[DONE]"]


def test_a_streamed_echo_chunk_is_left_out_of_the_answer() -> None:
    body = {"request": request(prefill(PREFILL), stream=True, logprobs=True), "response": stream(PREFILL, TOKENS)}
    exchange = read(body)
    (segment,) = [s for s in exchange.segments if s.phase is Phase.RESPONSE]
    assert (segment.kind, segment.text) == (SegmentKind.ASSISTANT, GENERATED)
    assert segment.pieces[0].pointer == "/response/2/choices/0/delta/content"  # the first generated token
    assert_locations_resolve(body, exchange)
    (aligned,) = [a for a in align_exchange(exchange) if a.origin == "response"]
    (unit,) = aligned.units
    assert aligned.stream.tokens[unit.token_start:unit.token_end] == tuple(TOKENS)


def test_a_streamed_echo_of_text_parts_is_left_out_too() -> None:
    parts = [{"type": "text", "text": "Sure."}, "Here is the plan:"]
    body = {"request": request(prefill(parts), stream=True), "response": stream("Sure.\nHere is the plan:", TOKENS)}
    exchange = read(body)
    assert [s.text for s in exchange.segments if s.phase is Phase.RESPONSE] == [GENERATED]
    assert_locations_resolve(body, exchange)


def test_a_first_streamed_delta_that_also_holds_generated_text_is_cut_after_the_prefill() -> None:
    chunks = stream(None, TOKENS[1:])
    chunks.insert(1, chunk({"content": PREFILL + TOKENS[0]}))
    body = {"request": request(prefill(PREFILL), stream=True), "response": chunks}
    exchange = read(body)
    (segment,) = [s for s in exchange.segments if s.phase is Phase.RESPONSE]
    assert segment.text == GENERATED
    assert (segment.pieces[0].pointer, segment.pieces[0].start) == ("/response/1/choices/0/delta/content",
                                                                    len(PREFILL))
    assert_locations_resolve(body, exchange)


def test_a_stream_answering_in_another_role_is_read_whole() -> None:
    body = {"request": request(prefill("Plan", role="user"), stream=True, add_generation_prompt=True),
            "response": stream(None, ["Plan", *TOKENS])}
    assert [s.text for s in read(body).segments if s.phase is Phase.RESPONSE] == ["Plan" + GENERATED]


def test_a_stream_whose_first_delta_is_not_the_prefill_is_read_whole() -> None:
    body = {"request": request(prefill(PREFILL), stream=True), "response": stream(None, TOKENS)}
    assert [s.text for s in read(body).segments if s.phase is Phase.RESPONSE] == [GENERATED]
    body["response"] = stream("Sure, here", TOKENS)  # a shorter first delta: not the echo
    assert [s.text for s in read(body).segments if s.phase is Phase.RESPONSE] == ["Sure, here" + GENERATED]


# --- end to end: findings are the model's only where the model wrote them ----------------------------------------
def response_findings(payload: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(f["category"], f["location"]) for f in payload["findings"]
            if f["location"]["pointer"].startswith("/response/")]


def test_over_http_a_secret_in_the_prefill_is_not_a_response_finding_and_an_email_generated_after_it_is(
        client: TestClient) -> None:
    prefix = f"Sure. The key {SECRET} is rotated, and"
    generated = f" the owner is {EMAIL}."
    body = {"request": request(prefill(prefix)), "response": response(choice(0, prefix + generated))}
    resp = client.post("/v1/checks", json=copy.deepcopy(body))
    assert resp.status_code == 200, resp.text
    start = len(prefix) + len(" the owner is ")
    assert response_findings(resp.json()) == [("pii", {"pointer": CONTENT, "start": start,
                                                       "end": start + len(EMAIL)})]
    assert resolve(body, CONTENT)[start:start + len(EMAIL)] == EMAIL


def test_over_http_a_streamed_prefill_secret_is_not_a_response_finding(client: TestClient) -> None:
    prefix = f"The key {SECRET} is"
    body = {"request": request(prefill(prefix), stream=True), "response": stream(prefix, [" rotated", "."])}
    resp = client.post("/v1/checks", json=copy.deepcopy(body))
    assert resp.status_code == 200, resp.text
    assert response_findings(resp.json()) == []
    secrets = [f["location"]["pointer"] for f in resp.json()["findings"] if f["category"] == "secret"]
    assert secrets == ["/request/messages/1/content"]
