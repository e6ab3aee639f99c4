"""The audit log: one hash-chained, append-only record per check (docs/audit-and-budgets.md)."""

from __future__ import annotations

from guardrails.audit.chain import StoredRecord, VerifyReport
from guardrails.audit.store import AuditFilter, AuditStore, Page, parse_seq, parse_time, time_range
from guardrails.config import redacted_url

DISABLED = {"", "none", "off"}


def open_audit_store(url: str, create: bool = True) -> AuditStore:
    """`sqlite:///path` (embedded default) or `postgresql://...` (psycopg 3). `create=False` opens an
    existing log only (the readers: export, verify): a missing SQLite file or PostgreSQL table is an error."""
    scheme = url.split(":", 1)[0].lower()
    if scheme == "sqlite":
        from guardrails.audit.sqlite import SQLiteAuditStore

        return SQLiteAuditStore(url, create=create)
    if scheme in ("postgresql", "postgres"):
        from guardrails.audit.postgres import PostgresAuditStore

        return PostgresAuditStore(url, create=create)
    raise ValueError(f"unsupported audit store URL {redacted_url(url)!r}: use sqlite:///path or postgresql://...")


__all__ = [
    "DISABLED",
    "AuditFilter",
    "AuditStore",
    "Page",
    "StoredRecord",
    "VerifyReport",
    "open_audit_store",
    "parse_seq",
    "parse_time",
    "time_range",
]
