"""Verify an exported JSONL file offline, without the store: `guardrails audit verify --file EXPORT.jsonl`.

Each line of a JSONL export is a record plus `audit: {seq, prev_hash, hash}`. The record without `audit`, in
canonical JSON, is the very bytes the store hashed (canonical JSON reads back to the same bytes, whatever tool
re-indented or re-encoded the line: key order, escapes, `1.0` written `1` by jq or Node, in records written before
whole numbers were stored as integers too), so the store's own `verify_chain` re-checks the file: a changed,
inserted or deleted record is reported as the store's verify reports it.

What a file adds: it may begin after record 1 (an export from `--since`: its first link is taken as is, and an
anchor kept for the record before it checks that link), it may be a filtered export (records left out by design:
with `filtered`, each contiguous run is checked and the gaps are listed, since nothing can be checked across one),
and its lines may not be records (cut off by a truncated copy, overwritten, or a CSV or OTLP export passed by
mistake).
"""

from __future__ import annotations

import gzip
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

from guardrails.audit.chain import (
    LogDamaged,
    Problem,
    StoredRecord,
    VerifyReport,
    candidate_bodies,
    chain_hash,
    verify_chain,
)

GZIP_MAGIC = b"\x1f\x8b"
UTF8_BOM = b"\xef\xbb\xbf"
CSV_HEADER = b"seq,check_id,"
HEX64 = re.compile(r"[0-9a-f]{64}")


class NotAnExport(ValueError):
    """The file is not a JSONL audit export (empty, CSV, OTLP, something else): there is nothing to verify."""


@dataclass(slots=True)
class FileReport:
    """The chain's report on the file's records, plus what the file itself says."""

    report: VerifyReport
    name: str
    filtered: bool
    first_seq: int | None = None
    gaps: list[tuple[int, int]] = field(default_factory=list)  # (first, last) missing, in a filtered export

    @property
    def ok(self) -> bool:
        return self.report.ok

    @property
    def runs(self) -> int:
        """Contiguous runs of records the file holds."""
        return len(self.gaps) + 1 if self.report.checked else 0

    @property
    def missing_ranges(self) -> int:
        """Sequence gaps reported as deleted records (a file verified as complete)."""
        return sum(1 for p in self.report.problems if p.kind == "deleted" and p.message.startswith("records "))

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.report.to_dict(),
            "file": self.name,
            "first_seq": self.first_seq,
            "filtered": self.filtered,
            "gaps": [list(gap) for gap in self.gaps],
        }


def verify_export(
    lines: Iterable[bytes], anchor: tuple[int, str] | None = None, *, filtered: bool = False, name: str = "-"
) -> FileReport:
    """Re-check the hash chain of a JSONL export's `lines` (bytes, as read from the file).

    Raises `NotAnExport` when the file holds no record (empty) or is not a JSONL export at all."""
    reader = _Reader(lines, anchor)
    gaps: list[tuple[int, int]] | None = [] if filtered else None
    # The anchor is judged here, not by verify_chain: in a file it may also sit just before the first record (its
    # link), before the file, or in a filtered export's gap, and each deserves its own message.
    report = verify_chain(reader.records(), None, open_start=True, gaps=gaps)
    if not report.checked and not reader.problems and not any(p.kind == "damaged" for p in report.problems):
        raise NotAnExport(f"{name} holds no records: nothing to verify (an export that matched nothing, "
                          "or an emptied file)")
    out = FileReport(report, name, filtered, reader.first_seq, gaps or [])
    problems = report.problems + reader.problems + _anchor_problems(reader, anchor, out)
    report.problems = sorted(problems, key=lambda p: p.seq)  # stable: the chain's own order within a record
    return out


def open_export(path: str, stdin: IO[bytes]) -> IO[bytes]:
    """The file (gzip-compressed or not) or, for `-`, stdin; binary: lines are decoded as JSON reads them."""
    if path == "-":
        return stdin
    handle = open(path, "rb")  # noqa: SIM115 - the caller closes it
    if handle.read(2) == GZIP_MAGIC:  # an archive kept compressed (.jsonl.gz)
        handle.close()
        return gzip.open(path, "rb")
    handle.seek(0)
    return handle


class _Reader:
    """The file's records as the chain sees them, and the problems of lines that are not records."""

    def __init__(self, lines: Iterable[bytes], anchor: tuple[int, str] | None) -> None:
        self.lines, self.anchor = lines, anchor
        self.problems: list[Problem] = []
        self.first_seq: int | None = None
        self.first_prev: str | None = None
        self.first_check: str | None = None
        self.last_seq: int | None = None
        self.anchored: StoredRecord | None = None  # the anchored record, when the file holds it
        self.anchored_check: str | None = None
        self.damaged = False

    def records(self) -> Iterator[StoredRecord]:
        for number, line in _numbered(self.lines, self):
            if number == 1 and line.startswith(UTF8_BOM):  # written by a Windows tool
                line = line[len(UTF8_BOM):]
            text = line.strip()
            if not text:
                continue  # an export writes no blank line, and one holds no record
            row = self._row(number, line, text)
            if row is None:
                continue
            if self.last_seq is not None and row.seq <= self.last_seq:
                # verify_chain reads in sequence order (a store returns it so): a line out of it is reported here
                self.problems.append(Problem(row.seq, _check_id(row), "inserted",
                                             f"line {number} is out of sequence order: it comes after record "
                                             f"{self.last_seq} in the file (a repeated or reordered line)"))
                continue
            if self.first_seq is None:
                self.first_seq, self.first_prev, self.first_check = row.seq, row.prev_hash, _check_id(row)
            self.last_seq = row.seq
            if self.anchor and row.seq == self.anchor[0]:
                self.anchored, self.anchored_check = row, _check_id(row)
            yield row

    def _row(self, number: int, line: bytes, text: bytes) -> StoredRecord | None:
        """The line's record, or None after reporting what it is instead. The first line decides whether the file
        is an export at all (`NotAnExport`); a line that is not a record later on is a problem of the file."""
        first = self.first_seq is None and not self.problems
        after = self.last_seq or 0
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            if first and not text.startswith(b"{"):
                raise NotAnExport(_not_jsonl(number, text)) from None
            if not line.endswith(b"\n"):  # an export ends every line: this one was cut off
                self.damaged = True
                raise LogDamaged(f"line {number}, the last, is cut off mid-record (a truncated file)") from None
            self.problems.append(Problem(after + 1, None, "damaged",
                                         f"line {number} (after record {after}) is not JSON: {exc}"))
            return None
        place = value.get("audit") if isinstance(value, dict) else None
        seq = place.get("seq") if isinstance(place, dict) else None
        prev_hash = place.get("prev_hash") if isinstance(place, dict) else None
        digest = place.get("hash") if isinstance(place, dict) else None
        if not (isinstance(seq, int) and not isinstance(seq, bool) and _hex64(prev_hash) and _hex64(digest)):
            if first and not (isinstance(value, dict) and ("check_id" in value or "audit" in value)):
                raise NotAnExport(_not_records(number, value))  # not even a record: not an audit export
            check_id = value.get("check_id") if isinstance(value, dict) else None
            self.problems.append(Problem(after + 1, check_id if isinstance(check_id, str) else None, "damaged",
                                         f"line {number} (after record {after}) is not an exported record: its "
                                         "`audit` place in the chain (seq, prev_hash, hash) is missing or malformed"))
            return None
        del value["audit"]  # the export adds it; the hash never covered it
        return StoredRecord(seq, prev_hash, digest, _hashed_body(seq, prev_hash, digest, value))


def _hashed_body(seq: int, prev_hash: str, digest: str, record: dict[str, Any]) -> bytes:
    """The canonical bytes of `record` its hash covers: as the store writes them now, or as it wrote them before whole
    numbers were integers (`candidate_bodies`: the same values, so a changed value matches none); when none matches,
    the current form, which the chain reports as altered."""
    first = None
    for body in candidate_bodies(record):
        if chain_hash(seq, prev_hash, body) == digest:
            return body
        first = first or body
    assert first is not None
    return first


def _numbered(lines: Iterable[bytes], reader: _Reader) -> Iterator[tuple[int, bytes]]:
    """The lines, numbered from 1; a compressed file cut off or damaged ends them as a damaged log."""
    number = 0
    try:
        for number, line in enumerate(lines, 1):
            yield number, line
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        reader.damaged = True
        where = f"after line {number}" if number else "from its start"
        raise LogDamaged(f"the compressed file cannot be read {where}: {exc}") from None


def _anchor_problems(reader: _Reader, anchor: tuple[int, str] | None, out: FileReport) -> list[Problem]:
    if anchor is None:
        return []
    seq, digest = anchor
    if reader.anchored is not None:
        if reader.anchored.hash != digest:
            return [Problem(seq, reader.anchored_check, "anchor", "hash differs from the anchor")]
        return []
    first, last = reader.first_seq, reader.last_seq
    if first is not None and seq == first - 1:  # kept when that record was the head: the file must continue it
        if reader.first_prev != digest:
            return [Problem(first, reader.first_check, "anchor",
                            f"its link to record {seq} (prev_hash) differs from the anchor: the file does not "
                            "continue the anchored chain")]
        return []
    if reader.damaged and (last is None or seq > last):
        return []  # past the cut the anchor cannot be judged: the truncation is reported already
    if last is None or seq > last:
        return [Problem(seq, None, "deleted", f"the anchored record is gone (the file ends at record {last or 0})")]
    if first is not None and seq < first:
        return [Problem(seq, None, "anchor", f"the anchored record is not in the file, which starts at record "
                                             f"{first}: the anchor cannot be checked against it")]
    gap = next((g for g in out.gaps if g[0] <= seq <= g[1]), None)
    if gap is not None:
        return [Problem(seq, None, "anchor", f"the anchored record falls in the gap {_span(gap)} of this filtered "
                                             "export: the anchor cannot be checked against it")]
    return [Problem(seq, None, "deleted", "the anchored record is missing from the file")]


def _not_jsonl(number: int, text: bytes) -> str:
    if text.startswith(GZIP_MAGIC):
        return "the input is gzip-compressed: pass the file by name, or decompress it (zcat FILE | ... --file -)"
    if text.startswith(CSV_HEADER):
        return ("this is a CSV export: it keeps no record bytes, so its chain cannot be checked; verify a JSONL "
                "export (`audit export --format jsonl`)")
    shown = text[:40].decode("utf-8", "replace")
    return f"not a JSONL audit export: line {number} is not JSON ({shown!r})"


def _not_records(number: int, value: Any) -> str:
    if isinstance(value, dict) and "resourceSpans" in value:
        return ("this is an OTLP export: spans keep no record bytes, so their chain cannot be checked; verify a "
                "JSONL export (`audit export --format jsonl`)")
    if isinstance(value, dict) and isinstance(value.get("records"), list):
        return ("this is a page of GET /v1/audit/records: write its records one per line first "
                "(jq -c '.records[]' PAGE.json > EXPORT.jsonl)")
    return (f"not a JSONL audit export: line {number} is not an exported record (no `audit` with seq, prev_hash "
            "and hash)")


def _hex64(value: Any) -> bool:
    return isinstance(value, str) and HEX64.fullmatch(value) is not None


def _check_id(row: StoredRecord) -> str | None:
    check_id = orjson.loads(row.body).get("check_id")
    return check_id if isinstance(check_id, str) else None


def _span(gap: tuple[int, int]) -> str:
    return str(gap[0]) if gap[0] == gap[1] else f"{gap[0]}..{gap[1]}"


def describe_gaps(gaps: list[tuple[int, int]], limit: int = 10) -> str:
    """`5..9, 20, ...` for a text report: the first `limit` gaps, then how many more (--json lists them all)."""
    shown = ", ".join(_span(g) for g in gaps[:limit])
    return shown + (f" and {len(gaps) - limit} more" if len(gaps) > limit else "")
