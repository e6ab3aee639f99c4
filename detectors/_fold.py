"""Offset-preserving Unicode folding shared by the text detectors (content, prompt_injection, jailbreak,
unsafe_reasoning, secret).

A detector scans a folded view of a segment and reports spans in the original text, so a word hidden with
Unicode tricks still matches and its finding still covers the exact original characters:

* NFKC: fullwidth `Ｉｇｎｏｒｅ`, mathematical bold `𝐈𝐠𝐧𝐨𝐫𝐞`, ligatures and compatibility forms read as plain letters;
  a base character and its combining marks are folded together, so decomposed accents compose;
* invisible characters are dropped, so `Ig<U+200B>nore` reads `Ignore`: format characters (Unicode category Cf:
  zero-width space and joiners, soft hyphen, word joiner, BOM, bidi controls, tag characters) and the other
  default-ignorable marks that can sit inside a word (variation selectors, the combining grapheme joiner);
* confusables (`CONFUSABLES`): Cyrillic and Greek letters drawn like Latin ones are read as those letters, but
  only inside a word that then reads as Latin throughout (`Іgnore` with a Cyrillic `І`; `ехес`, all Cyrillic).
  A word holding any other letter of its script is left alone, so Russian or Greek prose stays what it is;
* casefold, for comparisons (content's terms); pattern detectors keep case, since some of their rules need it;
* in a tool call's raw JSON arguments, `\\uXXXX` escapes read as the character they encode (an escaped
  evasion; an escaped surrogate pair is one character, a lone surrogate U+FFFD); the other escapes (`\\n`,
  `\\"`) stay as they are, or are blanked with spaces as `guardrails.textview.scan_view` blanks them, for the
  detectors that read values (secret, content);
* a tool result or document that is a JSON document (an API's answer, written with non-ASCII escaped) reads the
  same way, except that without blanking its `\\n`, `\\"`... read as the characters they encode (a space, then
  the character: offsets unchanged), so a line or a quote still starts a sentence.

Other readings of a folded text (detectors/_readings.py: encoded runs decoded, markup left out) are built with
`rewritten` and mapped back to the original with `compose`.

Each folded character keeps the original span it came from. ASCII text (without `\\u` escapes) costs one
`isascii()` and maps offsets to themselves; other text is scanned in C for the few characters that fold: those
that fold to one other character (fullwidth letters) are read in C too, and only the rest are folded one by one.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import unicodedata
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache, lru_cache

from guardrails.exchange import Segment, SegmentKind
from guardrails.findings import Hit
from guardrails.textview import JSON_ESCAPE, blank_json_escapes

# Letters of other scripts that render like a Latin letter in common fonts (a subset of Unicode's
# confusables.txt, UTS #39), and Latin small capitals: the ones used to slip English words past filters.
CONFUSABLES: dict[str, str] = {
    # Cyrillic
    "а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "у": "y", "х": "x", "і": "i", "ј": "j", "ѕ": "s",
    "һ": "h", "ԁ": "d", "ԛ": "q", "ԝ": "w", "ӏ": "l", "ү": "y",
    "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P", "С": "C", "Т": "T",
    "У": "Y", "Х": "X", "І": "I", "Ј": "J", "Ѕ": "S", "Ԛ": "Q", "Ԝ": "W", "Ӏ": "I", "Ү": "Y",
    # Greek
    "α": "a", "γ": "y", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "υ": "u", "χ": "x", "ϲ": "c", "ϳ": "j",
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N", "Ο": "O",
    "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
    # Armenian
    "օ": "o", "ս": "u", "հ": "h", "ո": "n", "ց": "g", "զ": "q", "Օ": "O", "Ս": "U", "Տ": "S",
    # Latin small capitals (IPA and phonetic blocks; NFKC leaves them): what "small caps" text generators emit
    "ᴀ": "a", "ʙ": "b", "ᴄ": "c", "ᴅ": "d", "ᴇ": "e", "ꜰ": "f", "ɢ": "g", "ʜ": "h", "ɪ": "i", "ᴊ": "j", "ᴋ": "k",
    "ʟ": "l", "ᴍ": "m", "ɴ": "n", "ᴏ": "o", "ᴘ": "p", "ʀ": "r", "ꜱ": "s", "ᴛ": "t", "ᴜ": "u", "ᴠ": "v", "ᴡ": "w",
    "ʏ": "y", "ᴢ": "z",
}
_TO_LATIN = str.maketrans(CONFUSABLES)
# Invisible marks that are not format characters (category Mn): combining grapheme joiner, Khmer inherent vowels,
# Mongolian free variation selectors, variation selectors.
_IGNORABLE_MARKS = frozenset(map(chr, (0x034F, 0x17B4, 0x17B5, *range(0x180B, 0x1810), *range(0xFE00, 0xFE10),
                                        *range(0xE0100, 0xE01F0))))
_LATIN = r"0-9A-Za-z_\u00C0-\u00D6\u00D8-\u00F6\u00F8-\u024F"
# A whole word of Latin letters and confusables holding at least one confusable. Possessive quantifiers: a
# word that fails (it holds a Cyrillic "ч") is given up at once, never backtracked into.
_CONFUSABLE_WORD = re.compile(rf"(?<!\w)(?:[{_LATIN}]*+[{''.join(CONFUSABLES)}])++[{_LATIN}]*+(?!\w)")
_HAS_CONFUSABLE = re.compile(f"[{''.join(CONFUSABLES)}]")
# A high and a low surrogate escaped one after the other: one character outside the BMP, read as one unit (its
# offsets the pair's whole span), never as two lone surrogates.
_ESCAPED_PAIR = r"\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}"
QUOTE_CHARS = 200  # how much of a match a finding's evidence quotes


# A run of folded text and the original span it came from: (where it starts in the folded text, original start,
# original end, one to one). One to one: text kept as it was, whose k-th character is original character start + k.
# (Plain tuples: a text may have thousands of pieces, and a dataclass costs a microsecond each to build.)
Piece = tuple[int, int, int, bool]


@dataclass(frozen=True, slots=True)
class FoldedText:
    """`text` folded, with the pieces that map it back to the original (None: offsets are unchanged).

    A character of a piece that is not one to one (a folded unit: "ß" -> "ss", "ｉ" -> "i", "e" + U+0301 -> "é")
    maps to the unit's whole original span, so a match never splits a unit."""

    text: str
    pieces: tuple[Piece, ...] | None = None
    _ats: tuple[int, ...] = ()

    def original_span(self, start: int, end: int) -> tuple[int, int]:
        """The original characters a folded span came from, invisible characters inside it included."""
        pieces = self.pieces
        if pieces is None:
            return start, end
        if start >= end:  # an empty span is a position: before the character there, or after the last one
            at = self._char(pieces, start)[0] if start < len(self.text) else (pieces[-1][2] if pieces else 0)
            return at, at
        return self._char(pieces, start)[0], self._char(pieces, end - 1)[1]

    def place(self, hit: Hit, original: str) -> Hit:
        """`hit`, found in the folded text, with its span moved onto `original`, the text that was folded.

        Evidence `matched` that quotes the folded span quotes the original characters instead (what a reviewer
        finds in the payload, as the span says); the folded reading is kept as `folded` where it differs."""
        if hit.start is None or hit.end is None:
            return hit
        start, end = self.original_span(hit.start, hit.end)
        matched = hit.evidence.get("matched")
        if matched and matched == self.text[hit.start:hit.end][:QUOTE_CHARS]:  # else not a quote: a decoding, a count
            quoted = original[start:end][:QUOTE_CHARS]
            if quoted != matched:
                evidence = {**hit.evidence, "matched": quoted, "folded": matched}
                return dataclasses.replace(hit, start=start, end=end, evidence=evidence)
        return hit if self.pieces is None else dataclasses.replace(hit, start=start, end=end)

    def _char(self, pieces: tuple[Piece, ...], k: int) -> tuple[int, int]:
        """The original span of the k-th folded character."""
        at, start, end, one_to_one = pieces[bisect_right(self._ats, k) - 1]
        if one_to_one:
            return start + k - at, start + k - at + 1
        return start, end


def fold(text: str) -> str:
    """The comparison form of a term or a text: NFKC, confusables, casefold, invisible characters removed."""
    return fold_with_offsets(text).text


# Tool results and documents are often an API's JSON answer, its non-ASCII written as `\\uXXXX` escapes by
# default (Python's json.dumps, most encoders): a zero-width space or fullwidth letters hide there as escapes.
_DATA_KINDS = frozenset({SegmentKind.TOOL_RESULT, SegmentKind.DOCUMENT})
_JSON_OPENERS = frozenset('{["')
_SIMPLE_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": " ", "f": " ", '"': '"', "\\": "\\", "/": "/"}


def folded_view(segment: Segment, *, casefold: bool = False, blank_escapes: bool = False) -> FoldedText:
    """What a detector scans: the segment's text folded (case kept unless `casefold`).

    A tool call's text is raw JSON: its `\\uXXXX` escapes read as the characters they encode; with
    `blank_escapes`, its other escapes are blanked as `scan_view` blanks them (for detectors that read values:
    secret, content), else they stay as they are (rules written for raw text: prompt_injection, jailbreak).
    A tool result or document that is a JSON document reads the same, but its other escapes, unless blanked,
    read as a space and the character they encode (`\\nIgnore` starts a line, as the model reads it)."""
    text = segment.text
    if segment.kind is SegmentKind.TOOL_CALL:
        text = blank_json_escapes(text, keep_unicode=True) if blank_escapes else text
    elif segment.kind in _DATA_KINDS and "\\" in text and text.lstrip()[:1] in _JSON_OPENERS:
        text = blank_json_escapes(text, keep_unicode=True) if blank_escapes else _spaced_escapes(text)
    else:
        return fold_with_offsets(text, casefold=casefold)
    return fold_with_offsets(text, casefold=casefold, json_escapes=True)


def _spaced_escapes(text: str) -> str:
    """`text` (JSON) with each two-character escape (`\\n`, `\\"`) read as a space and the character it encodes:
    the same length, so offsets are unchanged; `\\uXXXX` escapes are kept for folding to read."""
    return JSON_ESCAPE.sub(_spaced_escape, text)


def _spaced_escape(match: re.Match[str]) -> str:
    escape = match.group()
    decoded = _SIMPLE_ESCAPES.get(escape[1]) if len(escape) == 2 else None
    return escape if decoded is None else " " + decoded


def rewritten(text: str, replacements: Iterable[tuple[int, int, str]]) -> FoldedText:
    """`text` with each (start, end, new) span, in order and not overlapping, replaced by `new` (deleted when
    empty), mapped back to `text`: a character of `new` maps to the whole span it replaced."""
    pieces: list[Piece] = []
    out: list[str] = []
    size = done = 0
    for start, end, new in replacements:
        if done < start:
            pieces.append((size, done, start, True))
            out.append(text[done:start])
            size += start - done
        if new:
            pieces.append((size, start, end, False))
            out.append(new)
            size += len(new)
        done = end
    if not done:
        return FoldedText(text)
    if done < len(text):
        pieces.append((size, done, len(text), True))
        out.append(text[done:])
    return FoldedText("".join(out), tuple(pieces), tuple(p[0] for p in pieces))


def compose(outer: FoldedText, inner: FoldedText) -> FoldedText:
    """`outer`, a reading of `inner.text`, mapped straight back to the text `inner` was read from."""
    if inner.pieces is None:
        return outer
    if outer.pieces is None:  # `outer` reads `inner.text` as it is
        return dataclasses.replace(inner, text=outer.text)
    pieces: list[Piece] = []
    for at, start, end, one_to_one in outer.pieces:
        if not one_to_one:
            pieces.append((at, *inner.original_span(start, end), False))
            continue
        k = bisect_right(inner._ats, start) - 1  # the inner pieces this run of `inner.text` crosses
        while start < end:
            inner_at, inner_start, inner_end, inner_one_to_one = inner.pieces[k]
            stop = min(end, inner.pieces[k + 1][0] if k + 1 < len(inner.pieces) else end)
            if inner_one_to_one:
                pieces.append((at, inner_start + start - inner_at, inner_start + stop - inner_at, True))
            else:
                pieces.append((at, inner_start, inner_end, False))
            at += stop - start
            start = stop
            k += 1
    return FoldedText(outer.text, tuple(pieces), tuple(p[0] for p in pieces))


def fold_with_offsets(text: str, *, casefold: bool = True, json_escapes: bool = False) -> FoldedText:
    """Fold `text` keeping the map back to it. With `json_escapes` (raw JSON), a `\\uXXXX` escape folds as the
    character it encodes; the other escapes are kept as they are."""
    if text.isascii() and not (json_escapes and "\\u" in text):  # the common case: nothing to fold
        return FoldedText(text.lower() if casefold else text)
    folded = _normalized(text, casefold, json_escapes and "\\" in text)
    if _HAS_CONFUSABLE.search(folded.text):  # one character for one: the pieces still hold
        folded = dataclasses.replace(folded, text=_CONFUSABLE_WORD.sub(_to_latin, folded.text))
    if casefold:  # after the confusables, so Cyrillic "В" reads "b", not "в"; units that grow were done already
        folded = dataclasses.replace(folded, text=folded.text.casefold())
    return folded


def _normalized(text: str, casefold: bool, json_escapes: bool) -> FoldedText:
    """Each unit folded (NFKC; casefold where it changes the length; JSON escapes read), invisible ones dropped."""
    units = _unit_pattern(casefold, json_escapes)
    # A character of the BMP that folds to one other character (fullwidth letters, most compatibility forms) is no
    # unit: it is read in place, in C, with the text around it (a unit at a time, in Python, a megabyte of fullwidth
    # text took seconds): in the whole text at once (`read`), or in raw JSON between units only, so the escapes are
    # those written (a fullwidth `＼` is no backslash). A unit is folded from the original characters: a base and its
    # combining marks compose as they are written.
    table = _one_for_one(casefold)
    first = _in_place(casefold).search(text)
    per_gap = json_escapes and first is not None
    read = text if json_escapes or first is None else text[: first.start()] + text[first.start() :].translate(table)
    pieces: list[Piece] = []
    out: list[str] = []
    size = done = 0
    n = len(text)
    for unit in units.finditer(read):
        i, j = unit.span()
        if i < done:  # a combining mark already folded with its base
            continue
        escape = json_escapes and text[i] == "\\"
        if not escape:  # a base character and its combining marks fold together, so NFKC can compose them
            if i > done and unicodedata.combining(text[i]):
                i -= 1
            while j < n and unicodedata.combining(text[j]):
                j += 1
        if done < i:  # the text since the last unit folds character for character
            pieces.append((size, done, i, True))
            out.append(read[done:i].translate(table) if per_gap else read[done:i])
            size += i - done
        if escape:
            folded = _folded_escape(text[i:j], casefold)
        else:  # a base with hundreds of combining marks is one unit: too long to keep (the text is the client's)
            folded = _folded(text[i:j], casefold) if j - i <= CACHED_UNIT else _fold_unit(text[i:j], casefold)
        if folded:  # an invisible character folds to nothing and needs no piece
            pieces.append((size, i, j, False))
            out.append(folded)
            size += len(folded)
        done = j
    if not done:
        return FoldedText(read.translate(table) if per_gap else read)
    if done < n:
        pieces.append((size, done, n, True))
        out.append(read[done:].translate(table) if per_gap else read[done:])
    return FoldedText("".join(out), tuple(pieces), tuple(p[0] for p in pieces))


@cache
def _one_for_one(casefold: bool) -> dict[int, str]:
    """The characters of the BMP that `_folded` turns into one character that needs no more folding, and that
    character. Not combining marks or invisible ones: a unit of one such character folds the same alone or in the
    text. (The BMP only: a class with characters outside it is matched range by range, ten times slower.)"""
    table: dict[int, str] = {}
    for code in _bmp_units(casefold):
        char = chr(code)
        if unicodedata.combining(char) or _invisible(char):
            continue
        folded = _fold_unit(char, casefold)
        if folded != char and len(folded) == 1 and not unicodedata.combining(folded) and not _needs_folding(
                folded, casefold):
            table[code] = folded
    return table


@cache
def _in_place(casefold: bool) -> re.Pattern[str]:
    """The characters `_one_for_one` reads in place (a text without any is not translated)."""
    return re.compile(f"[{_char_ranges(sorted(_one_for_one(casefold)))}]")


# The same few characters come back (fullwidth punctuation, zero-width spaces): units of at most CACHED_UNIT
# characters are kept, each entry under ~1 KB (NFKC grows a character 18-fold at most), 4 MiB in all.
CACHED_UNIT = 32


@lru_cache(maxsize=4096)
def _folded(unit: str, casefold: bool) -> str:
    return _fold_unit(unit, casefold)


def _fold_unit(unit: str, casefold: bool) -> str:
    """NFKC (and casefold), invisible format characters dropped."""
    unit = unicodedata.normalize("NFKC", unit)
    return "".join(c for c in (unit.casefold() if casefold else unit) if not _invisible(c))


def _invisible(char: str) -> bool:
    return unicodedata.category(char) == "Cf" or char in _IGNORABLE_MARKS


def _folded_escape(escape: str, casefold: bool) -> str:
    if escape[1] != "u" or len(escape) == 2:
        # `\n`, `\"`, a `\u` without four hex digits: kept as they are (see folded_view); casefolded now if at all, as
        # the text is casefolded last (`\ß` grew to `\ss` there, and every span after it was off by one)
        return escape.casefold() if casefold else escape
    return _folded(_decode_escape(escape), casefold)


def _decode_escape(escape: str) -> str:
    """The character a `\\uXXXX` escape, or an escaped surrogate pair (`\\ud83d\\ude00`), encodes. A lone
    surrogate reads as U+FFFD: it is no character, and no JSON encoder writes it (a finding quoting it was a 500)."""
    units = [int(escape[k + 2:k + 6], 16) for k in range(0, len(escape), 6)]
    if len(units) == 2:
        return chr(0x10000 + ((units[0] - 0xD800) << 10) + (units[1] - 0xDC00))
    return "\ufffd" if 0xD800 <= units[0] <= 0xDFFF else chr(units[0])


@cache
def _unit_pattern(casefold: bool, json_escapes: bool) -> re.Pattern[str]:
    """Where text needs folding one unit at a time: a character that NFKC changes, a combining mark, an invisible
    character, one whose casefold is longer (with `casefold`), any character outside the BMP (rare, and checked
    one by one); with `json_escapes`, also an escape. Not those folded in place (`_one_for_one`): everything
    between two units folds character for character, and str.casefold() keeps its length."""
    unit = f"[{_units_in_bmp(casefold)}\\U00010000-\\U{sys.maxunicode:08X}]"
    return re.compile(f"{_ESCAPED_PAIR}|{JSON_ESCAPE.pattern}|{unit}" if json_escapes else unit, re.DOTALL)


@cache
def _bmp_units(casefold: bool) -> tuple[int, ...]:
    return tuple(c for c in range(0x80, 0x10000) if not 0xD800 <= c <= 0xDFFF and _needs_folding(chr(c), casefold))


def _units_in_bmp(casefold: bool) -> str:
    """The BMP's units, less those folded in place."""
    table = _one_for_one(casefold)
    return _char_ranges([c for c in _bmp_units(casefold) if c not in table])


def _needs_folding(char: str, casefold: bool) -> bool:
    return (_invisible(char) or unicodedata.combining(char) != 0 or unicodedata.normalize("NFKC", char) != char
            or (casefold and len(char.casefold()) != 1))


def _char_ranges(codepoints: list[int]) -> str:
    """A regex class body of sorted code points, as ranges: a class of single characters is slower to match."""
    ranges: list[list[int]] = []
    for c in codepoints:
        if ranges and ranges[-1][1] == c - 1:
            ranges[-1][1] = c
        else:
            ranges.append([c, c])
    return "".join(re.escape(chr(a)) + (f"-{re.escape(chr(b))}" if b > a else "") for a, b in ranges)


def warm_up() -> None:
    """Build the character classes now (in a detector's constructor), not on the first check that needs them."""
    for casefold in (False, True):
        _in_place(casefold)
        for json_escapes in (False, True):
            _unit_pattern(casefold, json_escapes)


def _to_latin(word: re.Match[str]) -> str:
    return word.group().translate(_TO_LATIN)
