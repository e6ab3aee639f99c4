"""Malformed logprobs are left unread, not a reason to leave the response unchecked: the check answers 200, every
other detector judges the response as usual, and `low_confidence` reports each malformed source as a
`detector_error` finding whose pointer names the field (the policy's `on_detector_error` action), for every format
that carries logprobs (Chat, its stream chunks, Completions with and without `echo`, Responses and its delta
events, Gemini generateContent and its stream); a stream's other chunks are still read. What vLLM really sends
(nulls, fields a stream leaves at their default, -9999.0 and -inf) is read without a `detector_error`.
"""

from __future__ import annotations

import asyncio
import copy
import json
import math
import re
from collections.abc import Callable
from typing import Any

import pytest
from conftest import REPO, sample
from fastapi.testclient import TestClient

from guardrails.logprobs import read_source
from guardrails.logprobs.tokens import MASKED
from guardrails.pointer import join, resolve, split
from guardrails.policy import load_policy

DELETE = object()  # a mutation that removes the member
FFFD = "\ufffd"  # a token that is half of a multi-byte character: its text is read from its bytes


def completions_logprobs(tokens: list[tuple[str, float | None]]) -> dict[str, Any]:
    offsets = [sum(len(t) for t, _ in tokens[:i]) for i in range(len(tokens))]
    return {"text_offset": offsets, "token_logprobs": [v for _, v in tokens], "tokens": [t for t, _ in tokens],
            "top_logprobs": [None if v is None else {t: v, " x": v - 2.0} for t, v in tokens]}


PROMPT = [("The", None), (" cat", -0.3), (" sat", -0.2)]
COMPLETION = [(" on", -0.05), (" the", -0.02), (" warm", -1.4), (" mat", -0.04), (".", -0.01)]


def completions(echo: bool) -> dict[str, Any]:
    tokens = PROMPT + COMPLETION if echo else COMPLETION
    choice = {"index": 0, "text": "".join(t for t, _ in tokens), "logprobs": completions_logprobs(tokens),
              "finish_reason": "length"}
    return {"request": {"model": "Qwen/Qwen3-8B", "prompt": "The cat sat", "echo": echo, "logprobs": 1},
            "response": {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "Qwen/Qwen3-8B",
                         "choices": [choice]}}


def completions_stream() -> dict[str, Any]:
    chunks = [{"id": "cmpl-2", "object": "text_completion", "created": 1, "model": "Qwen/Qwen3-8B",
               "choices": [{"index": 0, "text": "".join(t for t, _ in part), "logprobs": completions_logprobs(part),
                            "finish_reason": None}]}
              for part in (COMPLETION[:2], COMPLETION[2:])]
    return {"request": {"model": "Qwen/Qwen3-8B", "prompt": "The cat sat", "stream": True, "logprobs": 1},
            "response": chunks}


STREAM_FINAL_ITEM = 28  # the message's `response.output_item.done` once the text deltas are gone


def responses_stream_final() -> dict[str, Any]:
    """A Responses stream without the message's text deltas: its text and logprobs are read from its finished
    item."""
    body = sample("openai_responses_stream.json")
    deltas = [e for e in body["response"] if e["type"] == "response.output_text.delta"]
    body["response"] = [e for e in body["response"] if e not in deltas]
    done = body["response"][STREAM_FINAL_ITEM]
    assert done["type"] == "response.output_item.done" and done["item"]["type"] == "message"
    done["item"]["content"][0]["logprobs"] = [entry for event in deltas for entry in event["logprobs"]]
    return body


# format -> (a check body, the pointer of one logprob container in it)
BASES: dict[str, tuple[Callable[[], dict[str, Any]], str]] = {
    "chat": (lambda: sample("openai_chat.json"), "/response/choices/0/logprobs/content"),
    "chat_stream": (lambda: sample("openai_chat_stream.json"), "/response/7/choices/0/logprobs/content"),
    "completions": (lambda: completions(echo=False), "/response/choices/0/logprobs"),
    "completions_echo": (lambda: completions(echo=True), "/response/choices/0/logprobs"),
    "completions_stream": (completions_stream, "/response/1/choices/0/logprobs"),
    "responses": (lambda: sample("openai_responses.json"), "/response/output/1/content/0/logprobs"),
    "responses_stream": (lambda: sample("openai_responses_stream.json"), "/response/33/logprobs"),
    "responses_stream_final": (responses_stream_final, f"/response/{STREAM_FINAL_ITEM}/item/content/0/logprobs"),
    "gemini": (lambda: sample("gemini_generate_content.json"), "/response/candidates/0/logprobsResult"),
    "gemini_stream": (lambda: sample("gemini_generate_content_stream.json"),
                      "/response/2/candidates/0/logprobsResult"),
}
CHAT_LIKE = ("chat", "chat_stream", "responses", "responses_stream", "responses_stream_final")
# Bodies with other logprob sources beside the mutated one (a stream's other chunks): those are still read.
OTHER_SOURCES = ("chat_stream", "completions_stream", "responses_stream", "gemini_stream")

# (name, the mutated member below the container, its new value, the member the finding names); "" is the container
CHAT_CASES = [
    ("entry not an object", "/0", "<think>", "/0"),
    ("entry null", "/0", None, "/0"),
    ("token missing", "/0/token", DELETE, "/0/token"),
    ("token a number", "/0/token", 42, "/0/token"),
    ("token null", "/0/token", None, "/0/token"),
    ("logprob a string", "/0/logprob", "-0.25", "/0/logprob"),
    ("logprob NaN as a string", "/0/logprob", "NaN", "/0/logprob"),
    ("logprob a boolean", "/0/logprob", True, "/0/logprob"),
    ("top_logprobs a string", "/0/top_logprobs", "x", "/0/top_logprobs"),
    ("top_logprobs an object", "/0/top_logprobs", {" the": -0.1}, "/0/top_logprobs"),
    ("alternative not an object", "/0/top_logprobs/1", -2.5, "/0/top_logprobs/1"),
    ("alternative logprob missing", "/0/top_logprobs/1/logprob", DELETE, "/0/top_logprobs/1/logprob"),
    ("alternative logprob a string", "/0/top_logprobs/1/logprob", "low", "/0/top_logprobs/1/logprob"),
    ("list an object", "", {"token": "x", "logprob": -1.0}, ""),
    ("list a string", "", "<think>", ""),
]
CHAT_ONLY_CASES = [  # entries after the first: the C reader declines a later entry and the walk names it
    ("chat", "a later entry's alternative", "/5/top_logprobs/3/logprob", "-1", "/5/top_logprobs/3/logprob"),
]
COMPLETIONS_CASES = [
    ("logprobs a string", "", "x", ""),
    ("tokens a string", "/tokens", " on the", "/tokens"),
    ("a token a number", "/tokens/1", 7, "/tokens/1"),
    ("token_logprobs an object", "/token_logprobs", {"a": 1}, "/token_logprobs"),
    ("a token logprob a string", "/token_logprobs/1", "-0.1", "/token_logprobs/1"),
    ("token_logprobs shorter than tokens", "/token_logprobs", [-0.1], "/token_logprobs"),
    ("a top_logprobs item an array", "/top_logprobs/1", [-0.1], "/top_logprobs/1"),
    ("an alternative's logprob a string", "/top_logprobs/1/ x", "-2", "/top_logprobs/1/ x"),
    ("text_offset a string", "/text_offset", "0,3", "/text_offset"),
    ("an offset a string", "/text_offset/1", "3", "/text_offset/1"),
]
GEMINI_CASES = [
    ("logprobsResult an array", "", [], ""),
    ("chosenCandidates a string", "/chosenCandidates", "search", "/chosenCandidates"),
    ("a chosen candidate a string", "/chosenCandidates/0", "search", "/chosenCandidates/0"),
    ("a chosen token a number", "/chosenCandidates/0/token", 17, "/chosenCandidates/0/token"),
    ("a logProbability a string", "/chosenCandidates/0/logProbability", "-0.2",
     "/chosenCandidates/0/logProbability"),
    ("a tokenId a string", "/chosenCandidates/0/tokenId", "17", "/chosenCandidates/0/tokenId"),
    ("topCandidates an object", "/topCandidates", {"candidates": []}, "/topCandidates"),
    ("a top step an array", "/topCandidates/0", [], "/topCandidates/0"),
    ("a step's candidates a string", "/topCandidates/0/candidates", "x", "/topCandidates/0/candidates"),
    ("a top candidate's logProbability a boolean", "/topCandidates/0/candidates/1/logProbability", False,
     "/topCandidates/0/candidates/1/logProbability"),
]


def matrix() -> list[Any]:
    cases = []
    for fmt in BASES:
        table = CHAT_CASES if fmt in CHAT_LIKE else GEMINI_CASES if fmt.startswith("gemini") else COMPLETIONS_CASES
        cases += [pytest.param(fmt, *case[1:], id=f"{fmt}: {case[0]}") for case in table]
    cases += [pytest.param(fmt, *case, id=f"{fmt}: {name}") for fmt, name, *case in CHAT_ONLY_CASES]
    # A token showing U+FFFD is read from its bytes: there they must be byte values.
    for fmt in CHAT_LIKE:
        cases += [pytest.param(fmt, "/0", {"token": FFFD, "logprob": -0.5, "bytes": bad, "top_logprobs": []},
                               "/0/bytes", id=f"{fmt}: bytes {kind} on a U+FFFD token")
                  for kind, bad in (("a string", "\\xe2\\x80"), ("of strings", ["e2"]), ("past 255", [256]))]
    return cases


def mutate(body: dict[str, Any], pointer: str, value: Any) -> None:
    *parents, last = split(pointer)
    holder = resolve(body, join("", *parents))
    key: Any = int(last) if isinstance(holder, list) else last
    if value is DELETE:
        del holder[key]
    else:
        holder[key] = copy.deepcopy(value)


def post(client: TestClient, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    response = client.post("/v1/checks", content=json.dumps(body), headers={"content-type": "application/json"})
    return response.status_code, response.json()


def detector_errors(answer: dict[str, Any]) -> list[dict[str, Any]]:
    return [f for f in answer["findings"] if f["category"] == "detector_error"]


ON_DETECTOR_ERROR = load_policy(REPO / "policies" / "default").on_detector_error.value


@pytest.mark.parametrize(("fmt", "member", "value", "named"), matrix())
def test_malformed_logprobs_are_a_detector_error_naming_the_field(client: TestClient, fmt: str, member: str,
                                                                  value: Any, named: str) -> None:
    make, container = BASES[fmt]
    body = make()
    mutate(body, container + member, value)
    status, answer = post(client, body)
    assert status == 200, answer
    errors = detector_errors(answer)
    # A missing member is named in the object that lacks it: a finding's pointer resolves in the body sent.
    pointer = (container + named).rpartition("/")[0] if value is DELETE else container + named
    assert [(f["detector"], f["location"]["pointer"]) for f in errors] == [("low_confidence", pointer)]
    resolve(body, pointer)
    reason = errors[0]["evidence"]["reason"]
    assert errors[0]["message"] == f"logprobs not read: {reason}"
    if value is DELETE:
        assert reason.endswith("got nothing (it is required)") and split(container + named)[-1] in reason, reason
    assert errors[0]["action"] == answer["verdict"] == ON_DETECTOR_ERROR  # the sample is otherwise allowed
    # A stream's other chunks are read; a source on its own leaves nothing to read.
    read = answer["signals"]["low_confidence"]["source"]
    assert read == ("response" if fmt in OTHER_SOURCES else "none"), answer["signals"]["low_confidence"]


def test_an_attack_with_a_malformed_logprob_is_still_blocked(client: TestClient) -> None:
    # The regression: as a 422, one "NaN" let a gateway in fail_mode="open" forward the exfiltration unchecked.
    body = sample("attacks/openai_chat_exfiltration.json")
    message = body["response"]["choices"][0]["message"]
    call = message["tool_calls"][0]["function"]
    generated = (f"<think>\n{message['reasoning']}\n</think>\n\n<tool_call>\n"
                 f'{{"name": "{call["name"]}", "arguments": {call["arguments"]}}}\n</tool_call>')
    content = [{"token": token, "logprob": -0.05 * (i % 7), "bytes": list(token.encode()),
                "top_logprobs": [{"token": token, "logprob": -0.05 * (i % 7)}, {"token": " the", "logprob": -4.2}]}
               for i, token in enumerate(re.findall(r"\s*\w+|\s*[^\w\s]+|\s+", generated))]
    content[40]["logprob"] = "NaN"
    body["response"]["choices"][0]["logprobs"] = {"content": content}
    status, answer = post(client, body)
    assert status == 200, answer
    assert answer["verdict"] == "block"
    blocked = {f["category"] for f in answer["findings"] if f["action"] == "block"}
    assert {"tool_taint", "secret"} <= blocked, blocked
    assert [f["location"]["pointer"] for f in detector_errors(answer)] == [
        "/response/choices/0/logprobs/content/40/logprob"]


def test_every_malformed_chunk_is_reported_and_the_others_are_read(client: TestClient) -> None:
    body = sample("openai_chat_stream.json")
    chunks = [k for k, chunk in enumerate(body["response"])
              if chunk != "[DONE]" and any((c.get("logprobs") or {}).get("content") for c in chunk["choices"])]
    first, last = chunks[1], chunks[-1]
    body["response"][first]["choices"][0]["logprobs"]["content"][0]["token"] = None
    body["response"][last]["choices"][0]["logprobs"] = "none"
    status, answer = post(client, body)
    assert status == 200, answer
    assert sorted((f["location"]["pointer"], f["evidence"]["reason"]) for f in detector_errors(answer)) == [
        (f"/response/{first}/choices/0/logprobs/content/0/token", "token must be a string, got null"),
        (f"/response/{last}/choices/0/logprobs", "choice logprobs must be an object or null, got a string"),
    ]  # in the order the adapter met them: a list that is no list at once, entries in one pass at the end
    summary = answer["signals"]["low_confidence"]
    assert summary["source"] == "response" and summary["units"], summary


def chat_entries(fmt: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """A chat-shaped body's logprob entries in order, a stream's across its chunks."""
    if fmt == "chat_stream":
        return [e for chunk in body["response"] for choice in chunk.get("choices") or ()
                for e in (choice.get("logprobs") or {}).get("content") or ()]
    if fmt == "responses_stream":
        return [e for event in body["response"] for e in event.get("logprobs") or ()]
    return resolve(body, BASES[fmt][1])


def tolerated(fmt: str) -> dict[str, Any]:
    """`fmt`'s body with every variant vLLM (or Google) really sends, each in an entry of its own."""
    make, container = BASES[fmt]
    body = make()
    if fmt in CHAT_LIKE:
        entries = chat_entries(fmt, body)
        entries[0]["logprob"] = -9999.0  # vLLM's clamp of -inf: masked
        del entries[1]["logprob"]  # a stream leaves out a logprob left at its default (-9999.0)
        del entries[2]["top_logprobs"]  # ...and alternatives left at theirs ([])
        entries[3]["top_logprobs"] = None
        entries[4]["logprob"] = None
        del entries[5]["bytes"]
        entries[5]["top_logprobs"][0]["logprob"] = None
        entries[6]["top_logprobs"].pop()  # ragged alternatives
        entries[7]["bytes"] = None
    elif fmt.startswith("gemini"):
        result = resolve(body, container)
        del result["chosenCandidates"][0]["logProbability"]  # proto3 JSON leaves out what is unset
        result["chosenCandidates"][1]["tokenId"] = 1234
        del result["topCandidates"][0]["candidates"][0]["token"]
        result["chosen_candidates"] = result.pop("chosenCandidates")  # Google's SDK dictionaries: snake_case
    else:
        logprobs = resolve(body, container)
        logprobs["top_logprobs"][1] = None
        logprobs["token_logprobs"][0] = None
        del logprobs["text_offset"]
    return body


def test_what_vllm_and_google_send_is_read_without_a_detector_error(client: TestClient) -> None:
    failures = []
    for fmt in BASES:
        status, answer = post(client, tolerated(fmt))
        errors = [f for f in answer.get("findings", ()) if f["category"] == "detector_error"]
        source = answer.get("signals", {}).get("low_confidence", {}).get("source")
        if status != 200 or errors or source != "response":
            failures.append(f"{fmt}: {status} {errors or answer.get('error')} source={source}")
    # -inf and NaN reach the service from callers in Python (JSON has neither).
    body = tolerated("chat")
    entries = chat_entries("chat", body)
    entries[8]["logprob"], entries[9]["top_logprobs"][1]["logprob"] = float("-inf"), float("nan")
    payload = asyncio.run(client.app.state.service.check(body))  # type: ignore[attr-defined]
    errors = [f for f in payload["findings"] if f["category"] == "detector_error"]
    if errors or payload["signals"]["low_confidence"]["source"] != "response":
        failures.append(f"chat with -inf and NaN: {errors}")
    assert not failures, "\n".join(failures)


def test_what_a_vllm_stream_leaves_out_reads_as_its_default() -> None:
    # vLLM serializes stream chunks without unset fields: an entry with no logprob at hand is {token, bytes}.
    entries = [{"token": " Paris", "logprob": -0.2, "bytes": [32, 80, 97, 114, 105, 115],
                "top_logprobs": [{"token": " Paris", "logprob": -0.2}, {"token": " Rome", "logprob": -2.1}]},
               {"token": ",", "bytes": [44]},
               {"token": " then", "logprob": -0.4, "top_logprobs": None}]
    stream = read_source("chat", entries)
    assert stream.logprobs.tolist() == [-0.2, MASKED, -0.4]  # vLLM's default logprob: masked, never averaged
    assert stream.alternatives[0].tolist() == [-0.2, -2.1]
    assert all(math.isnan(v) for v in stream.alternatives[1:].ravel())
