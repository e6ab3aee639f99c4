"""The audit store contract, run against SQLite and PostgreSQL: append, chain, page, filter, verify.

PostgreSQL runs when GUARDRAILS_TEST_POSTGRES_URL is set (e.g. postgresql://postgres@127.0.0.1:5432/test);
each run uses its own table and drops it.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from guardrails.audit import AuditFilter, AuditStore, open_audit_store
from guardrails.audit.chain import canonical, chain_hash

PG_URL = os.environ.get("GUARDRAILS_TEST_POSTGRES_URL")


@dataclass
class Backend:
    name: str
    url: str
    execute: Callable[[str], None]  # raw SQL as an attacker with database access, the log's triggers off; {t} the table
    meta: str  # the high-water mark's table
    stores: list[AuditStore] = field(default_factory=list)

    def open(self, create: bool = True) -> AuditStore:
        store = open_audit_store(self.url, create=create)
        self.stores.append(store)
        return store


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        path = tmp_path / "audit.sqlite3"

        def sqlite_execute(sql: str) -> None:
            conn = sqlite3.connect(path, isolation_level=None)
            conn.execute("DROP TRIGGER IF EXISTS audit_records_no_update")
            conn.execute("DROP TRIGGER IF EXISTS audit_records_no_delete")
            conn.execute(sql.replace("{t}", "audit_records"))
            conn.close()

        b = Backend("sqlite", f"sqlite:///{path}", sqlite_execute, "audit_meta")
        yield b
        for s in b.stores:
            s.close()
        return
    if not PG_URL:
        pytest.skip(
            "PostgreSQL audit tests need GUARDRAILS_TEST_POSTGRES_URL "
            "(e.g. postgresql://postgres@127.0.0.1:5432/test)"
        )
    import psycopg

    table = f"audit_test_{uuid.uuid4().hex[:12]}"

    def pg_execute(sql: str) -> None:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0] is not None:
                conn.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
            conn.execute(sql.replace("{t}", table))

    sep = "&" if "?" in PG_URL else "?"
    b = Backend("postgres", f"{PG_URL}{sep}table={table}", pg_execute, f"{table}_meta")
    yield b
    for s in b.stores:
        s.close()
    cleanup = open_audit_store(b.url)
    cleanup.drop()  # type: ignore[attr-defined]
    cleanup.close()


def record(
    i: int,
    *,
    tenant: str = "acme",
    agent: str = "travel-agent",
    verdict: str = "allow",
    ts: float = 1_767_225_600.0,
) -> dict[str, Any]:
    return {
        "v": 1,
        "check_id": f"chk_{i:04d}",
        "ts": ts + i,
        "time": "t",
        "tenant": tenant,
        "agent": agent,
        "session": f"s-{i % 2}",
        "verdict": verdict,
        "findings": [],
        "usage": {"input_tokens": i},
    }


def fill(store: AuditStore, records: list[dict[str, Any]]) -> list[int]:
    return [store.submit(r).result(timeout=10) for r in records]


def test_appends_are_chained_in_order_and_verify(backend: Backend) -> None:
    store = backend.open()
    seqs = fill(store, [record(i) for i in range(5)])
    assert seqs == [1, 2, 3, 4, 5]
    rows = list(store.iter_records())
    assert [r.record()["check_id"] for r in rows] == [f"chk_{i:04d}" for i in range(5)]
    assert rows[0].prev_hash == "0" * 64
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(rows))
    assert rows[2].hash == chain_hash(3, rows[1].hash, canonical(record(2)))
    report = store.verify()
    assert report.ok and report.checked == 5 and report.head_seq == 5 and report.head_hash == rows[-1].hash


def test_concurrent_checks_share_commits_and_keep_one_chain(backend: Backend) -> None:
    store = backend.open()

    async def many() -> list[int]:
        return await asyncio.gather(*(store.append(record(i)) for i in range(200)))

    seqs = asyncio.run(many())
    assert sorted(seqs) == list(range(1, 201))
    assert store.verify().ok


def test_two_replicas_append_to_one_chain(backend: Backend) -> None:
    a, b = backend.open(), backend.open()

    def write(store: AuditStore, base: int) -> None:
        for i in range(40):
            store.submit(record(base + i)).result(timeout=10)

    threads = [threading.Thread(target=write, args=(s, base)) for s, base in ((a, 0), (b, 1000))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report = a.verify()
    assert report.ok, [str(p) for p in report.problems]
    assert report.checked == 80


def test_a_replica_that_wrote_last_and_one_that_did_not_alternate_on_one_chain(backend: Backend) -> None:
    """Each store appends after the head it last wrote when it can; a stale head must never fork the chain."""
    a, b = backend.open(), backend.open()
    order = [a, a, b, a, b, b, a]
    seqs = [store.submit(record(i)).result(timeout=10) for i, store in enumerate(order)]
    assert seqs == list(range(1, len(order) + 1))
    rows = list(a.iter_records())
    assert [r.record()["check_id"] for r in rows] == [f"chk_{i:04d}" for i in range(len(order))]
    assert all(y.prev_hash == x.hash for x, y in itertools.pairwise(rows))
    assert a.verify().ok and b.verify().ok


def test_page_with_cursor_and_filters(backend: Backend) -> None:
    store = backend.open()
    fill(
        store,
        [
            record(i, tenant="acme" if i % 3 else "globex", verdict="block" if i % 4 == 0 else "allow")
            for i in range(20)
        ],
    )
    page = store.page(AuditFilter(tenant="acme"), limit=5)
    assert len(page.records) == 5 and page.next_cursor is not None
    seen = [r.record()["check_id"] for r in page.records]
    while page.next_cursor:
        page = store.page(AuditFilter(tenant="acme"), page.next_cursor, limit=5)
        seen += [r.record()["check_id"] for r in page.records]
    assert seen == [f"chk_{i:04d}" for i in range(20) if i % 3]
    blocked = [
        r.record()["check_id"] for r in store.iter_records(AuditFilter(verdict="block", tenant="globex"))
    ]
    assert blocked == ["chk_0000", "chk_0012"]
    window = store.page(AuditFilter(since=1_767_225_605, until=1_767_225_608), limit=100)
    assert [r.seq for r in window.records] == [6, 7, 8] and window.next_cursor is None
    assert [r.seq for r in store.page(AuditFilter(session="s-1", agent="travel-agent"), limit=3).records] == [
        2,
        4,
        6,
    ]


def test_the_log_refuses_updates_and_deletes(backend: Backend) -> None:
    store = backend.open()
    fill(store, [record(0)])
    table = "audit_records" if backend.name == "sqlite" else store.table  # type: ignore[attr-defined]
    if backend.name == "sqlite":
        conn = sqlite3.connect(store.path)  # type: ignore[attr-defined]
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute(f"DELETE FROM {table}")
        conn.close()
    else:
        import psycopg

        with (
            psycopg.connect(PG_URL, autocommit=True) as conn,
            pytest.raises(psycopg.Error, match="append-only"),
        ):
            conn.execute(f"UPDATE {table} SET verdict = 'allow'")


@pytest.mark.parametrize(
    ("tamper", "seq", "kind"),
    [
        (
            'UPDATE {t} SET body = replace(body, \'"verdict":"block"\', \'"verdict":"allow"\') WHERE seq = 3',
            3,
            "altered",
        ),
        ("DELETE FROM {t} WHERE seq = 4", 5, "deleted"),
        ("UPDATE {t} SET verdict = 'allow' WHERE seq = 2", 2, "columns"),
    ],
)
def test_verify_names_the_tampered_record(backend: Backend, tamper: str, seq: int, kind: str) -> None:
    store = backend.open()
    fill(store, [record(i, verdict="block") for i in range(6)])
    if backend.name == "postgres" and "replace(body" in tamper:  # body is bytea there
        tamper = (
            "UPDATE {t} SET body = convert_to(replace(convert_from(body, 'UTF8'), '\"verdict\":\"block\"', "
            "'\"verdict\":\"allow\"'), 'UTF8') WHERE seq = 3"
        )
    backend.execute(tamper)
    report = store.verify()
    assert not report.ok
    problem = report.problems[0]
    assert (problem.seq, problem.kind) == (seq, kind), [str(p) for p in report.problems]
    assert problem.check_id == f"chk_{seq - 1:04d}"


def test_verify_names_an_inserted_record(backend: Backend) -> None:
    store = backend.open()
    fill(store, [record(i) for i in range(3)])
    forged = canonical(record(99, verdict="allow")).decode()
    body = f"'{forged}'" if backend.name == "sqlite" else f"convert_to('{forged}', 'UTF8')"
    # The forger appends a record that looks right but cannot know the chain's next hash without the log.
    backend.execute(
        "INSERT INTO {t} (seq, check_id, ts, tenant, agent, session, verdict, body, prev_hash, hash) "
        f"VALUES (4, 'chk_0099', 1767225699, 'acme', 'travel-agent', 's-1', 'allow', {body}, "
        f"'{'0' * 64}', '{'f' * 64}')"
    )
    report = store.verify()
    assert [(p.seq, p.kind, p.check_id) for p in report.problems] == [(4, "inserted", "chk_0099")]


def test_anchor_detects_a_truncated_tail(backend: Backend) -> None:
    store = backend.open()
    fill(store, [record(i) for i in range(4)])
    head = store.verify()
    backend.execute("DELETE FROM {t} WHERE seq = 4")
    assert [(p.seq, p.kind) for p in store.verify().problems] == [(4, "deleted")]  # below the high-water mark
    backend.execute(f"DROP TABLE {backend.meta}")  # who also removes the mark: a cut tail looks like a shorter log...
    assert store.verify().ok
    report = store.verify((head.head_seq, head.head_hash))
    assert (
        not report.ok and report.problems[0].kind == "deleted" and report.problems[0].seq == 4
    )  # ...not to an anchor


def test_a_failing_store_fails_every_waiting_append(backend: Backend) -> None:
    store = backend.open()
    fill(store, [record(0)])
    backend.execute("DROP TABLE {t}")
    with pytest.raises(Exception):  # noqa: B017 - the driver's own error type differs per backend
        store.submit(record(1)).result(timeout=10)
