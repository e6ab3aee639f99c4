"""The HTTP edge: FastAPI app, routes and auth over a `CheckService`. No check logic lives here."""

from __future__ import annotations

import hmac
import json
from pathlib import Path
from typing import Any

import orjson
from fastapi import APIRouter, FastAPI, Request, Response

import guardrails
from api.admin import admin_router
from api.errors import error_response, install_error_handlers
from guardrails.config import Settings
from guardrails.contract import CheckRequest, CheckResponse, ErrorResponse
from guardrails.errors import BodyTooLarge, InvalidJSON, UnsupportedMediaType
from guardrails.service import CheckService

SAMPLES_DIR = Path(__file__).resolve().parent.parent / "samples"
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in (
        (400, "Body is not valid JSON"),
        (401, "Missing or wrong API key"),
        (413, "Body larger than the configured limit"),
        (415, "Content-Type is not JSON"),
        (422, "JSON, but not a readable check body (the error names the field by JSON Pointer)"),
    )
}


def create_app(service: CheckService, settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    app = FastAPI(
        title="Inference-aware guardrails",
        version=guardrails.__version__,
        description="Non-proxying checks for agentic LLM traffic: send the request you forwarded and the "
        "response you got back; get a verdict with findings that point into your payload.",
    )
    app.state.service = service
    app.state.settings = settings
    install_error_handlers(app)
    app.include_router(_check_router(service, settings))
    from api.nemo import nemo_router  # imports this module: loaded here, not at the top

    app.include_router(nemo_router(service, settings))
    app.include_router(_health_router(service))
    app.include_router(admin_router(service, lambda request: _authorize(request, settings)))
    _document_check_request(app)
    return app


def _document_check_request(app: FastAPI) -> None:
    """The body is parsed by hand (fast, exact errors); publish its model in the OpenAPI components anyway."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = generate()
        model = CheckRequest.model_json_schema(ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(model.pop("$defs", {}))
        components["CheckRequest"] = model
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _check_router(service: CheckService, settings: Settings) -> APIRouter:
    router = APIRouter()

    @router.post(
        "/v1/checks",
        response_model=CheckResponse,
        responses=ERROR_RESPONSES,
        summary="Check one agent step",
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/CheckRequest"}, "examples": _examples()}}}},
    )
    async def checks(request: Request) -> Response:
        _authorize(request, settings)
        body = await _read_json(request, settings.max_body_bytes)
        result = await service.check(body)
        return Response(orjson.dumps(result), media_type="application/json")

    return router


def _health_router(service: CheckService) -> APIRouter:
    router = APIRouter()

    @router.get("/healthz", summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "version": guardrails.__version__}

    @router.get("/readyz", summary="Readiness: policies load and detectors import")
    async def readyz() -> Response:
        report = service.readiness()
        status = 200 if report["ready"] else 503
        return Response(orjson.dumps(report), status_code=status, media_type="application/json")

    return router


def _authorize(request: Request, settings: Settings) -> None:
    if not settings.api_keys:
        return
    header = request.headers.get("authorization", "")
    token = header[7:] if header.lower().startswith("bearer ") else ""
    if not any(hmac.compare_digest(token, key) for key in settings.api_keys):
        from starlette.exceptions import HTTPException

        raise HTTPException(401, "missing or invalid API key (Authorization: Bearer <key>)")


async def _read_json(request: Request, limit: int) -> Any:
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if content_type != "application/json" and not content_type.endswith("+json"):
        raise UnsupportedMediaType(f"Content-Type must be application/json, got {content_type!r}")
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
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidJSON(f"body is not valid JSON: {exc}") from None


def _examples() -> dict[str, Any]:
    """One OpenAPI example per format, from samples/ when the repository layout is present."""
    examples: dict[str, Any] = {"minimal": {"summary": "OpenAI chat", "value": CheckRequest.model_json_schema()
                                            .get("example")}}
    for path in sorted(SAMPLES_DIR.glob("*.json")):
        try:
            examples[path.stem] = {"summary": path.stem.replace("_", " "), "value": json.loads(path.read_text())}
        except (OSError, ValueError):
            continue
    return examples


__all__ = ["create_app", "error_response"]
