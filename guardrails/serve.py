"""Wiring for `guardrails serve`: the one place where the core, the detectors and the API meet.

Detectors are found through their entry points (the core never imports one by name); the API is
imported here, at serve time, and nowhere else in the core.
"""

from __future__ import annotations

from typing import Any

from guardrails.config import Settings
from guardrails.detector import DetectorRegistry, Services
from guardrails.policy import PolicyStore
from guardrails.service import CheckService


def build_service(settings: Settings) -> CheckService:
    return CheckService(
        PolicyStore(settings.policy_dir),
        DetectorRegistry.from_entry_points(),
        Services(),
        default_policy=settings.default_policy,
        segment_cache_entries=settings.segment_cache_entries,
    )


def build_app(settings: Settings | None = None) -> Any:
    """ASGI app factory (uvicorn --factory); reads settings from the environment."""
    from api.app import create_app

    settings = settings or Settings.from_env()
    return create_app(build_service(settings), settings)
