"""The tolerant JSON-like reader under the tool parsers."""

from __future__ import annotations

import pytest

from guardrails.toolparse.lenient import LenientReader, NotAValue, decode_escapes, read_value


@pytest.mark.parametrize(("text", "value", "repairs"), [
    ('{"a": 1, "b": [true, null]}', {"a": 1, "b": [True, None]}, set()),
    ("{'city': 'Paris'}", {"city": "Paris"}, {"single_quotes"}),
    ('{"city": "Paris", "unit": "celsius",}', {"city": "Paris", "unit": "celsius"}, {"trailing_comma"}),
    ('{"x": True, "y": None}', {"x": True, "y": None}, {"python_literals"}),
    ('{city: "Paris"}', {"city": "Paris"}, {"unquoted_keys"}),
    ('{"origin": "SFO", "destination": "NR', {"origin": "SFO", "destination": "NR"}, {"unclosed"}),
    ('{"a": {"b": [1, 2', {"a": {"b": [1, 2]}}, {"unclosed"}),
    ('{"a": "x" "b": "y"}', {"a": "x", "b": "y"}, {"missing_comma"}),
    ("{'s': 'it\\'s \\u00e9\\x41'}", {"s": "it's éA"}, {"single_quotes"}),
])
def test_reads_and_records_repairs(text: str, value: object, repairs: set[str]) -> None:
    read = read_value(text, 0)
    assert read is not None
    assert read[0] == value
    assert set(read[2]) == repairs


def test_missing_brace_closes_at_the_enclosing_bracket() -> None:
    text = '[{"name": "f", "arguments": {"a": 1}]'
    read = read_value(text, 0)
    assert read is not None and read[0] == [{"name": "f", "arguments": {"a": 1}}] and read[1] == len(text)


def test_bound_stops_the_reader_before_closing_markup() -> None:
    text = '{"a": {"b": 1}\n</tool_call>'
    read = read_value(text, 0, text.index("</tool_call>"))
    assert read is not None and read[0] == {"a": {"b": 1}} and "unclosed" in read[2]


def test_prose_is_not_a_value() -> None:
    assert read_value("hello world", 0) is None
    with pytest.raises(NotAValue):
        LenientReader("{city: Paris}").value(0)


def test_custom_delimiter_and_bare_keys_read_the_gemma_syntax() -> None:
    text = '{city:<|"|>Paris "x"<|"|>,n:2,ok:true,tags:[<|"|>a<|"|>]}'
    reader = LenientReader(text, delimiter='<|"|>', bare_keys=True)
    assert reader.value(0) == ({"city": 'Paris "x"', "n": 2, "ok": True, "tags": ["a"]}, len(text))
    assert reader.repairs == set()


def test_object_spans_point_at_each_value() -> None:
    text = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
    members, end = LenientReader(text).object_spans(0)
    value, start, stop = members["arguments"]
    assert value == {"city": "Paris"} and text[start:stop] == '{"city": "Paris"}' and end == len(text)


def test_surrogate_pairs_and_cut_escapes() -> None:
    assert decode_escapes("\\ud83c\\udf26 caf\\u00e9") == "🌦 café"
    read = read_value('"abc\\', 0)
    assert read is not None and read[0] == "abc"
