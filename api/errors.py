"""Every error leaves the service as `{"error": {"type", "message", "pointer"?}}`."""

from __future__ import annotations

import logging

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from guardrails.errors import GuardrailsError

log = logging.getLogger("guardrails.api")

STATUS_TYPES = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed", 413: "body_too_large",
                415: "unsupported_media_type"}


def error_response(status: int, type_: str, message: str, pointer: str | None = None) -> Response:
    error: dict[str, object] = {"type": type_, "message": message}
    if pointer is not None:
        error["pointer"] = pointer
    return Response(orjson.dumps({"error": error}), status_code=status, media_type="application/json")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(GuardrailsError)
    async def _guardrails_error(_: Request, exc: GuardrailsError) -> Response:
        return error_response(exc.status, exc.type, exc.message, exc.pointer)

    @app.exception_handler(HTTPException)
    async def _http_error(_: Request, exc: HTTPException) -> Response:
        return error_response(exc.status_code, STATUS_TYPES.get(exc.status_code, "http_error"), str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
        return error_response(422, "invalid_body", first.get("msg", "invalid request"),
                              "/" + "/".join(loc) if loc else None)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(500, "internal_error", f"internal error: {type(exc).__name__}")
