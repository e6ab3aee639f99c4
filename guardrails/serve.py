"""Wiring for `guardrails serve`: the one place where the core, the detectors and the API meet.

Detectors are found through their entry points (the core never imports one by name); the API is
imported here, at serve time, and nowhere else in the core.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from guardrails.audit import DISABLED, open_audit_store
from guardrails.audit.observer import AuditObserver
from guardrails.audit.otlp import OtlpSender
from guardrails.config import Settings, redacted_url
from guardrails.detector import DetectorRegistry, Services
from guardrails.metrics import CheckMetrics
from guardrails.model_stats import SharedModelStats
from guardrails.policy import PolicyStore
from guardrails.service import CheckService
from guardrails.state import open_state_store
from guardrails.state.observer import StreakObserver

log = logging.getLogger("guardrails.serve")
GC_YOUNG_THRESHOLD = 10_000  # objects allocated between young-generation collections (CPython's default: 700)


def build_service(settings: Settings) -> CheckService:
    state_off = settings.state_url.lower() in DISABLED - {""}
    state = None if state_off else open_state_store(settings.resolved_state_url())
    service = CheckService(
        PolicyStore(settings.policy_dir),
        DetectorRegistry.from_entry_points(),
        # low_confidence keeps per-model logprob statistics beside the budgets (in memory without a store).
        Services(state=state, extra={"model_stats": SharedModelStats(state)} if state is not None else {}),
        default_policy=settings.default_policy,
        segment_cache_entries=settings.segment_cache_entries,
    )
    if state is not None:
        service.observers.append(StreakObserver(state))
    if settings.audit_url.lower() not in DISABLED - {""}:  # every acknowledged check leaves a record
        sender = OtlpSender(settings.otlp_endpoint) if settings.otlp_endpoint else None
        store = open_audit_store(settings.resolved_audit_url())
        service.observers.append(AuditObserver(store, settings.audit_content, sender))
    service.observers.append(CheckMetrics())  # last: counts only acknowledged checks, and times the audit write
    return service


def build_app(settings: Settings | None = None) -> Any:
    """ASGI app factory (uvicorn --factory); reads settings from the environment."""
    from api.app import create_app

    serving = settings is None  # called as the server's factory, not by a test or an embedding app
    settings = settings or Settings.from_env()
    service = build_service(settings)
    service.readiness()  # build every policy's detectors now: the first check must not pay for it
    app = create_app(service, settings)
    app.router.lifespan_context = _closing(service, app.router.lifespan_context)
    if serving:
        tune_gc()
        log.info("%s", serving_summary(settings, service))
    return app


def serving_summary(settings: Settings, service: CheckService) -> str:
    """One startup line that says what this worker reads and writes: the first thing to check in an incident."""
    audit_off = settings.audit_url.lower() in DISABLED - {""}
    state_off = settings.state_url.lower() in DISABLED - {""}
    audit = "off" if audit_off else f"{redacted_url(settings.resolved_audit_url())} (content {settings.audit_content})"
    state = "off" if state_off else redacted_url(settings.resolved_state_url())
    return (f"policies {settings.policy_dir} ({', '.join(service.policies.ids()) or 'none'}); audit {audit}; "
            f"state {state}; API keys {'required' if settings.api_keys else 'not required'}")


def _closing(service: CheckService, inner: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """The app's lifespan, then the service closed when serving stops: the SQLite audit log folds its
    write-ahead file back into the database, so a copy of `audit.sqlite3` alone holds every record."""

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[Any]:
        async with inner(app) as state:
            yield state
        service.close()

    return lifespan


def tune_gc() -> None:
    """After warm-up: park what startup built (modules, policies, Presidio) outside the collector's scans,
    and collect the young generation less often. A check allocates thousands of short-lived objects; with
    the default threshold (700) the collector runs several times per check and its full scans walk every
    cache the service keeps."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
