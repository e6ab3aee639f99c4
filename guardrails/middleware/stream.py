"""Incremental checking of a streamed response: decide, event by event, when the accumulated chunks are
re-checked, so a blocked reasoning or tool-call chunk is caught before it is forwarded.

* a tool call whose name just arrived is always checked (one check per call);
* reasoning and argument fragments are checked at bounded frequency: at most once per `interval_s`, plus
  once when their block ends if fragments arrived since the last check;
* the stream's success marker (`[DONE]`, `message_stop`, `response.completed`, ...) waits for the final,
  complete output-phase check; a stream without one gets that check when the upstream body ends.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import orjson

from guardrails.contract import CheckResponse
from guardrails.middleware.apis import Api, EventKind
from guardrails.middleware.sse import SSEEvent

CheckChunks = Callable[[list[bytes]], Awaitable[CheckResponse]]


class StreamChecker:
    def __init__(self, api: Api, check: CheckChunks, *, incremental: bool = True, interval_s: float = 0.2) -> None:
        self.api = api
        self._check = check
        self.incremental = incremental
        self.interval_s = interval_s
        self.chunks: list[bytes] = []  # each event's JSON data, in order: the check body's `response`
        self.checks = 0
        self.last: CheckResponse | None = None
        self._unchecked = 0  # events since the last check
        self._pending = 0  # reasoning/argument fragments since the last check
        self._last_check = 0.0

    async def admit(self, event: SSEEvent) -> CheckResponse | None:
        """Account for one event; returns the verdict when this event triggered a check."""
        kind = self._record(event)
        if self._due(kind):
            return await self.run_check()
        return None

    async def finish(self) -> CheckResponse | None:
        """The upstream body ended: check what the last check has not seen."""
        return await self.run_check() if self._unchecked else None

    async def run_check(self) -> CheckResponse:
        self.last = await self._check(self.chunks)
        self.checks += 1
        self._unchecked = self._pending = 0
        self._last_check = time.monotonic()
        return self.last

    def _record(self, event: SSEEvent) -> EventKind:
        data = event.data
        if data == b"[DONE]":
            return EventKind.TERMINAL
        if not data:
            return EventKind.OTHER  # comments, keep-alives
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            return EventKind.OTHER
        self.chunks.append(data)
        self._unchecked += 1
        kind = self.api.classify(event.name, parsed)
        if kind == EventKind.PROGRESS:
            self._pending += 1
        return kind

    def _due(self, kind: EventKind) -> bool:
        if kind == EventKind.TERMINAL:
            return self._unchecked > 0 or self.checks == 0
        if not self.incremental:
            return False
        if kind == EventKind.TOOL_START:
            return True
        if kind == EventKind.BOUNDARY:
            return self._pending > 0
        if kind == EventKind.PROGRESS:
            return time.monotonic() - self._last_check >= self.interval_s
        return False


__all__ = ["StreamChecker"]
