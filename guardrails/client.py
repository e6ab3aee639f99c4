"""Python client of `POST /v1/checks`: async first, with a thin sync wrapper over the same code.

`GuardrailsClient.check(...)` returns a typed `CheckResponse`. `timeout` is one deadline for the whole check:
connect errors and 5xx answers are retried with exponential backoff only while it leaves time, and the last
attempt gets what remains. A 4xx is the caller's bug and raises `CheckRejected` at once (413: the check body is
over the service's `GUARDRAILS_MAX_BODY_BYTES`). When the service stays
unreachable the client does not raise: it returns a synthetic verdict chosen by `fail_mode` ("open": allow,
"closed": block), marked by a `detector_error` finding from detector `guardrails_client` and by
`signals["client"]["synthetic"] = True` (see `is_synthetic`).

Every check goes with an `Idempotency-Key` header, random per check and the same on each of its retries: a retry
of a check the service got but whose answer was lost (a dropped connection) gets the first answer back, and the
check is audited and counted against budgets once (guardrails/idempotency.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import threading
import time
from collections.abc import Coroutine, Mapping
from typing import Any, Literal, TypeVar

import httpx
import orjson
from pydantic import ValidationError

from guardrails.contract import CheckResponse

FailMode = Literal["open", "closed"]
CLIENT_DETECTOR = "guardrails_client"
# Failures worth another attempt: the request never reached a healthy service. A pooled keep-alive connection
# that the service or a load balancer dropped fails as RemoteProtocolError when closed, ReadError/WriteError when
# reset. A read timeout is not retried: the service got the check and the latency budget is already spent.
RETRYABLE = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.PoolTimeout,
             httpx.ReadError, httpx.WriteError)
log = logging.getLogger("guardrails.client")
T = TypeVar("T")


def _dumps(body: Mapping[str, Any]) -> bytes:
    """The check body as JSON. orjson refuses what Python's `json` writes and the service reads (a lone surrogate
    such as half an emoji cut by truncation, an integer past 64 bits): those bodies go as `json.dumps` writes them,
    ASCII-escaped. A value JSON has no form for (bytes, a set) still raises `TypeError`: a bug of the caller's."""
    try:
        return orjson.dumps(body)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return json.dumps(body, ensure_ascii=True, allow_nan=True).encode("utf-8")


class CheckRejected(Exception):
    """The service answered 4xx: the check body is wrong (or the API key is). Never retried or failed open."""

    def __init__(self, status: int, error: Mapping[str, Any]) -> None:
        self.status = status
        self.type = str(error.get("type", "error"))
        self.message = str(error.get("message", ""))
        self.pointer = error.get("pointer")
        where = f" at {self.pointer}" if self.pointer else ""
        super().__init__(f"{status} {self.type}: {self.message}{where}")


class GuardrailsClient:
    """Async client. One instance per process: it keeps a pooled HTTP connection to the service."""

    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
        *,
        api_key: str | None = None,
        timeout: float = 2.0,
        retries: int = 2,
        backoff_s: float = 0.05,
        fail_mode: FailMode = "open",
        policy: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if fail_mode not in ("open", "closed"):
            raise ValueError(f"fail_mode must be 'open' or 'closed', got {fail_mode!r}")
        headers = {"content-type": "application/json"}
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.backoff_s = backoff_s
        self.fail_mode: FailMode = fail_mode
        self.policy = policy
        self._http = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=timeout,
                                       transport=transport)

    async def check(
        self,
        request: Mapping[str, Any],
        response: Mapping[str, Any] | list[Any] | None = None,
        *,
        format: str | None = None,
        context: Mapping[str, Any] | None = None,
        policy: str | None = None,
        raw_output: str | None = None,
        partial: bool = False,
        idempotency_key: str | None = None,
    ) -> CheckResponse:
        """Check one step: `request` alone is an input-phase check; with `response` an output-phase one.
        `partial`: a re-check of a response still arriving (stream chunks so far); its verdict is advisory.
        `idempotency_key`: see `check_raw`."""
        body: dict[str, Any] = {"request": request}
        for key, value in (("response", response), ("format", format), ("context", context),
                           ("policy", policy or self.policy), ("raw_output", raw_output), ("partial", partial or None)):
            if value is not None:
                body[key] = value
        phase = "response" if response is not None else "request"
        return await self.check_raw(_dumps(body), phase=phase, format=format, idempotency_key=idempotency_key)

    async def check_raw(self, body: bytes, *, phase: str = "request", format: str | None = None,
                        idempotency_key: str | None = None) -> CheckResponse:
        """Send an already serialized check body (the middleware splices raw payload bytes into one).
        `idempotency_key`: the `Idempotency-Key` of this check (at most 255 printable ASCII characters); by default a
        random one. Give your own only to tie together retries made above this client (a request your gateway
        replays): a key is one check, and the same key with another body is refused (`CheckRejected`, 422)."""
        # A gateway's latency budget is one timeout, not one per attempt: every attempt shares this deadline.
        deadline = time.monotonic() + self.timeout
        # One key for every attempt: a retry of a check the service answered (the answer lost on the way) replays it.
        headers = {"idempotency-key": idempotency_key or os.urandom(16).hex()}
        attempt = 0
        while True:
            try:
                answer = await self._post(body, deadline - time.monotonic(), headers)
            except RETRYABLE as exc:
                reason = f"{type(exc).__name__}: {exc}"
            except TimeoutError:
                return self._unreachable(f"no answer within the check deadline of {self.timeout} s", phase, format)
            except httpx.TransportError as exc:  # read/write timeouts and the like: not retried
                return self._unreachable(f"{type(exc).__name__}: {exc}", phase, format)
            else:
                if answer.status_code == 200:
                    try:
                        return CheckResponse.model_validate_json(answer.content)
                    except ValidationError as exc:  # something else answers at that URL: no verdict to trust
                        reason = f"HTTP 200 but not a check response: {exc.errors()[0]['msg']}"
                        return self._unreachable(reason, phase, format)
                if answer.status_code < 500:
                    raise CheckRejected(answer.status_code, _error_of(answer))
                reason = f"HTTP {answer.status_code}: {answer.text[:200]}"
            pause = self.backoff_s * (2**attempt) * (0.5 + random.random())
            if attempt >= self.retries or time.monotonic() + pause >= deadline:
                return self._unreachable(reason, phase, format)
            await asyncio.sleep(pause)
            attempt += 1

    async def _post(self, body: bytes, budget_s: float, headers: Mapping[str, str]) -> httpx.Response:
        """One attempt, given what is left of the check's deadline: httpx's timeouts apply per phase (connect,
        write, read), so the attempt as a whole is also cut off when the budget is spent (TimeoutError)."""
        async with asyncio.timeout(budget_s):
            return await self._http.post("/v1/checks", content=body, timeout=budget_s, headers=headers)

    def _unreachable(self, reason: str, phase: str, format: str | None) -> CheckResponse:
        log.warning("guardrails service %s unreachable (%s); failing %s", self.url, reason, self.fail_mode)
        return synthetic_verdict(self.fail_mode, reason, phase=phase, format=format)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> GuardrailsClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class SyncGuardrailsClient:
    """Blocking wrapper: runs `GuardrailsClient` on a private event-loop thread, so it also works when the
    caller's thread already runs a loop, and keeps one connection pool across calls."""

    def __init__(self, url: str = "http://127.0.0.1:8000", **options: Any) -> None:
        self._client = GuardrailsClient(url, **options)  # first: bad options must not leave a loop thread behind
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="guardrails-client", daemon=True)
        self._thread.start()

    @property
    def fail_mode(self) -> FailMode:
        return self._client.fail_mode

    def check(self, request: Mapping[str, Any], response: Mapping[str, Any] | list[Any] | None = None,
              **options: Any) -> CheckResponse:
        return self._run(self._client.check(request, response, **options))

    def check_raw(self, body: bytes, **options: Any) -> CheckResponse:
        return self._run(self._client.check_raw(body, **options))

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._run(self._client.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def __enter__(self) -> SyncGuardrailsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


UNAVAILABLE = "guardrails service unavailable"  # the cause of a synthetic verdict when no answer came back


def synthetic_verdict(fail_mode: FailMode, reason: str, *, phase: str = "request", format: str | None = None,
                      cause: str = UNAVAILABLE) -> CheckResponse:
    """The verdict used when no real one could be had: allow (fail open) or block (fail closed). `cause` heads the
    finding's message; `reason` says what happened."""
    action = "allow" if fail_mode == "open" else "block"
    return CheckResponse.model_validate({
        "check_id": f"chk_unavailable_{int(time.time() * 1000):012x}",
        "verdict": action,
        "phase": phase if phase in ("request", "response") else "request",
        "format": format or "openai.chat",
        "findings": [{
            "category": "detector_error", "detector": CLIENT_DETECTOR, "severity": "high", "action": action,
            "message": f"{cause}, failing {fail_mode}: {reason}",
            "location": {"pointer": ""}, "evidence": {"fail_mode": fail_mode, "reason": reason},
        }],
        "policy": {"id": "", "version": ""},
        "signals": {"client": {"synthetic": True, "fail_mode": fail_mode, "reason": reason, "cause": cause}},
        "timings_ms": {},
    })


def is_unavailable(result: CheckResponse) -> bool:
    """True when `result` was made up because the service gave no answer (not for a body it could not take)."""
    client = result.signals.get("client", {})
    return bool(client.get("synthetic")) and client.get("cause", UNAVAILABLE) == UNAVAILABLE


def is_synthetic(result: CheckResponse) -> bool:
    """True when `result` was made up by the client because the service could not be reached."""
    return bool(result.signals.get("client", {}).get("synthetic"))


def _error_of(answer: httpx.Response) -> Mapping[str, Any]:
    try:
        payload = answer.json()
    except ValueError:
        return {"type": "http_error", "message": answer.text[:200]}
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, Mapping):
        return error
    return {"type": "http_error", "message": str(payload)[:200]}


__all__ = ["UNAVAILABLE", "CheckRejected", "FailMode", "GuardrailsClient", "SyncGuardrailsClient", "is_synthetic",
           "is_unavailable", "synthetic_verdict"]
