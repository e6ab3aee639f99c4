"""`"partial": true`: a mid-stream re-check of a response still arriving, whose verdict is advisory.

The answer and the audit record say so, the metrics count it apart, `tool_schema` does not report arguments that
are still arriving, and the gateway middleware marks its mid-stream checks (never the final one). A walkthrough saw
an allowed Responses stream, re-checked at every chunk, record a dozen phantom `tool_schema` blocks.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from stub_vllm_gateway import StubModelServer, fixtures_present
from test_metrics import labels, moved, scrape

from guardrails.audit import AuditFilter, open_audit_store
from guardrails.audit.chain import GENESIS, canonical, chain_hash
from guardrails.audit.export import export_csv, export_otlp
from guardrails.cli import main
from guardrails.client import GuardrailsClient
from guardrails.config import Settings
from guardrails.contract import CheckResponse
from guardrails.middleware import GuardrailsMiddleware
from guardrails.serve import build_app

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples"
STREAMS = ["openai_responses_stream.json", "openai_chat_stream.json", "anthropic_messages_stream.json",
           "gemini_interactions_stream.json", "gemini_generate_content_stream.json"]
RESPONSES_STREAM = STREAMS[0]
# In the Responses stream sample: event 41 adds the get_weather call (arguments ""), 42..53 stream its arguments
# ('{"', 'city', '":', ... '"}'), 54 says they are done.
CALL_ADDED, CELSIUS_DELTA, ARGUMENTS_DONE = 41, 52, 54
PG_URL = os.environ.get("GUARDRAILS_TEST_POSTGRES_URL")


def sample(name: str) -> dict[str, Any]:
    return json.loads((SAMPLES / name).read_text(encoding="utf-8"))


def cut(name: str, events: int, **extra: Any) -> dict[str, Any]:
    """The sample's request and its first `events` stream events, as a mid-stream check sends them (no context)."""
    exchange = sample(name)
    return {"request": exchange["request"], "response": exchange["response"][:events], **extra}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    """The service with the repository's policies and its default stores (audit log, state) under tmp_path."""
    with TestClient(build_app(Settings(policy_dir=REPO / "policies", data_dir=tmp_path / "var"))) as test_client:
        yield test_client


def audit_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'var' / 'audit.sqlite3'}"


def categories(answer: dict[str, Any]) -> set[str]:
    return {finding["category"] for finding in answer["findings"]}


# --- the answer, the audit record, the exports -------------------------------------------------------------

def test_a_partial_check_says_so_in_its_answer_and_its_audit_record(client: TestClient, tmp_path: Path) -> None:
    partial = client.post("/v1/checks", json=cut(RESPONSES_STREAM, 48, partial=True)).json()
    final = client.post("/v1/checks", json=sample(RESPONSES_STREAM)).json()
    assert partial["partial"] is True and CheckResponse.model_validate(partial).partial
    assert "partial" not in final and not CheckResponse.model_validate(final).partial

    store = open_audit_store(audit_url(tmp_path), create=False)
    try:
        rows = list(store.iter_records())
        by_id = {row.record()["check_id"]: row.record() for row in rows}
        assert by_id[partial["check_id"]]["partial"] is True
        assert "partial" not in by_id[final["check_id"]]
        only = [row.record()["check_id"] for row in store.iter_records(AuditFilter(partial=True))]
        others = [row.record()["check_id"] for row in store.iter_records(AuditFilter(partial=False))]
        assert only == [partial["check_id"]] and others == [final["check_id"]]
        assert store.verify().ok  # the column beside each record matches it
        table = list(export_csv(rows))
        assert table[0].rstrip("\n").split(",")[17:20] == ["verdict", "partial", "findings"]
        assert [line.split(",")[18] for line in table[1:]] == ["true", "false"]
        spans = json.loads("".join(export_otlp(rows)))["resourceSpans"][0]["scopeSpans"][0]["spans"]
        flags = [{a["key"]: a["value"] for a in span["attributes"]}.get("guardrails.partial") for span in spans]
        assert flags == [{"boolValue": True}, None]
    finally:
        store.close()


def test_the_audit_export_and_records_route_select_or_leave_out_partial_checks(
        client: TestClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    partial_id = client.post("/v1/checks", json=cut(RESPONSES_STREAM, 48, partial=True)).json()["check_id"]
    final_id = client.post("/v1/checks", json=sample(RESPONSES_STREAM)).json()["check_id"]
    for flag, expected in (("--partial", [partial_id]), ("--no-partial", [final_id]), (None, [partial_id, final_id])):
        assert main(["audit", "export", "--url", audit_url(tmp_path), *([flag] if flag else [])]) == 0
        assert [json.loads(line)["check_id"] for line in capsys.readouterr().out.splitlines()] == expected
    for value, expected in (("true", [partial_id]), ("false", [final_id])):
        page = client.get("/v1/audit/records", params={"partial": value}).json()
        assert [record["check_id"] for record in page["records"]] == expected


def test_partial_must_be_a_boolean(client: TestClient) -> None:
    answer = client.post("/v1/checks", json=cut(RESPONSES_STREAM, 48, partial="yes"))
    assert answer.status_code == 422 and answer.json()["error"] == {
        "type": "invalid_body", "message": "`partial` must be a boolean", "pointer": "/partial"}
    for value in (None, False):  # an ordinary check
        answer = client.post("/v1/checks", json=cut(RESPONSES_STREAM, 48, partial=value))
        assert answer.status_code == 200 and "partial" not in answer.json()


# --- metrics ----------------------------------------------------------------------------------------------

def test_metrics_count_partial_checks_apart(client: TestClient) -> None:
    attack = sample("attacks/openai_chat_exfiltration.json")  # blocks, with findings
    before = scrape(client)
    answer = client.post("/v1/checks", json={**attack, "partial": True}).json()
    after = scrape(client)
    assert answer["verdict"] == "block" and answer["findings"]
    assert moved(before, after, "guardrails_partial_checks_total") == {labels(policy="default", verdict="block"): 1}
    assert not moved(before, after, "guardrails_checks_total")
    assert not moved(before, after, "guardrails_findings_total")

    client.post("/v1/checks", json=attack)  # the same check, final: counted as before
    final = scrape(client)
    assert moved(after, final, "guardrails_checks_total") == {
        labels(policy="default", format="openai.chat", phase="response", verdict="block"): 1}
    assert moved(after, final, "guardrails_findings_total")
    assert not moved(after, final, "guardrails_partial_checks_total")


# --- tool_schema on calls still arriving --------------------------------------------------------------------

@pytest.mark.parametrize("name", STREAMS)
def test_a_stream_cut_anywhere_gets_no_tool_schema_finding_when_partial(client: TestClient, name: str) -> None:
    """Each sample is allowed whole; cut inside a tool call, it broke the schema (no arguments yet, or arguments
    not JSON yet) in an ordinary check, and must not in a partial one."""
    events = len(sample(name)["response"])
    ordinary, partial = [], []
    for upto in range(1, events + 1):
        ordinary.append(categories(client.post("/v1/checks", json=cut(name, upto)).json()))
        partial.append(categories(client.post("/v1/checks", json=cut(name, upto, partial=True)).json()))
    assert not any("tool_schema" in found for found in partial)
    cut_in_a_call = [upto for upto, found in enumerate(ordinary, 1) if "tool_schema" in found]
    if name != "gemini_generate_content_stream.json":  # whole functionCall parts: never cut inside a call
        assert cut_in_a_call and "tool_schema" not in ordinary[-1]


def test_a_stream_cut_inside_the_arguments_is_judged_by_the_final_check(client: TestClient) -> None:
    for upto in (CALL_ADDED + 1, 48):  # no argument text yet; '{"city": "Paris", "'
        findings = client.post("/v1/checks", json=cut(RESPONSES_STREAM, upto)).json()["findings"]
        assert [f["category"] for f in findings] == ["tool_schema"]
        assert client.post("/v1/checks", json=cut(RESPONSES_STREAM, upto, partial=True)).json()["findings"] == []


def test_complete_arguments_with_a_bad_value_are_still_reported_when_partial(client: TestClient) -> None:
    body = cut(RESPONSES_STREAM, ARGUMENTS_DONE + 1, partial=True)  # arguments done, the call item not yet
    body["response"][CELSIUS_DELTA] = {**body["response"][CELSIUS_DELTA], "delta": "kelvin"}
    body["response"][ARGUMENTS_DONE] = {**body["response"][ARGUMENTS_DONE],
                                        "arguments": '{"city": "Paris", "unit": "kelvin"}'}
    findings = client.post("/v1/checks", json=body).json()["findings"]
    assert [(f["category"], f["location"]["pointer"]) for f in findings] == [
        ("tool_schema", f"/response/{CELSIUS_DELTA}/delta")]


def test_a_tool_choice_the_stream_has_not_reached_yet_is_not_reported_when_partial(client: TestClient) -> None:
    body = cut(RESPONSES_STREAM, CALL_ADDED)  # reasoning and text so far: the call comes next
    body["request"] = {**body["request"], "tool_choice": "required"}
    assert "tool_schema" in categories(client.post("/v1/checks", json=body).json())
    assert client.post("/v1/checks", json={**body, "partial": True}).json()["findings"] == []


# --- the middleware -----------------------------------------------------------------------------------------

class RecordingClient(GuardrailsClient):
    """Keeps each check body the middleware sends and the service's answer."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent: list[tuple[dict[str, Any], CheckResponse]] = []

    async def check_raw(self, body: bytes, **options: Any) -> CheckResponse:
        answer = await super().check_raw(body, **options)
        self.sent.append((json.loads(body), answer))
        return answer


def stream_through_middleware(app: Any, path: str, name: str) -> tuple[httpx.Response, RecordingClient]:
    """A streamed call to `path` (request from sample `name`) behind the middleware, re-checked at every event."""
    recorder = RecordingClient("http://guardrails", transport=httpx.ASGITransport(app=app))
    guarded = GuardrailsMiddleware(StubModelServer().app, client=recorder, stream_check_interval_s=0.0)
    request = {**copy.deepcopy(sample(name)["request"]), "stream": True}

    async def call() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=guarded), base_url="http://gw") as http:
            return await http.post(path, json=request, headers={"x-agent-id": "travel-agent"})

    return asyncio.run(call()), recorder


@pytest.mark.skipif(not fixtures_present(), reason="shared vLLM fixtures not found (GUARDRAILS_SHARED_DIR)")
def test_the_middleware_marks_mid_stream_checks_partial_and_the_final_check_not(
        client: TestClient, tmp_path: Path) -> None:
    answer, recorder = stream_through_middleware(client.app, "/v1/responses", RESPONSES_STREAM)
    assert answer.status_code == 200 and b"response.completed" in answer.content  # allowed to its end
    bodies = [body for body, _ in recorder.sent]
    assert len(bodies) > 20  # the input check, a re-check per event, the final check
    assert [body.get("partial") for body in bodies] == [None] + [True] * (len(bodies) - 2) + [None]
    assert all(result.partial == ("partial" in body) for body, result in recorder.sent)  # each answer echoes it
    # What the walkthrough saw: re-checks of arguments still arriving recorded blocks that never happened.
    store = open_audit_store(audit_url(tmp_path), create=False)
    try:
        records = [row.record() for row in store.iter_records()]
    finally:
        store.close()
    assert len(records) == len(bodies) and {record["verdict"] for record in records} == {"allow"}
    assert sum(record.get("partial", False) for record in records) == len(bodies) - 2


# --- an audit log written before the `partial` column ---------------------------------------------------------

OLD_SQLITE_SCHEMA = """
CREATE TABLE audit_records (
    seq INTEGER PRIMARY KEY, check_id TEXT NOT NULL, ts REAL NOT NULL, tenant TEXT, agent TEXT, session TEXT,
    verdict TEXT NOT NULL, body BLOB NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
CREATE INDEX audit_records_ts ON audit_records(ts);
CREATE TRIGGER audit_records_no_update BEFORE UPDATE ON audit_records
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_records_no_delete BEFORE DELETE ON audit_records
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""
OLD_RECORD = {"v": 1, "check_id": "chk_old", "ts": 1_767_225_600.0, "tenant": "acme", "agent": "travel-agent",
              "session": "s-1", "verdict": "block", "findings": []}


def old_row() -> tuple[Any, ...]:
    """OLD_RECORD as the old schema's row: seq, check_id, ts, tenant, agent, session, verdict, body, prev_hash, hash."""
    body = canonical(OLD_RECORD)
    return (1, "chk_old", OLD_RECORD["ts"], "acme", "travel-agent", "s-1", "block", body, GENESIS,
            chain_hash(1, GENESIS, body))


def write_old_sqlite_log(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.executescript(OLD_SQLITE_SCHEMA)
        db.execute(f"INSERT INTO audit_records VALUES ({','.join('?' * 10)})", old_row())
    db.close()


def test_an_old_sqlite_log_opens_and_takes_partial_records(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "old.sqlite3"
    write_old_sqlite_log(path)
    url = f"sqlite:///{path}"
    assert main(["audit", "export", "--url", url, "--no-partial"]) == 0  # a reader opens it first
    assert [json.loads(line)["check_id"] for line in capsys.readouterr().out.splitlines()] == ["chk_old"]

    store = open_audit_store(url)
    try:
        seq = store.submit({**OLD_RECORD, "check_id": "chk_new", "ts": OLD_RECORD["ts"] + 1, "verdict": "allow",
                            "partial": True}).result(timeout=10)
        assert seq == 2
        assert [r.record()["check_id"] for r in store.iter_records(AuditFilter(partial=True))] == ["chk_new"]
        assert [r.record()["check_id"] for r in store.iter_records(AuditFilter(partial=False))] == ["chk_old"]
        assert store.verify().ok
    finally:
        store.close()
    assert main(["audit", "verify", "--url", url]) == 0


@pytest.mark.skipif(not PG_URL, reason="needs GUARDRAILS_TEST_POSTGRES_URL (e.g. postgresql://postgres@127.0.0.1/test)")
def test_an_old_postgres_log_opens_and_takes_partial_records() -> None:
    import psycopg

    assert PG_URL is not None
    table = f"audit_old_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"""CREATE TABLE {table} (seq BIGINT PRIMARY KEY, check_id TEXT NOT NULL,
            ts DOUBLE PRECISION NOT NULL, tenant TEXT, agent TEXT, session TEXT, verdict TEXT NOT NULL,
            body BYTEA NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL)""")
        conn.execute(f"INSERT INTO {table} VALUES ({','.join(['%s'] * 10)})", old_row())
    store = open_audit_store(f"{PG_URL}{'&' if '?' in PG_URL else '?'}table={table}")
    try:
        store.submit({**OLD_RECORD, "check_id": "chk_new", "ts": OLD_RECORD["ts"] + 1, "partial": True}).result(10)
        assert [r.record()["check_id"] for r in store.iter_records(AuditFilter(partial=True))] == ["chk_new"]
        assert [r.record()["check_id"] for r in store.iter_records(AuditFilter(partial=False))] == ["chk_old"]
        assert store.verify().ok
    finally:
        store.drop()  # type: ignore[attr-defined]
        store.close()
