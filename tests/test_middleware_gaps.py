"""Traffic the middleware used to let through unchecked, through the real ASGI middleware, a fake upstream and the
real check service:

1. A long stream: every re-check re-sent every chunk (~245 bytes per vLLM token), so past ~17k tokens the check
   body outgrew the service's 4 MiB limit and, failing open, the final tool call went out unchecked. Chunks are now
   coalesced (consecutive text fragments joined into one equivalent chunk) once the body would be large.
2. A request sent with `content-encoding: gzip` (or deflate) was "not JSON": neither phase was checked, whatever
   `fail_mode`. It is now decoded for the checks; a coding the middleware cannot decode follows `fail_mode`.
3. A 2xx answer labelled `text/plain` (or nothing) holding JSON, SSE labelled `application/octet-stream`, and SSE
   framed with CR alone passed unchecked. The body now decides how it is read; a body that is neither JSON nor SSE
   follows `fail_mode`.
"""

from __future__ import annotations

import asyncio
import copy
import gzip
import json
import zlib
from typing import Any

import httpx
import orjson
import pytest
from conftest import sample
from test_gateway_limits import Recorder
from test_middleware_asgi import _drop_tool

from guardrails.adapters import read_exchange
from guardrails.client import is_synthetic
from guardrails.config import Settings
from guardrails.contract import CheckResponse
from guardrails.middleware import GuardrailsMiddleware
from guardrails.middleware.apis import (
    ANTHROPIC_MESSAGES,
    GEMINI_GENERATE,
    GEMINI_INTERACTIONS,
    OPENAI_CHAT,
    OPENAI_RESPONSES,
    Api,
    EventKind,
)
from guardrails.middleware.coalesce import coalesce
from guardrails.middleware.sse import SSESplitter
from guardrails.serve import build_app

CHAT = "/v1/chat/completions"
SERVICE_LIMIT = Settings().max_body_bytes  # 4 MiB: the service's default body limit, and the middleware's


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("gaps")
    (root / "policies" / "default").mkdir(parents=True)
    (root / "policies" / "default" / "config.yml").write_text(
        'colang_version: "2.x"\nrails: {input: {flows: []}, output: {flows: []}}\n'
        "detectors:\n  tool_undeclared: {action: block}\n")
    return build_app(Settings(policy_dir=root / "policies", data_dir=root / "var"))


class Upstream:
    """Answers every call with the given status, headers and body parts; records the request bytes it read."""

    def __init__(self, parts: list[bytes], headers: list[tuple[bytes, bytes]], status: int = 200) -> None:
        self.parts, self.headers, self.status = parts, headers, status
        self.received: list[bytes] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        self.received.append(body)
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        for i, part in enumerate(self.parts):
            await send({"type": "http.response.body", "body": part, "more_body": i < len(self.parts) - 1})
            if i % 500 == 0:
                await asyncio.sleep(0)  # lets the middleware's checks interleave, as a network would


class Call:
    """One call through the middleware; `verdicts` are what reached `on_verdict`."""

    def __init__(self, service: Any, upstream: Upstream, fail_mode: str = "open", **options: Any) -> None:
        self.upstream = upstream
        self.client = Recorder("http://guardrails", transport=httpx.ASGITransport(app=service),
                               fail_mode=fail_mode, timeout=60)  # type: ignore[arg-type]
        self.verdicts: list[CheckResponse] = []
        self.app = GuardrailsMiddleware(upstream, client=self.client,
                                        on_verdict=lambda r, _: self.verdicts.append(r), **options)

    def post(self, path: str, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
        async def run() -> httpx.Response:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://gw",
                                         timeout=120) as http:
                return await http.post(path, content=body, headers=headers or {"content-type": "application/json"})

        return asyncio.run(run())


# --- requests and answers ------------------------------------------------------------------------------------

# Per API: path, sample, the tool its answer calls (left undeclared to block), how its SSE events are framed.
APIS: dict[str, tuple[Api, str, str, str]] = {
    "chat": (OPENAI_CHAT, CHAT, "openai_chat_stream.json", "get_weather"),
    "responses": (OPENAI_RESPONSES, "/v1/responses", "openai_responses_stream.json", "get_weather"),
    "messages": (ANTHROPIC_MESSAGES, "/v1/messages", "anthropic_messages_stream.json", "get_weather"),
    "gemini": (GEMINI_GENERATE, "/v1beta/models/gemini-3.7-flash:streamGenerateContent?alt=sse",
               "gemini_generate_content_stream.json", "search_flights"),
    "interactions": (GEMINI_INTERACTIONS, "/v1beta/interactions", "gemini_interactions_stream.json", "search_flights"),
}


def undeclared(request: dict[str, Any], tool: str) -> dict[str, Any]:
    """`request` with `tool` left out of its declared tools (every API's spelling)."""
    request = copy.deepcopy(request)
    _drop_tool(request, tool)
    return request


def sse(chunks: list[Any], sep: bytes = b"\n\n", named: str | None = None) -> list[bytes]:
    line = sep[: len(sep) // 2]
    return [(f"event: {c[named]}".encode() + line if named else b"") + b"data: " + orjson.dumps(c) + sep
            for c in chunks]


def long_stream(api: Api, chunks: list[Any], repeats: int) -> list[Any]:
    """`chunks` with its first text fragment sent `repeats` times over (numbered like the events around it)."""
    at = next(i for i, c in enumerate(chunks) if api.classify(None, c) == EventKind.PROGRESS)
    copies = []
    for n in range(repeats):
        chunk = copy.deepcopy(chunks[at])
        if "sequence_number" in chunk:
            chunk["sequence_number"] = chunks[at]["sequence_number"] + n
        if "event_id" in chunk:
            chunk["event_id"] = f"evt_r{n}"
        copies.append(chunk)
    return chunks[:at] + copies + chunks[at + 1:]


def vllm_chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    """A chunk as vLLM 0.33 sends it: one token per chunk, ~245 bytes."""
    return {"id": "chatcmpl-c4e82f1a07b3d596", "object": "chat.completion.chunk", "created": 1767225600,
            "model": "Qwen/Qwen3-8B", "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                                   "finish_reason": finish, "token_ids": None}],
            "kv_transfer_params": None}


def events_of(raw: bytes) -> list[bytes]:
    splitter = SSESplitter()
    events = [e.raw for e in splitter.feed(raw)]
    tail = splitter.flush()
    return events + ([tail.raw] if tail is not None else [])


# --- 1. long streams -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fail_mode", ["open", "closed"])
def test_a_20k_token_stream_ending_in_an_undeclared_tool_call_is_blocked(service: Any, fail_mode: str) -> None:
    tokens = 20_000
    chunks = [vllm_chunk({"role": "assistant", "content": ""})]
    chunks += [vllm_chunk({"reasoning": " the"}) for _ in range(tokens)]
    call = vllm_chunk({"tool_calls": [{"id": "c0", "type": "function", "index": 0,
                                       "function": {"name": "delete_files", "arguments": ""}}]})
    chunks += [call, vllm_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"path": "/etc"}'}}]}),
               vllm_chunk({}, "tool_calls")]
    parts = [*sse(chunks), b"data: [DONE]\n\n"]
    assert sum(map(len, parts)) > SERVICE_LIMIT  # sent whole, the stream itself would not fit one check body
    request = {"model": "Qwen/Qwen3-8B", "stream": True, "messages": [{"role": "user", "content": "Weather?"}],
               "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]}
    guarded = Call(service, Upstream(parts, [(b"content-type", b"text/event-stream")]), fail_mode)
    resp = guarded.post(CHAT, json.dumps(request).encode())
    sent = events_of(resp.content)
    # Every chunk before the tool call went out as sent; the call's chunk never did; the error event ends it.
    assert sent[:-1] == parts[:tokens + 1]
    assert b'"code":"guardrails_blocked"' in sent[-1] and b"tool_undeclared" in sent[-1]
    # Really checked: no check body near the limit, no fail_mode verdict, the block is the service's own.
    assert max(guarded.client.sizes) < SERVICE_LIMIT // 4
    assert not any(is_synthetic(v) for v in guarded.verdicts)
    assert guarded.verdicts[-1].verdict == "block"


@pytest.mark.parametrize("name", list(APIS))
def test_every_apis_long_stream_is_checked_to_its_end(service: Any, name: str) -> None:
    # A max_check_bytes between the raw and the coalesced size stands for the service's limit (quick to reach).
    api, path, sample_file, tool = APIS[name]
    data = sample(sample_file)
    chunks = long_stream(api, data["response"], 1500)
    named = "type" if name in ("responses", "messages") else "event_type" if name == "interactions" else None
    parts = sse(chunks, b"\r\n\r\n" if name == "gemini" else b"\n\n", named)
    raw = sum(len(orjson.dumps(c)) for c in chunks)
    merged = sum(map(len, coalesce([orjson.dumps(c) for c in chunks], api.coalescing)))  # type: ignore[arg-type]
    assert raw > 1.5 * merged  # the chat sample's logprobs stay: ~200 of its ~500 bytes a token
    limit = (raw + merged) // 2
    request = undeclared(data["request"], tool)
    if name != "gemini":
        request["stream"] = True
    guarded = Call(service, Upstream(parts, [(b"content-type", b"text/event-stream")]), max_check_bytes=limit)
    resp = guarded.post(path, json.dumps(request).encode())
    assert not any(is_synthetic(v) for v in guarded.verdicts)  # never decided by fail_mode (open here)
    assert guarded.verdicts[-1].verdict == "block"
    assert "tool_undeclared" in {str(f.category) for f in guarded.verdicts[-1].findings}
    assert b"tool_undeclared" in events_of(resp.content)[-1]


READERS = [(api, file) for api, _, file, _ in APIS.values()]


@pytest.mark.parametrize("api, sample_file", READERS, ids=list(APIS))
def test_coalesced_chunks_read_as_the_chunks_they_replace(api: Api, sample_file: str) -> None:
    data = sample(sample_file)
    chunks = [orjson.dumps(c) for c in long_stream(api, data["response"], 5)]
    merged = coalesce(chunks, api.coalescing)  # type: ignore[arg-type]
    assert len(merged) < len(chunks)

    def read(body: list[bytes]) -> tuple[Any, ...]:
        exchange = read_exchange(data["request"], [orjson.loads(c) for c in body], format=api.format)
        segments = [(s.kind, s.role, s.text, s.turn, s.tool_call and (s.tool_call.name, str(s.tool_call.arguments)))
                    for s in exchange.segments]
        logprobs: dict[tuple[str, int], list[Any]] = {}
        for source in exchange.logprobs:  # a stream's per-chunk sources are read joined, in order
            entries = source.data if isinstance(source.data, list) else [source.data]
            logprobs.setdefault((source.shape, source.choice), []).extend(entries)
        return segments, exchange.generation, {k: v for k, v in logprobs.items() if k[0] != "gemini"}

    assert read(merged) == read(chunks)


def test_a_tool_name_or_a_switch_from_reasoning_to_text_starts_a_chunk_of_its_own() -> None:
    chunks = [orjson.dumps(vllm_chunk(d)) for d in (
        {"reasoning": "a"}, {"reasoning": "b"}, {"content": "c"}, {"content": "d"},
        {"tool_calls": [{"index": 0, "id": "c0", "type": "function", "function": {"name": "f", "arguments": ""}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"x"'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]})]
    merged = [orjson.loads(c)["choices"][0]["delta"] for c in coalesce(chunks, OPENAI_CHAT.coalescing)]  # type: ignore[arg-type]
    assert merged == [{"reasoning": "ab"}, {"content": "cd"}, orjson.loads(chunks[4])["choices"][0]["delta"],
                      {"tool_calls": [{"index": 0, "function": {"arguments": '{"x": 1}'}}]}]


# --- 2. compressed requests ----------------------------------------------------------------------------------

def chat_answer(request_tools_drop: bool) -> tuple[bytes, bytes]:
    """(request, JSON answer) of the Chat sample; the answer calls get_weather, undeclared when asked."""
    data = sample("openai_chat.json")
    request = undeclared(data["request"], "get_weather") if request_tools_drop else data["request"]
    return json.dumps(request).encode(), json.dumps(data["response"]).encode()


ENCODERS = {"gzip": gzip.compress, "deflate": zlib.compress, "raw-deflate": lambda b: zlib.compress(b)[2:-4]}
JSON_TYPE = [(b"content-type", b"application/json")]


@pytest.mark.parametrize("coding", list(ENCODERS))
def test_a_compressed_request_is_checked_in_both_phases(service: Any, coding: str) -> None:
    request, answer = chat_answer(request_tools_drop=True)
    body = ENCODERS[coding](request)
    header = "deflate" if coding == "raw-deflate" else coding
    guarded = Call(service, Upstream([answer], JSON_TYPE), "closed")
    resp = guarded.post(CHAT, body, {"content-type": "application/json", "content-encoding": header})
    assert resp.status_code == 400 and "tool_undeclared" in resp.json()["error"]["message"]
    assert [(v.phase, v.verdict) for v in guarded.verdicts] == [("request", "allow"), ("response", "block")]
    assert guarded.upstream.received == [body]  # forwarded as sent, still compressed


def test_an_allowed_compressed_request_reaches_the_upstream_untouched(service: Any) -> None:
    request, answer = chat_answer(request_tools_drop=False)
    body = gzip.compress(request)
    guarded = Call(service, Upstream([answer], JSON_TYPE), "closed")
    resp = guarded.post(CHAT, body, {"content-type": "application/json", "content-encoding": "gzip"})
    assert resp.status_code == 200 and resp.content == answer
    assert guarded.upstream.received == [body]
    assert [(v.phase, v.verdict, is_synthetic(v)) for v in guarded.verdicts] == [
        ("request", "allow", False), ("response", "allow", False)]


@pytest.mark.parametrize("coding, body", [
    ("br", b"\x1b\x00\x00"),  # a coding the middleware has no decoder for
    ("zstd", b"(\xb5/\xfd"),
    ("gzip", b"\x1f\x8b not gzip at all"),  # corrupt
    ("gzip, br", gzip.compress(b"{}")),  # br applied last: cannot be undone first
], ids=["br", "zstd", "corrupt-gzip", "gzip-then-br"])
@pytest.mark.parametrize("fail_mode", ["open", "closed"])
def test_a_request_in_a_coding_it_cannot_decode_follows_fail_mode(service: Any, coding: str, body: bytes,
                                                                  fail_mode: str) -> None:
    _, answer = chat_answer(request_tools_drop=True)
    guarded = Call(service, Upstream([answer], JSON_TYPE), fail_mode)
    resp = guarded.post(CHAT, body, {"content-type": "application/json", "content-encoding": coding})
    [verdict] = guarded.verdicts
    assert is_synthetic(verdict) and "request is content-encoded" in verdict.findings[0].message
    if fail_mode == "closed":
        assert resp.status_code == 400 and guarded.upstream.received == []
        assert "request is content-encoded" in resp.json()["error"]["message"]
    else:  # forwarded as sent, and the answer unchecked (the request it answers could not be read)
        assert resp.status_code == 200 and resp.content == answer and guarded.upstream.received == [body]


def test_a_request_too_large_once_decoded_is_decided_like_a_request_too_large(service: Any) -> None:
    request, answer = chat_answer(request_tools_drop=True)
    padded = request[:-1] + b', "user": "' + b"a" * 200_000 + b'"}'
    body = gzip.compress(padded)
    assert len(body) < 2_000 < 100_000 < len(padded)
    guarded = Call(service, Upstream([answer], JSON_TYPE), "closed", max_check_bytes=100_000)
    resp = guarded.post(CHAT, body, {"content-type": "application/json", "content-encoding": "gzip"})
    assert resp.status_code == 400 and "too large" in resp.json()["error"]["message"]
    assert guarded.upstream.received == [] and guarded.client.sizes == []


# --- 3. answers whose content-type says something else ------------------------------------------------------------

@pytest.mark.parametrize("content_type", [b"text/plain", None, b"application/octet-stream"])
def test_a_json_answer_is_checked_whatever_its_content_type(service: Any, content_type: bytes | None) -> None:
    headers = [] if content_type is None else [(b"content-type", content_type)]
    request, answer = chat_answer(request_tools_drop=True)
    blocked = Call(service, Upstream([answer[:100], answer[100:]], headers), "open")
    resp = blocked.post(CHAT, request)
    assert resp.status_code == 400 and "tool_undeclared" in resp.json()["error"]["message"]
    request, answer = chat_answer(request_tools_drop=False)
    allowed = Call(service, Upstream([answer], headers), "open")
    resp = allowed.post(CHAT, request)
    assert resp.status_code == 200 and resp.content == answer
    assert [(v.phase, v.verdict, is_synthetic(v)) for v in allowed.verdicts] == [
        ("request", "allow", False), ("response", "allow", False)]


def chat_stream(drop: bool) -> tuple[bytes, list[dict[str, Any]]]:
    data = sample("openai_chat_stream.json")
    request = undeclared(data["request"], "get_weather") if drop else data["request"]
    return json.dumps({**request, "stream": True}).encode(), data["response"]


@pytest.mark.parametrize("framing", ["octet-stream", "cr", "cr-octet-stream", "crlf-untyped"])
def test_an_sse_answer_is_checked_whatever_its_type_and_line_endings(service: Any, framing: str) -> None:
    sep = b"\r\r" if framing.startswith("cr-") or framing == "cr" else b"\r\n\r\n" if "crlf" in framing else b"\n\n"
    content_type = {"octet-stream": b"application/octet-stream", "cr": b"text/event-stream",
                    "cr-octet-stream": b"application/octet-stream", "crlf-untyped": None}[framing]
    headers = [] if content_type is None else [(b"content-type", content_type)]
    request, chunks = chat_stream(drop=True)
    parts = [*sse(chunks, sep), b"data: [DONE]" + sep]
    guarded = Call(service, Upstream(parts, headers), "open")
    resp = guarded.post(CHAT, request)
    first_call = next(i for i, p in enumerate(parts) if b'"name":"get_weather"' in p)
    assert resp.content.startswith(b"".join(parts[:first_call]))
    error = resp.content[len(b"".join(parts[:first_call])):]
    assert b"guardrails_blocked" in error and b"tool_undeclared" in error and error.endswith(sep)
    assert b'"name":"get_weather"' not in resp.content and b"[DONE]" not in resp.content
    # An allowed stream passes byte for byte.
    request, chunks = chat_stream(drop=False)
    allowed = Call(service, Upstream(parts, headers), "open")
    assert allowed.post(CHAT, request).content == b"".join(parts)
    assert not any(is_synthetic(v) for v in allowed.verdicts) and len(allowed.client.sizes) > 2


@pytest.mark.parametrize("fail_mode, status", [("open", 200), ("closed", 400)])
@pytest.mark.parametrize("content_type", [b"text/plain", b"application/json", b"text/html"])
def test_an_answer_that_is_neither_json_nor_sse_follows_fail_mode(service: Any, content_type: bytes, fail_mode: str,
                                                                  status: int) -> None:
    request, _ = chat_answer(request_tools_drop=False)
    body = b"Sure! I will call delete_files now."
    guarded = Call(service, Upstream([body], [(b"content-type", content_type)]), fail_mode)
    resp = guarded.post(CHAT, request)
    assert resp.status_code == status
    assert (resp.content == body) is (fail_mode == "open")
    verdict = guarded.verdicts[-1]
    assert verdict.phase == "response" and is_synthetic(verdict)
    assert "neither JSON nor an SSE stream" in verdict.findings[0].message


def test_an_empty_or_non_2xx_answer_passes_as_before(service: Any) -> None:
    request, _ = chat_answer(request_tools_drop=False)
    empty = Call(service, Upstream([b""], [(b"content-type", b"application/json")]), "closed")
    assert empty.post(CHAT, request).status_code == 200 and [v.phase for v in empty.verdicts] == ["request"]
    error = Call(service, Upstream([b"upstream exploded"], [(b"content-type", b"text/plain")], 500), "closed")
    resp = error.post(CHAT, request)
    assert resp.status_code == 500 and resp.content == b"upstream exploded"


def test_sse_events_split_on_cr_crlf_and_lf_alike() -> None:
    raw = b"data: 1\r\rdata: 2\r\n\r\ndata: 3\n\nevent: x\rdata: 4\r\r"
    for size in (1, 2, 5, len(raw)):
        splitter = SSESplitter()
        events = [e for i in range(0, len(raw), size) for e in splitter.feed(raw[i:i + size])]
        tail = splitter.flush()
        events += [tail] if tail is not None else []
        assert b"".join(e.raw for e in events) == raw
        assert [e.data for e in events] == [b"1", b"2", b"3", b"4"] and events[3].name == "x"
    # A CR at the end of what arrived may be the first half of a CRLF: that event waits for the next byte.
    splitter = SSESplitter()
    assert splitter.feed(b"data: 1\r\n\r") == []
    assert [e.raw for e in splitter.feed(b"\n")] == [b"data: 1\r\n\r\n"] and splitter.separator == b"\r\n\r\n"



def test_a_gzip_body_of_many_members_is_refused_not_decoded_member_by_member() -> None:
    """200,000 empty gzip members (4 MiB) held the event loop 20 s: each member's pass copied the rest."""
    from guardrails.middleware.asgi import MAX_GZIP_MEMBERS, _decode, _Undecodable

    with pytest.raises(_Undecodable, match="gzip members") as refused:
        _decode(gzip.compress(b"") * 209_715, [b"gzip"], 4 * 1024 * 1024)
    assert not refused.value.too_large  # decided by fail_mode as an undecodable body
    few = b"".join(gzip.compress(part) for part in (b'{"a":', b" 1", b"}"))
    assert MAX_GZIP_MEMBERS >= 3 and _decode(few, [b"gzip"], 1024) == b'{"a": 1}'
