"""Review of `partial` checks as the compliance officer and the SRE who run them (tests/test_partial_checks.py has
the feature): a partial flag must never hide a real block, an audit log from before the column keeps verifying and
takes new records (several workers at once, and a rolled-back service), the flag is covered by the hash chain, a
PostgreSQL worker starts while the log is being read, gateways keep checking streams when the service predates
`partial`, and the metrics exposition stays valid with partial checks counted apart.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from policy_bundles import bundle
from stub_vllm_gateway import StubModelServer, fixtures_present
from test_litellm_hook import StandInBlocked, StandInLogging, _load_hook_with_stand_ins, anthropic_sse, litellm_data
from test_metrics import Exploding, ExplodingDetector, labels, moved, scrape
from test_partial_checks import (
    OLD_RECORD,
    RESPONSES_STREAM,
    RecordingClient,
    audit_url,
    cut,
    old_row,
    sample,
    stream_through_middleware,
    write_old_sqlite_log,
)

from api.app import create_app
from guardrails.audit import AuditFilter, open_audit_store
from guardrails.audit.chain import canonical, chain_hash
from guardrails.cli import main
from guardrails.client import is_synthetic
from guardrails.config import Settings
from guardrails.middleware import GuardrailsMiddleware
from guardrails.serve import build_app, build_service

REPO = Path(__file__).resolve().parent.parent
PG_URL = os.environ.get("GUARDRAILS_TEST_POSTGRES_URL")
needs_postgres = pytest.mark.skipif(not PG_URL, reason="needs GUARDRAILS_TEST_POSTGRES_URL "
                                                       "(e.g. postgresql://postgres@127.0.0.1:5432/test)")
# What the service answered before `partial` existed (e32111d): a body with the field is a 422 that names it.
PREDATES_PARTIAL = {"error": {"type": "invalid_body", "pointer": "/partial", "message":
                              "unknown field(s) ['partial']; expected ['context', 'format', 'policy', 'raw_output', "
                              "'request', 'response']"}}
# The statements of the code before the column (e32111d's SQLite store): what a rolled-back service runs.
OLD_COLUMNS = "seq, check_id, ts, tenant, agent, session, verdict, body, prev_hash, hash"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(build_app(Settings(policy_dir=REPO / "policies", data_dir=tmp_path / "var"))) as test_client:
        yield test_client


def records(url: str, filt: AuditFilter | None = None) -> list[dict[str, Any]]:
    store = open_audit_store(url, create=False)
    try:
        return [row.record() for row in store.iter_records(filt)]
    finally:
        store.close()


def pg_url(table: str, **options: str) -> str:
    assert PG_URL is not None
    query = "&".join([f"table={table}", *(f"{key}={value}" for key, value in options.items())])
    return f"{PG_URL}{'&' if '?' in PG_URL else '?'}{query}"


# --- a partial flag never hides a real block ------------------------------------------------------------------

def test_a_request_only_check_cannot_be_partial(client: TestClient, tmp_path: Path) -> None:
    """Nothing is still arriving in a request: an input block sent as partial was answered, audited as advisory
    (left out of `export --no-partial`) and kept out of `checks_total`."""
    attack = sample("attacks/openai_chat_exfiltration.json")
    answer = client.post("/v1/checks", json={"request": attack["request"], "partial": True})
    assert answer.status_code == 422 and answer.json()["error"]["pointer"] == "/partial"
    assert "needs a `response`" in answer.json()["error"]["message"]
    assert records(audit_url(tmp_path)) == []
    ordinary = client.post("/v1/checks", json={"request": attack["request"], "partial": False}).json()
    assert ordinary["verdict"] == "block" and ordinary["phase"] == "request" and "partial" not in ordinary


@pytest.mark.skipif(not fixtures_present(), reason="shared vLLM fixtures not found (GUARDRAILS_SHARED_DIR)")
@pytest.mark.parametrize(("path", "name"), [("/v1/chat/completions", "openai_chat_stream.json"),
                                            ("/v1/messages", "anthropic_messages_stream.json")])
def test_the_middleware_never_marks_its_final_check_partial(client: TestClient, path: str, name: str) -> None:
    answer, recorder = stream_through_middleware(client.app, path, name)
    assert answer.status_code == 200
    flags = [body.get("partial") for body, _ in recorder.sent]
    assert flags == [None] + [True] * (len(flags) - 2) + [None] and len(flags) > 3


def guarded_stream(service: Any, request: dict[str, Any], fail_mode: str) -> tuple[httpx.Response, RecordingClient]:
    """A streamed Responses call behind the middleware (re-checked at every event) with `request`."""
    recorder = RecordingClient("http://guardrails", transport=httpx.ASGITransport(app=service), fail_mode=fail_mode)
    guarded = GuardrailsMiddleware(StubModelServer().app, client=recorder, stream_check_interval_s=0.0)

    async def call() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=guarded), base_url="http://gw") as http:
            return await http.post("/v1/responses", json={**request, "stream": True})

    return asyncio.run(call()), recorder


def test_a_stream_stopped_mid_stream_keeps_its_block_among_the_verdicts_that_counted(
        client: TestClient, tmp_path: Path) -> None:
    request = {**copy.deepcopy(sample(RESPONSES_STREAM)["request"]), "tools": []}  # get_weather is undeclared
    answer, recorder = guarded_stream(client.app, request, "open")
    assert b"tool_undeclared" in answer.content and b"response.completed" not in answer.content
    (last_body, last_answer) = recorder.sent[-1]
    assert "partial" not in last_body and last_answer.verdict == "block"  # the stop is decided by a final check
    counted = records(audit_url(tmp_path), AuditFilter(partial=False, verdict="block"))
    assert [record["check_id"] for record in counted] == [last_answer.check_id]


def test_the_nemo_endpoint_ignores_partial_its_checks_are_final(client: TestClient, tmp_path: Path) -> None:
    attack = sample("attacks/openai_chat_exfiltration.json")
    messages = [*attack["request"]["messages"], attack["response"]["choices"][0]["message"]]
    before = scrape(client)
    for extra in ({"partial": True}, {"guardrails": {"options": {"partial": True}}}):
        body = {"model": "m", "messages": messages, "tools": attack["request"]["tools"], **extra}
        answer = client.post("/v1/guardrail/checks", json=body)
        assert answer.status_code == 200 and answer.json()["status"] == "blocked"
    after = scrape(client)
    assert moved(before, after, "guardrails_checks_total") == {
        labels(policy="default", format="openai.chat", phase="response", verdict="block"): 2}
    assert not moved(before, after, "guardrails_partial_checks_total")
    assert [record.get("partial") for record in records(audit_url(tmp_path))] == [None, None]


# --- gateways in front of a service older than `partial` (a rollback, or the service not upgraded yet) ----------

class PredatesPartial:
    """The service as it was before `partial`: a check body with the field is refused (422), others are checked."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.refused = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/checks":
            await self.app(scope, receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            body, more = body + message.get("body", b""), message.get("more_body", False)
        if "partial" in json.loads(body):
            self.refused += 1
            payload = json.dumps(PREDATES_PARTIAL).encode()
            await send({"type": "http.response.start", "status": 422,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": payload})
            return
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


@pytest.mark.parametrize("fail_mode", ["open", "closed"])
def test_the_middleware_keeps_checking_streams_when_the_service_predates_partial(client: TestClient,
                                                                                 fail_mode: str) -> None:
    """The 422 was no verdict: failing open let the rest of the call through unchecked (an undeclared tool call
    included, its final check skipped); failing closed cut every stream at its first re-check."""
    old_service = PredatesPartial(client.app)
    request = copy.deepcopy(sample(RESPONSES_STREAM)["request"])
    answer, recorder = guarded_stream(old_service, request, fail_mode)
    assert answer.status_code == 200 and b"response.completed" in answer.content
    assert old_service.refused == 1 and not any(is_synthetic(result) for _, result in recorder.sent)

    stopped, recorder = guarded_stream(old_service, {**request, "tools": []}, fail_mode)
    assert b"tool_undeclared" in stopped.content and b"response.completed" not in stopped.content
    assert recorder.sent[-1][1].verdict == "block" and not is_synthetic(recorder.sent[-1][1])


@pytest.mark.parametrize("tools", ["declared", "undeclared"])
def test_the_litellm_hook_keeps_checking_streams_when_the_service_predates_partial(client: TestClient,
                                                                                   tools: str) -> None:
    hook = _load_hook_with_stand_ins()
    exchange = sample("anthropic_messages_stream.json")
    request = exchange["request"] if tools == "declared" else {**exchange["request"], "tools": []}
    old_service = PredatesPartial(client.app)
    guard = hook.InferenceGuardrails(guardrail_name="inference-guardrails", api_base="http://guardrails.test",
                                     transport=httpx.ASGITransport(app=old_service))  # fail_closed
    frames = [anthropic_sse([event]) for event in exchange["response"]]

    async def run() -> tuple[list[Any], Exception | None]:
        passed: list[Any] = []
        try:
            async for chunk in guard.async_post_call_streaming_iterator_hook(
                    SimpleNamespace(), _chunks(frames), litellm_data(request, StandInLogging("anthropic_messages"))):
                passed.append(chunk)
        except Exception as exc:
            return passed, exc
        return passed, None

    passed, raised = asyncio.run(run())
    assert old_service.refused >= 1
    if tools == "declared":
        assert raised is None and b"".join(passed) == b"".join(frames)
    else:  # stopped by the re-check before the tool_use block, not refused as "no verdict" (503)
        assert isinstance(raised, StandInBlocked) and raised.status_code == 400
        assert "(tool_undeclared)" in raised.message


async def _chunks(items: list[bytes]) -> Any:
    for item in items:
        yield item


# --- an audit log from before the column --------------------------------------------------------------------

WORKER = """
import sys
from guardrails.audit import open_audit_store
store = open_audit_store(sys.argv[1])
for i in range(5):
    record = {"v": 1, "check_id": f"chk_{sys.argv[2]}_{i}", "ts": 1767225700.0 + i, "verdict": "allow"}
    store.submit({**record, "partial": True} if i % 2 else record).result(timeout=30)
store.close()
"""


def test_four_workers_open_an_old_sqlite_log_together(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    write_old_sqlite_log(path)
    url = f"sqlite:///{path}"
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, url, str(n)], cwd=REPO, stderr=subprocess.PIPE,
                                text=True) for n in range(4)]
    for worker in workers:
        assert worker.wait(timeout=120) == 0, worker.stderr.read() if worker.stderr else ""
    assert main(["audit", "verify", "--url", url]) == 0
    assert len(records(url)) == 1 + 4 * 5
    assert len(records(url, AuditFilter(partial=True))) == 4 * 2
    assert "chk_old" in {record["check_id"] for record in records(url, AuditFilter(partial=False))}


def test_old_records_keep_their_hashes_and_a_rolled_back_service_still_writes(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    write_old_sqlite_log(path)
    url = f"sqlite:///{path}"
    old_hash = old_row()[-1]
    store = open_audit_store(url)  # adds the column
    try:
        store.submit({**OLD_RECORD, "check_id": "chk_partial", "partial": True}).result(timeout=10)
    finally:
        store.close()
    with sqlite3.connect(path) as db:  # the old code's statements on the migrated table (a rollback)
        rows = db.execute(f"SELECT {OLD_COLUMNS} FROM audit_records ORDER BY seq").fetchall()
        assert rows[0][-1] == old_hash  # the record written before the column: its hash unchanged
        body = canonical({**OLD_RECORD, "check_id": "chk_rolled_back"})
        db.execute(f"INSERT INTO audit_records ({OLD_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
                   (3, "chk_rolled_back", OLD_RECORD["ts"], "acme", "travel-agent", "s-1", "block", body,
                    rows[-1][-1], chain_hash(3, rows[-1][-1], body)))
    db.close()
    assert main(["audit", "verify", "--url", url]) == 0
    assert [r["check_id"] for r in records(url, AuditFilter(partial=False))] == ["chk_old", "chk_rolled_back"]


@pytest.mark.parametrize(("check_id", "column"), [("chk_old", 1), ("chk_partial", None), ("chk_partial", 0)])
def test_flipping_a_records_partial_column_is_found_by_verify(tmp_path: Path, check_id: str,
                                                              column: int | None) -> None:
    """The filter column beside the record decides `export --no-partial`: setting it on a block would hide the
    block from the verdicts that counted. The record (hashed) says what was checked; verify compares the two."""
    path = tmp_path / "old.sqlite3"
    write_old_sqlite_log(path)
    url = f"sqlite:///{path}"
    store = open_audit_store(url)
    try:
        store.submit({**OLD_RECORD, "check_id": "chk_partial", "partial": True}).result(timeout=10)
    finally:
        store.close()
    with sqlite3.connect(path) as db:  # someone with write access to the file, past the append-only trigger
        db.execute("DROP TRIGGER audit_records_no_update")
        db.execute("UPDATE audit_records SET partial = ? WHERE check_id = ?", (column, check_id))
    db.close()
    store = open_audit_store(url, create=False)
    try:
        problems = store.verify().problems
    finally:
        store.close()
    assert [(p.check_id, p.kind, p.message) for p in problems] == [
        (check_id, "columns", "indexed column partial was changed")]
    assert main(["audit", "verify", "--url", url]) != 0


def test_a_partial_flag_written_into_a_record_breaks_its_hash(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    write_old_sqlite_log(path)
    with sqlite3.connect(path) as db:
        db.execute("DROP TRIGGER audit_records_no_update")
        db.execute("ALTER TABLE audit_records ADD COLUMN partial INTEGER")
        db.execute("UPDATE audit_records SET body = ?, partial = 1", (canonical({**OLD_RECORD, "partial": True}),))
    db.close()
    store = open_audit_store(f"sqlite:///{path}", create=False)
    try:
        assert [p.kind for p in store.verify().problems] == ["altered"]
    finally:
        store.close()


@needs_postgres
def test_a_postgres_worker_starts_while_the_log_is_being_read() -> None:
    """`ADD COLUMN IF NOT EXISTS` waits for an ACCESS EXCLUSIVE lock even when the column exists: with any read open
    on the table (an export, pg_dump) every worker start failed at statement_timeout, and every insert of the
    running workers queued behind it meanwhile."""
    import psycopg

    assert PG_URL is not None
    table = f"audit_review_{uuid.uuid4().hex[:12]}"
    first = open_audit_store(pg_url(table))
    reader = psycopg.connect(PG_URL)  # a transaction left open after a read, as a long export or pg_dump holds one
    try:
        reader.execute(f"SELECT count(*) FROM {table}").fetchone()
        second = open_audit_store(pg_url(table, options="-c%20statement_timeout%3D1000"))
        try:
            assert second.submit({**OLD_RECORD, "partial": True}).result(timeout=10) == 1
        finally:
            second.close()
    finally:
        reader.rollback()
        reader.close()
        first.drop()  # type: ignore[attr-defined]
        first.close()


# --- metrics --------------------------------------------------------------------------------------------------

def test_the_exposition_stays_valid_with_partial_checks_counted_apart(tmp_path: Path) -> None:
    """A partial check's detector error and duration are counted; its findings and verdict only in
    `partial_checks_total`, whose odd label values are escaped as everywhere (the strict parser reads it back)."""
    policy_id = 'odd "policy" \\ with\nnewline'
    bundle(tmp_path, policy_id, "on_detector_error: block\ndetectors:\n  tool_undeclared: {}\n  exploding: {}\n")
    settings = Settings(policy_dir=tmp_path, audit_url="none", state_url="none")
    service = build_service(settings)
    service.registry.register(ExplodingDetector)
    client = TestClient(create_app(service, settings))
    body = {**cut(RESPONSES_STREAM, 48), "policy": policy_id, "partial": True}
    before = scrape(client)
    for _ in range(2):
        assert client.post("/v1/checks", json=body).json()["verdict"] == "block"
    after = scrape(client)
    assert moved(before, after, "guardrails_partial_checks_total") == {labels(policy=policy_id, verdict="block"): 2}
    assert moved(before, after, "guardrails_detector_errors_total") == {
        labels(detector="exploding", error_type=Exploding.__name__): 2}
    assert not moved(before, after, "guardrails_findings_total")
    assert not moved(before, after, "guardrails_checks_total")
    assert moved(before, after, "guardrails_check_duration_seconds_count") == {labels(policy=policy_id): 2}
    assert moved(before, after, "guardrails_detector_duration_seconds_count")[labels(detector="exploding")] == 2
    text = client.get("/metrics").text
    assert text.count("# TYPE guardrails_partial_checks_total counter\n") == 1
