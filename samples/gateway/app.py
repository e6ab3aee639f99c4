"""A minimal gateway in front of vLLM with the guardrails middleware installed.

It forwards every path (OpenAI `/v1/chat/completions`, `/v1/responses`, `/v1/completions`, `/v1/models`,
Anthropic `/v1/messages`, ...) to `VLLM_BASE_URL` unchanged, streaming when the upstream streams. The only
guardrails line is the `add_middleware` call; everything else is an ordinary reverse proxy.

    VLLM_BASE_URL=http://127.0.0.1:8001 GUARDRAILS_URL=http://127.0.0.1:8000 python samples/gateway/app.py
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse

from guardrails.middleware import GuardrailsMiddleware

# Per-connection headers that a proxy must not copy (RFC 9110 §7.6.1), plus what the HTTP stack recomputes.
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
              "transfer-encoding", "upgrade", "host", "content-length"}
# Set by the gateway's own HTTP server on every answer: copied from the upstream, the client would get two.
SERVER_SET = {"date", "server"}


def create_gateway(vllm_base_url: str, *, guardrails_url: str | None = None, **middleware: Any) -> FastAPI:
    """The gateway app; without `guardrails_url` it is the same proxy with no checks (for comparisons)."""
    app = FastAPI(title="Sample vLLM gateway with guardrails")
    upstream: dict[str, httpx.AsyncClient] = {}

    def client() -> httpx.AsyncClient:
        # Made on first use so it belongs to the server's event loop.
        if "http" not in upstream:
            upstream["http"] = httpx.AsyncClient(base_url=vllm_base_url.rstrip("/"),
                                                 timeout=httpx.Timeout(600.0, connect=5.0))
        return upstream["http"]

    @app.api_route("/{path:path}", methods=["GET", "POST", "DELETE"])
    async def proxy(path: str, request: Request) -> Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        headers["accept-encoding"] = "identity"  # the middleware reads bodies: keep them uncompressed
        outgoing = client().build_request(request.method, "/" + path, params=request.query_params,
                                          headers=headers, content=await request.body())
        answer = await client().send(outgoing, stream=True)
        reply_headers = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP | SERVER_SET}
        if answer.headers.get("content-type", "").startswith("text/event-stream"):
            return StreamingResponse(_relay(answer), status_code=answer.status_code, headers=reply_headers)
        # The bytes as sent (`aread()` would decompress them under the upstream's `content-encoding` header).
        body = b"".join([chunk async for chunk in _relay(answer)])
        return Response(body, status_code=answer.status_code, headers=reply_headers)

    if guardrails_url:
        app.add_middleware(GuardrailsMiddleware, url=guardrails_url, **middleware)
    return app


async def _relay(answer: httpx.Response) -> AsyncIterator[bytes]:
    try:
        async for chunk in answer.aiter_raw():
            yield chunk
    finally:
        await answer.aclose()  # also when the client (or the middleware, on a block) stops the stream


def create_gateway_from_env() -> FastAPI:
    return create_gateway(
        os.environ.get("VLLM_BASE_URL", "http://127.0.0.1:8001"),
        guardrails_url=os.environ.get("GUARDRAILS_URL", "http://127.0.0.1:8000"),
        api_key=os.environ.get("GUARDRAILS_API_KEY") or None,
        policy=os.environ.get("GUARDRAILS_POLICY") or None,
        fail_mode=os.environ.get("GUARDRAILS_FAIL_MODE", "open"),
    )


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(create_gateway_from_env(), host=os.environ.get("GATEWAY_HOST", "127.0.0.1"),
                port=int(os.environ.get("GATEWAY_PORT", "8080")))
