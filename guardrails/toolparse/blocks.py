"""Find marker-delimited blocks in raw text, tolerating a missing start or end marker."""

from __future__ import annotations

import re
from functools import cache

# A marker-delimited block: (start, body, body_end, end, opened, closed) --
#   start: where the markup starts (the open marker; the search origin when it is missing)
#   body, body_end: where the body starts and ends (at the close marker, the next open marker or the end of text)
#   end: where the markup ends (after the close marker when there is one)
#   opened, closed: whether the open and the close markers are present.
# A plain tuple that parsers unpack: a NamedTuple costs four times as much to build, on every parse.
Block = tuple[int, int, int, int, bool, bool]


def tagged_blocks(text: str, open_: str, close: str | None, *, stray_close: bool = True,
                  terminators: tuple[str, ...] = (), limit: int | None = None) -> list[Block]:
    """Blocks `open_ body close`. A block without its close ends at the next open marker, at one of
    `terminators`, or at the end of text. With `stray_close`, a close marker seen before any open marker
    yields a block whose body runs from the previous block's end (the model forgot the start token). With
    `limit`, the first `limit` blocks only (a parser passes what is left of its `Budget` plus one: where it stops)."""
    blocks: list[Block] = []
    if limit is not None and limit <= 0:
        return blocks
    open_len = len(open_)
    close_len = len(close) if close else 0
    find = text.find
    # The next open and close markers at or after `i`; each is looked for again only once passed. (Without a
    # close marker `c` stays -1, so it is never looked for again.)
    o, c = find(open_), find(close) if close else -1
    i = 0
    while o >= 0 or c >= 0:
        if c >= 0 and (o < 0 or c < o):
            if stray_close:
                blocks.append((i, i, c, c + close_len, False, True))
            i = c + close_len
            if 0 <= o < i:
                o = find(open_, i)
            c = find(close, i)  # type: ignore[arg-type]
            continue
        body = o + open_len
        o = find(open_, body)
        if 0 <= c < body:
            c = find(close, body)  # type: ignore[arg-type]
        body_end = o if o >= 0 else len(text)
        if 0 <= c < body_end:
            body_end = c
        if terminators:
            for terminator in terminators:
                t = find(terminator, body, body_end + len(terminator) - 1)  # one starting before body_end
                if t >= 0:
                    body_end = t
        if body_end == c:
            end = c + close_len
            blocks.append((body - open_len, body, c, end, True, True))
        else:
            end = body_end
            blocks.append((body - open_len, body, body_end, end, True, False))
        if limit is not None and len(blocks) >= limit:
            break
        i = end
        if 0 <= o < i:
            o = find(open_, i)
        if 0 <= c < i:
            c = find(close, i)  # type: ignore[arg-type]
    return blocks


class NextFind:
    """`text.find(sub, i)` for a run of searches from positions that mostly grow: a search is done again only
    when the last one's answer lies before `i` (or `i` before where it started). Searching afresh from every
    candidate scanned the rest of the text each time: quadratic when `sub` is rare."""

    __slots__ = ("at", "origin", "sub", "text")

    def __init__(self, text: str, sub: str) -> None:
        self.text, self.sub = text, sub
        self.origin, self.at = 0, text.find(sub)

    def __call__(self, i: int) -> int:
        if i < self.origin or 0 <= self.at < i:
            self.origin, self.at = i, self.text.find(self.sub, i)
        return self.at


_SPACE = re.compile(r"\s*")


def skip_space(text: str, i: int, end: int | None = None, also: str = "") -> int:
    """The first index from `i` (before `end`) that is neither whitespace nor one of the `also` characters."""
    if end is None:
        end = len(text)
    if i >= end:
        return i
    char = text[i]
    if not char.isspace() and char not in also:
        return i
    # (a `*` pattern always matches)
    return (_skipper(also) if also else _SPACE).match(text, i, end).end()  # type: ignore[union-attr]


@cache
def _skipper(also: str) -> re.Pattern[str]:
    return re.compile(r"[\s" + re.escape(also) + "]*") if also else _SPACE


def rskip_space(text: str, i: int) -> int:
    """The index after the last non-whitespace character before `i`."""
    while i > 0 and text[i - 1].isspace():  # (runs are short: cheaper than rstrip on a copy of text[:i])
        i -= 1
    return i
