"""Find marker-delimited blocks in raw text, tolerating a missing start or end marker."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Block:
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
    i, n = 0, len(text)
    while i < n:
        o = text.find(open_, i)
        c = text.find(close, i) if close else -1
        if c >= 0 and (o < 0 or c < o):
            if stray_close:
                blocks.append(Block(i, i, c, c + len(close or ""), opened=False, closed=True))
            i = c + len(close or "")
            continue
        if o < 0:
            break
        body = o + len(open_)
        ends = [x for x in (text.find(open_, body), text.find(close, body) if close else -1) if x >= 0]
        ends += [x for x in (text.find(t, body) for t in terminators) if x >= 0]
        body_end = min(ends) if ends else n
        closed = bool(close) and text.startswith(close or "", body_end)
        end = body_end + len(close or "") if closed else body_end
        blocks.append(Block(o, body, body_end, end, opened=True, closed=closed))
        i = max(end, body)
    return blocks


def skip_space(text: str, i: int, end: int | None = None) -> int:
    end = len(text) if end is None else end
    while i < end and text[i].isspace():
        i += 1
    return i
