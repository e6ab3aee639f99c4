"""low_confidence's limits: its `vllm:` block is checked like every other setting (a bad value or a typo stops the
policy, naming the setting's path and its range or closest key), and one check weighs at most
`MAX_TOKENS_PER_CHECK` tokens in the statistics that relative thresholds are learned from, so a single long response
cannot set a model's baseline."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from policy_bundles import bundle, validate
from test_logprobs_gaps import MODEL, content_body, scan

from detectors.low_confidence import LowConfidenceDetector
from guardrails.detector import InlineSettings, Services, SettingError
from guardrails.model_stats import MAX_SEGMENTS_PER_CHECK, MAX_TOKENS_PER_CHECK, InMemoryModelStats, Moments

DEFAULT_MIN_TOKENS = 500  # relative.min_tokens when the policy does not set it


# --- 1. the `vllm:` block ---------------------------------------------------------------------------------------------
BAD_VLLM = [
    ("{base_url: 'http://vllm:8000', timeout_s: -1}", "setting vllm.timeout_s must be above 0 and at most 600, not -1"),
    ("{base_url: 'http://vllm:8000', timeout_s: 0}", "setting vllm.timeout_s must be above 0 and at most 600, not 0"),
    ("{base_url: 'http://vllm:8000', timeout_s: .inf}", "setting vllm.timeout_s must be above 0 and at most 600"),
    ("{base_url: 'http://vllm:8000', timeout_s: .nan}", "setting vllm.timeout_s must be above 0 and at most 600"),
    ("{base_url: 'http://vllm:8000', timeout_s: 1.0e+300}", "setting vllm.timeout_s must be above 0 and at most 600"),
    ("{base_url: 'http://vllm:8000', timeout_s: '5'}", "setting vllm.timeout_s must be a number, not '5'"),
    ("{base_url: 'http://vllm:8000', max_concurrency: 0}", "setting vllm.max_concurrency must be at least 1, not 0"),
    ("{base_url: 'http://vllm:8000', max_concurrency: 2.5}",
     "setting vllm.max_concurrency must be a whole number, not 2.5"),
    ("{base_url: 'http://vllm:8000', breaker_failures: 0}", "setting vllm.breaker_failures must be at least 1, not 0"),
    ("{base_url: 'http://vllm:8000', breaker_reset_s: -5}",
     "setting vllm.breaker_reset_s must be above 0 and at most 3600, not -5"),
    ("{base_url: 'http://vllm:8000', model: 7}", "setting vllm.model must be a string, not 7"),
    ("{base_url: 'ftp://vllm:8000'}", "setting vllm.base_url must be an http:// or https:// URL with a host, not 'ftp"),
    ("{base_url: 'vllm:8000'}", "setting vllm.base_url must be an http:// or https:// URL with a host"),
    ("{base_url: 'http://'}", "setting vllm.base_url must be an http:// or https:// URL with a host"),
    ("{base_url: 8000}", "setting vllm.base_url must be a string, not 8000"),
    ("{model: m}", "setting vllm.base_url must be an http:// or https:// URL with a host, not None"),
    ("{base_url: 'http://vllm:8000', timeout: 5}",
     "setting vllm: unknown vllm settings: 'timeout' (did you mean 'timeout_s'?)"),
    ("{base_url: 'http://vllm:8000', max_concurency: 4}",
     "setting vllm: unknown vllm settings: 'max_concurency' (did you mean 'max_concurrency'?)"),
]


@pytest.mark.parametrize(("vllm", "needle"), BAD_VLLM)
def test_a_bad_vllm_setting_fails_validate_naming_its_path(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], vllm: str, needle: str) -> None:
    config = f"detectors:\n  low_confidence:\n    pull: true\n    vllm: {vllm}\n"
    code, out = validate(bundle(tmp_path, "p", config), capsys)
    assert code == 4, out
    assert "detector 'low_confidence' rejected its settings: " in out and needle in out, out


def test_a_good_vllm_block_loads_and_builds_its_client(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    vllm = {"base_url": "https://vllm.internal:8443/", "model": "Qwen/Qwen3-8B", "api_key": None, "timeout_s": 600,
            "max_concurrency": 1, "breaker_failures": 1, "breaker_reset_s": 0.5}
    config = f"detectors:\n  low_confidence:\n    pull: true\n    vllm: {vllm!r}\n".replace("None", "null")
    code, out = validate(bundle(tmp_path, "p", config), capsys)
    assert code == 0, out
    det = LowConfidenceDetector({"pull": True, "vllm": vllm}, Services(extra={"model_stats": InMemoryModelStats()}))
    assert det.client is not None
    got = det.client.config
    assert (got.base_url, got.model, got.api_key, got.timeout_s, got.max_concurrency) == (
        "https://vllm.internal:8443", "Qwen/Qwen3-8B", None, 600.0, 1)
    assert (got.breaker_failures, got.breaker_reset_s) == (1, 0.5)


def test_the_vllm_block_is_checked_even_when_the_service_hands_over_its_client() -> None:
    handed = object()
    good = LowConfidenceDetector({"vllm": {"base_url": "http://vllm:8000"}}, Services(vllm=handed))
    assert good.client is handed
    with pytest.raises(SettingError, match=r"setting vllm\.timeout_s must be above 0"):
        LowConfidenceDetector({"vllm": {"base_url": "http://vllm:8000", "timeout_s": -1}}, Services(vllm=handed))


def test_an_inline_policy_still_may_not_set_the_vllm_block() -> None:
    with pytest.raises(SettingError, match="setting vllm reads a file or calls a URL"):
        LowConfidenceDetector(InlineSettings(vllm={"base_url": "http://vllm:8000"}), Services())


# --- 2. one check's weight in the learned statistics ---------------------------------------------------------------
WORDS = (" river", " stone", " light", " paper", " cloud", " green", " table", " water")  # weight 1 each


def answer(n: int, response_id: str, low: range = range(0)) -> dict[str, Any]:
    """An ordinary `n`-token answer (logprobs -0.2 to -0.9, deterministic), tokens in `low` at -6.0."""
    tokens = [(WORDS[i % len(WORDS)], -6.0 if i in low else -0.2 - 0.1 * (i % 8)) for i in range(n)]
    body = content_body(tokens)
    body["response"]["id"] = response_id
    return body


def test_capped_moments_keep_the_mean_and_spread_at_a_bounded_weight() -> None:
    values = [-0.1 * (i % 13) for i in range(1000)]
    mean = sum(values) / len(values)
    full = Moments(len(values), mean, sum((v - mean) ** 2 for v in values))
    capped = full.capped(100)
    assert capped.count == 100
    assert capped.mean == pytest.approx(full.mean) and capped.std == pytest.approx(full.std)
    assert full.capped(1000) is full and full.capped(1) == Moments(1, full.mean, 0.0)


def test_one_huge_response_cannot_reach_min_tokens_alone() -> None:
    assert MAX_TOKENS_PER_CHECK < DEFAULT_MIN_TOKENS
    store = InMemoryModelStats()
    det = LowConfidenceDetector({}, Services(extra={"model_stats": store}))
    scan(det, answer(2000, "chatcmpl-huge"))  # 2000 counted tokens: four times min_tokens
    learned = store.get(MODEL)
    assert learned is not None and learned.tokens.count == MAX_TOKENS_PER_CHECK
    assert learned.segments.count == 1
    # Its mean is kept: the answer is weighed less, not misread.
    assert learned.tokens.mean == pytest.approx(sum(-0.2 - 0.1 * (i % 8) for i in range(2000)) / 2000)
    scan(det, answer(2000, "chatcmpl-huge"))  # a retry of the same response still adds nothing
    assert store.get(MODEL) == learned
    _, summary = scan(det, answer(50, "chatcmpl-next"))
    assert summary["thresholds"]["relative"] is False  # judged on the absolute thresholds still


def test_several_normal_responses_reach_min_tokens() -> None:
    needed = math.ceil(DEFAULT_MIN_TOKENS / MAX_TOKENS_PER_CHECK)
    assert needed >= 5  # a baseline takes several responses
    store = InMemoryModelStats()
    det = LowConfidenceDetector({}, Services(extra={"model_stats": store}))
    for i in range(needed - 1):
        scan(det, answer(MAX_TOKENS_PER_CHECK, f"chatcmpl-{i}"))
    _, summary = scan(det, answer(MAX_TOKENS_PER_CHECK, f"chatcmpl-{needed - 1}"))
    assert summary["thresholds"]["relative"] is False  # judged before its own tokens were added
    learned = store.get(MODEL)
    assert learned is not None and learned.tokens.count == DEFAULT_MIN_TOKENS
    _, summary = scan(det, answer(MAX_TOKENS_PER_CHECK, "chatcmpl-judged"))
    assert summary["thresholds"]["relative"] is True


def test_segments_per_check_are_capped_too() -> None:
    many = Moments(40, -0.5, 39 * 0.01)
    assert many.capped(MAX_SEGMENTS_PER_CHECK).count == MAX_SEGMENTS_PER_CHECK
    assert MAX_SEGMENTS_PER_CHECK * 2 <= 30  # relative.min_segments' default takes several responses


def test_the_learned_baseline_still_flags_a_low_confidence_span() -> None:
    store = InMemoryModelStats()
    det = LowConfidenceDetector({}, Services(extra={"model_stats": store}))
    for i in range(12):  # 12 ordinary answers of 120 tokens: 1,200 counted at 100 each, past min_tokens
        scan(det, answer(120, f"chatcmpl-normal-{i}"))
    learned = store.get(MODEL)
    assert learned is not None and learned.tokens.count == 12 * MAX_TOKENS_PER_CHECK
    findings, summary = scan(det, answer(120, "chatcmpl-ordinary"))
    thresholds = summary["thresholds"]
    assert thresholds["relative"] is True and findings == []  # an ordinary answer stays unflagged
    assert -6.0 < thresholds["token"] < -0.9
    findings, summary = scan(det, answer(120, "chatcmpl-unsure", low=range(40, 80)))
    (finding,) = findings
    assert finding.evidence["thresholds"]["relative"] is True
    (span,) = finding.evidence["spans"]
    content = "".join(WORDS[i % len(WORDS)] for i in range(120))
    assert span["pointer"] == "/response/choices/0/message/content"
    assert (span["start"], span["end"]) == (len("".join(WORDS[i % len(WORDS)] for i in range(40))),
                                            len("".join(WORDS[i % len(WORDS)] for i in range(80))))
    assert content[span["start"]:span["end"]].startswith(WORDS[40 % len(WORDS)])
