"""A SQLite state store (`state.sqlite3`: budgets, breakers, streaks, model statistics) whose write lock another
process holds (an operator's `sqlite3` shell in `BEGIN IMMEDIATE`, a backup, another worker in a long transaction)
must not freeze the event loop: `run`'s inline attempt does not wait on the lock, the call runs again on a thread
that does, and the caller awaits it while the loop serves other coroutines, checks and `/healthz`.

Each scenario runs its event loop on a thread of its own (test_audit_lock_stall.LoopThread); the test thread holds
the lock and waits for the loop to show progress. The waits are liveness guards, not timings."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from conftest import sample
from test_audit_lock_stall import GUARD_S, LoopThread, locked_by_another_process, two_calls_behind_the_lock, until

from api.app import create_app
from guardrails.config import Settings
from guardrails.model_stats import ModelStats, Moments
from guardrails.serve import build_service
from guardrails.state import WindowAdd
from guardrails.state.sqlite import SQLiteStateStore

REPO = Path(__file__).resolve().parent.parent
T0 = 1_767_225_600.0
AGENT, SESSION = "agent:acme/travel-agent", "session:acme/travel-agent/s-123"
CHECK = sample("openai_chat.json")  # acme / travel-agent / s-123; 110 tokens, two tool calls
BATCH = ModelStats(Moments(4, -0.5, 0.2), Moments(2, -0.4, 0.1))  # one check's logprob statistics


def waits_on_lock(store: SQLiteStateStore) -> bool:
    """A call the lock turned away runs on the store's waiting thread, which holds the connection while SQLite waits
    (getattr: a store without that thread waits on the loop itself, and the loop never gets here)."""
    return getattr(store, "_waiter", None) is not None and store._lock.locked()


def saved(path: Path) -> dict[str, Any]:
    """What another connection sees committed in the state file."""
    with sqlite3.connect(path) as conn:
        return {
            "tokens": conn.execute("SELECT SUM(value) FROM windows WHERE key LIKE '%|tokens|%'").fetchone()[0],
            "streaks": dict(conn.execute("SELECT key, count FROM streaks")),
            "trips": dict(conn.execute("SELECT key, trips FROM breakers")),
            "model_tokens_n": conn.execute("SELECT SUM(tokens_n) FROM model_stats").fetchone()[0],
        }


def test_a_store_call_waits_for_the_lock_on_a_thread_and_counts_once(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    store = SQLiteStateStore(f"sqlite:///{path}")
    tokens = WindowAdd(f"{AGENT}|tokens|3600", 3600, 110)
    threads: list[int] = []

    def check() -> Any:
        """What a budgeted check and its observers write, in one `run`: the step, a trip, the streaks, a merge."""
        threads.append(threading.get_ident())
        snap = store.step(T0 + 1, [tokens], breaker_keys=[AGENT], streak_keys=[SESSION])
        store.trip(AGENT, "repeated_tool_call", T0 + 1, 300, {"tool": "get_weather"})
        store.record_streaks([SESSION], blocked=True)
        return snap.totals, store.merge_model_stats("Qwen/Qwen3-8B", BATCH).tokens.count

    assert asyncio.run(store.run(stepping(store, tokens, T0))) == [110]  # unlocked: inline
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    try:
        loop, seen = two_calls_behind_the_lock(lambda: store.run(check),
                                               lambda: store.run(stepping(store, tokens, T0 + 2)),
                                               lambda: waits_on_lock(store), "state store")
        assert saved(path)["tokens"] == 110  # the turned-away attempt left nothing behind
    finally:
        locker.execute("COMMIT")
    assert loop.join() == [([220], 4), [330]]
    # Tried inline on the loop's thread once, then run again (whole) on the waiting thread: counted once.
    assert len(threads) == 2 and threads[0] == seen["loop_thread"] != threads[1]
    assert saved(path) == {"tokens": 330, "streaks": {SESSION: 1}, "trips": {AGENT: 1}, "model_tokens_n": 4}

    # A direct call (the CLI's `breakers reset`) still waits out the lock instead of failing at once.
    locker.execute("BEGIN IMMEDIATE")
    outcome: dict[str, Any] = {}
    resetter = threading.Thread(target=lambda: outcome.update(closed=catching(lambda: store.reset(AGENT))))
    resetter.start()
    resetter.join(0.5)  # time for the reset to meet the lock
    locker.execute("COMMIT")
    locker.close()
    resetter.join(GUARD_S)
    assert outcome == {"closed": True}
    store.close()


def test_a_call_that_catches_the_lock_error_itself_still_runs_again_whole(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    store = SQLiteStateStore(f"sqlite:///{path}")

    def tolerant() -> str:
        """Logs a store error and carries on, as the streak observer does: its inline attempt must not count."""
        try:
            store.record_streaks([SESSION], blocked=True)
        except sqlite3.OperationalError:
            return "skipped"
        return "written"

    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    waiting = threading.Event()

    async def scenario() -> str:
        call = asyncio.create_task(store.run(tolerant))
        await until(lambda: waits_on_lock(store))
        waiting.set()
        return await call

    loop = LoopThread(scenario)
    try:
        assert waiting.wait(GUARD_S), "the call did not go to the waiting thread (or the loop froze)"
    finally:
        locker.execute("COMMIT")
        locker.close()
    assert loop.join() == "written"
    assert saved(path)["streaks"] == {SESSION: 1}
    store.close()


def stepping(store: SQLiteStateStore, add: WindowAdd, now: float) -> Any:
    return lambda: store.step(now, [add]).totals


def catching(call: Any) -> Any:
    try:
        return call()
    except Exception as exc:  # "database is locked": the direct call did not wait
        return exc


def budget_policies(root: Path) -> Path:
    """The shipped policies with the default policy's budget block switched on, as a deployment would."""
    target = root / "policies"
    shutil.copytree(REPO / "policies", target)
    config_file = target / "default" / "config.yml"
    config = yaml.safe_load(config_file.read_text())
    config["detectors"]["budget"]["enabled"] = True
    config_file.write_text(yaml.safe_dump(config))
    return target


def test_healthz_answers_while_budgeted_checks_wait_on_a_state_lock_another_process_holds(tmp_path: Path) -> None:
    settings = Settings(policy_dir=budget_policies(tmp_path), data_dir=tmp_path)
    service = build_service(settings)
    store = service.services.state
    assert isinstance(store, SQLiteStateStore)
    app = create_app(service, settings)
    path = tmp_path / "state.sqlite3"
    healthz_answered = threading.Event()
    seen: dict[str, Any] = {}

    async def scenario() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://guardrails") as http:
            warm = await http.post("/v1/checks", json=CHECK)  # before the lock: inline, as always
            seen["warm"] = budget_totals(warm)
            warmed.set()
            await asyncio.to_thread(locked.wait)  # until the other process holds the lock
            checks = [asyncio.create_task(http.post("/v1/checks", json=CHECK)) for _ in range(2)]
            await until(lambda: waits_on_lock(store))
            health = await http.get("/healthz")
            seen["healthz"], seen["checks_pending"] = health.status_code, not any(c.done() for c in checks)
            healthz_answered.set()
            return list(await asyncio.gather(*checks))

    warmed, locked = threading.Event(), threading.Event()
    loop = LoopThread(scenario)
    assert warmed.wait(GUARD_S)
    with locked_by_another_process(path):
        locked.set()
        assert healthz_answered.wait(GUARD_S), "/healthz did not answer while the state store was locked"
        assert seen["healthz"] == 200 and seen["checks_pending"]
        assert saved(path)["tokens"] == 110  # the warm check's, nothing more
    answers = loop.join()
    service.close()
    assert [a.status_code for a in answers] == [200, 200]
    assert seen["warm"] == {"agent.tokens_per_hour": 110, "agent.requests_per_minute": 1}
    # Each waiting check counted once, after the other: no retry counted twice.
    assert sorted(budget_totals(a)["agent.requests_per_minute"] for a in answers) == [2, 3]
    assert sorted(budget_totals(a)["agent.tokens_per_hour"] for a in answers) == [220, 330]
    assert saved(path)["tokens"] == 330


def test_a_lock_held_past_the_busy_timeout_fails_the_budget_detector_not_the_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("guardrails.state.sqlite.BUSY_TIMEOUT_S", 0.2, raising=False)  # SQLite's 30 s, shortened
    service = build_service(Settings(policy_dir=budget_policies(tmp_path), data_dir=tmp_path, audit_url="none"))
    path = tmp_path / "state.sqlite3"
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")  # held until the check has answered
    try:
        answer = LoopThread(lambda: service.check(CHECK)).join()
    finally:
        locker.execute("COMMIT")
        locker.close()
    service.close()
    (error,) = [f for f in answer["findings"] if f["detector"] == "budget"]
    assert error["category"] == "detector_error" and "database is locked" in error["message"]
    assert answer["verdict"] == "warn"  # the default policy's on_detector_error; the other detectors ran
    assert saved(path)["tokens"] is None


def budget_totals(answer: httpx.Response) -> dict[str, float]:
    totals = answer.json()["signals"]["budget"]["totals"]
    return {k: totals[k] for k in ("agent.tokens_per_hour", "agent.requests_per_minute")}
