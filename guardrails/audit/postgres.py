"""PostgreSQL audit store (psycopg 3), for replicated deployments.

`postgresql://user@host:5432/db?table=guardrails_audit`: `table` (optionally `schema.table`) is ours and
is stripped before connecting. Replicas append to one chain: each batch takes a transaction-scoped
advisory lock, reads the head and inserts after it. Commits use the server's `synchronous_commit`
(on by default: an acknowledged record is on disk).

A connection the server dropped while idle (a restart, a failover, an idle timeout) fails at its next
statement: a batch that failed before any row was sent is retried once on a new connection, so a restart
costs no check; a batch that failed later is not (it may have committed), and its checks get a 503.

A server that stops answering (rather than refusing) would hold a batch, and the checks waiting on it, for the
kernel's TCP timeouts (minutes): `connection_defaults` bounds connect, silence, unacknowledged sends and each
statement. The URL (or PGCONNECT_TIMEOUT, PGOPTIONS) wins over each default.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict

from guardrails.audit.chain import StoredRecord, chain_rows
from guardrails.audit.store import (
    COLUMNS,
    HIGH_WATER_KEY,
    AuditFilter,
    AuditStore,
    PendingRow,
    chain_start,
    stored_record,
)
from guardrails.config import redacted_url

DEFAULT_TABLE = "guardrails_audit"
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,50}(\.[A-Za-z_][A-Za-z0-9_]{0,50})?$")
# libpq settings that apply unless the URL sets them; none has a server-side cost.
CONNECTION_DEFAULTS: dict[str, int] = {
    "connect_timeout": 5,  # s: a host that does not answer a connect
    "keepalives": 1,  # a server silent while we wait for its answer is found gone after 10 + 3 x 5 s
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 15_000,  # ms: what we sent is not acknowledged (the server went away mid-statement)
}
STATEMENT_TIMEOUT_MS = 5_000  # a statement the server does not finish (a lock never released, a stalled disk)
ENVIRONMENT = {"connect_timeout": "PGCONNECT_TIMEOUT", "options": "PGOPTIONS"}  # libpq reads these when unset
PIPELINE = psycopg.Pipeline.is_supported()  # libpq 14+ (the binary wheels'); older: the statements one by one


def split_table(url: str, default: str = DEFAULT_TABLE) -> tuple[str, str]:
    """(connection URL without our `table` option, table name)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query)
    table = next((v for k, v in query if k == "table"), default)
    if not IDENTIFIER.match(table):
        raise ValueError(f"invalid table name {table!r}")
    # quote, not urlencode's default quote_plus: libpq reads a `+` as itself, so `options=-c%20x` would break.
    rest = urlencode([(k, v) for k, v in query if k != "table"], quote_via=quote)
    return urlunsplit(parts._replace(query=rest)), table


def connection_defaults(dsn: str) -> dict[str, str | int]:
    """Our libpq settings for what `dsn` (and libpq's environment) leaves unset. `statement_timeout` joins the
    server options already given (`options`, else PGOPTIONS) unless they set it."""
    given = conninfo_to_dict(dsn)
    defaults: dict[str, str | int] = {
        key: value for key, value in CONNECTION_DEFAULTS.items() if not _set(key, given)}
    options = str(given.get("options", os.environ.get("PGOPTIONS", "")))
    if "statement_timeout" not in options:
        defaults["options"] = f"{options} -c statement_timeout={STATEMENT_TIMEOUT_MS}".strip()
    return defaults


def _set(key: str, given: dict[str, Any]) -> bool:
    """Whether the URL, or the environment variable libpq reads in its place, sets `key`."""
    variable = ENVIRONMENT.get(key)
    return key in given or (variable is not None and variable in os.environ)


class _DroppedBeforeWrite(Exception):
    """The connection failed before any row of the batch was sent: retrying cannot append it twice."""

    def __init__(self, error: psycopg.OperationalError) -> None:
        super().__init__(str(error))
        self.error = error


class PostgresAuditStore(AuditStore):
    """`create=False` (export, verify) opens an existing table only: a mistyped `?table=` or a dropped table must
    not be replaced by an empty log that verifies as intact."""

    def __init__(self, url: str, create: bool = True) -> None:
        super().__init__()
        self.url = url
        self._dsn, self.table = split_table(url)
        self.meta = f"{self.table}_meta"  # the high-water mark (guardrails/audit/store.py)
        self._options = connection_defaults(self._dsn)
        self._marks = True  # False: a reader of a log that has no mark table (it creates none)
        self._lock_key = f"guardrails-audit:{self.table}"
        try:
            self._write_conn = self._connect()
            found = self._create_schema() if create else self._open_schema()
            if found:
                self._read_conn = self._connect()
        except psycopg.Error as exc:  # at start: one line that names the store, not a driver traceback
            raise ConnectionError(f"cannot open the audit store {redacted_url(url)}: {one_line(exc)}") from exc
        if not found:
            self._write_conn.close()
            raise ValueError(f"no audit log table {self.table!r} in {redacted_url(url)} (`?table=` names it; "
                             f"the default is {DEFAULT_TABLE!r})")
        self._read_lock = threading.Lock()

    def _connect(self) -> psycopg.Connection:
        return psycopg.connect(self._dsn, autocommit=True, **self._options)

    def _open_schema(self) -> bool:
        """Whether the table exists; it gets the `partial` column if it lacks it (the readers select it)."""
        with self._write_conn.transaction():
            cur = self._write_conn.cursor()
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self._lock_key,))
            if cur.execute("SELECT to_regclass(%s)", (self.table,)).fetchone()[0] is None:
                return False
            if not _has_column(cur, self.table, "partial"):
                cur.execute(f"ALTER TABLE {self.table} ADD COLUMN IF NOT EXISTS partial BOOLEAN")
            self._marks = cur.execute("SELECT to_regclass(%s)", (self.meta,)).fetchone()[0] is not None
        return True

    def _create_schema(self) -> bool:
        t = self.table
        trigger_fn = f"{t}_append_only"
        with self._write_conn.transaction():
            cur = self._write_conn.cursor()
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self._lock_key,))
            cur.execute(f"""CREATE TABLE IF NOT EXISTS {t} (
                seq BIGINT PRIMARY KEY, check_id TEXT NOT NULL, ts DOUBLE PRECISION NOT NULL,
                tenant TEXT, agent TEXT, session TEXT, verdict TEXT NOT NULL, partial BOOLEAN,
                body BYTEA NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL)""")
            # A table created before the column: its rows read NULL (not partial). Under the advisory lock. Only
            # when missing: ALTER TABLE waits for an ACCESS EXCLUSIVE lock even when the column exists, so any open
            # read (an export, pg_dump) made every start fail at statement_timeout and stalled every insert meanwhile.
            if not _has_column(cur, t, "partial"):
                cur.execute(f"ALTER TABLE {t} ADD COLUMN IF NOT EXISTS partial BOOLEAN")
            bare = t.split(".")[-1]
            cur.execute(f"CREATE INDEX IF NOT EXISTS {bare}_ts ON {t}(ts)")
            cur.execute(f"CREATE INDEX IF NOT EXISTS {bare}_tenant ON {t}(tenant, seq)")
            cur.execute(f"CREATE INDEX IF NOT EXISTS {bare}_agent ON {t}(agent, seq)")
            cur.execute(f"""CREATE OR REPLACE FUNCTION {trigger_fn}() RETURNS trigger LANGUAGE plpgsql AS
                $$ BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$""")
            cur.execute(f"""CREATE OR REPLACE TRIGGER {bare}_append_only BEFORE UPDATE OR DELETE ON {t}
                FOR EACH ROW EXECUTE FUNCTION {trigger_fn}()""")
            # TRUNCATE fires no row trigger: without this one, emptying the log and its mark together left a log
            # whose next record is 1 and that verifies. Replaced at every start, like the row triggers, so a log
            # created before it gets it.
            cur.execute(f"""CREATE OR REPLACE TRIGGER {bare}_no_truncate BEFORE TRUNCATE ON {t}
                FOR EACH STATEMENT EXECUTE FUNCTION {trigger_fn}()""")
            self._create_meta(cur)
        return True

    def _create_meta(self, cur: psycopg.Cursor[Any]) -> None:
        """The high-water mark's table (the mark only rises), seeded with the log's head: a log written before it
        existed, or by an older version meanwhile, starts from what it holds now. Its own trigger function: the
        log's table and function can be dropped without it."""
        meta, bare, trigger_fn = self.meta, self.meta.split(".")[-1], f"{self.meta}_guard"
        cur.execute(f"CREATE TABLE IF NOT EXISTS {meta} (key TEXT PRIMARY KEY, value BIGINT NOT NULL)")
        cur.execute(f"""CREATE OR REPLACE FUNCTION {trigger_fn}() RETURNS trigger LANGUAGE plpgsql AS
            $$ BEGIN RAISE EXCEPTION 'the audit log''s high-water mark only rises'; END $$""")
        cur.execute(f"""CREATE OR REPLACE TRIGGER {bare}_no_delete BEFORE DELETE ON {meta}
            FOR EACH ROW EXECUTE FUNCTION {trigger_fn}()""")
        cur.execute(f"""CREATE OR REPLACE TRIGGER {bare}_no_lowering BEFORE UPDATE ON {meta}
            FOR EACH ROW WHEN (NEW.value < OLD.value) EXECUTE FUNCTION {trigger_fn}()""")
        cur.execute(f"""CREATE OR REPLACE TRIGGER {bare}_no_truncate BEFORE TRUNCATE ON {meta}
            FOR EACH STATEMENT EXECUTE FUNCTION {trigger_fn}()""")
        cur.execute(f"INSERT INTO {meta} AS m (key, value) SELECT %s, seq FROM {self.table} ORDER BY seq DESC LIMIT 1 "
                    "ON CONFLICT (key) DO UPDATE SET value = GREATEST(m.value, EXCLUDED.value)", (HIGH_WATER_KEY,))

    def _raise_mark(self, cur: psycopg.Cursor[Any], seq: int) -> None:
        cur.execute(f"INSERT INTO {self.meta} AS m (key, value) VALUES (%s, %s) "
                    "ON CONFLICT (key) DO UPDATE SET value = GREATEST(m.value, EXCLUDED.value)", (HIGH_WATER_KEY, seq))

    def _append_batch(self, rows: Sequence[PendingRow]) -> list[int]:
        while True:
            reused = not (self._write_conn.closed or self._write_conn.broken)
            if not reused:
                self._write_conn = self._connect()
            try:
                return self._append_locked(self._write_conn, rows)
            except _DroppedBeforeWrite as dropped:
                if not reused:  # a new connection that fails at once: the server is down, not our idle link
                    raise dropped.error from None
                # else the server dropped the idle connection: the next turn reconnects and retries once

    def _append_locked(self, conn: psycopg.Connection, rows: Sequence[PendingRow]) -> list[int]:
        sent = False
        try:
            with conn.transaction():
                cur = conn.cursor()
                cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self._lock_key,))
                head = self._head(cur)
                values = chain_rows(head, rows)
                sent = True
                # The rows and the mark in one round trip: the mark adds a statement, not a wait.
                with conn.pipeline() if PIPELINE else contextlib.nullcontext():
                    cur.executemany(
                        f"INSERT INTO {self.table} ({COLUMNS}) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)", values
                    )
                    if self._marks:  # in the batch's transaction: a tail removed later is always below the mark
                        self._raise_mark(cur, values[-1][0])
        except psycopg.OperationalError as exc:
            if conn.broken and not sent:
                raise _DroppedBeforeWrite(exc) from exc
            raise
        return [v[0] for v in values]

    def _head(self, cur: psycopg.Cursor[Any]) -> tuple[int, str] | None:
        """Where the batch is chained (`chain_start`): the head and the mark read in one round trip."""
        last = f"SELECT seq, hash FROM {self.table} ORDER BY seq DESC LIMIT 1"
        if not self._marks:
            return cur.execute(last).fetchone()
        mark, seq, digest = cur.execute(
            f"SELECT (SELECT value FROM {self.meta} WHERE key = %s), h.seq, h.hash FROM (SELECT 1) AS one "
            f"LEFT JOIN ({last}) AS h ON true", (HIGH_WATER_KEY,)).fetchone()
        return chain_start(None if seq is None else (seq, digest), mark)

    def _read(self, query: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with self._read_lock:
            if self._read_conn.closed or self._read_conn.broken:
                self._read_conn = self._connect()
            try:
                return self._read_conn.execute(query, params).fetchall()
            except psycopg.OperationalError:
                if not self._read_conn.broken:
                    raise
                self._read_conn = self._connect()  # a read is safe to repeat on a new connection
                return self._read_conn.execute(query, params).fetchall()

    def _high_water(self) -> int | None:
        if self._read("SELECT to_regclass(%s)", (self.meta,))[0][0] is None:  # a log no service of ours marked yet
            return None
        found = self._read(f"SELECT value FROM {self.meta} WHERE key = %s", (HIGH_WATER_KEY,))
        return found[0][0] if found else None

    def _select(self, filt: AuditFilter, after_seq: int, limit: int) -> list[StoredRecord]:
        where, params = filt.where(after_seq, "%s", contains="position(%s IN body) > 0")
        rows = self._read(f"SELECT {COLUMNS} FROM {self.table} WHERE {where} ORDER BY seq LIMIT %s", [*params, limit])
        return [stored_record(r) for r in rows]

    def drop(self) -> None:
        """Delete the table and its trigger function (tests and teardown only)."""
        self._stop_writer()
        with self._write_conn.transaction():
            self._write_conn.execute(f"DROP TABLE IF EXISTS {self.table}")
            self._write_conn.execute(f"DROP TABLE IF EXISTS {self.meta}")
            self._write_conn.execute(f"DROP FUNCTION IF EXISTS {self.table}_append_only()")
            self._write_conn.execute(f"DROP FUNCTION IF EXISTS {self.meta}_guard()")

    def close(self) -> None:
        self._stop_writer()  # the mark is the head already: each batch's transaction raised it
        self._write_conn.close()
        self._read_conn.close()


def _has_column(cur: psycopg.Cursor[Any], table: str, column: str) -> bool:
    """Whether `table` (as written in SQL: `name` or `schema.name`, on the search path) has `column`; a catalog read,
    which takes no lock on the table."""
    found = cur.execute("SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = %s "
                        "AND NOT attisdropped", (table, column)).fetchone()
    return found is not None


def one_line(exc: BaseException) -> str:
    """libpq's messages span lines (a hint after a tab): one log line, one error message."""
    return " ".join(str(exc).split())
