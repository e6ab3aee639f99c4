"""Fixes from an architecture review: one YAML loader for policies and inline configs (a key given twice in an
inline config is refused, not silently dropped), the audit time range outside the CLI, and one reading of a stored
audit row for both stores.

PostgreSQL runs when GUARDRAILS_TEST_POSTGRES_URL is set (e.g. postgresql://postgres@127.0.0.1:5432/test)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from guardrails.audit import AuditFilter, AuditStore, open_audit_store, time_range
from guardrails.audit.chain import INDEXED, canonical, chain_rows
from guardrails.audit.store import COLUMNS, PendingRow, stored_record
from guardrails.config import Settings
from guardrails.contract import ErrorResponse
from guardrails.policy_yaml import DuplicateKeyError, safe_load_unique
from guardrails.serve import build_app

REPO = Path(__file__).resolve().parent.parent
PG_URL = os.environ.get("GUARDRAILS_TEST_POSTGRES_URL")
AWS_KEY = "key AKIAIOSFODNN7EXAMPLE"


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(build_app(Settings(policy_dir=REPO / "policies")))


def nemo(config: Any, content: str = "hi") -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": content}], "guardrails": {"config": config}}


def config_error(resp: Any) -> dict[str, Any]:
    """The error of a refused inline config: the shape every other bad inline config gets."""
    assert resp.status_code == 422, resp.text
    payload = resp.json()
    ErrorResponse.model_validate(payload)
    assert payload["error"]["type"] == "invalid_body" and payload["error"]["pointer"] == "/guardrails/config"
    return payload["error"]


# --- 1. inline configs: the project's YAML loader -------------------------------------------------------------


def test_inline_config_with_a_repeated_key_is_refused_naming_key_and_lines(client: TestClient) -> None:
    # Before: the second `secret:` replaced the first, and its `action: block` was gone without a word.
    config = "rails:\n  input:\n    flows: [check secrets]\ndetectors:\n  secret: {action: block}\n  secret: {}\n"
    message = config_error(client.post("/v1/guardrail/checks", json=nemo(config, AWS_KEY)))["message"]
    assert "duplicate key 'secret'" in message and "line 6" in message and "also on line 5" in message


def test_repeated_key_nested_deeper_is_refused_too(client: TestClient) -> None:
    config = "detectors:\n  pii: {action: warn, action: block}\n"
    message = config_error(client.post("/v1/guardrail/checks", json=nemo(config)))["message"]
    assert "duplicate key 'action'" in message and "line 2" in message


def test_inline_config_aliases_are_still_refused(client: TestClient) -> None:
    config = "detectors:\n  content: {terms: &t [banned]}\n  secret: {disabled_rules: *t}\n"
    message = config_error(client.post("/v1/guardrail/checks", json=nemo(config)))["message"]
    assert "alias" in message and "line 3" in message


def test_inline_config_merge_keys_need_an_alias_and_are_refused(client: TestClient) -> None:
    config = "base: &b {action: warn}\ndetectors:\n  secret:\n    <<: *b\n"
    assert "alias" in config_error(client.post("/v1/guardrail/checks", json=nemo(config)))["message"]


def test_a_valid_inline_yaml_config_still_works(client: TestClient) -> None:
    config = "rails:\n  input:\n    flows: [check secrets]\n"
    payload = client.post("/v1/guardrail/checks", json=nemo(config, AWS_KEY)).json()
    assert payload["status"] == "blocked" and payload["rails_status"] == {"check secrets": {"status": "blocked"}}
    assert payload["guardrails_data"]["config_ids"] == ["inline"]


def test_loader_names_the_source_and_refuses_aliases_only_when_asked() -> None:
    with pytest.raises(DuplicateKeyError) as raised:
        safe_load_unique("a: 1\nb: 2\na: 3\n", source="guardrails.config")
    assert raised.value.key == "a" and (raised.value.first_line, raised.value.line) == (1, 3)
    assert 'in "guardrails.config", line 3' in str(raised.value)
    text = "base: &b {x: 1}\nc:\n  <<: *b\n  y: 2\n"
    assert safe_load_unique(text)["c"] == {"x": 1, "y": 2}  # policy files on disk keep their merge keys
    with pytest.raises(yaml.YAMLError, match="alias") as refused:
        safe_load_unique(text, source="guardrails.config", aliases=False)
    assert 'in "guardrails.config", line 3' in str(refused.value)
    with pytest.raises(DuplicateKeyError):  # the alias-free loader refuses repeated keys as well
        safe_load_unique("a: 1\na: 2\n", aliases=False)


# --- 2. the HTTP edge does not import the CLI ------------------------------------------------------------------


def test_admin_routes_do_not_import_the_cli() -> None:
    cli = ("guardrails.audit_cli", "guardrails.cli")
    code = f"import sys, api.admin; print(sorted(m for m in sys.modules if m in {cli!r}))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_time_range_names_the_callers_words() -> None:
    assert time_range(None, None) == (None, None)
    assert time_range("1767225600", "2026-01-01T00:00:01Z") == (1_767_225_600.0, 1_767_225_601.0)
    with pytest.raises(ValueError, match="since equals until"):
        time_range("1767225600", "2026-01-01T00:00:00Z")
    with pytest.raises(ValueError, match="--since equals --until"):
        time_range("1767225600", "1767225600", ("--since", "--until"))


# --- 3. one reading of a stored row ------------------------------------------------------------------------------


def test_a_row_reads_back_as_it_was_chained() -> None:
    record = {"check_id": "chk_1", "ts": 1.5, "tenant": "t", "agent": "a", "session": "s", "verdict": "block",
              "partial": None}
    body = canonical(record)
    (row,) = chain_rows(None, [PendingRow(body, dict(record))])
    assert len(row) == len(COLUMNS.split(", "))  # the insert tuple and the column list agree
    for stored_body in (body, memoryview(body), body.decode()):  # BYTEA, a driver's buffer, SQLite TEXT
        stored = stored_record((*row[:8], stored_body, *row[9:]))
        assert stored.body == body and isinstance(stored.body, bytes)
        assert (stored.seq, stored.prev_hash, stored.hash) == (1, "0" * 64, row[-1])
        assert list(stored.columns) == list(INDEXED) and stored.columns == record


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AuditStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    elif not PG_URL:
        pytest.skip("PostgreSQL audit tests need GUARDRAILS_TEST_POSTGRES_URL")
    else:
        url = f"{PG_URL}{'&' if '?' in PG_URL else '?'}table=audit_test_{uuid.uuid4().hex[:12]}"
    opened = open_audit_store(url)
    yield opened
    if request.param == "postgres":
        opened.drop()  # type: ignore[attr-defined]
    opened.close()


def test_both_stores_read_a_record_back_the_same_way(store: AuditStore) -> None:
    record = {"v": 1, "check_id": "chk_0001", "ts": 1_767_225_600.25, "time": "t", "tenant": "acme", "agent": "bot",
              "session": "s-1", "verdict": "warn", "partial": True, "findings": []}
    assert store.submit(record).result(timeout=10) == 1
    (stored,) = store.page(AuditFilter()).records
    assert isinstance(stored.body, bytes) and stored.body == canonical(record)
    assert list(stored.columns) == list(INDEXED)
    same = [k for k in INDEXED if k != "partial"]
    assert {k: stored.columns[k] for k in same} == {k: record[k] for k in same}
    assert bool(stored.columns["partial"]) is True  # SQLite keeps 1, PostgreSQL true: as before
    assert store.verify().ok
