"""Where each leaf value sits inside a tool call's argument JSON text.

`json.loads` forgets positions; confidence per argument needs them, both to find the value's tokens and
to point a finding at `arguments[start:end]`. The scanner accepts exactly the JSON the adapters parsed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from json.decoder import scanstring

_WS = re.compile(r"[ \t\n\r]*")
_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?")
_LITERALS = ("true", "false", "null")


@dataclass(frozen=True, slots=True)
class Leaf:
    path: tuple[str | int, ...]  # keys and indices from the root
    start: int  # value span in the JSON text; for strings, inside the quotes
    end: int
    value: object
    is_string: bool


@lru_cache(maxsize=4096)  # an agent resends the same calls in its history every step
def leaves(text: str) -> tuple[Leaf, ...]:
    """Leaf values of a JSON text in document order; () when the text is not JSON we can scan."""
    out: list[Leaf] = []
    try:
        end = _value(text, _skip(text, 0), (), out)
    except (ValueError, IndexError, RecursionError):
        return ()
    return tuple(out) if _skip(text, end) == len(text) else ()


def _skip(text: str, pos: int) -> int:
    return _WS.match(text, pos).end()  # type: ignore[union-attr]


def _value(text: str, pos: int, path: tuple[str | int, ...], out: list[Leaf]) -> int:
    ch = text[pos]
    if ch == "{":
        pos = _skip(text, pos + 1)
        if text[pos] == "}":
            return pos + 1
        while True:
            if text[pos] != '"':
                raise ValueError("expected a key")
            key, pos = scanstring(text, pos + 1)
            pos = _skip(text, pos)
            if text[pos] != ":":
                raise ValueError("expected ':'")
            pos = _value(text, _skip(text, pos + 1), (*path, key), out)
            pos = _skip(text, pos)
            if text[pos] == "}":
                return pos + 1
            if text[pos] != ",":
                raise ValueError("expected ','")
            pos = _skip(text, pos + 1)
    if ch == "[":
        pos = _skip(text, pos + 1)
        if text[pos] == "]":
            return pos + 1
        index = 0
        while True:
            pos = _skip(text, _value(text, pos, (*path, index), out))
            if text[pos] == "]":
                return pos + 1
            if text[pos] != ",":
                raise ValueError("expected ','")
            pos = _skip(text, pos + 1)
            index += 1
    if ch == '"':
        value, end = scanstring(text, pos + 1)
        out.append(Leaf(path, pos + 1, end - 1, value, True))
        return end
    for literal in _LITERALS:
        if text.startswith(literal, pos):
            out.append(Leaf(path, pos, pos + len(literal), {"true": True, "false": False}.get(literal), False))
            return pos + len(literal)
    match = _NUMBER.match(text, pos)
    if not match:
        raise ValueError("unexpected character")
    out.append(Leaf(path, pos, match.end(), match.group(), False))
    return match.end()
