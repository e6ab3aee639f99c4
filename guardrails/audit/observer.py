"""The check-service observer that writes one audit record per check before the caller gets its verdict."""

from __future__ import annotations

from typing import TYPE_CHECKING

from guardrails.audit.otlp import OtlpSender
from guardrails.audit.record import CONTENT_MODES, build_record
from guardrails.audit.store import AuditStore
from guardrails.errors import AuditUnavailable

if TYPE_CHECKING:
    from guardrails.service import CheckOutcome


class AuditObserver:
    def __init__(self, store: AuditStore, content: str = "none", sender: OtlpSender | None = None) -> None:
        if content not in CONTENT_MODES:
            raise ValueError(f"GUARDRAILS_AUDIT_CONTENT must be one of {CONTENT_MODES}, got {content!r}")
        self.store, self.content, self.sender = store, content, sender

    async def __call__(self, outcome: CheckOutcome) -> None:
        record = build_record(outcome, self.content)
        try:
            seq = await self.store.append(record)
        except Exception as exc:  # no verdict leaves without its record
            raise AuditUnavailable(
                f"the audit record could not be written ({type(exc).__name__}: {exc}); "
                "the check was not acknowledged"
            ) from exc
        if self.sender is not None:
            self.sender.submit(record, seq)

    def close(self) -> None:
        if self.sender is not None:
            self.sender.close()
        self.store.close()
