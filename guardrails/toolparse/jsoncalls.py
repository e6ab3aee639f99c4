"""Shared reading of `{"name": ..., "arguments"|"parameters": {...}}` call objects and arrays of them."""

from __future__ import annotations

import contextlib
import json
import re
from typing import Any

from guardrails.toolparse.base import Budget, Draft, RecoveredCall, new_call
from guardrails.toolparse.blocks import rskip_space, skip_space
from guardrails.toolparse.lenient import LenientReader, NotAValue, read_value, scan_value

ARGUMENT_KEYS = ("arguments", "parameters")
_NAME_FALLBACK = re.compile(r"""["']name["']\s*:\s*["']([^"'\n]{1,200})["']""")
_ARGS_FALLBACK = re.compile(r"""["'](?:arguments|parameters)["']\s*:\s*""")
_NAME_KEY = re.compile(r'"name"\s*:\s*"')
_ARGS_KEY = re.compile(r'"(arguments|parameters)"\s*:\s*')
_DECODER = json.JSONDecoder()
_SCAN = _DECODER.scan_once  # raw_decode's C scanner, called directly: StopIteration where no value starts
# `{"name": "NAME", "arguments": ` in strict JSON (JSON whitespace, a name without escapes or control
# characters): the shape of nearly every call, read with one match and one decode of the arguments.
_CANONICAL_HEAD = re.compile(r'\{[ \t\n\r]*"name"[ \t\n\r]*:[ \t\n\r]*"([^"\\\x00-\x1f]+)"[ \t\n\r]*,'
                             r'[ \t\n\r]*"(?:arguments|parameters)"[ \t\n\r]*:[ \t\n\r]*')
_OBJECT_END = re.compile(r"[ \t\n\r]*\}")
_UNREADABLE = frozenset({"unreadable_arguments"})
_NO_ARGUMENTS = frozenset({"no_arguments"})
_TRUNCATED = frozenset({"truncated"})
_CALL_OBJECT = re.compile(r"""\{\s*["'](?:name|arguments|parameters)["']\s*:""")


def looks_like_call_object(text: str, i: int) -> bool:
    return _CALL_OBJECT.match(text, i) is not None


def call_object(family: str, text: str, start: int, end: int | None = None, *, decode_string_arguments: bool = False,
                fallback: bool = True) -> tuple[RecoveredCall, int] | None:
    """Read the call object at `start` (bounded by `end`); return the call and the index after it.

    With `fallback`, an object the reader cannot read still yields its name and raw arguments text
    (only sensible inside tool-call markup, where the bound is the markup's end).
    """
    read = _draft_object(family, text, start, len(text) if end is None else end, decode_string_arguments, fallback)
    return None if read is None else (new_call(read[0]), read[1])


def call_objects(family: str, text: str, start: int, end: int | None = None, *, separators: str = ";,",
                 decode_string_arguments: bool = False, fallback: bool = True,
                 budget: Budget | None = None) -> tuple[list[Draft], int]:
    """Read consecutive call objects (separated by whitespace or `separators`) from `start`: their drafts
    (see `with_block`) and the index after the last one. Each object after the first (which the markup around
    it paid for) is a candidate of `budget`: past it, the objects read so far."""
    end = len(text) if end is None else end
    drafts: list[Draft] = []
    i = start
    while True:
        if i < end and text[i] == "{":  # (the object often starts right there: no call to `skip_space` then)
            j = i
        else:
            j = skip_space(text, i, end, separators)
            if j >= end or text[j] != "{":
                return drafts, i
        if drafts and budget is not None and not budget.take(j):
            return drafts, i
        read = _draft_object(family, text, j, end, decode_string_arguments, fallback)
        if read is None:
            return drafts, i
        drafts.append(read[0])
        i = read[1]


def call_array(family: str, text: str, start: int, end: int | None = None, *, decode_string_arguments: bool = False,
               fallback: bool = True, budget: Budget | None = None) -> tuple[list[Draft], int]:
    """Read `[{call}, {call}]` at `start` (tolerating a missing `]` and truncation): drafts, as `call_objects`."""
    end = len(text) if end is None else end
    i = start if start < end and text[start] == "[" else skip_space(text, start, end)  # (most point at it)
    if i >= end or text[i] != "[":
        return [], start
    drafts, i = call_objects(family, text, i + 1, end, separators=",",
                             decode_string_arguments=decode_string_arguments, fallback=fallback, budget=budget)
    if budget is not None and budget.unread is not None:
        return drafts, i  # stopped inside the array: its close is not the one after the last object read
    j = i if i < end and text[i] == "]" else skip_space(text, i, end, ",")
    if j < end and text[j] == "]":
        i = j + 1
    return drafts, i


def with_block(drafts: list[Draft], block: tuple[int, int], *, stretch: bool = True,
               call_id: str | None = None) -> list[RecoveredCall]:
    """The calls of one markup block, from their drafts; the first call's span starts and the last one's ends
    with the block."""
    if len(drafts) == 1 and stretch:  # the common case: the call's span is the block's
        family, name, arguments, parsed, _, name_span, args_span, _, own_id, repairs = drafts[0]
        return [new_call((family, name, arguments, parsed, block, name_span, args_span, block, call_id or own_id,
                          repairs))]
    out = []
    last = len(drafts) - 1
    for k, (family, name, arguments, parsed, (start, end), name_span, args_span, _, own_id, repairs) in \
            enumerate(drafts):
        if stretch:
            if k == 0:
                start = block[0]
            if k == last:
                end = block[1]
        out.append(new_call((family, name, arguments, parsed, (start, end), name_span, args_span, block,
                             call_id or own_id, repairs)))
    return out


def _draft_object(family: str, text: str, start: int, end: int, decode_string_arguments: bool,
                  fallback: bool) -> tuple[Draft, int] | None:
    """The call object at `start`: strict JSON first (most calls), then the tolerant reader."""
    clean = _clean_call(family, text, start, end)
    if type(clean) is tuple and not (decode_string_arguments and isinstance(clean[0][2], str)):
        return clean
    reader = LenientReader(text, end)
    if type(clean) is int:
        reader.valid_to = clean  # (the reader does not scan again what the strict decoder failed on)
    try:
        members, after = reader.object_spans(start)
    except (NotAValue, RecursionError):
        return _fallback(family, text, start, end) if fallback else None
    return _draft_members(family, text, start, reader, members, after, decode_string_arguments)


def _draft_members(family: str, text: str, start: int, reader: LenientReader,
                   members: dict[str, tuple[Any, int, int]], after: int,
                   decode_string_arguments: bool) -> tuple[Draft, int] | None:
    """The call of an object read by `reader` (None when its name is not a string)."""
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
        with contextlib.suppress(ValueError, RecursionError):  # nested past the decoder's depth: stays a string
            arguments = json.loads(arguments)
    if "unclosed" in repairs and after >= rskip_space(text, len(text)):
        repairs.add("truncated")
    span = (start, after)
    return (family, name[0], arguments, True, span, _inner(text, name[0], name[1], name[2]), args_span, span, None,
            tuple(sorted(repairs))), after


def bare_call(family: str, text: str, start: int) -> tuple[RecoveredCall | None, int, list[int]]:
    """The call object at `start`, for a reader that looks for call objects anywhere in text, nested ones too.

    Returns the call (None when the object is no call with arguments, or cannot be read), the index after it
    (`start` without a call), and where nested objects start that are no call either: read alone, an object
    read here reads the same, and one left open by a failed read fails the same way. Reading each nested object
    again is what made deep unclosed text quadratic."""
    clean = _clean_call(family, text, start, len(text))
    if type(clean) is tuple and "no_arguments" not in clean[0][9]:
        return new_call(clean[0]), clean[1], []
    reader = LenientReader(text)
    if type(clean) is int:
        reader.valid_to = clean
    reader.objects = []
    try:
        members, after = reader.object_spans(start)
    except (NotAValue, RecursionError):
        return None, start, _no_calls(reader) + _chain(reader.failed_in)
    read = _draft_members(family, text, start, reader, members, after, False)
    if read is not None and "no_arguments" not in read[0][9]:
        return new_call(read[0]), read[1], []
    return None, start, _no_calls(reader)


def _no_calls(reader: LenientReader) -> list[int]:
    """Where the objects `reader` read start that cannot be calls (no string name, or no arguments)."""
    out = []
    for i, obj in reader.objects or ():
        name = obj.get("name") if isinstance(obj, dict) else None
        if not (name and isinstance(name, str) and any(key in obj for key in ARGUMENT_KEYS)):
            out.append(i)
    return out


def _chain(links: tuple[int, Any] | None) -> list[int]:
    """The starts in `LenientReader.failed_in` links."""
    out = []
    while links is not None:
        out.append(links[0])
        links = links[1]
    return out


def _clean_call(family: str, text: str, start: int, end: int) -> tuple[Draft, int] | int:
    """The fast path: strict JSON with the name and arguments as top-level keys (most calls). When there is
    none: where the strict decoder failed on the object (-1 where it did not), for the reader that follows."""
    head = _CANONICAL_HEAD.match(text, start, end)
    if head is None:
        return _strict_call(family, text, start, end)
    args_start = head.end()
    read = _scan(text, args_start, end)
    if type(read) is int:
        return read
    arguments, args_end = read
    if args_end < end and text[args_end] == "}":  # (the common case, without a regex call)
        after = args_end + 1
    else:
        close = _OBJECT_END.match(text, args_end, end)
        if close is None:  # more keys after the arguments
            return _strict_call(family, text, start, end)
        after = close.end()
    span = (start, after)
    return (family, head.group(1), arguments, True, span, head.span(1), (args_start, args_end), span, None, ()), after


def _scan(text: str, i: int, end: int) -> tuple[Any, int] | int:
    """The strict JSON value at `i` and the index after it, or where the strict decoder fails on it: `end` for
    a value that ends after it or nests deeper than the decoder recurses (reading that fails too); -1 where
    the reader's own decoder may read on (a raw control character in a string, which it allows) or for another
    ValueError (a number too long to convert)."""
    try:
        read = scan_value(text, i, _SCAN)
    except RecursionError:
        return end
    except ValueError:
        return -1
    if type(read) is int:
        return -1 if read < len(text) and text[read] < " " else read
    return end if read[1] > end else read


def _strict_call(family: str, text: str, start: int, end: int) -> tuple[Draft, int] | int:
    """Strict JSON call objects of any other shape (keys in another order, more keys); when there is none, as
    `_clean_call`."""
    read = _scan(text, start, end)
    if type(read) is int:
        return read
    obj, after = read
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not obj["name"]:
        return -1
    name = _NAME_KEY.search(text, start, after)
    key = next((k for k in ARGUMENT_KEYS if k in obj), None)
    args = _ARGS_KEY.search(text, start, after) if key else None
    if name is None or text[name.end():name.end() + len(obj["name"])] != obj["name"]:
        return -1
    if key is not None:
        if args is None or args.group(1) != key:
            return -1
        value, args_end = _DECODER.raw_decode(text, args.end())
        if value != obj[key]:
            return -1
        args_span = (args.end(), args_end)
    else:
        args_span = (after - 1, after - 1)
    span = (start, after)
    return (family, obj["name"], obj[key] if key else {}, True, span, (name.end(), name.end() + len(obj["name"])),
            args_span, span, None, () if key else ("no_arguments",)), after


def _fallback(family: str, text: str, start: int, end: int) -> tuple[Draft, int] | None:
    """An object the reader cannot read at all: keep the name and the raw arguments text."""
    name = _NAME_FALLBACK.search(text, start, end)
    if name is None:
        return None
    args = _ARGS_FALLBACK.search(text, start, end)
    args_start = args.end() if args else end
    raw = text[args_start:end].rstrip()
    span = (start, end)
    return (family, name.group(1), raw, False, span, name.span(1), (args_start, args_start + len(raw)), span, None,
            ("unreadable_arguments",)), end


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
    start = args_start
    if start < bound and text[start].isspace():  # (the arguments usually follow the markup at once)
        start = skip_space(text, start, bound)
    read = read_value(text, start, bound)
    repairs: frozenset[str]
    if read is not None:
        arguments, after, repairs = read
        parsed = True
    else:
        raw = text[start:bound].rstrip()
        arguments, after, parsed, repairs = raw, start + len(raw), False, _UNREADABLE
    if start >= bound:
        arguments, parsed = {}, True
        repairs |= _NO_ARGUMENTS
    if closed_end is None and ("unclosed" in repairs or not parsed) and after >= rskip_space(text, len(text)):
        repairs |= _TRUNCATED
    end = closed_end if closed_end is not None else after
    span = (block_start, end)
    return new_call((family, name if name is not None else text[name_span[0]:name_span[1]], arguments, parsed, span,
                     name_span, (start, after), span, call_id, tuple(sorted(repairs)) if repairs else ()))
