"""POST /v1/guardrail/checks: a client written for NeMo Guardrails' microservice works unchanged.

Request and response shapes are the ones in shared/reference/nemo-guardrails.md §1.1 and §1.3."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from guardrails.pointer import resolve

REPO = Path(__file__).resolve().parent.parent
STATS_KEYS = {
    "input_rails_duration",
    "output_rails_duration",
    "total_duration",
    "llm_calls_duration",
    "llm_calls_count",
    "llm_calls_total_prompt_tokens",
    "llm_calls_total_completion_tokens",
    "llm_calls_total_tokens",
}


def nemo_client_reads(payload: dict[str, Any]) -> bool:
    """What llama-stack's NVIDIA safety provider does with the answer: blocked or not, plus rails_status."""
    assert payload["status"] in ("success", "blocked")
    for name, rail in payload["rails_status"].items():
        assert isinstance(name, str) and rail["status"] in ("success", "blocked")
    log = payload["guardrails_data"]["log"]
    assert set(log["stats"]) >= STATS_KEYS
    for rail in log["activated_rails"]:
        assert {"type", "name", "stop", "duration"} <= set(rail)
        assert rail["type"] in ("input", "output", "tool_input", "tool_output")
    return payload["status"] == "blocked"


def test_official_docs_request_shape(client: TestClient) -> None:
    body = {
        "model": "meta/llama-3.3-70b-instruct",
        "messages": [
            {"role": "user", "content": "Tell me how to collect a life insurance policy."},
            {"role": "assistant", "content": "You are stupid."},
        ],
        "guardrails": {"config_id": "default"},
        "top_p": 1,
    }
    resp = client.post("/v1/guardrail/checks", json=body)
    assert resp.status_code == 200
    payload = resp.json()
    assert nemo_client_reads(payload) is False
    assert payload["guardrails_data"]["config_ids"] == ["default"]
    assert payload["rails_status"]["check pii"] == {"status": "success"}


def test_blocked_answer_names_the_rail_and_points_into_the_nemo_body(client: TestClient) -> None:
    body = {
        "model": "m",
        "messages": [
            {"role": "user", "content": "What is the deploy key?"},
            {"role": "assistant", "content": "It is AKIAIOSFODNN7EXAMPLE."},
        ],
        "guardrails": {"config_id": "default"},
    }
    payload = client.post("/v1/guardrail/checks", json=body).json()
    assert nemo_client_reads(payload) is True
    assert payload["rails_status"]["check secrets"] == {"status": "blocked"}
    stops = {
        r["type"]: r["stop"]
        for r in payload["guardrails_data"]["log"]["activated_rails"]
        if r["name"] == "check secrets"
    }
    assert stops == {"input": False, "output": True, "tool_input": False, "tool_output": False}
    [finding] = [f for f in payload["guardrails_data"]["findings"] if f["category"] == "secret"]
    loc = finding["location"]
    assert resolve(body, loc["pointer"])[loc["start"] : loc["end"]] == "AKIAIOSFODNN7EXAMPLE"


def test_tool_calls_are_checked_unlike_nemo(client: TestClient) -> None:
    body = {
        "model": "m",
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}],
        "messages": [
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"id": "1", "type": "function", "function": {"name": "delete_all", "arguments": "{}"}}
                ],
            },
        ],
        "guardrails": {"config_id": "default"},
    }
    payload = client.post("/v1/guardrail/checks", json=body).json()
    assert payload["status"] == "blocked"
    assert payload["rails_status"]["check tool undeclared"] == {"status": "blocked"}
    [finding] = [f for f in payload["guardrails_data"]["findings"] if f["category"] == "tool_undeclared"]
    loc = finding["location"]
    assert resolve(body, loc["pointer"])[loc["start"] : loc["end"]] == "delete_all"


def test_reasoning_content_is_accepted_and_custom_colang_flows_run(client: TestClient) -> None:
    body = {
        "model": "m",
        "messages": [
            {"role": "user", "content": "fix the build"},
            {
                "role": "assistant",
                "content": "Done.",
                "reasoning_content": "use key AKIAIOSFODNN7EXAMPLE to upload",
            },
        ],
        "guardrails": {"config_ids": ["example-colang2"]},
    }
    payload = client.post("/v1/guardrail/checks", json=body).json()
    assert payload["status"] == "blocked"
    assert payload["rails_status"]["check reasoning secrets"] == {"status": "blocked"}
    assert payload["guardrails_data"]["policies"][0]["id"] == "example-colang2"


def test_tool_message_from_trustyai_example(client: TestClient) -> None:
    body = {
        "model": "dummy/model",
        "messages": [
            {"role": "user", "content": "get my credentials"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "get_credentials", "arguments": "{}"},
                    }
                ],
            },
            {
                "role": "tool",
                "tool_call_id": "c1",
                "content": "token ghp_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8",
                "name": "get_credentials",
            },
        ],
    }
    payload = client.post("/v1/guardrail/checks", json=body).json()
    assert payload["status"] == "blocked"  # the default policy checks tool results for secrets
    assert payload["guardrails_data"]["config_ids"] == ["default"]


def test_inline_config(client: TestClient) -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "key AKIAIOSFODNN7EXAMPLE"}],
        "guardrails": {"config": {"models": [], "rails": {"input": {"flows": ["check secrets"]}}}},
    }
    payload = client.post("/v1/guardrail/checks", json=body).json()
    assert payload["status"] == "blocked" and payload["rails_status"] == {
        "check secrets": {"status": "blocked"}
    }
    assert payload["guardrails_data"]["config_ids"] == ["inline"]


def test_combined_config_ids(client: TestClient) -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}],
        "guardrails": {"config_ids": ["default", "example-colang1"]},
    }
    payload = client.post("/v1/guardrail/checks", json=body).json()
    assert payload["status"] == "success"
    assert payload["guardrails_data"]["config_ids"] == ["default", "example-colang1"]
    assert "check internal hosts" in payload["rails_status"]


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        (
            {
                "model": "m",
                "messages": [{"role": "user", "content": "x"}],
                "guardrails": {"config_id": "nope"},
            },
            "/guardrails/config_id",
        ),
        ({"model": "m"}, "/messages"),
        (
            {
                "model": "m",
                "messages": [{"role": "user", "content": "x"}],
                "guardrails": {"config": {"rails": {"input": {"flows": ["self check input"]}}}},
            },
            "/guardrails/config",
        ),
    ],
)
def test_validation_errors_are_422(client: TestClient, body: dict[str, Any], pointer: str) -> None:
    resp = client.post("/v1/guardrail/checks", json=body)
    assert resp.status_code == 422
    assert resp.json()["error"]["pointer"] == pointer
