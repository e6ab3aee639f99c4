"""Incremental Server-Sent Events framing that keeps each event's original bytes (forwarded verbatim).

Lines end with CRLF, LF or a lone CR (all three are SSE); an event ends at a blank line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Two line endings in a row: a line's end, then a blank line. A CR followed by LF is one ending, not two.
_BLANK_LINE = re.compile(rb"(?:\r\n|\r(?!\n)|\n)(?:\r\n|\r|\n)")
# The separators remembered for our own error event (a mixed one keeps the style seen before).
_STYLES = (b"\r\n\r\n", b"\n\n", b"\r\r")
_FIELDS = (b"data:", b"event:", b"id:", b"retry:", b":")  # `:` starts a comment
_BOM = b"\xef\xbb\xbf"


@dataclass(slots=True)
class SSEEvent:
    raw: bytes  # the event exactly as received, separator included
    name: str | None  # the `event:` field
    data: bytes  # the `data:` lines joined by "\n" (b"" when none)


class SSESplitter:
    """Feed byte chunks in, get complete events out; a partial event waits for the rest."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.separator = b"\n\n"  # the upstream's own blank-line style, reused for our error event

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        self._buffer += chunk
        events = []
        start = 0
        while True:
            match = _BLANK_LINE.search(self._buffer, start)
            if match is None:
                break
            end = match.end()
            sep = match.group()
            if end == len(self._buffer) and sep.endswith(b"\r") and sep != b"\r\r":
                break  # "\r\n\r" or "\n\r": the LF of a CRLF may still come
            if sep in _STYLES:
                self.separator = sep
            events.append(parse_event(bytes(self._buffer[start:end])))
            start = end
        del self._buffer[:start]
        return events

    def take_pending(self) -> bytes:
        """The bytes of an event not yet complete, handed back raw (the caller stops splitting)."""
        raw = bytes(self._buffer)
        self._buffer.clear()
        return raw

    def flush(self) -> SSEEvent | None:
        """What is left when the stream ends without a final blank line."""
        if not self._buffer:
            return None
        raw = bytes(self._buffer)
        self._buffer.clear()
        return parse_event(raw)


def parse_event(raw: bytes) -> SSEEvent:
    name: str | None = None
    data: list[bytes] = []
    for line in raw.splitlines():  # CRLF, LF and CR alike
        if line.startswith(b"data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(b" ") else value)
        elif line.startswith(b"event:"):
            name = line[6:].strip().decode("utf-8", "replace")
    return SSEEvent(raw, name, b"\n".join(data))


def looks_like_sse(head: bytes | bytearray, *, complete: bool) -> bool | None:
    """Whether a body starting with `head` is an SSE stream: its first line (after a BOM and blank lines) is a
    field or a comment. None while `head` is too short to tell and more is to come (`complete` False)."""
    if not complete and _BOM.startswith(head[:3]) and len(head) < 3:
        return None
    text = bytes(head[3:] if head.startswith(_BOM) else head).lstrip(b"\r\n")
    if text.startswith(_FIELDS):
        return True
    if not complete and any(field.startswith(text) for field in _FIELDS):
        return None
    return False


__all__ = ["SSEEvent", "SSESplitter", "looks_like_sse", "parse_event"]
