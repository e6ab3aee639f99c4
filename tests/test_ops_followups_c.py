"""Operations follow-ups (part C): admin routes keep store calls off the event loop, and the audit store waits
out workers that open a fresh database together.

A hung Redis is the loopback server of part B that accepts connections and never answers; a hung audit read is
the store's query held until the test lets it go.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from test_ops_followups_b import HungRedis, another_worker_holds_the_write_lock

from guardrails.audit import AuditFilter
from guardrails.audit.observer import AuditObserver
from guardrails.audit.sqlite import SQLiteAuditStore
from guardrails.config import Settings
from guardrails.serve import build_app

REPO = Path(__file__).resolve().parent.parent
API_KEY = "k"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
BREAKER = "agent:acme/travel-agent"
HELD_S = 10.0  # how long a held audit read waits without the test: a fixed build would never see it end


@pytest.fixture
def hung_redis(monkeypatch: pytest.MonkeyPatch) -> Iterator[HungRedis]:
    monkeypatch.setattr(redis.Redis, "ping", lambda self, **_: True)  # Redis hangs after the service started
    server = HungRedis()
    yield server
    server.release()


def admin_app(tmp_path: Path, **stores: str) -> Any:
    return build_app(Settings(policy_dir=REPO / "policies", data_dir=tmp_path / "var", api_keys=(API_KEY,),
                              **stores))


def healthz_while_waiting(app: Any, method: str, path: str, waiting: threading.Event,
                          release: Callable[[], None]) -> tuple[list[str], httpx.Response]:
    """Send an admin request, and once its store call waits (`waiting`), ask /healthz; then `release` the store.
    Returns the order in which both finished, and the admin response."""
    finished: list[str] = []

    async def scenario() -> httpx.Response:
        # A failed admin request is answered (5xx), not raised into the test
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://guardrails") as client:
            admin = asyncio.create_task(client.request(method, path, headers=AUTH))
            admin.add_done_callback(lambda _: finished.append("admin"))
            while not waiting.is_set():  # runs only while the event loop is free
                await asyncio.sleep(0.01)
            health = await client.get("/healthz")
            assert health.status_code == 200
            finished.append("healthz")
            release()
            return await admin

    try:
        return finished, asyncio.run(scenario())
    finally:
        app.state.service.close()


# --- 1. admin routes: a store that hangs holds that request, not the worker ----------------------------------

@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/v1/breakers"),
    ("GET", f"/v1/breakers/{BREAKER}"),
    ("POST", f"/v1/breakers/{BREAKER}/reset"),
])
def test_a_breaker_route_waiting_on_a_hung_redis_does_not_hold_healthz(
        tmp_path: Path, hung_redis: HungRedis, method: str, path: str) -> None:
    app = admin_app(tmp_path, audit_url="none", state_url=hung_redis.url(socket_timeout_s=5))
    finished, answered = healthz_while_waiting(app, method, path, hung_redis.asked, hung_redis.release)
    assert finished == ["healthz", "admin"]  # answered while the admin request still waited on Redis
    assert answered.is_server_error  # then Redis went away: that request fails, the worker serves on


@pytest.mark.parametrize("path", ["/v1/audit/records?limit=5", "/v1/audit/verify"])
def test_an_audit_read_that_hangs_does_not_hold_healthz(tmp_path: Path, path: str) -> None:
    app = admin_app(tmp_path, state_url="none")
    (store,) = [o.store for o in app.state.service.observers if isinstance(o, AuditObserver)]
    reading, released = threading.Event(), threading.Event()
    select = store._select

    def held_select(filt: AuditFilter, after_seq: int, limit: int) -> list[Any]:  # a slow database, a long walk
        reading.set()
        released.wait(HELD_S)
        return select(filt, after_seq, limit)

    store._select = held_select
    finished, answered = healthz_while_waiting(app, "GET", path, reading, released.set)
    assert finished == ["healthz", "admin"]
    assert answered.status_code == 200


# --- 2. the audit store waits out workers opening a fresh database together -----------------------------------

def test_workers_opening_a_fresh_audit_log_together_wait_for_each_other(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Switching a file to WAL fails at once while another connection holds its write lock (workers starting
    together): the audit store retries instead of refusing to start."""
    path = tmp_path / "audit.sqlite3"
    waits = another_worker_holds_the_write_lock(path, monkeypatch)
    store = SQLiteAuditStore(f"sqlite:///{path}")
    try:
        assert len(waits) == 1
        assert asyncio.run(store.append({"check_id": "chk_1", "ts": 1.0, "verdict": "allow"})) == 1
        assert [r.seq for r in store.page(AuditFilter()).records] == [1]
        with contextlib.closing(sqlite3.connect(path)) as reader:
            assert reader.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        store.close()
