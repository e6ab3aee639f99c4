"""The check-service observer that writes one audit record per check before the caller gets its verdict."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from guardrails.audit.otlp import OtlpSender
from guardrails.audit.record import CONTENT_MODES, build_record
from guardrails.audit.store import AuditStore
from guardrails.config import redacted_url
from guardrails.errors import AuditUnavailable

if TYPE_CHECKING:
    from guardrails.service import CheckOutcome

log = logging.getLogger("guardrails.audit")


class AuditObserver:
    def __init__(self, store: AuditStore, content: str = "none", sender: OtlpSender | None = None) -> None:
        if content not in CONTENT_MODES:
            raise ValueError(f"GUARDRAILS_AUDIT_CONTENT must be one of {CONTENT_MODES}, got {content!r}")
        self.store, self.content, self.sender = store, content, sender
        self.refused = 0  # checks answered 503 since the store last accepted a record

    async def __call__(self, outcome: CheckOutcome) -> None:
        record = build_record(outcome, self.content)
        try:
            seq = await self.store.append(record)
        except Exception as exc:  # no verdict leaves without its record
            reason = " ".join(f"{type(exc).__name__}: {exc}".split())  # drivers' messages span lines
            self._refused(reason)
            raise AuditUnavailable(
                f"the audit record could not be written ({reason}); the check was not acknowledged"
            ) from exc
        if self.refused:
            log.warning("audit store %s accepts records again; %d check(s) were refused with 503 "
                        "audit_unavailable meanwhile", redacted_url(self.store.url), self.refused)
            self.refused = 0
        if self.sender is not None:
            self.sender.submit(record, seq)

    def _refused(self, reason: str) -> None:
        """Say once when the store starts failing (not once per check: an outage would flood the log)."""
        if not self.refused:
            log.error("audit store %s cannot write (%s): checks are refused with 503 audit_unavailable until "
                      "it can; check that the store is reachable and has space", redacted_url(self.store.url),
                      reason)
        self.refused += 1

    def close(self) -> None:
        if self.sender is not None:
            self.sender.close()
        self.store.close()
