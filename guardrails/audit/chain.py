"""Hash chaining: each stored record commits to its sequence number, its bytes and its predecessor.

    hash(n) = sha256("<seq>:<prev_hash>:" + canonical_json(record))

Changing a record's bytes or sequence number breaks its own hash; deleting or inserting one breaks the
`prev_hash` link (or leaves a gap in the sequence) of the record after it. Truncating the tail or
rewriting the whole chain is only visible against an anchor kept elsewhere (`verify --anchor SEQ:HASH`);
a store's high-water mark (`check_high_water`) also catches a tail cut below the last mark it wrote.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

GENESIS = "0" * 64
CANONICAL = orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
# Columns stored beside the record for filtering; verify checks they still match the record. `partial` is NULL
# for every check but a mid-stream re-check (and for records written before the column existed).
INDEXED = ("check_id", "ts", "tenant", "agent", "session", "verdict", "partial")


def canonical(record: dict[str, Any]) -> bytes:
    return orjson.dumps(record, option=CANONICAL)


def chain_hash(seq: int, prev_hash: str, body: bytes) -> str:
    return hashlib.sha256(f"{seq}:{prev_hash}:".encode() + body).hexdigest()


@dataclass(frozen=True, slots=True)
class StoredRecord:
    seq: int
    prev_hash: str
    hash: str
    body: bytes  # the canonical JSON the hash covers
    columns: dict[str, Any] = field(default_factory=dict)  # the indexed columns as stored

    def record(self) -> dict[str, Any]:
        return orjson.loads(self.body)

    def exported(self) -> dict[str, Any]:
        """The record plus its place in the chain, as exports and the API show it."""
        return {**self.record(), "audit": {"seq": self.seq, "prev_hash": self.prev_hash, "hash": self.hash}}


@dataclass(frozen=True, slots=True)
class Problem:
    seq: int
    check_id: str | None
    kind: str  # altered | inserted | deleted | columns | anchor
    message: str

    def __str__(self) -> str:
        return f"record {self.seq} ({self.check_id or 'unknown check'}): {self.kind}: {self.message}"


EMPTY_NOTE = ("the log holds no records, so nothing was verified. A log emptied with SQL looks the same: verify "
              "with an anchor (SEQ:HASH, the head a previous verify reported, kept outside the database) to prove "
              "that no record was removed")


@dataclass(slots=True)
class VerifyReport:
    checked: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS
    problems: list[Problem] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        """No record and no problem: nothing was verified, which is not a verified log."""
        return not self.checked and not self.problems

    @property
    def ok(self) -> bool:
        return not self.problems and not self.empty

    @property
    def status(self) -> str:
        return "empty" if self.empty else "ok" if self.ok else "failed"

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "status": self.status,
            **({"note": EMPTY_NOTE} if self.empty else {}),
            "checked": self.checked,
            "head": {"seq": self.head_seq, "hash": self.head_hash},
            "problems": [
                {"seq": p.seq, "check_id": p.check_id, "kind": p.kind, "message": p.message}
                for p in self.problems
            ],
        }


class LogDamaged(Exception):
    """The store itself cannot be read past some point (a SQLite file whose pages were overwritten): `verify` reports
    it as a problem of the log, not as a store it cannot reach."""


def chain_rows(head: tuple[int, str] | None, rows: Iterable[Any]) -> list[tuple[Any, ...]]:
    """Number and hash-chain a batch of pending rows after the current head; the insert tuples, in order.

    Each row has `.columns` (`INDEXED`) and `.body` (canonical bytes). The hash is last in each tuple.
    """
    seq, prev = head if head else (0, GENESIS)
    values = []
    for row in rows:
        seq += 1
        digest = chain_hash(seq, prev, row.body)
        c = row.columns
        values.append((seq, c["check_id"], c["ts"], c["tenant"], c["agent"], c["session"], c["verdict"],
                       c["partial"], row.body, prev, digest))
        prev = digest
    return values


def verify_chain(
    rows: Iterable[StoredRecord],
    anchor: tuple[int, str] | None = None,
    *,
    open_start: bool = False,
    gaps: list[tuple[int, int]] | None = None,
) -> VerifyReport:
    """Walk the chain in sequence order and name every record that breaks it.

    A store's chain starts at record 1. An exported file may not (`open_start`: an export from `--since` begins
    later, and its first record's link to the one before is taken as is), and a filtered export leaves records out:
    with `gaps`, each jump in the sequence is added there as `(first, last)` missing instead of being reported as
    deleted, and the link across it is not checked (the record before is not in the rows)."""
    report = VerifyReport()
    prev_seq, prev_hash = 0, GENESIS
    anchor_seen = started = False
    for row in _readable(rows, report):
        report.checked += 1
        record = _parsed(row)
        check_id = (record or row.columns).get("check_id")
        check_id = None if check_id is None else str(check_id)
        if row.seq < 1:  # exports never show it (they start at 1); only a forger writes one
            report.problems.append(
                Problem(row.seq, check_id, "inserted", "sequence numbers start at 1: no service wrote this record")
            )
            continue
        if open_start and not started:
            prev_seq, prev_hash = row.seq - 1, row.prev_hash
        started = True
        own_ok = chain_hash(row.seq, row.prev_hash, row.body) == row.hash
        linked = row.prev_hash == prev_hash
        skipped = row.seq != prev_seq + 1
        if skipped and gaps is not None and row.seq > prev_seq + 1:
            gaps.append((prev_seq + 1, row.seq - 1))
            skipped = False
            linked = True  # the record it links to is not in the rows: the link cannot be checked
        if skipped:
            report.problems.append(
                Problem(
                    row.seq,
                    check_id,
                    "deleted",
                    f"records {prev_seq + 1}..{row.seq - 1} are missing before this one",
                )
            )
        elif not own_ok and not linked:
            report.problems.append(
                Problem(
                    row.seq,
                    check_id,
                    "inserted",
                    "neither its hash nor its link to the previous record is valid",
                )
            )
        elif not own_ok:
            report.problems.append(
                Problem(row.seq, check_id, "altered", "its content no longer matches its hash")
            )
        elif not linked:
            # Either this record was forged, or the one before was rewritten with a hash recomputed to match: the
            # chain cannot tell which, so the message names both (a backup or an export of the earlier one tells).
            report.problems.append(
                Problem(
                    row.seq,
                    check_id,
                    "inserted",
                    f"it does not follow record {prev_seq} (prev_hash mismatch): this record was forged, or record "
                    f"{prev_seq} was rewritten and its hash recomputed",
                )
            )
        mismatch = _column_mismatch(row, record)
        if mismatch:
            report.problems.append(
                Problem(row.seq, check_id, "columns", f"indexed column {mismatch} was changed")
            )
        if anchor and row.seq == anchor[0]:
            anchor_seen = True
            if row.hash != anchor[1]:
                report.problems.append(Problem(row.seq, check_id, "anchor", "hash differs from the anchor"))
        prev_seq, prev_hash = row.seq, row.hash
    report.head_seq, report.head_hash = prev_seq, prev_hash
    damaged = any(p.kind == "damaged" for p in report.problems)
    if anchor and not anchor_seen and not damaged:  # past unreadable pages the anchor cannot be judged
        report.problems.append(
            Problem(anchor[0], None, "deleted", f"the anchored record is gone (the chain ends at {prev_seq})")
        )
    return report


def check_high_water(report: VerifyReport, high: int | None) -> None:
    """Report records missing from the end of a store's log: `high` is a sequence number the store remembers having
    written (its high-water mark, read before the chain was walked), which a log cut short, or emptied, no longer
    reaches. Past unreadable pages the end cannot be judged (the damage is reported already)."""
    if high is None or high <= report.head_seq or any(p.kind == "damaged" for p in report.problems):
        return
    first = report.head_seq + 1
    where = f"ends at record {report.head_seq}" if report.checked else "holds no records"
    report.problems.append(Problem(first, None, "deleted", f"records {first}..{high} are missing from the end of the "
                                                           f"log: the store wrote record {high} (its high-water mark) "
                                                           f"and the log now {where}"))


def _readable(rows: Iterable[StoredRecord], report: VerifyReport) -> Iterator[StoredRecord]:
    """The rows, until the store cannot read on: that is reported as a `damaged` problem, after the last row read."""
    last = 0
    try:
        for row in rows:
            last = row.seq
            yield row
    except LogDamaged as exc:
        where = f"after record {last}" if last else "from its start"
        report.problems.append(Problem(last + 1, None, "damaged", f"the log cannot be read {where}: {exc}"))


def _parsed(row: StoredRecord) -> dict[str, Any] | None:
    try:
        record = row.record()
    except orjson.JSONDecodeError:
        return None  # reported as altered (its bytes no longer match their hash)
    return record if isinstance(record, dict) else None


def _column_mismatch(row: StoredRecord, record: dict[str, Any] | None) -> str | None:
    if record is None:
        return None  # already reported as altered
    for name in INDEXED:
        if name in row.columns and row.columns[name] != record.get(name):
            return name
    return None
