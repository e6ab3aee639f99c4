"""Where the `pii` phone recognizer runs phonenumbers: windows around digit runs, within a per-segment budget.

phonenumbers costs a full matcher pass per region over whatever it is given (~15 µs per digit per region),
so it only reads the windows around digit runs that could be a phone number, cut where none of its
candidates can cross, so it decides exactly as on the whole text; and never more than a fixed number of
digits per segment, so a long digit-heavy answer cannot stall the service.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

MIN_PHONE_DIGITS = 7
# Digits × regions handed to phonenumbers per segment. Its cost follows the digits it reads (~15 µs per
# digit per region, prose or digit soup alike), so this is ~0.25 s at worst; with the default eight regions
# it covers ~2,000 digits of national-format numbers (~200 ten-digit phone numbers) in one segment.
PHONE_SCAN_BUDGET = 16_000
# Context phonenumbers reads around a candidate: the character before it, an extension ("ext. 1234"),
# a time-stamp suffix. Window edges then move out to a plain word (see _cut_before).
WINDOW_MARGIN = 32

# A maximal run of digits joined by short separators; ISO dates inside it do not count towards a phone number.
_DIGIT_RUN = re.compile(r"\d(?:[\s().\-/]{1,3}\d|\d)*")
_ISO_DATE = re.compile(r"\d{4}-\d\d-\d\d")
_SPACE = re.compile(r"\s")
# A whole whitespace-delimited word of letters. phonenumbers' candidates hold digits, punctuation and
# whitespace, and letters only as an extension keyword ("ext", "x", "int", "anexo", "доб"), so none can
# run through such a word unless it is one of those.
_PLAIN_WORD = re.compile(r"(?<!\S)[^\W\d_]+(?!\S)")
_EXTENSION_WORD = re.compile(r"[eｅ]?[xｘ][tｔ].*|[xｘ]|[iｉ][nｎ][tｔ]|anexo|доб", re.IGNORECASE)
_NOT_DIGIT = re.compile(r"\D+")


def digit_count(text: str) -> int:
    return sum(c.isdigit() for c in text)


def _run_digits(run: str) -> int:
    """Digits of a digit run outside ISO dates (in C: a run can be the whole segment)."""
    return len(_NOT_DIGIT.sub("", _ISO_DATE.sub("", run)))


def phone_candidates(text: str) -> Iterator[re.Match[str]]:
    return (m for m in _DIGIT_RUN.finditer(text) if _run_digits(m.group()) >= MIN_PHONE_DIGITS)


def is_national(text: str, match: re.Match[str]) -> bool:
    """A candidate other than one +CC number (E.164: at most 15 digits), which reads the same in every region.

    "00CC" is national here: 00 is the international prefix of some regions only (the US dials 011), and a
    run starting "00" may be "00" joined to a national number by a line break. A +CC run of more digits holds
    a second number, national perhaps."""
    return text[match.start() - 1 : match.start()] != "+" or _run_digits(match.group()) > 15


@dataclass(frozen=True, slots=True)
class Window:
    start: int
    end: int
    national: bool  # holds a national-format candidate: every region must parse it


@dataclass(frozen=True, slots=True)
class PhoneScan:
    windows: tuple[Window, ...]
    unchecked_from: int | None  # where the budget ran out: phone candidates from here on were not parsed


def _plain_words(text: str, lo: int) -> Iterator[re.Match[str]]:
    """Plain words from `lo` on; one that `lo` cuts is not a word (the lookbehind sees before `lo`)."""
    return (w for w in _PLAIN_WORD.finditer(text, lo) if not _EXTENSION_WORD.fullmatch(w.group()))


def _cut_before(text: str, pos: int, floor: int) -> int:
    """The window start for a candidate: just after the last plain word before `pos`, else `floor`.

    No phonenumbers candidate runs through a plain word, so its matches after the cut are those it finds
    reading the whole text, at the same offsets. `floor` is the previous window's end (itself a cut)."""
    cut = floor
    for word in _plain_words(text, floor):  # not endpos=pos: that would cut the last word short
        if word.end() > pos:
            break
        cut = word.end()
    return cut


def _cut_after(text: str, pos: int) -> int:
    """The window end for a candidate: the start of the first plain word from `pos`, else the text end."""
    word = next(_plain_words(text, pos), None)
    return word.start() if word else len(text)


def _merged_windows(text: str) -> Iterator[Window]:
    """Windows in text order, each yielded once no later candidate can extend it (lazy: callers stop early).

    Each cut search starts where the last window ended, so finding all windows stays linear in the text."""
    pending: Window | None = None
    for m in phone_candidates(text):
        national = is_national(text, m)
        if pending and m.start() - WINDOW_MARGIN <= pending.end:
            end = pending.end if m.end() + WINDOW_MARGIN <= pending.end else _cut_after(text, m.end() + WINDOW_MARGIN)
            pending = Window(pending.start, end, pending.national or national)
            continue
        floor = pending.end if pending else 0
        if pending:
            yield pending
        start = _cut_before(text, m.start() - WINDOW_MARGIN, floor)
        pending = Window(start, _cut_after(text, min(len(text), m.end() + WINDOW_MARGIN)), national)
    if pending:
        yield pending


def phone_windows(text: str, regions: int, budget: int = PHONE_SCAN_BUDGET) -> PhoneScan:
    """The windows of `text` phonenumbers should read, in order, cut off where `budget` is spent.

    A window costs its digits once per region it is parsed in (all of them when it holds a national-format
    number, else the first). Deterministic, so the recognizer and the detector's cap note agree.
    """
    kept: list[Window] = []
    for w in _merged_windows(text):
        per_digit = regions if w.national else 1
        room = budget // per_digit
        digits = len(_NOT_DIGIT.sub("", text[w.start : w.end]))
        if digits > room:
            end = _snap_back(text, w.start, _after_digits(text, w.start, room)) if room else w.start
            if end > w.start:
                kept.append(Window(w.start, end, w.national))
            return PhoneScan(tuple(kept), end)
        kept.append(w)
        budget -= digits * per_digit
    return PhoneScan(tuple(kept), None)


def _after_digits(text: str, start: int, count: int) -> int:
    """The position just after the `count`-th digit from `start`."""
    m = re.compile(rf"(?:\D*\d){{{count}}}").match(text, start)
    return m.end() if m else len(text)


def _snap_back(text: str, start: int, end: int) -> int:
    """Cut a window that outruns the budget at whitespace when one is near, so the last number stays whole."""
    last = None
    for last in _SPACE.finditer(text, max(start, end - 64), end):  # noqa: B007 - only the last one is wanted
        pass
    return last.start() if last and last.start() > start else end
