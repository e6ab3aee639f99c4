"""`recover()` across families: precedence, spans, schema typing and the cheap path for prose."""

from __future__ import annotations

from typing import Any

import pytest
from test_parity_vllm import CASES

from guardrails.toolparse import PARSERS, PRECEDENCE, CarriedCalls, find_leaks, get_parser, recover

SCHEMAS = {"search": {"type": "object", "properties": {"n": {"type": "integer"}, "exact": {"type": "boolean"},
                                                       "tags": {"type": "array"}, "q": {"type": "string"}}}}


def test_every_family_is_registered_once_and_ranked() -> None:
    assert set(PARSERS) == set(PRECEDENCE)
    assert len(PARSERS) == 22
    with pytest.raises(KeyError):
        get_parser("nope")


@pytest.mark.parametrize("text", [
    "The weather in Paris is sunny, 22 °C.",
    "See [the docs](https://example.com/x(1)) and call me (maybe).",
    'Config: {"name": "svc", "port": 80}',
    "Use <b>bold</b> and a list [1, 2, 3] or [a, b].",
    "result = [fetch(url=u) for u in urls]",
])
def test_prose_code_and_plain_json_are_not_calls(text: str) -> None:
    assert recover(text) == []


def test_widest_block_wins_overlapping_families() -> None:
    text = 'ok <|tool_call|>[{"name": "f", "arguments": {"a": 1}}] done'
    [call] = recover(text)
    assert call.family == "granite" and text[call.span[0]:call.span[1]].startswith("<|tool_call|>[")


def test_calls_of_two_families_in_one_text_come_back_in_order() -> None:
    text = ('<tool_call>\n{"name": "a", "arguments": {}}\n</tool_call> then '
            '<|tool_call>call:b{x:<|"|>y<|"|>}<tool_call|>')
    assert [(c.family, c.name, c.arguments) for c in recover(text)] == [
        ("hermes", "a", {}), ("gemma4", "b", {"x": "y"})]


def test_xml_values_are_typed_from_the_schema_only_when_declared() -> None:
    text = ("<tool_call>\n<function=search>\n<parameter=n>\n3\n</parameter>\n<parameter=exact>\nTrue\n</parameter>\n"
            "<parameter=tags>\n['a', 'b',]\n</parameter>\n<parameter=q>\n42\n</parameter>\n"
            "<parameter=extra>\n7\n</parameter>\n</function>\n</tool_call>")
    [typed] = recover(text, SCHEMAS)
    assert typed.arguments == {"n": 3, "exact": True, "tags": ["a", "b"], "q": "42", "extra": "7"}
    [untyped] = recover(text)
    assert untyped.arguments["n"] == "3"


def test_kimi_ids_and_name_spans() -> None:
    text = ("<|tool_calls_section_begin|><|tool_call_begin|>functions.search:4<|tool_call_argument_begin|>"
            '{"q": "x"}<|tool_call_end|><|tool_calls_section_end|>')
    [call] = recover(text)
    assert call.call_id == "functions.search:4" and text[call.name_span[0]:call.name_span[1]] == "search"
    assert text[call.arguments_span[0]:call.arguments_span[1]] == '{"q": "x"}'


def test_unreadable_arguments_keep_the_raw_text() -> None:
    text = '[TOOL_CALLS]search[ARGS]not json at all'
    [call] = recover(text)
    assert call.name == "search" and not call.arguments_parsed and call.arguments == "not json at all"


def test_carried_calls_match_by_arguments_or_by_name_when_unparsed() -> None:
    [call] = recover('<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>')
    assert CarriedCalls([("f", {"a": 1}, True)]).claim(call)
    assert not CarriedCalls([("f", {"a": 2}, True)]).claim(call)
    assert CarriedCalls([("f", None, False)]).claim(call)
    carried = CarriedCalls([("f", {"a": 1}, True)])
    assert carried.claim(call) and not carried.claim(call)  # one carried call vouches once


def test_find_leaks_reports_content_then_unseen_raw_output() -> None:
    text = '<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>'
    raw = text + '<tool_call>\n{"name": "g", "arguments": {}}\n</tool_call>'
    leaks = find_leaks([("content", text)], raw, [])
    assert [(source, call.name) for source, call in leaks] == [("content", "f"), (None, "g")]
    assert find_leaks([("content", text)], None, [("f", {}, True)]) == []


# Prose around a call, with the characters that wake the marker scan and the pythonic reader.
PROSE_BEFORE = 'Sure - see [the docs](https://example.com/a(1)) and "quotes", a < b.\n\n'
PROSE_AFTER = "\n\nDone (for now). Let me know [if] it's wrong."
SINGLE_CASES = [case for case in CASES if case["case_id"].endswith("/single")]


@pytest.mark.parametrize("case", SINGLE_CASES, ids=[case["case_id"] for case in SINGLE_CASES])
def test_a_call_reads_the_same_inside_prose(case: dict[str, Any]) -> None:
    schemas = {t["function"]["name"]: t["function"].get("parameters") for t in case["tools"]}
    alone = recover(case["raw"], schemas)
    inside = recover(PROSE_BEFORE + case["raw"] + PROSE_AFTER, schemas)
    shift = len(PROSE_BEFORE)
    assert alone
    assert [(c.family, c.name, c.arguments, c.span[0] + shift, c.name_span[0] + shift) for c in alone] == [
        (c.family, c.name, c.arguments, c.span[0], c.name_span[0]) for c in inside]


def test_a_truncated_call_followed_by_long_prose_is_read_to_the_end() -> None:
    truncated = '<tool_call>\n{"name": "search_flights", "arguments": {"origin": "SFO", "destination": "NR'
    text = truncated + PROSE_AFTER * 100  # the open string runs over the prose: no closing quote anywhere
    [call] = recover(text)
    assert (call.name, call.arguments["origin"], call.span) == ("search_flights", "SFO", (0, len(text)))
    assert call.arguments["destination"].startswith("NR\n\nDone") and "unclosed" in call.repairs


def test_seed_oss_wakes_on_either_wrapper_tag_and_qwen3_coder_keeps_the_bare_function() -> None:
    body = "<function=search>\n<parameter=q>x</parameter>\n</function>"
    assert [c.family for c in recover(body + "\n</seed:tool_call>")] == ["seed_oss"]
    assert [c.family for c in recover("<seed:tool_call>\n" + body)] == ["seed_oss"]
    assert [c.family for c in recover(body)] == ["qwen3_coder"]


def test_harmony_header_starts_at_its_own_chain_of_tokens() -> None:
    text = ('<|channel|>analysis<|message|>Is 3 < 4? Yes.<|end|>'
            '<|start|>assistant to=functions.get_weather<|channel|>commentary json<|message|>{"city": "Paris"}<|call|>')
    [call] = recover(text)
    assert (call.name, call.arguments) == ("get_weather", {"city": "Paris"})
    markup = text[call.span[0]:call.span[1]]
    assert markup.startswith("<|start|>assistant to=") and markup.endswith("<|call|>")


def test_pythonic_expression_arguments_keep_their_brackets() -> None:
    [call] = recover("[f(a=g(1, 2), b=[x for x in y], c=3)]")
    assert call.arguments == {"a": "g(1, 2)", "b": "[x for x in y]", "c": 3} and call.repairs == ("non_literal",)
