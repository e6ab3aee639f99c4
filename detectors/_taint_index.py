"""An index of a text's letter-digit runs, to find where many values occur in it in one pass over the text.

`tool_taint` looks for every identifier of a tool call's arguments in the untrusted texts. Searching the text once
per identifier (and compiling a pattern for each) made a check quadratic: a tool result copied into an argument took
seconds at 140 KB. A value counts only where it does not start or end inside a longer token, so each of its
letter-digit runs is then a whole run of the text: looking up its rarest run gives the few places to compare at.

Texts are read folded (detectors/_fold.py: NFKC, invisible characters dropped, Cyrillic/Greek look-alikes as
Latin), as a model reading them would copy them: an address hidden as `eve@ev\u200bil.test` or in fullwidth letters
is still found, at its original characters. An identifier written with other separators (`DE89 3704 0044...`
for `DE89370400...`, `+1 (555) 123-4567` for `+15551234567`) is found by `compact_spans`.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

from detectors._fold import FoldedText, fold_with_offsets

RUN = re.compile(r"[^\W_]+")  # letters and digits: str.isalnum, which decides what is inside a token
WORD = re.compile(r"\S+")
# What may sit between the parts of one identifier written for reading: spaces, dashes, dots, brackets.
SEPARATORS = re.compile(r"[\s\-.()/+]{1,3}")
COMPACTABLE = re.compile(r"^[^\W_]+(?:[\s\-.()/+]{1,3}[^\W_]+)*$")
MAX_ANCHORS = 300  # places tried per compact search: a text of thousands of `1 1 1 ...` must not cost seconds

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
    unfold: FoldedText | None = None  # maps the folded text back to the original; None: nothing was folded

    def raw(self, offset: int) -> int:
        """The folded text's offset of a normalized one (never a space: words keep their length)."""
        word = bisect_right(self.norm_starts, offset) - 1
        return self.raw_starts[word] + offset - self.norm_starts[word]

    def original(self, start: int, end: int) -> tuple[int, int]:
        """The original text's span of a normalized one."""
        start, end = self.raw(start), self.raw(end - 1) + 1
        return self.unfold.original_span(start, end) if self.unfold is not None else (start, end)

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
            yield self.original(start, end)

    def compact_spans(self, compact: str) -> Iterator[tuple[int, int]]:
        """Spans in the original text of runs that spell `compact` (letters and digits only) when joined across
        short separators: `de89 3704 0044` for `de8937040044`. Each prefix of `compact` that is a whole run is
        an anchor, the longest (rarest) first; a few dictionary lookups, not a scan of the text."""
        tried = 0
        for k in range(len(compact), 0, -1):
            for anchor in self.runs.get(compact[:k], ()):
                tried += 1
                if tried > MAX_ANCHORS:
                    return
                end = self._spell(compact, k, anchor + k)
                if end is not None:
                    yield self.original(anchor, end)

    def _spell(self, compact: str, done: int, at: int) -> int | None:
        """Where the runs from `at` finish spelling `compact[done:]`, or None."""
        while done < len(compact):
            gap = SEPARATORS.match(self.normalized, at)
            run = RUN.match(self.normalized, gap.end()) if gap else None
            if run is None or not compact.startswith(run.group(), done):
                return None
            done, at = done + len(run.group()), run.end()
        return at


def value_runs(value: str) -> Runs:
    return tuple((m.group(), m.start()) for m in RUN.finditer(value))


def compact_form(value: str) -> str | None:
    """The letters and digits of an identifier written with separators (`+1 (555) 123-4567`), else None."""
    stripped = value.strip("+ ")
    if not COMPACTABLE.match(stripped):
        return None
    return "".join(m.group() for m in RUN.finditer(stripped))


def normalize(text: str) -> str:
    """A value or a text as the index compares it: folded, lower case, one space between words."""
    if text.isascii():  # nothing to fold (the common case)
        return " ".join(text.lower().split())
    return " ".join(_lower(fold_with_offsets(text, casefold=False).text).split())


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


def _build_index(original: str) -> TextIndex:
    folded = fold_with_offsets(original, casefold=False)
    text = folded.text
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
    stripped = original.lstrip()
    return TextIndex(normalized, norm_starts, raw_starts, runs, len(original) - len(stripped), len(original.rstrip()),
                     folded if folded.pieces is not None else None)


def _lower(word: str) -> str:
    """Lower case that keeps the word's length, so offsets map back; a letter whose lower case is longer
    ('İ' -> 'i̇') stays as it is."""
    lowered = word.lower()
    if len(lowered) == len(word):
        return lowered
    return "".join(c.lower() if len(c.lower()) == 1 else c for c in word)
