"""Operations follow-ups (part B): state store calls that leave the event loop, PostgreSQL connections that
cannot stall a check for the kernel's TCP timeout, and the SQLite state store opened at start.

A hung Redis is a loopback socket that accepts connections and never answers (redis-py's ping at open is
skipped, as if Redis hung after the service started). The PostgreSQL tests run when
GUARDRAILS_TEST_POSTGRES_URL is set (e.g. postgresql://postgres@127.0.0.1:5432/test).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import redis
import yaml

from detectors.budget import BudgetDetector
from guardrails.cli import EXIT_CONFIG, main
from guardrails.config import Settings
from guardrails.detector import Services
from guardrails.serve import build_app, build_service
from guardrails.service import CheckService
from guardrails.state.observer import StreakObserver
from guardrails.state.redis import RedisStateStore
from guardrails.state.sqlite import SQLiteStateStore

PG_URL = os.environ.get("GUARDRAILS_TEST_POSTGRES_URL")
SAMPLES = Path(__file__).resolve().parent.parent / "samples"
# A check of the travel agent (tenant acme) with a response carrying logprobs: both store users run on it.
BODY = json.loads((SAMPLES / "openai_chat.json").read_text(encoding="utf-8"))
DETECTORS = {
    "budget": {"windows": {"agent": {"requests_per_minute": 1000, "block_streak": 10}}},
    "low_confidence": {},
}


class HungRedis:
    """A loopback server that accepts connections and never answers, until `release` closes everything (what
    then waits on it fails at once with a connection error)."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.asked = threading.Event()  # a command arrived: a store call is waiting for its answer
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:  # released
                return
            self.connections.append(conn)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        try:
            if conn.recv(65536):
                self.asked.set()
        except OSError:
            pass

    def release(self) -> None:
        self.listener.close()
        for conn in self.connections:
            with contextlib.suppress(OSError):  # the client closed it already
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def url(self, socket_timeout_s: float) -> str:
        return f"redis://127.0.0.1:{self.port}/0?socket_timeout={socket_timeout_s}"


@pytest.fixture
def hung_redis() -> Iterator[HungRedis]:
    server = HungRedis()
    yield server
    server.release()


@pytest.fixture
def unpinged(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Stores open without their ping: the Redis they name hangs only later, while serving."""
    with monkeypatch.context() as patched:
        patched.setattr(redis.Redis, "ping", lambda self, **_: True)
        yield


def policies(root: Path, detector: str, timeout_ms: int) -> Path:
    bundle = root / "policies" / "default"
    bundle.mkdir(parents=True)
    config = {"detectors": {detector: {**DETECTORS[detector], "timeout_ms": timeout_ms}}}
    (bundle / "config.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return bundle.parent


def settings(tmp_path: Path, detector: str, state_url: str, timeout_ms: int) -> Settings:
    return Settings(policy_dir=policies(tmp_path, detector, timeout_ms), data_dir=tmp_path / "var",
                    audit_url="none", state_url=state_url)


def detector_errors(result: dict[str, Any], detector: str) -> list[str]:
    return [f["message"] for f in result["findings"]
            if f["category"] == "detector_error" and f["detector"] == detector]


# --- 1. a hung Redis holds the checks that wait on it, not the worker ------------------------------------------

@pytest.mark.parametrize("detector", ["budget", "low_confidence"])
def test_a_check_waiting_on_a_hung_redis_does_not_hold_healthz(
        tmp_path: Path, hung_redis: HungRedis, unpinged: None, detector: str) -> None:
    # A detector timeout longer than the test: the check waits until the server is released.
    app = build_app(settings(tmp_path, detector, hung_redis.url(socket_timeout_s=5), timeout_ms=60_000))
    finished: list[str] = []

    async def scenario() -> tuple[httpx.Response, httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://guardrails") as client:
            check = asyncio.create_task(client.post("/v1/checks", json=BODY))
            check.add_done_callback(lambda _: finished.append("check"))
            while not hung_redis.asked.is_set():  # the check now waits on the store
                await asyncio.sleep(0.01)
            health = await client.get("/healthz")
            finished.append("healthz")
            hung_redis.release()
            return health, await check

    try:
        health, checked = asyncio.run(scenario())
    finally:
        app.state.service.close()
    assert health.status_code == 200
    assert finished == ["healthz", "check"]  # answered while the check still waited on Redis
    assert checked.status_code == 200
    (error,) = detector_errors(checked.json(), detector)  # the store went away: a detector_error, not a 5xx
    assert "ConnectionError" in error


@pytest.mark.parametrize("detector", ["budget", "low_confidence"])
def test_a_hung_redis_is_a_detector_error_at_the_detectors_timeout(
        tmp_path: Path, hung_redis: HungRedis, unpinged: None, detector: str) -> None:
    # The socket timeout is far longer than the detector's: the detector's ends the wait.
    service = build_service(settings(tmp_path, detector, hung_redis.url(socket_timeout_s=5), timeout_ms=100))
    try:
        result = asyncio.run(service.check(BODY))
    finally:
        hung_redis.release()
        service.close()
    (error,) = detector_errors(result, detector)
    assert error.endswith("timed out after 0.1 s")
    assert result["verdict"] == "warn"  # the default policy's on_detector_error


def test_a_block_streak_write_to_a_hung_redis_does_not_hold_the_event_loop(
        hung_redis: HungRedis, unpinged: None) -> None:
    store = RedisStateStore(hung_redis.url(socket_timeout_s=5))
    observer = StreakObserver(store)
    outcome: Any = SimpleNamespace(check_id="chk_streak", result=SimpleNamespace(
        signals={"budget": {"streaks": {"agent:acme/travel-agent": 2}}}, findings=[]))

    async def scenario() -> bool:
        writing = asyncio.create_task(observer(outcome))
        while not hung_redis.asked.is_set():
            await asyncio.sleep(0.01)
        still_writing = not writing.done()  # this coroutine ran while the write waited
        hung_redis.release()
        await writing  # logged and skipped, never raised
        return still_writing

    try:
        assert asyncio.run(scenario())
    finally:
        store.close()


def test_the_sqlite_store_is_called_inline(tmp_path: Path) -> None:
    """The embedded default pays no thread hop: its calls take microseconds."""
    store = SQLiteStateStore(f"sqlite:///{tmp_path / 'state.sqlite3'}")
    try:
        assert store.remote is False
        assert BudgetDetector(DETECTORS["budget"], Services(state=store)).io_bound is False
        caller = threading.get_ident()
        assert asyncio.run(store.run(threading.get_ident)) == caller
    finally:
        store.close()


# --- 2. PostgreSQL: a stalled connection cannot hold a check for the kernel's TCP timeout ----------------------

def pg_store(query: str) -> Any:
    if not PG_URL:
        pytest.skip("needs GUARDRAILS_TEST_POSTGRES_URL (e.g. postgresql://postgres@127.0.0.1:5432/test)")
    from guardrails.audit.postgres import PostgresAuditStore

    table = f"ops_b_{uuid.uuid4().hex[:12]}"
    return PostgresAuditStore(f"{PG_URL}{'&' if '?' in PG_URL else '?'}table={table}{query}")


def connection_settings(store: Any) -> list[dict[str, str]]:
    """What each of the store's connections was opened with, and the server's statement_timeout for it."""
    out = []
    for conn in (store._write_conn, store._read_conn):
        given = conn.info.get_parameters()
        given["statement_timeout"] = conn.execute("SHOW statement_timeout").fetchone()[0]
        given["search_path"] = conn.execute("SHOW search_path").fetchone()[0]
        out.append(given)
    return out


def test_postgres_connections_get_keepalives_and_timeouts_by_default() -> None:
    store = pg_store("")
    try:
        for given in connection_settings(store):
            assert given["statement_timeout"] == "5s"
            assert given["connect_timeout"] == "5" and given["keepalives"] == "1"
            assert (given["keepalives_idle"], given["keepalives_interval"], given["keepalives_count"]) == (
                "10", "5", "3")
            assert given["tcp_user_timeout"] == "15000"
    finally:
        store.drop()
        store.close()


def test_postgres_url_settings_win_over_the_defaults() -> None:
    store = pg_store("&keepalives_idle=42&connect_timeout=9&options=-c%20statement_timeout%3D1500")
    other_options = pg_store("&options=-c%20search_path%3Dpublic")  # ours are added to the URL's own
    try:
        for given in connection_settings(store):
            assert given["statement_timeout"] == "1500ms"
            assert given["keepalives_idle"] == "42" and given["connect_timeout"] == "9"
            assert given["keepalives_interval"] == "5"  # what the URL leaves unset keeps its default
        for given in connection_settings(other_options):
            assert given["search_path"] == "public" and given["statement_timeout"] == "5s"
    finally:
        for opened in (store, other_options):
            opened.drop()
            opened.close()


# --- 3. the SQLite state store is opened at start ---------------------------------------------------------------

def test_a_state_path_that_cannot_be_a_database_is_refused_at_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import uvicorn

    served: list[Any] = []
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: served.append(kwargs))
    monkeypatch.setenv("GUARDRAILS_STATE_URL", f"sqlite:///{tmp_path}")  # a directory
    monkeypatch.setenv("GUARDRAILS_AUDIT_URL", "none")
    body = tmp_path / "body.json"
    body.write_text(json.dumps(BODY), encoding="utf-8")
    for command in (["serve"], ["check", str(body)]):
        assert main(command) == EXIT_CONFIG
        err = capsys.readouterr().err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert f"cannot open the SQLite database {tmp_path}" in err
    assert not served


def test_the_state_store_creates_its_file_and_tables_when_built(tmp_path: Path) -> None:
    path = tmp_path / "var" / "state.sqlite3"
    service = build_service(Settings(data_dir=tmp_path / "var", audit_url="none"))
    try:
        tables = {name for (name,) in sqlite3.connect(path).execute("SELECT name FROM sqlite_master")}
        assert {"windows", "breakers", "streaks", "model_stats"} <= tables
    finally:
        service.close()


def another_worker_holds_the_write_lock(path: Path, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Another connection holds `path`'s write lock until the SQLite stores' shared `connect` first pauses to
    retry (patched): the pauses are recorded in the list returned."""
    import guardrails.audit.sqlite as shared_sqlite

    other_worker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other_worker.execute("CREATE TABLE creating (x)")
    other_worker.execute("BEGIN IMMEDIATE")
    waits: list[float] = []

    def other_worker_done(seconds: float) -> None:  # the store's pause between attempts
        waits.append(seconds)
        other_worker.execute("COMMIT")
        other_worker.close()

    monkeypatch.setattr(shared_sqlite, "time", SimpleNamespace(sleep=other_worker_done))
    return waits


def test_workers_opening_a_fresh_state_file_together_wait_for_each_other(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Switching a file to WAL fails at once while another connection holds its write lock (workers starting
    together): the store retries instead of refusing to start."""
    path = tmp_path / "state.sqlite3"
    waits = another_worker_holds_the_write_lock(path, monkeypatch)
    store = SQLiteStateStore(f"sqlite:///{path}")
    try:
        assert len(waits) == 1 and store.breakers() == []
    finally:
        store.close()


def test_low_confidence_without_a_state_store_learns_in_memory(tmp_path: Path) -> None:
    """No state store: the per-process statistics answer `run` inline."""
    service: CheckService = build_service(Settings(policy_dir=policies(tmp_path, "low_confidence", 2000),
                                                   data_dir=tmp_path / "var", audit_url="none", state_url="none"))
    result = asyncio.run(service.check(BODY))
    assert not detector_errors(result, "low_confidence")
