"""Shared base of the text filters (pii, secret, content): placing span hits found in tool-call arguments.

The engine caches a segment detector's hits by segment kind, trust and text, so a hit must not name the
tool: two calls with the same arguments share it. The tool's name is added when the hit is placed. For
APIs that carry arguments as a JSON object (Anthropic, Gemini) the scanned text is our serialization of it;
placement then moves the span onto the string value it lies in (its own JSON Pointer, offsets in it).
"""

from __future__ import annotations

import json

from detectors._argspans import argument_spans, value_at
from guardrails.detector import SegmentDetector
from guardrails.exchange import Location, Segment, ToolCall
from guardrails.findings import Finding, Hit
from guardrails.pointer import join
from guardrails.textview import IN_ARGUMENTS


class TextFilter(SegmentDetector):
    """A segment detector whose spans may fall in tool-call arguments."""

    def finding(self, segment: Segment, hit: Hit) -> Finding:
        finding = super().finding(segment, hit)
        call = segment.tool_call
        if call is None:
            return finding
        if finding.message.endswith(IN_ARGUMENTS):
            finding.message = f"{finding.message} of {call.name}"
        finding.evidence = {**finding.evidence, "tool": call.name}  # the cached hit's dict stays untouched
        if call.arguments_is_object and hit.start is not None:
            location = object_argument_location(call, hit.start, hit.end if hit.end is not None else hit.start)
            finding.pointer, finding.start, finding.end = location.pointer, location.start, location.end
        return finding


def object_argument_location(call: ToolCall, start: int, end: int) -> Location:
    """Map a span of the serialized argument object to the body: the string value holding it, with offsets
    into the decoded string; a number or literal as a whole; otherwise the arguments object itself."""
    best: tuple[int, tuple[str | int, ...], int, int] | None = None
    for path, (a, b) in argument_spans(call.arguments_raw).items():
        if a <= start and end <= b and (best is None or b - a < best[0]):
            best = (b - a, path, a, b)
    if best is None:
        return Location(call.arguments_pointer)
    _, path, a, _ = best
    pointer = join(call.arguments_pointer, *path)
    value = value_at(call.arguments, path)
    if not isinstance(value, str):
        return Location(pointer)
    raw = call.arguments_raw
    try:  # offsets in the decoded value: decode the escaped text that precedes each end of the span
        lo = len(json.loads(f'"{raw[a:start]}"'))
        hi = len(json.loads(f'"{raw[a:end]}"'))
    except ValueError:
        return Location(pointer, 0, len(value))
    return Location(pointer, lo, hi)
