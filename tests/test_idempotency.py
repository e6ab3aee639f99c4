"""Idempotent retries of a check (`Idempotency-Key`): a retry of a check the service answered, or is still running,
gets that answer, and the check is audited and counted against budgets once.

Over HTTP through the app in-process (httpx's ASGI transport), and `GuardrailsClient` against a transport that
drops the service's answer after the service processed the check, as a connection reset would.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi import FastAPI
from openai_payloads import tool_call_response
from test_litellm_hook import _load_hook_with_stand_ins

from guardrails.audit.observer import AuditObserver
from guardrails.client import GuardrailsClient, is_synthetic
from guardrails.config import Settings
from guardrails.errors import AuditUnavailable
from guardrails.idempotency import MAX_KEY_CHARS, IdempotencyKeyReused, IdempotencyStore
from guardrails.serve import build_app
from guardrails.service import CheckOutcome, CheckService

KEY = "idempotency-key"
REPLAYED = "idempotent-replayed"


def settings(tmp_path: Path, **overrides: Any) -> Settings:
    policy = tmp_path / "policies" / "default"
    policy.mkdir(parents=True, exist_ok=True)
    (policy / "config.yml").write_text(yaml.safe_dump({"detectors": {
        "tool_undeclared": {"action": "block"},
        "budget": {"windows": {"agent": {"requests_per_minute": 1000, "tool_calls_per_minute": 1000}}},
    }}))
    return Settings(policy_dir=tmp_path / "policies", data_dir=tmp_path / "var", **overrides)


def body(i: int = 0, *, tenant: str | None = "acme") -> dict[str, Any]:
    context = {"agent_id": "dup-agent", "session_id": "one"} | ({"tenant": tenant} if tenant else {})
    return {
        "request": {"model": "Qwen/Qwen3-8B", "messages": [{"role": "user", "content": "Weather in Paris?"}],
                    "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]},
        "response": tool_call_response("get_weather", {"city": "Paris", "i": i}, id=f"chatcmpl-{i}",
                                       usage={"prompt_tokens": 50, "completion_tokens": 20}),
        "context": context,
    }


def raw(i: int = 0, **options: Any) -> bytes:
    return json.dumps(body(i, **options)).encode()


def service_of(app: FastAPI) -> CheckService:
    return app.state.service  # type: ignore[no-any-return]


def audit_records(app: FastAPI) -> list[dict[str, Any]]:
    observer = next(o for o in service_of(app).observers if isinstance(o, AuditObserver))
    return [row.record() for row in observer.store.iter_records()]


async def budget_totals(http: httpx.AsyncClient) -> dict[str, float]:
    """The agent's budget windows after one more, different check (sent without a key)."""
    answer = await http.post("/v1/checks", content=raw(999))
    assert answer.status_code == 200
    return answer.json()["signals"]["budget"]["totals"]  # type: ignore[no-any-return]


def client_of(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://guardrails")


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())


class DropsAnswers(httpx.AsyncBaseTransport):
    """The service gets each request and answers it; the first `drops` answers are lost on the way back."""

    def __init__(self, app: FastAPI, drops: int) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.drops = drops
        self.keys: list[str | None] = []
        self.replayed: list[str | None] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        await response.aread()
        self.keys.append(request.headers.get(KEY))
        self.replayed.append(response.headers.get(REPLAYED))
        if self.drops:
            self.drops -= 1
            raise httpx.ReadError("connection reset after the service answered", request=request)
        return response


class Gate:
    """An observer that holds every check in it until released (a slow audit write, say); `fail_first` raises on
    the first check instead, once released (an audit store that refused it)."""

    def __init__(self, fail_first: bool = False) -> None:
        self.entered = 0
        self.fail_first = fail_first
        self.inside = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, outcome: CheckOutcome) -> None:
        self.entered += 1
        self.inside.set()
        await self.release.wait()
        if self.fail_first and self.entered == 1:
            raise AuditUnavailable("the audit record could not be written")


async def settle() -> None:
    """Let every ready task run until it blocks (no clock involved)."""
    for _ in range(100):
        await asyncio.sleep(0)


# --- the client ---------------------------------------------------------------------------------------------------

def test_a_retried_check_whose_answer_was_lost_is_audited_and_counted_once(tmp_path: Path) -> None:
    app = build_app(settings(tmp_path))
    transport = DropsAnswers(app, drops=2)

    async def test() -> None:
        client = GuardrailsClient("http://guardrails", timeout=30, retries=2, backoff_s=0, transport=transport)
        b = body()
        verdict = await client.check(b["request"], b["response"], context=b["context"])
        await client.aclose()
        assert not is_synthetic(verdict)
        (record,) = audit_records(app)  # three attempts, one check
        assert record["check_id"] == verdict.check_id
        assert len(transport.keys) == 3 and len(set(transport.keys)) == 1 and transport.keys[0]
        assert transport.replayed == [None, "true", "true"]
        async with client_of(app) as http:  # one request and one tool call for the retried check, not three
            totals = await budget_totals(http)
        assert totals == {"agent.requests_per_minute": 2.0, "agent.tool_calls_per_minute": 2.0}

    run(test)


def test_each_check_of_the_client_has_its_own_key(tmp_path: Path) -> None:
    app = build_app(settings(tmp_path))
    transport = DropsAnswers(app, drops=0)

    async def test() -> None:
        async with GuardrailsClient("http://guardrails", timeout=30, transport=transport) as client:
            b = body()
            first = await client.check(b["request"], b["response"], context=b["context"])
            second = await client.check(b["request"], b["response"], context=b["context"])  # the same step again
            own = await client.check_raw(raw(1), idempotency_key="gateway-retry-7")
        assert first.check_id != second.check_id and len(audit_records(app)) == 3
        assert len(set(transport.keys)) == 3 and transport.keys[2] == "gateway-retry-7"
        assert own.check_id == audit_records(app)[2]["check_id"]

    run(test)


def test_the_litellm_hook_sends_a_key_per_check(tmp_path: Path) -> None:
    hook = _load_hook_with_stand_ins()
    app = build_app(settings(tmp_path))
    transport = DropsAnswers(app, drops=0)

    async def test() -> None:
        guard = hook.InferenceGuardrails(api_base="http://guardrails", guardrail_name="g", transport=transport)
        first, second = await guard._verdict(body()), await guard._verdict(body())
        await guard.http.aclose()
        assert first and second and first["check_id"] != second["check_id"]
        assert all(transport.keys) and len(set(transport.keys)) == 2

    run(test)


# --- the service over HTTP ----------------------------------------------------------------------------------------

def test_a_retry_gets_the_stored_answer_marked_replayed(tmp_path: Path) -> None:
    app = build_app(settings(tmp_path))

    async def test() -> None:
        async with client_of(app) as http:
            first = await http.post("/v1/checks", content=raw(), headers={KEY: "step-1"})
            retry = await http.post("/v1/checks", content=raw(), headers={KEY: "step-1"})
            assert first.status_code == retry.status_code == 200
            assert REPLAYED not in first.headers and retry.headers[REPLAYED] == "true"
            assert retry.content == first.content  # the same answer, check_id and timings included
            assert len(audit_records(app)) == 1
            metrics = (await http.get("/metrics")).text
            assert "guardrails_idempotent_replays_total 1\n" in metrics
            assert "guardrails_idempotency_evictions_total 0\n" in metrics
            totals = await budget_totals(http)
        assert totals == {"agent.requests_per_minute": 2.0, "agent.tool_calls_per_minute": 2.0}

    run(test)


def test_a_retry_while_the_first_still_runs_waits_for_its_answer(tmp_path: Path) -> None:
    app = build_app(settings(tmp_path))
    gate = Gate()
    service_of(app).observers.append(gate)

    async def test() -> None:
        async with client_of(app) as http:
            first = asyncio.create_task(http.post("/v1/checks", content=raw(), headers={KEY: "step-1"}))
            await gate.inside.wait()
            retry = asyncio.create_task(http.post("/v1/checks", content=raw(), headers={KEY: "step-1"}))
            await settle()
            assert gate.entered == 1 and not retry.done()  # not checked a second time: waiting
            # The same key with another body while the first runs: refused at once, not made to wait.
            other = await http.post("/v1/checks", content=raw(1), headers={KEY: "step-1"})
            assert other.status_code == 422 and other.json()["error"]["type"] == "idempotency_key_reused"
            gate.release.set()
            answers = await asyncio.gather(first, retry)
        assert [a.status_code for a in answers] == [200, 200]
        assert answers[1].content == answers[0].content and answers[1].headers[REPLAYED] == "true"
        assert gate.entered == 1 and len(audit_records(app)) == 1

    run(test)


def test_a_failed_check_is_not_stored_and_a_waiting_retry_runs_it_again(tmp_path: Path) -> None:
    app = build_app(settings(tmp_path))
    gate = Gate(fail_first=True)
    service_of(app).observers.append(gate)

    async def test() -> None:
        async with client_of(app) as http:
            first = asyncio.create_task(http.post("/v1/checks", content=raw(), headers={KEY: "step-1"}))
            await gate.inside.wait()
            retry = asyncio.create_task(http.post("/v1/checks", content=raw(), headers={KEY: "step-1"}))
            await settle()
            gate.release.set()
            failed, answered = await asyncio.gather(first, retry)
            assert failed.status_code == 503 and failed.json()["error"]["type"] == "audit_unavailable"
            assert answered.status_code == 200 and REPLAYED not in answered.headers  # ran again, as its own check
            assert gate.entered == 2
            again = await http.post("/v1/checks", content=raw(), headers={KEY: "step-1"})  # now answered: stored
        assert again.headers[REPLAYED] == "true" and again.content == answered.content and gate.entered == 2

    run(test)


def test_a_refused_body_is_not_stored(tmp_path: Path) -> None:
    app = build_app(settings(tmp_path))

    async def test() -> None:
        async with client_of(app) as http:
            bad = b'{"request": {"messages": []}, "polcy": "default"}'
            for _ in range(2):
                answer = await http.post("/v1/checks", content=bad, headers={KEY: "step-1"})
                assert answer.status_code == 422 and answer.json()["error"]["type"] == "invalid_body"
                assert REPLAYED not in answer.headers
            assert len(service_of(app).idempotency) == 0

    run(test)


def test_the_same_key_with_another_body_is_refused(tmp_path: Path) -> None:
    app = build_app(settings(tmp_path))

    async def test() -> None:
        async with client_of(app) as http:
            assert (await http.post("/v1/checks", content=raw(), headers={KEY: "step-1"})).status_code == 200
            # Other bytes, the same JSON: the body's bytes are compared (a retry sends the same bytes).
            for other in (raw(1), raw() + b"\n"):
                answer = await http.post("/v1/checks", content=other, headers={KEY: "step-1"})
                assert answer.status_code == 422 and REPLAYED not in answer.headers
                error = answer.json()["error"]
                assert error["type"] == "idempotency_key_reused" and "step-1" in error["message"]
            assert len(audit_records(app)) == 1

    run(test)


def test_keys_are_scoped_by_tenant(tmp_path: Path) -> None:
    app = build_app(settings(tmp_path))

    async def test() -> None:
        async with client_of(app) as http:
            acme = await http.post("/v1/checks", content=raw(tenant="acme"), headers={KEY: "k"})
            globex = await http.post("/v1/checks", content=raw(tenant="globex"), headers={KEY: "k"})
            assert acme.status_code == globex.status_code == 200 and REPLAYED not in globex.headers
            assert acme.json()["check_id"] != globex.json()["check_id"]
            # Without a tenant: one global scope.
            assert (await http.post("/v1/checks", content=raw(tenant=None), headers={KEY: "k"})).status_code == 200
            clash = await http.post("/v1/checks", content=raw(1, tenant=None), headers={KEY: "k"})
            assert clash.status_code == 422 and clash.json()["error"]["type"] == "idempotency_key_reused"

    run(test)


def test_a_key_expires_after_the_ttl(tmp_path: Path) -> None:
    app = build_app(settings(tmp_path, idempotency_ttl_s=60))
    now = [1000.0]
    service_of(app).idempotency.clock = lambda: now[0]

    async def test() -> None:
        async with client_of(app) as http:
            first = await http.post("/v1/checks", content=raw(), headers={KEY: "step-1"})
            now[0] += 59.9
            replay = await http.post("/v1/checks", content=raw(), headers={KEY: "step-1"})
            now[0] += 0.2  # 60.1 s after the first answer
            later = await http.post("/v1/checks", content=raw(), headers={KEY: "step-1"})
        assert replay.headers[REPLAYED] == "true" and replay.content == first.content
        assert REPLAYED not in later.headers and later.json()["check_id"] != first.json()["check_id"]
        assert len(audit_records(app)) == 2

    run(test)


def test_checks_without_a_key_are_unchanged(tmp_path: Path) -> None:
    app = build_app(settings(tmp_path))

    async def test() -> None:
        async with client_of(app) as http:
            answers = [await http.post("/v1/checks", content=raw()) for _ in range(2)]
        assert all(a.status_code == 200 and REPLAYED not in a.headers for a in answers)
        assert answers[0].json()["check_id"] != answers[1].json()["check_id"]
        assert len(audit_records(app)) == 2 and len(service_of(app).idempotency) == 0  # nothing kept for them

    run(test)


@pytest.mark.parametrize(("headers", "message"), [
    ([(KEY, "")], "empty"),
    ([(KEY, '""')], "empty"),
    ([(KEY, "k" * (MAX_KEY_CHARS + 1))], "at most 255"),
    ([(KEY, "a"), (KEY, "b")], "one Idempotency-Key header"),
    ([(KEY, "clé")], "printable ASCII"),
    ([(KEY, "x2, x3")], "one key in one header"),  # two headers a proxy joined
    ([(KEY, '"')], "one key in one header"),
])
def test_a_bad_key_is_a_422_in_the_error_shape(tmp_path: Path, headers: list[tuple[str, str]], message: str) -> None:
    app = build_app(settings(tmp_path))

    async def test() -> None:
        async with client_of(app) as http:
            answer = await http.post("/v1/checks", content=raw(),
                                     headers=[(k.encode(), v.encode("utf-8")) for k, v in headers])
        assert answer.status_code == 422
        error = answer.json()["error"]
        assert error["type"] == "invalid_idempotency_key" and message in error["message"]
        assert audit_records(app) == []

    run(test)


def test_the_longest_key_and_the_quoted_form_are_keys(tmp_path: Path) -> None:
    app = build_app(settings(tmp_path))

    async def test() -> None:
        async with client_of(app) as http:
            long = "k" * MAX_KEY_CHARS
            assert (await http.post("/v1/checks", content=raw(), headers={KEY: long})).status_code == 200
            assert (await http.post("/v1/checks", content=raw(), headers={KEY: long})).headers[REPLAYED] == "true"
            # The draft's structured-field string and the bare token are one key.
            assert (await http.post("/v1/checks", content=raw(1), headers={KEY: "abc"})).status_code == 200
            quoted = await http.post("/v1/checks", content=raw(1), headers={KEY: '"abc"'})
        assert quoted.headers[REPLAYED] == "true"

    run(test)


def test_ttl_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().idempotency_ttl_s == 600
    monkeypatch.setenv("GUARDRAILS_IDEMPOTENCY_TTL_S", "30")
    assert Settings.from_env().idempotency_ttl_s == 30
    monkeypatch.setenv("GUARDRAILS_IDEMPOTENCY_TTL_S", "-1")
    with pytest.raises(ValueError, match="GUARDRAILS_IDEMPOTENCY_TTL_S must be at least 0"):
        Settings.from_env()
    app = build_app(settings(tmp_path, idempotency_ttl_s=0))  # 0: keys are ignored, every check runs

    async def test() -> None:
        async with client_of(app) as http:
            answers = [await http.post("/v1/checks", content=raw(), headers={KEY: "step-1"}) for _ in range(2)]
        assert answers[0].json()["check_id"] != answers[1].json()["check_id"]
        assert all(REPLAYED not in a.headers for a in answers) and len(audit_records(app)) == 2

    run(test)


# --- the store's bounds ---------------------------------------------------------------------------------------------

def test_the_store_keeps_at_most_its_entries_and_bytes() -> None:
    async def answer_of(text: bytes) -> bytes:
        return text

    async def test() -> None:
        store = IdempotencyStore(max_entries=2)
        for key in ("a", "b", "c"):
            assert await store.run(None, key, b"d", lambda k=key: answer_of(k.encode())) == (key.encode(), False)
        assert len(store) == 2 and store.evicted == 1
        assert await store.run(None, "a", b"d", lambda: answer_of(b"new")) == (b"new", False)  # evicted: runs again
        assert await store.run(None, "c", b"d", lambda: answer_of(b"new")) == (b"c", True)

        small = IdempotencyStore(max_bytes=3000)
        for key in ("a", "b", "c"):
            await small.run(None, key, b"d", lambda: answer_of(b"x" * 1000))
        assert len(small) == 2 and small.bytes <= 3000
        # An answer larger than the whole bound is not kept (its retry runs again), and evicts nothing.
        await small.run(None, "huge", b"d", lambda: answer_of(b"x" * 5000))
        assert len(small) == 2 and await small.run(None, "huge", b"d", lambda: answer_of(b"again")) == (b"again", False)
        with pytest.raises(IdempotencyKeyReused):
            await small.run(None, "c", b"other", lambda: answer_of(b""))

    run(test)
