"""Where a tool-call argument value sits in the check body, so findings point exactly at it.

Most APIs carry arguments as a JSON *string* (`ToolCall.arguments_raw` is then verbatim body text): a value's
location is its character span inside that string, found by the scanner in `guardrails.argspans`. Anthropic
and Gemini carry an *object*: the value then has its own JSON Pointer, and only strings get offsets.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from guardrails.argspans import ArgPath, argument_spans, value_at
from guardrails.detector import Detector
from guardrails.exchange import Location, Segment
from guardrails.findings import Category, Finding, Severity
from guardrails.pointer import join

__all__ = ["ArgPath", "argument_spans", "dotted", "finding_at", "leaves", "locate_argument", "locate_name",
           "value_at"]


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
