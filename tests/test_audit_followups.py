"""Audit follow-ups for security and compliance users: a redactor that fails is visible on /metrics, an export can be
cut by sequence number (and still verifies offline), and `verify` no longer calls an empty or truncated log OK.

PostgreSQL runs when GUARDRAILS_TEST_POSTGRES_URL is set (e.g. postgresql://postgres@127.0.0.1:5432/test); each test
uses its own table and drops it.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import test_audit_store
from fastapi.testclient import TestClient
from test_audit_redaction_recognizers import support_chat
from test_audit_review import body
from test_metrics import parse_exposition

from guardrails.audit import AuditFilter, AuditStore, open_audit_store
from guardrails.audit.observer import AuditObserver
from guardrails.audit.store import _pending
from guardrails.cli import main
from guardrails.config import Settings
from guardrails.exchange import Segment, SegmentKind
from guardrails.serve import build_app

REPO = Path(__file__).resolve().parent.parent
PG_URL = os.environ.get("GUARDRAILS_TEST_POSTGRES_URL")
FAILURES = "guardrails_audit_redaction_failures_total"

Backend = test_audit_store.Backend
backend = test_audit_store.backend  # the store contract tests' fixture: SQLite and PostgreSQL, triggers off for SQL


def record(i: int, tenant: str = "acme") -> dict[str, Any]:
    return {"v": 1, "check_id": f"chk_{i:04d}", "ts": 1_767_225_600.0 + i, "time": "t", "tenant": tenant,
            "agent": "travel-agent", "session": f"s-{i % 3}", "verdict": "block" if i % 4 == 0 else "allow",
            "findings": [], "usage": {"input_tokens": 40 + i}}


def fill(store: AuditStore, first: int, last: int) -> None:
    for i in range(first, last + 1):
        store.submit(record(i, tenant="globex" if i % 3 == 0 else "acme")).result(timeout=10)


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def seqs(lines: str) -> list[int]:
    return [json.loads(line)["audit"]["seq"] for line in lines.splitlines()]


# --- 1. a redactor that fails shows on /metrics --------------------------------------------------------------------

def scrape(client: TestClient) -> tuple[str, dict[tuple[str, frozenset[tuple[str, str]]], float]]:
    resp = client.get("/metrics")
    assert resp.status_code == 200, resp.text
    return resp.text, parse_exposition(resp.text)


def test_segments_stored_unredacted_are_counted_on_metrics(tmp_path: Path) -> None:
    app = build_app(Settings(policy_dir=REPO / "policies", data_dir=tmp_path / "var", audit_content="redacted",
                             state_url="none"))
    client = TestClient(app)
    (observer,) = [o for o in app.state.service.observers if isinstance(o, AuditObserver)]
    text, before = scrape(client)
    assert f"# HELP {FAILURES} " in text and f"# TYPE {FAILURES} counter\n" in text
    assert before[FAILURES, frozenset()] == 0  # there from the start: an alert on increase() sees the first one
    assert client.post("/v1/checks", json=support_chat()).status_code == 200
    assert scrape(client)[1][FAILURES, frozenset()] == 0  # the recognizers redacted every segment

    working = observer.redactor
    assert working is not None

    def crashing_on_tool_results(segment: Segment) -> Any:
        if segment.kind is SegmentKind.TOOL_RESULT:
            raise RuntimeError("recognizer crashed")
        return working(segment)

    observer.redactor = crashing_on_tool_results
    for _ in range(3):
        assert client.post("/v1/checks", json=support_chat()).status_code == 200  # the record is written anyway
    assert scrape(client)[1][FAILURES, frozenset()] == 3 == observer.redaction_failures


def test_without_an_audit_log_the_family_is_declared_without_a_sample(tmp_path: Path) -> None:
    client = TestClient(build_app(Settings(policy_dir=REPO / "policies", audit_url="none", state_url="none")))
    text, samples = scrape(client)
    assert f"# TYPE {FAILURES} counter\n" in text
    assert not [name for name, _ in samples if name == FAILURES]


# --- 2. exports cut by sequence number -----------------------------------------------------------------------------

def test_a_sequence_range_selects_exactly_and_pages_within_it(backend: Backend) -> None:
    store = backend.open()
    fill(store, 1, 12)
    assert [r.seq for r in store.iter_records(AuditFilter(after_seq=3, to_seq=8))] == [4, 5, 6, 7, 8]
    assert [r.seq for r in store.iter_records(AuditFilter(after_seq=10))] == [11, 12]
    assert [r.seq for r in store.iter_records(AuditFilter(to_seq=2))] == [1, 2]
    pages, cursor = [], None
    while True:
        page = store.page(AuditFilter(after_seq=3, to_seq=8), cursor, limit=2)
        pages.append([r.seq for r in page.records])
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert pages == [[4, 5], [6, 7], [8]]  # the last page says there is no more within the range
    assert [r.seq for r in store.page(AuditFilter(after_seq=3, to_seq=8), "6").records] == [7, 8]
    assert [r.seq for r in store.iter_records(AuditFilter(after_seq=3, to_seq=8, tenant="globex"))] == [6]


def test_a_sequence_range_export_verifies_offline_and_ties_to_its_anchors(
        backend: Backend, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = backend.open()
    fill(store, 1, 9)
    hashes = {r.seq: r.hash for r in store.iter_records()}
    archive = tmp_path / "audit-4-7.jsonl"
    code, _, err = cli(capsys, "audit", "export", "--url", backend.url, "--after-seq", "3", "--to-seq", "7",
                       "-o", str(archive))
    assert code == 0, err
    assert seqs(archive.read_text(encoding="utf-8")) == [4, 5, 6, 7]
    code, out, _ = cli(capsys, "audit", "verify", "--file", str(archive), "--filtered")
    assert code == 0 and f"OK: 4 record(s) in {archive}; head 7:{hashes[7]}" in out and "gap" not in out
    # The range's bounds are the anchors kept when the previous archive and this one were cut.
    code, out, _ = cli(capsys, "audit", "verify", "--file", str(archive), "--anchor", f"3:{hashes[3]}")
    assert code == 0 and "NOTE" not in out
    code, out, _ = cli(capsys, "audit", "verify", "--file", str(archive), "--anchor", f"3:{hashes[2]}")
    assert code == 1 and "does not continue the anchored chain" in out
    # Cut further by tenant: a filtered export, checked run by run.
    code, out, _ = cli(capsys, "audit", "export", "--url", backend.url, "--after-seq", "3", "--to-seq", "7",
                       "--tenant", "acme")
    assert code == 0 and seqs(out) == [4, 5, 7]
    tenant = tmp_path / "acme-4-7.jsonl"
    tenant.write_text(out, encoding="utf-8")
    code, out, _ = cli(capsys, "audit", "verify", "--file", str(tenant), "--filtered")
    assert code == 0 and "(records 6)" in out


@pytest.mark.parametrize(("args", "says"), [
    (("--after-seq", "-1"), "--after-seq must be 0 or more (records are numbered from 1), got '-1'"),
    (("--after-seq", "1.5"), "--after-seq must be a record's sequence number"),
    (("--to-seq", "ten"), "--to-seq must be a record's sequence number"),
    (("--to-seq", "\u0663"), "--to-seq must be a record's sequence number"),  # an Arabic-Indic 3: int() reads it
    (("--to-seq", "0"), "to_seq must be between 1 and"),
    (("--to-seq", "9" * 19), "to_seq must be between 1 and 9223372036854775807"),
    (("--after-seq", "8", "--to-seq", "3"), "after_seq (8) is not below to_seq (3): nothing can match"),
    (("--after-seq", "5", "--to-seq", "5"), "after_seq (5) is not below to_seq (5): nothing can match"),
])
def test_a_sequence_range_that_cannot_be_meant_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], says: str) -> None:
    store = open_audit_store(f"sqlite:///{tmp_path / 'audit.sqlite3'}")
    fill(store, 1, 3)
    store.close()
    code, out, err = cli(capsys, "audit", "export", "--url", f"sqlite:///{tmp_path / 'audit.sqlite3'}", *args)
    assert (code, out) == (4, "")
    assert err.startswith("guardrails: ") and says in err and len(err.splitlines()) == 1


def test_the_records_api_reads_a_sequence_range_and_refuses_a_bad_one(tmp_path: Path) -> None:
    with TestClient(build_app(Settings(policy_dir=REPO / "policies", data_dir=tmp_path / "var",
                                       state_url="none"))) as client:
        ids = []
        for i in range(1, 8):
            resp = client.post("/v1/checks", json=body(i, tenant="globex" if i == 5 else "acme"))
            assert resp.status_code == 200, resp.text
            ids.append(resp.json()["check_id"])
        seen, params = [], {"after_seq": "2", "to_seq": "6", "limit": 2}
        while True:
            page = client.get("/v1/audit/records", params=params).json()
            seen += [(r["audit"]["seq"], r["check_id"]) for r in page["records"]]
            if not page["next_cursor"]:
                break
            params["cursor"] = page["next_cursor"]
        assert seen == list(zip(range(3, 7), ids[2:6], strict=True))
        acme = client.get("/v1/audit/records", params={"after_seq": 2, "to_seq": 6, "tenant": "acme"}).json()
        assert [r["audit"]["seq"] for r in acme["records"]] == [3, 4, 6]
        for bad, says in (({"after_seq": "-3"}, "after_seq must be 0 or more"),
                          ({"to_seq": "4.0"}, "to_seq must be a record's sequence number"),
                          ({"after_seq": "6", "to_seq": "2"}, "after_seq (6) is not below to_seq (2)")):
            resp = client.get("/v1/audit/records", params=bad)
            assert resp.status_code == 422, (bad, resp.text)
            error = resp.json()["error"]
            assert error["type"] == "invalid_body" and says in error["message"], (bad, error)


# --- 3. an empty or truncated log is not "OK" ----------------------------------------------------------------------

def test_verify_on_an_empty_log_says_nothing_was_verified(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'var' / 'audit.sqlite3'}"
    with TestClient(build_app(Settings(policy_dir=REPO / "policies", data_dir=tmp_path / "var",
                                       state_url="none"))) as client:  # a service that checked nothing yet
        verified = client.get("/v1/audit/verify").json()
        assert verified["ok"] is False and verified["status"] == "empty" and verified["problems"] == []
        assert "anchor" in verified["note"] and verified["checked"] == 0
    code, out, _ = cli(capsys, "audit", "verify", "--url", url)
    assert code == 4
    assert out.startswith("EMPTY: the log holds no records, so nothing was verified") and "OK" not in out
    assert "--anchor SEQ:HASH" in out
    code, out, _ = cli(capsys, "audit", "verify", "--url", url, "--json")
    assert code == 4 and json.loads(out)["status"] == "empty"
    # With an anchor kept elsewhere, the empty log is a failure: the anchored record is gone.
    code, out, _ = cli(capsys, "audit", "verify", "--url", url, "--anchor", f"5:{'ab' * 32}")
    assert code == 1 and "FAILED" in out


def test_a_log_emptied_with_sql_is_reported_without_an_anchor(
        backend: Backend, capsys: pytest.CaptureFixture[str]) -> None:
    store = backend.open()
    fill(store, 1, 5)
    store.close()  # the service stops: the mark is the exact head
    code, out, _ = cli(capsys, "audit", "verify", "--url", backend.url, "--json")
    assert code == 0 and json.loads(out)["status"] == "ok"
    backend.execute("DELETE FROM {t}")
    code, out, _ = cli(capsys, "audit", "verify", "--url", backend.url)
    assert code == 1, out
    assert ("TAMPERED record 1 (unknown check): deleted: records 1..5 are missing from the end of the log: the store "
            "wrote record 5 (its high-water mark) and the log now holds no records") in out
    assert "FAILED (1 problem(s)): 0 record(s)" in out


@pytest.mark.parametrize("cut", [1, 3])
def test_the_last_records_deleted_while_the_service_runs_are_reported_without_an_anchor(
        backend: Backend, cut: int, capsys: pytest.CaptureFixture[str]) -> None:
    store = backend.open()
    fill(store, 1, 10)
    backend.execute(f"DELETE FROM {{t}} WHERE seq > {10 - cut}")  # the store stays open: no close writes a mark
    first = 11 - cut
    message = (f"records {first}..10 are missing from the end of the log: the store wrote record 10 (its high-water "
               f"mark) and the log now ends at record {10 - cut}")
    assert [(p.seq, p.kind, p.message) for p in store.verify().problems] == [(first, "deleted", message)]
    code, out, _ = cli(capsys, "audit", "verify", "--url", backend.url)  # an operator's check, no anchor
    assert code == 1 and f"TAMPERED record {first} (unknown check): deleted: {message}" in out


def test_a_cut_tail_stays_reported_after_the_service_appends_past_the_mark(backend: Backend) -> None:
    store = backend.open()
    fill(store, 1, 10)
    backend.execute("DELETE FROM {t} WHERE seq > 7")
    fill(store, 11, 20)  # more checks than were cut: their numbers must not cover the cut
    rows = list(store.iter_records())
    assert [r.seq for r in rows] == [*range(1, 8), *range(11, 21)]
    assert rows[7].prev_hash == rows[6].hash  # chained after the log's real head, numbered after the mark
    assert [(p.seq, p.kind, p.message) for p in store.verify().problems] == [
        (11, "deleted", "records 8..10 are missing before this one")]


def test_the_last_record_of_a_group_commit_deleted_is_reported(backend: Backend) -> None:
    store = backend.open()
    fill(store, 1, 1)
    futures = [store._enqueue(_pending(record(i))) for i in range(2, 65)]  # through the writer thread, in batches
    assert [f.result(timeout=10) for f in futures] == list(range(2, 65))
    backend.execute("DELETE FROM {t} WHERE seq = 64")
    assert [(p.seq, p.kind) for p in store.verify().problems] == [(64, "deleted")]


def test_the_mark_follows_appends_from_two_processes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    first, second = open_audit_store(url), open_audit_store(url)
    try:
        for i, store in enumerate([first, second, first, first, second], start=1):  # heads cached, then stale
            assert store.submit(record(i)).result(timeout=10) == i
            assert first._high_water() == i  # type: ignore[attr-defined]
        conn = sqlite3.connect(tmp_path / "audit.sqlite3", isolation_level=None)
        conn.execute("DROP TRIGGER audit_records_no_delete")
        conn.execute("DELETE FROM audit_records WHERE seq = 5")
        conn.close()
        assert [(p.seq, p.kind) for p in first.verify().problems] == [(5, "deleted")]
    finally:
        first.close()
        second.close()


def test_a_log_table_dropped_and_recreated_is_reported(backend: Backend) -> None:
    store = backend.open()
    fill(store, 1, 3)
    store.close()
    backend.execute("DROP TABLE {t}")
    restarted = backend.open()  # the service starts again and creates an empty log
    assert restarted.submit(record(9)).result(timeout=10) == 4  # numbered after the mark: the gap stays
    assert [(p.seq, p.kind, p.message) for p in restarted.verify().problems] == [
        (4, "deleted", "records 1..3 are missing before this one")]


def test_the_mark_only_rises(backend: Backend) -> None:
    store = backend.open()
    fill(store, 1, 4)
    store.close()
    backend.execute("DELETE FROM {t} WHERE seq > 2")  # the log's own triggers dropped: not the mark's
    for tamper in (f"UPDATE {backend.meta} SET value = 2", f"DELETE FROM {backend.meta}"):
        with pytest.raises(Exception, match=r"append-only|only rises"):  # the drivers' error types differ
            _raw(backend, tamper)
    assert [p.seq for p in backend.open(create=False).verify().problems] == [3]


def _raw(backend: Backend, sql: str) -> None:
    """SQL with the log's triggers left as they are (the backend's `execute` drops them)."""
    if backend.name == "sqlite":
        conn = sqlite3.connect(backend.url.removeprefix("sqlite:///"), isolation_level=None)
        try:
            conn.execute(sql)
        finally:
            conn.close()
        return
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as conn:  # type: ignore[arg-type]
        conn.execute(sql)


def test_an_older_log_gets_its_mark_when_the_service_opens_it(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite3"
    url = f"sqlite:///{path}"
    store = open_audit_store(url)
    fill(store, 1, 3)
    store.close()
    conn = sqlite3.connect(path, isolation_level=None)
    for trigger in ("audit_meta_no_delete", "audit_meta_no_lowering"):
        conn.execute(f"DROP TRIGGER {trigger}")
    conn.execute("DROP TABLE audit_meta")  # as a log written before the mark existed
    reader = open_audit_store(url, create=False)
    assert reader.verify().ok  # a reader creates nothing in the log it reads
    reader.close()
    assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'audit_meta'").fetchone() == (0,)
    open_audit_store(url).close()  # the service starts: the mark starts at the log's head
    conn.execute("DROP TRIGGER audit_records_no_delete")
    conn.execute("DELETE FROM audit_records WHERE seq = 3")
    conn.close()
    reader = open_audit_store(url, create=False)
    assert [(p.seq, p.kind) for p in reader.verify().problems] == [(3, "deleted")]
    reader.close()


def test_the_mark_costs_one_statement_per_transaction(tmp_path: Path) -> None:
    store = open_audit_store(f"sqlite:///{tmp_path / 'audit.sqlite3'}")
    try:
        store.submit(record(1)).result(timeout=10)
        traced: list[str] = []
        store._write_conn.set_trace_callback(traced.append)  # type: ignore[attr-defined]
        fill(store, 2, 6)
        # Each inline append: the head and the mark read in one SELECT, the record and the mark written, in one
        # transaction. An upsert of the mark is traced twice where the row exists (its trigger's check): counted once.
        statements = [s for i, s in enumerate(traced) if i == 0 or s != traced[i - 1]]
        assert [s.split(" (")[0].split(",")[0] for s in statements] == [
            "BEGIN IMMEDIATE", "SELECT", "INSERT INTO audit_records", "INSERT INTO audit_meta", "COMMIT"] * 5
        marks = [s for s in statements if s.startswith("INSERT INTO audit_meta")]
        assert [int(m.split("'high_seq', ")[1].split(")")[0]) for m in marks] == [2, 3, 4, 5, 6]
        traced.clear()
        store._append_waiting([_pending(record(i)) for i in range(7, 57)])  # a batch the writer thread commits
        statements = [s for i, s in enumerate(traced) if i == 0 or s != traced[i - 1]]
        assert sum(s.startswith("INSERT INTO audit_records") for s in statements) == 50
        assert [s for s in statements if s.startswith("INSERT INTO audit_meta")] == [
            "INSERT INTO audit_meta (key, value) VALUES ('high_seq', 56) "
            "ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)"]
        assert statements.count("BEGIN IMMEDIATE") == statements.count("COMMIT") == 1
    finally:
        store.close()
