"""`low_confidence`: findings that point into the body, relative thresholds, pulling from a stub vLLM."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from test_logprobs_align import two_calls_body
from vllm_stub import VLLMStub

from detectors.low_confidence import LowConfidenceDetector
from guardrails.adapters import read_exchange
from guardrails.detector import DetectorRegistry, ScanContext, Services
from guardrails.findings import Action, Category, Finding, Severity
from guardrails.model_stats import InMemoryModelStats, ModelStats, Moments
from guardrails.pointer import resolve


@pytest.fixture(scope="module")
def stub() -> Iterator[VLLMStub]:
    with VLLMStub(unsure=("Paris",)) as server:
        yield server


def run(det: LowConfidenceDetector, body: dict[str, Any], raw_output: str | None = None) -> tuple[list[Finding], dict]:
    ex = read_exchange(body["request"], body["response"], raw_output=raw_output)
    ctx = ScanContext(segments=[s for s in ex.segments if det.default_scope.matches(s)], signals={})
    return asyncio.run(det.scan(ex, ctx)), ctx.signals


def detector(settings: dict[str, Any] | None = None, **extra: Any) -> LowConfidenceDetector:
    return LowConfidenceDetector(settings or {}, Services(extra={"model_stats": InMemoryModelStats(), **extra}))


def unsure_paris_body() -> dict[str, Any]:
    body = two_calls_body()
    content = body["response"]["choices"][0]["logprobs"]["content"]
    assert content[42]["token"] == "Paris"
    content[42]["logprob"] = -4.0
    return body


def test_low_confidence_argument_finding_points_at_the_value() -> None:
    body = unsure_paris_body()
    findings, signals = run(detector(), body)
    (finding,) = findings
    assert finding.category is Category.LOW_CONFIDENCE
    assert resolve(body, finding.pointer)[finding.start:finding.end] == "Paris"
    assert finding.pointer == "/response/choices/0/message/tool_calls/0/function/arguments"
    assert finding.evidence["tool"] == "get_weather" and finding.evidence["path"] == ["city"]
    assert finding.action is None and finding.severity is Severity.MEDIUM  # the policy's action (warn) applies
    span = finding.evidence["spans"][0]
    assert resolve(body, span["pointer"])[span["start"]:span["end"]] == "Paris"
    summary = signals["low_confidence"]
    assert summary["source"] == "response" and summary["model"] == "Qwen/Qwen3-8B"
    # Every segment and tool name, but only the low argument ("unit" was confident): calls can be huge.
    # An argument is named by its kind only: its key is model-written text (the pointer locates it).
    assert sorted(u["unit"] for u in summary["units"]) == ["argument", "reasoning", "tool_call", "tool_call",
                                                           "tool_name", "tool_name"]
    assert summary["arguments"] == 3
    assert len(json.dumps(summary)) < 2500  # it goes into every check response


def test_high_risk_tool_argument_blocks() -> None:
    (finding,) = run(detector({"high_risk_tools": ["get_weather"]}), unsure_paris_body())[0]
    assert finding.action is Action.BLOCK and finding.severity is Severity.HIGH


def test_confident_response_gives_no_finding() -> None:
    findings, signals = run(detector(), two_calls_body())
    assert findings == []
    assert signals["low_confidence"]["thresholds"]["relative"] is False


def test_no_logprobs_is_no_finding_not_a_low_score() -> None:
    body = two_calls_body()
    body["response"]["choices"][0]["logprobs"] = None  # what include_reasoning=false returns
    findings, signals = run(detector(), body)
    assert findings == []
    assert signals["low_confidence"]["source"] == "none"


def test_thresholds_follow_the_models_own_distribution() -> None:
    body = unsure_paris_body()
    store = InMemoryModelStats()
    # A model whose tokens typically sit at -3 +- 1.5: "Paris" at -4 is ordinary for it.
    store.update("Qwen/Qwen3-8B", ModelStats(Moments(10_000, -3.0, 1.5**2 * 9_999), Moments(100, -2.5, 0.5**2 * 99)))
    det = LowConfidenceDetector({}, Services(extra={"model_stats": store}))
    findings, signals = run(det, body)
    assert findings == []
    thresholds = signals["low_confidence"]["thresholds"]
    assert thresholds["relative"] is True and thresholds["token"] == pytest.approx(-3.0 - 2.5 * 1.5)
    # A confident model (-0.05 +- 0.1) makes the same response's weaker tokens stand out.
    store.update("other", ModelStats(Moments(10_000, -0.05, 0.1**2 * 9_999), Moments()))
    body["response"]["model"] = "other"
    assert run(LowConfidenceDetector({}, Services(extra={"model_stats": store})), body)[0]


def test_each_check_updates_the_models_running_statistics() -> None:
    store = InMemoryModelStats()
    det = LowConfidenceDetector({}, Services(extra={"model_stats": store}))
    run(det, two_calls_body())
    first = store.get("Qwen/Qwen3-8B")
    assert first is not None and first.tokens.count > 0 and first.segments.count == 1
    another = two_calls_body()
    another["response"]["id"] = "chatcmpl-another"  # the same id again is a retry, counted once (test_review_edges)
    run(det, another)
    second = store.get("Qwen/Qwen3-8B")
    assert second is not None and second.tokens.count == 2 * first.tokens.count
    assert second.tokens.mean == pytest.approx(first.tokens.mean)


def no_logprobs_body() -> dict[str, Any]:
    body = two_calls_body()
    body["response"]["choices"][0]["logprobs"] = None
    return body


def test_pull_scores_the_response_on_vllm_by_chat_continuation(stub: VLLMStub) -> None:
    stub.reset()
    det = detector({"pull": True, "vllm": {"base_url": stub.url, "model": "Qwen/Qwen3-8B"}})
    assert det.io_bound
    body = no_logprobs_body()
    findings, signals = run(det, body)
    paths = [c[0] for c in stub.calls]
    assert sorted(paths) == ["/tokenize", "/v1/chat/completions"]
    scoring = next(b for p, b in stub.calls if p == "/v1/chat/completions")
    assert scoring["continue_final_message"] is True and scoring["add_generation_prompt"] is False
    assert scoring["prompt_logprobs"] == 5 and scoring["messages"][-1]["role"] == "assistant"
    assert signals["low_confidence"]["source"] == "pulled"
    assert signals["low_confidence"]["model"] == "scored:Qwen/Qwen3-8B"
    located = {resolve(body, f.pointer)[f.start:f.end] for f in findings}
    assert "Paris" in located  # the stub is unsure of "Paris": in the reasoning and in the argument
    arg = next(f for f in findings if f.evidence.get("unit") == "argument")
    assert arg.pointer.endswith("/tool_calls/0/function/arguments")


def test_pull_by_completions_echo_for_raw_output(stub: VLLMStub) -> None:
    stub.reset()
    det = detector({"pull": True, "vllm": {"base_url": stub.url, "model": "m"}})
    body = {"request": {"messages": [{"role": "user", "content": "Capital of France?"}]},
            "response": {"object": "chat.completion", "model": "m", "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "It is Paris, I think."},
                 "finish_reason": "stop"}]}}
    findings, _ = run(det, body, raw_output="It is Paris, I think.")
    ((path, request),) = stub.calls
    assert path == "/v1/completions"
    assert request["echo"] is True and request["max_tokens"] == 0 and request["logprobs"] == 5
    assert [resolve(body, s["pointer"])[s["start"]:s["end"]] for f in findings for s in f.evidence["spans"]] == [
        " Paris"]


def test_unreachable_vllm_is_a_detector_error_finding(stub: VLLMStub) -> None:
    stub.reset()
    stub.status = 503
    det = detector({"pull": True, "vllm": {"base_url": stub.url, "model": "failing-model"}})
    (finding,) = run(det, no_logprobs_body())[0]
    stub.reset()
    assert finding.category is Category.DETECTOR_ERROR and "503" in finding.message
    closed_port = detector({"pull": True, "vllm": {"base_url": "http://127.0.0.1:9", "timeout_s": 1}})
    (finding,) = run(closed_port, no_logprobs_body())[0]
    assert finding.category is Category.DETECTOR_ERROR and "unreachable" in finding.message


def test_token_id_strings_are_resolved_through_detokenize(stub: VLLMStub) -> None:
    stub.reset()
    body = unsure_paris_body()
    content = body["response"]["choices"][0]["logprobs"]["content"]
    for entry in content:  # what return_tokens_as_token_ids=true returns
        entry["token"] = f"token_id:{stub.token_id(entry['token'])}"
        entry["bytes"] = list(entry["token"].encode())
    det = LowConfidenceDetector({"vllm": {"base_url": stub.url}}, Services(extra={"model_stats": InMemoryModelStats()}))
    findings, signals = run(det, body)
    assert {p for p, _ in stub.calls} == {"/detokenize"}
    assert [resolve(body, f.pointer)[f.start:f.end] for f in findings] == ["Paris"]
    assert "unresolved_token_ids" not in signals["low_confidence"]


def registry() -> DetectorRegistry:
    """Only our two entry points (loading every detector would import Presidio and friends)."""
    eps = entry_points(group="guardrails.detectors")
    return DetectorRegistry(ep.load() for ep in eps if ep.name in ("low_confidence", "guard_model"))


def test_default_policy_entry_builds_the_detector() -> None:
    from guardrails.policy import load_policy

    policy = load_policy(Path(__file__).resolve().parents[1] / "policies" / "default")
    config = policy.detector("low_confidence")
    assert config is not None and config.enabled
    guard = policy.detector("guard_model")
    assert guard is not None and not guard.enabled  # it needs a vLLM server
    reg = registry()
    assert reg.names() == ["guard_model", "low_confidence"]
    det = reg.get("low_confidence")(config.settings, Services())
    assert isinstance(det, LowConfidenceDetector) and not det.io_bound


def test_end_to_end_through_the_check_service(tmp_path: Path) -> None:
    from guardrails.policy import PolicyStore
    from guardrails.service import CheckService

    (tmp_path / "lc").mkdir()
    (tmp_path / "lc" / "config.yml").write_text("detectors:\n  low_confidence:\n    high_risk_tools: [get_time]\n")
    service = CheckService(PolicyStore(tmp_path), registry(), default_policy="lc")
    body = unsure_paris_body()
    answer = asyncio.run(service.check(body))
    (finding,) = answer["findings"]
    loc = finding["location"]
    assert resolve(body, loc["pointer"])[loc["start"]:loc["end"]] == "Paris"
    assert finding["action"] == "warn" and answer["verdict"] == "warn"
    assert answer["signals"]["low_confidence"]["source"] == "response"
    # The same doubt in a high-risk tool's argument blocks.
    content = body["response"]["choices"][0]["logprobs"]["content"]
    content[42]["logprob"], content[70]["logprob"] = -0.02, -4.0  # "Paris" sure, "Tok"(yo) unsure
    answer = asyncio.run(service.check(body))
    (finding,) = answer["findings"]
    loc = finding["location"]
    assert resolve(body, loc["pointer"])[loc["start"]:loc["end"]] == "Tokyo"
    assert (finding["action"], answer["verdict"]) == ("block", "block")
