"""Defects found by using the service as a gateway engineer would: each test sends the payload that broke."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_findings_resolve
from fastapi.testclient import TestClient

from guardrails.cli import EXIT_BAD_INPUT, EXIT_CONFIG, main
from guardrails.config import Settings
from guardrails.contract import ErrorResponse
from guardrails.pointer import resolve
from guardrails.serve import build_app

REPO = Path(__file__).resolve().parent.parent
WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
REQUEST = {"model": "m", "messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": [WEATHER_TOOL]}


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(build_app(Settings(policy_dir=REPO / "policies")), raise_server_exceptions=False)


def assert_error(resp: Any, status: int, type_: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    payload = resp.json()
    ErrorResponse.model_validate(payload)
    assert payload["error"]["type"] == type_, payload
    return payload["error"]


# --- tool calls without arguments ---------------------------------------------------------------------
def chat_call(function: dict[str, Any]) -> dict[str, Any]:
    message = {"role": "assistant", "content": None,
               "tool_calls": [{"id": "c1", "type": "function", "function": function}]}
    choice = {"index": 0, "message": message}
    return {"request": REQUEST, "response": {"object": "chat.completion", "choices": [choice]}}


def responses_call(item: dict[str, Any]) -> dict[str, Any]:
    tool = {"type": "function", "name": "get_weather", "parameters": WEATHER_TOOL["function"]["parameters"]}
    request = {"model": "m", "input": "Weather in Paris?", "tools": [tool]}
    return {"request": request, "response": {"object": "response", "output": [
        {"type": "function_call", "id": "fc_1", "call_id": "call_1", "status": "completed", **item}]}}


@pytest.mark.parametrize("body", [
    chat_call({"name": "get_weather"}),
    chat_call({"name": "get_weather", "arguments": None}),
    responses_call({"name": "get_weather"}),
    responses_call({"name": "get_weather", "arguments": None}),
], ids=["chat-absent", "chat-null", "responses-absent", "responses-null"])
def test_a_call_without_arguments_is_located_in_the_body(client: TestClient, body: dict[str, Any]) -> None:
    resp = client.post("/v1/checks", json=body)
    assert resp.status_code == 200, resp.text
    findings = resp.json()["findings"]
    schema = [f for f in findings if f["category"] == "tool_schema"]
    assert schema and "'city' is a required property" in schema[0]["message"]
    assert_findings_resolve(body, findings)
    assert "start" not in schema[0]["location"]  # no argument text to point into: the whole value


def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {"id": "c", "object": "chat.completion.chunk", "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}


@pytest.mark.parametrize("chunks", [
    [chunk({"tool_calls": [{"index": 0, "id": "t1", "type": "function", "function": {"name": "get_weather"}}]}),
     chunk({}, "tool_calls")],
    [chunk({"tool_calls": [{"index": 0, "id": "t1", "function": {"name": "get_weather", "arguments": ""}}]})],
    [chunk({"tool_calls": [{"index": 0, "id": "t1"}]}), chunk({}, "tool_calls")],
], ids=["name-only", "empty-fragments", "id-only"])
def test_a_streamed_call_without_arguments_is_located_in_the_body(client: TestClient,
                                                                  chunks: list[dict[str, Any]]) -> None:
    body = {"request": REQUEST, "response": chunks}
    resp = client.post("/v1/checks", json=body)
    assert resp.status_code == 200, resp.text
    findings = resp.json()["findings"]
    assert findings and resp.json()["verdict"] == "block"
    assert_findings_resolve(body, findings)
    for finding in findings:  # no argument text to point into: the call delta as a whole, never a 0:0 span
        if finding["category"] == "tool_schema":
            assert "start" not in finding["location"], finding
            assert isinstance(resolve(body, finding["location"]["pointer"]), dict), finding


# --- the HTTP edge --------------------------------------------------------------------------------------
def test_a_bearer_token_with_non_ascii_bytes_is_401_not_500() -> None:
    app = build_app(Settings(policy_dir=REPO / "policies", api_keys=("k1",)))
    client = TestClient(app, raise_server_exceptions=False)
    body = json.dumps({"request": REQUEST}).encode()
    for token in (b"Bearer k1\xc3\xa9", b"Bearer \xff"):
        resp = client.post("/v1/checks", content=body,
                           headers={"content-type": "application/json", "authorization": token})
        assert_error(resp, 401, "unauthorized")
        assert_error(client.get("/v1/breakers", headers={"authorization": token}), 401, "unauthorized")
    ok = client.post("/v1/checks", content=body, headers={"content-type": "application/json",
                                                         "authorization": "Bearer k1"})
    assert ok.status_code == 200


@pytest.fixture(scope="module")
def broken_policies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository's policies plus one that enables a detector that is not installed, and one that is
    not YAML: the default still loads, so the service starts and serves."""
    root = tmp_path_factory.mktemp("policies")
    default = root / "default"
    default.mkdir()
    (default / "config.yml").write_text((REPO / "policies" / "minimal" / "config.yml").read_text())
    (root / "needs-plugin").mkdir()
    (root / "needs-plugin" / "config.yml").write_text("detectors:\n  not_installed: {}\n")
    (root / "bad-yaml").mkdir()
    (root / "bad-yaml" / "config.yml").write_text("detectors: [\n")
    return root


@pytest.mark.parametrize("policy_id", ["needs-plugin", "bad-yaml"])
def test_a_policy_that_does_not_load_is_503_not_500(broken_policies: Path, policy_id: str) -> None:
    client = TestClient(build_app(Settings(policy_dir=broken_policies)), raise_server_exceptions=False)
    error = assert_error(client.post("/v1/checks", json={"request": REQUEST, "policy": policy_id}), 503,
                         "policy_unavailable")
    assert policy_id in error["message"]
    nemo = client.post("/v1/guardrail/checks", json={"messages": REQUEST["messages"],
                                                     "guardrails": {"config_id": policy_id}})
    assert_error(nemo, 503, "policy_unavailable")
    # The service keeps serving the policies that load.
    assert client.post("/v1/checks", json={"request": REQUEST}).status_code == 200


def test_an_inline_nemo_config_with_an_unknown_detector_is_422(client: TestClient) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}],
            "guardrails": {"config": {"detectors": {"not_installed": {}}}}}
    error = assert_error(client.post("/v1/guardrail/checks", json=body), 422, "invalid_body")
    assert "not_installed" in error["message"] and error["pointer"] == "/guardrails/config"


def test_openapi_documents_the_error_shape_the_service_returns(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    assert "HTTPValidationError" not in schemas  # FastAPI's default 422 body is never what we send
    for path, operations in doc["paths"].items():
        if path == "/readyz":  # its 503 is the readiness report, not an error
            continue
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, (path, method, status)
    checks = doc["paths"]["/v1/checks"]["post"]["responses"]
    assert {"503"} <= set(checks)
    assert "503" in doc["paths"]["/readyz"]["get"]["responses"]
    # And the admin routes' 422 really has that shape.
    assert_error(client.get("/v1/audit/records", params={"limit": "many"}), 422, "invalid_body")


def test_type_errors_name_json_types(client: TestClient) -> None:
    error = assert_error(client.post("/v1/checks", json={"request": REQUEST, "response": ["x"]}), 422,
                         "invalid_body")
    assert error["message"] == "a stream chunk must be an object, got a string" and error["pointer"] == "/response/0"


# --- guardrails check: exit codes as documented ------------------------------------------------------------
def write(tmp_path: Path, data: bytes) -> str:
    path = tmp_path / "body.json"
    path.write_bytes(data)
    return str(path)


def test_check_of_a_file_that_is_not_utf8_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write(tmp_path, b'{"request": {"messages": [{"role": "user", "content": "caf\xe9"}]}}')
    assert main(["check", path]) == EXIT_BAD_INPUT
    assert "UTF-8" in capsys.readouterr().err


def test_check_of_stdin_that_is_not_utf8_exits_3(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture) -> None:
    raw = io.TextIOWrapper(io.BytesIO(b'{"request": {"messages": [{"role": "user", "content": "\xff"}]}}'),
                           encoding="utf-8")
    monkeypatch.setattr("sys.stdin", raw)
    assert main(["check", "-"]) == EXIT_BAD_INPUT
    assert "UTF-8" in capsys.readouterr().err


def test_check_rejects_what_the_http_api_rejects(tmp_path: Path, client: TestClient) -> None:
    # NaN is read by both (Python's json writes it: tests/test_json_edges.py); `undefined` by neither.
    raw = b'{"request": {"messages": [{"role": "user", "content": "hi"}], "temperature": undefined}}'
    assert client.post("/v1/checks", content=raw, headers={"content-type": "application/json"}).status_code == 400
    assert main(["check", write(tmp_path, raw)]) == EXIT_BAD_INPUT


@pytest.mark.parametrize(("variable", "value", "named"), [
    ("GUARDRAILS_MAX_BODY_BYTES", "4MiB", "GUARDRAILS_MAX_BODY_BYTES"),
    ("GUARDRAILS_AUDIT_CONTENT", "everything", "GUARDRAILS_AUDIT_CONTENT"),
    ("GUARDRAILS_AUDIT_URL", "mysql://db/audit", "audit store URL"),
    ("GUARDRAILS_STATE_URL", "memcached://cache", "state store URL"),
])
def test_check_with_a_bad_setting_exits_4(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture, variable: str, value: str,
                                          named: str) -> None:
    monkeypatch.setenv(variable, value)
    body = write(tmp_path, json.dumps({"request": REQUEST}).encode())
    assert main(["check", body]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "configuration error" in err and named in err and value in err


def test_check_with_a_data_dir_that_cannot_be_created_exits_4(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("GUARDRAILS_DATA_DIR", str(blocker / "var"))
    assert main(["check", write(tmp_path, json.dumps({"request": REQUEST}).encode())]) == EXIT_CONFIG
    assert "configuration" in capsys.readouterr().err


def test_check_with_an_unknown_policy_exits_4(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture) -> None:
    body = write(tmp_path, json.dumps({"request": REQUEST}).encode())
    assert main(["check", body, "--policy", "no-such-policy"]) == EXIT_CONFIG
    assert "no-such-policy" in capsys.readouterr().err
    monkeypatch.setenv("GUARDRAILS_DEFAULT_POLICY", "also-missing")
    assert main(["check", body]) == EXIT_CONFIG


def test_serve_with_a_bad_setting_exits_4(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("GUARDRAILS_AUDIT_CONTENT", "everything")
    assert main(["serve"]) == EXIT_CONFIG  # fails before uvicorn starts
    assert "configuration" in capsys.readouterr().err
