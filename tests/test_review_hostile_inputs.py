"""Hostile-input review of the running service: each test sends the body that broke it (a 500, a leak into the
audit log, a pointer into a body the caller never sent, a tiny body that expands without bound)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_findings_resolve
from fastapi.testclient import TestClient

from guardrails.config import Settings
from guardrails.contract import ErrorResponse
from guardrails.pointer import resolve
from guardrails.serve import build_app

REPO = Path(__file__).resolve().parent.parent
KEY = "AKIAZ7QW3ERT5YUI9OPL"
EMAIL = "victim.person@example.org"
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    settings = Settings(policy_dir=REPO / "policies", data_dir=tmp_path_factory.mktemp("hostile"),
                        audit_content="redacted")
    return TestClient(build_app(settings), raise_server_exceptions=False)


def assert_error(resp: Any, status: int, pointer: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    ErrorResponse.model_validate(resp.json())
    error: dict[str, Any] = resp.json()["error"]
    if pointer is not None:
        assert error.get("pointer") == pointer, error
    return error


def chat_answer(content: str) -> dict[str, Any]:
    return {"request": {"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": [TOOL]},
            "response": {"object": "chat.completion", "choices": [{"index": 0, "finish_reason": "stop",
                                                                   "message": {"role": "assistant",
                                                                               "content": content}}]}}


# --- tool-call markup whose arguments nest deeper than the JSON decoder recurses -----------------------------
@pytest.mark.parametrize("content", [
    '{"name": "f", "arguments": ' + "[" * 5000,  # bare call object (llama3_json)
    '{"name": "f", "x": 1, "arguments": ' + "[" * 5000 + "]" * 5000 + "}",  # the strict reader's path
    '[TOOL_CALLS][{"name": "f", "arguments": ' + json.dumps("[" * 5000) + "}]",  # string arguments decoded
])
def test_deeply_nested_leaked_arguments_are_a_verdict_not_a_500(client: TestClient, content: str) -> None:
    body = chat_answer(content)
    resp = client.post("/v1/checks", json=body)
    assert resp.status_code == 200, resp.text
    assert_findings_resolve(body, resp.json()["findings"])


def test_a_deeply_nested_leaked_call_in_markup_is_still_judged(client: TestClient) -> None:
    body = chat_answer('<tool_call>{"name": "f", "arguments": ' + "[" * 5000 + "}</tool_call>")
    resp = client.post("/v1/checks", json=body)
    assert resp.status_code == 200, resp.text
    assert "tool_call_leak" in {f["detector"] for f in resp.json()["findings"]}


# --- redacted audit content: arguments carried as an object ---------------------------------------------------
def audited_content(client: TestClient, check_id: str) -> str:
    records = client.get("/v1/audit/records", params={"limit": 1000}).json()["records"]
    record = next(r for r in records if r["check_id"] == check_id)
    return json.dumps(record["content"], ensure_ascii=False)


@pytest.mark.parametrize("body", [
    {"request": {"model": "c", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}],
                 "tools": [{"name": "send", "input_schema": {"type": "object"}}]},
     "response": {"type": "message", "role": "assistant", "model": "c", "stop_reason": "tool_use", "content": [
         {"type": "tool_use", "id": "toolu_1", "name": "send", "input": {"body": f"key {KEY} mail {EMAIL}"}}]}},
    {"request": {"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
                 "tools": [{"functionDeclarations": [{"name": "send"}]}]},
     "response": {"candidates": [{"finishReason": "STOP", "content": {"role": "model", "parts": [
         {"functionCall": {"name": "send", "args": {"b": f"key {KEY} mail {EMAIL}"}}}]}}]}},
], ids=["anthropic_tool_use", "gemini_function_call"])
def test_redacted_audit_content_hides_secrets_in_object_arguments(client: TestClient, body: dict[str, Any]) -> None:
    resp = client.post("/v1/checks", json=body)
    assert resp.status_code == 200, resp.text
    assert {"secret", "pii"} <= {f["detector"] for f in resp.json()["findings"]}
    content = audited_content(client, resp.json()["check_id"])
    assert KEY not in content and EMAIL not in content, content
    assert "[secret]" in content and "[pii]" in content, content


# --- NeMo endpoint: inline configs ----------------------------------------------------------------------------
def nemo(config: Any, **extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], "guardrails": {"config": config},
            **extra}


def test_inline_yaml_with_aliases_is_refused(client: TestClient) -> None:
    # Nine levels of nine aliases each is ~300 bytes and 387 million nodes once serialized for the version (the
    # service then stalls, then runs out of memory); four levels show the refusal without that risk.
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"] + [
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 4)]
    error = assert_error(client.post("/v1/guardrail/checks", json=nemo("\n".join(levels))), 422,
                         "/guardrails/config")
    assert "alias" in error["message"]
    # A config that only reuses a value through an alias is refused the same way, before anything expands it.
    reuse = "detectors:\n  content: {terms: &t [banned]}\n  secret: {disabled_rules: *t}\n"
    assert "alias" in assert_error(client.post("/v1/guardrail/checks", json=nemo(reuse)), 422)["message"]


@pytest.mark.parametrize("config", [
    "detectors: " + "[" * 3000 + "]" * 3000,  # YAML deeper than the parser recurses
    {"detectors": {"content": json.loads('{"a": ' * 900 + "1" + "}" * 900)}},  # JSON, deeper than the serializer
], ids=["yaml", "json"])
def test_inline_config_nested_too_deeply_is_a_422(client: TestClient, config: Any) -> None:
    assert_error(client.post("/v1/guardrail/checks", json=nemo(config)), 422, "/guardrails/config")


# --- NeMo endpoint: pointers name the body the caller sent ----------------------------------------------------
def test_nemo_errors_point_into_the_nemo_body(client: TestClient) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": 5}]}
    error = assert_error(client.post("/v1/guardrail/checks", json=body), 422, "/messages/0/content")
    resolve(body, error["pointer"])


def test_nemo_findings_on_the_whole_response_point_at_its_message(client: TestClient) -> None:
    body = {"model": "m", "tool_choice": "required", "tools": [TOOL],
            "messages": [{"role": "user", "content": "weather?"}, {"role": "assistant", "content": "Sunny."}]}
    resp = client.post("/v1/guardrail/checks", json=body)
    assert resp.status_code == 200, resp.text
    findings = resp.json()["guardrails_data"]["findings"]
    assert [f["location"]["pointer"] for f in findings if f["detector"] == "tool_schema"] == ["/messages/1"]
    assert_findings_resolve(body, findings)


# --- admin routes: numbers the stores cannot hold -------------------------------------------------------------
@pytest.mark.parametrize("cursor", ["99999999999999999999999", str(2**63)])
def test_an_audit_cursor_past_64_bits_is_a_422(client: TestClient, cursor: str) -> None:
    assert_error(client.get("/v1/audit/records", params={"cursor": cursor}), 422)


@pytest.mark.parametrize("seq", ["99999999999999999999999", "²"])
def test_an_anchor_sequence_that_is_no_64_bit_integer_is_a_422(client: TestClient, seq: str) -> None:
    assert_error(client.get("/v1/audit/verify", params={"anchor": f"{seq}:{'a' * 64}"}), 422)


def test_an_integer_too_long_to_convert_in_leaked_markup_is_not_a_500() -> None:
    from fastapi.testclient import TestClient

    from guardrails.config import Settings
    from guardrails.serve import build_app

    content = '{"name": "f", "arguments": {"a": ' + "1" * 5000 + "}} and <tool_call>{\"name\": \"g\", " \
              '"arguments": {"b": ' + "2" * 5000 + "}}</tool_call>"
    body = {"request": {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
            "response": {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}}
    import tempfile
    from pathlib import Path

    app = build_app(Settings(policy_dir=Path(__file__).resolve().parent.parent / "policies",
                             data_dir=Path(tempfile.mkdtemp())))
    answer = TestClient(app, raise_server_exceptions=False).post("/v1/checks", json=body)
    assert answer.status_code == 200, answer.text
