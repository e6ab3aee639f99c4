"""The audit store interface: append-only, hash-chained, acknowledged only after commit.

A store whose commit is slow (an fsync, a network round trip) writes through one writer thread: it takes
every record waiting in its queue, appends them in one transaction (group commit) and only then resolves
their futures, so a check returns after its record is durable and concurrent checks share one commit
instead of queueing for one each. A store whose commit is a few microseconds (SQLite WAL without fsync)
commits on the caller's thread: handing a record to a thread and back costs more than writing it. That
commit never waits: where it would (another process holds the log's lock), the writer thread takes the record.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from guardrails.audit.chain import (
    GENESIS,
    INDEXED,
    StoredRecord,
    VerifyReport,
    canonical,
    check_high_water,
    verify_chain,
)
from guardrails.findings import Category
from guardrails.surrogates import without_surrogates

MAX_BATCH = 512
# The store remembers the highest sequence number it wrote (its high-water mark, in a table beside the log): each
# transaction that appends (one record inline, or a writer-thread batch) raises it to its last record, in that same
# transaction, and a service raises it to the log's head when it opens the log. `verify` reports a log that no
# longer reaches the mark, so removing even the last record is caught without an anchor.
HIGH_WATER_KEY = "high_seq"
PAGE_MAX = 1000
MAX_SEQ = 2**63 - 1  # the largest sequence number the stores keep (SQLite INTEGER, PostgreSQL BIGINT)
MIN_SEQ = -(2**63)
EVERY_ROW = MIN_SEQ - 1  # an `after_seq` below any row (never sent to the database as such)
CATEGORIES = tuple(c.value for c in Category)
# Epoch seconds past 9999-12-31: epoch milliseconds or microseconds, which would select nothing (or everything).
MAX_EPOCH_S = 253_402_300_799


@dataclass(frozen=True, slots=True)
class AuditFilter:
    since: float | None = None  # epoch seconds, inclusive
    until: float | None = None  # epoch seconds, exclusive
    tenant: str | None = None
    agent: str | None = None
    session: str | None = None
    verdict: str | None = None
    partial: bool | None = None  # True: mid-stream re-checks only; False: all but them; None: every record
    check_id: str | None = None
    category: str | None = None  # records with at least one finding of this category (any action)
    after_seq: int | None = None  # records numbered above this one (exclusive: an anchor's or a previous head's SEQ)
    to_seq: int | None = None  # records numbered up to this one (inclusive: the head `verify` printed)

    def __post_init__(self) -> None:
        # A swapped range selects nothing: an empty export that reads as "no incidents" must not come from a typo.
        if self.since is not None and self.until is not None and self.since > self.until:
            raise ValueError(f"since ({_shown(self.since)}) is after until ({_shown(self.until)}): nothing can match")
        if self.category is not None and self.category not in CATEGORIES:
            raise ValueError(f"unknown finding category {self.category!r}; one of: {', '.join(CATEGORIES)}")
        _check_seq("after_seq", self.after_seq, 0)
        _check_seq("to_seq", self.to_seq, 1)
        if self.after_seq is not None and self.to_seq is not None and self.after_seq >= self.to_seq:
            raise ValueError(f"after_seq ({self.after_seq}) is not below to_seq ({self.to_seq}): nothing can match "
                             "(after_seq is exclusive, to_seq inclusive)")

    def where(self, after_seq: int, placeholder: str, contains: str = "instr(body, {p}) > 0") -> tuple[str, list[Any]]:
        """SQL condition and parameters; `placeholder` is the driver's (`?` or `%s`), `contains` its byte search
        in the body (SQLite's `instr`, PostgreSQL's `position`). `after_seq` is the reader's position (a cursor),
        combined with the filter's own range. `after_seq=EVERY_ROW` selects every row, also the ones with a
        sequence number below 1 that no service writes (verify reads them)."""
        lower = after_seq if self.after_seq is None else max(after_seq, self.after_seq)
        if lower < MIN_SEQ:
            clauses, params = [f"seq >= {placeholder}"], [MIN_SEQ]
        else:
            clauses, params = [f"seq > {placeholder}"], [lower]
        if self.to_seq is not None:
            clauses.append(f"seq <= {placeholder}")
            params.append(self.to_seq)
        for column, op, value in (
            ("ts", ">=", self.since),
            ("ts", "<", self.until),
            ("tenant", "=", self.tenant),
            ("agent", "=", self.agent),
            ("session", "=", self.session),
            ("verdict", "=", self.verdict),
            ("check_id", "=", self.check_id),
        ):
            if value is not None:
                clauses.append(f"{column} {op} {placeholder}")
                params.append(value)
        if self.partial is not None:  # NULL (not partial, or written before the column) is NOT TRUE
            clauses.append("partial IS TRUE" if self.partial else "partial IS NOT TRUE")
        if self.category is not None:  # a byte search narrows the rows; `matches` reads the findings themselves
            clauses.append(contains.format(p=placeholder))
            params.append(_category_bytes(self.category))
        return " AND ".join(clauses), params

    def matches(self, row: StoredRecord) -> bool:
        """What SQL cannot say exactly: whether a finding of the record has the category."""
        if self.category is None:
            return True
        try:
            findings = row.record().get("findings") or []
        except (orjson.JSONDecodeError, AttributeError):
            return False  # not a record (verify reports it)
        return any(isinstance(f, dict) and f.get("category") == self.category for f in findings)


def _check_seq(name: str, value: int | None, low: int) -> None:
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{name} must be a sequence number (an integer), got {value!r}")
    if not low <= value <= MAX_SEQ:  # past MAX_SEQ the driver refuses the parameter (a 500, not a 422)
        raise ValueError(f"{name} must be between {low} and {MAX_SEQ} (records are numbered from 1), got {value}")


def parse_seq(value: str | None, name: str) -> int | None:
    """A sequence number given as text (a CLI option, a query parameter): ASCII digits only, so `-1`, `1.5`, `1e3`
    and other scripts' digits (which int() would read) are refused with a message that names the option."""
    if value is None or value == "":
        return None
    text = value.strip()
    if text.isascii() and text.isdigit() and len(text) <= len(str(MAX_SEQ)):
        return int(text)
    if text.startswith("-"):
        raise ValueError(f"{name} must be 0 or more (records are numbered from 1), got {value!r}")
    raise ValueError(f"{name} must be a record's sequence number (a whole number in digits), got {value!r}")


def _category_bytes(category: str) -> bytes:
    """How a finding's category is written in the canonical JSON (sorted keys, no spaces)."""
    return b'"category":' + orjson.dumps(category)


def _shown(ts: float) -> str:
    try:
        return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds")
    except (ValueError, OverflowError, OSError):  # before the year 1: the number itself
        return repr(ts)


@dataclass(frozen=True, slots=True)
class Page:
    records: list[StoredRecord]
    next_cursor: str | None


@dataclass(slots=True)
class PendingRow:
    """A record ready to append: its canonical bytes and the columns indexed beside it."""

    body: bytes
    columns: dict[str, Any]


# A stored row, in the order both stores insert (`chain_rows`) and select it: `stored_record` reads it back.
COLUMNS = ", ".join(("seq", *INDEXED, "body", "prev_hash", "hash"))


def stored_record(row: Sequence[Any]) -> StoredRecord:
    """A row of `COLUMNS` as read from either store."""
    seq, *indexed, body, prev_hash, digest = row
    # SQLite answers TEXT for a body another writer stored as text; PostgreSQL's BYTEA may come as a memoryview.
    body = body.encode() if isinstance(body, str) else bytes(body)
    return StoredRecord(seq, prev_hash, digest, body, dict(zip(INDEXED, indexed, strict=True)))


def parse_time(value: str | float | None) -> float | None:
    """Epoch seconds from a number or an ISO 8601 date/time (naive means UTC).

    Refused rather than read as something that silently selects nothing or everything: NaN and infinities, epoch
    milliseconds (past year 9999 as seconds), and digits that are also an ISO 8601 basic date (`20260131`)."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return _epoch(float(value), value)
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        if text.isdigit() and _iso(text) is not None:
            raise ValueError(f"ambiguous time {value!r}: write {_iso(text):%Y-%m-%d} for that date, "
                             f"or {text}.0 for epoch seconds")
        return _epoch(number, value)
    moment = _iso(text.replace("Z", "+00:00"))
    if moment is None:
        raise ValueError(f"not a time: {value!r} (use ISO 8601, e.g. 2026-01-31T12:00:00Z, or epoch seconds)")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def time_range(since: str | None, until: str | None, names: tuple[str, str] = ("since", "until")
               ) -> tuple[float | None, float | None]:
    """`since` and `until` read as epoch seconds; `names` are the caller's words for them (options, parameters).
    `until` is exclusive, so the same time for both selects nothing: refused like a swapped range (AuditFilter),
    since an empty export reads as "no incidents"."""
    start, end = parse_time(since), parse_time(until)
    if start is not None and end is not None and start == end:
        raise ValueError(f"{names[0]} equals {names[1]} ({since} and {until}): an empty range, nothing can match "
                         f"({names[1]} is exclusive; to select one instant, give {names[1]} a later time)")
    return start, end


def _iso(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _epoch(number: float, value: str | float) -> float:
    if not math.isfinite(number):
        raise ValueError(f"not a time: {value!r} (use ISO 8601, e.g. 2026-01-31T12:00:00Z, or epoch seconds)")
    if abs(number) > MAX_EPOCH_S:
        ms = abs(number) <= MAX_EPOCH_S * 1000
        hint = f" (epoch milliseconds? divide by 1000: {number / 1000:.3f})" if ms else ""
        raise ValueError(f"not a time: {value!r} is past the year 9999 in epoch seconds{hint}")
    return number


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
        # The chain head a store caches: one writer at a time, the caller's thread (inline) or the writer thread.
        self._head_lock = threading.Lock()

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

    def _append_now(self, rows: Sequence[PendingRow]) -> list[int] | None:
        """`_append_batch` on the caller's thread without waiting on a lock another process holds: None (nothing
        written) where it would have to wait. A store that cannot tell (or never waits) appends as usual."""
        return self._append_batch(rows)

    def _append_waiting(self, rows: Sequence[PendingRow]) -> list[int]:
        """`_append_batch` on the writer thread, which may wait on such a lock."""
        return self._append_batch(rows)

    def _high_water(self) -> int | None:
        """The highest sequence number the store remembers writing (a lower bound of its real high), or None where
        it keeps none (a log opened read-only that no service of this version wrote to)."""
        return None

    # -- writing ----------------------------------------------------------------------------------------
    def submit(self, record: dict[str, Any]) -> concurrent.futures.Future[int]:
        """Queue a record; the future resolves to its sequence number once committed."""
        row = _pending(record)
        if self.inline_writes:
            future: concurrent.futures.Future[int] = concurrent.futures.Future()
            try:
                seq = self._append_inline(row)
            except Exception as exc:
                future.set_exception(exc)
                return future
            if seq is not None:
                future.set_result(seq)
                return future
        return self._enqueue(row)

    async def append(self, record: dict[str, Any]) -> int:
        row = _pending(record)
        if self.inline_writes:  # no future to build and resolve: the commit is done when this returns
            seq = self._append_inline(row)
            if seq is not None:
                return seq
        # The writer thread commits it (and waits on a lock if it must) while the loop serves other requests.
        return await asyncio.wrap_future(self._enqueue(row))

    def _append_inline(self, row: PendingRow) -> int | None:
        """Commit on the caller's thread, never waiting: None (nothing written; the writer thread takes it) while
        records wait in the queue (they keep their order), the writer thread holds the head, or another process
        holds the log's write lock."""
        if not self._queue.empty() or not self._head_lock.acquire(blocking=False):
            return None
        try:
            seqs = self._append_now([row])
        finally:
            self._head_lock.release()
        return None if seqs is None else seqs[0]

    def _enqueue(self, row: PendingRow) -> concurrent.futures.Future[int]:
        future: concurrent.futures.Future[int] = concurrent.futures.Future()
        if self._writer is None:
            self._start_writer()
        self._queue.put((row, future))
        return future

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
            for _, future in batch:  # a check cancelled from now on (its client left) cannot cancel its future
                future.set_running_or_notify_cancel()
            try:
                with self._head_lock:
                    seqs = self._append_waiting([row for row, _ in batch])
            except Exception as exc:  # every waiting check learns its record was not written
                for _, future in batch:
                    if future.running():
                        future.set_exception(exc)
                continue
            for (_, future), seq in zip(batch, seqs, strict=True):
                if future.running():  # one cancelled before: its record is written all the same, no one waits
                    future.set_result(seq)

    # -- reading ----------------------------------------------------------------------------------------
    def page(self, filt: AuditFilter, cursor: str | None = None, limit: int = 100) -> Page:
        limit = max(1, min(limit, PAGE_MAX))
        after = _cursor(cursor)
        rows = self._matching(filt, after, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(rows, str(rows[-1].seq) if more and rows else None)

    def iter_records(self, filt: AuditFilter | None = None, batch: int = 500) -> Iterator[StoredRecord]:
        filt = filt or AuditFilter()
        after = 0
        while True:
            rows = self._matching(filt, after, batch)
            yield from rows
            if len(rows) < batch:
                return
            after = rows[-1].seq

    def _matching(self, filt: AuditFilter, after: int, limit: int) -> list[StoredRecord]:
        """Up to `limit` rows after `after` that match `filt` exactly: SQL's rows, less those `filt.matches`
        refuses (then the next rows are read, so a short answer still means there are no more)."""
        found: list[StoredRecord] = []
        while True:
            wanted = limit - len(found)
            rows = self._select(filt, after, wanted)
            found += [row for row in rows if filt.matches(row)]
            if len(rows) < wanted or len(found) >= limit:
                return found
            after = rows[-1].seq

    def verify(self, anchor: tuple[int, str] | None = None) -> VerifyReport:
        high = self._high_water()  # read before the walk: records appended during it are not missing from it
        report = verify_chain(self._every_row(), anchor)
        check_high_water(report, high)
        return report

    def _every_row(self, batch: int = 500) -> Iterator[StoredRecord]:
        """Every row in sequence order, also any below 1 (no service writes one: a forger's, hidden from exports)."""
        after = EVERY_ROW
        while True:
            rows = self._select(AuditFilter(), after, batch)
            yield from rows
            if len(rows) < batch:
                return
            after = rows[-1].seq


def chain_start(head: tuple[int, str] | None, mark: int | None) -> tuple[int, str] | None:
    """Where a transaction's records are chained: after the log's head (`(seq, hash)`, None when empty), numbered
    after the high-water mark where the log no longer reaches it. Its tail was cut: new records leave that gap for
    `verify` to report (`records 8..10 are missing before this one`) instead of taking the cut records' numbers,
    which would hide the cut once the log reached the mark again."""
    if not isinstance(mark, int) or mark <= (head[0] if head else 0):  # (a mark rewritten as text: not one)
        return head
    return mark, head[1] if head else GENESIS


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
