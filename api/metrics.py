"""`GET /metrics`: the service's Prometheus metrics (guardrails/metrics.py), the count of refused checks, and the
audit observer's count of segments it could not redact.

Same API keys as /v1/checks: with `GUARDRAILS_API_KEYS` set, Prometheus sends one as a bearer token
(`authorization: {credentials: <key>}` in its scrape config). Each worker process counts its own checks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.responses import PlainTextResponse

from api.body import authorize
from api.errors import ERROR_RESPONSES, response_for
from guardrails.audit.observer import AuditObserver
from guardrails.config import Settings
from guardrails.metrics import CONTENT_TYPE, CheckMetrics, render
from guardrails.service import CheckService

if TYPE_CHECKING:
    from api.app import GuardrailsAPI

Endpoint = Callable[[Request], Awaitable[Response]]
# Documented by hand: with a text/plain route, FastAPI would file an error model under text/plain too.
UNAUTHORIZED: dict[str, Any] = {
    "description": ERROR_RESPONSES[401]["description"],
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
}


def include_metrics(app: GuardrailsAPI, service: CheckService, settings: Settings) -> None:
    """Serve `GET /metrics`, and count the check endpoint's refusals. Call it once `app.check_endpoint` is set
    and before the check route is declared with it: the fast path and the route then both count."""
    metrics = metrics_of(service)
    if app.check_endpoint is not None:
        app.check_endpoint = _counting_refusals(app.check_endpoint, metrics)
    app.include_router(_metrics_router(service, settings, metrics))


def metrics_of(service: CheckService) -> CheckMetrics:
    """The service's metrics observer; a service not built by `guardrails serve` gets one added."""
    metrics = next((o for o in service.observers if isinstance(o, CheckMetrics)), None)
    if metrics is None:
        metrics = CheckMetrics()
        service.observers.append(metrics)
    return metrics


def _counting_refusals(endpoint: Endpoint, metrics: CheckMetrics) -> Endpoint:
    async def checks(request: Request) -> Response:
        try:
            return await endpoint(request)
        except Exception as exc:  # answered here as the fast path and the error handlers answer, so both count
            response = response_for(exc)
            metrics.count_refusal(response.status_code, _error_type(response))
            return response

    return checks


def _error_type(response: Response) -> str:
    try:
        return str(orjson.loads(response.body)["error"]["type"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return "unknown"


def _metrics_router(service: CheckService, settings: Settings, metrics: CheckMetrics) -> APIRouter:
    router = APIRouter()

    @router.get("/metrics", summary="Prometheus metrics of this worker (text exposition format 0.0.4)",
                response_class=PlainTextResponse, responses={401: UNAUTHORIZED})
    async def prometheus_metrics(request: Request) -> Response:  # async: read on the event loop that counts
        authorize(request, settings)
        audit = next((o for o in service.observers if isinstance(o, AuditObserver)), None)
        failures = None if audit is None else audit.redaction_failures
        return Response(render(metrics, service.policies, failures,
                               (service.idempotency.replays, service.idempotency.evicted)), media_type=CONTENT_TYPE)

    return router
