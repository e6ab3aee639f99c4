"""Every error leaves the service as `{"error": {"type", "message", "pointer"?}}`."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from guardrails.contract import ErrorResponse
from guardrails.errors import GuardrailsError
from guardrails.policy import PolicyError

log = logging.getLogger("guardrails.api")

# The errors a check route answers with, for the OpenAPI document (every one has the ErrorResponse shape).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in (
        (400, "Body is not valid JSON"),
        (401, "Missing or wrong API key"),
        (413, "Body larger than the configured limit"),
        (415, "Content-Type is not JSON"),
        (422, "JSON, but not a readable check body (the error names the field by JSON Pointer)"),
        (503, "The selected policy does not load (policy_unavailable), or the audit record could not be "
              "written (audit_unavailable)"),
    )
}

STATUS_TYPES = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed", 413: "body_too_large",
                415: "unsupported_media_type"}


def error_response(status: int, type_: str, message: str, pointer: str | None = None) -> Response:
    error: dict[str, object] = {"type": type_, "message": message}
    if pointer is not None:
        error["pointer"] = pointer
    return Response(orjson.dumps({"error": error}), status_code=status, media_type="application/json")


def response_for(exc: Exception) -> Response:
    """The error response for an exception raised while serving a request (one mapping for every route)."""
    if isinstance(exc, GuardrailsError):
        return error_response(exc.status, exc.type, exc.message, exc.pointer)
    if isinstance(exc, HTTPException):
        return error_response(exc.status_code, STATUS_TYPES.get(exc.status_code, "http_error"), str(exc.detail))
    if isinstance(exc, PolicyError):  # a bundle on disk that does not load (/readyz lists it): not the body's fault
        return error_response(503, "policy_unavailable", f"the selected policy does not load: {exc}")
    if isinstance(exc, ClientDisconnect):  # the caller's doing (a gateway timeout, a killed client): no traceback
        # 499, nginx's "client closed request": nobody reads it, but the log and check_errors_total{status="499",
        # type="client_disconnect"} tell it from a bug of ours.
        log.info("client disconnected before its request body arrived: not checked")
        return error_response(499, "client_disconnect", "the client closed the connection before its request body "
                              "arrived")
    if isinstance(exc, RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
        return error_response(422, "invalid_body", first.get("msg", "invalid request"),
                              "/" + "/".join(loc) if loc else None)
    log.exception("unhandled error", exc_info=exc)
    return error_response(500, "internal_error", f"internal error: {type(exc).__name__}")


def install_error_handlers(app: FastAPI) -> None:
    async def handle(_: Request, exc: Exception) -> Response:
        return response_for(exc)

    # ClientDisconnect by name: a handler for `Exception` alone runs in starlette's ServerErrorMiddleware, which
    # re-raises, and the server logs the traceback anyway.
    for exc_type in (GuardrailsError, HTTPException, RequestValidationError, ClientDisconnect, Exception):
        app.add_exception_handler(exc_type, handle)
