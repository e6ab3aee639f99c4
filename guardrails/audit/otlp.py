"""Live OTLP/HTTP JSON export of audit records to a collector (`GUARDRAILS_OTLP_ENDPOINT`).

Best effort by design: the audit store is the record of truth, so a collector that is down costs spans
(counted in `dropped`, recoverable with `guardrails audit export --format otlp`), never a check.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

import httpx

from guardrails.audit.export import otlp_request, otlp_span

log = logging.getLogger("guardrails.audit.otlp")


def traces_url(endpoint: str) -> str:
    """An OTLP/HTTP base endpoint gets the standard `/v1/traces` path; a full URL is kept."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/v1/traces") else endpoint + "/v1/traces"


class OtlpSender:
    def __init__(
        self, endpoint: str, batch: int = 100, linger_s: float = 1.0, timeout_s: float = 5.0
    ) -> None:
        self.url = traces_url(endpoint)
        self.batch, self.linger_s = batch, linger_s
        self.sent = self.dropped = 0
        self._client = httpx.Client(timeout=timeout_s)
        self._queue: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="otlp-sender", daemon=True)
        self._thread.start()

    def submit(self, record: dict[str, Any], seq: int | None = None) -> None:
        self._queue.put(otlp_span(record, seq))

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)
        self._client.close()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                return
            spans = [first]
            while len(spans) < self.batch:
                try:
                    span = self._queue.get(timeout=self.linger_s)
                except queue.Empty:
                    break
                if span is None:
                    stopping = True
                    break
                spans.append(span)
            self._post(spans)

    def _post(self, spans: list[dict[str, Any]]) -> None:
        try:
            response = self._client.post(self.url, json=otlp_request(spans))
            response.raise_for_status()
            self.sent += len(spans)
        except httpx.HTTPError as exc:
            self.dropped += len(spans)
            log.warning("OTLP export to %s failed (%d spans dropped): %s", self.url, len(spans), exc)
