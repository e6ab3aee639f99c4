"""The audit store interface: append-only, hash-chained, acknowledged only after commit.

A store whose commit is slow (an fsync, a network round trip) writes through one writer thread: it takes
every record waiting in its queue, appends them in one transaction (group commit) and only then resolves
their futures, so a check returns after its record is durable and concurrent checks share one commit
instead of queueing for one each. A store whose commit is a few microseconds (SQLite WAL without fsync)
commits on the caller's thread: handing a record to a thread and back costs more than writing it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from guardrails.audit.chain import INDEXED, StoredRecord, VerifyReport, canonical, verify_chain
from guardrails.surrogates import without_surrogates

MAX_BATCH = 512
PAGE_MAX = 1000
MAX_SEQ = 2**63 - 1  # the largest sequence number the stores keep (SQLite INTEGER, PostgreSQL BIGINT)


@dataclass(frozen=True, slots=True)
class AuditFilter:
    since: float | None = None  # epoch seconds, inclusive
    until: float | None = None  # epoch seconds, exclusive
    tenant: str | None = None
    agent: str | None = None
    session: str | None = None
    verdict: str | None = None
    partial: bool | None = None  # True: mid-stream re-checks only; False: all but them; None: every record

    def where(self, after_seq: int, placeholder: str) -> tuple[str, list[Any]]:
        """SQL condition and parameters; `placeholder` is the driver's (`?` or `%s`)."""
        clauses, params = [f"seq > {placeholder}"], [after_seq]
        for column, op, value in (
            ("ts", ">=", self.since),
            ("ts", "<", self.until),
            ("tenant", "=", self.tenant),
            ("agent", "=", self.agent),
            ("session", "=", self.session),
            ("verdict", "=", self.verdict),
        ):
            if value is not None:
                clauses.append(f"{column} {op} {placeholder}")
                params.append(value)
        if self.partial is not None:  # NULL (not partial, or written before the column) is NOT TRUE
            clauses.append("partial IS TRUE" if self.partial else "partial IS NOT TRUE")
        return " AND ".join(clauses), params


@dataclass(frozen=True, slots=True)
class Page:
    records: list[StoredRecord]
    next_cursor: str | None


@dataclass(slots=True)
class PendingRow:
    """A record ready to append: its canonical bytes and the columns indexed beside it."""

    body: bytes
    columns: dict[str, Any]


def parse_time(value: str | float | None) -> float | None:
    """Epoch seconds from a number or an ISO 8601 date/time (naive means UTC)."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(value)
    except ValueError:
        pass
    text = value.strip().replace("Z", "+00:00")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"not a time: {value!r} (use ISO 8601, e.g. 2026-01-31T12:00:00Z, or epoch seconds)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


class AuditStore(ABC):
    """One audit log. Subclasses implement the three storage primitives; the rest is shared."""

    url: str
    inline_writes = False  # True: commit on the caller's thread (cheap commits); False: writer thread

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[PendingRow, concurrent.futures.Future[int]] | None] = (
            queue.SimpleQueue()
        )
        self._writer: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._inline_lock = threading.Lock()

    # -- storage primitives -------------------------------------------------------------------------
    @abstractmethod
    def _append_batch(self, rows: Sequence[PendingRow]) -> list[int]:
        """Append rows in one transaction, chained after the current head; return their sequence numbers."""

    @abstractmethod
    def _select(self, filt: AuditFilter, after_seq: int, limit: int) -> list[StoredRecord]:
        """Records matching `filt` with seq > after_seq, in sequence order."""

    @abstractmethod
    def close(self) -> None:
        """Stop the writer after it drained its queue, and close connections."""

    # -- writing ----------------------------------------------------------------------------------------
    def submit(self, record: dict[str, Any]) -> concurrent.futures.Future[int]:
        """Queue a record; the future resolves to its sequence number once committed."""
        row = _pending(record)
        future: concurrent.futures.Future[int] = concurrent.futures.Future()
        if self.inline_writes:
            try:
                future.set_result(self._append_inline(row))
            except Exception as exc:
                future.set_exception(exc)
            return future
        if self._writer is None:
            self._start_writer()
        self._queue.put((row, future))
        return future

    async def append(self, record: dict[str, Any]) -> int:
        if self.inline_writes:  # no future to build and resolve: the commit is done when this returns
            return self._append_inline(_pending(record))
        return await asyncio.wrap_future(self.submit(record))

    def _append_inline(self, row: PendingRow) -> int:
        with self._inline_lock:
            return self._append_batch([row])[0]

    def _start_writer(self) -> None:
        with self._start_lock:
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_loop, name="audit-writer", daemon=True)
                self._writer.start()

    def _stop_writer(self) -> None:
        if self._writer is not None:
            self._queue.put(None)
            self._writer.join(timeout=10)
            self._writer = None

    def _write_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            while len(batch) < MAX_BATCH:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)  # finish this batch, then stop
                    break
                batch.append(nxt)
            try:
                seqs = self._append_batch([row for row, _ in batch])
            except Exception as exc:  # every waiting check learns its record was not written
                for _, future in batch:
                    future.set_exception(exc)
                continue
            for (_, future), seq in zip(batch, seqs, strict=True):
                future.set_result(seq)

    # -- reading ----------------------------------------------------------------------------------------
    def page(self, filt: AuditFilter, cursor: str | None = None, limit: int = 100) -> Page:
        limit = max(1, min(limit, PAGE_MAX))
        after = _cursor(cursor)
        rows = self._select(filt, after, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(rows, str(rows[-1].seq) if more and rows else None)

    def iter_records(self, filt: AuditFilter | None = None, batch: int = 500) -> Iterator[StoredRecord]:
        filt = filt or AuditFilter()
        after = 0
        while True:
            rows = self._select(filt, after, batch)
            yield from rows
            if len(rows) < batch:
                return
            after = rows[-1].seq

    def verify(self, anchor: tuple[int, str] | None = None) -> VerifyReport:
        return verify_chain(self.iter_records(), anchor)


def _pending(record: dict[str, Any]) -> PendingRow:
    try:
        body = canonical(record)
    except TypeError:  # a lone surrogate (a library caller's string): recorded repaired, not refused
        record = without_surrogates(record)
        body = canonical(record)
    return PendingRow(body, {name: record.get(name) for name in INDEXED})


def _cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        value = int(cursor)
    except ValueError:
        raise ValueError(f"invalid cursor {cursor!r}") from None
    if not 0 <= value <= MAX_SEQ:  # past MAX_SEQ the driver refuses the parameter (a 500, not a 422)
        raise ValueError(f"invalid cursor {cursor!r}")
    return value
