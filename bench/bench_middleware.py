"""What the gateway middleware costs: the same upstream streams with and without GuardrailsMiddleware.

    .venv/bin/python bench/bench_middleware.py            # about a minute on a 2-core machine
    .venv/bin/python bench/bench_middleware.py --quick

Everything runs in one process over ASGI (no sockets), so the figures are the middleware's own work plus
the check service's (JSON framing, check bodies, detectors), not network time. The service uses the
repository's default policy (every enabled detector); the audit log and state store are off unless
`--audit` (each check, mid-stream re-checks included, then writes an audit record). Scenarios:

* fixture streams: the vLLM 0.33.0 Chat stream (35 events, logprobs on), the Responses and Anthropic stream
  samples, delivered as fast as possible. Added latency = guarded - plain for the whole stream, with the
  default bounded frequency (0.2 s), with a check at every reasoning/argument chunk, and final-check only.
* paced long reasoning: a Chat stream of 400 reasoning chunks at 2 ms each (500 tokens/s, a fast decode),
  then a tool call: the added time to last byte and the number of checks the bounded frequency spends.

Medians and p95 in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from guardrails.client import GuardrailsClient  # noqa: E402
from guardrails.config import Settings  # noqa: E402
from guardrails.middleware import GuardrailsMiddleware  # noqa: E402
from guardrails.serve import build_app  # noqa: E402

SHARED = REPO.parent / "shared" / "fixtures" / "vllm-0.33.0-responses"
CHAT_SSE = SHARED / "chat_completion_stream_reasoning_tool_call_logprobs.sse"


def sample(name: str) -> dict[str, Any]:
    return json.loads((REPO / "samples" / name).read_text())


def named_events(chunks: list[dict[str, Any]], key: str) -> list[bytes]:
    return [f"event: {c[key]}\ndata: ".encode() + json.dumps(c, separators=(",", ":")).encode() + b"\n\n"
            for c in chunks]


def chat_events() -> list[bytes]:
    return [e + b"\n\n" for e in CHAT_SSE.read_bytes().split(b"\n\n") if e]


def long_reasoning_events(n: int) -> list[bytes]:
    events = chat_events()
    reasoning = [e for e in events if b'"reasoning":' in e]
    first = events.index(reasoning[0])
    body = [reasoning[i % len(reasoning)] for i in range(n)]
    return events[:first] + body + events[first + len(reasoning):]


class Upstream:
    """Streams `events` on every POST, `delay_s` apart."""

    def __init__(self) -> None:
        self.events: list[bytes] = []
        self.delay_s = 0.0
        self.app = Starlette(routes=[Route("/{path:path}", self.handle, methods=["POST"])])

    async def handle(self, request: Request) -> StreamingResponse:
        await request.body()

        async def produce() -> AsyncIterator[bytes]:
            for event in self.events:
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                yield event

        return StreamingResponse(produce(), media_type="text/event-stream")


class CountingClient(GuardrailsClient):
    checks = 0

    async def check_raw(self, body: bytes, **options: Any) -> Any:
        self.checks += 1
        return await super().check_raw(body, **options)


async def fetch(app: Any, path: str, body: bytes) -> float:
    started = time.perf_counter()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as http:
        resp = await http.post(path, content=body, headers={"content-type": "application/json"})
        assert resp.status_code == 200 and b"guardrails_blocked" not in resp.content, resp.content[-300:]
    return time.perf_counter() - started


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000


async def measure(service: Any, upstream: Upstream, path: str, request: dict[str, Any], n: int,
                  **options: Any) -> tuple[list[float], list[float], float]:
    """(plain seconds, guarded seconds, checks per stream), interleaved so noise hits both alike."""
    client = CountingClient("http://svc", transport=httpx.ASGITransport(app=service))
    guarded = GuardrailsMiddleware(upstream.app, client=client, **options)
    body = json.dumps(request).encode()
    await fetch(guarded, path, body)  # warm
    client.checks = 0
    plain_s, guarded_s = [], []
    for _ in range(n):
        plain_s.append(await fetch(upstream.app, path, body))
        guarded_s.append(await fetch(guarded, path, body))
    return plain_s, guarded_s, client.checks / n


def row(label: str, plain: list[float], guarded: list[float], checks: float) -> str:
    added = [g - p for g, p in zip(guarded, plain, strict=True)]
    return (f"| {label} | {statistics.median(plain) * 1000:.2f} | {statistics.median(guarded) * 1000:.2f} | "
            f"{statistics.median(added) * 1000:.2f} | {pct(added, 0.95):.2f} | {checks:.1f} |")


async def main(quick: bool, audit: bool) -> None:
    n = 10 if quick else 40
    with tempfile.TemporaryDirectory() as data_dir:
        store = "" if audit else "none"  # "": SQLite under data_dir, as `guardrails serve` does
        service = build_app(Settings(policy_dir=REPO / "policies", data_dir=Path(data_dir), audit_url=store,
                                     state_url=store))
        await run_scenarios(service, n, quick)


async def run_scenarios(service: Any, n: int, quick: bool) -> None:
    upstream = Upstream()
    chat_request = sample("openai_chat_stream.json")["request"] | {"stream": True}
    streams = [
        ("chat stream (35 events)", "/v1/chat/completions", chat_events(), chat_request),
        ("responses stream (57 events)", "/v1/responses",
         named_events(sample("openai_responses_stream.json")["response"], "type"),
         sample("openai_responses_stream.json")["request"] | {"stream": True}),
        ("anthropic stream (20 events)", "/v1/messages",
         named_events(sample("anthropic_messages_stream.json")["response"], "type"),
         sample("anthropic_messages_stream.json")["request"] | {"stream": True}),
    ]
    modes = [("bounded 0.2 s", {}), ("every chunk", {"stream_check_interval_s": 0.0}),
             ("final only", {"incremental": False})]
    print("| stream, mode | plain ms | guarded ms | added median ms | added p95 ms | checks/stream |")
    print("|---|---|---|---|---|---|")
    for label, path, events, request in streams:
        upstream.events, upstream.delay_s = events, 0.0
        for mode, options in modes:
            result = await measure(service, upstream, path, request, n, **options)
            print(row(f"{label}, {mode}", *result), flush=True)
    upstream.events, upstream.delay_s = long_reasoning_events(400), 0.002
    paced_n = 2 if quick else 5
    for mode, options in modes[::2]:
        result = await measure(service, upstream, "/v1/chat/completions", chat_request, paced_n, **options)
        print(row(f"paced 400 reasoning chunks @2 ms, {mode}", *result), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--audit", action="store_true", help="keep the SQLite audit log and state store on")
    args = parser.parse_args()
    asyncio.run(main(args.quick, args.audit))
