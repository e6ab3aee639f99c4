"""Wiring for `guardrails serve`: the one place where the core, the detectors and the API meet.

Detectors are found through their entry points (the core never imports one by name); the API is
imported here, at serve time, and nowhere else in the core.
"""

from __future__ import annotations

import copy
import gc
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from guardrails.audit import DISABLED, open_audit_store
from guardrails.audit.observer import AuditObserver
from guardrails.audit.otlp import OtlpSender
from guardrails.audit.record import KnownHits, RecognizerRedactor
from guardrails.config import Settings, redacted_url
from guardrails.detector import Detector, DetectorRegistry, Services
from guardrails.metrics import CheckMetrics
from guardrails.model_stats import SharedModelStats
from guardrails.policy import PolicyStore
from guardrails.service import CheckService
from guardrails.state import open_state_store
from guardrails.state.observer import StreakObserver

if TYPE_CHECKING:
    from guardrails.engine import Engine
    from guardrails.exchange import Segment
    from guardrails.findings import Hit
    from guardrails.service import CheckOutcome

log = logging.getLogger("guardrails.serve")
GC_YOUNG_THRESHOLD = 10_000  # objects allocated between young-generation collections (CPython's default: 700)
# What `GUARDRAILS_AUDIT_CONTENT=redacted` masks in every segment, whatever the policy enables: these detectors (by
# entry-point name) with these settings, which are their defaults as the default policy writes them. A policy
# detector of the same class with exactly these settings caches the same hits: the redactor reuses them.
REDACTING_DETECTORS: dict[str, dict[str, Any]] = {
    "pii": {"entities": ["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "IP_ADDRESS"],
            "score_threshold": 0.4, "countries": ["us"], "allow_list": []},
    "secret": {"min_entropy": 3.0, "disabled_rules": []},
}


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
        # Before the store and sender open: a redactor that cannot be built leaves nothing open behind it.
        redactor = (audit_redactor(service, settings.segment_cache_entries)
                    if settings.audit_content == "redacted" else None)  # the other modes keep no text
        sender = OtlpSender(settings.otlp_endpoint) if settings.otlp_endpoint else None
        store = open_audit_store(settings.resolved_audit_url())
        service.observers.append(AuditObserver(store, settings.audit_content, sender, redactor))
    service.observers.append(CheckMetrics())  # last: counts only acknowledged checks, and times the audit write
    return service


def audit_redactor(service: CheckService, max_entries: int) -> RecognizerRedactor:
    """The PII and secret recognizers as the audit log's redactor, built once: a card number or key in a segment no
    policy rail reads (the default `pii` rail skips user messages and tool results) is masked in `redacted` records
    too. A detector that cannot be built is a configuration error: `redacted` would otherwise keep what it promised
    to hide."""
    registry = service.registry
    recognizers: list[tuple[str, Any]] = []
    built: list[tuple[type[Detector], Mapping[str, Any]]] = []
    for name, detector_settings in REDACTING_DETECTORS.items():
        if name not in registry:
            reason = registry.load_errors.get(name, "not installed")
            raise ValueError(f"GUARDRAILS_AUDIT_CONTENT=redacted needs the {name!r} detector, which is unavailable: "
                             f"{reason}")
        cls = registry.get(name)
        try:
            detector = cls(copy.deepcopy(detector_settings), service.services)  # compared below: kept intact
        except Exception as exc:
            raise ValueError(f"GUARDRAILS_AUDIT_CONTENT=redacted: the {name!r} detector could not be built: "
                             f"{type(exc).__name__}: {exc}") from exc
        analyze = getattr(detector, "analyze", None)
        if not callable(analyze):
            raise ValueError(f"GUARDRAILS_AUDIT_CONTENT=redacted needs {name!r} to be a segment detector")
        recognizers.append((cls.category.value, analyze))
        built.append((cls, detector_settings))
    return RecognizerRedactor(recognizers, max_entries, known_hits=_PolicyHits(service, built))


class _PolicyHits:
    """Where the check's policy keeps the hits the redactor's recognizers would compute: the segment cache of its
    detectors of the same class built with the same settings (hits depend only on those and the segment)."""

    def __init__(self, service: CheckService, recognizers: Sequence[tuple[type[Detector], Mapping[str, Any]]]) -> None:
        self.service, self.recognizers = service, tuple(recognizers)

    def __call__(self, outcome: CheckOutcome) -> list[KnownHits | None]:
        # The engine that ran the check, looked up, never built: `engine_for` would build (and swap in) an old
        # version when a reload replaced it meanwhile.
        engine = self.service.built_engine(outcome.policy)
        if engine is None:
            return []
        return [self._lookup(engine, cls, settings) for cls, settings in self.recognizers]

    @staticmethod
    def _lookup(engine: Engine, cls: type[Detector], settings: Mapping[str, Any]) -> KnownHits | None:
        keys = [slot.key for slot in engine.slots if type(slot.detector) is cls and slot.config.settings == settings]
        if not keys:
            return None
        cache = engine.cache

        def known(segment: Segment) -> Sequence[Hit] | None:
            for key in keys:
                hits = cache.table((key, segment.kind, segment.trust)).get(segment.text)
                if hits is not None:
                    return hits
            return None

        return known


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
