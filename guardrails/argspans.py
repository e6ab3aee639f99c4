"""Where a value sits in a tool call's JSON argument text, so a span of that text can be placed in the body.

Most APIs carry arguments as a JSON *string*: a value's location is its character span inside that string,
found by a small span-recording JSON scanner. Anthropic and Gemini carry an *object*: the segment text is our
serialization of it, and a span of that text is placed on the value holding it (`object_span`).
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from functools import lru_cache
from json.decoder import scanstring
from typing import Any

ArgPath = tuple[str | int, ...]

_WS = re.compile(r"[ \t\n\r]*")
_NUMBER_OR_LITERAL = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?|true|false|null")
# One decoded character of a JSON string: an escape (a surrogate pair is one character) or a literal character.
_JSON_CHAR = re.compile(r"\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}|\\u[0-9a-fA-F]{4}|\\.|.",
                        re.DOTALL)


class _Malformed(Exception):
    pass


@lru_cache(maxsize=4096)
def argument_spans(raw: str) -> dict[ArgPath, tuple[int, int]]:
    """Map every value's path in a JSON text to its [start, end) span (strings: without the quotes).

    Returns {} when the text is not JSON. Cached: agents resend the same calls in their history.
    """
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
    starts = _char_starts(raw, a, b)
    # A boundary inside an escape widens the span to the whole character.
    return path, bisect_right(starts, start) - 1 if start < b else len(starts), bisect_left(starts, end)


@lru_cache(maxsize=1024)
def _char_starts(raw: str, a: int, b: int) -> tuple[int, ...]:
    """Where each decoded character of the JSON string body raw[a:b] starts in `raw`."""
    return tuple(match.start() for match in _JSON_CHAR.finditer(raw, a, b))
