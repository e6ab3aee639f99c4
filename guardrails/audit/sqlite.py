"""SQLite audit store: the embedded default.

Durability: WAL journal. With `synchronous=NORMAL` (the default) a commit is a write() into the WAL and
no fsync: the record is in the operating system's page cache when the check is acknowledged, so it
survives the service being killed (kill -9, OOM, crash) but the last commits can be lost if the machine
itself loses power. `?synchronous=full` fsyncs the WAL on every commit (power-loss safe; a few ms per
commit on ordinary disks, shared by every check in a group commit). Either way the database is never
corrupted. Several processes may append to one file: each transaction (one inline record, or a writer-thread
batch) takes the write lock (BEGIN IMMEDIATE), reads the chain head and the high-water mark in one statement,
appends after them, and raises the mark to its last record before it commits: five statements, one of them the
mark's, whatever the batch's size.

Inline commits (synchronous=NORMAL) run on the event loop's thread and never wait for the write lock (the
connection's busy timeout is 0): while another process holds it (an operator's `sqlite3` shell in BEGIN
IMMEDIATE, a backup, another worker's batch), SQLITE_BUSY hands the record to the writer thread, which waits out
the busy timeout, and the check awaits it while the loop serves other requests.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from guardrails.audit.chain import LogDamaged, StoredRecord, chain_rows
from guardrails.audit.store import (
    COLUMNS,
    HIGH_WATER_KEY,
    AuditFilter,
    AuditStore,
    PendingRow,
    chain_start,
    stored_record,
)

TABLE = "audit_records"
META = "audit_meta"  # the high-water mark (guardrails/audit/store.py): the highest seq the log ever reached
SYNC_MODES = {"normal": "NORMAL", "full": "FULL", "extra": "EXTRA"}
DAMAGED = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB (primary codes: the low byte of an extended code)
SQLITE_BUSY = 5  # another connection holds the lock (extended codes: BUSY_RECOVERY, BUSY_SNAPSHOT, ...)
BUSY_TIMEOUT_S = 30  # how long a statement waits for another connection's lock (not the inline commit's)
WAL_SWITCH_ATTEMPTS = 300
WAL_SWITCH_PAUSE_S = 0.01
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    seq INTEGER PRIMARY KEY,
    check_id TEXT NOT NULL,
    ts REAL NOT NULL,
    tenant TEXT, agent TEXT, session TEXT,
    verdict TEXT NOT NULL,
    partial INTEGER,
    body BLOB NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS {TABLE}_ts ON {TABLE}(ts);
CREATE TRIGGER IF NOT EXISTS {TABLE}_no_update BEFORE UPDATE ON {TABLE}
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS {TABLE}_no_delete BEFORE DELETE ON {TABLE}
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TABLE IF NOT EXISTS {META} (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TRIGGER IF NOT EXISTS {META}_no_delete BEFORE DELETE ON {META}
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS {META}_no_lowering BEFORE UPDATE ON {META} WHEN NEW.value < OLD.value
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""
# One secondary index (time): each one costs the write path about as much as the row itself. Tenant and
# agent filters walk the sequence; PostgreSQL indexes them too, for large multi-tenant logs.
INSERT = f"INSERT INTO {TABLE} ({COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
_KEEP_HIGHER = "ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)"
RAISE_MARK = f"INSERT INTO {META} (key, value) VALUES ('{HIGH_WATER_KEY}', ?) {_KEEP_HIGHER}"
HEAD = f"SELECT seq, hash FROM {TABLE} ORDER BY seq DESC LIMIT 1"
# The mark and the head in one statement (one row, NULLs for an empty log or no mark yet).
HEAD_AND_MARK = (f"SELECT (SELECT value FROM {META} WHERE key = '{HIGH_WATER_KEY}'), h.seq, h.hash "
                 f"FROM (SELECT 1) LEFT JOIN ({HEAD}) AS h ON 1")
# At open: a log written before the mark existed (or by an older version meanwhile) gets its current head.
SEED_MARK = (f"INSERT INTO {META} (key, value) SELECT '{HIGH_WATER_KEY}', seq FROM {TABLE} WHERE true "
             f"ORDER BY seq DESC LIMIT 1 {_KEEP_HIGHER}")


def sqlite_path(url: str) -> tuple[Path, dict[str, str]]:
    """`sqlite:///relative/path` or `sqlite:////absolute/path`, with optional `?key=value` options."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite" or not parts.path.startswith("/") or len(parts.path) < 2:
        raise ValueError(f"not a SQLite URL: {url!r} (expected sqlite:///path/to/file.sqlite3)")
    options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    return Path(parts.path[1:]), options


def connect(path: Path, synchronous: str) -> sqlite3.Connection:
    """A connection in WAL mode, for the audit and the state store. Any failure is an OSError that names the path."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = _connect_wal(path)
    except (OSError, sqlite3.Error) as exc:  # a directory, a non-database file, no permission: name the path
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise OSError(f"cannot open the SQLite database {path}: {reason}") from exc
    conn.execute(f"PRAGMA synchronous={synchronous}")
    return conn


def _connect_wal(path: Path) -> sqlite3.Connection:
    """While another connection creates a fresh file (workers starting together), switching it to WAL fails at
    once ("database is locked": the busy timeout does not apply), so retry for up to ~3 s."""
    for _ in range(WAL_SWITCH_ATTEMPTS - 1):
        try:
            return _open_wal(path)
        except sqlite3.OperationalError as exc:
            if "database is locked" not in str(exc):
                raise
        time.sleep(WAL_SWITCH_PAUSE_S)
    return _open_wal(path)


def _open_wal(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_S)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
    except BaseException:
        conn.close()  # a failed attempt leaves no open file behind
        raise
    return conn


class SQLiteAuditStore(AuditStore):
    """`create=False` (export, verify) opens an existing log only: a mistyped or deleted file must not be
    replaced by an empty log that verifies as intact."""

    def __init__(self, url: str, create: bool = True) -> None:
        super().__init__()
        self.url = url
        self.path, options = sqlite_path(url)
        sync = options.get("synchronous", "normal").lower()
        if sync not in SYNC_MODES:
            raise ValueError(f"synchronous must be one of {sorted(SYNC_MODES)}, got {sync!r}")
        if not create and not self.path.is_file():
            raise FileNotFoundError(f"no audit log at {self.path} ({url})")
        # Without fsync a commit is a write() into the WAL: cheaper than a hop to the writer thread.
        self.inline_writes = sync == "normal"
        self._write_conn = connect(self.path, SYNC_MODES[sync])
        if create:
            self._write_conn.executescript(SCHEMA)
        elif not _has_table(self._write_conn, TABLE):
            self._write_conn.close()
            raise ValueError(f"{self.path} holds no audit log (no {TABLE} table)")
        add_partial_column(self._write_conn)
        self._marks = create or _has_table(self._write_conn, META)  # a reader of an older log writes no mark
        if create:
            self._seed_high_water()
        self._read_conn = connect(self.path, SYNC_MODES[sync])
        self._read_lock = threading.Lock()
        if self.inline_writes:  # commits on the event loop: a locked log is SQLITE_BUSY at once, not a 30 s stall
            self._write_conn.execute("PRAGMA busy_timeout=0")

    def _seed_high_water(self) -> None:
        try:
            self._write_conn.execute(SEED_MARK)
        except sqlite3.DatabaseError as exc:
            if not _damaged(exc):  # overwritten pages: verify reports them; the service starts as it did
                raise

    def _append_now(self, rows: Sequence[PendingRow]) -> list[int] | None:
        try:
            return self._append_batch(rows)
        except sqlite3.OperationalError as exc:
            if _busy(exc):  # nothing was written (a failed transaction rolled back): the writer thread waits
                return None
            raise

    def _append_waiting(self, rows: Sequence[PendingRow]) -> list[int]:
        with self._waiting():
            return self._append_batch(rows)

    @contextlib.contextmanager
    def _waiting(self) -> Iterator[None]:
        """The write connection waits out another process's lock, as it does without inline commits. Two statements
        around a writer-thread batch: with inline commits it runs only for records a lock turned away."""
        if not self.inline_writes:
            yield
            return
        self._write_conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
        try:
            yield
        finally:
            self._write_conn.execute("PRAGMA busy_timeout=0")

    def _append_batch(self, rows: Sequence[PendingRow]) -> list[int]:
        conn = self._write_conn
        conn.execute("BEGIN IMMEDIATE")  # busy: nothing to roll back (the inline caller hands the rows on)
        try:
            if self._marks:
                mark, seq, digest = conn.execute(HEAD_AND_MARK).fetchone()
                head = chain_start(None if seq is None else (seq, digest), mark)
            else:
                head = conn.execute(HEAD).fetchone()
            values = chain_rows(head, rows)
            conn.executemany(INSERT, values)
            if self._marks:  # in the append's transaction: a tail removed later is always below the mark
                conn.execute(RAISE_MARK, (values[-1][0],))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return [v[0] for v in values]

    def _select(self, filt: AuditFilter, after_seq: int, limit: int) -> list[StoredRecord]:
        where, params = filt.where(after_seq, "?", contains="instr(body, ?) > 0")
        with self._read_lock:
            try:
                rows = self._read_conn.execute(
                    f"SELECT {COLUMNS} FROM {TABLE} WHERE {where} ORDER BY seq LIMIT ?", [*params, limit]
                ).fetchall()
            except sqlite3.DatabaseError as exc:
                # Overwritten pages are the log's problem (verify reports them), not a store that cannot be reached.
                if _damaged(exc):
                    raise LogDamaged(f"{self.path} is damaged ({exc})") from exc
                raise
        return [stored_record(r) for r in rows]

    def _high_water(self) -> int | None:
        with self._read_lock:
            try:
                row = self._read_conn.execute(f"SELECT value FROM {META} WHERE key = ?", (HIGH_WATER_KEY,)).fetchone()
            except sqlite3.DatabaseError as exc:
                if _damaged(exc) or not _has_table(self._read_conn, META):  # an older log keeps no mark
                    return None
                raise
        return row[0] if row and isinstance(row[0], int) else None

    def close(self) -> None:
        self._stop_writer()  # the mark is the head already: each append's transaction raised it
        self._write_conn.close()
        self._read_conn.close()


def add_partial_column(conn: sqlite3.Connection) -> None:
    """A log created before the `partial` column gets it (NULL in its rows: not partial). Under the write lock,
    so workers opening one old file together add it once; for the readers (export, verify) too, which select it."""
    if _has_partial_column(conn):
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        if not _has_partial_column(conn):  # another process may have added it while we waited for the lock
            conn.execute(f"ALTER TABLE {TABLE} ADD COLUMN partial INTEGER")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _damaged(exc: sqlite3.DatabaseError) -> bool:
    return (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF in DAMAGED


def _busy(exc: sqlite3.DatabaseError) -> bool:
    return (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF == SQLITE_BUSY


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() is not None


def _has_partial_column(conn: sqlite3.Connection) -> bool:
    return any(row[1] == "partial" for row in conn.execute(f"PRAGMA table_info({TABLE})"))
