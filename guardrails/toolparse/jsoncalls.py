"""Shared reading of `{"name": ..., "arguments"|"parameters": {...}}` call objects and arrays of them."""

from __future__ import annotations

import contextlib
import json
import re
from typing import Any

from guardrails.toolparse.base import RecoveredCall
from guardrails.toolparse.blocks import skip_space
from guardrails.toolparse.lenient import LenientReader, NotAValue

ARGUMENT_KEYS = ("arguments", "parameters")
_NAME_FALLBACK = re.compile(r"""["']name["']\s*:\s*["']([^"'\n]{1,200})["']""")
_ARGS_FALLBACK = re.compile(r"""["'](?:arguments|parameters)["']\s*:\s*""")
_NAME_KEY = re.compile(r'"name"\s*:\s*"')
_ARGS_KEY = re.compile(r'"(arguments|parameters)"\s*:\s*')
_DECODER = json.JSONDecoder()
# `{"name": "NAME", "arguments": ` in strict JSON (JSON whitespace, a name without escapes or control
# characters): the shape of nearly every call, read with one match and one decode of the arguments.
_CANONICAL_HEAD = re.compile(r'\{[ \t\n\r]*"name"[ \t\n\r]*:[ \t\n\r]*"([^"\\\x00-\x1f]+)"[ \t\n\r]*,'
                             r'[ \t\n\r]*"(?:arguments|parameters)"[ \t\n\r]*:[ \t\n\r]*')
_OBJECT_END = re.compile(r"[ \t\n\r]*\}")
_CALL_OBJECT = re.compile(r"""\{\s*["'](?:name|arguments|parameters)["']\s*:""")


def looks_like_call_object(text: str, i: int) -> bool:
    return _CALL_OBJECT.match(text, i) is not None


def call_object(family: str, text: str, start: int, end: int | None = None, *, decode_string_arguments: bool = False,
                fallback: bool = True) -> tuple[RecoveredCall, int] | None:
    """Read the call object at `start` (bounded by `end`); return the call and the index after it.

    With `fallback`, an object the reader cannot read still yields its name and raw arguments text
    (only sensible inside tool-call markup, where the bound is the markup's end).
    """
    end = len(text) if end is None else end
    clean = _clean_call(family, text, start, end)
    if clean is not None and not (decode_string_arguments and isinstance(clean[0].arguments, str)):
        return clean
    reader = LenientReader(text, end)
    try:
        members, after = reader.object_spans(start)
    except (NotAValue, RecursionError):
        return _fallback(family, text, start, end) if fallback else None
    name = members.get("name")
    if name is None or not isinstance(name[0], str) or not name[0].strip():
        return None
    repairs = set(reader.repairs)
    arguments: Any = {}
    args_span = (after - 1, after - 1) if text[after - 1:after] == "}" else (after, after)
    for key in ARGUMENT_KEYS:
        if key in members:
            arguments, args_start, args_end = members[key]
            args_span = (args_start, args_end)
            break
    else:
        repairs.add("no_arguments")
    if decode_string_arguments and isinstance(arguments, str):
        with contextlib.suppress(ValueError):
            arguments = json.loads(arguments)
    if "unclosed" in repairs and after >= len(text.rstrip()):
        repairs.add("truncated")
    call = RecoveredCall(
        family=family,
        name=name[0],
        arguments=arguments,
        arguments_parsed=True,
        span=(start, after),
        name_span=_inner(text, name[0], name[1], name[2]),
        arguments_span=args_span,
        block=(start, after),
        repairs=tuple(sorted(repairs)),
    )
    return call, after


def call_objects(family: str, text: str, start: int, end: int | None = None, *, separators: str = ";,",
                 decode_string_arguments: bool = False,
                 fallback: bool = True) -> tuple[list[RecoveredCall], int]:
    """Read consecutive call objects (separated by whitespace or `separators`) from `start`."""
    end = len(text) if end is None else end
    calls: list[RecoveredCall] = []
    i = start
    while True:
        j = skip_space(text, i, end, separators)
        if j >= end or text[j] != "{":
            return calls, i
        read = call_object(family, text, j, end, decode_string_arguments=decode_string_arguments,
                           fallback=fallback)
        if read is None:
            return calls, i
        calls.append(read[0])
        i = read[1]


def call_array(family: str, text: str, start: int, end: int | None = None, *, decode_string_arguments: bool = False,
               fallback: bool = True) -> tuple[list[RecoveredCall], int]:
    """Read `[{call}, {call}]` at `start` (tolerating a missing `]` and truncation)."""
    end = len(text) if end is None else end
    i = skip_space(text, start, end)
    if i >= end or text[i] != "[":
        return [], start
    calls, i = call_objects(family, text, i + 1, end, separators=",",
                            decode_string_arguments=decode_string_arguments, fallback=fallback)
    j = skip_space(text, i, end, ",")
    if j < end and text[j] == "]":
        i = j + 1
    return calls, i


def with_block(calls: list[RecoveredCall], block: tuple[int, int], *, stretch: bool = True,
               call_id: str | None = None) -> list[RecoveredCall]:
    """Put calls in one markup block; the first call's span starts and the last one's ends with it."""
    out = []
    for k, c in enumerate(calls):
        start, end = c.span
        if stretch and k == 0:
            start = block[0]
        if stretch and k == len(calls) - 1:
            end = block[1]
        # Built directly: dataclasses.replace costs more than the parse of a small call.
        out.append(RecoveredCall(c.family, c.name, c.arguments, c.arguments_parsed, (start, end), c.name_span,
                                 c.arguments_span, block, call_id or c.call_id, c.repairs))
    return out


def _clean_call(family: str, text: str, start: int, end: int) -> tuple[RecoveredCall, int] | None:
    """The fast path: strict JSON with the name and arguments as top-level keys (most calls)."""
    head = _CANONICAL_HEAD.match(text, start, end)
    if head is None:
        return _strict_call(family, text, start, end)
    try:
        arguments, args_end = _DECODER.raw_decode(text, head.end())
    except ValueError:
        return None
    close = _OBJECT_END.match(text, args_end, end)
    if close is None:  # more keys after the arguments
        return _strict_call(family, text, start, end)
    name_start, name_end = head.span(1)
    after = close.end()
    call = RecoveredCall(family, head.group(1), arguments, True, (start, after), (name_start, name_end),
                         (head.end(), args_end), (start, after), None, ())
    return call, after


def _strict_call(family: str, text: str, start: int, end: int) -> tuple[RecoveredCall, int] | None:
    """Strict JSON call objects of any other shape (keys in another order, more keys)."""
    try:
        obj, after = _DECODER.raw_decode(text, start)
    except ValueError:
        return None
    if after > end or not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not obj["name"]:
        return None
    name = _NAME_KEY.search(text, start, after)
    key = next((k for k in ARGUMENT_KEYS if k in obj), None)
    args = _ARGS_KEY.search(text, start, after) if key else None
    if name is None or text[name.end():name.end() + len(obj["name"])] != obj["name"]:
        return None
    if key is not None:
        if args is None or args.group(1) != key:
            return None
        value, args_end = _DECODER.raw_decode(text, args.end())
        if value != obj[key]:
            return None
        args_span = (args.end(), args_end)
    else:
        args_span = (after - 1, after - 1)
    call = RecoveredCall(family, obj["name"], obj[key] if key else {}, True, (start, after),
                         (name.end(), name.end() + len(obj["name"])), args_span, (start, after),
                         None, () if key else ("no_arguments",))
    return call, after


def _fallback(family: str, text: str, start: int, end: int) -> tuple[RecoveredCall, int] | None:
    """An object the reader cannot read at all: keep the name and the raw arguments text."""
    name = _NAME_FALLBACK.search(text, start, end)
    if name is None:
        return None
    args = _ARGS_FALLBACK.search(text, start, end)
    args_start = args.end() if args else end
    raw = text[args_start:end].rstrip()
    call = RecoveredCall(
        family=family, name=name.group(1), arguments=raw, arguments_parsed=False, span=(start, end),
        name_span=name.span(1), arguments_span=(args_start, args_start + len(raw)), block=(start, end),
        repairs=("unreadable_arguments",),
    )
    return call, end


def _inner(text: str, name: str, start: int, end: int) -> tuple[int, int]:
    """The span of a string value's characters, without its quotes when it has no escapes."""
    if text[start + 1:end - 1] == name:
        return start + 1, end - 1
    return start, end


def named_call(family: str, text: str, name_span: tuple[int, int], args_start: int, bound: int, *,
               block_start: int, closed_end: int | None = None, call_id: str | None = None,
               name: str | None = None) -> RecoveredCall:
    """A call whose name is markup (`NAME[ARGS]{...}`, `to=functions.NAME`) and whose arguments are a
    JSON-like value starting at `args_start`. Unreadable arguments are kept as raw text."""
    reader = LenientReader(text, bound)
    start = reader.skip(args_start)
    repairs: set[str] = set()
    try:
        arguments, after = reader.value(start)
        parsed = True
        repairs |= reader.repairs
    except (NotAValue, RecursionError):
        raw = text[start:bound].rstrip()
        arguments, after, parsed = raw, start + len(raw), False
        repairs.add("unreadable_arguments")
    if start >= bound:
        arguments, parsed = {}, True
        repairs.add("no_arguments")
    if closed_end is None and after >= len(text.rstrip()) and ("unclosed" in repairs or not parsed):
        repairs.add("truncated")
    end = closed_end if closed_end is not None else after
    return RecoveredCall(
        family=family, name=name if name is not None else text[name_span[0]:name_span[1]],
        arguments=arguments, arguments_parsed=parsed, span=(block_start, end), name_span=name_span,
        arguments_span=(start, after), block=(block_start, end), call_id=call_id,
        repairs=tuple(sorted(repairs)),
    )
