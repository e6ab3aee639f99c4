"""The budget detector: windows per scope, cost, request-phase checks, and the circuit breakers.

Checks run through a real CheckService (adapter -> engine -> observers) with a test clock; the last
test runs two replicas against one Redis (GUARDRAILS_TEST_REDIS_URL).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from openai_payloads import tool_call_response

from detectors.budget import BudgetDetector, call_fingerprint, scope_keys
from guardrails.detector import DetectorRegistry, Services
from guardrails.exchange import CallerContext
from guardrails.policy import PolicyError, PolicyStore
from guardrails.service import CheckService
from guardrails.state import StateStore, open_state_store
from guardrails.state.observer import StreakObserver

REDIS_URL = os.environ.get("GUARDRAILS_TEST_REDIS_URL")
T0 = 1_767_225_600.0
MODEL = "Qwen/Qwen3-8B"


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def service(
    tmp_path: Path,
    budget: dict[str, Any],
    state: StateStore,
    clock: Clock,
    extra_detectors: dict[str, Any] | None = None,
) -> CheckService:
    policy = tmp_path / "policies" / "default"
    policy.mkdir(parents=True, exist_ok=True)
    (policy / "config.yml").write_text(
        yaml.safe_dump({"detectors": {**(extra_detectors or {}), "budget": budget}})
    )
    svc = CheckService(
        PolicyStore(tmp_path / "policies"),
        DetectorRegistry.from_entry_points(),
        Services(state=state, extra={"clock": clock}),
    )
    svc.observers.append(StreakObserver(state))
    return svc


def body(
    *,
    tool: str = "search",
    args: dict[str, Any] | None = None,
    prompt: int = 1000,
    completion: int = 200,
    agent: str | None = "runaway",
    session: str = "s-1",
    response: bool = True,
) -> dict[str, Any]:
    request = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "find flights"}],
        "tools": [{"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}}],
    }
    context = {"tenant": "acme", "session_id": session} | ({"agent_id": agent} if agent else {})
    if not response:
        return {"request": request, "context": context}
    return {
        "request": request,
        "context": context,
        "response": tool_call_response(
            tool, args if args is not None else {"q": "flights"}, id="chatcmpl-1", model=MODEL,
            usage={
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
                "completion_tokens_details": {"reasoning_tokens": completion // 2},
            },
        ),
    }


def check(svc: CheckService, payload: dict[str, Any]) -> dict[str, Any]:
    return asyncio.run(svc.check(payload))


def budget_findings(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [f for f in result["findings"] if f["category"] == "budget"]


@pytest.fixture
def state(tmp_path: Path) -> StateStore:
    store = open_state_store(f"sqlite:///{tmp_path / 'state.sqlite3'}")
    yield store
    store.close()


def test_token_budget_blocks_once_spent_and_recovers_when_the_window_slides(
    tmp_path: Path, state: StateStore
) -> None:
    clock = Clock()
    svc = service(tmp_path, {"windows": {"agent": {"tokens_per_minute": 3000}}}, state, clock)
    assert check(svc, body(args={"q": "1"}))["verdict"] == "allow"
    clock.now += 10
    second = check(svc, body(args={"q": "2"}))
    assert second["verdict"] == "allow"
    assert second["signals"]["budget"]["totals"] == {"agent.tokens_per_minute": 2400}
    clock.now += 10
    third = check(svc, body(args={"q": "3"}))
    assert third["verdict"] == "block"
    (finding,) = budget_findings(third)
    assert finding["evidence"]["used"] == 3600 and finding["evidence"]["key"] == "agent:acme/runaway"
    assert "tokens_per_minute=3000 exceeded" in finding["message"] and finding["severity"] == "high"
    clock.now += 5
    before_call = check(svc, body(response=False))  # the next call is refused before it is made
    assert before_call["verdict"] == "block" and before_call["phase"] == "request"
    clock.now += 60
    assert check(svc, body(response=False))["verdict"] == "allow"


def test_scopes_are_separate_and_a_check_without_ids_is_skipped(tmp_path: Path, state: StateStore) -> None:
    svc = service(
        tmp_path,
        {"windows": {"session": {"requests_per_hour": 1}, "tenant": {"requests_per_hour": 3}}},
        state,
        Clock(),
    )
    assert check(svc, body(session="a"))["verdict"] == "allow"
    assert check(svc, body(session="b"))["verdict"] == "allow"
    assert check(svc, body(session="c"))["verdict"] == "allow"
    fourth = check(svc, body(session="d"))  # a fresh session, but the tenant has spent its 3 requests
    assert [f["evidence"]["scope"] for f in budget_findings(fourth)] == ["tenant"]
    again = check(svc, body(session="a"))
    assert sorted(f["evidence"]["scope"] for f in budget_findings(again)) == ["session", "tenant"]
    anonymous = {"request": body()["request"], "response": body()["response"]}
    result = check(svc, anonymous)
    assert result["verdict"] == "allow" and "skipped" in result["signals"]["budget"]


def test_cost_uses_the_price_table_and_warns_near_the_limit(tmp_path: Path, state: StateStore) -> None:
    prices = {MODEL: {"input_per_mtok": 0.1, "output_per_mtok": 0.4}}
    svc = service(
        tmp_path,
        {"windows": {"agent": {"cost_per_day_usd": 0.001}}, "prices": prices, "warn_ratio": 0.5},
        state,
        Clock(),
    )
    first = check(svc, body(prompt=2000, completion=500))  # 2000 * 0.1e-6 + 500 * 0.4e-6 = 0.0004 USD
    assert first["signals"]["budget"]["spent"]["cost_usd"] == pytest.approx(0.0004)
    assert first["verdict"] == "allow" and budget_findings(first) == []
    second = check(svc, body(prompt=2000, completion=500))
    assert second["verdict"] == "warn"
    assert (
        budget_findings(second)[0]["action"] == "warn"
        and "nearly spent" in budget_findings(second)[0]["message"]
    )
    third = check(svc, body(prompt=2000, completion=500))
    assert third["verdict"] == "block" and budget_findings(third)[0]["score"] == pytest.approx(1.2)


def test_tool_call_budget_counts_only_the_calls_of_the_response(tmp_path: Path, state: StateStore) -> None:
    svc = service(tmp_path, {"windows": {"agent": {"tool_calls_per_minute": 2}}}, state, Clock())
    assert check(svc, body(args={"q": "a"}))["signals"]["budget"]["spent"]["tool_calls"] == 1
    assert check(svc, body(args={"q": "b"}))["verdict"] == "allow"
    assert check(svc, body(args={"q": "c"}))["verdict"] == "block"


def test_repeated_identical_calls_open_the_breaker_until_cooldown(tmp_path: Path, state: StateStore) -> None:
    clock = Clock()
    settings = {"breaker": {"cooldown_s": 120, "repeated_call": {"max_repeats": 3, "window_s": 600}}}
    svc = service(tmp_path, settings, state, clock)
    same = {"q": "flights", "page": 1}
    assert check(svc, body(args=same))["verdict"] == "allow"
    assert (
        check(svc, body(args={"page": 1, "q": "flights"}))["verdict"] == "allow"
    )  # key order is not a new call
    clock.now += 1
    tripped = check(svc, body(args=same))
    assert tripped["verdict"] == "block"
    (finding,) = budget_findings(tripped)
    assert finding["severity"] == "critical" and "repeated tool call" in finding["message"]
    assert finding["location"] == {
        "pointer": "/response/choices/0/message/tool_calls/0/function/name",
        "start": 0,
        "end": 6,
    }
    assert finding["evidence"]["breaker"]["details"]["repeats"] == 3
    clock.now += 30
    blocked = check(svc, body(args={"q": "something else"}))  # any check of that agent while open
    assert blocked["verdict"] == "block" and "circuit breaker open" in budget_findings(blocked)[0]["message"]
    assert check(svc, body(agent="other-agent", args=same))["verdict"] == "allow"
    clock.now += 120  # cooldown over: half-open; a clean check closes the breaker
    probe = check(svc, body(args={"q": "new plan"}))
    assert probe["verdict"] == "allow" and probe["signals"]["budget"]["breakers"] == {
        "agent:acme/runaway": "half_open"
    }
    assert state.breaker("agent:acme/runaway") is None


def test_half_open_probe_that_repeats_reopens(tmp_path: Path, state: StateStore) -> None:
    clock = Clock()
    svc = service(
        tmp_path,
        {"breaker": {"cooldown_s": 60, "repeated_call": {"max_repeats": 2, "window_s": 600}}},
        state,
        clock,
    )
    check(svc, body())
    assert check(svc, body())["verdict"] == "block"
    clock.now += 61
    assert check(svc, body())["verdict"] == "block"  # the same call again: back to open
    assert state.breaker("agent:acme/runaway").trips == 2  # type: ignore[union-attr]


def test_token_rate_far_above_the_agents_baseline_opens_the_breaker(
    tmp_path: Path, state: StateStore
) -> None:
    clock = Clock()
    settings = {
        "breaker": {
            "cooldown_s": 300,
            "anomaly": {"z": 4, "alpha": 0.2, "min_samples": 5, "min_tokens": 2000},
        }
    }
    svc = service(tmp_path, settings, state, clock)
    for minute in range(8):  # a steady agent: about 1,200 tokens a minute
        clock.now = T0 + 60 * minute + 5
        result = check(svc, body(args={"q": str(minute)}, prompt=1000 + 20 * (minute % 3)))
        assert result["verdict"] == "allow", result["findings"]
    clock.now = T0 + 60 * 8 + 5
    verdicts = [check(svc, body(args={"q": f"burst {i}"}, prompt=2000))["verdict"] for i in range(3)]
    # 2.2k tokens in a minute is within the noise floor (std >= 25% of the mean); 4.4k is not.
    assert verdicts == ["allow", "block", "block"]
    breaker = state.breaker("agent:acme/runaway")
    assert breaker is not None and breaker.reason == "token_rate_anomaly" and breaker.details["z"] >= 4


def test_block_streak_opens_the_breaker_and_a_clean_check_ends_it(tmp_path: Path, state: StateStore) -> None:
    clock = Clock()
    svc = service(
        tmp_path,
        {"windows": {"agent": {"block_streak": 3}}, "breaker": {"cooldown_s": 60}},
        state,
        clock,
        {"tool_undeclared": {"action": "block"}},
    )
    forbidden = body(tool="delete_everything")
    for _ in range(2):
        assert check(svc, forbidden)["verdict"] == "block"
    assert check(svc, body())["verdict"] == "allow"  # the streak ends
    for _ in range(3):
        check(svc, forbidden)
    tripped = check(svc, body())  # a clean check after 3 blocked ones: the agent is cut off anyway
    assert tripped["verdict"] == "block" and "block streak" in budget_findings(tripped)[0]["message"]
    clock.now += 61
    assert check(svc, body())["verdict"] == "allow"  # streak reset at the trip; probe closes the breaker


def test_invalid_settings_are_policy_errors(tmp_path: Path, state: StateStore) -> None:
    for bad in (
        {"windows": {"agent": {"tokens_per_fortnight": 1}}},
        {"windows": {"team": {}}},
        {"breaker": {"cooldown": 3}},
        {"prices": {MODEL: {"input_per_mtok": -1}}},
    ):
        svc = service(tmp_path, bad, state, Clock())
        with pytest.raises(PolicyError, match="budget"):
            check(svc, body())


def test_without_a_state_store_the_detector_reports_an_error(tmp_path: Path) -> None:
    policy = tmp_path / "policies" / "default"
    policy.mkdir(parents=True)
    (policy / "config.yml").write_text("detectors:\n  budget: {windows: {agent: {requests_per_minute: 1}}}\n")
    svc = CheckService(PolicyStore(tmp_path / "policies"), DetectorRegistry.from_entry_points(), Services())
    (finding,) = check(svc, body())["findings"]
    assert finding["category"] == "detector_error" and "state store" in finding["message"]


def test_scope_keys_and_fingerprints() -> None:
    assert scope_keys(CallerContext(agent_id="a/b", tenant="t", session_id="s")) == {
        "tenant": "tenant:t",
        "agent": "agent:t/a%2Fb",
        "session": "session:t/a%2Fb/s",
    }
    assert scope_keys(CallerContext()) == {}
    assert call_fingerprint("f", {"a": 1, "b": 2}, "") == call_fingerprint("f", {"b": 2, "a": 1}, "")
    assert call_fingerprint("f", {"a": 1}, "") != call_fingerprint("g", {"a": 1}, "")
    assert BudgetDetector({"windows": {"agent": {"cost_per_hour_usd": 1}}}).limits[0].window_s == 3600


def test_a_runaway_agent_is_cut_off_across_two_replicas_sharing_redis(tmp_path: Path) -> None:
    if not REDIS_URL:
        pytest.skip("needs GUARDRAILS_TEST_REDIS_URL (e.g. redis://127.0.0.1:6379/0)")
    url = f"{REDIS_URL}{'&' if '?' in REDIS_URL else '?'}prefix=gr-budget-{uuid.uuid4().hex[:10]}:"
    stores = [open_state_store(url), open_state_store(url)]
    clock = Clock()
    settings = {
        "windows": {"agent": {"tokens_per_minute": 10_000}},
        "breaker": {"cooldown_s": 300, "repeated_call": {"max_repeats": 4, "window_s": 600}},
    }
    replicas = [service(tmp_path / f"r{i}", settings, s, clock) for i, s in enumerate(stores)]
    try:
        # Alternating replicas, 1,200 tokens a step: the shared budget runs out at step 9, not at step 17.
        verdicts = [check(replicas[i % 2], body(args={"q": str(i)}))["verdict"] for i in range(9)]
        assert verdicts == ["allow"] * 8 + ["block"]
        clock.now += 120  # a fresh minute; now the same call over and over, still alternating
        loop = [check(replicas[i % 2], body(args={"q": "again"})) for i in range(5)]
        assert [r["verdict"] for r in loop] == ["allow", "allow", "allow", "block", "block"]
        assert (
            "opened" in budget_findings(loop[3])[0]["message"]
            and "open for" in budget_findings(loop[4])[0]["message"]
        )
        assert [b.key for b in stores[0].breakers()] == ["agent:acme/runaway"]
        assert stores[1].reset("agent:acme/runaway")
        assert check(replicas[0], body(args={"q": "new"}))["verdict"] == "allow"
    finally:
        stores[0].purge()  # type: ignore[attr-defined]
        for s in stores:
            s.close()
