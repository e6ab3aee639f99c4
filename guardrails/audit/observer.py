"""The check-service observer that writes one audit record per check before the caller gets its verdict."""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from guardrails.audit.otlp import OtlpSender
from guardrails.audit.record import CONTENT_MODES, UNREDACTED, Redactor, build_record
from guardrails.audit.store import MAX_SEQ, AuditFilter, AuditStore
from guardrails.config import redacted_url
from guardrails.errors import AuditUnavailable

if TYPE_CHECKING:
    from guardrails.exchange import Segment
    from guardrails.service import CheckOutcome

log = logging.getLogger("guardrails.audit")
PROBE_INTERVAL_S = 5.0  # while writes fail, /readyz asks the store a read at most this often
REDACTOR_LOG_INTERVAL_S = 60.0  # a redactor that fails on every check logs a line at most this often


class AuditObserver:
    """`redactor`: with `content="redacted"`, the spans to mask in each segment besides the findings' (the PII and
    secret recognizers, built by `guardrails/serve.py`; one with a `for_check(outcome)` method is bound to each check
    first); the other modes never call it. A segment it fails on is stored as `[unredacted]`, counted in
    `redaction_failures` (`guardrails_audit_redaction_failures_total` on /metrics: api/metrics.py) and logged (the
    record is written all the same)."""

    def __init__(self, store: AuditStore, content: str = "none", sender: OtlpSender | None = None,
                 redactor: Redactor | None = None) -> None:
        if content not in CONTENT_MODES:
            raise ValueError(f"GUARDRAILS_AUDIT_CONTENT must be one of {CONTENT_MODES}, got {content!r}")
        self.store, self.content, self.sender = store, content, sender
        self.redactor = redactor if content == "redacted" else None  # only kept text is redacted
        self.redaction_failures = 0  # segments stored as [unredacted] because the redactor raised
        self._redaction_logged: float | None = None  # when the last redactor failure was logged (monotonic)
        self._redaction_unlogged = 0  # failures since then, not logged
        self.refused = 0  # checks answered 503 since the store last accepted a record
        self.failing_since: float | None = None  # when the last write failed, until a write or probe succeeds
        self.probe_interval_s = PROBE_INTERVAL_S
        self.probe: concurrent.futures.Future[None] | None = None  # the store probe in flight, or the last one
        self._probed_at = 0.0
        self._last_failure = 0.0

    async def __call__(self, outcome: CheckOutcome) -> None:
        redactor = self.redactor
        bind = getattr(redactor, "for_check", None)  # a redactor that can reuse what this check's policy found
        if bind is not None:
            try:
                redactor = bind(outcome)
            except Exception:  # the reuse is lost, not the record: the redactor reads every segment itself
                log.debug("audit redactor: could not bind check %s", outcome.check_id, exc_info=True)
        record = build_record(outcome, self.content, redactor, self._redactor_failed)
        try:
            seq = await self.store.append(record)
        except Exception as exc:  # no verdict leaves without its record
            reason = " ".join(f"{type(exc).__name__}: {exc}".split())  # drivers' messages span lines
            self._refused(reason)
            raise AuditUnavailable(
                f"the audit record could not be written ({reason}); the check was not acknowledged"
            ) from exc
        self.failing_since = None
        if self.refused:
            log.warning("audit store %s accepts records again; %d check(s) were refused with 503 "
                        "audit_unavailable meanwhile", redacted_url(self.store.url), self.refused)
            self.refused = 0
        if self.sender is not None:
            self.sender.submit(record, seq)

    def _redactor_failed(self, segment: Segment, exc: Exception) -> None:
        """Count it, and log it at most once a minute: the exception's class only (its message may quote the text)."""
        self.redaction_failures += 1
        now = time.monotonic()
        if self._redaction_logged is not None and now - self._redaction_logged < REDACTOR_LOG_INTERVAL_S:
            self._redaction_unlogged += 1
            return
        more = f"; {self._redaction_unlogged} more since the last line" if self._redaction_unlogged else ""
        log.error("audit redactor failed (%s) on %s: its text is stored as %s, not redacted (%d segment(s) so "
                  "far)%s", type(exc).__name__, segment.pointer, UNREDACTED, self.redaction_failures, more)
        self._redaction_logged, self._redaction_unlogged = now, 0

    def _refused(self, reason: str) -> None:
        """Say once when the store starts failing (not once per check: an outage would flood the log)."""
        if not self.refused:
            log.error("audit store %s cannot write (%s): checks are refused with 503 audit_unavailable until "
                      "it can; check that the store is reachable and has space", redacted_url(self.store.url),
                      reason)
        self._last_failure = time.time()
        if self.failing_since is None:
            self.failing_since = self._last_failure
        self.refused += 1

    def problems(self) -> dict[str, str]:
        """What /readyz reports (and is not ready for) while the last write failed: checks are refused anyway.

        Only a check learns that writes fail. Once the load balancer stops sending checks, none would learn
        that the store is back: so while failing, this also starts a read of the store in the background (never
        waited for: a hung store must not hold /readyz); when the store answers, readiness returns and the next
        check's write confirms it (or reports the failure again)."""
        since = self.failing_since
        if since is None:
            return {}
        self._start_probe()
        started = datetime.fromtimestamp(since, UTC).isoformat(timespec="seconds")
        return {"audit": f"writes failing since {started} ({self.refused} checks refused)"}

    def _start_probe(self) -> None:
        now = time.monotonic()
        if (self.probe is not None and not self.probe.done()) or now - self._probed_at < self.probe_interval_s:
            return
        self._probed_at = now
        self.probe = concurrent.futures.Future()
        threading.Thread(target=self._run_probe, args=(self.probe,), name="audit-probe", daemon=True).start()

    def _run_probe(self, done: concurrent.futures.Future[None]) -> None:
        started = time.time()
        try:
            self.store.page(AuditFilter(), str(MAX_SEQ), 1)  # past the last record: an index lookup, no rows
            # A write that failed meanwhile outweighs a read that worked (a full disk still serves reads).
            if self.failing_since is not None and self._last_failure < started:
                self.failing_since = None
                log.info("audit store %s answers again: /readyz reports ready; the next check's write confirms it",
                         redacted_url(self.store.url))
        except Exception:  # still failing: the check that failed logged why
            pass
        finally:
            done.set_result(None)

    def close(self) -> None:
        if self.sender is not None:
            self.sender.close()
        self.store.close()
