"""A SQLite audit log whose write lock another process holds (an operator's `sqlite3` shell in `BEGIN IMMEDIATE`,
a backup, a second service process in a long batch) must not freeze the event loop: the inline commit does not wait
on the lock, the record goes to the writer thread (which does), and the check awaits it while the loop serves others.

Each scenario runs its event loop on a thread of its own; the test thread holds the lock and waits for the loop to
show progress. The waits are liveness guards (a frozen loop would never get there), not timings."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from conftest import sample

from api.app import create_app
from guardrails.audit import open_audit_store
from guardrails.audit.observer import AuditObserver
from guardrails.audit.sqlite import SQLiteAuditStore
from guardrails.config import Settings
from guardrails.serve import build_service

GUARD_S = 20  # below SQLite's 30 s busy timeout: a loop frozen on the lock fails the test instead of passing late
CHECK = sample("openai_chat.json")


def record(i: int) -> dict[str, Any]:
    return {"check_id": f"chk_{i:04d}", "ts": 1_767_225_600.0 + i, "tenant": "acme", "agent": "travel-agent",
            "session": "s-1", "verdict": "allow", "policy": "default", "findings": []}


def count(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT count(*) FROM audit_records").fetchone()[0]


class LoopThread:
    """Runs one scenario's event loop on its own thread, so the test thread can hold the lock and watch it."""

    def __init__(self, scenario: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(scenario,), daemon=True)
        self.thread.start()

    def _run(self, scenario: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        try:
            self.result = asyncio.run(scenario())
        except BaseException as exc:
            self.error = exc

    def join(self) -> Any:
        self.thread.join(GUARD_S)
        assert not self.thread.is_alive(), "the scenario did not finish after the lock was released"
        if self.error is not None:
            raise self.error
        return self.result


async def until(condition: Callable[[], bool]) -> None:
    """Yield to the loop until `condition` holds (the liveness guard bounds it from outside)."""
    while not condition():
        await asyncio.sleep(0.005)


def two_calls_behind_the_lock(first: Callable[[], Coroutine[Any, Any, Any]],
                              second: Callable[[], Coroutine[Any, Any, Any]],
                              waiting: Callable[[], bool], held: str) -> tuple[LoopThread, dict[str, Any]]:
    """While another connection holds the write lock: `first` starts and waits on it off the loop (`waiting` says
    when), `second` starts behind it, and the loop runs other coroutines. Returns the loop (whose result is both
    calls' results once the lock is released) and what the scenario saw: `loop_thread`, `ticks`, `pending`."""
    progressed = threading.Event()
    seen: dict[str, Any] = {"ticks": 0}

    async def scenario() -> list[Any]:
        seen["loop_thread"] = threading.get_ident()
        started = asyncio.create_task(first())
        await until(waiting)
        # The first call's thread holds the store: the second must queue behind it, not block the loop on that lock.
        queued = asyncio.create_task(second())
        for _ in range(50):  # other coroutines run while both calls wait
            await asyncio.sleep(0)
            seen["ticks"] += 1
        seen["pending"] = not started.done() and not queued.done()
        progressed.set()
        return list(await asyncio.gather(started, queued))

    loop = LoopThread(scenario)
    assert progressed.wait(GUARD_S), f"the event loop froze while the {held} was locked"
    assert seen["ticks"] == 50 and seen["pending"]
    return loop, seen


HOLD_LOCK = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("COMMIT")
"""


@contextmanager
def locked_by_another_process(path: Path) -> Iterator[None]:
    """Another process holds the SQLite file's write lock for the block, as an operator's `sqlite3` shell would:
    BEGIN IMMEDIATE, then wait for us."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        yield
    finally:
        holder.communicate("release\n", timeout=GUARD_S)


def writer_waits_on_lock(store: SQLiteAuditStore) -> bool:
    """The writer thread has taken a record and holds the chain head while SQLite waits on the other lock."""
    return store._writer is not None and store._head_lock.locked()


def test_an_append_waits_on_the_lock_while_the_loop_runs_other_coroutines(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite3"
    store = SQLiteAuditStore(f"sqlite:///{path}")
    assert store.inline_writes  # the default (synchronous=NORMAL) commits inline
    store.submit(record(1)).result(timeout=10)  # the head is known: the next append takes the one-INSERT path
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    try:
        loop, _ = two_calls_behind_the_lock(lambda: store.append(record(2)), lambda: store.append(record(3)),
                                            lambda: writer_waits_on_lock(store), "audit log")
        assert count(path) == 1  # nothing committed behind the lock
    finally:
        locker.execute("COMMIT")
        locker.close()
    assert loop.join() == [2, 3]
    assert asyncio.run(store.append(record(4))) == 4  # inline again once the lock is free
    store.close()
    assert count(path) == 4
    reopened = open_audit_store(f"sqlite:///{path}", create=False)
    report = reopened.verify()
    assert report.ok and report.checked == 4
    assert [r.record()["check_id"] for r in reopened.iter_records()] == [f"chk_{i:04d}" for i in range(1, 5)]
    reopened.close()


def test_a_lock_taken_by_another_process_leaves_healthz_answering_and_the_check_recorded(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    service = build_service(settings)
    (observer,) = [o for o in service.observers if isinstance(o, AuditObserver)]
    store = observer.store
    assert isinstance(store, SQLiteAuditStore)
    app = create_app(service, settings)
    path = tmp_path / "audit.sqlite3"
    healthz_answered = threading.Event()
    seen: dict[str, Any] = {}

    async def scenario() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://guardrails") as http:
            warm = await http.post("/v1/checks", json=CHECK)  # before the lock: inline, as always
            assert warm.status_code == 200
            warmed.set()
            await asyncio.to_thread(locked.wait)  # until the other process holds the lock
            check = asyncio.create_task(http.post("/v1/checks", json=CHECK))
            await until(lambda: writer_waits_on_lock(store))
            health = await http.get("/healthz")
            seen["healthz"], seen["check_pending"] = health.status_code, not check.done()
            healthz_answered.set()
            return await check

    warmed, locked = threading.Event(), threading.Event()
    loop = LoopThread(scenario)
    assert warmed.wait(GUARD_S)
    with locked_by_another_process(path):
        locked.set()
        assert healthz_answered.wait(GUARD_S), "/healthz did not answer while the audit log was locked"
        assert seen == {"healthz": 200, "check_pending": True}
        assert count(path) == 1
    answer = loop.join()
    assert answer.status_code == 200
    check_id = answer.json()["check_id"]
    service.close()
    reopened = open_audit_store(f"sqlite:///{path}", create=False)
    assert reopened.verify().ok
    assert [r.record()["check_id"] for r in reopened.iter_records()][-1] == check_id and count(path) == 2
    reopened.close()



def test_checks_cancelled_while_the_log_is_locked_keep_their_records_and_the_writer_running(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite3"
    store = SQLiteAuditStore(f"sqlite:///{path}")  # a fresh log: the first append takes the BEGIN IMMEDIATE path
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    cancelled = threading.Event()

    async def scenario() -> int:
        taken = asyncio.create_task(store.append(record(1)))
        await until(lambda: writer_waits_on_lock(store))
        queued = asyncio.create_task(store.append(record(2)))
        last = asyncio.create_task(store.append(record(3)))
        await asyncio.sleep(0)
        # Their clients went away: one record the writer holds, one still in the queue.
        taken.cancel()
        queued.cancel()
        await asyncio.gather(taken, queued, return_exceptions=True)
        cancelled.set()
        return await last

    loop = LoopThread(scenario)
    try:
        assert cancelled.wait(GUARD_S), "the event loop froze while the audit log was locked"
    finally:
        locker.execute("COMMIT")
        locker.close()
    assert loop.join() == 3  # the writer thread outlived the cancelled checks
    store.close()
    reopened = open_audit_store(f"sqlite:///{path}", create=False)
    assert reopened.verify().ok
    assert [r.record()["check_id"] for r in reopened.iter_records()] == ["chk_0001", "chk_0002", "chk_0003"]
    reopened.close()
