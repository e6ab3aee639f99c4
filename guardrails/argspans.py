"""Where a value sits in a tool call's JSON argument text, so a span of that text can be placed in the body.

Most APIs carry arguments as a JSON *string*: a value's location is its character span inside that string,
found by a small span-recording JSON scanner. Anthropic and Gemini carry an *object*: the segment text is our
serialization of it, and a span of that text is placed on the value holding it (`object_span`).
"""

from __future__ import annotations

import re
import sys
from array import array
from bisect import bisect_left
from json.decoder import scanstring
from typing import Any

from guardrails.memo import SizedMemo  # (where it was first written: importers of it from here keep working)

ArgPath = tuple[str | int, ...]

_WS = re.compile(r"[ \t\n\r]*")
_NUMBER_OR_LITERAL = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?|true|false|null")
# An escape in a JSON string: one decoded character (a surrogate pair too) written with several.
_ESCAPE = re.compile(r"\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}|\\u[0-9a-fA-F]{4}|\\.", re.DOTALL)


class _Malformed(Exception):
    pass


SPANS_BYTES = 16 * 2**20
# The scanned argument texts, bounded: agents resend the same calls in their history.
_spans: SizedMemo[str, dict[ArgPath, tuple[int, int]]] = SizedMemo(4096, SPANS_BYTES, latest=True)
_escapes: SizedMemo[tuple[str, int, int], tuple[array[int], array[int]]] = SizedMemo(1024, SPANS_BYTES, latest=True)
_SPAN_BYTES = 120  # a (start, end) tuple of two ints and its dict slot


def argument_spans(raw: str) -> dict[ArgPath, tuple[int, int]]:
    """Map every value's path in a JSON text to its [start, end) span (strings: without the quotes).

    Returns {} when the text is not JSON. Cached: agents resend the same calls in their history.
    """
    spans = _spans.get(raw)
    if spans is None:
        spans = _scan(raw)
        _spans.put(raw, spans, _spans_size(raw, spans))
    return spans


def _spans_size(raw: str, spans: dict[ArgPath, tuple[int, int]]) -> int:
    """The text, the dict, each path tuple and span, and each key string once: a key is the last item of exactly
    one path, and the paths below it share that object."""
    size = sys.getsizeof(raw) + sys.getsizeof(spans)
    for path in spans:
        size += sys.getsizeof(path) + _SPAN_BYTES
        if path and isinstance(path[-1], str):
            size += sys.getsizeof(path[-1])
    return size


def _scan(raw: str) -> dict[ArgPath, tuple[int, int]]:
    spans: dict[ArgPath, tuple[int, int]] = {}
    try:
        end = _value(raw, _skip(raw, 0), (), spans)
    except (_Malformed, ValueError, IndexError, RecursionError):
        return {}
    if _skip(raw, end) != len(raw):
        return {}
    return spans


def _skip(text: str, pos: int) -> int:
    match = _WS.match(text, pos)
    return match.end() if match else pos


def _value(text: str, pos: int, path: ArgPath, spans: dict[ArgPath, tuple[int, int]]) -> int:
    char = text[pos]
    if char == '"':
        _, end = scanstring(text, pos + 1)
        spans[path] = (pos + 1, end - 1)
        return end
    if char == "{":
        return _container(text, pos, path, spans, is_object=True)
    if char == "[":
        return _container(text, pos, path, spans, is_object=False)
    match = _NUMBER_OR_LITERAL.match(text, pos)
    if not match:
        raise _Malformed(pos)
    spans[path] = (pos, match.end())
    return match.end()


def _container(text: str, pos: int, path: ArgPath, spans: dict[ArgPath, tuple[int, int]], *,
               is_object: bool) -> int:
    closer = "}" if is_object else "]"
    start, pos, index = pos, _skip(text, pos + 1), 0
    if text[pos] == closer:
        spans[path] = (start, pos + 1)
        return pos + 1
    while True:
        if is_object:
            if text[pos] != '"':
                raise _Malformed(pos)
            key, pos = scanstring(text, pos + 1)
            pos = _skip(text, pos)
            if text[pos] != ":":
                raise _Malformed(pos)
            pos = _value(text, _skip(text, pos + 1), (*path, key), spans)
        else:
            pos = _value(text, pos, (*path, index), spans)
            index += 1
        pos = _skip(text, pos)
        if text[pos] == closer:
            spans[path] = (start, pos + 1)
            return pos + 1
        if text[pos] != ",":
            raise _Malformed(pos)
        pos = _skip(text, pos + 1)


def value_at(value: Any, path: ArgPath) -> Any:
    for token in path:
        if isinstance(value, dict) and isinstance(token, str):
            value = value.get(token)
        elif isinstance(value, list) and isinstance(token, int) and token < len(value):
            value = value[token]
        else:
            return None
    return value


def object_span(raw: str, parsed: Any, start: int, end: int) -> tuple[ArgPath, int | None, int | None]:
    """Place [start, end) of `raw`, our serialization of `parsed`, on the innermost value that holds it.

    Returns the value's path with offsets into the decoded string when that value is a string, else without
    offsets (a number, or a span over several values, keys or punctuation: the container holding it all).
    """
    best: tuple[ArgPath, int, int] | None = None
    for path, (a, b) in argument_spans(raw).items():
        if a <= start and end <= b and (best is None or b - a < best[2] - best[1]):
            best = (path, a, b)
    if best is None:
        return (), None, None
    path, a, b = best
    if not isinstance(value_at(parsed, path), str):
        return path, None, None
    escapes = _string_escapes(raw, a, b)
    # A boundary inside an escape widens the span to the whole character.
    lo = _chars_before(escapes, a, start + 1) - 1 if start < b else _chars_before(escapes, a, b)
    return path, lo, _chars_before(escapes, a, end)


def _string_escapes(raw: str, a: int, b: int) -> tuple[array[int], array[int]]:
    """The escapes of the JSON string body raw[a:b]: where each starts, and how many more characters than it decodes
    to the escapes up to it (that one included) take. Most strings have none: nothing per character is kept."""
    key = (raw, a, b)
    found = _escapes.get(key)
    if found is None:
        starts, extra, total = array("q"), array("q"), 0
        for match in _ESCAPE.finditer(raw, a, b):
            total += match.end() - match.start() - 1
            starts.append(match.start())
            extra.append(total)
        found = (starts, extra)
        _escapes.put(key, found, sys.getsizeof(raw) + sys.getsizeof(starts) + sys.getsizeof(extra))
    return found


def _chars_before(escapes: tuple[array[int], array[int]], a: int, x: int) -> int:
    """How many decoded characters of the string body starting at `a` start before raw offset `x`."""
    starts, extra = escapes
    k = bisect_left(starts, x)  # escapes starting before x
    if not k:
        return x - a
    last_end = starts[k - 1] + 1 + extra[k - 1] - (extra[k - 2] if k > 1 else 0)
    return x - a - extra[k - 1] + max(0, last_end - x)  # x inside the last escape: its tail is not counted as hidden
