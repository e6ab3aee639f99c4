"""Where a tool-call argument value sits in the check body, so findings point exactly at it.

Most APIs carry arguments as a JSON *string* (`ToolCall.arguments_raw` is then verbatim body text): a value's
location is its character span inside that string, found by a small span-recording JSON scanner. Anthropic
and Gemini carry an *object*: the value then has its own JSON Pointer, and only strings get offsets.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import lru_cache
from json.decoder import scanstring
from typing import Any

from guardrails.detector import Detector
from guardrails.exchange import Location, Segment
from guardrails.findings import Category, Finding, Severity
from guardrails.pointer import join

ArgPath = tuple[str | int, ...]

_WS = re.compile(r"[ \t\n\r]*")
_NUMBER_OR_LITERAL = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?|true|false|null")


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


def locate_argument(segment: Segment, path: ArgPath) -> Location:
    """The body location of the argument value at `path` of a tool-call segment (all of its arguments for ())."""
    call = segment.tool_call
    if call is None:
        return segment.locate(0, len(segment.text))
    if call.arguments_is_object:
        pointer = join(call.arguments_pointer, *path)
        value = value_at(call.arguments, path)
        if isinstance(value, str):
            return Location(pointer, 0, len(value))
        return Location(pointer)
    span = argument_spans(call.arguments_raw).get(path) if isinstance(call.arguments, (dict, list)) else None
    if span is None:
        return segment.locate(0, len(segment.text))
    return segment.locate(*span)


def locate_name(segment: Segment) -> Location:
    call = segment.tool_call
    if call is None:
        return segment.locate(0, len(segment.text))
    return call.name_location()


def value_at(value: Any, path: ArgPath) -> Any:
    for token in path:
        if isinstance(value, dict) and isinstance(token, str):
            value = value.get(token)
        elif isinstance(value, list) and isinstance(token, int) and token < len(value):
            value = value[token]
        else:
            return None
    return value


def leaves(value: Any, path: ArgPath = ()) -> Iterator[tuple[ArgPath, Any]]:
    """Every scalar in a parsed argument value with its path, depth first."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from leaves(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from leaves(item, (*path, index))
    else:
        yield path, value


def dotted(path: ArgPath) -> str:
    """A path as policy keys spell it: ("items", 0, "url") -> "items.*.url"."""
    return ".".join("*" if isinstance(t, int) else t for t in path)


def finding_at(
    detector: Detector,
    location: Location,
    message: str,
    severity: Severity,
    evidence: dict[str, Any] | None = None,
    *,
    category: Category | None = None,
    score: float | None = 1.0,
) -> Finding:
    """A finding at a body location (an argument value, a name) rather than at a segment span."""
    return Finding(
        category=category or detector.category,
        detector=detector.name,
        severity=severity,
        message=message,
        pointer=location.pointer,
        start=location.start,
        end=location.end,
        score=score,
        evidence=evidence or {},
    )
