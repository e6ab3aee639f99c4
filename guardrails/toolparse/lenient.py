"""A tolerant reader for the JSON-like values models write inside tool-call markup.

Strict JSON is decoded by the C decoder first; only text it rejects takes the slow path, which accepts
single-quoted strings, Python literals (True/False/None), trailing or doubled commas, unquoted keys, a
missing closing brace, and truncation (containers and strings closed where the text ends). Every
repair is recorded so callers can tell a clean call from a mended one.

Custom string delimiters (Gemma 4's `<|"|>`, FunctionGemma's `<escape>`) use the same reader.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from json import JSONDecodeError
from typing import Any

Scanner = Callable[[str, int], tuple[Any, int]]
_DECODER = json.JSONDecoder(strict=False)
# The C scanner behind `raw_decode`, called directly (one Python frame less on every strict read): it raises
# StopIteration where nothing starts a value and JSONDecodeError on malformed JSON.
_SCAN = _DECODER.scan_once
_JSON_STARTS = frozenset('{["-0123456789tfn')
_WS = re.compile(r"\s*")
_NUMBER = re.compile(r"-?(?:\d+)(?:\.\d+)?(?:[eE][+-]?\d+)?")
_WORD = re.compile(r"[A-Za-z_][\w.\-]*")
# Unrolled and possessive: runs between escapes are never given back, so an unclosed string (truncation)
# fails in one pass instead of backtracking over every character.
_DQ_STRING = re.compile(r'"([^"\\]*+(?:\\.[^"\\]*+)*+)"', re.S)
_SQ_STRING = re.compile(r"'([^'\\]*+(?:\\.[^'\\]*+)*+)'", re.S)
_PY_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "0": "\0", "\\": "\\", "'": "'",
               '"': '"', "/": "/"}
_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|x[0-9a-fA-F]{2}|.)", re.S)
# A container strict JSON cannot read from its first item on (a single-quoted or unquoted key, a
# single-quoted item): the C decoder is not tried, as its error would only be raised and caught.
_NOT_JSON = re.compile(r"""\{\s*[^"\s}]|\[\s*'""")
# From this index on, values are scanned in a window (see `scan_value`), grown fourfold while a result could be
# the window's cut: a failure this close to it (a cut literal, number or escape) or an unterminated string.
_WINDOW = 4096
_CUT_REACH = 16
LITERALS: dict[str, Any] = {"true": True, "false": False, "null": None, "True": True, "False": False,
                            "None": None}
_PYTHON_LITERALS = {"True", "False", "None"}
# Read by strict JSON (Python's decoder) but not by this reader: see `value`.
_NON_FINITE = {"NaN": float("nan"), "Infinity": float("inf")}


MAX_INT_DIGITS = 4300  # Python's default int_max_str_digits: int() refuses longer literals


class NotAValue(ValueError):
    """The text at this position does not start a JSON-like value."""


def decode_escapes(body: str) -> str:
    """Decode backslash escapes of a JSON or Python string body; unknown escapes keep their character."""
    if "\\" not in body:
        return body
    try:
        return _DECODER.decode('"' + body + '"')
    except ValueError:
        pass

    def one(match: re.Match[str]) -> str:
        code = match.group(1)
        if code[0] in "ux" and len(code) > 1:
            return chr(int(code[1:], 16))
        return _PY_ESCAPES.get(code, code)

    decoded = _ESCAPE.sub(one, body)
    # A surrogate pair written as two \u escapes must become one character.
    return decoded.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


class LenientReader:
    """Reads one value from `text[start:end]`. `repairs` collects what had to be mended."""

    __slots__ = ("bare_keys", "delimiter", "end", "failed_in", "non_finite", "objects", "repairs", "skipping",
                 "text", "valid_to")

    def __init__(self, text: str, end: int | None = None, *, delimiter: str | None = None,
                 bare_keys: bool = False) -> None:
        self.text = text
        self.end = len(text) if end is None else end
        self.delimiter = delimiter  # a custom string delimiter token
        self.bare_keys = bare_keys  # unquoted keys are the format, not a repair
        self.repairs: set[str] = set()
        # Where the strict decoder last failed on a container: a container nested in that one and starting before
        # this point either closes before it or fails at it too, so it is not tried again (each try would rescan
        # to the same failure: quadratic on deep unclosed text).
        self.valid_to = -1
        self.skipping = False  # reading a container the strict decoder was not tried on (see `value`)
        self.non_finite = 0  # NaN/Infinity read while skipping
        # The objects left open by a failed read, innermost first, as (start, outer) links: a reader of bare call
        # objects need not read them alone, as they fail the same way.
        self.failed_in: tuple[int, Any] | None = None
        # When a list: each object read as a value, (start, object), for that reader too (`jsoncalls.bare_call`).
        self.objects: list[tuple[int, Any]] | None = None

    # --- entry points ---------------------------------------------------------------------------
    def value(self, i: int) -> tuple[Any, int]:
        """Read the value starting at `i` (after whitespace); return it and the index after it."""
        text, end = self.text, self.end
        if i < end and text[i].isspace():  # (`skip`, inlined: once per value)
            i = _WS.match(text, i, end).end()  # type: ignore[union-attr]  # `\s*` always matches
        if i >= end:
            raise NotAValue("no value")
        char = text[i]
        if self.delimiter is None and char in _JSON_STARTS:  # (tested here too: spares a call on `'x'`)
            if char != "{" and char != "[":
                read = strict_value(text, i, end)
            elif i < self.valid_to:
                # Nested in a container the strict decoder failed on after `i`: read here alone. Without
                # NaN/Infinity this is the strict value when there is one (up to the failure the text is JSON, which
                # both read alike); with them (only strict JSON reads them) `_settle` decides as the decoder would.
                # (Inline, not a method: one frame less per level keeps the depth this reader reaches.)
                outer, mark = self.skipping, self.non_finite
                state = (self.valid_to, self.failed_in)
                self.skipping = True
                try:
                    read = self.repaired_value(i)
                except RecursionError:
                    # Deeper than this reader recurses: the outermost container read this way is tried on
                    # the strict decoder after all, as it was before (it recurses three times less).
                    if outer or (read := self._deep(i, mark, state)) is None:  # type: ignore[assignment]
                        raise
                    return read
                self.skipping = outer
                return read if self.non_finite == mark else self._settle(i, mark)
            else:
                read = self._strict_container(i)
            if read is not None:
                return read
        return self.repaired_value(i)

    def object_spans(self, i: int) -> tuple[dict[str, tuple[Any, int, int]], int]:
        """Read the object at `i`, keeping each top-level value's span: {key: (value, start, end)}."""
        i = self.skip(i)
        if i >= self.end or self.text[i] != "{":
            raise NotAValue("not an object")
        out: dict[str, tuple[Any, int, int]] = {}
        return out, self._members(i + 1, "}", out, spans=True)

    def skip(self, i: int) -> int:
        if i >= self.end or not self.text[i].isspace():
            return i
        match = _WS.match(self.text, i, self.end)
        return match.end() if match else i

    def _strict_container(self, i: int) -> tuple[Any, int] | None:
        """The container at `i` read by the strict decoder; None, noting where it failed, when it cannot."""
        read = strict_read(self.text, i, self.end)
        if type(read) is int:
            self.valid_to = read
            return None
        if self.objects is not None:
            self.objects.append((i, read[0]))  # type: ignore[index]
        return read  # type: ignore[return-value]

    def _deep(self, i: int, mark: int, state: tuple[int, tuple[int, Any] | None]) -> tuple[Any, int] | None:
        """The strict value of the container at `i` that this reader failed to read for its depth (None when
        there is none), the reader's state restored as before reading it."""
        read = strict_value(self.text, i, self.end)
        if read is not None:
            self.skipping, self.non_finite = False, mark
            self.valid_to, self.failed_in = state
        return read

    def _settle(self, i: int, mark: int) -> tuple[Any, int]:
        """A container read without the strict decoder, holding NaN/Infinity: its strict value when it is strict
        JSON, else NotAValue, as when the decoder was tried on it first. (Nested containers settle their own and
        restore the count: `mark` counts this one's.)"""
        self.non_finite = mark
        read = strict_value(self.text, i, self.end)
        if read is None:
            raise NotAValue("NaN or Infinity outside strict JSON")
        return read

    # --- the slow path --------------------------------------------------------------------------
    def repaired_value(self, i: int) -> tuple[Any, int]:
        """The value at `i` (not whitespace, before `end`) read by the tolerant reader, without trying the
        strict decoder on it first (its nested values still are)."""
        text, char = self.text, self.text[i]
        if self.delimiter and text.startswith(self.delimiter, i):
            return self._delimited(i)
        if char == "{":
            obj: dict[str, Any] = {}
            try:
                after = self._members(i + 1, "}", obj, spans=False)
            except (NotAValue, RecursionError):
                # (no call here: at the recursion limit it would raise again)
                self.failed_in = (i, self.failed_in)
                raise
            if self.objects is not None:
                self.objects.append((i, obj))
            return obj, after
        if char in "[(":
            return self._array(i + 1, "]" if char == "[" else ")")
        if char in "\"'":
            return self._quoted(i)
        number = _NUMBER.match(text, i, self.end)
        if number:
            literal = number.group()
            if any(c in literal for c in ".eE"):
                return float(literal), number.end()
            if len(literal) > MAX_INT_DIGITS:  # int() refuses it (ValueError), as the strict decoder does
                raise NotAValue("an integer too long to convert")
            return int(literal), number.end()
        word = _WORD.match(text, i, self.end)
        if word and word.group() in LITERALS:
            if word.group() in _PYTHON_LITERALS:
                self.repairs.add("python_literals")
            return LITERALS[word.group()], word.end()
        if word and self.skipping and word.group() in _NON_FINITE:
            self.non_finite += 1  # kept only if strict JSON reads the container (see `_settle`)
            return _NON_FINITE[word.group()], word.end()
        raise NotAValue(f"unexpected {char!r}")

    def _members(self, i: int, close: str, out: dict[str, Any], *, spans: bool) -> int:
        """Read `key: value` pairs into `out` (with `spans`, as (value, start, end)) up to `close`; return the
        index after the object."""
        # `skip` is inlined in this loop and in `_array` (`if ... isspace(): i = _WS.match(...)`): they run once
        # per member or item, and the method call would cost more than the skip.
        text, end, repairs = self.text, self.end, self.repairs
        while True:
            if i < end and text[i].isspace():
                i = _WS.match(text, i, end).end()  # type: ignore[union-attr]  # `\s*` always matches
            if i >= end:
                repairs.add("unclosed")
                return i
            char = text[i]
            if char == close:
                return i + 1
            if char == ",":
                repairs.add("trailing_comma")
                i += 1
                continue
            if char in "])":
                repairs.add("unclosed")
                return i
            key, i = self._key(i)
            if i < end and text[i].isspace():
                i = _WS.match(text, i, end).end()  # type: ignore[union-attr]
            if i >= end:
                repairs.add("unclosed")
                return i
            if text[i] not in ":=":
                raise NotAValue("expected ':'")
            i += 1
            if i < end and text[i].isspace():
                i = _WS.match(text, i, end).end()  # type: ignore[union-attr]
            if i >= end:
                repairs.add("unclosed")
                return i
            start = i
            value, i = self.value(i)
            out[key] = (value, start, i) if spans else value
            if i < end and text[i].isspace():
                i = _WS.match(text, i, end).end()  # type: ignore[union-attr]
            if i >= end:
                repairs.add("unclosed")
                return i
            char = text[i]
            if char == ",":
                i += 1
                if self._closes_next(i, close):
                    repairs.add("trailing_comma")
            elif char == close:
                return i + 1
            elif char in "\"'" or (self.delimiter and text.startswith(self.delimiter, i)):
                repairs.add("missing_comma")
            else:
                repairs.add("unclosed")
                return i

    def _closes_next(self, i: int, close: str) -> bool:
        text, end = self.text, self.end
        if i < end and text[i].isspace():
            i = _WS.match(text, i, end).end()  # type: ignore[union-attr]
        return i < end and text[i] == close

    def _key(self, i: int) -> tuple[str, int]:
        text = self.text
        if self.delimiter and text.startswith(self.delimiter, i):
            key, after = self._delimited(i)
            return str(key), after
        if text[i] in "\"'":
            key, after = self._quoted(i)
            return str(key), after
        word = _WORD.match(text, i, self.end)
        if not word:
            raise NotAValue("expected a key")
        if not self.bare_keys:
            self.repairs.add("unquoted_keys")
        return word.group(), word.end()

    def _array(self, i: int, close: str) -> tuple[list[Any], int]:
        items: list[Any] = []
        text, end, repairs = self.text, self.end, self.repairs
        while True:
            if i < end and text[i].isspace():
                i = _WS.match(text, i, end).end()  # type: ignore[union-attr]
            if i >= end:
                repairs.add("unclosed")
                return items, i
            char = text[i]
            if char == close:
                return items, i + 1
            if char == ",":
                if items:
                    repairs.add("trailing_comma")
                i += 1
                continue
            if char in "]})":
                repairs.add("unclosed")
                return items, i
            value, i = self.value(i)
            items.append(value)
            if i < end and text[i].isspace():
                i = _WS.match(text, i, end).end()  # type: ignore[union-attr]
            if i < end and text[i] == ",":
                i += 1
                if self._closes_next(i, close):
                    repairs.add("trailing_comma")
            elif i < end and text[i] not in close + "]})":
                repairs.add("missing_comma")

    def _quoted(self, i: int) -> tuple[str, int]:
        quote = self.text[i]
        pattern = _DQ_STRING if quote == '"' else _SQ_STRING
        if quote == "'":
            self.repairs.add("single_quotes")
        match = pattern.match(self.text, i, self.end)
        if match:
            body = match.group(1)
            return (decode_escapes(body) if "\\" in body else body), match.end()  # (most strings have no escape)
        body = self.text[i + 1:self.end]
        if body.endswith("\\") and not body.endswith("\\\\"):
            body = body[:-1]  # a cut escape sequence
        self.repairs.add("unclosed")
        return decode_escapes(body), self.end

    def _delimited(self, i: int) -> tuple[str, int]:
        assert self.delimiter is not None
        start = i + len(self.delimiter)
        close = self.text.find(self.delimiter, start, self.end)
        if close < 0:
            self.repairs.add("unclosed")
            return self.text[start:self.end], self.end
        return self.text[start:close], close + len(self.delimiter)


_NO_REPAIRS: frozenset[str] = frozenset()


def scan_value(text: str, i: int, scan: Scanner) -> tuple[Any, int] | int:
    """The value `scan` (a C decoder's `scan_once`) reads at `i` and the index after it, or the index where it
    fails (RecursionError and a ValueError other than JSONDecodeError are raised).

    A JSONDecodeError counts the lines before its position (`doc.count`), so each failure far into a long text
    would cost the text's length; there the value is scanned in a window of the text instead."""
    size = _WINDOW
    while True:
        if i < _WINDOW:
            part, start, offset, cut = text, i, 0, False
        else:
            part, start, offset, cut = text[i:i + size], 0, i, i + size < len(text)
        try:
            value, after = scan(part, start)
        except JSONDecodeError as error:
            if not cut or (error.pos < size - _CUT_REACH and not error.msg.startswith("Unterminated string")):
                return offset + error.pos
        except StopIteration as stop:  # (no value at `i`, or a nested one missing: the scanner raises it as is)
            if not cut or stop.value < size - _CUT_REACH:
                return offset + int(stop.value)
        else:
            if not cut or after < size:  # (a number ending at the cut may go on)
                return value, offset + after
        size *= 4


def strict_value(text: str, i: int, end: int) -> tuple[Any, int] | None:
    """The strict JSON value at `i` (read by the C decoder) when it ends by `end`; None otherwise."""
    char = text[i]
    if char not in _JSON_STARTS:
        return None
    # _NOT_JSON only spares a decode that would fail; a string, a number or `{"` (most objects) cannot match it.
    if (char == "{" or char == "[") and text[i + 1:i + 2] != '"' and _NOT_JSON.match(text, i):
        return None
    try:
        read = scan_value(text, i, _SCAN)
    except ValueError:
        return None
    return read if type(read) is tuple and read[1] <= end else None


def strict_read(text: str, i: int, end: int) -> tuple[Any, int] | int:
    """As `strict_value`, but where the strict decoder fails instead of None: the text before that index is
    JSON as far as it goes. A value that does not end by `end` fails at `end`; so does one nested deeper than
    the decoder recurses (the failure is unknown there; a reader of it recurses deeper still and fails too)."""
    if (text[i + 1:i + 2] != '"' and text[i] in "{[") and _NOT_JSON.match(text, i):
        return i
    try:
        read = scan_value(text, i, _SCAN)
    except RecursionError:
        return end
    except ValueError:
        return i
    if type(read) is int:
        return read
    return read if read[1] <= end else end  # type: ignore[index]


def read_value(text: str, start: int, end: int | None = None) -> tuple[Any, int, frozenset[str]] | None:
    """Read one JSON-like value at `start`; None when there is none. Returns (value, end, repairs).

    Strict JSON is read without building a reader (most values); only the rest pays for one."""
    if end is None:
        end = len(text)
    if start < end and text[start].isspace():
        start = _WS.match(text, start, end).end()  # type: ignore[union-attr]  # `\s*` always matches
    if start >= end:
        return None
    reader = None
    try:
        read = strict_value(text, start, end)
        if read is None:
            reader = LenientReader(text, end)
            read = reader.repaired_value(start)
    except (NotAValue, RecursionError):
        return None
    return read[0], read[1], frozenset(reader.repairs) if reader is not None else _NO_REPAIRS
