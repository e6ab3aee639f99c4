"""Reading a request at the edge: bearer-token auth and a size-limited JSON body."""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import Request
from starlette.exceptions import HTTPException

from guardrails.config import Settings
from guardrails.errors import BodyTooLarge, InvalidJSON, UnsupportedMediaType
from guardrails.jsonbody import loads_body


def authorize(request: Request, settings: Settings) -> None:
    if not settings.api_keys:
        return
    header = request.headers.get("authorization", "")
    # Compared as bytes: compare_digest refuses non-ASCII str, and headers arrive decoded as latin-1.
    token = (header[7:] if header.lower().startswith("bearer ") else "").encode("latin-1")
    if not any(hmac.compare_digest(token, key.encode()) for key in settings.api_keys):
        raise HTTPException(401, "missing or invalid API key (Authorization: Bearer <key>)")


async def read_json(request: Request, limit: int) -> Any:
    """The body as JSON. A missing (or empty) Content-Type is read as JSON (gateway middleware often sends none);
    one that says another type is refused (415). A client that closes mid-body raises starlette's `ClientDisconnect`
    (answered by api/errors.py as a disconnect, not a 500)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower() or "application/json"
    if content_type != "application/json" and not content_type.endswith("+json"):
        raise UnsupportedMediaType(f"Content-Type must be application/json (or absent), got {content_type!r}")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"body of {declared} bytes exceeds the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw:
        raise InvalidJSON("empty body; expected a JSON check body")
    return loads_body(raw)
