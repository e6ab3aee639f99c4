"""The HTTP edge: FastAPI app, routes and auth over a `CheckService`. No check logic lives here."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
from fastapi import APIRouter, FastAPI, Request, Response
from starlette.types import Message, Receive, Scope, Send

import guardrails
from api.admin import admin_router
from api.body import authorize, read_json
from api.errors import ERROR_RESPONSES, error_response, install_error_handlers, response_for
from api.metrics import include_metrics
from api.nemo import nemo_router
from guardrails.config import Settings
from guardrails.contract import CheckRequest, CheckResponse
from guardrails.idempotency import HEADER as IDEMPOTENCY_KEY
from guardrails.idempotency import MAX_KEY_CHARS, REPLAYED_HEADER, read_key
from guardrails.service import CheckService

PACKAGED_SAMPLES = Path(__file__).resolve().parent / "samples"  # a wheel's copy of samples/ (setup.py places it)
SAMPLES_DIR = PACKAGED_SAMPLES if PACKAGED_SAMPLES.is_dir() else Path(__file__).resolve().parent.parent / "samples"
CHECKS_PATH = "/v1/checks"
ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}
IDEMPOTENCY_PARAMETER: dict[str, Any] = {
    "name": "Idempotency-Key", "in": "header", "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_CHARS},
    "description": "One random key per logical check, the same on each retry of it: a retry of a check already "
                   "answered (or still running) gets that answer, without checking, auditing or counting budgets "
                   "again. Kept GUARDRAILS_IDEMPOTENCY_TTL_S seconds, per context.tenant, per worker process.",
}
REPLAYED_DOC: dict[str, Any] = {"description": "`true` when the answer is the stored one of an earlier check with "
                                               "this Idempotency-Key", "schema": {"type": "string"}}


class GuardrailsAPI(FastAPI):
    """The FastAPI app, with `POST /v1/checks` (called on every agent step) served without the framework's
    per-request machinery: routing, the exception middleware and dependency solving cost as much as a small
    check. The route stays declared, for the OpenAPI document and for apps that add their own middleware
    (those go through the full stack, so their middleware sees every request)."""

    check_endpoint: Callable[[Request], Awaitable[Response]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self.check_endpoint
        if (endpoint is not None and scope["type"] == "http" and scope["method"] == "POST"
                and _route_path(scope) == CHECKS_PATH and not self.user_middleware):
            scope["app"] = self
            try:
                response = await endpoint(Request(scope, receive))
            except Exception as exc:
                response = response_for(exc)
            await response(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def _route_path(scope: Scope) -> str:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


def create_app(service: CheckService, settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    app = GuardrailsAPI(
        title="Inference-aware guardrails",
        version=guardrails.__version__,
        description="Non-proxying checks for agentic LLM traffic: send the request you forwarded and the "
        "response you got back; get a verdict with findings that point into your payload.",
    )
    app.state.service = service
    app.state.settings = settings
    install_error_handlers(app)
    app.check_endpoint = _check_endpoint(service, settings)
    include_metrics(app, service, settings)  # GET /metrics; before the check route: it counts refused checks
    app.include_router(_check_router(app.check_endpoint))

    app.include_router(nemo_router(service, settings))
    app.include_router(_health_router(service))
    app.include_router(admin_router(service, lambda request: authorize(request, settings)))
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
        # FastAPI documents its own 422 body for routes with parameters; ours answer with ErrorResponse.
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                for status, response in operation.get("responses", {}).items():
                    content = response.get("content", {}).get("application/json")
                    if status.startswith(("4", "5")) and content is not None:
                        content["schema"] = ERROR_REF
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        # After generation: FastAPI writes the document with `exclude_none`, which would drop the samples' nulls
        # (`"content": null` of an assistant message that calls tools).
        body = schema["paths"][CHECKS_PATH]["post"]["requestBody"]["content"]["application/json"]
        body["examples"] = _examples()
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _check_endpoint(service: CheckService, settings: Settings) -> Callable[[Request], Awaitable[Response]]:
    service.idempotency.ttl_s = settings.idempotency_ttl_s  # the service keeps the answers; the app sets how long

    async def checks(request: Request) -> Response:
        authorize(request, settings)
        keys = request.headers.getlist(IDEMPOTENCY_KEY)
        if keys and settings.idempotency_ttl_s > 0:
            return await _check_once(service, settings, request, keys)
        body = await read_json(request, settings.max_body_bytes)
        result = await service.check(body)
        return Response(orjson.dumps(result), media_type="application/json")

    return checks


async def _check_once(service: CheckService, settings: Settings, request: Request, keys: list[str]) -> Response:
    """A check sent with an `Idempotency-Key`: a retry of one answered (or running) gets its answer, marked
    `Idempotent-Replayed: true`. The body is hashed as its bytes arrive: the same key with other bytes is a 422."""
    key = read_key(keys)  # a bad key is refused before the body is read
    digest = hashlib.sha256()
    receive = request.receive

    async def hashing() -> Message:
        message = await receive()
        if message["type"] == "http.request":
            digest.update(message.get("body", b""))
        return message

    body = await read_json(Request(request.scope, hashing), settings.max_body_bytes)
    answer, replayed = await service.check_once(body, key, digest.digest())
    return Response(answer, media_type="application/json", headers={REPLAYED_HEADER: "true"} if replayed else None)


def _check_router(endpoint: Callable[[Request], Awaitable[Response]]) -> APIRouter:
    router = APIRouter()

    @router.post(
        CHECKS_PATH,
        response_model=CheckResponse,
        responses=ERROR_RESPONSES,
        summary="Check one agent step",
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/CheckRequest"}}}},  # examples: _document_check_request
            "parameters": [IDEMPOTENCY_PARAMETER],
            "responses": {"200": {"headers": {"Idempotent-Replayed": REPLAYED_DOC}}}},
    )
    async def checks(request: Request) -> Response:
        return await endpoint(request)

    return router


def _health_router(service: CheckService) -> APIRouter:
    router = APIRouter()

    @router.get("/healthz", summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "version": guardrails.__version__}

    @router.get("/readyz", summary="Readiness: policies load, detectors import, the audit store writes",
                responses={503: {"description": "Not ready: the same report, with the problems listed"}})
    async def readyz() -> Response:
        report = service.readiness()
        status = 200 if report["ready"] else 503
        return Response(orjson.dumps(report), status_code=status, media_type="application/json")

    for path, probe in (("/healthz", healthz), ("/readyz", readyz)):  # load balancers probe with HEAD too
        router.add_api_route(path, probe, methods=["HEAD"], include_in_schema=False)
    return router


def _examples() -> dict[str, Any]:
    """One OpenAPI example per format, from samples/ (the repository's, or the copy an installed wheel carries)."""
    examples: dict[str, Any] = {"minimal": {"summary": "OpenAI chat", "value": CheckRequest.model_json_schema()
                                            .get("example")}}
    for path in sorted(SAMPLES_DIR.glob("*.json")):
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
            examples[path.stem] = {"summary": path.stem.replace("_", " "), "value": value}
        except (OSError, ValueError):
            continue
    return examples


__all__ = ["create_app", "error_response"]
