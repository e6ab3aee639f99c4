"""Incremental checking of a streamed response: decide, event by event, when the accumulated chunks are
re-checked, so a blocked reasoning or tool-call chunk is caught before it is forwarded.

* a tool call whose name just arrived is always checked (one check per call);
* reasoning and argument fragments are checked at bounded frequency: at most once per `interval_s`, plus
  once when their block ends if fragments arrived since the last check;
* the stream's success marker (`[DONE]`, `message_stop`, `response.completed`, ...) waits for the final,
  complete output-phase check; a stream without one gets that check when the upstream body ends.

A check of a partial stream sees unfinished tool calls: arguments that are not yet valid JSON, required
fields still missing, a URL cut short. So a mid-stream check stops the stream only on findings that more
data cannot undo (`STOP_MID_STREAM`: an undeclared tool name, a banned term, a secret...); any other block
waits for the final check, which still ends the stream before its success marker.

Only the final check is a real output-phase check for the service's accounting: mid-stream checks are sent
without the caller context, so budgets, block streaks and rate windows are spent once per call, not once
per re-check. A stream stopped mid-stream gets that final check on the chunks so far, when it stops.

A long stream's chunks are coalesced for its checks (`coalesce.py`): once they would make a check body over
`coalesce_over` bytes, consecutive chunks that only add text are sent as one, so the body grows with the text
(vLLM's one ~245-byte chunk per token would pass the service's 4 MiB limit near 17k tokens).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from guardrails.client import CLIENT_DETECTOR
from guardrails.contract import CheckResponse
from guardrails.middleware.apis import Api, EventKind
from guardrails.middleware.coalesce import UNPARSED as _UNPARSED
from guardrails.middleware.coalesce import Coalescer
from guardrails.middleware.payload import Payload, read_payload
from guardrails.middleware.sse import SSEEvent

CheckChunks = Callable[[list[bytes], bool], Awaitable[CheckResponse]]  # (chunks, final) -> verdict
# Below this a check body holds the chunks as received (cheap to build, pointers index the wire events); above it
# they are coalesced: re-checks stay small, and a stream fits the service's 4 MiB limit far longer.
COALESCE_OVER = 1024 * 1024
STOP_MID_STREAM = frozenset({
    "tool_undeclared", "content", "pii", "secret", "prompt_injection", "jailbreak", "unsafe_reasoning",
    "tool_call_leak", "custom", "budget",
})


class StreamChecker:
    def __init__(self, api: Api, check: CheckChunks, *, incremental: bool = True, interval_s: float = 0.2,
                 stop_categories: frozenset[str] = STOP_MID_STREAM, coalesce_over: int | None = None) -> None:
        self.api = api
        self.stop_categories = stop_categories
        self._check = check
        self.incremental = incremental
        self.interval_s = interval_s
        self.chunks: list[bytes] = []  # each event's JSON data, in order: the check body's `response`
        # Once the chunks hold more than this many bytes they go to the coalescer instead (None: never).
        self.coalesce_over = coalesce_over if api.coalescing is not None else None
        self._size = 0
        self._coalescer: Coalescer | None = None
        self.checks = 0
        self.final_done = False
        self.last: CheckResponse | None = None
        self._unchecked = 0  # events since the last check
        self._pending = 0  # reasoning/argument fragments since the last check
        self._last_check = 0.0

    async def admit(self, event: SSEEvent) -> CheckResponse | None:
        """Account for one event; returns the blocking verdict if the stream must stop before this event."""
        kind = self._record(event)
        if not self._due(kind):
            return None
        result = await self.run_check(final=kind == EventKind.TERMINAL)
        if kind == EventKind.TERMINAL:
            return result if result.verdict == "block" else None
        if not self._stops_mid_stream(result):
            return None
        if _unchecked(result):
            return result  # fail closed: no check could be made, and a re-check would only wait out the timeout
        # The stream ends here, so this is its final verdict: re-check as the accounted one (with the caller
        # context), or a stopped stream's block would never reach budgets, block streaks or the audit's agent.
        final = await self.run_check(final=True)
        return final if final.verdict == "block" else result

    async def finish(self) -> CheckResponse | None:
        """The upstream body ended: the final check, unless it ran; returns a blocking verdict."""
        if self._unchecked or not self.final_done:
            await self.run_check(final=True)
        return self.last if self.last is not None and self.last.verdict == "block" else None

    def _stops_mid_stream(self, result: CheckResponse) -> bool:
        # A fail-closed block made by the client (service unreachable, body too large) is no partial-data
        # finding: more chunks cannot undo it, and going on would forward them unchecked.
        return result.verdict == "block" and (_unchecked(result) or any(
            f.action == "block" and str(f.category) in self.stop_categories for f in result.findings))

    async def run_check(self, final: bool = False) -> CheckResponse:
        final = final and not self.final_done  # one accounted check per stream
        self.last = await self._check(self.response_chunks(), final)
        self.final_done = self.final_done or final
        self.checks += 1
        self._unchecked = self._pending = 0
        self._last_check = time.monotonic()
        return self.last

    def response_chunks(self) -> list[bytes]:
        """What a check sends as `response`: the chunks as received, or coalesced once they grew large."""
        return self._coalescer.chunks() if self._coalescer is not None else self.chunks

    def release(self) -> None:
        """The stream is no longer checked: drop what was kept for its checks."""
        self.chunks, self._coalescer = [], None
        self.coalesce_over = None

    def _keep(self, chunk: Payload, data: bytes) -> None:
        if self._coalescer is not None:
            # Its parsed value spares a second parse, unless it is a strict copy of lenient JSON (NaN, lone surrogates).
            self._coalescer.add(chunk.check_bytes, chunk.value if chunk.check_bytes is data else _UNPARSED)
            return
        self.chunks.append(chunk.check_bytes)
        self._size += len(chunk.check_bytes) + 1
        if self.coalesce_over is not None and self._size > self.coalesce_over:
            assert self.api.coalescing is not None
            self._coalescer = Coalescer(self.api.coalescing)
            for kept in self.chunks:  # once: from here on each chunk is merged as it arrives
                self._coalescer.add(kept)
            self.chunks = []

    def _record(self, event: SSEEvent) -> EventKind:
        data = event.data
        if data == b"[DONE]":
            return EventKind.TERMINAL
        if not data:
            return EventKind.OTHER  # comments, keep-alives
        chunk = read_payload(data)
        if chunk is None:
            return EventKind.OTHER
        kind = self.api.classify(event.name, chunk.value)
        self._keep(chunk, data)  # after classify: the coalescer may take the chunk's value as its own
        self._unchecked += 1
        if kind == EventKind.PROGRESS:
            self._pending += 1
        return kind

    def _due(self, kind: EventKind) -> bool:
        if kind == EventKind.TERMINAL:
            # Also when the last chunk was just re-checked mid-stream: that check carried no context, and a
            # block it did not stop on (tool_schema) must end the stream here, before `[DONE]` goes out.
            return self._unchecked > 0 or not self.final_done
        if not self.incremental:
            return False
        if kind in (EventKind.TOOL_START, EventKind.COPY):
            return True
        if kind == EventKind.BOUNDARY:
            return self._pending > 0
        if kind == EventKind.PROGRESS:
            return time.monotonic() - self._last_check >= self.interval_s
        return False


def _unchecked(result: CheckResponse) -> bool:
    """The client's own fail_mode verdict: the service gave none."""
    return any(str(f.category) == "detector_error" and f.detector == CLIENT_DETECTOR for f in result.findings)


__all__ = ["StreamChecker"]
