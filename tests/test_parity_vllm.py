"""Parity with vLLM 0.33.0's tool parsers, driven by shared/fixtures/vllm-0.33.0-parsers.jsonl (413 cases).

* Where vLLM returns calls, `recover()` returns the same calls (names and arguments JSON-equal, in order).
* Where vLLM fails (an error, the call left in content or reasoning, the output dropped), `recover()`
  returns the call the model wrote (expected values below, by case key).
* Every intentional difference is in DIFFERENCES with its reason; every case with nothing to recover is
  in NOTHING_TO_RECOVER. A case in neither table must follow the first two rules.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from guardrails.toolparse import recover

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "vllm-0.33.0-parsers.jsonl"
if not FIXTURES.is_file():
    FIXTURES = Path("/work/shared/fixtures/vllm-0.33.0-parsers.jsonl")
CASES: list[dict[str, Any]] = (
    [json.loads(line) for line in FIXTURES.read_text(encoding="utf-8").splitlines() if line.strip()]
    if FIXTURES.is_file() else []
)
BY_ID = {case["case_id"]: case for case in CASES}

Call = tuple[str, Any]
GW: Call = ("get_weather", {"city": "Paris", "unit": "celsius"})
GW_PARIS: Call = ("get_weather", {"city": "Paris"})
TRUNCATED: Call = ("search_flights", {"origin": "SFO", "destination": "NR"})
FILTERS_REPAIRED: Call = ("search_flights", {"origin": "SFO", "destination": "NRT",
                                             "filters": {"airlines": ["ANA"], "nonstop": True}, "passengers": "two"})


def _vllm_calls(case_id: str) -> list[Call]:
    return [(c["name"], json.loads(c["arguments"])) for c in BY_ID[case_id]["vllm"]["tool_calls"]]


# What the model meant, by case key (the part after the family), for the cases vLLM fails on.
EXPECTED_BY_KEY: dict[str, list[Call]] = {
    "single": [GW], "text_before": [GW], "text_after": [GW], "missing_brace": [GW], "trailing_comma": [GW],
    "missing_start": [GW], "in_reasoning": [GW], "reasoning_missing_start": [GW], "reasoning_missing_end": [GW],
    "single_quotes": [GW_PARIS], "truncated": [TRUNCATED], "tool_choice_none": [GW],
    "multi": [GW, ("get_weather", {"city": "Tokyo"}), ("search_flights", {"origin": "CDG", "destination": "HND"})],
    "r1_parser_vocab_without_think_tokens": [GW],
    "fenced_tool_code": [GW_PARIS], "no_arguments_key": [("get_weather", {})], "parameters_key": [GW_PARIS],
    "extra_data_two_objects": [GW_PARIS, ("get_weather", {"city": "Rome"})],
    "one_good_one_bad": [GW_PARIS, ("get_weather", {"city": "Rome"})],
    "positional_arg": [GW_PARIS],  # mapped to the declared parameters in order
    "expression_arg": [("search_flights", {"origin": "SFO", "destination": "NRT", "passengers": "1+1"})],
    "v3_no_code_fence": [GW_PARIS],
    "phi4_nested_array_in_args": [("send_email", {"to": ["a@b.c", "d@e.f"], "subject": "s", "body": "b"})],
}
EXPECTED_BY_CASE: dict[str, list[Call]] = {
    "openai/missing_start": [GW_PARIS],
    "openai/reasoning_missing_end": [GW_PARIS],
    "glm45/missing_start": [GW_PARIS],
    "glm45/unknown_tool": [("delete_all_files", {"path": "/", "recursive": "true"})],
    "glm45/trailing_comma": [("search_flights", {"origin": "SFO", "destination": "NRT",
                                                 "filters": {"airlines": ["ANA"], "nonstop": True}})],
    "glm45/single_quotes": [FILTERS_REPAIRED],
    "qwen3_coder/single_quotes": [FILTERS_REPAIRED],
    "seed_oss/single_quotes": [FILTERS_REPAIRED],
    "qwen3_coder/trailing_comma": [GW_PARIS],
    "seed_oss/trailing_comma": [GW_PARIS],
    "gemma4/unknown_tool": [("delete_all_files", {"path": "/", "recursive": True})],
    "functiongemma/unknown_tool": [("delete_all_files", {"path": "/", "recursive": True})],
    "functiongemma/fg_numbers_bools": [("search_flights", {"origin": "SFO", "destination": "NRT", "passengers": 2,
                                                           "flexible": True})],
    "mistral_v11plus/hf_v11_tokenizer_given_prev11_format": [GW],
    "deepseek_v31/v31_given_v3_format": [GW],
}

REPAIRED = "vLLM passes the malformed arguments through as a non-JSON string; we return them repaired"
XML_UNCLOSED = "an unclosed parameter value ends at the next tag or the end of text; vLLM drops it"
# Cases where vLLM returns calls and we return different ones on purpose.
DIFFERENCES: dict[str, str] = {
    **{f"{family}/{key}": REPAIRED
       for family in ("mistral_v11plus", "deepseek_v3", "deepseek_v31", "kimi_k2", "openai")
       for key in ("missing_brace", "trailing_comma", "single_quotes")},
    **{f"{family}/truncated": REPAIRED for family in ("mistral_v11plus", "kimi_k2", "granite", "openai")},
    "granite/trailing_comma": REPAIRED,
    **{f"{family}/{key}": XML_UNCLOSED
       for family in ("qwen3_coder", "seed_oss", "glm45") for key in ("missing_brace", "truncated")},
    "functiongemma/truncated": XML_UNCLOSED,
    "qwen3_coder/trailing_comma": "`<function=NAME` without `>`: vLLM names the call 'NAME\\n<parameter=city' "
                                  "with no arguments; we end the name at the line and read the parameters",
    "seed_oss/trailing_comma": "same as qwen3_coder/trailing_comma",
    "qwen3_coder/single_quotes": "an object parameter written Python-style is read by the tolerant reader; "
                                 "vLLM keeps it as a string",
    "seed_oss/single_quotes": "same as qwen3_coder/single_quotes",
    "glm45/single_quotes": "same as qwen3_coder/single_quotes",
    "glm45/trailing_comma": "an object parameter with trailing commas is repaired; vLLM keeps it as a string",
    "gemma4/single_quotes": "single-quoted values are read as strings; vLLM keeps the quotes in the value",
    "gemma4/unknown_tool": "bare literals keep their JSON type without a schema; vLLM makes them strings",
    "functiongemma/unknown_tool": "FunctionGemma: vLLM drops every value not <escape>-quoted; we keep them typed",
    "functiongemma/nested": "same as functiongemma/unknown_tool",
    "functiongemma/fg_numbers_bools": "same as functiongemma/unknown_tool",
    "functiongemma/single_quotes": "same as functiongemma/unknown_tool (and single quotes delimit strings)",
    "mistral_v11plus/hf_v11_tokenizer_given_prev11_format": "vLLM names the call '[' (pre-v11 list read as "
                                                            "v11); we read the list",
    "deepseek_v31/v31_given_v3_format": "vLLM names the call 'function' (V3 text read as V3.1); we read V3",
}
EXPECTED_DIFFERENT = {
    "functiongemma/nested": lambda: _vllm_calls("hermes/nested"),
    "functiongemma/single_quotes": lambda: [GW],
    "gemma4/single_quotes": lambda: [GW],
    "functiongemma/truncated": lambda: [TRUNCATED],
}
# Cases with no call to recover (vLLM returns none either).
NOTHING_TO_RECOVER: dict[str, str] = {
    "hermes/plain_answer": "plain answer",
    "hermes/qwen3_no_tags_plain": "plain answer",
    "llama3_json/unrelated_json_in_text": "JSON without a name key is not a call",
    "openai/in_reasoning": "the analysis channel mentions the tool in prose; no message is addressed to it",
    "openai/final_only": "final channel only",
}


def _expected(case_id: str) -> list[Call]:
    if case_id in EXPECTED_DIFFERENT:
        return EXPECTED_DIFFERENT[case_id]()
    if case_id in EXPECTED_BY_CASE:
        return EXPECTED_BY_CASE[case_id]
    key = case_id.split("/", 1)[1]
    if key == "nested":
        return _vllm_calls("hermes/nested")
    return EXPECTED_BY_KEY[key]


def _schemas(case: dict[str, Any]) -> dict[str, Any]:
    return {t["function"]["name"]: t["function"].get("parameters") for t in case["tools"]}


def _ours(case: dict[str, Any]) -> list[Call]:
    return [(c.name, c.arguments) for c in recover(case["raw"], _schemas(case))]


def _vllm_parsed(case: dict[str, Any]) -> list[Call] | None:
    """vLLM's calls, or None when it returned none or an argument string that is not JSON."""
    calls = case["vllm"].get("tool_calls") or []
    try:
        return [(c["name"], json.loads(c["arguments"])) for c in calls] or None
    except ValueError:
        return None


pytestmark = pytest.mark.skipif(not CASES, reason=f"fixture file not found: {FIXTURES}")


def test_fixture_file_is_the_documented_one() -> None:
    assert len(CASES) == 413
    assert sum(bool(c["vllm"].get("tool_calls")) for c in CASES) == 250


@pytest.mark.parametrize("case_id", sorted(BY_ID))
def test_case(case_id: str) -> None:
    case = BY_ID[case_id]
    ours = _ours(case)
    if case["tool_parser"] is None or case_id in NOTHING_TO_RECOVER:
        assert ours == [], "nothing to recover here"
    elif case_id in DIFFERENCES:
        assert _vllm_parsed(case) != ours, "listed as a difference but matches vLLM: drop it from the table"
        assert ours == _expected(case_id)
    elif _vllm_parsed(case) is not None:
        assert ours == _vllm_parsed(case)
    else:
        assert not case["vllm"].get("tool_calls"), "vLLM returned unparsable arguments: list the case"
        assert ours == _expected(case_id), "vLLM failed here; we must recover the call"


def test_difference_tables_name_real_cases() -> None:
    for table in (DIFFERENCES, NOTHING_TO_RECOVER, EXPECTED_BY_CASE, EXPECTED_DIFFERENT):
        assert set(table) <= set(BY_ID)


def test_every_name_span_holds_the_name_and_every_span_is_inside_the_call() -> None:
    for case in CASES:
        for call in recover(case["raw"], _schemas(case)):
            assert case["raw"][call.name_span[0]:call.name_span[1]] == call.name, case["case_id"]
            assert call.span[0] <= call.name_span[0] and call.name_span[1] <= call.span[1], case["case_id"]
            assert call.span[0] <= call.arguments_span[0] <= call.arguments_span[1] <= call.span[1], case["case_id"]
            assert call.block[0] <= call.span[0] and call.span[1] <= call.block[1], case["case_id"]


# Bare forms carry no marker of their family; any reader of that body shape may claim them.
BARE_FAMILIES = {"xlam", "llama3_json", "pythonic"}
FAMILY_BY_PREFIX = {"mistral_v11plus": "mistral_v11", "granite-20b-fc": "granite_20b_fc", "openai": "harmony",
                    "qwen3_xml": "qwen3_coder"}
FAMILY_BY_CASE = {"mistral_v11plus/hf_tokenizer_prev11_format": "mistral_prev11",
                  "mistral_v11plus/hf_v11_tokenizer_given_prev11_format": "mistral_prev11",
                  "deepseek_v31/v31_given_v3_format": "deepseek_v3"}


def test_recovered_calls_name_the_family_that_wrote_them() -> None:
    for case in CASES:
        prefix = case["case_id"].split("/")[0]
        expected = FAMILY_BY_CASE.get(case["case_id"], FAMILY_BY_PREFIX.get(prefix, prefix))
        for call in recover(case["raw"], _schemas(case)):
            assert call.family == expected or call.family in BARE_FAMILIES, (case["case_id"], call.family)
