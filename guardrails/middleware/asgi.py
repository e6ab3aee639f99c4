"""`GuardrailsMiddleware`: ASGI middleware for a gateway in front of vLLM (FastAPI, Starlette, any ASGI app).

    app.add_middleware(GuardrailsMiddleware, url="http://guardrails:8000", fail_mode="closed")

For each call to a model API it recognises by path it checks the request before forwarding it (input phase)
and the response after (output phase). Allowed traffic passes byte for byte; a warn adds
`x-guardrails-verdict: warn` and `x-guardrails-check-id`; a block answers in the API's own error shape
(HTTP 400), or, once a stream has started, ends the stream with that API's SSE error event.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import Any

import orjson

from guardrails.client import CheckRejected, FailMode, GuardrailsClient, synthetic_verdict
from guardrails.contract import CheckResponse
from guardrails.middleware.apis import Api, BlockNotice, detect_api
from guardrails.middleware.payload import read_payload
from guardrails.middleware.sse import SSESplitter
from guardrails.middleware.stream import STOP_MID_STREAM, StreamChecker

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
VerdictHook = Callable[[CheckResponse, Mapping[str, Any]], Any]

VERDICT_HEADER = b"x-guardrails-verdict"
CHECK_ID_HEADER = b"x-guardrails-check-id"
# Request headers copied into the check body's `context` (agent routing, budgets, audit).
DEFAULT_CONTEXT_HEADERS: Mapping[str, str] = {
    "x-agent-id": "agent_id", "x-session-id": "session_id", "x-tenant-id": "tenant", "x-user-id": "user",
}
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
        context_headers: Mapping[str, str] = DEFAULT_CONTEXT_HEADERS,
        on_verdict: VerdictHook | None = None,
    ) -> None:
        self.app = app
        self.client = client or GuardrailsClient(url, api_key=api_key, timeout=timeout, retries=retries,
                                                 fail_mode=fail_mode)
        self.policy = policy
        self.check_input = check_input
        self.check_output = check_output
        self.incremental = incremental
        self.stream_check_interval_s = stream_check_interval_s
        self.stream_stop_categories = frozenset(stream_stop_categories)
        self.block_status = block_status
        self.context_headers = {k.lower().encode(): v for k, v in context_headers.items()}
        self.on_verdict = on_verdict

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        api = detect_api(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if api is None:
            await self.app(scope, receive, send)
            return
        body, complete = await _read_body(receive)
        request = read_payload(body) if complete else None
        if request is None or not isinstance(request.value, dict):
            await self.app(scope, _replay(body, receive), send)  # not ours to judge: the upstream answers
            return
        call = GuardedCall(self, api, scope, body, request.check_bytes)
        if self.check_input:
            call.input_result = await call.check(call.body_prefix + b"}", "request")
            if call.input_result.verdict == "block":
                await call.send_block(send, call.input_result)
                return
        await call.forward(receive, send)


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
        self.partial_prefix = _check_prefix(checked, api.format, {}, owner.policy)  # mid-stream: nothing spent
        self.input_result: CheckResponse | None = None
        self.stopped = asyncio.Event()  # set once we ended the response ourselves (block)
        self._request = body
        self._downstream: Send | None = None
        self._start: Message | None = None
        self._mode = "pass"  # pass | buffer | stream
        self._buffer = bytearray()
        self._splitter = SSESplitter()
        self._stream: StreamChecker | None = None

    # --- checks -------------------------------------------------------------------------------------
    async def check(self, body: bytes, phase: str) -> CheckResponse:
        client = self.owner.client
        try:
            result = await client.check_raw(body, phase=phase, format=self.api.format)
        except CheckRejected as exc:  # the service could not read what we sent: treat as unavailable
            log.error("guardrails check rejected (%s); failing %s", exc, client.fail_mode)
            result = synthetic_verdict(client.fail_mode, f"check rejected: {exc}", phase=phase,
                                       format=self.api.format)
        return result

    async def _report(self, result: CheckResponse) -> None:
        if result.verdict != "allow":
            log.info("guardrails %s on %s %s phase: check %s", result.verdict, self.api.name, result.phase,
                     result.check_id)
        hook = self.owner.on_verdict
        if hook is not None:
            outcome = hook(result, {"api": self.api.name})
            if asyncio.iscoroutine(outcome):
                await outcome

    async def send_block(self, send: Send, result: CheckResponse) -> None:
        await self._report(result)
        notice = _notice(result, self.owner.block_status)
        payload = orjson.dumps(self.api.error_body(notice))
        await send({"type": "http.response.start", "status": notice.status, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
            (VERDICT_HEADER, b"block"), (CHECK_ID_HEADER, result.check_id.encode())]})
        await send({"type": "http.response.body", "body": payload, "more_body": False})

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
            if self._mode == "buffer":
                await self._on_buffered_body(message)
            elif self._mode == "stream":
                await self._on_stream_body(message)
            else:
                await self._downstream(message)
        else:
            await self._downstream(message)

    async def _on_start(self, message: Message) -> None:
        assert self._downstream is not None
        headers = _headers(message.get("headers", ()))
        content_type = headers.get(b"content-type", b"").lower()
        encoded = headers.get(b"content-encoding", b"identity").lower() not in (b"identity", b"")
        if self.owner.check_output and 200 <= message["status"] < 300 and not encoded:
            if content_type.startswith(b"text/event-stream"):
                self._mode = "stream"
                self._stream = StreamChecker(self.api, self._check_chunks, incremental=self.owner.incremental,
                                             interval_s=self.owner.stream_check_interval_s,
                                             stop_categories=self.owner.stream_stop_categories)
            elif b"json" in content_type:
                self._mode = "buffer"
                self._start = message
                return
        elif encoded:
            log.warning("guardrails: %s response is content-encoded; output not checked", self.api.name)
        # Headers go now: on a stream the output verdict is not known yet (a warn there is only logged).
        await self._downstream(_with_warn(message, self.input_result))

    async def _on_buffered_body(self, message: Message) -> None:
        assert self._downstream is not None and self._start is not None
        self._buffer += message.get("body", b"")
        if message.get("more_body", False):
            return
        body = bytes(self._buffer)
        response = read_payload(body)
        if response is None:
            result = None  # not JSON after all: nothing we can judge
        else:
            result = await self.check(self.body_prefix + b',"response":' + response.check_bytes + b"}", "response")
            await self._report(result)
        if result is not None and result.verdict == "block":
            self.stopped.set()
            await self.send_block(self._downstream, result)
            return
        warn = result if result is not None and result.verdict == "warn" else self.input_result
        await self._downstream(_with_warn(self._start, warn))
        await self._downstream({"type": "http.response.body", "body": body, "more_body": False})

    async def _check_chunks(self, chunks: list[bytes], final: bool) -> CheckResponse:
        prefix = self.body_prefix if final else self.partial_prefix
        return await self.check(prefix + b',"response":[' + b",".join(chunks) + b"]}", "response")

    async def _on_stream_body(self, message: Message) -> None:
        assert self._downstream is not None and self._stream is not None
        more = bool(message.get("more_body", False))
        events = self._splitter.feed(message.get("body", b""))
        if not more and (tail := self._splitter.flush()) is not None:
            events.append(tail)
        out = bytearray()
        for event in events:
            if await self._blocked(await self._stream.admit(event), out):
                return
            out += event.raw
        if not more:
            if await self._blocked(await self._stream.finish(), out):
                return
            if self._stream.last is not None:
                await self._report(self._stream.last)
        if out or not more:
            await self._downstream({"type": "http.response.body", "body": bytes(out), "more_body": more})

    async def _blocked(self, result: CheckResponse | None, forwarded: bytearray) -> bool:
        """On a stopping block: send what was allowed, then the API's SSE error event, and end the stream."""
        if result is None:
            return False
        assert self._downstream is not None
        self.stopped.set()
        await self._report(result)
        notice = _notice(result, self.owner.block_status)
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


def _notice(result: CheckResponse, status: int) -> BlockNotice:
    blocking = [f for f in result.findings if f.action == "block"] or result.findings
    categories = ", ".join(sorted({str(f.category) for f in blocking})) or "policy"
    detail = f": {blocking[0].message}" if blocking else ""
    return BlockNotice(f"Blocked by guardrails ({categories}){detail} [check {result.check_id}]",
                       result.check_id, status)


def _with_warn(start: Message, result: CheckResponse | None) -> Message:
    if result is None or result.verdict != "warn":
        return start
    headers = [*start.get("headers", ()), (VERDICT_HEADER, b"warn"),
               (CHECK_ID_HEADER, result.check_id.encode())]
    return {**start, "headers": headers}


def _headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    return {name.lower(): value for name, value in raw}


def _context(scope: Scope, mapping: Mapping[bytes, str]) -> dict[str, str]:
    context: dict[str, str] = {}
    for name, value in scope.get("headers", ()):
        name = name.lower()
        if name in mapping:
            context[mapping[name]] = value.decode("latin-1")
        elif name == b"traceparent":  # W3C: version-traceid-spanid-flags
            parts = value.decode("latin-1").split("-")
            if len(parts) == 4:
                context["trace_id"], context["span_id"] = parts[1], parts[2]
    return context


def _check_prefix(request: bytes, fmt: str, context: Mapping[str, str], policy: str | None) -> bytes:
    """`{"request": <raw bytes>, ...` left open for `,"response": ...}`: payloads are never re-serialized."""
    extra: dict[str, Any] = {"format": fmt}
    if context:
        extra["context"] = context
    if policy:
        extra["policy"] = policy
    return b'{"request":' + request + b"," + orjson.dumps(extra)[1:-1]


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), False  # the client disconnected
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), True


def _replay(body: bytes, receive: Receive) -> Receive:
    replayed = False

    async def wrapped() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return wrapped


__all__ = ["CHECK_ID_HEADER", "DEFAULT_CONTEXT_HEADERS", "VERDICT_HEADER", "GuardedCall",
           "GuardrailsMiddleware"]
