"""The vLLM client: scoring calls, timeouts, failures, the circuit breaker, bounded concurrency."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator

import httpx
import pytest
from vllm_stub import VLLMStub

from guardrails.logprobs import read_source
from guardrails.vllm_client import CircuitBreaker, VLLMClient, VLLMConfig, VLLMError, VLLMUnavailable, shared_client


@pytest.fixture(scope="module")
def stub() -> Iterator[VLLMStub]:
    with VLLMStub(unsure=("Paris",)) as server:
        yield server


def client_for(stub: VLLMStub, **overrides: object) -> VLLMClient:
    return VLLMClient(VLLMConfig(base_url=stub.url, model="Qwen/Qwen3-8B", **overrides))  # type: ignore[arg-type]


def test_completions_echo_scoring_returns_the_0_33_0_shape(stub: VLLMStub) -> None:
    stub.reset()
    answer = asyncio.run(client_for(stub).completions(
        {"prompt": "The capital is Paris.", "max_tokens": 0, "echo": True, "logprobs": 2}))
    choice = answer["choices"][0]
    assert choice["text"] == "The capital is Paris."
    assert choice["logprobs"]["token_logprobs"][0] is None and choice["prompt_logprobs"][0] is None
    stream = read_source("completions", choice["logprobs"])
    assert stream.text == "The capital is Paris."
    assert stream.alternatives.shape[1] == 3  # logprobs + 1
    assert stub.calls[0][1]["model"] == "Qwen/Qwen3-8B"  # the configured model is filled in


def test_api_key_is_sent_as_bearer_and_never_shown() -> None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return httpx.Response(200, json={"count": 1, "tokens": [1]})

    config = VLLMConfig(base_url="http://vllm.test", api_key="sk-secret")
    client = VLLMClient(config, transport=httpx.MockTransport(handler))
    asyncio.run(client.tokenize({"prompt": "x"}))
    assert seen == ["Bearer sk-secret"]
    assert "sk-secret" not in repr(config)


def test_timeout_raises_unavailable(stub: VLLMStub) -> None:
    stub.reset()
    stub.delay_s = 0.5
    client = client_for(stub, timeout_s=0.1)
    with pytest.raises(VLLMUnavailable, match="timed out"):  # raised by the client's deadline, not the answer's
        asyncio.run(client.tokenize({"prompt": "x"}))
    stub.reset()


def test_server_errors_open_the_breaker_then_a_trial_call_closes_it(stub: VLLMStub) -> None:
    stub.reset()
    stub.status = 500
    client = client_for(stub, breaker_failures=3, breaker_reset_s=0.2)

    async def attempt() -> str:
        try:
            await client.tokenize({"prompt": "x"})
            return "ok"
        except VLLMUnavailable as exc:
            return "open" if "breaker" in str(exc) else "failed"

    assert [asyncio.run(attempt()) for _ in range(5)] == ["failed", "failed", "failed", "open", "open"]
    assert len(stub.calls) == 3  # an open breaker does not call vLLM at all
    stub.status = None
    time.sleep(0.25)
    assert asyncio.run(attempt()) == "ok"
    assert client.breaker.state == "closed"
    stub.reset()


def test_a_failed_trial_call_reopens_the_breaker() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failures=2, reset_s=10, clock=lambda: now[0])
    breaker.failure()
    assert breaker.allow()
    breaker.failure()
    assert breaker.state == "open" and not breaker.allow()
    now[0] = 11.0
    assert breaker.state == "half_open"
    assert breaker.allow() and not breaker.allow()  # one trial at a time
    breaker.failure()
    assert breaker.state == "open"
    now[0] = 22.0
    assert breaker.allow()
    breaker.success()
    assert breaker.state == "closed" and breaker.allow()


def test_a_refused_request_is_an_error_but_not_a_breaker_failure(stub: VLLMStub) -> None:
    stub.reset()
    stub.status = 400
    client = client_for(stub, breaker_failures=1)
    for _ in range(3):
        with pytest.raises(VLLMError, match="refused") as info:
            asyncio.run(client.tokenize({"prompt": "x"}))
        assert not isinstance(info.value, VLLMUnavailable)
    assert client.breaker.state == "closed"
    stub.reset()


def test_unreachable_server_raises_unavailable() -> None:
    client = VLLMClient(VLLMConfig(base_url="http://127.0.0.1:9", timeout_s=1))
    with pytest.raises(VLLMUnavailable, match="unreachable"):
        asyncio.run(client.tokenize({"prompt": "x"}))


def test_concurrency_is_bounded() -> None:
    active, peak = [0], [0]

    async def handler(request: httpx.Request) -> httpx.Response:
        active[0] += 1
        peak[0] = max(peak[0], active[0])
        await asyncio.sleep(0.01)
        active[0] -= 1
        return httpx.Response(200, json={"count": 0, "tokens": []})

    client = VLLMClient(VLLMConfig(base_url="http://vllm.test", max_concurrency=3),
                        transport=httpx.MockTransport(handler))

    async def many() -> None:
        await asyncio.gather(*(client.tokenize({"prompt": str(i)}) for i in range(12)))
        await client.aclose()

    asyncio.run(many())
    assert peak[0] == 3


def test_settings_are_validated_and_clients_shared_per_configuration() -> None:
    with pytest.raises(ValueError, match="unknown vllm settings"):
        VLLMConfig.from_settings({"base_url": "http://x", "modle": "m"})
    with pytest.raises(ValueError, match="base_url"):
        VLLMConfig.from_settings({"model": "m"})
    config = VLLMConfig.from_settings({"base_url": "http://x/", "model": "m"})
    assert config.base_url == "http://x"
    assert shared_client(config) is shared_client(VLLMConfig(base_url="http://x", model="m"))


def test_against_a_real_vllm_server() -> None:
    url = os.environ.get("GUARDRAILS_TEST_VLLM_URL")
    if not url:
        pytest.skip("set GUARDRAILS_TEST_VLLM_URL (and GUARDRAILS_TEST_VLLM_MODEL) to test against a real vLLM")
    client = VLLMClient(VLLMConfig(base_url=url, model=os.environ.get("GUARDRAILS_TEST_VLLM_MODEL"), timeout_s=60))
    answer = asyncio.run(client.completions({"prompt": "The capital of France is Paris.", "max_tokens": 0,
                                             "echo": True, "logprobs": 2}))
    stream = read_source("completions", answer["choices"][0]["logprobs"])
    assert stream.text == "The capital of France is Paris."
    assert (stream.logprobs[1:] <= 0).all()


def test_the_api_key_can_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GUARDRAILS_TEST_VLLM_KEY", "sk-from-env")
    config = VLLMConfig.from_settings({"base_url": "http://x", "api_key_env": "GUARDRAILS_TEST_VLLM_KEY"})
    assert config.api_key == "sk-from-env"
    assert "sk-from-env" not in repr(config)
    with pytest.raises(ValueError, match="not both"):
        VLLMConfig.from_settings({"base_url": "http://x", "api_key": "k", "api_key_env": "GUARDRAILS_TEST_VLLM_KEY"})
    monkeypatch.delenv("GUARDRAILS_TEST_VLLM_KEY")
    with pytest.raises(ValueError, match="GUARDRAILS_TEST_VLLM_KEY, which is not set"):
        VLLMConfig.from_settings({"base_url": "http://x", "api_key_env": "GUARDRAILS_TEST_VLLM_KEY"})
    with pytest.raises(ValueError, match="must name an environment variable"):
        VLLMConfig.from_settings({"base_url": "http://x", "api_key_env": 12})
