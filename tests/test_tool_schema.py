"""tool_schema: arguments against the declared JSON Schema, and tool_choice, in every API format."""

from __future__ import annotations

import json

import pytest
from tool_bodies import FORMATS, body, located, scan

from detectors._argspans import argument_spans
from detectors.tool_schema import ToolSchemaDetector, normalize_tool_choice
from guardrails.findings import Severity

SCHEMA = {"type": "object", "additionalProperties": False, "required": ["city"], "properties": {
    "city": {"type": "string"}, "unit": {"enum": ["c", "f"]}, "days": {"type": "integer", "minimum": 1,
                                                                      "maximum": 7}}}


@pytest.mark.parametrize("fmt", FORMATS)
def test_schema_violations_point_at_the_offending_values(fmt: str) -> None:
    check = body(fmt, "get_weather", {"unit": "kelvin", "days": 9, "extra": "x"}, schema=SCHEMA)
    findings = scan(ToolSchemaDetector(), check)
    by_rule = {f.evidence["rule"]: f for f in findings}
    assert set(by_rule) == {"enum", "maximum", "required", "additionalProperties"}
    assert located(check, by_rule["enum"]) == "kelvin"
    assert str(located(check, by_rule["maximum"])) == "9"
    assert located(check, by_rule["additionalProperties"]) == "x"
    assert by_rule["required"].severity is Severity.HIGH and "'city' is a required property" in by_rule[
        "required"].message


@pytest.mark.parametrize("fmt", FORMATS)
def test_valid_arguments_pass(fmt: str) -> None:
    assert scan(ToolSchemaDetector(), body(fmt, "get_weather", {"city": "Paris", "days": 3}, schema=SCHEMA)) == []


def _chat_with_raw_arguments(raw: str) -> dict:
    check = body("openai.chat", "get_weather", {}, schema=SCHEMA)
    check["response"]["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] = raw
    return check


def test_broken_json_arguments() -> None:
    check = _chat_with_raw_arguments('{"city": "Paris"')  # vLLM #22885: the trailing brace lost
    (finding,) = scan(ToolSchemaDetector(), check)
    assert "not valid JSON" in finding.message and located(check, finding) == '{"city": "Paris"'


def test_double_encoded_arguments() -> None:
    check = _chat_with_raw_arguments(json.dumps(json.dumps({"city": "Paris"})))
    (finding,) = scan(ToolSchemaDetector(), check)
    assert finding.evidence["error"] == "double_encoded" and "decode to a JSON object" in finding.message


def test_arguments_that_are_not_an_object() -> None:
    (finding,) = scan(ToolSchemaDetector(), _chat_with_raw_arguments("[1, 2]"))
    assert finding.evidence["error"] == "not_object"


def test_wrong_type_in_nested_array_points_inside() -> None:
    schema = {"type": "object", "properties": {"items": {"type": "array", "items": {
        "type": "object", "properties": {"qty": {"type": "integer"}}}}}}
    check = body("openai.chat", "order", {"items": [{"qty": 1}, {"qty": "two"}]}, schema=schema)
    (finding,) = scan(ToolSchemaDetector(), check)
    assert finding.evidence["path"] == ["items", 1, "qty"] and located(check, finding) == "two"


def test_validators_are_compiled_once_per_schema_content() -> None:
    detector = ToolSchemaDetector()
    for city in ("Paris", "Rome", "Oslo"):
        scan(detector, body("openai.chat", "get_weather", {"city": city}, schema=json.loads(json.dumps(SCHEMA))))
    assert len(detector._validators) == 1


@pytest.mark.parametrize(("fmt", "choice"), [
    ("openai.chat", "none"), ("openai.responses", "none"), ("anthropic.messages", {"type": "none"})])
def test_tool_choice_none_but_a_call(fmt: str, choice: object) -> None:
    check = body(fmt, "get_weather", {"city": "Paris"}, schema=SCHEMA, tool_choice=choice)
    (finding,) = scan(ToolSchemaDetector(), check)
    assert located(check, finding) == "get_weather" and "'none'" in finding.message


@pytest.mark.parametrize(("fmt", "choice"), [
    ("openai.chat", {"type": "function", "function": {"name": "get_time"}}),
    ("openai.responses", {"type": "function", "name": "get_time"}),
    ("anthropic.messages", {"type": "tool", "name": "get_time"})])
def test_named_tool_choice_but_another_tool(fmt: str, choice: object) -> None:
    check = body(fmt, "get_weather", {"city": "Paris"}, schema=SCHEMA, tool_choice=choice)
    (finding,) = scan(ToolSchemaDetector(), check)
    assert located(check, finding) == "get_weather" and "get_time" in finding.message


def test_required_tool_choice_but_no_call() -> None:
    check = body("openai.chat", "get_weather", {"city": "Paris"}, schema=SCHEMA, tool_choice="required")
    check["response"]["choices"][0]["message"] = {"role": "assistant", "content": "It is sunny."}
    (finding,) = scan(ToolSchemaDetector(), check)
    assert finding.pointer == "/response" and finding.evidence["tool_choice"] == "required"


def test_tool_choice_normalization_across_apis() -> None:
    assert normalize_tool_choice("auto") == ("auto", frozenset())
    assert normalize_tool_choice({"type": "any"}) == ("required", frozenset())
    assert normalize_tool_choice({"function_calling_config": {"mode": "ANY", "allowed_function_names": ["a"]}}) \
        == ("required", frozenset({"a"}))
    assert normalize_tool_choice({"functionCallingConfig": {"mode": "NONE"}}) == ("none", frozenset())


def test_argument_spans_cover_nested_values_and_escapes() -> None:
    raw = '{"to": "a@b.c", "items": [{"url": "http://x/\\"q\\""}, 3, true], "n": null}'
    spans = {path: raw[a:b] for path, (a, b) in argument_spans(raw).items()}
    assert spans[("to",)] == "a@b.c"
    assert spans[("items", 0, "url")] == 'http://x/\\"q\\"'
    assert spans[("items", 1)] == "3" and spans[("items", 2)] == "true" and spans[("n",)] == "null"
    assert argument_spans('{"a": ') == {}


def test_streamed_arguments_are_located_in_their_chunk() -> None:
    chunks = [{"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "c", "type": "function",
                                                                  "function": {"name": "get_weather",
                                                                               "arguments": '{"city": "Paris", '}}]}}]},
              {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {
                  "arguments": '"unit": "kelvin"}'}}]}, "finish_reason": "tool_calls"}]}]
    check = body("openai.chat", "get_weather", {}, schema=SCHEMA)
    check["response"] = chunks
    (finding,) = scan(ToolSchemaDetector(), check)
    assert finding.pointer == "/response/1/choices/0/delta/tool_calls/0/function/arguments"
    assert located(check, finding) == "kelvin"
