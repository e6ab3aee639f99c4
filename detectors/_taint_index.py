"""An index of a text's letter-digit runs, to find where many values occur in it in one pass over the text.

`tool_taint` looks for every identifier of a tool call's arguments in the untrusted texts. Searching the text once
per identifier (and compiling a pattern for each) made a check quadratic: a tool result copied into an argument took
seconds at 140 KB. A value counts only where it does not start or end inside a longer token, so each of its
letter-digit runs is then a whole run of the text: looking up its rarest run gives the few places to compare at.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

RUN = re.compile(r"[^\W_]+")  # letters and digits: str.isalnum, which decides what is inside a token
WORD = re.compile(r"\S+")

Runs = tuple[tuple[str, int], ...]  # a value's runs, each with its offset in the value


@dataclass(frozen=True, slots=True)
class TextIndex:
    """A text in normalized form (lower case, one space between words), and where each run starts in it."""

    normalized: str
    norm_starts: list[int]  # each word's offset in `normalized`...
    raw_starts: list[int]  # ...and in the original text
    runs: dict[str, list[int]]  # run -> its offsets in `normalized`, ascending
    content_start: int  # the original text's first and past-last non-space offsets
    content_end: int

    def raw(self, offset: int) -> int:
        """The original text's offset of a normalized one (never a space: words keep their length)."""
        word = bisect_right(self.norm_starts, offset) - 1
        return self.raw_starts[word] + offset - self.norm_starts[word]

    def spans(self, value: str, runs: Runs) -> Iterator[tuple[int, int]]:
        """Spans in the original text of `value`'s occurrences, in order and not overlapping (as a regex finds
        them): all those that neither start nor end inside a token, and some that do, for the caller to drop."""
        where = [(self.runs.get(run), offset) for run, offset in runs]
        if not runs or any(starts is None for starts, _ in where):
            return
        starts, offset = min(where, key=lambda pair: len(pair[0] or ()))
        end = 0
        for anchor in starts or ():
            start = anchor - offset
            if start < end or not self.normalized.startswith(value, start):
                continue
            end = start + len(value)
            yield self.raw(start), self.raw(end - 1) + 1


def value_runs(value: str) -> Runs:
    return tuple((m.group(), m.start()) for m in RUN.finditer(value))


# Indexes kept for texts resent later, bounded by the characters they index (an index is several times its
# text's size): a run of distinct 4 MiB bodies must not hold gigabytes.
CACHE_MAX_CHARS = 8_000_000
_cache: OrderedDict[str, TextIndex] = OrderedDict()
_cached_chars = 0


def text_index(text: str) -> TextIndex:
    """Built once per text while it stays cached: agents resend their history every step, so a step costs what
    it adds."""
    global _cached_chars
    limit = CACHE_MAX_CHARS
    index = _cache.get(text)
    if index is not None:
        _cache.move_to_end(text)
        return index
    index = _build_index(text)
    if len(text) <= limit // 4:
        _cache[text] = index
        _cached_chars += len(text)
        while _cached_chars > limit:
            evicted, _ = _cache.popitem(last=False)
            _cached_chars -= len(evicted)
    return index


def clear_cache() -> None:
    global _cached_chars
    _cache.clear()
    _cached_chars = 0


def _build_index(text: str) -> TextIndex:
    norm_starts: list[int] = []
    raw_starts: list[int] = []
    words: list[str] = []
    offset = 0
    for match in WORD.finditer(text):
        word = _lower(match.group())
        norm_starts.append(offset)
        raw_starts.append(match.start())
        words.append(word)
        offset += len(word) + 1
    normalized = " ".join(words)
    runs: dict[str, list[int]] = {}
    for match in RUN.finditer(normalized):
        runs.setdefault(match.group(), []).append(match.start())
    stripped = text.lstrip()
    return TextIndex(normalized, norm_starts, raw_starts, runs, len(text) - len(stripped), len(text.rstrip()))


def _lower(word: str) -> str:
    """Lower case that keeps the word's length, so offsets map back; a letter whose lower case is longer
    ('İ' -> 'i̇') stays as it is."""
    lowered = word.lower()
    if len(lowered) == len(word):
        return lowered
    return "".join(c.lower() if len(c.lower()) == 1 else c for c in word)
