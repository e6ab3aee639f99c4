"""A detected body that mixes APIs is refused: content under a key the detected adapter does not read is a 422.

An OpenAI Chat request with an extra `generationConfig` sniffs as Gemini generateContent, whose adapter never
reads `messages`; vLLM ignores the unknown key and the model gets those messages. Each case below puts a secret
in the content of the API the body is really sent to, adds one key of another API, and checks that detection
refuses it (naming the keys) while the same body with `format` set is read as that API and blocked.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import fixture
from fastapi.testclient import TestClient

from guardrails.adapters import ADAPTERS, read_exchange
from guardrails.config import Settings
from guardrails.contract import CheckResponse, ErrorResponse
from guardrails.errors import BodyError
from guardrails.pointer import resolve
from guardrails.serve import build_app

REPO = Path(__file__).resolve().parent.parent
SECRET = "AKIAQ7XK2M4PZ3LJ8VWE"  # an AWS access key id: the default policy blocks it wherever it is read
ASK = f"Book the Lisbon flight and charge it to the account with key {SECRET}."
WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}

CHAT = {
    "model": "Qwen/Qwen3-8B",
    "messages": [{"role": "system", "content": "You are Acme Travel's booking assistant."},
                 {"role": "user", "content": ASK}],
    "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city.",
                                                "parameters": WEATHER_SCHEMA}}],
    "tool_choice": "auto",
    "temperature": 0.2,
}
ANTHROPIC = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 1024,
    "messages": [{"role": "user", "content": [{"type": "text", "text": ASK}]}],
}
GEMINI = {
    "systemInstruction": {"parts": [{"text": "You are Acme Travel's booking assistant."}]},
    "contents": [{"role": "user", "parts": [{"text": ASK}]}],
    "generationConfig": {"temperature": 0.2, "maxOutputTokens": 512},
    "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"}],
}
RESPONSES = {
    "model": "gpt-4.1",
    "instructions": "You are Acme Travel's booking assistant.",
    "input": [{"role": "user", "content": [{"type": "input_text", "text": ASK}]}],
    "tools": [{"type": "function", "name": "get_weather", "parameters": WEATHER_SCHEMA}],
    "max_output_tokens": 512,
}
INTERACTIONS = {
    "model": "gemini-3.7-flash",
    "system_instruction": "You are Acme Travel's booking assistant.",
    "input": [{"type": "user_input", "content": [{"type": "text", "text": ASK}]}],
}
# Benign content under another API's key: what an attacker or a sloppy client adds.
HELLO = "What's the weather in Lisbon?"
FOREIGN: dict[str, Any] = {
    "generationConfig": {},
    "safetySettings": [],
    "contents": [{"role": "user", "parts": [{"text": HELLO}]}],
    "messages": [{"role": "user", "content": HELLO}],
    "input": HELLO,
    "instructions": "Answer briefly.",
    "system": "Answer briefly.",
    "system_instruction": "Answer briefly.",
    "prompt": HELLO,
    "functions": [{"name": "get_time", "description": "Local time.", "parameters": {"type": "object"}}],
}

# (id, the API the body is sent to, its request, the key added, the format detection picks, the unread keys)
CASES = [
    ("chat+generationConfig", "openai.chat", CHAT, "generationConfig", "gemini", ["messages"]),
    ("chat+safetySettings", "openai.chat", CHAT, "safetySettings", "gemini", ["messages"]),
    ("chat+contents", "openai.chat", CHAT, "contents", "gemini", ["messages"]),
    ("chat+input", "openai.chat", CHAT, "input", "openai.chat", ["input"]),
    ("chat+instructions", "openai.chat", CHAT, "instructions", "openai.chat", ["instructions"]),
    ("chat+prompt", "openai.chat", CHAT, "prompt", "openai.chat", ["prompt"]),
    ("anthropic+contents", "anthropic.messages", ANTHROPIC, "contents", "gemini", ["messages"]),
    ("anthropic+input", "anthropic.messages", ANTHROPIC, "input", "openai.chat", ["input"]),
    ("gemini+messages", "gemini", GEMINI, "messages", "gemini", ["messages"]),
    ("gemini+system", "gemini", GEMINI, "system", "gemini", ["system"]),
    ("gemini+functions", "gemini", GEMINI, "functions", "gemini", ["functions"]),
    ("gemini+both system spellings", "gemini", GEMINI, "system_instruction", "gemini", ["system_instruction"]),
    ("responses+messages", "openai.responses", RESPONSES, "messages", "openai.chat", ["input", "instructions"]),
    ("responses+system_instruction", "openai.responses", RESPONSES, "system_instruction", "gemini.interactions",
     ["instructions"]),
    ("interactions+contents", "gemini.interactions", INTERACTIONS, "contents", "gemini", ["input"]),
    ("interactions+instructions", "gemini.interactions", INTERACTIONS, "instructions", "gemini.interactions",
     ["instructions"]),
]


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(build_app(Settings(policy_dir=REPO / "policies", max_body_bytes=256 * 1024)))


def mixed(request: dict[str, Any], key: str) -> dict[str, Any]:
    return {**copy.deepcopy(request), key: copy.deepcopy(FOREIGN[key])}


def error_of(resp: Any) -> dict[str, Any]:
    assert resp.status_code == 422, resp.text
    payload = resp.json()
    ErrorResponse.model_validate(payload)
    return payload["error"]


@pytest.mark.parametrize(("api", "request_", "key", "detected", "unread"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_a_detected_body_mixing_apis_is_refused_naming_the_keys(
        client: TestClient, api: str, request_: dict[str, Any], key: str, detected: str, unread: list[str]) -> None:
    error = error_of(client.post("/v1/checks", json={"request": mixed(request_, key)}))
    assert error["type"] == "ambiguous_format"
    assert error["pointer"] == f"/request/{unread[0]}"
    message = error["message"]
    assert message.startswith(f"the body mixes APIs: it was detected as {detected}, which ")
    for name in unread:
        assert f'"{name}" (read ' in message
    assert message.endswith('set "format" to the API the body is sent to')


@pytest.mark.parametrize(("api", "request_", "key"), [c[1:4] for c in CASES], ids=[c[0] for c in CASES])
def test_the_same_body_with_format_set_is_read_as_that_api(
        client: TestClient, api: str, request_: dict[str, Any], key: str) -> None:
    body = {"request": mixed(request_, key), "format": api}
    resp = client.post("/v1/checks", json=body)
    assert resp.status_code == 200, resp.text
    payload = resp.json()
    CheckResponse.model_validate(payload)
    assert (payload["format"], payload["verdict"]) == (api, "block")
    secrets = [f["location"] for f in payload["findings"] if f["category"] == "secret"]
    assert secrets and all(resolve(body, loc["pointer"])[loc["start"]:loc["end"]] == SECRET for loc in secrets)


def test_the_audited_case_was_allowed_unread_and_is_now_a_422(client: TestClient) -> None:
    # The same Chat body is a block; with `generationConfig: {}` it sniffed as Gemini and came back allow.
    assert client.post("/v1/checks", json={"request": CHAT}).json()["verdict"] == "block"
    error = error_of(client.post("/v1/checks", json={"request": mixed(CHAT, "generationConfig")}))
    assert error["message"] == (
        'the body mixes APIs: it was detected as gemini, which reads "tools" here but not "messages" (read by '
        'openai.chat and anthropic.messages): that text would go unchecked; set "format" to the API the body is '
        "sent to")


def test_a_tie_between_two_apis_stays_the_tie_422(client: TestClient) -> None:
    # An Anthropic body with its markers (`system`) scores as high as generateContent's `contents`: no pick.
    request = {**mixed(ANTHROPIC, "contents"), "system": "You are Acme Travel's booking assistant."}
    error = error_of(client.post("/v1/checks", json={"request": request}))
    assert (error["type"], error["pointer"]) == ("ambiguous_format", "/request")
    assert "reads equally well as" in error["message"]


def test_a_mixed_stream_list_is_still_refused_at_its_foreign_chunk() -> None:
    # A generateContent chunk first makes detection pick gemini, which leaves `messages` unread; the chunks are
    # checked first, so the 422 is still the documented one, at the first chunk that is not Gemini's.
    body = json.loads((REPO / "samples" / "openai_chat_stream.json").read_text(encoding="utf-8"))
    foreign = {"candidates": [{"content": {"role": "model", "parts": [{"text": "hi"}]}}]}
    with pytest.raises(BodyError) as err:
        read_exchange({**body["request"], "contents": FOREIGN["contents"]}, [foreign, *body["response"]])
    assert (err.value.type, err.value.pointer) == ("invalid_body", "/response/1")


# --- bodies that are not refused --------------------------------------------------------------------------------
SAMPLE_FORMATS = {"openai_chat": "openai.chat", "openai_responses": "openai.responses",
                  "anthropic_messages": "anthropic.messages", "gemini_interactions": "gemini.interactions",
                  "gemini_generate_content": "gemini"}
SAMPLES = sorted((REPO / "samples").glob("**/*.json"))


@pytest.mark.parametrize("path", SAMPLES, ids=[p.stem for p in SAMPLES])
def test_every_sample_is_still_read_by_detection(path: Path) -> None:
    body = json.loads(path.read_text(encoding="utf-8"))
    exchange = read_exchange(body["request"], body.get("response"))
    assert exchange.format == next(fmt for prefix, fmt in SAMPLE_FORMATS.items() if path.stem.startswith(prefix))


LEGITIMATE = [
    # Keys two APIs share, read by the adapter detected.
    ("chat: messages, tools", CHAT, None, "openai.chat"),
    ("chat: legacy functions", {**CHAT, "functions": FOREIGN["functions"]}, None, "openai.chat"),
    ("completions: prompt", {"model": "Qwen/Qwen3-8B", "prompt": ASK, "max_tokens": 16}, None, "openai.chat"),
    ("anthropic: system, tools, messages", {**ANTHROPIC, "system": "Be brief.", "tools": [
        {"name": "get_weather", "description": "Weather.", "input_schema": WEATHER_SCHEMA}]}, None,
     "anthropic.messages"),
    ("responses: instructions, input, tools", RESPONSES, None, "openai.responses"),
    ("responses: a prompt template", {"model": "gpt-4.1", "prompt": {"id": "pmpt_123", "version": "2",
                                                                     "variables": {"city": "Lisbon"}},
                                      "input": ASK}, None, "openai.responses"),
    ("interactions: system_instruction, input, tools", {**INTERACTIONS, "tools": [
        {"type": "function", "name": "get_weather", "parameters": WEATHER_SCHEMA}]}, None, "gemini.interactions"),
    ("gemini: camelCase", {**GEMINI, "tools": [{"functionDeclarations": [{"name": "get_weather"}]}]}, None,
     "gemini"),
    ("gemini: snake_case system_instruction", {"system_instruction": {"parts": [{"text": "Be brief."}]},
                                               "contents": GEMINI["contents"]}, None, "gemini"),
    # A foreign key that carries no content is harmless when the detected adapter reads every content key.
    ("chat + generationConfig, chat response", mixed(CHAT, "generationConfig"),
     {"object": "chat.completion", "choices": [{"index": 0, "finish_reason": "stop",
                                                "message": {"role": "assistant", "content": "Done."}}]},
     "openai.chat"),
]


@pytest.mark.parametrize(("request_", "response", "fmt"), [c[1:] for c in LEGITIMATE], ids=[c[0] for c in LEGITIMATE])
def test_bodies_whose_content_keys_are_all_read_are_not_refused(
        request_: dict[str, Any], response: Any, fmt: str) -> None:
    assert read_exchange(request_, response).format == fmt


@pytest.mark.parametrize(("name", "request_"), [
    ("chat_completion_reasoning_2_tool_calls_logprobs.json",
     {"model": "Qwen/Qwen3-8B", "messages": [{"role": "user", "content": "Weather in Paris, time in Tokyo?"}],
      "tools": CHAT["tools"], "tool_choice": "auto", "logprobs": True, "top_logprobs": 5}),
    ("completion_echo_max_tokens0_logprobs0_scoring.json",
     {"model": "Qwen/Qwen3-8B", "prompt": "The capital of France is Paris.", "max_tokens": 0, "echo": True,
      "logprobs": 0}),
    ("responses_reasoning_function_call_message_logprobs.json",
     {"model": "Qwen/Qwen3-8B", "input": "What's the weather in Paris?", "tools": RESPONSES["tools"],
      "include": ["message.output_text.logprobs"], "top_logprobs": 3, "max_output_tokens": 512}),
    ("anthropic_messages_thinking_tool_use.json", {**ANTHROPIC, "thinking": {"type": "enabled",
                                                                              "budget_tokens": 1024}}),
])
def test_vllm_fixtures_with_their_requests_are_not_refused(name: str, request_: dict[str, Any]) -> None:
    assert read_exchange(request_, fixture(name)).format in ADAPTERS


# --- each adapter's declaration is what it reads ---------------------------------------------------------------
# A request holding text under every content key of one API, as that API shapes it.
FULL_REQUESTS = {
    "openai.chat": {**CHAT, "functions": FOREIGN["functions"], "documents": [{"title": "T", "text": HELLO}]},
    "anthropic.messages": {**ANTHROPIC, "system": "Be brief.", "tools": [
        {"name": "get_weather", "description": "Weather.", "input_schema": WEATHER_SCHEMA}]},
    "openai.responses": RESPONSES,
    "gemini.interactions": {**INTERACTIONS, "tools": [
        {"type": "function", "name": "get_weather", "parameters": WEATHER_SCHEMA}]},
    "gemini": {**GEMINI, "tools": [{"functionDeclarations": [{"name": "get_weather"}]}]},
}
# Keys read in place of another one of the same request (legacy Completions' prompt, Gemini's snake spelling).
ALTERNATES = {"openai.chat": {"prompt": HELLO}, "gemini": {"system_instruction": {"parts": [{"text": "Hi."}]}}}


@pytest.mark.parametrize("fmt", list(FULL_REQUESTS))
def test_each_declared_content_key_is_read_by_its_adapter(fmt: str) -> None:
    read: set[str] = set()
    requests = [FULL_REQUESTS[fmt]]
    if fmt in ALTERNATES:  # the other key of a pair, read when the first is absent
        first = {"openai.chat": "messages", "gemini": "systemInstruction"}[fmt]
        requests.append({**{k: v for k, v in FULL_REQUESTS[fmt].items() if k != first}, **ALTERNATES[fmt]})
    for request in requests:
        exchange = read_exchange(request, None, format=fmt)
        pointers = [s.pointer for s in exchange.segments] + [t.pointer for t in exchange.tools.values()]
        read |= {p.split("/")[2] for p in pointers}
    assert read == ADAPTERS[fmt].content_keys
