"""`guardrails audit export|verify` and `guardrails breakers list|show|reset`.

Exit codes: 0 success, 1 `verify` found tampering (each broken record is named) or `show`/`reset` found no
such breaker, 4 the store cannot be opened or the arguments are invalid (bad time, bad sequence number, bad URL),
or `verify` had nothing to verify: a log that holds no record (without `--anchor`: an emptied log looks the same)
or a file that holds no exported record (empty, a CSV or OTLP export).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TextIO

from guardrails.audit import DISABLED, AuditFilter, open_audit_store, parse_seq, time_range
from guardrails.audit.archive import describe_gaps, open_export, verify_export
from guardrails.audit.export import EXPORTERS
from guardrails.audit.store import CATEGORIES
from guardrails.config import Settings
from guardrails.state import open_state_store

EXIT_OK, EXIT_FOUND_PROBLEMS, EXIT_CONFIG = 0, 1, 4


def add_commands(sub: Any) -> None:
    """Register the subcommands on the main parser's subparsers."""
    audit = sub.add_parser("audit", help="export and verify the audit log")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    export = audit_sub.add_parser("export", help="export audit records (jsonl, csv or OTLP/JSON traces)")
    _url_option(export, "GUARDRAILS_AUDIT_URL")
    export.add_argument("--since", help="from this time (ISO 8601 or epoch seconds), inclusive")
    export.add_argument("--until", help="up to this time, exclusive")
    for name in ("tenant", "agent", "session"):
        export.add_argument(f"--{name}", help=f"only this {name}")
    export.add_argument("--verdict", choices=("allow", "warn", "block"))
    export.add_argument("--check-id", help="only this check (the check_id a check answered with)")
    export.add_argument("--after-seq", metavar="SEQ",
                        help="only records numbered after SEQ (exclusive: the SEQ of an anchor, or the head of the "
                             "previous archive)")
    export.add_argument("--to-seq", metavar="SEQ",
                        help="only records numbered up to SEQ (inclusive: the head `audit verify` printed)")
    export.add_argument("--category", choices=CATEGORIES, metavar="CATEGORY",
                        help=f"only records with a finding of this category (any action): {', '.join(CATEGORIES)}")
    export.add_argument("--partial", action=argparse.BooleanOptionalAction, default=None,
                        help="only mid-stream re-checks (partial: advisory verdicts); --no-partial leaves them out")
    export.add_argument("--format", choices=tuple(EXPORTERS), default="jsonl")
    export.add_argument("--output", "-o", help="write to this file instead of stdout")
    export.set_defaults(func=_export)
    verify = audit_sub.add_parser(
        "verify", help="check the hash chain; names altered, inserted, deleted records"
    )
    source = verify.add_mutually_exclusive_group()
    _url_option(source, "GUARDRAILS_AUDIT_URL")
    source.add_argument("--file", metavar="EXPORT.jsonl",
                        help="verify a JSONL export (`audit export`, gzip or not; - for stdin) offline, without the "
                             "store")
    verify.add_argument("--filtered", action="store_true",
                        help="with --file: the export was filtered (--tenant, --verdict...), so records are missing "
                             "by design: check each contiguous run and list the gaps instead of reporting them as "
                             "deleted")
    verify.add_argument("--anchor", help="SEQ:HASH recorded earlier (detects truncation and rewrites)")
    verify.add_argument("--json", action="store_true")
    verify.set_defaults(func=_verify)

    breakers = sub.add_parser("breakers", help="list, inspect and reset circuit breakers")
    breakers_sub = breakers.add_subparsers(dest="breakers_command", required=True)
    for name, helptext, func in (
        ("list", "open and half-open breakers", _list),
        ("show", "one breaker", _show),
        ("reset", "close a breaker now", _reset),
    ):
        cmd = breakers_sub.add_parser(name, help=helptext)
        _url_option(cmd, "GUARDRAILS_STATE_URL")
        if name != "list":
            cmd.add_argument("key", help="breaker key, e.g. agent:acme/travel-agent")
        cmd.add_argument("--json", action="store_true")
        cmd.set_defaults(func=func)


def _url_option(parser: argparse.ArgumentParser | argparse._MutuallyExclusiveGroup, env: str) -> None:
    parser.add_argument("--url", help=f"store URL (default ${env}, else SQLite under $GUARDRAILS_DATA_DIR)")


def _audit_url(args: argparse.Namespace) -> str:
    return _enabled(args.url or Settings.from_env().resolved_audit_url(), "audit log", "GUARDRAILS_AUDIT_URL")


def _state_url(args: argparse.Namespace) -> str:
    return _enabled(args.url or Settings.from_env().resolved_state_url(), "state store", "GUARDRAILS_STATE_URL")


def _enabled(url: str, what: str, env: str) -> str:
    """`url`, unless it is the setting that turns the store off: then there is nothing to read, said plainly."""
    if url.lower() in DISABLED:
        raise ValueError(f"the {what} is disabled ({env}={url!r}): there is nothing to read; pass --url with the "
                         f"store's URL (sqlite:///path or a server URL)")
    return url


def _guarded(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except BrokenPipeError:  # `... | head`: the reader has all it wanted
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keeps the interpreter's final flush quiet
            return EXIT_OK
        except (ValueError, OSError) as exc:
            print(f"guardrails: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        except Exception as exc:  # a store that cannot be reached (psycopg, redis errors)
            print(f"guardrails: store error: {type(exc).__name__}: {exc}", file=sys.stderr)
            return EXIT_CONFIG

    return run


@_guarded
def _export(args: argparse.Namespace) -> int:
    since, until = time_range(args.since, args.until, ("--since", "--until"))
    filt = AuditFilter(
        since=since,
        until=until,
        tenant=args.tenant,
        agent=args.agent,
        session=args.session,
        verdict=args.verdict,
        partial=args.partial,
        check_id=args.check_id,
        category=args.category,
        after_seq=parse_seq(args.after_seq, "--after-seq"),
        to_seq=parse_seq(args.to_seq, "--to-seq"),
    )
    store = open_audit_store(_audit_url(args), create=False)
    try:
        if args.output:
            with Path(args.output).open("w", encoding="utf-8", newline="") as out:
                _write(out, EXPORTERS[args.format](store.iter_records(filt)))
        else:
            _write(sys.stdout, EXPORTERS[args.format](store.iter_records(filt)))
    finally:
        store.close()
    return EXIT_OK


def _write(out: TextIO, chunks: Iterable[str]) -> None:
    for chunk in chunks:
        out.write(chunk)


@_guarded
def _verify(args: argparse.Namespace) -> int:
    anchor = None
    if args.anchor:
        seq, _, digest = args.anchor.partition(":")
        if not seq.isdigit() or len(digest) != 64:
            raise ValueError(f"--anchor must be SEQ:HASH (64 hex digits), got {args.anchor!r}")
        anchor = (int(seq), digest.lower())
    if args.file:
        return _verify_file(args, anchor)
    if args.filtered:
        raise ValueError("--filtered applies to an exported file (--file EXPORT.jsonl): a store holds every record")
    store = open_audit_store(_audit_url(args), create=False)
    try:
        report = store.verify(anchor)
    finally:
        store.close()
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    elif report.empty:
        print("EMPTY: the log holds no records, so nothing was verified. A log emptied with SQL looks the same: "
              "--anchor SEQ:HASH, the head a previous verify printed (kept outside the database), proves that no "
              "record was removed")
    else:
        for problem in report.problems:
            print(f"TAMPERED {problem}")
        status = "OK" if report.ok else f"FAILED ({len(report.problems)} problem(s))"
        print(f"{status}: {report.checked} record(s); head {report.head_seq}:{report.head_hash}")
    if report.empty:  # nothing verified: the code of a log that cannot be opened, or of an empty --file
        return EXIT_CONFIG
    return EXIT_OK if report.ok else EXIT_FOUND_PROBLEMS


def _verify_file(args: argparse.Namespace, anchor: tuple[int, str] | None) -> int:
    """`verify --file`: the export's chain, re-checked by the store's own code (guardrails/audit/archive.py)."""
    name = "stdin" if args.file == "-" else args.file
    lines = open_export(args.file, sys.stdin.buffer)
    try:
        found = verify_export(lines, anchor, filtered=args.filtered, name=name)
    finally:
        if args.file != "-":  # stdin stays open: it is not ours
            lines.close()
    report = found.report
    if args.json:
        print(json.dumps(found.to_dict(), indent=2))
        return EXIT_OK if found.ok else EXIT_FOUND_PROBLEMS
    for problem in report.problems:
        print(f"TAMPERED {problem}")
    if found.first_seq is not None and found.first_seq > 1 and not (anchor and anchor[0] == found.first_seq - 1):
        print(f"NOTE the file starts at record {found.first_seq} (an export from --since or --after-seq, or its "
              f"first records were removed): its link to record {found.first_seq - 1} is taken as is; --anchor "
              f"{found.first_seq - 1}:HASH, kept when that record was the head, checks it")
    if found.gaps:
        print(f"NOTE filtered export: each of its {found.runs} contiguous runs is checked, but not across its "
              f"{len(found.gaps)} gap(s) (records {describe_gaps(found.gaps)}): a record deleted, or rewritten "
              "with its hash recomputed, beside a gap would not show")
    elif found.missing_ranges and not args.filtered:
        print(f"NOTE {found.missing_ranges} range(s) of records are missing: if {name} is a filtered export "
              "(--tenant, --verdict, --category...), they were left out by design; --filtered checks each "
              "contiguous run and lists the gaps")
    status = "OK" if report.ok else f"FAILED ({len(report.problems)} problem(s))"
    print(f"{status}: {report.checked} record(s) in {name}; head {report.head_seq}:{report.head_hash}")
    return EXIT_OK if found.ok else EXIT_FOUND_PROBLEMS


@_guarded
def _list(args: argparse.Namespace) -> int:
    store = open_state_store(_state_url(args))
    try:
        found = store.breakers()
    finally:
        store.close()
    if args.json:
        print(json.dumps([b.to_dict() for b in found], indent=2))
    elif not found:
        print("no open breakers")
    for b in found if not args.json else []:
        print(f"{b.key:<40} {b.state:<9} {b.reason:<20} {_until(b.until)}  trips={b.trips}")
    return EXIT_OK


@_guarded
def _show(args: argparse.Namespace) -> int:
    store = open_state_store(_state_url(args))
    try:
        found = store.breaker(args.key)
    finally:
        store.close()
    if found is None:
        print(f"no breaker open for {args.key}", file=sys.stderr)
        return EXIT_FOUND_PROBLEMS
    print(
        json.dumps(found.to_dict(), indent=2)
        if args.json
        else "\n".join(f"{k}: {v}" for k, v in found.to_dict().items())
    )
    return EXIT_OK


@_guarded
def _reset(args: argparse.Namespace) -> int:
    store = open_state_store(_state_url(args))
    try:
        closed = store.reset(args.key)
    finally:
        store.close()
    print(
        f"closed breaker {args.key}" if closed else f"no breaker open for {args.key}",
        file=sys.stdout if closed else sys.stderr,
    )
    return EXIT_OK if closed else EXIT_FOUND_PROBLEMS


def _until(until: float) -> str:
    left = until - time.time()
    return f"cooldown {left:.0f} s left" if left > 0 else "cooldown over"
