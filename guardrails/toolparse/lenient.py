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
from typing import Any

_DECODER = json.JSONDecoder(strict=False)
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
LITERALS: dict[str, Any] = {"true": True, "false": False, "null": None, "True": True, "False": False,
                            "None": None}
_PYTHON_LITERALS = {"True", "False", "None"}


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

    __slots__ = ("bare_keys", "delimiter", "end", "repairs", "text")

    def __init__(self, text: str, end: int | None = None, *, delimiter: str | None = None,
                 bare_keys: bool = False) -> None:
        self.text = text
        self.end = len(text) if end is None else end
        self.delimiter = delimiter  # a custom string delimiter token
        self.bare_keys = bare_keys  # unquoted keys are the format, not a repair
        self.repairs: set[str] = set()

    # --- entry points ---------------------------------------------------------------------------
    def value(self, i: int) -> tuple[Any, int]:
        """Read the value starting at `i` (after whitespace); return it and the index after it."""
        i = self.skip(i)
        if i >= self.end:
            raise NotAValue("no value")
        char = self.text[i]
        if self.delimiter is None and char in '{["-0123456789tfn' and not _NOT_JSON.match(self.text, i):
            try:
                value, after = _DECODER.raw_decode(self.text, i)
            except ValueError:
                pass
            else:
                if after <= self.end:
                    return value, after
        return self._slow_value(i)

    def object_spans(self, i: int) -> tuple[dict[str, tuple[Any, int, int]], int]:
        """Read the object at `i`, keeping each top-level value's span: {key: (value, start, end)}."""
        i = self.skip(i)
        if i >= self.end or self.text[i] != "{":
            raise NotAValue("not an object")
        out: dict[str, tuple[Any, int, int]] = {}
        after = self._members(i + 1, "}", lambda key, value, s, e: out.__setitem__(key, (value, s, e)))
        return out, after

    def skip(self, i: int) -> int:
        if i >= self.end or not self.text[i].isspace():
            return i
        match = _WS.match(self.text, i, self.end)
        return match.end() if match else i

    # --- the slow path --------------------------------------------------------------------------
    def _slow_value(self, i: int) -> tuple[Any, int]:
        text, char = self.text, self.text[i]
        if self.delimiter and text.startswith(self.delimiter, i):
            return self._delimited(i)
        if char == "{":
            obj: dict[str, Any] = {}
            return obj, self._members(i + 1, "}", lambda key, value, s, e: obj.__setitem__(key, value))
        if char in "[(":
            return self._array(i + 1, "]" if char == "[" else ")")
        if char in "\"'":
            return self._quoted(i)
        number = _NUMBER.match(text, i, self.end)
        if number:
            literal = number.group()
            return (float(literal) if any(c in literal for c in ".eE") else int(literal)), number.end()
        word = _WORD.match(text, i, self.end)
        if word and word.group() in LITERALS:
            if word.group() in _PYTHON_LITERALS:
                self.repairs.add("python_literals")
            return LITERALS[word.group()], word.end()
        raise NotAValue(f"unexpected {char!r}")

    def _members(self, i: int, close: str, put: Any) -> int:
        """Read `key: value` pairs up to `close`; return the index after the object."""
        text = self.text
        while True:
            i = self.skip(i)
            if i >= self.end:
                self.repairs.add("unclosed")
                return i
            char = text[i]
            if char == close:
                return i + 1
            if char == ",":
                self.repairs.add("trailing_comma")
                i += 1
                continue
            if char in "])":
                self.repairs.add("unclosed")
                return i
            key, i = self._key(i)
            i = self.skip(i)
            if i >= self.end:
                self.repairs.add("unclosed")
                return i
            if text[i] not in ":=":
                raise NotAValue("expected ':'")
            i = self.skip(i + 1)
            if i >= self.end:
                self.repairs.add("unclosed")
                return i
            start = i
            value, i = self.value(i)
            put(key, value, start, i)
            i = self.skip(i)
            if i >= self.end:
                self.repairs.add("unclosed")
                return i
            char = text[i]
            if char == ",":
                i += 1
                if self._closes_next(i, close):
                    self.repairs.add("trailing_comma")
            elif char == close:
                return i + 1
            elif char in "\"'" or (self.delimiter and text.startswith(self.delimiter, i)):
                self.repairs.add("missing_comma")
            else:
                self.repairs.add("unclosed")
                return i

    def _closes_next(self, i: int, close: str) -> bool:
        i = self.skip(i)
        return i < self.end and self.text[i] == close

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
        text = self.text
        while True:
            i = self.skip(i)
            if i >= self.end:
                self.repairs.add("unclosed")
                return items, i
            char = text[i]
            if char == close:
                return items, i + 1
            if char == ",":
                if items:
                    self.repairs.add("trailing_comma")
                i += 1
                continue
            if char in "]})":
                self.repairs.add("unclosed")
                return items, i
            value, i = self.value(i)
            items.append(value)
            i = self.skip(i)
            if i < self.end and text[i] == ",":
                i += 1
                if self._closes_next(i, close):
                    self.repairs.add("trailing_comma")
            elif i < self.end and text[i] not in close + "]})":
                self.repairs.add("missing_comma")

    def _quoted(self, i: int) -> tuple[str, int]:
        quote = self.text[i]
        pattern = _DQ_STRING if quote == '"' else _SQ_STRING
        if quote == "'":
            self.repairs.add("single_quotes")
        match = pattern.match(self.text, i, self.end)
        if match:
            return decode_escapes(match.group(1)), match.end()
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


def read_value(text: str, start: int, end: int | None = None) -> tuple[Any, int, frozenset[str]] | None:
    """Read one JSON-like value at `start`; None when there is none. Returns (value, end, repairs)."""
    reader = LenientReader(text, end)
    try:
        value, after = reader.value(start)
    except (NotAValue, RecursionError):
        return None
    return value, after, frozenset(reader.repairs)
