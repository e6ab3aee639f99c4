"""Hash chaining: each stored record commits to its sequence number, its bytes and its predecessor.

    hash(n) = sha256("<seq>:<prev_hash>:" + canonical_json(record))

The canonical JSON has sorted keys and writes every whole number as an integer (`1.0` as `1`): the form jq and
JavaScript's `JSON.stringify` leave as they found it, so an exported line they re-encoded still hashes to its record.
Records written before that form kept `1.0`: a file's record is checked against both (`candidate_bodies`).

Changing a record's bytes or sequence number breaks its own hash; deleting or inserting one breaks the
`prev_hash` link (or leaves a gap in the sequence) of the record after it. Truncating the tail or
rewriting the whole chain is only visible against an anchor kept elsewhere (`verify --anchor SEQ:HASH`);
a store's high-water mark (`check_high_water`) also catches a tail cut below the last mark it wrote.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

GENESIS = "0" * 64
CANONICAL = orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
# Columns stored beside the record for filtering; verify checks they still match the record. `partial` is NULL
# for every check but a mid-stream re-check (and for records written before the column existed).
INDEXED = ("check_id", "ts", "tenant", "agent", "session", "verdict", "partial")


# Whole numbers written as integers: those orjson writes as one (signed or unsigned 64-bit); past them a number is
# read back as a float by orjson whatever its form, so it stays one.
INT_MIN, INT_END = -(2**63), 2**64
# Records written before whole numbers were integers: where their writer (guardrails/audit/record.py, the
# low_confidence and budget signals) wrote floats, so `1.0` re-encoded as `1` can be written back as it was.
# A path is keys from the record's top; `*` is every value of an object, `[]` every item of a list.
LEGACY_FLOATS = tuple(tuple(path.split(".")) for path in (
    "ts", "timings_ms.normalize", "timings_ms.total", "timings_ms.detectors.*", "findings.[].score",
    "logprobs.thresholds.token", "logprobs.thresholds.segment", "logprobs.units.[].mean", "logprobs.units.[].min",
    "logprobs.units.[].ppl", "logprobs.units.[].entropy", "logprobs.units.[].margin", "logprobs.units.[].low_share",
    "budget.spent.*", "budget.totals.*",
))


# A whole-number float as orjson writes one below 1e16 (`12.0`, then `,`, `}` or `]`); from 1e16 it writes `1e+16`.
_WHOLE_FLOAT = re.compile(rb"\.0(?=[,}\]])")


def canonical(record: dict[str, Any]) -> bytes:
    """The bytes a record is stored and hashed as: sorted keys, whole numbers as integers.

    On the append path: orjson writes the record, and its whole-number floats are rewritten in the bytes (walking the
    record in Python costs several times the write); a float written with an exponent, or an integer orjson refuses,
    takes the walk (`_plain`), which gives the same bytes."""
    try:
        body = orjson.dumps(record, option=CANONICAL)
    except TypeError:  # an integer past 64 bits (a lone surrogate fails again: the caller repairs it)
        return orjson.dumps(_plain(record), option=CANONICAL)
    if b"e+" in body:  # 1e+16 and up (or text that reads so: then the walk costs a little more)
        return orjson.dumps(_plain(record), option=CANONICAL)
    return _whole_numbers(body)


def _whole_numbers(body: bytes) -> bytes:
    """`body` (orjson's compact JSON) with each whole-number float outside strings written as an integer: `12.0` as
    `12`, `-0.0` as `0`."""
    found = [match.start() for match in _WHOLE_FLOAT.finditer(body)]
    if not found:
        return body
    # A match is in a string when the quotes before it, less escaped ones, are odd; `\\` escapes no quote.
    plain = body.replace(b"\\\\", b"__")
    parts, kept, quotes, scanned = [], 0, 0, 0
    for at in found:
        quotes += plain.count(b'"', scanned, at) - plain.count(b'\\"', scanned, at)
        scanned = at
        if quotes % 2:
            continue
        if body[at - 2 : at] == b"-0" and body[at - 3 : at - 2] in (b":", b",", b"["):
            parts += (body[kept : at - 2], b"0")  # -0.0: JSON readers give 0, and JSON.stringify writes 0
        else:
            parts.append(body[kept:at])
        kept = at + 2
    parts.append(body[kept:])
    return b"".join(parts)


def legacy_canonical(record: dict[str, Any]) -> bytes:
    """The form records were hashed in before `canonical` wrote whole numbers as integers (`1.0` stayed `1.0`)."""
    return orjson.dumps(record, option=CANONICAL)


def candidate_bodies(record: dict[str, Any]) -> Iterator[bytes]:
    """The bytes a parsed record may have been hashed as, each form once, likeliest first: as written now; as parsed
    (a record written before, its numbers as they were); and that older record after a re-encoder (jq, Node) turned its
    `1.0` into `1` (and `-0.0` into `0`: each sign of its first zeros is tried). Every form holds the same values: a
    record whose values changed matches none of them."""
    seen: set[bytes] = set()
    for body in (canonical(record), legacy_canonical(record)):
        if body not in seen:
            seen.add(body)
            yield body
    body, zeros = _legacy_reencoded(record)
    if body not in seen:
        seen.add(body)
        yield body
    for negative in range(1, 2 ** min(zeros, SIGNED_ZEROS)):
        yield _legacy_reencoded(record, negative)[0]


# Zeros in a re-encoded older record whose sign is tried (2**n forms): a logprob rounded to -0.0 is written `0`.
SIGNED_ZEROS = 6


def _legacy_reencoded(record: dict[str, Any], negative: int = 0) -> tuple[bytes, int]:
    """The older form of `record` with the whole numbers at `LEGACY_FLOATS` written back as floats, the zeros whose bit
    is set in `negative` as -0.0; and how many zeros there are."""
    zeros = 0

    def as_float(value: Any) -> Any:
        nonlocal zeros
        if type(value) is not int:
            return value
        if value:
            return float(value)
        zeros += 1
        return -0.0 if negative >> (zeros - 1) & 1 else 0.0

    copy = record
    for path in LEGACY_FLOATS:
        copy = _floats_at(copy, path, as_float)
    return legacy_canonical(copy), zeros


def _floats_at(value: Any, path: tuple[str, ...], as_float: Callable[[Any], Any]) -> Any:
    """`value` with `as_float` applied at `path` (a copy where something changes)."""
    if not path:
        return as_float(value)
    key, rest = path[0], path[1:]
    if key == "[]":
        return [_floats_at(item, rest, as_float) for item in value] if isinstance(value, list) else value
    if not isinstance(value, dict):
        return value
    if key == "*":
        return {k: _floats_at(v, rest, as_float) for k, v in value.items()}
    if key not in value:
        return value
    return {**value, key: _floats_at(value[key], rest, as_float)}


def _plain(value: Any) -> Any:
    """`value` with whole-number floats as integers, and integers no JSON reader keeps exactly (past 64 bits) as
    strings: orjson refuses them, which would refuse the record."""
    kind = type(value)
    if kind is str or value is None:
        return value
    if kind is dict:
        return {k: _plain(v) for k, v in value.items()}
    if kind is list or kind is tuple:
        return [_plain(v) for v in value]
    if kind is float or isinstance(value, (float, np.floating)):
        number = float(value)
        return int(number) if number.is_integer() and INT_MIN <= number < INT_END else number
    if kind is int:
        return value if INT_MIN <= value < INT_END else str(value)
    if isinstance(value, np.integer):
        return _plain(int(value))
    return value


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
    kind: str  # altered | inserted | deleted | renumbered | columns | anchor | damaged
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
    head_written: int = 0  # the number the head was written with: head_seq unless the log was renumbered

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


# A record renumbered (rows deleted or inserted before it, and the rest renumbered to hide it) still matches its hash
# under the number it was written with: looked for up to this far either way, for at most this many records a verify
# (an altered record costs one hash per number tried).
MAX_RENUMBERING = 1000
RENUMBERING_SEARCHES = 16


@dataclass(slots=True)
class _Run:
    """Consecutive records renumbered by the same amount: reported as one problem, on the first."""

    first: int  # its sequence number now
    last: int
    shift: int  # written as seq + shift
    written_before: int  # the number the record before the run was written with
    check_id: str | None
    at: int  # where its problem goes in the report (problems found inside the run come after it)

    def problem(self) -> Problem:
        d, first, last = self.shift, self.first, self.last
        now = f"record {first} was" if first == last else f"records {first}..{last} were"
        was = f"{first + d}" if first == last else f"{first + d}..{last + d}"
        expected = self.written_before + 1
        if first + d > expected:
            gone = _numbers(expected, first + d - 1)
            why = (f"{gone} as written {'is' if expected == first + d - 1 else 'are'} missing before it, and the "
                   f"records after the gap renumbered down by {d} to close it")
        elif first + d < expected:
            inserted = _numbers(first + d, first - 1)
            verb = "was" if d == -1 else "were"
            why = f"{inserted} before it {verb} inserted and the records after renumbered up by {-d}"
        else:
            why = f"renumbered {'down' if d > 0 else 'up'} by {abs(d)}, no record missing before it"
        return Problem(first, self.check_id, "renumbered",
                       f"{now} written as {was} (their hashes match those numbers): {why}")


def _numbers(first: int, last: int) -> str:
    return f"record {first}" if first == last else f"records {first}..{last}"


class _Renumbering:
    """Finds the number a record whose hash fails was written with, when it is another sequence number."""

    def __init__(self) -> None:
        self.searches = RENUMBERING_SEARCHES

    def written_as(self, row: StoredRecord, shift: int) -> int | None:
        if shift and chain_hash(row.seq + shift, row.prev_hash, row.body) == row.hash:  # the run goes on
            return row.seq + shift
        if self.searches <= 0:
            return None
        self.searches -= 1
        for d in range(1, MAX_RENUMBERING + 1):
            for seq in (row.seq + d, row.seq - d):
                if seq >= 1 and chain_hash(seq, row.prev_hash, row.body) == row.hash:
                    self.searches += 1  # found: only fruitless searches count
                    return seq
        return None


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
    deleted, and the link across it is not checked (the record before is not in the rows).

    Records renumbered after others were deleted (or inserted) before them match their hashes under the numbers they
    were written with: each run of them is one `renumbered` problem that says what happened, not one `altered` per
    record. The anchor and the store's high-water mark are read in those numbers."""
    report = VerifyReport()
    prev_seq, prev_hash = 0, GENESIS
    written_before = 0  # the number the previous record was written with (its seq, unless renumbered)
    anchor_seen = started = False
    renumbering, run = _Renumbering(), None
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
            written_before = prev_seq
        started = True
        own_ok = chain_hash(row.seq, row.prev_hash, row.body) == row.hash
        written = row.seq
        if not own_ok:
            found = renumbering.written_as(row, run.shift if run else 0)
            if found is not None:
                own_ok, written = True, found
        shift = written - row.seq
        if run is not None and (shift != run.shift or row.seq != run.last + 1):
            report.problems.insert(run.at, run.problem())
            run = None
        starts_run = shift != 0 and run is None
        if starts_run:
            run = _Run(row.seq, row.seq, shift, written_before, check_id, len(report.problems))
        elif run is not None:
            run.last = row.seq
        linked = row.prev_hash == prev_hash
        # A record the store appended after renumbered ones continues the numbers they were written with.
        skipped = row.seq != prev_seq + 1 and not (written_before != prev_seq and written == written_before + 1)
        if skipped and gaps is not None and row.seq > prev_seq + 1:
            gaps.append((prev_seq + 1, row.seq - 1))
            skipped = False
            linked = True  # the record it links to is not in the rows: the link cannot be checked
        if starts_run:
            pass  # its gap (or the records inserted before it) and its link are what its run's problem explains
        elif skipped:
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
        if anchor and written == anchor[0]:  # the anchor was kept with the number the record was written with
            anchor_seen = True
            if row.hash != anchor[1]:
                report.problems.append(Problem(row.seq, check_id, "anchor", "hash differs from the anchor"))
        prev_seq, prev_hash, written_before = row.seq, row.hash, written
    if run is not None:
        report.problems.insert(run.at, run.problem())
    report.head_seq, report.head_hash, report.head_written = prev_seq, prev_hash, written_before
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
    if high is None or high <= max(report.head_seq, report.head_written) \
            or any(p.kind == "damaged" for p in report.problems):
        return  # (a log renumbered to hide a cut still reaches its mark in the numbers it was written with)
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
