"""Incremental Server-Sent Events framing that keeps each event's original bytes (forwarded verbatim)."""

from __future__ import annotations

from dataclasses import dataclass

_SEPARATORS = (b"\r\n\r\n", b"\n\n")


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
        while True:
            end, sep = self._next_separator()
            if end < 0:
                return events
            self.separator = sep
            raw = bytes(self._buffer[: end + len(sep)])
            del self._buffer[: end + len(sep)]
            events.append(parse_event(raw))

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

    def _next_separator(self) -> tuple[int, bytes]:
        best, best_sep = -1, b""
        for sep in _SEPARATORS:
            at = self._buffer.find(sep)
            if at >= 0 and (best < 0 or at < best):
                best, best_sep = at, sep
        return best, best_sep


def parse_event(raw: bytes) -> SSEEvent:
    name: str | None = None
    data: list[bytes] = []
    for line in raw.splitlines():
        if line.startswith(b"data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(b" ") else value)
        elif line.startswith(b"event:"):
            name = line[6:].strip().decode("utf-8", "replace")
    return SSEEvent(raw, name, b"\n".join(data))


__all__ = ["SSEEvent", "SSESplitter", "parse_event"]
