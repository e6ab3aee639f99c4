"""Find marker-delimited blocks in raw text, tolerating a missing start or end marker."""

from __future__ import annotations

import re
from functools import cache
from typing import NamedTuple


class Block(NamedTuple):  # a NamedTuple: cheap to build, one per block on every parse
    start: int  # where the markup starts (the open marker; the search origin when it is missing)
    body: int  # where the body starts
    body_end: int  # where the body ends: the close marker, the next open marker, or the end of text
    end: int  # where the markup ends (after the close marker when there is one)
    opened: bool  # the open marker is present
    closed: bool  # the close marker is present


def tagged_blocks(text: str, open_: str, close: str | None, *, stray_close: bool = True,
                  terminators: tuple[str, ...] = ()) -> list[Block]:
    """Blocks `open_ body close`. A block without its close ends at the next open marker, at one of
    `terminators`, or at the end of text. With `stray_close`, a close marker seen before any open marker
    yields a block whose body runs from the previous block's end (the model forgot the start token)."""
    blocks: list[Block] = []
    close_len = len(close) if close else 0
    # The next open and close markers at or after `i`; each is looked for again only once passed.
    o, c = text.find(open_), text.find(close) if close else -1
    i = 0
    while o >= 0 or c >= 0:
        if c >= 0 and (o < 0 or c < o):
            if stray_close:
                blocks.append(Block(i, i, c, c + close_len, False, True))
            i = c + close_len
            o = o if o < 0 or o >= i else text.find(open_, i)
            c = text.find(close, i) if close else -1
            continue
        body = o + len(open_)
        o = text.find(open_, body)
        if 0 <= c < body:
            c = text.find(close, body) if close else -1
        body_end = o if o >= 0 else len(text)
        if 0 <= c < body_end:
            body_end = c
        for terminator in terminators:
            t = text.find(terminator, body, body_end + len(terminator) - 1)  # one starting before body_end
            if t >= 0:
                body_end = t
        closed = body_end == c
        end = body_end + close_len if closed else body_end
        blocks.append(Block(body - len(open_), body, body_end, end, True, closed))
        i = end
        if 0 <= o < i:
            o = text.find(open_, i)
        if 0 <= c < i:
            c = text.find(close, i) if close else -1
    return blocks


_SPACE = re.compile(r"\s*")


def skip_space(text: str, i: int, end: int | None = None, also: str = "") -> int:
    """The first index from `i` (before `end`) that is neither whitespace nor one of the `also` characters."""
    if end is None:
        end = len(text)
    if i >= end or not (text[i].isspace() or text[i] in also):
        return i
    match = _skipper(also).match(text, i, end)
    return match.end() if match else i


@cache
def _skipper(also: str) -> re.Pattern[str]:
    return re.compile(r"[\s" + re.escape(also) + "]*") if also else _SPACE


def rskip_space(text: str, i: int) -> int:
    """The index after the last non-whitespace character before `i`."""
    return len(text[:i].rstrip()) if i > 0 and text[i - 1].isspace() else i
