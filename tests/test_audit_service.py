"""The audit log end to end: one record per acknowledged check, content modes, HTTP and CLI access."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from openai_payloads import tool_call_response

from guardrails.audit import AuditFilter, open_audit_store
from guardrails.audit.observer import AuditObserver
from guardrails.cli import main
from guardrails.config import Settings
from guardrails.serve import build_app, build_service

TOKEN = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
MESSAGE = f"deploy with token {TOKEN} please"


def settings(tmp_path: Path, **overrides: Any) -> Settings:
    policy = tmp_path / "policies" / "default"
    policy.mkdir(parents=True, exist_ok=True)
    (policy / "config.yml").write_text(
        yaml.safe_dump(
            {
                "detectors": {
                    "tool_undeclared": {"action": "block"},
                    "secret": {},
                    "budget": {
                        "windows": {"agent": {"requests_per_minute": 1000}},
                        "breaker": {"cooldown_s": 60, "repeated_call": {"max_repeats": 3, "window_s": 600}},
                    },
                }
            }
        )
    )
    return Settings(policy_dir=tmp_path / "policies", data_dir=tmp_path / "var", **overrides)


def body(
    i: int = 0,
    *,
    agent: str = "travel-agent",
    tenant: str = "acme",
    tool: str = "get_weather",
    content: str = "Weather in Paris?",
) -> dict[str, Any]:
    return {
        "request": {
            "model": "Qwen/Qwen3-8B",
            "messages": [{"role": "user", "content": content}],
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}],
        },
        "response": tool_call_response(
            tool, {"i": i}, id=f"chatcmpl-{i}", model="Qwen/Qwen3-8B",
            usage={"prompt_tokens": 50 + i, "completion_tokens": 20,
                   "completion_tokens_details": {"reasoning_tokens": 7}},
        ),
        "context": {"agent_id": agent, "session_id": f"s-{i % 2}", "tenant": tenant, "user": "u-1"},
    }


def test_every_check_leaves_a_record_with_the_issue_fields(tmp_path: Path) -> None:
    service = build_service(settings(tmp_path))
    result = asyncio.run(service.check(body(3, tool="wipe_disk")))
    store = open_audit_store(f"sqlite:///{tmp_path / 'var' / 'audit.sqlite3'}")
    (row,) = store.iter_records()
    r = row.record()
    assert r["check_id"] == result["check_id"] and r["verdict"] == "block"
    assert (r["tenant"], r["agent"], r["session"], r["user"]) == ("acme", "travel-agent", "s-1", "u-1")
    assert r["policy"] == result["policy"] and r["format"] == "openai.chat" and r["model"] == "Qwen/Qwen3-8B"
    assert r["usage"] == {"input_tokens": 53, "output_tokens": 20, "reasoning_tokens": 7}
    assert r["finish_reason"] == "tool_calls" and r["service_version"]
    assert {"tool_undeclared", "budget"} <= set(r["timings_ms"]["detectors"])
    (finding,) = r["findings"]
    assert finding == {
        "category": "tool_undeclared",
        "detector": "tool_undeclared",
        "severity": "high",
        "action": "block",
        "pointer": "/response/choices/0/message/tool_calls/0/function/name",
        "start": 0,
        "end": 9,
        "score": finding["score"],
    }
    assert r["budget"]["spent"]["requests"] == 1
    assert "content" not in r and "Weather in Paris" not in row.body.decode()  # no message content by default
    store.close()


@pytest.mark.parametrize("mode", ["redacted", "hashed"])
def test_content_is_kept_redacted_or_hashed_when_configured(tmp_path: Path, mode: str) -> None:
    service = build_service(settings(tmp_path, audit_content=mode))
    result = asyncio.run(service.check(body(content=MESSAGE)))
    assert any(f["category"] == "secret" for f in result["findings"])
    store = open_audit_store(f"sqlite:///{tmp_path / 'var' / 'audit.sqlite3'}")
    (row,) = store.iter_records()
    assert TOKEN not in row.body.decode()
    segments = {s["pointer"]: s for s in row.record()["content"]["segments"]}
    user = segments["/request/messages/0/content"]
    if mode == "redacted":
        assert user["text"] == "deploy with token [secret] please"
    else:
        import hashlib

        assert user["sha256"] == hashlib.sha256(MESSAGE.encode()).hexdigest() and "text" not in user
    store.close()


def test_http_records_paging_filters_and_verify(tmp_path: Path) -> None:
    client = TestClient(build_app(settings(tmp_path)))
    ids = []
    for i in range(7):
        resp = client.post(
            "/v1/checks",
            json=body(i, tenant="acme" if i < 5 else "globex", tool="get_weather" if i % 2 else "rm_rf"),
        )
        assert resp.status_code == 200
        ids.append(resp.json()["check_id"])
    page = client.get("/v1/audit/records", params={"tenant": "acme", "limit": 2}).json()
    seen = [r["check_id"] for r in page["records"]]
    while page["next_cursor"]:
        page = client.get(
            "/v1/audit/records", params={"tenant": "acme", "limit": 2, "cursor": page["next_cursor"]}
        ).json()
        seen += [r["check_id"] for r in page["records"]]
    assert seen == ids[:5]
    blocked = client.get("/v1/audit/records", params={"verdict": "block"}).json()["records"]
    assert [r["check_id"] for r in blocked] == [ids[0], ids[2], ids[4], ids[6]]
    assert blocked[0]["audit"]["seq"] == 1 and len(blocked[0]["audit"]["hash"]) == 64
    assert client.get("/v1/audit/records", params={"since": "2999-01-01T00:00:00Z"}).json()["records"] == []
    assert client.get("/v1/audit/records", params={"since": "yesterday"}).status_code == 422
    verified = client.get("/v1/audit/verify").json()
    assert verified["ok"] is True and verified["checked"] == 7


def test_http_breakers_list_inspect_reset(tmp_path: Path) -> None:
    client = TestClient(build_app(settings(tmp_path)))
    verdicts = [client.post("/v1/checks", json=body(1)).json()["verdict"] for _ in range(4)]
    assert verdicts == ["allow", "allow", "block", "block"]  # the third identical call opens the breaker
    (listed,) = client.get("/v1/breakers").json()["breakers"]
    assert listed["key"] == "agent:acme/travel-agent" and listed["state"] == "open"
    assert listed["reason"] == "repeated_tool_call"
    shown = client.get("/v1/breakers/agent:acme/travel-agent")
    assert shown.status_code == 200 and shown.json()["details"]["tool"] == "get_weather"
    assert client.post("/v1/breakers/agent:acme/travel-agent/reset").json() == {
        "key": "agent:acme/travel-agent",
        "state": "closed",
    }
    assert client.get("/v1/breakers/agent:acme/travel-agent").json()["error"]["type"] == "not_found"
    assert client.post("/v1/breakers/agent:acme/travel-agent/reset").status_code == 404
    assert client.post("/v1/checks", json=body(2)).json()["verdict"] == "allow"


def test_admin_routes_need_the_api_key(tmp_path: Path) -> None:
    client = TestClient(build_app(settings(tmp_path, api_keys=("k",))))
    assert client.get("/v1/audit/records").status_code == 401
    assert client.get("/v1/breakers").status_code == 401
    assert client.get("/v1/breakers", headers={"Authorization": "Bearer k"}).status_code == 200


def test_a_check_whose_record_cannot_be_written_fails_with_503(tmp_path: Path) -> None:
    app = build_app(settings(tmp_path))
    client = TestClient(app)
    assert client.post("/v1/checks", json=body()).status_code == 200
    (observer,) = [o for o in app.state.service.observers if isinstance(o, AuditObserver)]

    def broken(rows: Any) -> list[int]:
        raise sqlite3.OperationalError("disk I/O error")

    observer.store._append_batch = broken  # type: ignore[method-assign]
    resp = client.post("/v1/checks", json=body())
    assert resp.status_code == 503
    error = resp.json()["error"]
    assert error["type"] == "audit_unavailable" and "disk I/O error" in error["message"]


def test_audit_can_be_disabled(tmp_path: Path) -> None:
    service = build_service(settings(tmp_path, audit_url="none", state_url="none"))
    assert not any(isinstance(o, AuditObserver) for o in service.observers)
    assert service.services.state is None
    assert not (tmp_path / "var").exists()


def _populate(tmp_path: Path) -> Path:
    service = build_service(settings(tmp_path))
    for i in range(4):
        asyncio.run(service.check(body(i, agent="a1" if i < 3 else "a2", tool="get_weather" if i else "rm")))
    return tmp_path / "var" / "audit.sqlite3"


def test_cli_export_filters_and_formats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = _populate(tmp_path)
    url = f"sqlite:///{db}"
    assert main(["audit", "export", "--url", url, "--agent", "a1", "--format", "jsonl"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["agent"] for line in lines] == ["a1", "a1", "a1"]
    assert main(["audit", "export", "--url", url, "--verdict", "block", "--format", "csv"]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert (
        header.startswith("seq,check_id,time,tenant,agent") and ",block," in row and "tool_undeclared" in row
    )
    out = tmp_path / "spans.jsonl"
    assert (
        main(["audit", "export", "--url", url, "--format", "otlp", "--since", "2000-01-01", "-o", str(out)])
        == 0
    )
    (request,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(request["resourceSpans"][0]["scopeSpans"][0]["spans"]) == 4
    assert main(["audit", "export", "--url", url, "--since", "not a time"]) == 4


def test_cli_verify_names_the_tampered_record(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = _populate(tmp_path)
    assert main(["audit", "verify", "--url", f"sqlite:///{db}"]) == 0
    assert capsys.readouterr().out.startswith("OK: 4 record(s)")
    conn = sqlite3.connect(db, isolation_level=None)
    check_id = conn.execute("SELECT check_id FROM audit_records WHERE seq = 1").fetchone()[0]
    conn.execute("DROP TRIGGER audit_records_no_update")
    conn.execute(
        'UPDATE audit_records SET body = replace(body, \'"verdict":"block"\', \'"verdict":"allow"\'), '
        "verdict = 'allow' WHERE seq = 1"
    )
    conn.close()
    assert main(["audit", "verify", "--url", f"sqlite:///{db}"]) == 1
    out = capsys.readouterr().out
    assert f"TAMPERED record 1 ({check_id}): altered" in out and "FAILED" in out


def test_cli_breakers_list_show_reset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    service = build_service(settings(tmp_path))
    for _ in range(3):
        asyncio.run(service.check(body(1)))
    url = f"sqlite:///{tmp_path / 'var' / 'state.sqlite3'}"
    assert main(["breakers", "list", "--url", url]) == 0
    assert "agent:acme/travel-agent" in capsys.readouterr().out
    assert main(["breakers", "show", "agent:acme/travel-agent", "--url", url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["reason"] == "repeated_tool_call"
    assert main(["breakers", "reset", "agent:acme/travel-agent", "--url", url]) == 0
    assert main(["breakers", "reset", "agent:acme/travel-agent", "--url", url]) == 1
    assert main(["breakers", "list", "--url", url]) == 0
    assert "no open breakers" in capsys.readouterr().out


def test_filters_match_the_records_columns(tmp_path: Path) -> None:
    _populate(tmp_path)
    store = open_audit_store(f"sqlite:///{tmp_path / 'var' / 'audit.sqlite3'}")
    assert [r.record()["agent"] for r in store.iter_records(AuditFilter(agent="a2"))] == ["a2"]
    store.close()


def test_stopping_the_server_leaves_every_record_in_the_database_file(tmp_path: Path) -> None:
    # A backup that copies only audit.sqlite3 (not its -wal file) must hold every acknowledged record.
    with TestClient(build_app(settings(tmp_path))) as client:  # runs the app's lifespan, as uvicorn does
        ids = [client.post("/v1/checks", json=body(i)).json()["check_id"] for i in range(3)]
    log = tmp_path / "var" / "audit.sqlite3"
    assert not (tmp_path / "var" / "audit.sqlite3-wal").exists()
    copy = tmp_path / "backup.sqlite3"
    copy.write_bytes(log.read_bytes())
    with sqlite3.connect(copy) as db:
        assert [row[0] for row in db.execute("SELECT check_id FROM audit_records ORDER BY seq")] == ids
    assert main(["audit", "verify", "--url", f"sqlite:///{copy}"]) == 0


def test_a_library_callers_lone_surrogate_is_recorded_repaired_not_refused(tmp_path: Path) -> None:
    """`CheckService.check` called in-process can receive strings JSON never carries (a lone surrogate): the
    record is written with U+FFFD in its place, and the audit store is not reported as failing."""
    service = build_service(settings(tmp_path))
    result = asyncio.run(service.check(body(1, tenant="acme\ud800", content="hello \udc00 world")))
    assert result["verdict"] == "allow"
    assert not [f for f in result["findings"] if f["category"] == "detector_error"], result["findings"]
    assert service.readiness()["ready"] is True
    store = open_audit_store(Settings.resolved_audit_url(settings(tmp_path)), create=False)
    records = [json.loads(r.body) for r in store.iter_records(AuditFilter())]
    assert [r["tenant"] for r in records] == ["acme\ufffd"]
    assert store.verify().ok
