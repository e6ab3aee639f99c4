"""What an operator meets running `guardrails serve`: settings refused at start, stores that cannot be reached,
the service log, and store outages while serving.

PostgreSQL's dropped-connection test runs when GUARDRAILS_TEST_POSTGRES_URL is set
(e.g. postgresql://postgres@127.0.0.1:5432/test). Every other test needs no server: an unreachable store is
a closed loopback port, a hung one a socket that never answers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import logging.config
import os
import socket
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from guardrails.audit.chain import StoredRecord
from guardrails.audit.observer import AuditObserver
from guardrails.audit.store import AuditFilter, AuditStore, PendingRow
from guardrails.cli import EXIT_CONFIG, EXIT_USAGE, main
from guardrails.config import Settings
from guardrails.detector import DetectorRegistry, Services
from guardrails.errors import AuditUnavailable
from guardrails.policy import PolicyStore
from guardrails.serve import build_service, serving_summary
from guardrails.service import CheckService
from guardrails.state.observer import StreakObserver
from guardrails.state.redis import RedisStateStore
from guardrails.state.sqlite import SQLiteStateStore

PG_URL = os.environ.get("GUARDRAILS_TEST_POSTGRES_URL")
SECRET = "s3cret-pw"  # a store password that must never reach a message or a log
USER_TEXT = "Book a flight to Lisbon for jane.doe@example.com"  # content that must stay out of the log
REQUEST = {
    "model": "Qwen/Qwen3-8B",
    "messages": [{"role": "user", "content": USER_TEXT}],
    "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
}
# The model calls a tool the request did not declare: tool_undeclared blocks it.
RESPONSE = {
    "id": "chatcmpl-op-1",
    "object": "chat.completion",
    "model": "Qwen/Qwen3-8B",
    "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": None,
        "tool_calls": [{"id": "call_1", "type": "function",
                        "function": {"name": "delete_files", "arguments": "{\"path\": \"/\"}"}}]}}],
    "usage": {"prompt_tokens": 40, "completion_tokens": 12, "total_tokens": 52},
}
BODY = {"request": REQUEST, "response": RESPONSE,
        "context": {"tenant": "acme", "agent_id": "travel-agent", "session_id": "s-1"}}


@pytest.fixture
def no_server(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """uvicorn.run replaced: `serve` records what it would have served with instead of listening."""
    import uvicorn

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: calls.append(kwargs))
    return calls


@pytest.fixture
def body_file(tmp_path: Path) -> str:
    path = tmp_path / "body.json"
    path.write_text(json.dumps(BODY), encoding="utf-8")
    return str(path)


def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def hung_port() -> Iterator[int]:
    """A loopback port that accepts connections (the kernel completes them) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    return err


# --- settings refused at start ------------------------------------------------------------------------------

@pytest.mark.parametrize(("variable", "value"), [
    ("GUARDRAILS_WORKERS", "0"),
    ("GUARDRAILS_PORT", "99999"),
    ("GUARDRAILS_PORT", "0"),
    ("GUARDRAILS_MAX_BODY_BYTES", "-5"),
    ("GUARDRAILS_SEGMENT_CACHE_ENTRIES", "-1"),
    ("GUARDRAILS_OTLP_ENDPOINT", "collector:4318"),
])
def test_serve_refuses_a_setting_out_of_range(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                              no_server: list[dict[str, Any]], variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    assert main(["serve"]) == EXIT_CONFIG
    assert not no_server
    err = one_line_error(capsys)
    assert variable in err and value in err


def test_an_unknown_audit_content_mode_is_refused_even_with_the_audit_off(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], no_server: list[dict[str, Any]]) -> None:
    monkeypatch.setenv("GUARDRAILS_AUDIT_URL", "none")
    monkeypatch.setenv("GUARDRAILS_AUDIT_CONTENT", "bogus")
    assert main(["serve"]) == EXIT_CONFIG
    assert "GUARDRAILS_AUDIT_CONTENT" in one_line_error(capsys)


@pytest.mark.parametrize("flags", [["--port", "0"], ["--port", "70000"], ["--workers", "0"],
                                   ["--log-level", "verbose"]])
def test_serve_refuses_a_bad_flag_as_a_usage_error(no_server: list[dict[str, Any]], flags: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", *flags])
    assert exited.value.code == EXIT_USAGE
    assert not no_server


# --- stores that cannot be opened ---------------------------------------------------------------------------

@pytest.mark.parametrize(("variable", "url", "named"), [
    ("GUARDRAILS_AUDIT_URL", "postgresql://guard:{secret}@127.0.0.1:{port}/audit", "cannot open the audit store"),
    ("GUARDRAILS_STATE_URL", "redis://:{secret}@127.0.0.1:{port}/0", "cannot reach the state store"),
])
def test_an_unreachable_store_is_refused_at_start_in_one_line(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], body_file: str,
        no_server: list[dict[str, Any]], variable: str, url: str, named: str) -> None:
    monkeypatch.setenv(variable, url.format(secret=SECRET, port=closed_port()))
    assert main(["serve"]) == EXIT_CONFIG
    assert not no_server
    err = one_line_error(capsys)
    assert named in err and "refused" in err.lower() and ":***@" in err and SECRET not in err
    assert main(["check", body_file]) == EXIT_CONFIG  # not a verdict over a store it could not write


def test_a_store_command_names_the_unreachable_store(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"postgresql://guard:{SECRET}@127.0.0.1:{closed_port()}/audit"
    assert main(["audit", "export", "--url", url]) == EXIT_CONFIG
    err = one_line_error(capsys)
    assert "cannot open the audit store" in err and SECRET not in err
    assert main(["breakers", "list", "--url", f"redis://127.0.0.1:{closed_port()}/0"]) == EXIT_CONFIG
    assert "cannot reach the state store" in one_line_error(capsys)


def test_a_hung_redis_is_refused_at_open_instead_of_holding_each_check(hung_port: int) -> None:
    with pytest.raises(ConnectionError, match="cannot reach the state store"):
        RedisStateStore(f"redis://127.0.0.1:{hung_port}/0")


def test_a_sqlite_path_that_cannot_be_a_database_is_a_configuration_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], body_file: str) -> None:
    monkeypatch.setenv("GUARDRAILS_AUDIT_URL", f"sqlite:///{tmp_path}")  # a directory
    assert main(["check", body_file]) == EXIT_CONFIG
    assert f"cannot open the SQLite database {tmp_path}" in one_line_error(capsys)


def test_an_unsupported_store_url_does_not_print_its_password(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], body_file: str) -> None:
    monkeypatch.setenv("GUARDRAILS_AUDIT_URL", f"mysql://guard:{SECRET}@db/audit")
    assert main(["check", body_file]) == EXIT_CONFIG
    err = one_line_error(capsys)
    assert "mysql://guard:***@db/audit" in err and SECRET not in err


# --- the service log ---------------------------------------------------------------------------------------

@contextmanager
def logging_as_configured(config: dict[str, Any]) -> Iterator[None]:
    """Apply a logging configuration; restore the loggers it touched after."""
    touched = [logging.getLogger(name) for name in ("guardrails", "uvicorn", "uvicorn.error", "uvicorn.access")]
    saved = [(lg, lg.handlers[:], lg.level, lg.propagate) for lg in touched]
    logging.config.dictConfig(config)
    try:
        yield
    finally:
        for lg, handlers, level, propagate in saved:
            lg.handlers, lg.level, lg.propagate = handlers, level, propagate


def test_serve_logs_policy_reloads_with_level_and_logger(no_server: list[dict[str, Any]],
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as probe:  # a free port: serve now binds it once before starting
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert main(["serve", "--port", str(port)]) == 0
    capsys.readouterr()
    with logging_as_configured(no_server[0]["log_config"]):  # what uvicorn does with it in each worker
        logging.getLogger("guardrails.policy").info("policy default: reloaded version a -> b")
    err = capsys.readouterr().err
    assert "INFO" in err and "guardrails.policy: policy default: reloaded version a -> b" in err


def test_the_startup_line_names_the_stores_without_their_password() -> None:
    service = build_service(Settings(audit_url="none", state_url="none"))
    settings = Settings(audit_url=f"postgresql://guard:{SECRET}@db:5432/audit", state_url="redis://cache:6379/0",
                        api_keys=("k1",))
    line = serving_summary(settings, service)
    assert "postgresql://guard:***@db:5432/audit (content none)" in line and SECRET not in line
    assert "redis://cache:6379/0" in line and "default" in line and "API keys required" in line


# --- store outages while serving ---------------------------------------------------------------------------

class FlakyAuditStore(AuditStore):
    """An audit store that refuses writes while `down`, as a database that went away would."""

    url = f"postgresql://guard:{SECRET}@db:5432/audit"
    inline_writes = True

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.rows: list[bytes] = []

    def _append_batch(self, rows: Sequence[PendingRow]) -> list[int]:
        if self.down:
            raise ConnectionError("connection refused\n\tIs the server running?")
        self.rows.extend(row.body for row in rows)
        return list(range(len(self.rows) - len(rows) + 1, len(self.rows) + 1))

    def _select(self, filt: AuditFilter, after_seq: int, limit: int) -> list[StoredRecord]:
        return []

    def close(self) -> None:
        pass


def test_an_audit_outage_is_logged_once_and_its_end_too(caplog: pytest.LogCaptureFixture) -> None:
    store = FlakyAuditStore()
    service = build_service(Settings(audit_url="none", state_url="none"))
    service.observers.insert(0, AuditObserver(store))
    caplog.set_level(logging.INFO, logger="guardrails")
    store.down = True
    for _ in range(3):
        with pytest.raises(AuditUnavailable) as refused:
            asyncio.run(service.check(BODY))
        assert "\n" not in refused.value.message
    store.down = False
    assert asyncio.run(service.check(BODY))["verdict"] == "block"
    assert len(store.rows) == 1
    logged = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "guardrails.audit"]
    assert [level for level, _ in logged] == ["ERROR", "WARNING"]
    assert "cannot write" in logged[0][1] and "503 audit_unavailable" in logged[0][1]
    assert "3 check(s) were refused" in logged[1][1]
    text = caplog.text
    assert SECRET not in text and "jane.doe" not in text and "Lisbon" not in text  # audit content is `none`


class StreaklessStateStore(SQLiteStateStore):
    """Budget steps work; the streak write after the verdict fails, as a store going away in between would."""

    def record_streaks(self, keys: Sequence[str], blocked: bool) -> None:
        raise sqlite3.OperationalError("database is locked")


def test_a_streak_that_cannot_be_written_does_not_fail_a_judged_check(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    policy = tmp_path / "policies" / "default"
    policy.mkdir(parents=True)
    (policy / "config.yml").write_text(yaml.safe_dump({"detectors": {
        "tool_undeclared": {"action": "block"},
        "budget": {"windows": {"agent": {"block_streak": 3, "requests_per_minute": 100}}}}}))
    state = StreaklessStateStore(f"sqlite:///{tmp_path / 'state.sqlite3'}")
    service = CheckService(PolicyStore(tmp_path / "policies"), DetectorRegistry.from_entry_points(),
                           Services(state=state))
    service.observers.append(StreakObserver(state))
    caplog.set_level(logging.WARNING, logger="guardrails")
    try:
        result = asyncio.run(service.check(BODY))
    finally:
        state.close()
    assert result["verdict"] == "block"
    assert result["signals"]["budget"]["streaks"]  # the budget detector asked for a streak to be written
    warned = [r.getMessage() for r in caplog.records if r.name == "guardrails.state"]
    assert len(warned) == 1 and result["check_id"] in warned[0] and "database is locked" in warned[0]


@pytest.fixture
def pg_store() -> Iterator[Any]:
    if not PG_URL:
        pytest.skip("needs GUARDRAILS_TEST_POSTGRES_URL (e.g. postgresql://postgres@127.0.0.1:5432/test)")
    from guardrails.audit.postgres import PostgresAuditStore

    store = PostgresAuditStore(f"{PG_URL}?table=op_walk_{uuid.uuid4().hex[:12]}")
    yield store
    store.drop()
    store.close()


def test_a_postgres_connection_dropped_while_idle_costs_no_check(pg_store: Any) -> None:
    import psycopg

    record = {"check_id": "chk_before", "ts": 1.0, "verdict": "allow"}
    assert asyncio.run(pg_store.append(record)) == 1
    with psycopg.connect(PG_URL, autocommit=True) as admin:  # what a server restart does to the idle connections
        for conn in (pg_store._write_conn, pg_store._read_conn):
            admin.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
    assert asyncio.run(pg_store.append(dict(record, check_id="chk_after"))) == 2
    assert [r.record()["check_id"] for r in pg_store.iter_records()] == ["chk_before", "chk_after"]
    assert pg_store.verify().ok
