"""SQLite state store: the embedded default. One process or several on one host (BEGIN IMMEDIATE).

Budget counters are not an audit trail: WAL with `synchronous=NORMAL` (no fsync per step; a service
crash loses nothing, a power cut may lose the last steps). The file is opened, and its schema created, when
the store is built (at start): a path that cannot hold a database is refused then, not on every check.

`run` (how the event loop calls the store) runs a call inline, on the loop's thread: a step takes microseconds,
less than a hop to a thread. That attempt never waits for the write lock (the connection's busy timeout is 0):
while another process holds it (an operator's `sqlite3` shell in BEGIN IMMEDIATE, a backup, another worker's long
transaction), SQLite answers busy at once, the attempt is rolled back, and the same call runs again on the store's
waiting thread, which waits out the busy timeout while the caller awaits it and the loop serves other requests.
The store calls inside one `run` share one transaction (begun by the first write, committed when the call
returns): an attempt turned away leaves nothing behind, so the retry counts once. Direct calls (the CLI) wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from guardrails.audit.sqlite import BUSY_TIMEOUT_S, SQLITE_BUSY, connect, sqlite_path
from guardrails.model_stats import ModelStats, Moments
from guardrails.state.base import (
    HALF_OPEN,
    MODEL_STATS_IDLE_S,
    OPEN,
    Breaker,
    RateAdd,
    RateStats,
    Snapshot,
    StateStore,
    T,
    WindowAdd,
    fold,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS windows (key TEXT NOT NULL, bucket INTEGER NOT NULL, value REAL NOT NULL,
    expires REAL NOT NULL, PRIMARY KEY (key, bucket)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rates (key TEXT PRIMARY KEY, period INTEGER NOT NULL, current REAL NOT NULL,
    mean REAL NOT NULL, var REAL NOT NULL, samples INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS breakers (key TEXT PRIMARY KEY, state TEXT NOT NULL, reason TEXT NOT NULL,
    opened_at REAL NOT NULL, until REAL NOT NULL, trips INTEGER NOT NULL, details TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS streaks (key TEXT PRIMARY KEY, count INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS model_stats (key TEXT PRIMARY KEY, tokens_n INTEGER NOT NULL, tokens_mean REAL NOT NULL,
    tokens_m2 REAL NOT NULL, segments_n INTEGER NOT NULL, segments_mean REAL NOT NULL, segments_m2 REAL NOT NULL,
    updated REAL NOT NULL);
"""
MODEL_STATS_COLUMNS = "tokens_n, tokens_mean, tokens_m2, segments_n, segments_mean, segments_m2"
BREAKER_COLUMNS = "key, state, reason, opened_at, until, trips, details"
PRUNE_EVERY = 1000  # steps between deletions of expired buckets (a scan: an index would tax every step)
NO_WAIT = "PRAGMA busy_timeout=0"  # the connection's default: the inline attempt fails at once on a held lock


class _Busy(Exception):
    """The inline attempt found the write lock held by another connection: rolled back, to run on the waiting thread."""


class SQLiteStateStore(StateStore):
    def __init__(self, url: str) -> None:
        self.url = url
        self.path, _ = sqlite_path(url)
        self._connection: sqlite3.Connection | None = _open(self.path)
        self._lock = threading.Lock()  # one call at a time on the connection: inline, the waiting thread, or direct
        self._owner: int | None = None  # the thread whose call holds the lock: its store calls join one transaction
        self._turned_away = False  # the call in progress found the lock held (even if it caught the error)
        self._waiter: ThreadPoolExecutor | None = None
        self._steps = 0
        self._merges = 0

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._connection is None:  # closed, then used again
            self._connection = _open(self.path)
        return self._connection

    async def run(self, call: Callable[[], T]) -> T:
        """`call()` inline without waiting on a lock; where it would have to, on the waiting thread (see above)."""
        if self._lock.acquire(blocking=False):  # else the waiting thread holds it: queue behind, never block the loop
            try:
                with self._session(None):
                    return call()
            except _Busy:
                pass
            finally:
                self._lock.release()
        # The busy timeout counts from now, not from when the thread gets to it: a queue does not add up the waits.
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._waiting_thread(), self._call_waiting, call, deadline)

    def _call_waiting(self, call: Callable[[], T], deadline: float) -> T:
        with self._lock, self._session(max(deadline - time.monotonic(), 0.0)):
            return call()

    def _waiting_thread(self) -> ThreadPoolExecutor:
        # One thread: calls turned away by a lock run in the order they came, and never hold more than one thread.
        if self._waiter is None:
            self._waiter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="state-sqlite-wait")
        return self._waiter

    @contextlib.contextmanager
    def _session(self, wait_s: float | None) -> Iterator[None]:
        """Under the lock (the caller holds it): the store calls inside share one transaction, begun by the first
        write, committed at the end and rolled back on an error. Statements wait up to `wait_s` for another
        connection's lock; None (inline) waits on none: a busy answer anywhere rolls everything back and raises
        `_Busy` (nothing was written)."""
        conn = self._conn
        if wait_s is not None:
            conn.execute(f"PRAGMA busy_timeout={int(wait_s * 1000)}")
        self._owner, self._turned_away = threading.get_ident(), False
        try:
            yield
            if self._turned_away and wait_s is None:  # the call caught the busy error itself: it did not do its all
                raise _Busy
            if conn.in_transaction:
                conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if wait_s is not None or isinstance(exc, _Busy) or not _busy(exc):
                raise
            raise _Busy from exc
        finally:
            self._owner = None
            if wait_s is not None:
                conn.execute(NO_WAIT)

    def _using(self, write: bool = False) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """The connection for one store call: in the session of this thread's `run` call (a write begins its
        transaction, BEGIN IMMEDIATE), or in a session of its own that waits (a direct call: the CLI, tests)."""
        if self._owner != threading.get_ident():
            return self._direct(write)
        if write:
            self._begin()
        return contextlib.nullcontext(self._conn)  # not a generator: this runs for every call of every check

    @contextlib.contextmanager
    def _direct(self, write: bool) -> Iterator[sqlite3.Connection]:
        with self._lock, self._session(BUSY_TIMEOUT_S):
            if write:
                self._begin()
            yield self._conn

    def _begin(self) -> None:
        conn = self._conn
        if conn.in_transaction:  # an earlier call of the same `run` began it
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            self._turned_away = _busy(exc)
            raise

    def step(
        self,
        now: float,
        adds: Sequence[WindowAdd],
        rate: RateAdd | None = None,
        breaker_keys: Sequence[str] = (),
        streak_keys: Sequence[str] = (),
    ) -> Snapshot:
        with self._using(write=True) as db:
            totals = self._step_windows(db, now, adds) if adds else []
            stats = self._step_rate(db, now, rate) if rate is not None else None
            breakers = {b.key: b for b in _breakers(db, breaker_keys)}
            for b in breakers.values():
                if b.state == OPEN and now >= b.until:
                    db.execute("UPDATE breakers SET state = ? WHERE key = ?", (HALF_OPEN, b.key))
                    b.state = HALF_OPEN
            streaks = dict.fromkeys(streak_keys, 0)
            if streak_keys:
                marks = ",".join("?" * len(streak_keys))
                streaks.update(
                    db.execute(f"SELECT key, count FROM streaks WHERE key IN ({marks})", list(streak_keys))
                )
            self._steps += 1
            if self._steps % PRUNE_EVERY == 0:
                db.execute("DELETE FROM windows WHERE expires < ?", (now,))
        return Snapshot(totals, stats, breakers, streaks)

    @staticmethod
    def _step_windows(db: Any, now: float, adds: Sequence[WindowAdd]) -> list[float]:
        """One upsert batch and one summing query for every window: the step's statements stay few."""
        upserts, conditions, params = [], [], []
        for add in adds:
            width = add.window_s / add.buckets
            bucket = math.floor(now / width)
            if add.amount:
                upserts.append((add.key, bucket, add.amount, (bucket + 1) * width + add.window_s))
            conditions.append("(key = ? AND bucket > ?)")
            params += [add.key, bucket - add.buckets]
        if upserts:
            db.executemany(
                "INSERT INTO windows VALUES (?,?,?,?) ON CONFLICT(key, bucket) DO UPDATE SET "
                "value = value + excluded.value",
                upserts,
            )
        sums = dict(
            db.execute(
                f"SELECT key, SUM(value) FROM windows WHERE {' OR '.join(conditions)} GROUP BY key", params
            )
        )
        return [float(sums.get(add.key, 0.0)) for add in adds]

    @staticmethod
    def _step_rate(db: Any, now: float, rate: RateAdd) -> RateStats:
        period = math.floor(now / rate.period_s)
        row = db.execute(
            "SELECT period, current, mean, var, samples FROM rates WHERE key = ?", (rate.key,)
        ).fetchone()
        last, current, mean, var, samples = row if row else (period, 0.0, 0.0, 0.0, 0)
        if last != period:
            if current > 0:
                mean, var, samples = fold(mean, var, samples, current, rate)
            current = 0.0
        current += rate.amount
        db.execute(
            "INSERT INTO rates VALUES (?,?,?,?,?,?) ON CONFLICT(key) DO UPDATE SET period = excluded.period, "
            "current = excluded.current, mean = excluded.mean, var = excluded.var, "
            "samples = excluded.samples",
            (rate.key, period, current, mean, var, samples),
        )
        return RateStats(current, mean, math.sqrt(max(var, 0.0)), samples)

    def trip(
        self, key: str, reason: str, now: float, cooldown_s: float, details: dict[str, Any] | None = None
    ) -> Breaker:
        with self._using(write=True) as db:
            row = db.execute("SELECT trips FROM breakers WHERE key = ?", (key,)).fetchone()
            trips = (row[0] if row else 0) + 1
            db.execute(
                "INSERT OR REPLACE INTO breakers VALUES (?,?,?,?,?,?,?)",
                (key, OPEN, reason, now, now + cooldown_s, trips, json.dumps(details or {})),
            )
            db.execute("DELETE FROM streaks WHERE key = ?", (key,))
        return Breaker(key, OPEN, reason, now, now + cooldown_s, trips, details or {})

    def close_half_open(self, key: str) -> bool:
        with self._using(write=True) as db:
            return (
                db.execute("DELETE FROM breakers WHERE key = ? AND state = ?", (key, HALF_OPEN)).rowcount > 0
            )

    def reset(self, key: str) -> bool:
        with self._using(write=True) as db:
            db.execute("DELETE FROM streaks WHERE key = ?", (key,))
            return db.execute("DELETE FROM breakers WHERE key = ?", (key,)).rowcount > 0

    def breaker(self, key: str) -> Breaker | None:
        with self._using() as db:
            found = _breakers(db, [key])
        return found[0] if found else None

    def breakers(self) -> list[Breaker]:
        with self._using() as db:
            rows = db.execute(f"SELECT {BREAKER_COLUMNS} FROM breakers ORDER BY key").fetchall()
        return [_breaker(r) for r in rows]

    def record_streaks(self, keys: Sequence[str], blocked: bool) -> None:
        if not keys:
            return
        with self._using(write=True) as db:
            for key in keys:
                if blocked:
                    db.execute(
                        "INSERT INTO streaks VALUES (?, 1) ON CONFLICT(key) DO UPDATE SET count = count + 1",
                        (key,),
                    )
                else:
                    db.execute("DELETE FROM streaks WHERE key = ?", (key,))

    def model_stats(self, key: str) -> ModelStats | None:
        with self._using() as db:
            row = db.execute(f"SELECT {MODEL_STATS_COLUMNS} FROM model_stats WHERE key = ?", (key,)).fetchone()
        return _model_stats(row) if row else None

    def merge_model_stats(self, key: str, batch: ModelStats) -> ModelStats:
        now = time.time()
        with self._using(write=True) as db:
            row = db.execute(f"SELECT {MODEL_STATS_COLUMNS} FROM model_stats WHERE key = ?", (key,)).fetchone()
            merged = (_model_stats(row) if row else ModelStats()).merge(batch)
            t, s = merged.tokens, merged.segments
            db.execute(
                "INSERT OR REPLACE INTO model_stats VALUES (?,?,?,?,?,?,?,?)",
                (key, t.count, t.mean, t.m2, s.count, s.mean, s.m2, now),
            )
            self._merges += 1
            if self._merges % PRUNE_EVERY == 0:
                db.execute("DELETE FROM model_stats WHERE updated < ?", (now - MODEL_STATS_IDLE_S,))
        return merged

    def close(self) -> None:
        if self._waiter is not None:  # calls waiting on a lock finish first (or give up after the busy timeout)
            self._waiter.shutdown(wait=True)
            self._waiter = None
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None


def _open(path: Path) -> sqlite3.Connection:
    """Connect (`connect` waits out workers creating a fresh file together) and create the schema. Any failure
    is an OSError that names the path."""
    conn = connect(path, "NORMAL")  # its failures are OSErrors already
    try:
        conn.executescript(SCHEMA)
        conn.execute(NO_WAIT)
    except sqlite3.Error as exc:  # read-only file, full disk: one line at start, as `connect` says its own
        conn.close()
        raise OSError(f"cannot open the SQLite database {path}: {exc}") from exc
    return conn


def _busy(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None) or 0  # absent from an error raised by hand
    return isinstance(exc, sqlite3.OperationalError) and code & 0xFF == SQLITE_BUSY


def _breakers(db: Any, keys: Sequence[str]) -> list[Breaker]:
    if not keys:
        return []
    rows = db.execute(
        f"SELECT {BREAKER_COLUMNS} FROM breakers WHERE key IN ({','.join('?' * len(keys))})", list(keys)
    ).fetchall()
    return [_breaker(r) for r in rows]


def _breaker(row: tuple[Any, ...]) -> Breaker:
    return Breaker(row[0], row[1], row[2], row[3], row[4], row[5], json.loads(row[6]))


def _model_stats(row: tuple[Any, ...]) -> ModelStats:
    return ModelStats(Moments(row[0], row[1], row[2]), Moments(row[3], row[4], row[5]))
