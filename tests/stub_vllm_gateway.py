"""A stub model server for gateway tests: answers every API the middleware knows with recorded shapes.

* OpenAI Chat, Responses and Anthropic Messages (what vLLM serves): non-streaming bodies are the exact bytes
  of the vLLM 0.33.0 fixtures in shared/fixtures/vllm-0.33.0-responses/; the Chat stream is the fixture's
  `.sse` file, event by event; Responses and Messages streams are the repository samples framed the way
  vLLM frames them (`event: <type>` + `data: <json>`).
* Gemini generateContent / streamGenerateContent (JSON array, or SSE with `alt=sse`, CRLF-framed like
  Google's) and Interactions, from the repository samples.

`events_sent` counts stream events actually written (a stopped stream stops generating); `delay_s` spaces
events like a real decode loop. `ServerThread` runs any ASGI app on a free loopback port.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples"
FIXTURES = Path(os.environ.get("GUARDRAILS_SHARED_DIR", REPO.parent / "shared")) / "fixtures/vllm-0.33.0-responses"
CHAT_FIXTURE = "chat_completion_reasoning_2_tool_calls_logprobs.json"
CHAT_SSE = "chat_completion_stream_reasoning_tool_call_logprobs.sse"
RESPONSES_FIXTURE = "responses_reasoning_function_call_message_logprobs.json"
MESSAGES_FIXTURE = "anthropic_messages_thinking_tool_use.json"


def fixtures_present() -> bool:
    return (FIXTURES / CHAT_SSE).exists()


def sample(name: str) -> dict[str, Any]:
    return json.loads((SAMPLES / name).read_text(encoding="utf-8"))


def _compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _named_events(chunks: list[dict[str, Any]], key: str) -> list[bytes]:
    return [f"event: {c[key]}\n".encode() + b"data: " + _compact(c) + b"\n\n" for c in chunks]


class StubModelServer:
    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.events_sent = 0
        self.requests: list[tuple[str, bytes]] = []
        self.app = Starlette(routes=[
            Route("/v1/chat/completions", self._chat, methods=["POST"]),
            Route("/v1/responses", self._responses, methods=["POST"]),
            Route("/v1/messages", self._messages, methods=["POST"]),
            Route("/v1beta/interactions", self._interactions, methods=["POST"]),
            Route("/v1beta/models/{call:path}", self._gemini, methods=["POST"]),
        ])

    # --- bodies -------------------------------------------------------------------------------------
    @staticmethod
    def chat_stream_events() -> list[bytes]:
        raw = (FIXTURES / CHAT_SSE).read_bytes()
        return [event + b"\n\n" for event in raw.split(b"\n\n") if event]

    @staticmethod
    def fixture_bytes(name: str) -> bytes:
        return (FIXTURES / name).read_bytes()

    # --- routes -------------------------------------------------------------------------------------
    async def _body(self, request: Request) -> dict[str, Any]:
        raw = await request.body()
        self.requests.append((request.url.path, raw))
        return json.loads(raw)

    async def _chat(self, request: Request) -> Response:
        if (await self._body(request)).get("stream"):
            return self._sse(self.chat_stream_events())
        return self._json(self.fixture_bytes(CHAT_FIXTURE))

    async def _responses(self, request: Request) -> Response:
        if (await self._body(request)).get("stream"):
            return self._sse(_named_events(sample("openai_responses_stream.json")["response"], "type"))
        return self._json(self.fixture_bytes(RESPONSES_FIXTURE))

    async def _messages(self, request: Request) -> Response:
        if (await self._body(request)).get("stream"):
            return self._sse(_named_events(sample("anthropic_messages_stream.json")["response"], "type"))
        return self._json(self.fixture_bytes(MESSAGES_FIXTURE))

    async def _interactions(self, request: Request) -> Response:
        if (await self._body(request)).get("stream"):
            return self._sse(_named_events(sample("gemini_interactions_stream.json")["response"], "event_type"))
        return self._json(_compact(sample("gemini_interactions.json")["response"]))

    async def _gemini(self, request: Request) -> Response:
        await self._body(request)
        if request.path_params["call"].endswith(":streamGenerateContent"):
            chunks = sample("gemini_generate_content_stream.json")["response"]
            if request.query_params.get("alt") == "sse":
                return self._sse([b"data: " + _compact(c) + b"\r\n\r\n" for c in chunks])
            return self._json(_compact(chunks))
        return self._json(_compact(sample("gemini_generate_content.json")["response"]))

    @staticmethod
    def _json(body: bytes) -> Response:
        return Response(body, media_type="application/json")

    def _sse(self, events: list[bytes]) -> StreamingResponse:
        async def produce() -> AsyncIterator[bytes]:
            for event in events:
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                self.events_sent += 1
                yield event

        return StreamingResponse(produce(), media_type="text/event-stream")


class ServerThread:
    """Serve an ASGI app with uvicorn on 127.0.0.1 and a free port, in a daemon thread."""

    def __init__(self, app: Any) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self.url = ""

    def __enter__(self) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.01)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)
