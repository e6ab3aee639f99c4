"""guardrails.client: typed results from the real service, retries, 4xx errors, fail-open/closed, sync wrapper."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from guardrails.client import CheckRejected, GuardrailsClient, SyncGuardrailsClient, is_synthetic
from guardrails.config import Settings
from guardrails.contract import CheckResponse
from guardrails.serve import build_app

REPO = Path(__file__).resolve().parent.parent
REQUEST = {
    "model": "Qwen/Qwen3-8B",
    "messages": [{"role": "user", "content": "Weather in Paris?"}],
    "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
}
RESPONSE = {"object": "chat.completion", "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
    "role": "assistant", "content": None, "reasoning": "I will check.",
    "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "delete_files", "arguments": "{}"}}]}}]}


@pytest.fixture(scope="module")
def service_app(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("policies")
    (root / "default").mkdir()
    (root / "default" / "config.yml").write_text(
        'colang_version: "2.x"\nrails: {input: {flows: []}, output: {flows: []}}\n'
        "detectors:\n  tool_undeclared: {action: block}\n")
    return build_app(Settings(policy_dir=root, data_dir=root / "var", api_keys=("k1",)))


def test_typed_verdict_from_the_service(service_app: Any) -> None:
    async def run() -> tuple[CheckResponse, CheckResponse]:
        async with GuardrailsClient("http://svc", api_key="k1", transport=httpx.ASGITransport(app=service_app)) as c:
            return (await c.check(REQUEST, RESPONSE, context={"agent_id": "a1"}),
                    await c.check(REQUEST, format="openai.chat"))

    output, input_phase = asyncio.run(run())
    assert isinstance(output, CheckResponse) and output.verdict == "block" and output.phase == "response"
    assert output.findings[0].category == "tool_undeclared"
    assert output.findings[0].location.pointer == "/response/choices/0/message/tool_calls/0/function/name"
    assert not is_synthetic(output)
    assert input_phase.verdict == "allow" and input_phase.phase == "request"


def test_4xx_raises_without_retry(service_app: Any) -> None:
    async def run(key: str, body: dict[str, Any]) -> None:
        async with GuardrailsClient("http://svc", api_key=key, transport=httpx.ASGITransport(app=service_app),
                                    fail_mode="closed") as c:
            await c.check(body)

    with pytest.raises(CheckRejected) as unauthorized:
        asyncio.run(run("wrong", REQUEST))
    assert unauthorized.value.status == 401 and unauthorized.value.type == "unauthorized"
    with pytest.raises(CheckRejected) as unreadable:
        asyncio.run(run("k1", {"messages": "not a list"}))
    assert unreadable.value.status == 422 and unreadable.value.pointer is not None


class Scripted(httpx.AsyncBaseTransport):
    """Answers with the scripted statuses (or raises the scripted errors), then 200 with `answer`."""

    def __init__(self, script: list[int | Exception], answer: dict[str, Any] | None = None) -> None:
        self.script = list(script)
        self.answer = answer
        self.calls = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        step = self.script.pop(0) if self.script else 200
        if isinstance(step, Exception):
            raise step
        if step == 200:
            return httpx.Response(200, json=self.answer)
        return httpx.Response(step, json={"error": {"type": "x", "message": "down"}})


ALLOW = CheckResponse.model_json_schema()["example"] | {"verdict": "allow", "findings": []}


def checked(transport: Scripted, fail_mode: str = "open", retries: int = 2) -> CheckResponse:
    async def run() -> CheckResponse:
        client = GuardrailsClient("http://svc", transport=transport, retries=retries, backoff_s=0.001,
                                  fail_mode=fail_mode)  # type: ignore[arg-type]
        try:
            return await client.check(REQUEST)
        finally:
            await client.aclose()

    return asyncio.run(run())


def test_retries_5xx_and_connect_errors_with_backoff() -> None:
    transport = Scripted([503, httpx.ConnectError("refused")], ALLOW)
    result = checked(transport)
    assert transport.calls == 3 and result.verdict == "allow" and not is_synthetic(result)


def test_read_timeout_is_not_retried() -> None:
    transport = Scripted([httpx.ReadTimeout("slow")], ALLOW)
    result = checked(transport, fail_mode="closed")
    assert transport.calls == 1 and result.verdict == "block" and is_synthetic(result)


def test_fail_open_returns_a_marked_allow() -> None:
    transport = Scripted([500, 502, 503])
    result = checked(transport, fail_mode="open")
    assert transport.calls == 3
    assert result.verdict == "allow" and is_synthetic(result)
    assert result.signals["client"]["fail_mode"] == "open"
    assert [(f.category, f.action, f.detector) for f in result.findings] == [
        ("detector_error", "allow", "guardrails_client")]


def test_fail_closed_returns_a_detector_error_block() -> None:
    result = checked(Scripted([httpx.ConnectError("refused")] * 5), fail_mode="closed", retries=1)
    assert result.verdict == "block" and is_synthetic(result)
    assert result.findings[0].category == "detector_error" and "refused" in result.findings[0].message


def test_unreachable_port_fails_as_configured() -> None:
    async def run() -> CheckResponse:
        async with GuardrailsClient("http://127.0.0.1:9", retries=1, backoff_s=0.001, fail_mode="closed") as c:
            return await c.check(REQUEST, RESPONSE)

    result = asyncio.run(run())
    assert result.verdict == "block" and result.phase == "response" and is_synthetic(result)


def test_invalid_fail_mode_is_refused() -> None:
    with pytest.raises(ValueError):
        GuardrailsClient(fail_mode="maybe")  # type: ignore[arg-type]


def test_sync_wrapper_runs_the_async_client(service_app: Any) -> None:
    with SyncGuardrailsClient("http://svc", api_key="k1", transport=httpx.ASGITransport(app=service_app)) as client:
        first = client.check(REQUEST, RESPONSE)
        second = client.check(REQUEST, RESPONSE)

        async def inside_a_running_loop() -> CheckResponse:
            return client.check(REQUEST)  # a blocking call from async code still works (own loop thread)

        third = asyncio.run(inside_a_running_loop())
    assert first.verdict == second.verdict == "block" and first.check_id != second.check_id
    assert third.phase == "request"
