"""Gaps found by the logprob audit (issue 5): the scale token statistics are learned on, Gemini `logprobsResult`,
constrained decoding in streams and Responses, streamed Responses logprobs, and a detector timeout."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import fixture, sample
from test_logprobs_align import two_calls_body
from vllm_stub import VLLMStub

from detectors.low_confidence import LowConfidenceDetector
from guardrails.adapters import read_exchange
from guardrails.detector import DetectorRegistry, ScanContext, Services
from guardrails.findings import Category, Finding
from guardrails.logprobs import align_exchange, read_source
from guardrails.model_stats import InMemoryModelStats
from guardrails.pointer import resolve

MODEL = "Qwen/Qwen3-8B"
_WORD = re.compile(r"\s?\w+|\s?[^\w\s]+|\s+")  # a toy tokenizer: words with their leading space, punctuation


def scan(det: LowConfidenceDetector, body: dict[str, Any]) -> tuple[list[Finding], dict[str, Any]]:
    ex = read_exchange(body["request"], body["response"])
    ctx = ScanContext(segments=[s for s in ex.segments if det.default_scope.matches(s)], signals={})
    return asyncio.run(det.scan(ex, ctx)), ctx.signals["low_confidence"]


def detector(settings: dict[str, Any] | None = None, store: InMemoryModelStats | None = None) -> LowConfidenceDetector:
    return LowConfidenceDetector(settings or {}, Services(extra={"model_stats": store or InMemoryModelStats()}))


def located(body: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """(kind, label, what the unit's location holds in the body) for every aligned response unit."""
    ex = read_exchange(body["request"], body["response"])
    out = []
    for aligned in align_exchange(ex, prompt=False):
        for u in aligned.units:
            loc = u.locate(u.text_start, u.text_end)
            value = resolve(body, loc.pointer)
            out.append((u.kind, u.label, value[loc.start:loc.end] if isinstance(value, str) else value))
    return out


def chat_entry(token: str, logprob: float, alts: list[tuple[str, float]]) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode()),
            "top_logprobs": [{"token": t, "logprob": v, "bytes": list(t.encode())} for t, v in alts]}


def forced(entry: dict[str, Any]) -> None:
    """What grammar-constrained decoding returns for a forced token: 0.0, every other alternative masked."""
    entry["logprob"] = 0.0
    top = entry["top_logprobs"]
    entry["top_logprobs"] = [{**top[0], "logprob": 0.0}] + [{**alt, "logprob": -9999.0} for alt in top[1:]]


# --- 1. token statistics are learned on the scale the token threshold judges -----------------------------------

def content_body(tokens: list[tuple[str, float]]) -> dict[str, Any]:
    """A vLLM 0.33.0 chat response (the content fixture's shape) whose content is exactly these tokens."""
    response = fixture("chat_completion_content_logprobs.json")
    choice = response["choices"][0]
    choice["message"]["content"] = "".join(t for t, _ in tokens)
    choice["logprobs"]["content"] = [chat_entry(t, v, [(t, v), (" and", v - 2.0), (" Let", v - 3.0)])
                                     for t, v in tokens]
    request = {"model": MODEL, "messages": [{"role": "user", "content": "List the order numbers."}],
               "logprobs": True, "top_logprobs": 3}
    return {"request": request, "response": response}


# Relative token threshold after one 40-token answer; the segment mean is kept out of the way (absolute -10) so
# only the token threshold decides.
LEARNING = {"segment_logprob": -10.0, "relative": {"min_tokens": 40}}


def test_statistics_are_learned_weighted_so_a_models_usual_digits_are_not_low() -> None:
    body = content_body([(f" {10 + i}", -0.9 if i % 2 else -1.1) for i in range(40)])
    store = InMemoryModelStats()
    det = detector(LEARNING, store)
    scan(det, body)  # cold start: the model's statistics are learned from this answer
    learned = store.get(MODEL)
    assert learned is not None and learned.tokens.count == 40
    # Digits weigh 2: the tokens are judged as -1.8 and -2.2, so that is what the model's statistics hold.
    assert learned.tokens.mean == pytest.approx(-2.0)
    findings, summary = scan(det, body)  # the same, ordinary answer judged against what it taught
    thresholds = summary["thresholds"]
    assert thresholds["relative"] is True
    assert thresholds["token"] == pytest.approx(-2.0 - 2.5 * learned.tokens.std, abs=1e-3)
    assert thresholds["token"] < -2.2  # under every token's weighted logprob
    (unit,) = summary["units"]
    assert unit["low_share"] == 0.0 and findings == []


def test_a_function_word_far_below_the_models_usual_weighted_logprob_is_low() -> None:
    usual = [(" the" if i % 2 else " of", -2.9 if i % 4 < 2 else -3.1) for i in range(40)]
    det = detector({**LEARNING, "max_low_share": 0.0}, InMemoryModelStats())  # one low token makes the answer low
    scan(det, content_body(usual))
    odd = list(usual)
    odd[17] = (" the", -9.0)  # weighted -2.7: the model's function words usually sit at -0.9 (0.3 x -3)
    body = content_body(odd)
    findings, summary = scan(det, body)
    (finding,) = findings
    (span,) = finding.evidence["spans"]
    assert resolve(body, span["pointer"])[span["start"]:span["end"]] == " the"
    assert span["start"] == len("".join(t for t, _ in odd[:17]))
    assert summary["units"][0]["low_share"] == pytest.approx(1 / 40, abs=1e-3)


# --- 2. Gemini logprobsResult ---------------------------------------------------------------------------------

CALL_TOKENS = ["search", "_flights", "BER", "LIS", "2026", "-", "09", "-", "18", "economy"]  # name, then values
ANSWER = "Searching economy flights from Berlin to Lisbon on 18 September."


def gemini_logprobs(tokens: list[str], unsure: str | None = None) -> dict[str, Any]:
    """A `logprobsResult`: one chosen candidate and one top-candidates list (best first) per decoding step."""
    values = [-4.0 if t == unsure else -0.05 for t in tokens]
    return {"chosenCandidates": [{"token": t, "logProbability": v} for t, v in zip(tokens, values, strict=True)],
            "topCandidates": [{"candidates": [{"token": t, "logProbability": v},
                                              {"token": " alt", "logProbability": v - 3.0}]}
                              for t, v in zip(tokens, values, strict=True)]}


def gemini_body(unsure: str | None = None) -> dict[str, Any]:
    """The generateContent sample with a thought part, an answer part and a functionCall, and logprobs that cover
    every generated token (Google: one chosen candidate per decoding step)."""
    body = sample("gemini_generate_content.json")
    candidate = body["response"]["candidates"][0]
    parts = candidate["content"]["parts"]
    parts.insert(1, {"text": ANSWER})
    tokens = _WORD.findall(parts[0]["text"]) + _WORD.findall(ANSWER) + CALL_TOKENS
    candidate["logprobsResult"] = gemini_logprobs(tokens, unsure)
    return body


def test_gemini_logprobs_result_reads_tokens_logprobs_and_top_candidates() -> None:
    data = {"chosenCandidates": [{"token": "Lis", "logProbability": -0.5, "tokenId": 7},
                                 {"token": "bon", "logProbability": -2.0, "tokenId": 9}],
            "topCandidates": [{"candidates": [{"token": "Lis", "logProbability": -0.5, "tokenId": 7},
                                              {"token": "Por", "logProbability": -1.2, "tokenId": 8}]},
                              # The chosen token "may or may not be" among the top candidates (Google's docs).
                              {"candidates": [{"token": "boa", "logProbability": -0.3, "tokenId": 10}]}]}
    stream = read_source("gemini", data)
    assert stream.text == "Lisbon" and stream.tokens == ("Lis", "bon")
    assert stream.starts.tolist() == [0, 3] and stream.ends.tolist() == [3, 6]
    assert stream.logprobs.tolist() == [-0.5, -2.0]
    assert stream.alternatives[0].tolist() == [-0.5, -1.2]
    assert stream.alternatives[1].tolist() == [-2.0, -0.3]  # the sampled token added, as vLLM lists it


def test_gemini_tokens_align_to_thought_answer_call_name_and_argument_values() -> None:
    body = gemini_body()
    thought = body["response"]["candidates"][0]["content"]["parts"][0]["text"]
    args = body["response"]["candidates"][0]["content"]["parts"][2]["functionCall"]["args"]
    assert located(body) == [
        ("segment", "reasoning", thought),
        ("segment", "assistant", ANSWER),
        ("tool_name", "tool_name", "search_flights"),
        ("argument", "origin", "BER"),
        ("argument", "destination", "LIS"),
        ("argument", "date", "2026-09-18"),
        ("argument", "cabin", "economy"),
        ("segment", "tool_call", args),
    ]


def test_low_confidence_judges_gemini_logprobs_and_points_at_the_unsure_argument() -> None:
    body = gemini_body(unsure="LIS")
    findings, summary = scan(detector(), body)
    assert summary["source"] == "response" and summary["model"] == "gemini-3.7-flash"
    assert "unaligned_calls" not in summary
    (finding,) = findings
    assert finding.pointer == "/response/candidates/0/content/parts/2/functionCall/args/destination"
    assert resolve(body, finding.pointer)[finding.start:finding.end] == "LIS"
    assert finding.evidence["tool"] == "search_flights" and finding.evidence["path"] == ["destination"]


def test_gemini_candidates_align_to_their_own_parts() -> None:
    body = gemini_body()
    first = body["response"]["candidates"][0]
    second = {"content": {"role": "model", "parts": [{"text": "Looking up Lisbon flights now."}]},
              "finishReason": "STOP", "index": 1,
              "logprobsResult": gemini_logprobs(_WORD.findall("Looking up Lisbon flights now."), unsure=" Lisbon")}
    body["response"]["candidates"] = [first, second]
    findings, summary = scan(detector({"max_low_share": 0.0}), body)
    (finding,) = findings  # candidate 0 is confident throughout
    assert finding.pointer == "/response/candidates/1/content/parts/0/text"
    (span,) = finding.evidence["spans"]
    assert resolve(body, span["pointer"])[span["start"]:span["end"]] == " Lisbon"
    assert [u["pointer"] for u in summary["units"] if u["unit"] == "assistant"] == [
        "/response/candidates/0/content/parts/1/text", "/response/candidates/1/content/parts/0/text"]


def gemini_stream_body(unsure: str | None = None) -> dict[str, Any]:
    """Streamed: a thought chunk, an answer chunk and a functionCall chunk, each with its own logprobsResult."""
    body = gemini_body(unsure)
    candidate = body["response"]["candidates"][0]
    thought, answer, call = candidate["content"]["parts"]
    steps = candidate["logprobsResult"]
    cuts = [0, len(_WORD.findall(thought["text"])), len(_WORD.findall(thought["text"]) + _WORD.findall(ANSWER)),
            len(steps["chosenCandidates"])]
    meta = {"modelVersion": body["response"]["modelVersion"], "responseId": body["response"]["responseId"]}
    chunks = []
    for k, part in enumerate((thought, answer, call)):
        piece = {key: value[cuts[k]:cuts[k + 1]] for key, value in steps.items()}
        chunk_candidate: dict[str, Any] = {"content": {"role": "model", "parts": [part]}, "index": 0,
                                           "logprobsResult": piece}
        if k == 2:
            chunk_candidate["finishReason"] = "STOP"
        chunks.append({"candidates": [chunk_candidate], **meta})
    body["response"] = chunks
    return body


def test_streamed_gemini_logprobs_point_into_the_chunk_that_carried_each_part() -> None:
    body = gemini_stream_body(unsure=" September")  # a word of the answer only
    units = {(kind, label): value for kind, label, value in located(body)}
    assert units[("segment", "assistant")] == ANSWER and units[("argument", "cabin")] == "economy"
    findings, summary = scan(detector({"max_low_share": 0.0}), body)
    (finding,) = findings
    assert finding.pointer == "/response/1/candidates/0/content/parts/0/text"
    (span,) = finding.evidence["spans"]
    assert span["pointer"] == "/response/1/candidates/0/content/parts/0/text"
    assert resolve(body, span["pointer"])[span["start"]:span["end"]] == " September"
    pointers = {u["unit"]: u["pointer"] for u in summary["units"]}
    assert pointers["reasoning"] == "/response/0/candidates/0/content/parts/0/text"
    assert pointers["tool_name"] == "/response/2/candidates/0/content/parts/0/functionCall/name"


def test_a_gemini_call_whose_name_is_not_in_the_tokens_is_reported_not_matched_in_other_text() -> None:
    body = sample("gemini_generate_content_stream.json")
    # The answer chunk's tokens spell "Searching economy"; the call chunk carries no logprobs.
    del body["response"][3]["candidates"][0]["logprobsResult"]
    steps = body["response"][2]["candidates"][0]["logprobsResult"]
    steps["chosenCandidates"][1]["logProbability"] = steps["topCandidates"][1]["candidates"][0]["logProbability"] = -5.0
    assert [kind for kind, _, _ in located(body)] == []  # "economy" is the answer's word, not the cabin argument
    findings, summary = scan(detector(), body)
    assert findings == []
    assert summary["unaligned_calls"] == [{
        "pointer": "/response/3/candidates/0/content/parts/0/functionCall/args", "tool": "search_flights",
        "values": 4, "aligned": 0, "reason": "arguments sent as an object and the call's name is not in the tokens"}]


def test_a_gemini_call_with_values_missing_from_the_tokens_says_how_many_were_aligned() -> None:
    findings, summary = scan(detector(), sample("gemini_generate_content.json"))  # tokens: name, BER, LIS
    assert findings == []
    assert summary["unaligned_calls"] == [{
        "pointer": "/response/candidates/0/content/parts/1/functionCall/args", "tool": "search_flights",
        "values": 4, "aligned": 2, "reason": "argument values not found in the tokens"}]


# --- 3. constrained decoding in the summary, streams and Responses; streamed Responses logprobs -----------------

def test_summary_says_constrained_and_counts_forced_and_masked_under_tool_choice_required() -> None:
    body = two_calls_body()
    content = body["response"]["choices"][0]["logprobs"]["content"]
    for i in (40, 43, 46):  # '":' '",' '":' inside the first call's arguments
        forced(content[i])
    content[72]["logprob"] = -9999.0  # inside the second call's arguments
    _, auto = scan(detector(), body)
    assert "constrained" not in auto and auto["excluded"] == {"masked": 1}
    body["request"]["tool_choice"] = "required"
    _, summary = scan(detector(), body)
    assert summary["constrained"] is True
    assert summary["excluded"] == {"forced": 3, "masked": 1}
    first_call = next(u for u in summary["units"] if u["unit"] == "tool_call")
    assert first_call["forced"] == 3


def chat_stream_body() -> dict[str, Any]:
    chunks = fixture("chat_completion_stream_reasoning_tool_call_logprobs.chunks.json")
    request = {"model": MODEL, "messages": [{"role": "user", "content": "What's the weather in Paris?"}],
               "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {
                   "type": "object", "properties": {"city": {"type": "string"}}}}}],
               "tool_choice": "required", "stream": True, "logprobs": True, "top_logprobs": 2}
    return {"request": request, "response": chunks}


def test_streamed_chat_under_tool_choice_required_excludes_forced_tokens_of_the_call() -> None:
    body = chat_stream_body()
    tokens = {k: c["choices"][0]["logprobs"]["content"][0] for k, c in enumerate(body["response"])
              if c.get("choices") and c["choices"][0].get("logprobs")}
    assert [tokens[k]["token"] for k in (27, 28, 29, 31)] == ["city", '":', ' "', '"}}']
    for k in (27, 28, 29):  # the argument JSON's key and punctuation, forced by the grammar
        forced(tokens[k])
    tokens[31]["logprob"] = -9999.0
    _, summary = scan(detector(), body)
    assert summary["constrained"] is True and summary["excluded"] == {"forced": 3, "masked": 1}
    call = next(u for u in summary["units"] if u["unit"] == "tool_call")
    assert call["pointer"] == "/response/26/choices/0/delta/tool_calls/0/function/arguments"
    assert call["forced"] == 3 and call["masked"] == 1 and call["tokens"] == 6 - 4  # ' {"' and 'Paris' count
    reasoning = next(u for u in summary["units"] if u["unit"] == "reasoning")
    assert "forced" not in reasoning  # only tokens that read 0.0 with no live alternative are forced


def responses_body(request: dict[str, Any]) -> dict[str, Any]:
    response = fixture("responses_reasoning_function_call_message_logprobs.json")
    base = {"model": MODEL, "input": "What's the weather in Paris?", "include": ["message.output_text.logprobs"],
            "top_logprobs": 3, "max_output_tokens": 512}
    return {"request": {**base, **request}, "response": response}


WEATHER_TOOL = {"type": "function", "name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string"}}}}


def test_responses_under_tool_choice_required_excludes_forced_tokens_of_the_call() -> None:
    body = responses_body({"tools": [WEATHER_TOOL], "tool_choice": "required"})
    logprobs = body["response"]["output"][1]["content"][0]["logprobs"]
    assert [logprobs[i]["token"] for i in (45, 46, 47, 51, 52, 53)] == ["city", '":', ' "', "unit", '":', ' "']
    for i in (45, 46, 47, 51, 52, 53):
        forced(logprobs[i])
    _, summary = scan(detector(), body)
    assert summary["constrained"] is True and summary["excluded"] == {"forced": 6, "masked": 0}
    call = next(u for u in summary["units"] if u["unit"] == "tool_call")
    assert call["pointer"] == "/response/output/2/arguments" and call["forced"] == 6
    body["request"]["tool_choice"] = "auto"
    _, unconstrained = scan(detector(), body)
    assert "constrained" not in unconstrained and "excluded" not in unconstrained


def test_responses_with_a_json_schema_text_format_exclude_forced_tokens_of_the_answer() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    body = responses_body({"text": {"format": {"type": "json_schema", "name": "place", "schema": schema}}})
    output = body["response"]["output"]
    del output[2]  # the answer is the JSON itself, no tool call
    part = output[1]["content"][0]
    logprobs = part["logprobs"]
    reasoning = logprobs[:logprobs.index(next(e for e in logprobs if e["token"] == "</think>")) + 1]
    answer = [('{"', True), ("city", True), ('":', True), (' "', True), ("Paris", False), ('"}', True)]
    part["text"] = "".join(t for t, _ in answer)
    logprobs[:] = reasoning + [chat_entry(t, -0.3, [(t, -0.3), (" Lyon", -1.5), (" Nice", -2.6)]) for t, _ in answer]
    for entry, (_, is_forced) in zip(logprobs[len(reasoning):], answer, strict=True):
        if is_forced:
            forced(entry)
    ex = read_exchange(body["request"], body["response"])
    assert ex.constraints.response_format and not ex.constraints.tool_choice_forced
    _, summary = scan(detector(), body)
    assert summary["constrained"] is True and summary["excluded"] == {"forced": 5, "masked": 0}
    (unit,) = [u for u in summary["units"] if u["unit"] == "assistant"]
    assert unit["pointer"] == "/response/output/1/content/0/text" and unit["tokens"] == 1  # "Paris" alone


def test_streamed_responses_output_text_delta_logprobs_align_into_their_events() -> None:
    body = sample("openai_responses_stream.json")
    events = body["response"]
    carrying = [k for k, e in enumerate(events) if e.get("logprobs")]
    assert all(events[k]["type"] == "response.output_text.delta" for k in carrying) and len(carrying) == 12
    for k in (32, 35):  # " current" and " Paris": one token per delta event
        (entry,) = events[k]["logprobs"]
        entry["logprob"] = entry["top_logprobs"][0]["logprob"] = -6.0
    findings, summary = scan(detector({"max_low_share": 0.0}), body)
    (unit,) = [u for u in summary["units"] if u["unit"] == "assistant"]
    assert unit["pointer"] == "/response/26/delta" and unit["tokens"] == 12  # every delta's tokens, joined
    (finding,) = findings
    spans = [(s["pointer"], resolve(body, s["pointer"])[s["start"]:s["end"]]) for s in finding.evidence["spans"]]
    assert spans == [("/response/32/delta", " current"), ("/response/35/delta", " Paris")]
    # Only the text deltas carry logprobs in a vLLM stream: the call's arguments had none, and the summary says so.
    (unaligned,) = summary["unaligned_calls"]
    assert unaligned["tool"] == "get_weather" and unaligned["aligned"] == 0


# --- a detector-level timeout against the stub vLLM --------------------------------------------------------------

@pytest.fixture(scope="module")
def slow_stub() -> Iterator[VLLMStub]:
    with VLLMStub() as server:
        yield server


def check_with(tmp_path: Path, settings: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    from importlib.metadata import entry_points

    from guardrails.policy import PolicyStore
    from guardrails.service import CheckService

    (tmp_path / "lc").mkdir()
    config = {"detectors": {"low_confidence": settings}, "on_detector_error": "warn"}
    (tmp_path / "lc" / "config.yml").write_text(yaml.safe_dump(config))
    registry = DetectorRegistry(ep.load() for ep in entry_points(group="guardrails.detectors")
                                if ep.name == "low_confidence")
    return asyncio.run(CheckService(PolicyStore(tmp_path), registry, default_policy="lc").check(body))


def no_logprobs_body() -> dict[str, Any]:
    body = two_calls_body()
    body["response"]["choices"][0]["logprobs"] = None
    return body


def test_a_slow_vllm_past_the_policy_timeout_is_a_detector_error_not_a_failed_check(
        slow_stub: VLLMStub, tmp_path: Path) -> None:
    slow_stub.reset()
    slow_stub.delay_s = 2.0  # far past the detector's 100 ms; the vLLM client itself would wait 30 s
    vllm = {"base_url": slow_stub.url, "model": MODEL, "timeout_s": 30}
    answer = check_with(tmp_path, {"pull": True, "vllm": vllm, "timeout_ms": 100}, no_logprobs_body())
    slow_stub.reset()
    (finding,) = answer["findings"]
    assert finding["category"] == Category.DETECTOR_ERROR.value and finding["detector"] == "low_confidence"
    assert finding["evidence"]["error_type"] == "TimeoutError" and "timed out after 0.1 s" in finding["message"]
    assert finding["action"] == "warn" and answer["verdict"] == "warn"  # on_detector_error decides


def test_a_vllm_call_past_the_clients_timeout_is_the_detectors_own_error_finding(
        slow_stub: VLLMStub, tmp_path: Path) -> None:
    slow_stub.reset()
    slow_stub.delay_s = 2.0
    vllm = {"base_url": slow_stub.url, "model": MODEL, "timeout_s": 0.1}
    answer = check_with(tmp_path, {"pull": True, "vllm": vllm, "timeout_ms": 20_000}, no_logprobs_body())
    slow_stub.reset()
    (finding,) = answer["findings"]
    assert finding["category"] == Category.DETECTOR_ERROR.value and finding["detector"] == "low_confidence"
    assert finding["message"].startswith("could not score the response on vLLM") and "timed out" in finding["message"]
    assert answer["signals"]["low_confidence"] == {"source": "pull_failed"}
    assert answer["verdict"] == "warn"
