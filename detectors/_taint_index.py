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
from collections.abc import Collection, Iterator
from dataclasses import dataclass

from detectors._fold import FoldedText, fold_with_offsets
from guardrails.memo import SizedMemo

RUN = re.compile(r"[^\W_]+")  # letters and digits: str.isalnum, which decides what is inside a token
WORD = re.compile(r"\S+")
SPACES = re.compile(r"\s\s+")  # where normalized text keeps one space for several
# What may sit between the parts of one identifier written for reading: spaces, dashes, dots, brackets.
SEPARATORS = re.compile(r"[\s\-.()/+]{1,3}")
COMPACTABLE = re.compile(r"^[^\W_]+(?:[\s\-.()/+]{1,3}[^\W_]+)*$")
MAX_ANCHORS = 300  # places tried per compact search: a text of thousands of `1 1 1 ...` must not cost seconds
MAX_PREFIX_SEARCHES = 64  # compact searches kept per text; past them, every run is indexed

Runs = tuple[tuple[str, int], ...]  # a value's runs, each with its offset in the value


class RunIndex:
    """Where each letter-digit run starts in a normalized text (offsets ascending); a run not in it: None.

    Found for the runs asked about, with str.find (in C, plus a step in Python per occurrence): a check asks about
    its arguments' few runs, where indexing every run of a text cost ~60 ms a MB. Once that work reaches about what
    indexing every run costs (a copied document's hundreds of identifiers, or a common run's thousands of
    occurrences), every run is indexed at once (`complete`), as before."""

    __slots__ = ("_all", "_found", "_held", "_prefixes", "_work", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self._found: dict[str, list[int] | None] = {}
        self._held: dict[str, bool] = {}  # runs known to be in the text or not, their offsets not read yet
        self._prefixes: dict[str, dict[int, list[int]]] = {}  # (agents resend their calls: asked again each step)
        self._all: dict[str, list[int]] | None = None
        self._work = len(text) // 8 + 256  # steps left (a step per occurrence; a scan of the text ~1/1000 a char)

    def get(self, run: str, default: list[int] | None = None) -> list[int] | None:
        """The offsets of `run` (letters and digits, as value_runs gives them), or `default` where it is none."""
        if self._all is not None:
            return self._all.get(run, default)
        found = self._found.get(run, _UNSEEN)
        if found is _UNSEEN:
            found = self._whole_runs(run)
            if found is _TOO_MUCH:
                return self.complete().get(run, default)
            self._found[run] = found
        return default if found is None else found  # type: ignore[return-value]

    def held(self, runs: Collection[str]) -> Iterator[str]:
        """Those of `runs` the text holds (read up to the first of each: most values are not in most texts, and the
        offsets of every run of a value are needed only where all of them are)."""
        return (run for run in runs if self._holds(run))

    def _holds(self, run: str) -> bool:
        if self._all is not None:
            return run in self._all
        if run in self._found:
            return self._found[run] is not None
        held = self._held.get(run)
        if held is None:
            held = self._whole_runs(run, first=True)
            if held is _TOO_MUCH:
                return run in self.complete()
            held = self._held[run] = held is not None
        return held  # type: ignore[return-value]

    def prefixes(self, compact: str) -> dict[int, list[int]]:
        """For each k, the offsets of the runs that are `compact[:k]` (where there are any)."""
        if self._all is None:
            found = self._prefixes.get(compact)
            if found is not None:
                return found
            if len(self._prefixes) < MAX_PREFIX_SEARCHES:
                found = self._prefix_runs(compact)  # type: ignore[assignment]
                if found is not _TOO_MUCH:
                    self._prefixes[compact] = found  # type: ignore[assignment]
                    return found  # type: ignore[return-value]
        runs = self.complete()
        return {k: runs[compact[:k]] for k in range(1, len(compact) + 1) if compact[:k] in runs}

    def complete(self) -> dict[str, list[int]]:
        """Every run's offsets."""
        if self._all is None:
            found: dict[str, list[int]] = {}
            for match in RUN.finditer(self.text):
                found.setdefault(match.group(), []).append(match.start())
            self._all = found
            self._found.clear()
            self._held.clear()
            self._prefixes.clear()
        return self._all

    def _whole_runs(self, run: str, first: bool = False) -> list[int] | object | None:
        r"""The offsets where `run` stands as a whole run (no letter or digit on either side: str.isalnum is
        `[^\W_]`), None where it does not; with `first`, up to the first only. _TOO_MUCH past the work left."""
        text, size = self.text, len(run)
        self._work -= len(text) // 1024 + 8
        found = []
        lone = _LONE.get(run)
        if lone is not None:  # a letter or digit alone: searched for in C, its every occurrence in a word passed over
            for match in lone.finditer(text):
                self._work -= 1
                if self._work < 0:
                    return _TOO_MUCH
                found.append(match.start())
                if first:
                    break
            return found or None
        k = text.find(run)
        while k >= 0:
            self._work -= 1
            if self._work < 0:
                return _TOO_MUCH
            end = k + size
            if (not k or not text[k - 1].isalnum()) and (end == len(text) or not text[end].isalnum()):
                found.append(k)
                if first:
                    break
            k = text.find(run, k + 1)
        return found or None

    def _prefix_runs(self, compact: str) -> dict[int, list[int]] | object:
        """`prefixes`, from the run starting at each occurrence of the first two characters (a run that is a prefix
        of two or more characters starts with them), and the lone characters that are its first: _TOO_MUCH past
        the work left, or for a first character that is not ASCII."""
        text = self.text
        found: dict[int, list[int]] = {}
        if len(compact) >= 2:
            head = compact[:2]
            self._work -= len(text) // 1024 + 8
            k = text.find(head)
            while k >= 0:
                self._work -= 1
                if self._work < 0:
                    return _TOO_MUCH
                if not k or not text[k - 1].isalnum():
                    run = RUN.match(text, k).group()  # type: ignore[union-attr]
                    if compact.startswith(run):
                        found.setdefault(len(run), []).append(k)
                k = text.find(head, k + 1)
        lone = _LONE.get(compact[0])
        if lone is None:
            return _TOO_MUCH
        self._work -= len(text) // 1024 + 8
        for match in lone.finditer(text):
            self._work -= 1
            if self._work < 0:
                return _TOO_MUCH
            found.setdefault(1, []).append(match.start())
        return found


_UNSEEN = object()
_TOO_MUCH = object()
# A letter or digit standing alone (a run of one), per ASCII character: the first of a compact value (found in C).
_LONE = {c: re.compile(c + r"(?![^\W_])(?<![^\W_]" + c + ")") for c in "abcdefghijklmnopqrstuvwxyz0123456789"}


@dataclass(frozen=True, slots=True)
class TextIndex:
    """A text in normalized form (lower case, one space between words), and where each run starts in it."""

    normalized: str
    norm_starts: list[int]  # offsets in `normalized` where the gap to the original text changes...
    raw_starts: list[int]  # ...and the same offsets in the original text (from each, the two advance together)
    runs: RunIndex  # run -> its offsets in `normalized`, ascending
    content_start: int  # the original text's first and past-last non-space offsets
    content_end: int
    unfold: FoldedText | None = None  # maps the folded text back to the original; None: nothing was folded
    # Whether `normalized` is normalize()'s form of the text too: lower-casing kept the folded text's length (else
    # normalize() reads the whole text character by character, the index each word apart: "Σ" ends words).
    as_normalize: bool = True

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
        an anchor, the longest (rarest) first: found in one pass over the text (RunIndex.prefixes), or looked up."""
        tried = 0
        anchors = self.runs.prefixes(compact)
        for k in sorted(anchors, reverse=True):
            for anchor in anchors[k]:
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
# text's size): a run of distinct 4 MiB bodies must not hold gigabytes. A text above a quarter of that is indexed,
# never kept. Least recently used first out: an index is costly to build, and a session's texts are asked for again
# every step.
CACHE_MAX_CHARS = 8_000_000
_cache: SizedMemo[str, TextIndex] = SizedMemo(None, CACHE_MAX_CHARS, lru=True)


def text_index(text: str) -> TextIndex:
    """Built once per text while it stays cached: agents resend their history every step, so a step costs what
    it adds."""
    index = _cache.get(text)
    if index is None:
        index = _cache.put(text, _build_index(text), len(text))
    return index


def clear_cache() -> None:
    _cache.clear()


def _build_index(original: str) -> TextIndex:
    folded = fold_with_offsets(original, casefold=False)
    text = folded.text
    lowered = text.lower()
    if len(lowered) == len(text):
        # Lower-cased whole (in C; the same as word by word: only "Σ" looks at its neighbours, and never across a
        # space) and joined with one space; offsets change only after two or more spaces.
        normalized = " ".join(lowered.split())
        stripped = len(text) - len(text.lstrip())
        norm_starts, raw_starts = [0], [stripped]
        for gap in SPACES.finditer(text, stripped):
            stripped += gap.end() - gap.start() - 1
            norm_starts.append(gap.end() - stripped)
            raw_starts.append(gap.end())
    else:  # a letter whose lower case is longer ('İ') stays as it is, in its word alone
        norm_starts, raw_starts, words = [], [], []
        offset = 0
        for match in WORD.finditer(text):
            word = _lower(match.group())
            norm_starts.append(offset)
            raw_starts.append(match.start())
            words.append(word)
            offset += len(word) + 1
        normalized = " ".join(words)
    stripped = original.lstrip()
    return TextIndex(normalized, norm_starts, raw_starts, RunIndex(normalized), len(original) - len(stripped),
                     len(original.rstrip()), folded if folded.pieces is not None else None,
                     as_normalize=len(lowered) == len(text))


def _lower(word: str) -> str:
    """Lower case that keeps the word's length, so offsets map back; a letter whose lower case is longer
    ('İ' -> 'i̇') stays as it is."""
    lowered = word.lower()
    if len(lowered) == len(word):
        return lowered
    return "".join(c.lower() if len(c.lower()) == 1 else c for c in word)
