"""Tool-call recovery on unclosed, deeply nested JSON-like text does work linear in its length.

The inputs are the reproducers of the review (20 KB of each took 3 to 24 s: the lenient reader retried the strict
decoder at every nesting level, each retry rescanning to the same failure, and the bare-JSON reader read again
from every nested `{"name":`). No timing: the tests count the work -- strict decoder calls, the characters they
scan (with the position of each JSONDecodeError, whose line count scans the text up to it), and the keys the
lenient reader reads -- at 1x and 4x the input; quadratic work grows sixteen-fold."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from json import JSONDecodeError
from typing import Any

import pytest

from guardrails.toolparse import RecoveredCall, jsoncalls, lenient, recover

REPRODUCERS = ['{"name": ', '{"name": "f", "arguments": ', "{'name': ", '{"name": "f", "arguments": {"a": "']
LINEAR = 4.5  # allowed growth of the work for 4x the input (quadratic work grows 16x)
SLACK = 200  # a constant allowance: the reads at the end of the text do not grow with it
CALL = '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}'


@dataclass
class Work:
    scans: int = 0  # strict decoder calls
    scanned: int = 0  # characters they scanned (to the JSONDecodeError's position, when they failed)
    keys: int = 0  # keys the lenient reader read


def counting_scan(scan: Callable[[str, int], tuple[Any, int]], work: Work) -> Callable[[str, int], tuple[Any, int]]:
    def counted(text: str, i: int) -> tuple[Any, int]:
        work.scans += 1
        try:
            value, after = scan(text, i)
        except JSONDecodeError as error:
            work.scanned += error.pos  # the error counts the lines of text[:pos]
            raise
        except StopIteration as stop:
            work.scanned += int(stop.value) - i
            raise
        work.scanned += after - i
        return value, after

    return counted


def recover_counting(monkeypatch: pytest.MonkeyPatch, text: str) -> tuple[Work, list[RecoveredCall]]:
    work = Work()
    key = lenient.LenientReader._key

    def counted_key(reader: lenient.LenientReader, i: int) -> tuple[str, int]:
        work.keys += 1
        return key(reader, i)

    with monkeypatch.context() as patch:
        patch.setattr(lenient, "_SCAN", counting_scan(lenient._SCAN, work))
        patch.setattr(jsoncalls, "_SCAN", counting_scan(jsoncalls._SCAN, work))
        patch.setattr(lenient.LenientReader, "_key", counted_key)
        calls = recover(text)
    return work, calls


def repeated(unit: str, size: int) -> str:
    return unit * (size // len(unit))


@pytest.mark.parametrize("unit", REPRODUCERS)
def test_work_grows_linearly_on_deep_unclosed_text(monkeypatch: pytest.MonkeyPatch, unit: str) -> None:
    small, calls = recover_counting(monkeypatch, repeated(unit, 2_000))
    large, more = recover_counting(monkeypatch, repeated(unit, 8_000))
    assert large.scans <= LINEAR * small.scans + SLACK, (small, large)
    assert large.scanned <= LINEAR * small.scanned + SLACK * 1000, (small, large)
    assert large.keys <= LINEAR * small.keys + SLACK, (small, large)
    # The same reading at both sizes: no call in the bare nestings, one truncated call in the chain of
    # arguments, one call per unit where each unit's string ends it.
    if "arguments" not in unit:
        assert calls == more == []
    elif unit.endswith(": "):
        assert [c.repairs for c in calls] == [c.repairs for c in more] == [("truncated", "unclosed")]
    else:
        # (every other unit: the string of the one before holds its start)
        assert (len(calls), len(more)) == ((2_000 // len(unit) + 1) // 2, (8_000 // len(unit) + 1) // 2)
        assert {c.repairs for c in calls[:-1] + more[:-1]} == {("unclosed",)}
        assert [c.name for c in calls + more] == ["f"] * (len(calls) + len(more))


@pytest.mark.parametrize("unit", REPRODUCERS)
def test_a_call_after_the_junk_is_recovered_with_its_span(unit: str) -> None:
    junk = repeated(unit, 5_000)
    # The bare nestings hold the call as their innermost value; the others would take it for their own text
    # (arguments, a string) without prose that ends them (and the string).
    prose = "\n\nDone. Calling it now: "
    sep = {REPRODUCERS[1]: prose, REPRODUCERS[3]: '"' + prose}.get(unit, " ")
    text = junk + sep + CALL
    start = len(junk) + len(sep)
    call = [c for c in recover(text) if c.name == "get_weather"]
    assert len(call) == 1
    assert call[0].span == (start, len(text))
    assert call[0].arguments == {"city": "Paris", "unit": "celsius"} and call[0].repairs == ()
    assert text[slice(*call[0].name_span)] == "get_weather"
    assert text[slice(*call[0].arguments_span)] == '{"city": "Paris", "unit": "celsius"}'


def test_calls_after_repeated_junk_are_each_recovered(monkeypatch: pytest.MonkeyPatch) -> None:
    # Junk, a call, junk, a call...: the call ends each nesting; each is read once, not from every level above.
    block = repeated('{"name": ', 3_000) + CALL
    small, calls = recover_counting(monkeypatch, block * 4)
    large, more = recover_counting(monkeypatch, block * 16)
    assert [c.name for c in calls] == ["get_weather"] * 4 and len(more) == 16
    assert [c.span for c in more] == [(k * len(block) + len(block) - len(CALL), (k + 1) * len(block))
                                      for k in range(16)]
    assert large.keys <= LINEAR * small.keys + SLACK, (small, large)
    assert large.scanned <= LINEAR * small.scanned + SLACK * 1000, (small, large)


def test_a_call_nested_in_an_object_that_fails_to_read_is_still_recovered() -> None:
    # The outer object fails (`@`) after the nested call closed: read alone, the nested call reads as before.
    text = '{"name": "a", "x": {"name": "f", "arguments": {"k": 1}}, "y": @}'
    assert [(c.name, c.arguments, c.span) for c in recover(text)] == [("f", {"k": 1}, (19, 55))]
    # And one nested in an object that reads but is no call.
    text = 'junk {"name": {"name": "f", "arguments": {"k": 1}}} thanks'
    assert [(c.name, c.span) for c in recover(text)] == [("f", (14, 50))]


@pytest.mark.parametrize(("text", "value"), [
    # NaN/Infinity, which only the strict decoder reads, in a container nested in one it fails on: read when
    # the nested container is strict JSON, refused when it is not (as when the decoder was tried on it first).
    ('[{"a": {"b": NaN, "c": [Infinity]}, \'d\': 1}]', [{"a": {"b": "nan", "c": ["inf"]}, "d": 1}]),
    ('[{"a": {"b": NaN, \'c\': 1}, "d": 1}]', None),
    ('[{"a": {"b": {"c": NaN}, "d": 1}, \'e\': 1}]', [{"a": {"b": {"c": "nan"}, "d": 1}, "e": 1}]),
    ('[{"a": {"b": {"c": NaN, \'d\': 1}}}]', None),
    ('[{"a": NaN, \'b\': 1}]', None),  # NaN right in the container the decoder failed on: refused, as before
])
def test_non_finite_numbers_in_a_failed_container_read_as_before(text: str, value: Any) -> None:
    read = lenient.read_value(text, 0)
    assert (read and _floats_named(read[0])) == value


def _floats_named(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _floats_named(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_floats_named(v) for v in value]
    return str(value) if isinstance(value, float) else value


def test_a_valid_deep_value_in_a_failed_object_is_still_read_by_the_strict_decoder() -> None:
    # 400 levels: deeper than the lenient reader recurses, within the C decoder's reach.
    deep = "[" * 400 + "1" + "]" * 400
    text = '{"name": "f", "arguments": {"data": ' + deep + "}, 'x': 1}"
    calls = recover(text)
    assert [(c.name, c.span, c.repairs) for c in calls] == [("f", (0, len(text)), ("single_quotes",))]
    value, depth = calls[0].arguments["data"], 1
    while isinstance(value, list):
        value, depth = value[0], depth + 1
    assert (value, depth) == (1, 401)
