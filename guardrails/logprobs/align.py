"""Map logprob tokens onto the exchange: which tokens made which segment, tool name and argument value.

vLLM's logprobs cover the raw generation (reasoning markers, tool markup, JSON keys...), not the parsed
fields (shared/reference/vllm.md §1.5). We find each parsed text in the rebuilt token text, in generation
order, and keep the token range it covers. Tool arguments are matched value by value: parsers re-serialize
the JSON (hermes, harmony) or render XML (qwen3_coder), so the argument string as a whole rarely appears
verbatim, but its values do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from guardrails.exchange import Location, Segment, SegmentKind, ToolCall
from guardrails.logprobs.jsonspans import leaves
from guardrails.logprobs.records import records
from guardrails.logprobs.tokens import TokenStream, ints
from guardrails.pointer import join


class Unit(NamedTuple):  # a tuple: `records` builds hundreds at a time on the hot path
    """A piece of the exchange (a segment, a tool name or an argument value) and the tokens that made it."""

    kind: str  # "segment" | "tool_name" | "argument"
    segment: Segment
    token_start: int
    token_end: int
    text_start: int  # char range in the stream's text
    text_end: int
    local_start: int  # char range in the unit's own string (segment text, or the tool name)
    local_end: int
    exact: bool = True  # the stream text equals the unit's string char for char
    path: tuple[str | int, ...] = ()  # argument path inside the arguments object

    @property
    def label(self) -> str:
        if self.kind == "argument":
            return "/".join(str(p) for p in self.path)
        return self.kind if self.kind != "segment" else self.segment.kind.value

    def locate(self, text_start: int, text_end: int) -> Location:
        """Body location of a char range of the stream text inside this unit."""
        if self.exact:
            a = self.local_start + max(0, text_start - self.text_start)
            b = self.local_start + min(self.text_end, text_end) - self.text_start
        else:  # the stream's text differs from the unit's: only the whole unit can be pointed at
            a, b = self.local_start, self.local_end
        call = self.segment.tool_call
        if self.kind == "tool_name" and call is not None:
            return call.name_location(a, b)
        if self.kind == "argument" and call is not None and call.arguments_is_object:
            # Anthropic/Gemini carry arguments as an object: point at the value itself.
            pointer = join(call.arguments_pointer, *self.path)
            if self.local_start == 0 and isinstance(_value_at(call.arguments, self.path), str):
                return Location(pointer, a, b)
            return Location(pointer)
        return self.segment.locate(a, b)


# What the search finds for a unit before its tokens are known:
# (kind, segment, text_start, text_end, local_start, local_end, exact, path), Unit's fields minus the token range.
_Found = tuple[str, Segment, int, int, int, int, bool, tuple[str | int, ...]]


def align(stream: TokenStream, segments: Sequence[Segment], start: int = 0) -> list[Unit]:
    """Units for the segments found in the stream, searched in the order given (generation order) from
    char `start` on (a scored prompt holds the conversation before the answer)."""
    text = stream.text
    found: list[_Found] = []
    cursor = start
    for segment in segments:
        if segment.kind is SegmentKind.TOOL_CALL:
            cursor = _align_call(text, segment, cursor, found)
            continue
        hit = _find(text, segment.text, cursor, start)
        if hit is None:
            continue
        at, offset, length = hit
        found.append(("segment", segment, at, at + length, offset, offset + length, True, ()))
        cursor = at + length
    return _with_tokens(stream, found)


def _with_tokens(stream: TokenStream, found: list[_Found]) -> list[Unit]:
    """Units with their token ranges: the tokens overlapping each text range (two vectorized binary searches
    over all units, then every unit built with its final values)."""
    if not found:
        return []
    kinds, segments, text_starts, text_ends, local_starts, local_ends, exact, paths = zip(*found, strict=True)
    firsts = np.searchsorted(stream.ends, ints(text_starts, len(found)), side="right")
    lasts = np.maximum(np.searchsorted(stream.starts, ints(text_ends, len(found)), side="left"), firsts)
    return records(Unit, kinds, segments, firsts.tolist(), lasts.tolist(), text_starts, text_ends, local_starts,
                   local_ends, exact, paths)


def _find(text: str, needle: str, cursor: int, floor: int) -> tuple[int, int, int] | None:
    """(position in text, offset in needle, length) of needle, or of needle without surrounding whitespace."""
    if not needle:
        return None
    at = text.find(needle, cursor)
    if at >= 0:
        return at, 0, len(needle)
    core = needle.strip()
    if core:
        at = text.find(core, cursor)
        if at >= 0:
            return at, needle.index(core), len(core)
    at = text.find(needle, floor)  # out of order (a parser moved text after the calls)
    return (at, 0, len(needle)) if at >= 0 else None


def _align_call(text: str, segment: Segment, cursor: int, found: list[_Found]) -> int:
    call = segment.tool_call
    if call is None:
        return cursor
    name_at = text.find(call.name, cursor) if call.name else -1
    if name_at >= 0:
        found.append(("tool_name", segment, name_at, name_at + len(call.name), 0, len(call.name), True, ()))
        cursor = name_at + len(call.name)
    elif call.arguments_is_object and call.name_in_text:
        # Arguments sent as an object (Gemini, Anthropic) have no token text in the body: without the call's
        # name in the tokens to start from, a short value ("BER") would match whatever text holds it. The
        # detector reports such calls as unaligned instead.
        return cursor
    raw = call.arguments_raw
    whole = text.find(raw, cursor) if len(raw) > 2 else -1
    before = len(found)
    position = cursor
    if call.arguments is not None or call.arguments_is_object:
        position = _align_arguments(text, segment, call, position, found)
    if whole >= 0:
        found.append(("segment", segment, whole, whole + len(raw), 0, len(raw), True, ()))
        return max(position, whole + len(raw))
    if len(found) > before:  # the call's values, from the first found to the last
        found.append(("segment", segment, found[before][2], position, 0, len(raw), False, ()))
    return position


def _align_arguments(text: str, segment: Segment, call: ToolCall, position: int, found: list[_Found]) -> int:
    """Each argument value found in order from `position` on; returns where the last one ends.

    The hot loop of alignment (a call can hold hundreds of values): names are bound once outside it."""
    raw, by_object, find = call.arguments_raw, call.arguments_is_object, text.find
    for path, start, end, value, is_string in leaves(raw):
        form = raw[start:end]
        at = find(form, position) if form else -1
        exact = True
        if at < 0:
            if not (is_string and isinstance(value, str) and value and value != form):
                continue
            form = value  # XML-style parsers put the decoded value in the text
            at, exact = find(form, position), len(form) == end - start
            if at < 0:
                continue
        position = at + len(form)
        if by_object:  # arguments carried as an object: the value's range in the body is the value itself
            start, end = 0, len(form)
        found.append(("argument", segment, at, position, start, end, exact, path))
    return position


def _value_at(value: object, path: tuple[str | int, ...]) -> object:
    for key in path:
        try:
            value = value[key]  # type: ignore[index]
        except (KeyError, IndexError, TypeError):
            return None
    return value
