"""Shared state for budgets and circuit breakers (docs/audit-and-budgets.md)."""

from __future__ import annotations

from guardrails.config import redacted_url
from guardrails.state.base import Breaker, RateAdd, RateStats, Snapshot, StateStore, WindowAdd


def open_state_store(url: str) -> StateStore:
    """`sqlite:///path` (embedded default) or `redis://host:port/db` (several replicas)."""
    scheme = url.split(":", 1)[0].lower()
    if scheme == "sqlite":
        from guardrails.state.sqlite import SQLiteStateStore

        return SQLiteStateStore(url)
    if scheme in ("redis", "rediss", "unix"):
        from guardrails.state.redis import RedisStateStore

        return RedisStateStore(url)
    raise ValueError(f"unsupported state store URL {redacted_url(url)!r}: use sqlite:///path or redis://host:port/db")


__all__ = ["Breaker", "RateAdd", "RateStats", "Snapshot", "StateStore", "WindowAdd", "open_state_store"]
