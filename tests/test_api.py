"""POST /v1/checks over HTTP: the contract, the error shape, health and auth."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import Request, Response
from fastapi.testclient import TestClient

from guardrails.config import Settings
from guardrails.contract import CheckResponse, ErrorResponse
from guardrails.pointer import resolve
from guardrails.serve import build_app

REPO = Path(__file__).resolve().parent.parent
BODY = {
    "request": {
        "model": "m",
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
    },
    "response": {"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": None, "reasoning": "I will check.",
        "tool_calls": [{"id": "c1", "type": "function",
                        "function": {"name": "delete_files", "arguments": "{\"path\": \"/\"}"}}]}}]},
    "context": {"agent_id": "travel-agent", "session_id": "s-1", "tenant": "acme"},
}


@pytest.fixture(scope="module")
def client() -> TestClient:
    settings = Settings(policy_dir=REPO / "policies", max_body_bytes=64 * 1024)
    return TestClient(build_app(settings))


def assert_error(resp: httpx.Response, status: int, type_: str) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    payload = resp.json()
    ErrorResponse.model_validate(payload)
    assert payload["error"]["type"] == type_
    return payload["error"]


def test_check_returns_verdict_and_findings_that_resolve(client: TestClient) -> None:
    resp = client.post("/v1/checks", json=BODY)
    assert resp.status_code == 200, resp.text
    payload = resp.json()
    CheckResponse.model_validate(payload)
    assert payload["verdict"] == "block"
    assert payload["phase"] == "response" and payload["format"] == "openai.chat"
    assert payload["policy"]["id"] == "default" and len(payload["policy"]["version"]) == 12
    undeclared = [f for f in payload["findings"] if f["category"] == "tool_undeclared"]
    assert len(undeclared) == 1
    loc = undeclared[0]["location"]
    assert resolve(BODY, loc["pointer"])[loc["start"]:loc["end"]] == "delete_files"
    assert payload["signals"]["exchange"]["tool_calls"] == 1
    assert payload["timings_ms"]["total"] > 0


def test_input_phase_check_without_response(client: TestClient) -> None:
    resp = client.post("/v1/checks", json={"request": BODY["request"]})
    assert resp.status_code == 200
    assert resp.json()["phase"] == "request"


def test_invalid_json_is_400(client: TestClient) -> None:
    resp = client.post("/v1/checks", content=b'{"request": ', headers={"content-type": "application/json"})
    assert_error(resp, 400, "invalid_json")


def test_empty_body_is_400(client: TestClient) -> None:
    resp = client.post("/v1/checks", content=b"", headers={"content-type": "application/json"})
    assert_error(resp, 400, "invalid_json")


def test_oversized_body_is_413(client: TestClient) -> None:
    big = {"request": {"messages": [{"role": "user", "content": "x" * 70_000}]}}
    assert_error(client.post("/v1/checks", json=big), 413, "body_too_large")


def test_oversized_chunked_body_is_413(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"request": {"messages": [{"role": "user", "content": "'
        for _ in range(100):
            yield b"y" * 1000
        yield b'"}]}}'

    resp = client.post("/v1/checks", content=chunks(), headers={"content-type": "application/json"})
    assert_error(resp, 413, "body_too_large")


def test_wrong_media_type_is_415(client: TestClient) -> None:
    resp = client.post("/v1/checks", content=json.dumps(BODY), headers={"content-type": "text/plain"})
    assert_error(resp, 415, "unsupported_media_type")


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ([1, 2], ""),
        ({"response": {}}, "/request"),
        ({"request": "hello"}, "/request"),
        ({"request": BODY["request"], "response": "text"}, "/response"),
        ({"request": BODY["request"], "format": "cohere"}, "/format"),
        ({"request": BODY["request"], "context": {"agent_id": 7}}, "/context/agent_id"),
        ({"request": BODY["request"], "policy": "nope"}, "/policy"),
        ({"request": BODY["request"], "extra": 1}, "/extra"),
        ({"request": {"messages": [{"role": "user", "content": 5}]}}, "/request/messages/0/content"),
    ],
)
def test_unreadable_bodies_are_422_with_a_pointer(client: TestClient, body: object, pointer: str) -> None:
    expected_type = "unknown_policy" if pointer == "/policy" else "invalid_body"
    error = assert_error(client.post("/v1/checks", json=body), 422, expected_type)
    assert error["pointer"] == pointer


def test_body_of_no_known_format_is_422_and_says_why(client: TestClient) -> None:
    error = assert_error(client.post("/v1/checks", json={"request": {"nothing": "here"}}), 422, "unknown_format")
    assert "format" in error["message"] and error["pointer"] == "/request"


def test_truncated_response_bodies_never_500(client: TestClient) -> None:
    text = json.dumps(BODY)
    for cut in range(10, len(text), 37):
        resp = client.post("/v1/checks", content=text[:cut], headers={"content-type": "application/json"})
        assert resp.status_code == 400, (cut, resp.text)


def test_unknown_route_uses_the_error_shape(client: TestClient) -> None:
    assert_error(client.get("/v1/nothing"), 404, "not_found")
    assert_error(client.get("/v1/checks"), 405, "method_not_allowed")


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    for path in ("/healthz", "/readyz"):  # load balancers probe with HEAD
        probe = client.head(path)
        assert probe.status_code == 200 and probe.content == b""


def test_openapi_documents_the_contract_with_examples(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    assert {"CheckRequest", "CheckResponse", "ErrorResponse"} <= set(doc["components"]["schemas"])
    body = doc["paths"]["/v1/checks"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/CheckRequest"}
    assert len(body["examples"]) >= 1


def test_api_keys_are_enforced_when_configured() -> None:
    settings = Settings(policy_dir=REPO / "policies", api_keys=("s3cret",))
    client = TestClient(build_app(settings))
    assert_error(client.post("/v1/checks", json=BODY), 401, "unauthorized")
    ok = client.post("/v1/checks", json=BODY, headers={"authorization": "Bearer s3cret"})
    assert ok.status_code == 200


def test_added_middleware_sees_every_check_and_both_paths_answer_alike() -> None:
    """POST /v1/checks skips the framework's routing; an app that adds middleware gets the full stack back,
    so its middleware sees the checks, and the answer is the same either way."""
    settings = Settings(policy_dir=REPO / "policies", audit_url="none")
    lean, full = build_app(settings), build_app(settings)
    seen: list[str] = []

    @full.middleware("http")
    async def record_path(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        seen.append(request.url.path)
        return await call_next(request)

    answers = []
    for app in (lean, full):
        with TestClient(app) as client:
            resp = client.post("/v1/checks", json=BODY)
            answers.append((resp.status_code, resp.json()["verdict"], [f["category"] for f in resp.json()["findings"]]))
            assert_error(client.post("/v1/checks", content=b"{", headers={"content-type": "application/json"}),
                         400, "invalid_json")
    assert answers[0] == answers[1] and answers[0][1] == "block"
    assert seen == ["/v1/checks", "/v1/checks"]


def test_checks_are_served_under_a_root_path() -> None:
    app = build_app(Settings(policy_dir=REPO / "policies", audit_url="none"))
    client = TestClient(app, root_path="/guardrails")
    resp = client.post("/guardrails/v1/checks", json=BODY)
    assert resp.status_code == 200 and resp.json()["verdict"] == "block"


def test_an_unexpected_failure_is_a_500_in_the_error_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    app = build_app(Settings(policy_dir=REPO / "policies", audit_url="none"))

    async def broken(body: object) -> dict:
        raise RuntimeError("boom")

    monkeypatch.setattr(app.state.service, "check", broken)
    error = assert_error(TestClient(app, raise_server_exceptions=False).post("/v1/checks", json=BODY), 500,
                         "internal_error")
    assert "RuntimeError" in error["message"]
