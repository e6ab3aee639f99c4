"""Admin routes: read the audit log, and list, inspect and reset circuit breakers.

    GET    /v1/audit/records?since&until&tenant&agent&session&verdict&partial&check_id&category&after_seq&to_seq
                            &cursor&limit
    GET    /v1/audit/verify[?anchor=SEQ:HASH]   (`ok` only when records were checked: `status` is ok|failed|empty)
    GET    /v1/breakers
    GET    /v1/breakers/{key}
    POST   /v1/breakers/{key}/reset

Same API keys as /v1/checks. The stores come from the service's wiring (guardrails/serve.py). No store call runs
on the event loop: breaker routes go through the state store's `run`, audit reads (a PostgreSQL round trip, a walk
of the whole chain) through a worker thread, so a store that hangs or a long verify holds that request, not the
worker's checks and probes.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import orjson
from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from guardrails.audit import AuditFilter, AuditStore, parse_seq, time_range
from guardrails.audit.observer import AuditObserver
from guardrails.errors import BodyError, GuardrailsError, NotFound
from guardrails.service import CheckService
from guardrails.state import StateStore


class NotConfigured(GuardrailsError):
    status = 404
    type = "not_configured"


def admin_router(service: CheckService, authorize: Callable[[Request], None]) -> APIRouter:
    router = APIRouter(tags=["admin"])

    def audit_store() -> AuditStore:
        store = next((o.store for o in service.observers if isinstance(o, AuditObserver)), None)
        if store is None:
            raise NotConfigured("the audit log is disabled (GUARDRAILS_AUDIT_URL=none)")
        return store

    def state_store() -> StateStore:
        if service.services.state is None:
            raise NotConfigured("no state store is configured (GUARDRAILS_STATE_URL=none)")
        return service.services.state

    @router.get("/v1/audit/records", summary="Audit records, oldest first, one page at a time")
    async def records(
        request: Request,
        since: str | None = Query(None, description="ISO 8601 or epoch seconds, inclusive"),
        until: str | None = Query(None, description="ISO 8601 or epoch seconds, exclusive"),
        tenant: str | None = None,
        agent: str | None = None,
        session: str | None = None,
        verdict: str | None = Query(None, pattern="^(allow|warn|block)$"),
        partial: bool | None = Query(None, description="true: only mid-stream re-checks (advisory verdicts); "
                                     "false: every record but them"),
        check_id: str | None = Query(None, description="only this check"),
        category: str | None = Query(None, description="only records with a finding of this category (any action)"),
        after_seq: str | None = Query(None, description="only records numbered after this one (exclusive)"),
        to_seq: str | None = Query(None, description="only records numbered up to this one (inclusive)"),
        cursor: str | None = Query(None, description="`next_cursor` of the previous page"),
        limit: int = Query(100, ge=1, le=1000),
    ) -> Response:
        authorize(request)
        _known_parameters(request, RECORDS_PARAMETERS)
        try:
            start, end = time_range(since, until)
            filt = AuditFilter(
                since=start,
                until=end,
                tenant=tenant,
                agent=agent,
                session=session,
                verdict=verdict,
                partial=partial,
                check_id=check_id,
                category=category,
                after_seq=parse_seq(after_seq, "after_seq"),
                to_seq=parse_seq(to_seq, "to_seq"),
            )
            page = await run_in_threadpool(audit_store().page, filt, cursor, limit)
        except ValueError as exc:
            raise BodyError(str(exc)) from None
        return _json({"records": [r.exported() for r in page.records], "next_cursor": page.next_cursor})

    @router.get("/v1/audit/verify", summary="Walk the hash chain and name broken records")
    async def verify(request: Request, anchor: str | None = Query(None, description="SEQ:HASH")) -> Response:
        authorize(request)
        _known_parameters(request, ("anchor",))
        pinned = None
        if anchor:
            seq, _, digest = anchor.partition(":")
            # ASCII digits only (int() refuses "²", which isdigit() accepts), and few enough for a 64-bit sequence
            if not (seq.isascii() and seq.isdigit()) or len(seq) > 18 or len(digest) != 64:
                raise BodyError("anchor must be SEQ:HASH")
            pinned = (int(seq), digest.lower())
        return _json((await run_in_threadpool(audit_store().verify, pinned)).to_dict())

    @router.get("/v1/breakers", summary="Open and half-open circuit breakers")
    async def list_breakers(request: Request) -> Response:
        authorize(request)
        store = state_store()
        return _json({"breakers": [b.to_dict() for b in await store.run(store.breakers)]})

    @router.get("/v1/breakers/{key:path}", summary="One circuit breaker")
    async def show_breaker(request: Request, key: str) -> Response:
        authorize(request)
        if key.endswith("/reset"):
            raise NotFound("use POST to reset a breaker")
        store = state_store()
        found = await store.run(partial(store.breaker, key))
        if found is None:
            raise NotFound(f"no breaker open for {key!r}")
        return _json(found.to_dict())

    @router.post("/v1/breakers/{key:path}/reset", summary="Close a circuit breaker now")
    async def reset_breaker(request: Request, key: str) -> Response:
        authorize(request)
        store = state_store()
        if not await store.run(partial(store.reset, key)):
            raise NotFound(f"no breaker open for {key!r}")
        return _json({"key": key, "state": "closed"})

    return router


RECORDS_PARAMETERS = ("since", "until", "tenant", "agent", "session", "verdict", "partial", "check_id", "category",
                      "after_seq", "to_seq", "cursor", "limit")


def _known_parameters(request: Request, known: tuple[str, ...]) -> None:
    """A misspelt or unsupported filter (`?tenat=`, `?user=`) is refused: ignored, it would return every record as if
    they all matched it."""
    unknown = sorted(set(request.query_params) - set(known))
    if unknown:
        raise BodyError(f"unknown query parameter(s) {', '.join(unknown)}; this route reads {', '.join(known)}")


def _json(payload: Any) -> Response:
    return Response(orjson.dumps(payload), media_type="application/json")
