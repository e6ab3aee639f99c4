"""`GuardrailsMiddleware`: ASGI middleware for a gateway in front of vLLM (FastAPI, Starlette, any ASGI app).

    app.add_middleware(GuardrailsMiddleware, url="http://guardrails:8000", fail_mode="closed")

For each call to a model API it recognises by path it checks the request before forwarding it (input phase)
and the response after (output phase). Allowed traffic passes byte for byte; a warn adds
`x-guardrails-verdict: warn` and `x-guardrails-check-id`; a block answers in the API's own error shape
(HTTP 400), or, once a stream has started, ends the stream with that API's SSE error event.

A check body over `max_check_bytes` (default: the service's own default limit) is never built: the service would
refuse it (413). The call is then decided as when the service cannot check (`fail_mode`); a request that large is
not even read for a check: it streams to the upstream as received. A compressed answer (`content-encoding`) cannot
be read either, and is decided the same way; a gzip or deflate request is decoded for its checks (the upstream gets
the bytes as sent), another coding is decided by `fail_mode` too.

An answer is read by what it is, not by its `content-type` alone: a body that is JSON is checked as JSON, one that
starts with SSE fields as a stream (CRLF, LF or CR line endings); a 2xx body that is neither is decided by
`fail_mode`, since the client may still read it.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import Any, Literal

import orjson

from guardrails.client import (
    CheckRejected,
    FailMode,
    GuardrailsClient,
    is_synthetic,
    is_unavailable,
    synthetic_verdict,
)
from guardrails.config import Settings
from guardrails.contract import CheckResponse
from guardrails.middleware.apis import Api, BlockNotice, detect_api
from guardrails.middleware.payload import read_payload
from guardrails.middleware.sse import SSEEvent, SSESplitter, looks_like_sse
from guardrails.middleware.stream import COALESCE_OVER, STOP_MID_STREAM, StreamChecker

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
VerdictHook = Callable[[CheckResponse, Mapping[str, Any]], Any]

BodyState = Literal["complete", "disconnected", "over_limit"]

VERDICT_HEADER = b"x-guardrails-verdict"
CHECK_ID_HEADER = b"x-guardrails-check-id"
_RESPONSE_KEY = b',"response":'
_PARTIAL_FIELD = b',"partial":true'  # how `_check_prefix` ends a mid-stream check's prefix
# Request headers copied into the check body's `context` (agent routing, budgets, audit).
DEFAULT_CONTEXT_HEADERS: Mapping[str, str] = {
    "x-agent-id": "agent_id", "x-session-id": "session_id", "x-tenant-id": "tenant", "x-user-id": "user",
}
# The service refuses a bigger check body (413; GUARDRAILS_MAX_BODY_BYTES): building one is only waste.
DEFAULT_MAX_CHECK_BYTES = Settings().max_body_bytes
TOO_LARGE = "check body too large for the guardrails service"
ENCODED = "response is content-encoded, and the middleware reads identity bodies only"
ENCODED_REQUEST = "request is content-encoded, and the middleware decodes gzip and deflate only"
UNREADABLE = "response is neither JSON nor an SSE stream"
_SNIFF_BYTES = 64 * 1024  # an answer still undecided after this many bytes (blank lines) is buffered as not SSE
_DECODABLE = {b"gzip": 16 + zlib.MAX_WBITS, b"x-gzip": 16 + zlib.MAX_WBITS, b"deflate": zlib.MAX_WBITS}
log = logging.getLogger("guardrails.middleware")


class GuardrailsMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        url: str = "http://127.0.0.1:8000",
        *,
        client: GuardrailsClient | None = None,
        api_key: str | None = None,
        timeout: float = 2.0,
        retries: int = 2,
        fail_mode: FailMode = "open",
        policy: str | None = None,
        check_input: bool = True,
        check_output: bool = True,
        incremental: bool = True,
        stream_check_interval_s: float = 0.2,
        stream_stop_categories: frozenset[str] = STOP_MID_STREAM,
        block_status: int = 400,
        unavailable_status: int = 503,
        context_headers: Mapping[str, str] = DEFAULT_CONTEXT_HEADERS,
        on_verdict: VerdictHook | None = None,
        max_check_bytes: int = DEFAULT_MAX_CHECK_BYTES,
    ) -> None:
        self.app = app
        self.client = client or GuardrailsClient(url, api_key=api_key, timeout=timeout, retries=retries,
                                                 fail_mode=fail_mode)
        self.policy = policy if policy is not None else self.client.policy  # a given client's policy holds
        self.check_input = check_input
        self.check_output = check_output
        self.incremental = incremental
        self.stream_check_interval_s = stream_check_interval_s
        self.stream_stop_categories = frozenset(stream_stop_categories)
        self.block_status = block_status
        self.unavailable_status = unavailable_status
        self.context_headers = {k.lower().encode(): v for k, v in context_headers.items()}
        self.on_verdict = on_verdict
        self.max_check_bytes = max_check_bytes
        self.partial_refused = False  # the service refused `partial` once (older than us): logged once

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        api = detect_api(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if api is None:
            await self.app(scope, receive, send)
            return
        declared = _declared_length(scope)
        if declared is not None and declared > self.max_check_bytes:
            reason = f"request body of {declared} bytes is over max_check_bytes ({self.max_check_bytes})"
            await self._pass_unchecked(api, scope, receive, send, reason)  # nothing read: it all streams through
            return
        messages, state = await _read_body(receive, self.max_check_bytes)
        if state == "over_limit":
            reason = f"request body of more than {self.max_check_bytes} bytes (max_check_bytes)"
            await self._pass_unchecked(api, scope, _replay(messages, receive), send, reason)
            return
        body = _take_body(messages)
        readable = body
        codings = _content_codings(scope.get("headers", ()))
        if codings and state == "complete" and (self.check_input or self.check_output):
            try:
                readable = _decode(body, codings, self.max_check_bytes)
            except _Undecodable as exc:  # a coding we lack, a corrupt body, or too large once decoded
                reason = f"request content-encoding {b', '.join(codings).decode('latin-1')}: {exc}"
                await self._pass_unchecked(api, scope, _replay([_whole(body)], receive), send, reason,
                                           TOO_LARGE if exc.too_large else ENCODED_REQUEST)
                return
        request = read_payload(readable) if state == "complete" else None
        if request is None or not isinstance(request.value, dict):
            await self.app(scope, _replay([_whole(body)], receive), send)  # not ours to judge: the upstream answers
            return
        # The upstream gets the bytes as sent (compressed ones too); the checks read the decoded JSON.
        call = GuardedCall(self, api, scope, body, request.check_bytes)
        if self.check_input:
            call.input_result = await call.check("request", call.body_prefix, b"}")
            if call.input_result.verdict == "block":
                await call.send_block(send, call.input_result)
                return
        await call.forward(receive, send)

    async def _pass_unchecked(self, api: Api, scope: Scope, receive: Receive, send: Send, reason: str,
                              cause: str = TOO_LARGE) -> None:
        """A request that cannot be read for a check (over `max_check_bytes`, or in a content-encoding we cannot
        decode), so neither phase can be checked. It is decided as when the service cannot check (`fail_mode`)
        and, if allowed, goes to the upstream as is."""
        if self.check_input or self.check_output:
            result = self.uncheckable(api, reason, "request", cause=cause)
            if result.verdict == "block":
                await self.send_block(api, send, result)
                return
            await self.report(api, result)
        await self.app(scope, receive, send)

    def uncheckable(self, api: Api, reason: str, phase: str, *, cause: str = TOO_LARGE,
                    quiet: bool = False) -> CheckResponse:
        """The verdict for what the service cannot be asked about (a check body it would refuse, a compressed
        answer): the fail_mode one, without calling it."""
        fail_mode = self.client.fail_mode
        log.log(logging.DEBUG if quiet else logging.WARNING, "guardrails: %s %s not checked (%s); failing %s",
                api.name, phase, reason, fail_mode)
        return synthetic_verdict(fail_mode, reason, phase=phase, format=api.format, cause=cause)

    async def report(self, api: Api, result: CheckResponse) -> None:
        if result.verdict != "allow":
            log.info("guardrails %s on %s %s phase: check %s", result.verdict, api.name, result.phase,
                     result.check_id)
        if self.on_verdict is None:
            return
        try:
            outcome = self.on_verdict(result, {"api": api.name})
            if asyncio.iscoroutine(outcome):
                await outcome
        except Exception:  # the gateway's own hook (metrics, alerts) must not fail the call it reports on
            log.exception("guardrails: on_verdict hook failed on check %s", result.check_id)

    async def send_block(self, api: Api, send: Send, result: CheckResponse) -> None:
        await self.report(api, result)
        notice = _notice(result, self)
        payload = orjson.dumps(api.error_body(notice))
        await send({"type": "http.response.start", "status": notice.status, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
            (VERDICT_HEADER, b"block"), (CHECK_ID_HEADER, result.check_id.encode())]})
        await send({"type": "http.response.body", "body": payload, "more_body": False})


class GuardedCall:
    """One request through the middleware: its check bodies, and the response side of the exchange."""

    def __init__(self, owner: GuardrailsMiddleware, api: Api, scope: Scope, body: bytes,
                 check_request: bytes | None = None) -> None:
        self.owner = owner
        self.api = api
        self.scope = scope
        context = _context(scope, owner.context_headers)
        checked = body if check_request is None else check_request  # a strict copy when `body` is lenient JSON
        self.body_prefix = _check_prefix(checked, api.format, context, owner.policy)
        # Mid-stream checks carry no context (budgets would count each one), so they name the caller's routed
        # policy instead: known up front when the operator set one, else learned from a check that had context.
        # They say `partial`, so the service keeps their advisory verdicts apart (audit, metrics).
        self._checked_request = checked
        self._partial_prefix: bytes | None = (_check_prefix(checked, api.format, {}, owner.policy, partial=True)
                                              if owner.policy or not context else None)
        self.input_result: CheckResponse | None = None
        self.max_check_bytes = owner.max_check_bytes  # lowered when the service refuses a smaller body (413)
        self.over_limit = False  # a check body outgrew max_check_bytes: later ones only grow (one warning)
        self._too_large_verdict: CheckResponse | None = None  # the latest verdict decided that way
        # The service gave no verdict (unreachable, timed out, refused the body): the rest of this call is decided
        # by fail_mode at once, or every later check (one per stream re-check) would wait out the timeout again.
        self._unanswered: str | None = None
        self.stopped = asyncio.Event()  # set once we ended the response ourselves (block)
        self._request = body
        self._downstream: Send | None = None
        self._start: Message | None = None
        self._mode = "pass"  # pass | sniff | buffer | stream
        self._headers_sent = False  # the response's start went out before its body was read (an SSE content-type)
        self._buffer = bytearray()
        self._splitter = SSESplitter()
        self._stream: StreamChecker | None = None

    # --- checks -------------------------------------------------------------------------------------
    async def check(self, phase: str, *parts: bytes) -> CheckResponse:
        """Check the body made of `parts`; one the service would refuse is decided here, never built."""
        size = sum(map(len, parts))
        if size > self.max_check_bytes:
            reason = f"{phase} check body of {size} bytes is over max_check_bytes ({self.max_check_bytes})"
            return self._too_large(reason, phase)
        client = self.owner.client
        if self._unanswered is not None:
            return synthetic_verdict(client.fail_mode, f"not checked: {self._unanswered}", phase=phase,
                                     format=self.api.format)
        try:
            result = await client.check_raw(b"".join(parts), phase=phase, format=self.api.format)
        except CheckRejected as exc:
            if exc.status == 413:  # the service's limit is below ours: decided as over ours, now and for the rest
                self.max_check_bytes = size - 1
                reason = f"the service refused a {phase} check body of {size} bytes ({exc}); lower max_check_bytes"
                return self._too_large(reason, phase)
            if _refuses_partial(exc) and parts[0] == self._partial_prefix:
                return await self._recheck_without_partial(phase, parts)
            # The service could not read what we sent: treat as unavailable.
            log.error("guardrails check rejected (%s); failing %s", exc, client.fail_mode)
            result = synthetic_verdict(client.fail_mode, f"check rejected: {exc}", phase=phase,
                                       format=self.api.format)
        if is_synthetic(result):
            self._unanswered = f"an earlier check of this call got no verdict ({result.findings[0].message})"
        return result

    async def _recheck_without_partial(self, phase: str, parts: tuple[bytes, ...]) -> CheckResponse:
        """A service older than the `partial` field (rolled back, or not upgraded yet) refuses it: its no-verdict
        would decide the rest of the call by fail_mode (open: the stream and its final check unchecked; closed:
        every stream cut). This call's re-checks go without it, as ordinary checks, as before the field."""
        if not self.owner.partial_refused:
            self.owner.partial_refused = True
            log.warning("guardrails: the service does not know `partial` (older than this middleware): mid-stream "
                        "re-checks are sent as ordinary checks, audited and counted as such; upgrade the service")
        self._partial_prefix = parts[0].removesuffix(_PARTIAL_FIELD)
        return await self.check(phase, self._partial_prefix, *parts[1:])

    def _too_large(self, reason: str, phase: str) -> CheckResponse:
        result = self.owner.uncheckable(self.api, reason, phase, quiet=self.over_limit)
        self.over_limit, self._too_large_verdict = True, result
        return result

    async def _report(self, result: CheckResponse) -> None:
        await self.owner.report(self.api, result)

    async def send_block(self, send: Send, result: CheckResponse) -> None:
        await self.owner.send_block(self.api, send, result)

    # --- response side ------------------------------------------------------------------------------
    async def forward(self, receive: Receive, send: Send) -> None:
        if self.input_result is not None:
            await self._report(self.input_result)
        self._downstream = send
        try:
            await self.owner.app(self.scope, self._receive(receive), self._send)
        except Exception:
            if not self.stopped.is_set():
                raise
            # The upstream app noticed we stopped its stream (OSError from send / disconnect): expected.

    async def _send(self, message: Message) -> None:
        if self.stopped.is_set():
            raise OSError("response stopped by guardrails")  # makes a streaming upstream stop generating
        assert self._downstream is not None
        kind = message["type"]
        if kind == "http.response.start":
            await self._on_start(message)
        elif kind == "http.response.body":
            if self._mode == "sniff":
                await self._on_sniffed_body(message)
            elif self._mode == "buffer":
                await self._on_buffered_body(message)
            elif self._mode == "stream":
                await self._on_stream_body(message)
            else:
                await self._downstream(message)
        else:
            await self._downstream(message)

    async def _on_start(self, message: Message) -> None:
        assert self._downstream is not None
        if not (self.owner.check_output and 200 <= message["status"] < 300):
            await self._downstream(_with_warn(message, self.input_result))  # an input warn still shows
            return
        headers = _headers(message.get("headers", ()))
        encoding = headers.get(b"content-encoding", b"identity").lower()
        if encoding not in (b"identity", b""):
            if not await self._decided_unread(encoding):
                await self._downstream(_with_warn(message, self.input_result))
            return
        # Whatever the content-type says, the body decides how it is read (`_on_sniffed_body`): a proxy may label
        # JSON `text/plain` or send no type, or label SSE `application/octet-stream`.
        self._mode, self._start = "sniff", message
        if headers.get(b"content-type", b"").lower().startswith(b"text/event-stream"):
            # Headers go now: on a stream the output verdict is not known yet (a warn there is only logged).
            await self._send_stream_start()

    async def _send_stream_start(self) -> None:
        """The response's start, for a body read as a stream. A block cuts the stream and appends an error event:
        an upstream `content-length` would then be a lie, and the server would drop the connection before the
        client read the error."""
        assert self._downstream is not None and self._start is not None
        if not self._headers_sent:
            self._headers_sent = True
            await self._downstream(_with_warn(_without_length(self._start), self.input_result))

    async def _on_sniffed_body(self, message: Message) -> None:
        """The first bytes of a checked answer: SSE fields make it a stream; anything else is buffered, and read as
        JSON when it ends."""
        assert self._downstream is not None
        self._buffer += message.get("body", b"")
        more = bool(message.get("more_body", False))
        sse = looks_like_sse(self._buffer, complete=not more)
        if sse is None and len(self._buffer) < _SNIFF_BYTES:
            return  # too few bytes to tell yet (blank lines only so far: no more of them are held than this)
        body, self._buffer = bytes(self._buffer), bytearray()
        if sse:
            self._mode = "stream"
            self._stream = StreamChecker(self.api, self._check_chunks, incremental=self.owner.incremental,
                                         interval_s=self.owner.stream_check_interval_s,
                                         stop_categories=self.owner.stream_stop_categories,
                                         coalesce_over=self._coalesce_over())
            await self._send_stream_start()
            await self._on_stream_body({"type": "http.response.body", "body": body, "more_body": more})
        else:
            self._mode = "buffer"
            await self._on_buffered_body({"type": "http.response.body", "body": body, "more_body": more})

    def _coalesce_over(self) -> int:
        """Stream chunks are coalesced past 1 MiB, or sooner where less than that is left of `max_check_bytes`
        (the final check's prefix, with context, is the longest; 1 KiB for the keys and brackets around)."""
        return min(COALESCE_OVER, self.max_check_bytes - len(self.body_prefix) - 1024)

    async def _decided_unread(self, encoding: bytes) -> bool:
        """A compressed answer cannot be checked: decided by fail_mode like any answer without a verdict (closed
        answers the block now; open lets it through). True when it was blocked."""
        assert self._downstream is not None
        reason = f"content-encoding {encoding.decode('latin-1')}; the gateway must ask the upstream for identity"
        result = self.owner.uncheckable(self.api, reason, "response", cause=ENCODED)
        if result.verdict != "block":
            await self._report(result)
            return False
        self.stopped.set()
        await self.send_block(self._downstream, result)
        return True

    async def _on_buffered_body(self, message: Message) -> None:
        assert self._downstream is not None and self._start is not None
        self._buffer += message.get("body", b"")
        more = bool(message.get("more_body", False))
        if len(self.body_prefix) + len(_RESPONSE_KEY) + len(self._buffer) + 1 > self.max_check_bytes:
            await self._release_too_large(more)
            return
        if more:
            return
        body = bytes(self._buffer)
        response = read_payload(body) if body.strip() else None
        if response is not None and isinstance(response.value, (dict, list)):
            result = await self.check("response", self.body_prefix, _RESPONSE_KEY, response.check_bytes, b"}")
        elif body.strip():  # not JSON, not SSE: the client may still read it, and nothing can check it
            reason = f"a {len(body)}-byte 2xx body that is not a JSON object or array"
            result = self.owner.uncheckable(self.api, reason, "response", cause=UNREADABLE)
        else:
            result = None  # an empty answer: nothing to judge
        if result is not None and result.verdict == "block":
            await self._stop(result)  # reports it
            return
        if result is not None:
            await self._report(result)
        warn = result if result is not None and result.verdict == "warn" else self.input_result
        if not self._headers_sent:
            await self._downstream(_with_warn(self._start, warn))
        await self._downstream({"type": "http.response.body", "body": body, "more_body": False})

    async def _stop(self, result: CheckResponse) -> None:
        """A block of a buffered answer: the API's error, or its SSE error event where the headers went out."""
        assert self._downstream is not None
        if self._headers_sent:
            await self._blocked(result, bytearray())
            return
        self.stopped.set()
        await self.send_block(self._downstream, result)

    async def _release_too_large(self, more: bool) -> None:
        """A JSON response too large to check: decided by fail_mode now, not buffered to its end."""
        assert self._downstream is not None and self._start is not None
        reason = f"response check body of more than {self.max_check_bytes} bytes (max_check_bytes)"
        result = self._too_large(reason, "response")
        if result.verdict == "block":
            await self._stop(result)
            return
        await self._report(result)
        self._mode = "pass"  # the rest goes straight through
        if not self._headers_sent:
            await self._downstream(_with_warn(self._start, self.input_result))
        await self._downstream({"type": "http.response.body", "body": bytes(self._buffer), "more_body": more})
        self._buffer = bytearray()

    async def partial_prefix(self) -> bytes:
        """The prefix of a mid-stream check body: the request, the format, `partial` and the policy routing chose
        for this caller (from the input check; without one, a request-only check with the caller's context, once)."""
        if self._partial_prefix is None:
            routed = self.input_result
            if routed is None or is_synthetic(routed):
                routed = await self.check("request", self.body_prefix, b"}")
            policy = None if is_synthetic(routed) else routed.policy.id
            self._partial_prefix = _check_prefix(self._checked_request, self.api.format, {}, policy, partial=True)
        return self._partial_prefix

    async def _check_chunks(self, chunks: list[bytes], final: bool) -> CheckResponse:
        prefix = self.body_prefix if final else await self.partial_prefix()
        return await self.check("response", prefix, _RESPONSE_KEY, b"[", *_comma_separated(chunks), b"]}")

    async def _on_stream_body(self, message: Message) -> None:
        assert self._downstream is not None and self._stream is not None
        more = bool(message.get("more_body", False))
        events = self._splitter.feed(message.get("body", b""))
        if not more and (tail := self._splitter.flush()) is not None:
            events.append(tail)
        out = bytearray()
        for at, event in enumerate(events):
            if await self._blocked(await self._stream.admit(event), out):
                return
            out += event.raw
            if self._stream.last is not None and self._stream.last is self._too_large_verdict:
                await self._stop_checking_stream(out, events[at + 1:], more)
                return
        if not more:
            if await self._blocked(await self._stream.finish(), out):
                return
            if self._stream.last is not None:
                await self._report(self._stream.last)
        if out or not more:
            await self._downstream({"type": "http.response.body", "body": bytes(out), "more_body": more})

    async def _stop_checking_stream(self, forwarded: bytearray, rest: list[SSEEvent], more: bool) -> None:
        """The stream outgrew what one check body may hold: no later check can judge it. Fail closed stops it
        here; fail open lets the rest through unchecked, holding none of it (a long stream would otherwise
        keep every chunk until it ends)."""
        assert self._downstream is not None and self._stream is not None
        result = self._stream.last
        assert result is not None
        if result.verdict == "block":
            await self._blocked(result, forwarded)
            return
        await self._report(result)
        self._mode = "pass"
        self._stream.release()
        pending = b"".join(event.raw for event in rest) + self._splitter.take_pending()
        await self._downstream({"type": "http.response.body", "body": bytes(forwarded) + pending,
                                "more_body": more})

    async def _blocked(self, result: CheckResponse | None, forwarded: bytearray) -> bool:
        """On a stopping block: send what was allowed, then the API's SSE error event, and end the stream."""
        if result is None:
            return False
        assert self._downstream is not None
        self.stopped.set()
        await self._report(result)
        notice = _notice(result, self.owner)
        sep = self._splitter.separator
        error = self.api.sse_error(notice, sep)
        if forwarded and not forwarded.endswith(sep):
            # The upstream's body ended mid-frame: close its last event, or ours would merge into it.
            forwarded += sep[len(sep) // 2:] if forwarded.endswith(sep[: len(sep) // 2]) else sep
        await self._downstream({"type": "http.response.body", "body": bytes(forwarded) + error,
                                "more_body": False})
        return True

    def _receive(self, receive: Receive) -> Receive:
        """Replays the request body; after a block, tells the upstream app the client went away."""
        replayed = False

        async def wrapped() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": self._request, "more_body": False}
            if self.stopped.is_set():
                return {"type": "http.disconnect"}
            stop = asyncio.ensure_future(self.stopped.wait())
            upstream = asyncio.ensure_future(receive())
            try:
                await asyncio.wait({stop, upstream}, return_when=asyncio.FIRST_COMPLETED)
            finally:  # also when the app cancels its disconnect listener
                stop.cancel()
                if not upstream.done():
                    upstream.cancel()
            if upstream.done() and not upstream.cancelled():
                return upstream.result()
            return {"type": "http.disconnect"}

        return wrapped


def _notice(result: CheckResponse, owner: GuardrailsMiddleware) -> BlockNotice:
    blocking = [f for f in result.findings if f.action == "block"] or result.findings
    if is_unavailable(result):  # failing closed: the caller did nothing wrong and may retry
        detail = f": {blocking[0].message}" if blocking else ""
        return BlockNotice(f"Guardrails could not check this call{detail} [check {result.check_id}]",
                           result.check_id, owner.unavailable_status, unavailable=True)
    categories = ", ".join(sorted({str(f.category) for f in blocking})) or "policy"
    detail = f": {blocking[0].message}" if blocking else ""
    return BlockNotice(f"Blocked by guardrails ({categories}){detail} [check {result.check_id}]",
                       result.check_id, owner.block_status)


def _with_warn(start: Message, result: CheckResponse | None) -> Message:
    if result is None or result.verdict != "warn":
        return start
    headers = [*start.get("headers", ()), (VERDICT_HEADER, b"warn"),
               (CHECK_ID_HEADER, result.check_id.encode())]
    return {**start, "headers": headers}


def _without_length(start: Message) -> Message:
    headers = [(name, value) for name, value in start.get("headers", ()) if name.lower() != b"content-length"]
    return {**start, "headers": headers}


def _headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    return {name.lower(): value for name, value in raw}


def _context(scope: Scope, mapping: Mapping[bytes, str]) -> dict[str, str]:
    context: dict[str, str] = {}
    for name, value in scope.get("headers", ()):
        name = name.lower()
        if name in mapping:
            context[mapping[name]] = _header_text(value)
        elif name == b"traceparent":  # W3C: version-traceid-spanid-flags
            parts = value.decode("latin-1").split("-")
            if len(parts) == 4:
                context["trace_id"], context["span_id"] = parts[1], parts[2]
    return context


def _header_text(value: bytes) -> str:
    """Clients send non-ASCII header values as UTF-8 ("José"); latin-1 only for bytes that are not UTF-8."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


def _comma_separated(items: list[bytes]) -> list[bytes]:
    parts: list[bytes] = []
    for item in items:
        parts += (b",", item) if parts else (item,)
    return parts


def _refuses_partial(exc: CheckRejected) -> bool:
    """The 422 of a service that predates `partial` ("unknown field(s) ['partial']"); we only ever send `true`."""
    return exc.status == 422 and exc.pointer == "/partial"


def _check_prefix(request: bytes, fmt: str, context: Mapping[str, str], policy: str | None, *,
                  partial: bool = False) -> bytes:
    """`{"request": <raw bytes>, ...` left open for `,"response": ...}`: payloads are never re-serialized."""
    extra: dict[str, Any] = {"format": fmt}
    if context:
        extra["context"] = context
    if policy:
        extra["policy"] = policy
    if partial:
        extra["partial"] = True  # last: `_PARTIAL_FIELD` ends the prefix
    return b'{"request":' + request + b"," + orjson.dumps(extra)[1:-1]


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length" and value.strip().isdigit():
            return int(value)
    return None


async def _read_body(receive: Receive, limit: int) -> tuple[list[Message], BodyState]:
    """The request body's messages, as received; reading stops once they hold more than `limit` bytes, so a
    body that cannot be checked is never held whole (the rest is left for the upstream to read)."""
    messages: list[Message] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return messages, "disconnected"
        messages.append(message)
        size += len(message.get("body", b""))
        if size > limit:
            return messages, "over_limit"
        if not message.get("more_body", False):
            return messages, "complete"


# Concatenated gzip members are legal (a few, from appending tools); thousands are an attack on the decoder.
MAX_GZIP_MEMBERS = 16


class _Undecodable(Exception):
    def __init__(self, reason: str, *, too_large: bool = False) -> None:
        super().__init__(reason)
        self.too_large = too_large


def _content_codings(headers: Iterable[tuple[bytes, bytes]]) -> list[bytes]:
    """The request's content-codings in the order they were applied (`identity` left out)."""
    codings = []
    for name, value in headers:
        if name.lower() == b"content-encoding":
            codings += [c.strip().lower() for c in value.split(b",") if c.strip()]
    return [c for c in codings if c != b"identity"]


def _decode(body: bytes, codings: list[bytes], limit: int) -> bytes:
    """`body` with its codings undone, last applied first; never more than `limit` bytes of it are produced."""
    for coding in reversed(codings):
        wbits = _DECODABLE.get(coding)
        if wbits is None:
            raise _Undecodable(f"{coding.decode('latin-1')} cannot be decoded")
        try:
            body = _inflate(body, wbits, limit)
        except zlib.error as exc:
            if coding != b"deflate":
                raise _Undecodable(f"not valid {coding.decode('latin-1')} ({exc})") from None
            try:  # "deflate" sent without its zlib wrapper, as some clients do
                body = _inflate(body, -zlib.MAX_WBITS, limit)
            except zlib.error:
                raise _Undecodable(f"not valid deflate ({exc})") from None
    return body


def _inflate(data: bytes, wbits: int, limit: int) -> bytes:
    out = bytearray()
    members = 0
    while True:  # gzip bodies may hold several members, one after the other
        members += 1
        if members > MAX_GZIP_MEMBERS:  # 200,000 empty members held the event loop 20 s (each pass copies the rest)
            raise _Undecodable(f"more than {MAX_GZIP_MEMBERS} gzip members")
        inflater = zlib.decompressobj(wbits)
        out += inflater.decompress(data, limit + 1 - len(out))
        if len(out) > limit or inflater.unconsumed_tail:
            raise _Undecodable(f"decoded, it is over max_check_bytes ({limit})", too_large=True)
        if not inflater.eof:
            raise zlib.error("truncated")
        data = inflater.unused_data
        if not data or wbits != 16 + zlib.MAX_WBITS:
            break
    if data:
        raise zlib.error(f"{len(data)} bytes after the end of the compressed data")
    return bytes(out)


def _take_body(messages: list[Message]) -> bytes:
    body = b"".join(message.get("body", b"") for message in messages)
    messages.clear()  # one copy of the request is enough
    return body


def _whole(body: bytes) -> Message:
    return {"type": "http.request", "body": body, "more_body": False}


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """Gives the upstream the messages already read, each as it was, then the rest from `receive`."""
    pending = deque(messages)

    async def wrapped() -> Message:
        return pending.popleft() if pending else await receive()

    return wrapped


__all__ = ["CHECK_ID_HEADER", "DEFAULT_CONTEXT_HEADERS", "DEFAULT_MAX_CHECK_BYTES", "VERDICT_HEADER", "GuardedCall",
           "GuardrailsMiddleware"]
