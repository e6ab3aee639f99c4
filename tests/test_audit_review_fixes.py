"""Audit-log defects a compliance review found: a PostgreSQL log emptied by TRUNCATE, model-written argument keys kept
verbatim in every content mode, exports re-encoded by jq or Node that no longer verified, a renumbered log reported as
dozens of altered records, and library callers whose odd values broke the record.

PostgreSQL tests run when GUARDRAILS_TEST_POSTGRES_URL is set (e.g. postgresql://postgres@127.0.0.1:5432/test).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

import guardrails.audit.store as audit_store
from guardrails.audit import AuditFilter, AuditStore, open_audit_store
from guardrails.audit.archive import verify_export
from guardrails.audit.chain import canonical, legacy_canonical
from guardrails.audit.export import export_jsonl, export_otlp
from guardrails.cli import main
from guardrails.config import Settings
from guardrails.serve import build_service

PG_URL = os.environ.get("GUARDRAILS_TEST_POSTGRES_URL")
REPO = Path(__file__).resolve().parent.parent
KEY = "jane.doe@gmail.com SSN 078-05-1120"  # an argument name the model wrote: PII in a key


def records_of(url: str) -> list[dict[str, Any]]:
    store = open_audit_store(url, create=False)
    try:
        return [orjson.loads(row.body) for row in store.iter_records(AuditFilter())]
    finally:
        store.close()


def raw_bodies(url: str) -> list[bytes]:
    store = open_audit_store(url, create=False)
    try:
        return [row.body for row in store.iter_records(AuditFilter())]
    finally:
        store.close()


# --- 1. PostgreSQL: TRUNCATE is refused on the log and on its high-water mark --------------------------------------


@pytest.fixture
def pg_schema() -> Iterator[str]:
    if not PG_URL:
        pytest.skip("needs GUARDRAILS_TEST_POSTGRES_URL (e.g. postgresql://postgres@127.0.0.1:5432/test)")
    import psycopg

    schema = f"audit_review_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    yield schema
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


def _pg_url(schema: str) -> str:
    assert PG_URL is not None
    return f"{PG_URL}{'&' if '?' in PG_URL else '?'}table={schema}.audit"


def _append(store: AuditStore, n: int) -> None:
    for i in range(n):
        store.submit({"check_id": f"chk_{i}", "ts": 1_767_225_600.0 + i, "tenant": "acme", "agent": "a",
                      "session": "s", "verdict": "allow", "findings": [], "v": 1}).result()


def _truncate(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as conn:  # as an operator with write access, triggers in place
        conn.execute(sql)


def test_postgres_refuses_truncate_of_the_log_and_of_its_mark(pg_schema: str) -> None:
    import psycopg

    store = open_audit_store(_pg_url(pg_schema))
    try:
        _append(store, 3)
        for sql in (f"TRUNCATE {pg_schema}.audit, {pg_schema}.audit_meta", f"TRUNCATE {pg_schema}.audit",
                    f"TRUNCATE {pg_schema}.audit_meta"):
            with pytest.raises(psycopg.errors.RaiseException):
                _truncate(sql)
        _append(store, 1)  # the next record continues the chain: nothing was emptied
        report = store.verify()
        assert report.ok and report.checked == 4 and report.head_seq == 4
    finally:
        store.close()


def test_a_postgres_log_created_without_the_truncate_triggers_gets_them_when_a_service_opens_it(
        pg_schema: str) -> None:
    import psycopg

    store = open_audit_store(_pg_url(pg_schema))
    _append(store, 2)
    store.close()
    with psycopg.connect(PG_URL, autocommit=True) as conn:  # the log as an older version left it
        conn.execute(f"DROP TRIGGER audit_no_truncate ON {pg_schema}.audit")
        conn.execute(f"DROP TRIGGER audit_meta_no_truncate ON {pg_schema}.audit_meta")
    reader = open_audit_store(_pg_url(pg_schema), create=False)  # export and verify create nothing
    reader.close()
    assert _truncate_triggers(pg_schema) == []
    for _ in range(2):  # and opening again (every start) keeps one of each
        open_audit_store(_pg_url(pg_schema)).close()
        assert _truncate_triggers(pg_schema) == ["audit.audit_no_truncate", "audit_meta.audit_meta_no_truncate"]
    with pytest.raises(psycopg.errors.RaiseException):
        _truncate(f"TRUNCATE {pg_schema}.audit_meta")
    with pytest.raises(psycopg.errors.RaiseException):
        _truncate(f"TRUNCATE {pg_schema}.audit")
    assert len(records_of(_pg_url(pg_schema))) == 2


def _truncate_triggers(schema: str) -> list[str]:
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT c.relname || '.' || t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND NOT t.tgisinternal "
            "AND (t.tgtype & 32) <> 0 ORDER BY 1", (schema,)).fetchall()  # 32: TRIGGER_TYPE_TRUNCATE
    return [r[0] for r in rows]


# --- 2. model-written argument keys never reach the record as text --------------------------------------------------


def _settings(tmp_path: Path, content: str, detectors: dict[str, Any] | None = None) -> Settings:
    policy = tmp_path / "policies" / "default"
    policy.mkdir(parents=True, exist_ok=True)
    (policy / "config.yml").write_text(yaml.safe_dump({"detectors": detectors or {
        "pii": {}, "secret": {}, "low_confidence": {}, "tool_schema": {}}}))
    return Settings(policy_dir=tmp_path / "policies", data_dir=tmp_path / "var", audit_content=content,
                    state_url="none")


def _check(settings: Settings, payload: dict[str, Any]) -> dict[str, Any]:
    return asyncio.run(build_service(settings).check(payload))


def _unsure_key_body(extra_call: bool = False) -> dict[str, Any]:
    """samples/openai_chat.json with an argument named by PII, written with low-confidence tokens."""
    payload = json.loads((REPO / "samples" / "openai_chat.json").read_text())
    choice = payload["response"]["choices"][0]
    choice["message"]["tool_calls"][0]["function"]["arguments"] = json.dumps({KEY: "Paris", "unit": "celsius"})
    tokens = choice["logprobs"]["content"]
    city = next(t for t in tokens if t["token"] == "city")
    city["token"], city["bytes"] = KEY, list(KEY.encode())
    for token in tokens:
        token["logprob"] = -7.0
    if extra_call:  # a call to a tool nobody declared, its values in no token: an unaligned call, named by the model
        choice["message"]["tool_calls"].append({"id": "call-x", "type": "function", "function": {
            "name": "jane.doe@gmail.com", "arguments": json.dumps({"q": "zzz-not-in-any-token"})}})
    payload["context"] = {"tenant": "leak", "agent_id": "leak"}
    return payload


@pytest.mark.parametrize("content", ["none", "hashed", "redacted"])
def test_an_argument_named_by_the_model_is_not_in_the_low_confidence_summary(tmp_path: Path, content: str) -> None:
    settings = _settings(tmp_path, content)
    answer = _check(settings, _unsure_key_body())
    units = answer["signals"]["low_confidence"]["units"]
    arguments = [u for u in units if u["unit"] == "argument"]
    assert arguments, units
    assert not any(KEY in json.dumps(u) for u in units)  # the live summary too: signals hold no text
    for unit in arguments:  # the pointer and offsets locate the value instead
        assert unit["pointer"].endswith("/function/arguments") and unit["end"] > unit["start"]
    (body,) = raw_bodies(settings.resolved_audit_url())
    assert b"jane.doe" not in body and b"078-05-1120" not in body
    assert [u["unit"] for u in orjson.loads(body)["logprobs"]["units"]].count("argument") == len(arguments)


def test_an_undeclared_tools_name_in_the_unaligned_calls_is_kept_as_content_is(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "none")
    answer = _check(settings, _unsure_key_body(extra_call=True))
    (unaligned,) = answer["signals"]["low_confidence"]["unaligned_calls"]
    assert unaligned["tool"] == "jane.doe@gmail.com"  # the answer keeps it
    (record,) = records_of(settings.resolved_audit_url())
    (kept,) = record["logprobs"]["unaligned_calls"]
    assert kept["tool"] == "~h:" + hashlib.sha256(b"jane.doe@gmail.com").hexdigest()[:8]
    assert kept["pointer"] == unaligned["pointer"] and kept["values"] == 1
    assert b"jane.doe" not in raw_bodies(settings.resolved_audit_url())[0]


def _object_arguments_body() -> dict[str, Any]:
    """samples/anthropic_messages.json whose tool_use `input` (an object) has keys the model wrote."""
    payload = json.loads((REPO / "samples" / "anthropic_messages.json").read_text())
    payload["response"]["content"][2]["input"] = {
        "city": "Tokyo", KEY: {"note": "call me at jane.doe@gmail.com"}, "list": [{"a/b~c": "mail jane.doe@gmail.com"}]}
    return payload


def _h(text: str) -> str:
    return "~h:" + hashlib.sha256(text.encode()).hexdigest()[:8]


@pytest.mark.parametrize("content", ["none", "hashed"])
def test_keys_in_a_pointer_below_an_arguments_object_are_hashed(tmp_path: Path, content: str) -> None:
    settings = _settings(tmp_path, content)
    answer = _check(settings, _object_arguments_body())
    live = sorted({f["location"]["pointer"] for f in answer["findings"]})
    base = "/response/content/2/input"
    assert f"{base}/{KEY}/note" in live and f"{base}/list/0/a~1b~0c" in live  # the answer keeps the real pointers
    (body,) = raw_bodies(settings.resolved_audit_url())
    assert b"jane.doe" not in body and b"078-05-1120" not in body
    kept = {f["pointer"] for f in orjson.loads(body)["findings"]}
    assert f"{base}/{_h(KEY)}/{_h('note')}" in kept
    assert f"{base}/{_h('list')}/0/{_h('a/b~c')}" in kept  # an array index is a position, not text: it stays
    assert not any(p.startswith(base + "/") and not p.startswith(f"{base}/~h:") for p in kept), kept


def test_keys_in_a_pointer_below_an_arguments_object_are_redacted_like_content(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "redacted")
    _check(settings, _object_arguments_body())
    (body,) = raw_bodies(settings.resolved_audit_url())
    assert b"jane.doe" not in body and b"078-05-1120" not in body
    record = orjson.loads(body)
    assert "/response/content/2/input/[pii] SSN [pii]/note" in {f["pointer"] for f in record["findings"]}
    tool_use = next(s for s in record["content"]["segments"] if s["pointer"] == "/response/content/2/input")
    assert '"[pii] SSN [pii]"' in tool_use["text"]  # the same redaction as the segment's own text


def test_openai_string_arguments_keep_their_pointers(tmp_path: Path) -> None:
    """Arguments sent as a JSON string are pointed at as a whole string: nothing of a key is in the pointer, and the
    record keeps it as the answer gives it."""
    settings = _settings(tmp_path, "none")
    answer = _check(settings, _unsure_key_body())
    (record,) = records_of(settings.resolved_audit_url())
    assert [f["pointer"] for f in record["findings"]] == [f["location"]["pointer"] for f in answer["findings"]]


# --- 3. an export re-encoded by jq or Node verifies; a real change does not ----------------------------------------


def reencoded(line: str) -> str:
    """A line as `jq -c .` or `JSON.stringify` writes it back: whole-number floats as integers (`1.0` -> `1`, `-0.0`
    -> `0`), keys in another order."""
    def plain(value: Any) -> Any:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, dict):
            return {k: plain(v) for k, v in reversed(list(value.items()))}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value
    return json.dumps(plain(json.loads(line)), separators=(",", ":"), ensure_ascii=True) + "\n"


def _float_heavy(i: int) -> dict[str, Any]:
    """A record with floats wherever the service writes them, many of them whole numbers."""
    return {
        "v": 1, "check_id": f"chk_{i}", "time": "2026-01-01T00:00:00+00:00", "ts": 1_767_225_600.0 + i,
        "tenant": "acme", "agent": "a", "session": "s", "user": None, "trace_id": None, "span_id": None,
        "policy": {"id": "default", "version": "7de9d0888440"}, "format": "openai.chat", "phase": "response",
        "model": "m", "response_id": "r", "usage": {"input_tokens": 12, "output_tokens": 3}, "finish_reason": "stop",
        "verdict": "block" if i % 2 else "allow",
        "findings": [{"category": "pii", "detector": "pii", "severity": "medium", "action": "warn",
                      "pointer": "/response/choices/0/message/content", "start": 0, "end": 5, "score": 1.0},
                     {"category": "secret", "detector": "secret", "severity": "high", "action": "block",
                      "pointer": "/request/messages/0/content", "start": None, "end": None, "score": 0.91}],
        "timings_ms": {"normalize": 0.0, "detectors": {"pii": 2.0, "secret": 0.125}, "total": 3.0},
        "logprobs": {"source": "response", "model": "m", "thresholds": {"token": -2.0, "segment": -1.0,
                                                                          "relative": False},
                     "units": [{"pointer": "/response/choices/0/message/content", "unit": "assistant", "tokens": 4,
                                "mean": -0.0, "min": -1.0, "ppl": 1.0, "entropy": 0.0, "margin": 2.0,
                                "low_share": 0.0}], "arguments": 0},
        "budget": {"spent": {"tokens": 15.0, "requests": 1.0, "tool_calls": 0.0, "cost_usd": 0.0},
                   "totals": {"agent.requests_per_minute": 3.0}, "breakers": {}, "streaks": {"agent:acme/a": 2}},
        "service_version": "0.1.0",
    }


def _export(url: str) -> list[str]:
    store = open_audit_store(url, create=False)
    try:
        return list(export_jsonl(store.iter_records(AuditFilter())))
    finally:
        store.close()


def _verify_lines(lines: list[str]) -> Any:
    return verify_export([line.encode() for line in lines])


def _altered(lines: list[str], index: int, old: bytes, new: bytes) -> list[str]:
    changed = list(lines)
    assert old.decode() in changed[index]
    changed[index] = changed[index].replace(old.decode(), new.decode(), 1)
    return changed


def _assert_changes_show(lines: list[str]) -> None:
    for old, new in ((b'"score":0.91', b'"score":0.19'), (b'"verdict":"block"', b'"verdict":"allow"')):
        report = _verify_lines(_altered(lines, 1, old, new)).report
        assert [(p.seq, p.kind) for p in report.problems] == [(2, "altered")], report.problems


@pytest.mark.parametrize("written_by", ["now", "before"])
def test_an_export_reencoded_by_jq_or_node_still_verifies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          written_by: str) -> None:
    if written_by == "before":  # a log written before whole numbers were integers: `1.0` as `1.0`
        monkeypatch.setattr(audit_store, "canonical", legacy_canonical)
    url = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    store = open_audit_store(url)
    for i in range(4):
        store.submit(_float_heavy(i)).result()
    store.close()
    monkeypatch.undo()
    assert records_of(url) and open_audit_store(url, create=False).verify().ok
    lines = _export(url)
    assert (b'"score":1.0' in lines[0].encode()) == (written_by == "before")
    assert _verify_lines(lines).ok
    again = [reencoded(line) for line in lines]
    assert again != lines and ('"score":1,' in again[0] or '"score":1}' in again[0])
    assert _verify_lines(again).ok, _verify_lines(again).report.problems
    _assert_changes_show([json.dumps(json.loads(line), separators=(",", ":")) + "\n" for line in again])


@pytest.mark.parametrize("tool", ["jq", "node"])
def test_an_export_through_the_real_tools_still_verifies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         tool: str) -> None:
    """Records a service wrote, after records an older version wrote (`1.0`, `-0.0`), through `jq -c .` or Node's
    `JSON.stringify(JSON.parse(line))`."""
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")
    settings = _settings(tmp_path, "redacted", {"pii": {}, "secret": {}, "low_confidence": {}})
    url = settings.resolved_audit_url()
    monkeypatch.setattr(audit_store, "canonical", legacy_canonical)
    store = open_audit_store(url)
    for i in range(3):
        store.submit(_float_heavy(i)).result()
    store.close()
    monkeypatch.undo()
    service = build_service(settings)
    asyncio.run(service.check(_unsure_key_body()))  # logprobs, thresholds, scores: floats, some whole, some -0.0
    asyncio.run(service.check(_library_body("mail me at jane@example.com")))
    lines = _export(url)
    command = ["jq", "-c", "."] if tool == "jq" else [
        "node", "-e", "require('fs').readFileSync(0,'utf8').split('\\n').filter(Boolean)"
                      ".forEach(l => console.log(JSON.stringify(JSON.parse(l))))"]
    out = subprocess.run(command, input="".join(lines), capture_output=True, text=True, check=True).stdout
    again = out.splitlines(keepends=True)
    assert len(again) == len(lines) and again[:3] != lines[:3]  # the older records' `1.0` became `1`
    assert _verify_lines(again).ok, _verify_lines(again).report.problems
    _assert_changes_show(again)


def test_an_otlp_export_keeps_a_whole_number_score_a_double(tmp_path: Path) -> None:
    """The record stores `score: 1`; its span still says `doubleValue`, as the live spans do."""
    url = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    store = open_audit_store(url)
    store.submit(_float_heavy(1)).result()
    (row,) = store.iter_records(AuditFilter())
    store.close()
    assert b'"score":1,' in row.body
    (request,) = [json.loads(line) for line in export_otlp([row])]
    (span,) = request["resourceSpans"][0]["scopeSpans"][0]["spans"]
    scores = [a["value"] for e in span["events"] for a in e["attributes"] if a["key"] == "guardrails.finding.score"]
    assert scores == [{"doubleValue": 1.0}, {"doubleValue": 0.91}]


def test_the_canonical_form_writes_whole_numbers_as_integers_outside_strings_only() -> None:
    record = {"a": 1.0, "b": -0.0, "c": [2.0, 0.5, 1e16, 2.0**64, 1e300], "d": 'x:1.0,"y":2.0}', "e": "\\", "f": 3.0,
              "g": 10**30}
    assert canonical(record) == (b'{"a":1,"b":0,"c":[2,0.5,10000000000000000,1.8446744073709552e+19,1e+300],'
                                 b'"d":"x:1.0,\\"y\\":2.0}","e":"\\\\","f":3,"g":"1000000000000000000000000000000"}')
    assert legacy_canonical({"a": 1.0}) == b'{"a":1.0}'


# --- 4. a record deleted and the rest renumbered: one line that says so ---------------------------------------------


def _renumbered_log(tmp_path: Path, n: int = 78, deleted: int = 30) -> str:
    url = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    store = open_audit_store(url)
    for i in range(n):
        store.submit(_float_heavy(i)).result()
    store.close()
    _drop_and_renumber(tmp_path, deleted)
    return url


def test_a_deleted_record_with_the_rest_renumbered_is_named_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = _renumbered_log(tmp_path)
    store = open_audit_store(url, create=False)
    report = store.verify()
    store.close()
    assert [(p.seq, p.kind) for p in report.problems] == [(30, "renumbered")], report.problems
    (problem,) = report.problems
    assert problem.check_id == "chk_30"  # the record written as 31 (chk_ ids count from 0)
    assert "records 30..77 were written as 31..78" in problem.message
    assert "record 30 as written is missing before it" in problem.message
    assert not report.ok and report.head_seq == 77
    assert main(["audit", "verify", "--url", url]) == 1
    out = capsys.readouterr().out.splitlines()
    assert [line for line in out if line.startswith("TAMPERED")] == [f"TAMPERED {problem}"]
    assert out[-1].startswith("FAILED (1 problem(s)): 77 record(s)")


def test_a_renumbered_log_reads_its_anchor_by_the_numbers_records_were_written_with(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    store = open_audit_store(url)
    for i in range(10):
        store.submit(_float_heavy(i)).result()
    anchor = (10, store.verify().head_hash)
    store.close()
    _drop_and_renumber(tmp_path, deleted=4)
    store = open_audit_store(url)  # a service appends after the renumbering: numbered after the mark, no new gap
    store.submit(_float_heavy(10)).result()
    report = store.verify(anchor)
    store.close()
    assert [(p.seq, p.kind) for p in report.problems] == [(4, "renumbered")], report.problems
    assert "records 4..9 were written as 5..10" in report.problems[0].message


def _drop_and_renumber(tmp_path: Path, deleted: int) -> None:
    db = sqlite3.connect(tmp_path / "audit.sqlite3", isolation_level=None)
    db.execute("DROP TRIGGER audit_records_no_update")
    db.execute("DROP TRIGGER audit_records_no_delete")
    db.execute("DELETE FROM audit_records WHERE seq = ?", (deleted,))
    db.execute("UPDATE audit_records SET seq = -seq WHERE seq > ?", (deleted,))  # two steps: keys stay unique
    db.execute("UPDATE audit_records SET seq = -seq - 1 WHERE seq < 0")
    db.close()


def test_a_record_inserted_with_the_rest_renumbered_up_is_named(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    store = open_audit_store(url)
    for i in range(8):
        store.submit(_float_heavy(i)).result()
    store.close()
    db = sqlite3.connect(tmp_path / "audit.sqlite3", isolation_level=None)
    db.execute("DROP TRIGGER audit_records_no_update")
    db.execute("UPDATE audit_records SET seq = -seq WHERE seq >= 5")
    db.execute("UPDATE audit_records SET seq = -seq + 1 WHERE seq < 0")
    prev = db.execute("SELECT hash FROM audit_records WHERE seq = 4").fetchone()[0]
    forged = canonical(_float_heavy(99))
    digest = hashlib.sha256(f"5:{prev}:".encode() + forged).hexdigest()
    db.execute("INSERT INTO audit_records (seq, check_id, ts, tenant, agent, session, verdict, partial, body, "
               "prev_hash, hash) VALUES (5, 'chk_99', ?, 'acme', 'a', 's', 'block', NULL, ?, ?, ?)",
               (_float_heavy(99)["ts"], forged, prev, digest))
    db.close()
    store = open_audit_store(url, create=False)
    report = store.verify()
    store.close()
    assert [(p.seq, p.kind) for p in report.problems] == [(6, "renumbered")], report.problems
    assert "records 6..9 were written as 5..8" in report.problems[0].message
    assert "record 5 before it was inserted" in report.problems[0].message


def test_an_altered_record_is_still_altered(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    store = open_audit_store(url)
    for i in range(5):
        store.submit(_float_heavy(i)).result()
    store.close()
    db = sqlite3.connect(tmp_path / "audit.sqlite3", isolation_level=None)
    db.execute("DROP TRIGGER audit_records_no_update")
    db.execute("UPDATE audit_records SET body = replace(body, '0.91', '0.19') WHERE seq = 3")
    db.close()
    store = open_audit_store(url, create=False)
    assert [(p.seq, p.kind) for p in store.verify().problems] == [(3, "altered")]
    store.close()


# --- 5. a library caller's odd values do not break the record ------------------------------------------------------


def _library_body(content: str = "hello", prompt_tokens: int = 12) -> dict[str, Any]:
    payload = json.loads((REPO / "samples" / "openai_chat.json").read_text())
    payload["request"]["messages"][0]["content"] = content
    payload["response"]["usage"]["prompt_tokens"] = prompt_tokens
    return payload


def test_hashed_content_with_a_lone_surrogate_is_recorded(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "hashed", {"secret": {}})
    service = build_service(settings)
    text = "hello \udc00 world \ud83d\ude00"  # a lone surrogate, and a pair a library caller left split
    answer = asyncio.run(service.check(_library_body(text)))
    assert answer["verdict"] in ("allow", "warn") and service.readiness()["ready"] is True
    (record,) = records_of(settings.resolved_audit_url())
    (segment,) = [s for s in record["content"]["segments"] if s["pointer"] == "/request/messages/0/content"]
    joined = "hello \udc00 world \U0001f600"
    assert segment["sha256"] == hashlib.sha256(joined.encode("utf-8", "surrogatepass")).hexdigest()
    other = asyncio.run(service.check(_library_body("hello \udc01 world \ud83d\ude00")))
    assert other["verdict"] == answer["verdict"]
    hashes = [next(s["sha256"] for s in r["content"]["segments"] if s["pointer"] == "/request/messages/0/content")
              for r in records_of(settings.resolved_audit_url())]
    assert len(set(hashes)) == 2  # two lone surrogates, two hashes


def test_a_usage_count_past_64_bits_is_recorded_as_its_digits(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "none", {"secret": {}})
    service = build_service(settings)
    answer = asyncio.run(service.check(_library_body(prompt_tokens=10**30)))
    assert answer["verdict"] == "allow" and service.readiness()["ready"] is True
    (record,) = records_of(settings.resolved_audit_url())
    assert record["usage"]["input_tokens"] == str(10**30)
    assert record["usage"]["output_tokens"] == _library_body()["response"]["usage"]["completion_tokens"]
    store = open_audit_store(settings.resolved_audit_url(), create=False)
    assert store.verify().ok
    store.close()

