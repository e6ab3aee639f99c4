"""JSON the callers' stacks produce and orjson refuses, and two `guardrails check` defects.

Python's `json` (vLLM, LiteLLM's proxy, the SDKs, a gateway hook's `json.dumps`) writes and reads escaped lone
surrogates (`"\\ud800"`: half an emoji cut by truncation), `NaN`/`Infinity` and integers of any size. The
service answered them 400 `invalid_json`, and a fail-open gateway then passed the step unchecked; the client
raised `TypeError` on them. `guardrails check` printed whole secrets, and `--format nope` exited 3, not 64.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import orjson
import pytest
from conftest import REPO, sample
from fastapi.testclient import TestClient
from test_litellm_hook import StandInBlocked, _load_hook_with_stand_ins

from guardrails.audit import AuditFilter, open_audit_store
from guardrails.cli import EXIT_BAD_INPUT, EXIT_BY_VERDICT, EXIT_USAGE, main
from guardrails.client import GuardrailsClient
from guardrails.config import Settings
from guardrails.errors import InvalidJSON
from guardrails.jsonbody import loads_body, orjson_compatible
from guardrails.serve import build_app

AWS_KEY = "AKIAZ7QW3ERT5YUI9OPL"
EMAIL = "bob.smith@corp-mail.com"
# An answer cut inside an emoji (a lone high surrogate), a whole emoji (a pair), a lone low surrogate, and a
# secret and an address right next to them: their offsets count the Python string's code points.
ANSWER = f"Done 😀 \ud83d{AWS_KEY}\udc00 write to {EMAIL}\ud800."
HUNDRED_DIGITS = 10**99 + 7
PAST_A_DOUBLE = 10**400  # orjson refuses it; Python's json reads it
ANSWER_POINTER = "/response/choices/0/message/content"


def python_body() -> dict[str, Any]:
    return {
        "request": {"model": "qwen3", "messages": [{"role": "user", "content": "deploy it \ud83d"}],
                    "temperature": float("nan"), "top_p": float("inf"), "seed": HUNDRED_DIGITS,
                    "max_tokens": PAST_A_DOUBLE},
        "response": {"id": "chatcmpl-1", "object": "chat.completion", "model": "qwen3",
                     "choices": [{"index": 0, "finish_reason": "stop",
                                  "message": {"role": "assistant", "content": ANSWER}}],
                     "usage": {"prompt_tokens": PAST_A_DOUBLE, "completion_tokens": 12, "total_tokens": 2**70}},
        "context": {"agent_id": "edge-agent", "tenant": "acme\udfff"},
    }


def python_json(body: Any) -> bytes:
    """What a Python caller sends: `json.dumps`, ASCII-escaped, NaN and big integers as they are."""
    return json.dumps(body).encode()


def settings(tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(policy_dir=REPO / "policies", data_dir=tmp_path / "var", **overrides)


def records(tmp_path: Path) -> list[dict[str, Any]]:
    store = open_audit_store(Settings.resolved_audit_url(settings(tmp_path)), create=False)
    try:
        assert store.verify().ok
        return [json.loads(r.body) for r in store.iter_records(AuditFilter())]
    finally:
        store.close()


def expected_answer() -> str:
    """The answer as the service reads it: each lone surrogate one U+FFFD, the same number of code points."""
    return json.loads(python_json(python_body()))["response"]["choices"][0]["message"]["content"].translate(
        {0xD83D: 0xFFFD, 0xDC00: 0xFFFD, 0xD800: 0xFFFD})


# --- the edge: api/body.py ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "value"), [
    (b'"\\ud800"', "\ufffd"),
    (b'["a\\udc00b", "\\ud83d\\ude00", "\\ud83d"]', ["a\ufffdb", "😀", "\ufffd"]),
    (b'{"\\ud800": NaN}', {"\ufffd": None}),
    (b"[NaN, Infinity, -Infinity, 1e400, -1e400]", [None] * 5),
    (b"[18446744073709551615, -9223372036854775808, 1.5, true, null]",
     [18446744073709551615, -9223372036854775808, 1.5, True, None]),
    (b"[" + b"1" * 100 + b", NaN]", [float("1" * 100), None]),  # a float, as orjson reads it
    (b"[" + b"9" * 400 + b", NaN]", [None, None]),  # past a double: orjson refuses it
])
def test_what_only_pythons_json_reads_is_read_as_orjson_would(raw: bytes, value: Any) -> None:
    assert loads_body(raw) == value
    orjson.dumps(loads_body(raw))  # every encoder downstream takes it


@pytest.mark.parametrize(("raw", "message"), [
    (b'{"request": ', "body is not valid JSON: "),
    (b'\xef\xbb\xbf{"request": {}}', "body is not valid JSON: "),  # a BOM: refused as before
    ('{"a": "é"}'.encode("utf-16"), "the body is not valid UTF-8 at byte 0"),  # json.loads(bytes) would guess
    (b'{"a": "\xff", "b": NaN}', "the body is not valid UTF-8 at byte 7 (0xff)"),
    (b"[" + b"1" * 5000 + b"]", "body is not valid JSON: "),  # past Python's digit limit too
    (b"[" * 5000 + b"NaN" + b"]" * 5000, "body is not valid JSON: "),  # too deep for either reader
    (b"{'a': 1}", "body is not valid JSON: "),
])
def test_what_neither_reader_takes_is_still_invalid_json(raw: bytes, message: str) -> None:
    with pytest.raises(InvalidJSON) as raised:
        loads_body(raw)
    assert raised.value.message.startswith(message), raised.value.message


def test_the_fast_path_returns_orjsons_value_untouched() -> None:
    raw = json.dumps(sample("openai_chat.json")).encode()
    assert loads_body(raw) == orjson.loads(raw)
    assert orjson_compatible(["😀", 1, 2.5, {"k": [None]}]) == ["😀", 1, 2.5, {"k": [None]}]


@pytest.fixture(params=["none", "redacted", "hashed"])
def content_mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def served(tmp_path: Path, content_mode: str) -> Iterator[TestClient]:
    with TestClient(build_app(settings(tmp_path, audit_content=content_mode))) as client:  # lifespan: as uvicorn
        yield client


def test_a_python_callers_body_is_checked_and_recorded(served: TestClient, tmp_path: Path,
                                                       content_mode: str) -> None:
    resp = served.post("/v1/checks", content=python_json(python_body()),
                       headers={"content-type": "application/json"})
    assert resp.status_code == 200, resp.text  # was 400 invalid_json (and a 503 or 500 behind it)
    answer = resp.json()
    assert not [f for f in answer["findings"] if f["category"] == "detector_error"], answer["findings"]
    text = expected_answer()
    located = {f["category"]: f["location"] for f in answer["findings"] if f["location"]["pointer"] == ANSWER_POINTER}
    assert located["secret"] == {"pointer": ANSWER_POINTER, "start": text.index(AWS_KEY),
                                 "end": text.index(AWS_KEY) + len(AWS_KEY)}
    assert located["pii"] == {"pointer": ANSWER_POINTER, "start": text.index(EMAIL),
                              "end": text.index(EMAIL) + len(EMAIL)}
    # The offsets are the caller's: its own string (with its lone surrogates) has the values there.
    sent = python_body()["response"]["choices"][0]["message"]["content"]
    assert sent[located["secret"]["start"]:located["secret"]["end"]] == AWS_KEY
    assert sent[located["pii"]["start"]:located["pii"]["end"]] == EMAIL
    assert answer["verdict"] == "block"

    [record] = records(tmp_path)
    assert record["check_id"] == answer["check_id"] and record["tenant"] == "acme\ufffd"
    assert record["usage"] == {"output_tokens": 12}  # token counts past 64 bits are no counts
    segment = next((s for s in record.get("content", {}).get("segments", ()) if s["pointer"] == ANSWER_POINTER),
                   None)
    if content_mode == "hashed":
        assert segment is not None and segment["sha256"] == hashlib.sha256(text.encode()).hexdigest()
    elif content_mode == "redacted":
        assert segment is not None and segment["text"] == text.replace(AWS_KEY, "[secret]").replace(EMAIL, "[pii]")
    else:
        assert segment is None


def test_the_nemo_endpoint_reads_the_same_bodies(tmp_path: Path) -> None:
    body = {"model": "qwen3", "temperature": float("nan"), "seed": PAST_A_DOUBLE,
            "messages": [{"role": "user", "content": "hi \ud83d"}, {"role": "assistant", "content": ANSWER}]}
    with TestClient(build_app(settings(tmp_path, audit_content="hashed"))) as client:
        resp = client.post("/v1/guardrail/checks", content=python_json(body),
                           headers={"content-type": "application/json"})
    assert resp.status_code == 200, resp.text
    data = resp.json()
    assert data["status"] == "blocked"
    secret = next(f for f in data["guardrails_data"]["findings"] if f["category"] == "secret")
    assert secret["location"] == {"pointer": "/messages/1/content", "start": ANSWER.index(AWS_KEY),
                                  "end": ANSWER.index(AWS_KEY) + len(AWS_KEY)}
    assert len(records(tmp_path)) == 1


# --- the Python client ----------------------------------------------------------------------------------------

def test_the_client_sends_what_orjson_refuses_and_gets_a_verdict(tmp_path: Path) -> None:
    async def run(app: Any) -> list[Any]:
        client = GuardrailsClient("http://guardrails.test", transport=httpx.ASGITransport(app=app))
        try:
            request = {"model": "qwen3", "messages": [{"role": "user", "content": f"hi \ud800 {AWS_KEY}"}],
                       "temperature": float("nan"), "seed": 2**70}
            return [await client.check(request, context={"agent_id": "a"}),
                    await client.check({**request, "seed": PAST_A_DOUBLE})]
        finally:
            await client.aclose()

    with TestClient(build_app(settings(tmp_path))) as served:
        verdicts = asyncio.run(run(served.app))  # was TypeError: str is not valid UTF-8 / Integer exceeds 64-bit
    for verdict in verdicts:
        assert verdict.verdict == "block"
        [secret] = [f for f in verdict.findings if f.category == "secret"]
        assert (secret.location.start, secret.location.end) == (5, 5 + len(AWS_KEY))
        assert not verdict.signals.get("client")  # a real verdict, not the unreachable fallback


# --- the LiteLLM hook (samples/gateway/litellm_guardrail.py) ------------------------------------------------

@pytest.mark.parametrize("mutation", ["lone surrogate", "NaN", "integer past a double"])
def test_a_fail_open_litellm_hook_still_blocks_the_attack(tmp_path: Path, mutation: str) -> None:
    hook = _load_hook_with_stand_ins()
    attack = sample("attacks/openai_chat_exfiltration.json")
    request = json.loads(json.dumps(attack["request"]))
    if mutation == "lone surrogate":
        request["messages"][0]["content"] += "\ud83d"
    elif mutation == "NaN":
        request["temperature"] = float("nan")
    else:
        request["seed"] = PAST_A_DOUBLE
    key = SimpleNamespace(team_id=None, user_id=None, metadata={})

    async def run(app: Any) -> list[str]:
        guardrail = hook.InferenceGuardrails(guardrail_name="g", api_base="http://guardrails.test",
                                             unreachable_fallback="fail_open",
                                             transport=httpx.ASGITransport(app=app))
        data = dict(request, litellm_logging_obj=SimpleNamespace(call_type="acompletion"))
        raised = []
        with pytest.raises(StandInBlocked) as pre:
            await guardrail.async_pre_call_hook(key, None, data, "acompletion")
        raised.append(pre.value.message)
        with pytest.raises(StandInBlocked) as post:
            await guardrail.async_post_call_success_hook(data, key, attack["response"])
        raised.append(post.value.message)
        return raised

    with TestClient(build_app(settings(tmp_path))) as served:
        pre, post = asyncio.run(run(served.app))  # both passed: the service answered 400 and fail_open let it go
    assert pre.startswith("Blocked by guardrails (prompt_injection)")
    assert "secret" in post


# --- guardrails check ---------------------------------------------------------------------------------------

def write(tmp_path: Path, raw: bytes) -> str:
    path = tmp_path / "body.json"
    path.write_bytes(raw)
    return str(path)


def test_the_readable_report_masks_secrets_and_pii(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, json.dumps(sample("attacks/openai_chat_exfiltration.json")).encode())
    assert main(["check", "--policy-dir", str(REPO / "policies"), path]) == EXIT_BY_VERDICT["block"]
    out = capsys.readouterr().out
    assert AWS_KEY not in out and "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzXk2LmQ8vT" not in out
    assert '[87:107]  "AKIA…9OPL"' in out  # the public prefix and last characters, as the evidence previews it
    assert '[130:170]  "…Q8vT"' in out
    assert '"ignore all previous instructions"' in out  # other categories still quote what they found

    body = {"request": {"messages": [{"role": "user", "content": "hi"}]},
            "response": {"choices": [{"index": 0, "message": {"role": "assistant", "content": f"Mail {EMAIL}"}}]}}
    assert main(["check", "--policy-dir", str(REPO / "policies"), write(tmp_path, json.dumps(body).encode())]) \
        == EXIT_BY_VERDICT["warn"]
    out = capsys.readouterr().out
    assert EMAIL not in out and '[5:28]  "….com"' in out


def test_an_unknown_format_option_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, json.dumps(sample("openai_chat.json")).encode())
    assert main(["check", "--format", "nope", path]) == EXIT_USAGE  # was 3, "unreadable input"
    err = capsys.readouterr().err
    assert "--format" in err and "'nope'" in err and "openai.chat" in err
    assert main(["check", "--format", "nope", str(tmp_path / "missing.json")]) == EXIT_USAGE
    # A body that names an unknown format is still unreadable input.
    assert main(["check", write(tmp_path, b'{"request": {"messages": []}, "format": "nope"}')]) == EXIT_BAD_INPUT


def test_the_cli_reads_what_the_http_api_reads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, python_json(python_body()))
    assert main(["check", "--json", "--policy-dir", str(REPO / "policies"), path]) == EXIT_BY_VERDICT["block"]
    answer = json.loads(capsys.readouterr().out)
    text = expected_answer()
    assert {"pointer": ANSWER_POINTER, "start": text.index(AWS_KEY), "end": text.index(AWS_KEY) + len(AWS_KEY)} \
        in [f["location"] for f in answer["findings"]]
    assert main(["check", write(tmp_path, b'{"request": {"messages": []}, "x": NaN')]) == EXIT_BAD_INPUT
    assert "body is not valid JSON" in capsys.readouterr().err
