"""Where each leaf value sits inside a tool call's argument JSON text.

`json.loads` forgets positions; confidence per argument needs them, both to find the value's tokens and
to point a finding at `arguments[start:end]`. The scanner accepts exactly the JSON the adapters parsed.
"""

from __future__ import annotations

import re
import sys
from json.decoder import scanstring
from typing import NamedTuple

from guardrails.argspans import SizedMemo

_WS = re.compile(r"[ \t\n\r]*")
_NUMBER_TEXT = r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?"
_NUMBER = re.compile(_NUMBER_TEXT)
_LITERALS = ("true", "false", "null")
_LITERAL_VALUES = {"true": True, "false": False, "null": None}
# The common case in one match: a scalar (a string without escapes or control characters, whose text is its
# value; a number; a literal), alone or as an object member with its key, and the comma after it with the
# whitespace around. Anything else (escapes, nested values, errors) takes the general path, which reads it
# exactly as before.
_SCALAR = (rf'(?:"(?P<string>[^"\\\x00-\x1f]*)"|(?P<number>{_NUMBER_TEXT})|(?P<literal>true|false|null))'
           r"[ \t\n\r]*(?:(?P<comma>,)[ \t\n\r]*)?")
_MEMBER = re.compile(rf'"(?P<key>[^"\\\x00-\x1f]*)"[ \t\n\r]*:[ \t\n\r]*{_SCALAR}')
_ELEMENT = re.compile(_SCALAR)
_STRING, _NUMBER_GROUP, _LITERAL_GROUP = (_MEMBER.groupindex[g] for g in ("string", "number", "literal"))
assert tuple(_MEMBER.groupindex) == ("key", "string", "number", "literal", "comma")  # the order groups() returns


class Leaf(NamedTuple):  # a tuple: a call's arguments can hold hundreds
    path: tuple[str | int, ...]  # keys and indices from the root
    start: int  # value span in the JSON text; for strings, inside the quotes
    end: int
    value: object
    is_string: bool


LEAVES_BYTES = 16 * 2**20
# An agent resends the same calls in its history every step: their leaves are kept, bounded by bytes too (a client
# sends 4 MB arguments); the latest call too big to keep with the others is kept alone (align and low_confidence
# both ask for it).
_leaves: SizedMemo[str, tuple[Leaf, ...]] = SizedMemo(4096, LEAVES_BYTES, latest=True)
_LEAF_BYTES = 136  # a leaf's tuple of five and its two offsets (ints past 256 are objects of their own)


def leaves(text: str) -> tuple[Leaf, ...]:
    """Leaf values of a JSON text in document order; () when the text is not JSON we can scan."""
    found = _leaves.entries.get(text)  # the hot path: a plain dict lookup
    if found is None:
        found = _leaves.get(text)
        if found is None:
            found = _scan(text)
            _leaves.put(text, found, _leaves_size(text, found))
    return found


def clear_leaves() -> None:
    """Forget every scanned text: a benchmark's run starts cold, as a new response does."""
    global _leaves
    _leaves = SizedMemo(_leaves.max_entries, _leaves.max_bytes, latest=True)


leaves.cache_clear = clear_leaves  # type: ignore[attr-defined]  # the name bench/bench_logprobs.py calls


def _leaves_size(text: str, found: tuple[Leaf, ...]) -> int:
    """An upper bound of what the entry holds: the text, each leaf, its value and its path (each key and index
    counted in every path holding it, though the paths below one key share that object)."""
    size, getsizeof = sys.getsizeof(text) + sys.getsizeof(found), sys.getsizeof
    for leaf in found:
        size += _LEAF_BYTES + getsizeof(leaf.value) + getsizeof(leaf.path) + sum(map(getsizeof, leaf.path))
    return size


def _scan(text: str) -> tuple[Leaf, ...]:
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
            pos, more = _scalar_members(text, pos, path, out)
            if more:  # a member that is not a plain scalar: the general path
                if text[pos] != '"':
                    raise ValueError("expected a key")
                key, pos = scanstring(text, pos + 1)
                pos = _skip(text, pos)
                if text[pos] != ":":
                    raise ValueError("expected ':'")
                pos = _skip(text, _value(text, _skip(text, pos + 1), (*path, key), out))
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
            element = _ELEMENT.match(text, pos)
            if element is not None:
                out.append(_scalar(element, (*path, index)))
                pos = element.end()
            else:
                pos = _skip(text, _value(text, pos, (*path, index), out))
            index += 1
            if element is not None and element["comma"]:
                continue
            if text[pos] == "]":
                return pos + 1
            if text[pos] != ",":
                raise ValueError("expected ','")
            pos = _skip(text, pos + 1)
    if ch == '"':
        value, end = scanstring(text, pos + 1)
        out.append(Leaf(path, pos + 1, end - 1, value, True))
        return end
    for literal in _LITERALS:
        if text.startswith(literal, pos):
            out.append(Leaf(path, pos, pos + len(literal), _LITERAL_VALUES[literal], False))
            return pos + len(literal)
    match = _NUMBER.match(text, pos)
    if not match:
        raise ValueError("unexpected character")
    out.append(Leaf(path, pos, match.end(), match.group(), False))
    return match.end()


def _scalar_members(text: str, pos: int, path: tuple[str | int, ...], out: list[Leaf]) -> tuple[int, bool]:
    """The plain scalar members from `pos` on, with the comma after each (the bulk of most arguments).
    Returns where they stop and whether the general path must read a member there (True after a comma or
    at `pos`; False when a member without a comma ended them: the object's end or an error follows).
    The hot loop of scanning: one `groups()` call per member, each leaf built by `tuple.__new__` (a
    NamedTuple's own `__new__` is Python code)."""
    match, append, new = _MEMBER.match, out.append, tuple.__new__
    while (member := match(text, pos)) is not None:
        key, string, number, literal, comma = member.groups()
        if string is not None:
            start, end = member.span(_STRING)
            leaf = ((*path, key), start, end, string, True)
        elif number is not None:
            start, end = member.span(_NUMBER_GROUP)
            leaf = ((*path, key), start, end, number, False)
        else:
            start, end = member.span(_LITERAL_GROUP)
            leaf = ((*path, key), start, end, _LITERAL_VALUES[literal], False)
        append(new(Leaf, leaf))
        pos = member.end()
        if comma is None:
            return pos, False
    return pos, True


def _scalar(match: re.Match[str], path: tuple[str | int, ...]) -> Leaf:
    """The leaf of a `_SCALAR` match."""
    if (text := match["string"]) is not None:
        return Leaf(path, match.start("string"), match.end("string"), text, True)
    if (text := match["number"]) is not None:
        return Leaf(path, match.start("number"), match.end("number"), text, False)
    return Leaf(path, match.start("literal"), match.end("literal"), _LITERAL_VALUES[match["literal"]], False)
