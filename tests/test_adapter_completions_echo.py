"""Legacy Completions with `echo: true`: the echoed prompt is the caller's text, not the model's.

vLLM answers `echo: true` with `choices[i].text` = the prompt followed by the completion and `logprobs` over
the prompt's tokens then the completion's (shared/reference/vllm.md §1.2, §1.4; the scoring fixture). Only
the completion is assistant text, located at offset len(prompt) of `text`, and only its tokens are in the
completions logprob source, so neither text detectors nor `low_confidence` judge the user's prompt as output.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from conftest import assert_locations_resolve, fixture

from detectors.low_confidence import LowConfidenceDetector
from guardrails.adapters import read_exchange
from guardrails.detector import ScanContext, Services
from guardrails.exchange import Exchange, Phase, SegmentKind
from guardrails.findings import Category, Finding
from guardrails.logprobs import align_exchange
from guardrails.model_stats import InMemoryModelStats
from guardrails.pointer import resolve
from guardrails.service import CheckService

SECRET = "AKIAQ7XK2M4PZ3LJ8VWE"  # flagged by the `secret` detector (tests/test_secret.py)
Tokens = list[tuple[str, float | None]]
# The user's prompt, scored by the model: surprising words, very low logprobs (the first token has none).
UNSURE_PROMPT: Tokens = [("The", None), (" zebra", -9.0), (" quantum", -8.5), (" violin", -9.2), (" eats", -8.0),
                         (" marble", -7.5)]
SURE_PROMPT: Tokens = [("The", None), (" cat", -0.3), (" sat", -0.2), (" on", -0.1), (" the", -0.05)]
SURE_COMPLETION: Tokens = [(" soft", -0.05), (" red", -0.02), (" mat", -0.04), (" today", -0.03), (".", -0.01)]
UNSURE_COMPLETION: Tokens = [(" zinc", -8.0), (" opera", -9.0), (" glacier", -8.8), (" tuba", -9.5), ("!", -7.0)]


def text_of(tokens: Tokens) -> str:
    return "".join(t for t, _ in tokens)


def logprobs(tokens: Tokens, offset: int = 0) -> dict[str, Any]:
    """A completions `logprobs` object as vLLM builds it: offsets are running token lengths from `offset`."""
    offsets, at = [], offset
    for token, _ in tokens:
        offsets.append(at)
        at += len(token)
    return {"text_offset": offsets, "token_logprobs": [v for _, v in tokens], "tokens": [t for t, _ in tokens],
            "top_logprobs": [None if v is None else {t: v} for t, v in tokens]}


def echoed_choice(index: int, prompt: Tokens, completion: Tokens, **extra: Any) -> dict[str, Any]:
    tokens = prompt + completion
    return {"index": index, "text": text_of(tokens), "logprobs": logprobs(tokens), "finish_reason": "length",
            "stop_reason": None, **extra}


def response(*choices: dict[str, Any]) -> dict[str, Any]:
    return {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "Qwen/Qwen3-8B",
            "choices": list(choices), "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}}


def body_of(prompt: Any, resp: Any, **request: Any) -> dict[str, Any]:
    return {"request": {"model": "Qwen/Qwen3-8B", "prompt": prompt, "echo": True, "logprobs": 1, **request},
            "response": resp}


def read(body: dict[str, Any]) -> Exchange:
    return read_exchange(body["request"], body["response"])


def assistant(exchange: Exchange) -> list[tuple[str, str, int]]:
    return [(s.text, s.pointer, s.start) for s in exchange.segments if s.kind is SegmentKind.ASSISTANT]


def scan(body: dict[str, Any], settings: dict[str, Any] | None = None) -> tuple[list[Finding], dict[str, Any]]:
    det = LowConfidenceDetector(settings or {}, Services(extra={"model_stats": InMemoryModelStats()}))
    exchange = read(body)
    ctx = ScanContext(segments=[s for s in exchange.segments if det.default_scope.matches(s)], signals={})
    return asyncio.run(det.scan(exchange, ctx)), ctx.signals


# --- the scoring response vLLM serves (fixture) ------------------------------------------------------------
def scoring_body() -> dict[str, Any]:
    resp = fixture("completion_echo_max_tokens0_logprobs0_scoring.json")
    return body_of(resp["choices"][0]["text"], resp, max_tokens=0, logprobs=0)


def test_a_scoring_response_gets_no_warn_on_the_users_own_prompt(service: CheckService) -> None:
    # It used to be a low_confidence warn at /response/choices/0/text: the prompt's own scores judged as output.
    result = asyncio.run(service.check(scoring_body()))
    assert result["verdict"] == "allow" and result["findings"] == []


def test_scoring_without_generation_has_no_assistant_segment_and_pulls_nothing() -> None:
    body = scoring_body()
    exchange = read(body)
    assert assistant(exchange) == []
    assert [s.kind for s in exchange.segments if s.phase is Phase.RESPONSE] == []
    # The response came with logprobs, none of them for generated text: nothing to judge, and no reason to ask
    # vLLM for scores (a pull to this closed port would be a detector_error finding).
    findings, signals = scan(body, {"pull": True, "vllm": {"base_url": "http://127.0.0.1:9", "timeout_s": 1}})
    assert findings == []
    assert signals["low_confidence"]["source"] == "response" and signals["low_confidence"]["units"] == []


# --- low_confidence judges the completion only, located exactly -----------------------------------------------
def test_an_unsure_prompt_echoed_before_a_sure_completion_gives_no_finding() -> None:
    body = body_of(text_of(UNSURE_PROMPT), response(echoed_choice(0, UNSURE_PROMPT, SURE_COMPLETION)))
    findings, signals = scan(body)
    assert findings == []
    (unit,) = signals["low_confidence"]["units"]
    assert (unit["pointer"], unit["unit"]) == ("/response/choices/0/text", "assistant")


def test_an_unsure_completion_after_a_sure_prompt_is_found_at_its_offset_in_the_text() -> None:
    prompt = text_of(SURE_PROMPT)
    body = body_of(prompt, response(echoed_choice(0, SURE_PROMPT, UNSURE_COMPLETION)))
    (finding,) = scan(body)[0]
    assert finding.category is Category.LOW_CONFIDENCE
    assert (finding.pointer, finding.start, finding.end) == ("/response/choices/0/text", len(prompt),
                                                             len(prompt) + len(text_of(UNSURE_COMPLETION)))
    assert resolve(body, finding.pointer)[finding.start:finding.end] == text_of(UNSURE_COMPLETION)
    for span in finding.evidence["spans"]:
        assert span["start"] >= len(prompt)


def test_a_completion_that_also_occurs_in_the_prompt_gets_its_own_tokens() -> None:
    # " Paris" is in the prompt (unsure) and is the completion (sure): searched in the whole echoed stream it
    # would be found in the prompt, with the prompt's token and logprob.
    prompt: Tokens = [("Is", None), (" it", -1.0), (" Paris", -6.5), ("?", -2.0), (" The", -1.5), (" capital", -3.0),
                      (" of", -0.2), (" France", -0.4), (" is", -0.3)]
    completion: Tokens = [(" Paris", -0.05)]
    body = body_of(text_of(prompt), response(echoed_choice(0, prompt, completion)))
    exchange = read(body)
    assert assistant(exchange) == [(" Paris", "/response/choices/0/text", len(text_of(prompt)))]
    (aligned,) = align_exchange(exchange, prompt=False)
    (unit,) = aligned.units
    assert aligned.stream.tokens[unit.token_start:unit.token_end] == (" Paris",)
    assert aligned.stream.logprobs[unit.token_start:unit.token_end].tolist() == [-0.05]
    location = unit.locate(unit.text_start, unit.text_end)
    assert (location.pointer, location.start) == ("/response/choices/0/text", len(text_of(prompt)))


# --- text detectors read the completion, not the prompt --------------------------------------------------------
def test_a_secret_in_the_echoed_prompt_is_the_users_never_the_models(service: CheckService) -> None:
    prompt = f"Rotate the key {SECRET} and then say"
    body = {"request": {"model": "m", "prompt": prompt, "echo": True, "max_tokens": 2},
            "response": response({"index": 0, "text": prompt + " done.", "finish_reason": "length"})}
    result = asyncio.run(service.check(copy.deepcopy(body)))
    secrets = [f["location"] for f in result["findings"] if f["category"] == "secret"]
    assert secrets == [{"pointer": "/request/prompt", "start": 15, "end": 35}]
    assert assistant(read(body)) == [(" done.", "/response/choices/0/text", len(prompt))]


# --- which prompt each choice echoes ------------------------------------------------------------------------
def test_a_list_of_prompts_with_n_choices_each_echoes_prompt_i_div_n() -> None:
    prompts = [SURE_PROMPT, UNSURE_PROMPT]
    completions = [SURE_COMPLETION, UNSURE_COMPLETION, SURE_COMPLETION[:2], UNSURE_COMPLETION[:3]]
    # vLLM numbers choices prompt by prompt: choices 0 and 1 answer prompt 0, choices 2 and 3 prompt 1.
    choices = [echoed_choice(i, prompts[i // 2], completions[i]) for i in range(4)]
    body = body_of([text_of(p) for p in prompts], response(*choices), n=2)
    exchange = read(body)
    expected = [(text_of(completions[i]), f"/response/choices/{i}/text", len(text_of(prompts[i // 2])))
                for i in range(4)]
    assert assistant(exchange) == expected
    assert_locations_resolve(body, exchange)
    sources = {s.choice: s.data["tokens"] for s in exchange.logprobs}
    assert sources == {i: [t for t, _ in completions[i]] for i in range(4)}


def test_a_choice_whose_text_does_not_start_with_its_prompt_is_read_whole() -> None:
    other: Tokens = [("A", None), (" dog", -0.5)]
    body = body_of(text_of(SURE_PROMPT), response(echoed_choice(0, other, SURE_COMPLETION)))
    exchange = read(body)
    assert assistant(exchange) == [(text_of(other + SURE_COMPLETION), "/response/choices/0/text", 0)]
    assert exchange.logprobs[0].data is body["response"]["choices"][0]["logprobs"]  # untouched


def test_without_echo_a_text_starting_with_the_prompt_is_all_the_models() -> None:
    body = body_of(text_of(SURE_PROMPT), response(echoed_choice(0, SURE_PROMPT, SURE_COMPLETION)), echo=False)
    assert assistant(read(body)) == [(text_of(SURE_PROMPT + SURE_COMPLETION), "/response/choices/0/text", 0)]


def test_token_id_prompts_cannot_be_split_and_are_read_whole() -> None:
    # The prompt's text is unknown here (only its ids): the choice is read as the model's, as without echo.
    for prompt in ([464, 3797, 3332], [[464, 3797], [3332]]):
        body = body_of(prompt, response(echoed_choice(0, SURE_PROMPT, SURE_COMPLETION)))
        exchange = read(body)
        assert assistant(exchange) == [(text_of(SURE_PROMPT + SURE_COMPLETION), "/response/choices/0/text", 0)]
        assert len(exchange.logprobs[0].data["tokens"]) == len(SURE_PROMPT + SURE_COMPLETION)


def test_vllms_prompt_token_count_decides_where_the_completion_tokens_start() -> None:
    # With `return_token_ids` vLLM echoes no prompt text but still the prompt's logprobs, and says how many
    # prompt tokens there are: those are dropped, the text is all the completion's.
    choice = echoed_choice(0, SURE_PROMPT, SURE_COMPLETION, prompt_token_ids=[464, 3797, 3332, 319, 262])
    choice["text"] = text_of(SURE_COMPLETION)
    body = body_of(text_of(SURE_PROMPT), response(choice), return_token_ids=True)
    exchange = read(body)
    assert assistant(exchange) == [(text_of(SURE_COMPLETION), "/response/choices/0/text", 0)]
    data = exchange.logprobs[0].data
    assert data["tokens"] == [t for t, _ in SURE_COMPLETION]
    assert data["text_offset"] == logprobs(SURE_COMPLETION)["text_offset"]


# --- streams: vLLM echoes the prompt in each choice's first chunk ----------------------------------------------
def stream_body(prompt: Tokens, completion: Tokens) -> dict[str, Any]:
    first = completion[:1]
    chunks: list[Any] = [{"id": "cmpl-1", "object": "text_completion", "model": "m", "choices": [
        {"index": 0, "text": text_of(prompt + first), "logprobs": logprobs(prompt + first)}]}]
    at = len(text_of(first))
    for token in completion[1:]:
        chunks.append({"id": "cmpl-1", "object": "text_completion", "model": "m", "choices": [
            {"index": 0, "text": token[0], "logprobs": logprobs([token], at)}]})
        at += len(token[0])
    chunks.append("[DONE]")
    return body_of(text_of(prompt), chunks, stream=True)


def test_a_streamed_echo_leaves_the_prompt_out_of_the_first_chunks_text_and_logprobs() -> None:
    body = stream_body(UNSURE_PROMPT, SURE_COMPLETION)
    exchange = read(body)
    ((text, pointer, _),) = assistant(exchange)
    assert text == text_of(SURE_COMPLETION) and pointer == "/response/0/choices/0/text"
    segment = next(s for s in exchange.segments if s.kind is SegmentKind.ASSISTANT)
    assert segment.pieces[0].start == len(text_of(UNSURE_PROMPT))  # into the first chunk, after the prompt
    assert_locations_resolve(body, exchange)
    assert [s.data["tokens"] for s in exchange.logprobs] == [[t] for t, _ in SURE_COMPLETION]
    assert exchange.logprobs[0].data["token_logprobs"] == [SURE_COMPLETION[0][1]]


def test_a_streamed_scoring_echo_without_generation_has_no_assistant_text() -> None:
    chunks = [{"id": "cmpl-1", "object": "text_completion", "choices": [
        {"index": 0, "text": text_of(SURE_PROMPT), "logprobs": logprobs(SURE_PROMPT), "finish_reason": "length"}]}]
    exchange = read(body_of(text_of(SURE_PROMPT), chunks, stream=True, max_tokens=0))
    assert assistant(exchange) == []
    assert [s.data["tokens"] for s in exchange.logprobs] == [[]]
