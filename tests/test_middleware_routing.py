"""Mid-stream checks of the ASGI middleware use the policy routing.yml chose for the caller.

Mid-stream checks carry no caller context (budgets would count each one), so without the routed policy they
fell back to the default one: a caller routed to a stricter policy was only stopped at the final check, after
the text had reached it.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_middleware_asgi import CountingClient, Harness, TextAnswerServer, sse_events

from guardrails.config import Settings
from guardrails.middleware.asgi import GuardrailsMiddleware
from guardrails.serve import build_app

REQUEST = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "How do I deploy?"}]}


def write_policies(root: Path) -> Path:
    strict = {"content": {"terms": ["launch code"], "action": "block", "applies_to": {"kinds": ["assistant"]}}}
    for name, detectors in {"default": {}, "strict": strict}.items():
        (root / name).mkdir(parents=True)
        config = {"colang_version": "2.x", "rails": {"input": {"flows": []}, "output": {"flows": []}},
                  "detectors": {"tool_undeclared": {"action": "block"}, **detectors}}
        (root / name / "config.yml").write_text(json.dumps(config))  # JSON is YAML
    (root / "routing.yml").write_text("agents: {deploy-bot: strict}\n")
    return root


@pytest.fixture(scope="module")
def service_app(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("routed")
    return build_app(Settings(policy_dir=write_policies(root / "policies"), data_dir=root / "var"))


def stream_as(service_app: Any, agent: str, **options: Any) -> tuple[list[bytes], list[dict[str, Any]]]:
    client = CountingClient("http://guardrails", transport=httpx.ASGITransport(app=service_app))
    middleware = GuardrailsMiddleware(TextAnswerServer().app, client=client, stream_check_interval_s=0.0,
                                      **options)
    response = asyncio.run(Harness.call(middleware, "/v1/chat/completions", REQUEST, headers={"x-agent-id": agent}))
    return sse_events(response.content), client.bodies


@pytest.mark.parametrize("check_input", [True, False], ids=["with-input-check", "output-only"])
def test_a_routed_caller_is_stopped_mid_stream_by_its_own_policy(service_app: Any, check_input: bool) -> None:
    events, bodies = stream_as(service_app, "deploy-bot", check_input=check_input)
    assert events[:-1] == TextAnswerServer.chat_stream_events()[:2]  # stopped before the term is sent
    assert b"guardrails_blocked" in events[-1]
    mid_stream = [b for b in bodies if "response" in b and "context" not in b]
    assert mid_stream and all(b["policy"] == "strict" for b in mid_stream)


def test_a_caller_routed_nowhere_streams_to_the_end_under_the_default_policy(service_app: Any) -> None:
    events, bodies = stream_as(service_app, "other-bot")
    assert events == TextAnswerServer.chat_stream_events()
    assert all(b.get("policy") == "default" for b in bodies if "response" in b and "context" not in b)
