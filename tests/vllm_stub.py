"""A stub vLLM server for tests: a FastAPI app on 127.0.0.1 (random port) in a background thread.

It answers the endpoints our client uses with vLLM 0.33.0's exact response shapes: every answer starts
from a fixture in shared/fixtures/vllm-0.33.0-responses/ and only the values change. Tokenization is a
toy (words, punctuation, chat markers); logprobs are deterministic: -0.05 per token, `low_logprob` for
tokens listed in `unsure`. Knobs for failure tests: `status` (answer every call with this HTTP code),
`delay_s` (sleep before answering), and `calls` (what was asked, in order).
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

FIXTURES = Path(os.environ.get("GUARDRAILS_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared")) / (
    "fixtures/vllm-0.33.0-responses")
_TOKEN = re.compile(r"<\|[a-z_]+\|>|</?think>|</?tool_call>|\s?\w+|\s?[^\w\s]+|\s+")


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


class VLLMStub:
    def __init__(self, unsure: tuple[str, ...] = (), low_logprob: float = -6.0) -> None:
        if not FIXTURES.is_dir():
            pytest.skip(f"shared fixtures not found at {FIXTURES} (set GUARDRAILS_SHARED_DIR)")
        self.unsure = set(unsure)
        self.low_logprob = low_logprob
        self.status: int | None = None
        self.delay_s = 0.0
        self.guard_p_unsafe = 0.1  # P(Yes) the judge answers with
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.vocab: dict[str, int] = {}
        self.app = self._app()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # --- lifecycle ------------------------------------------------------------------------------
    def __enter__(self) -> VLLMStub:
        config = uvicorn.Config(self.app, host="127.0.0.1", port=0, log_level="error", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("stub vLLM server did not start")
            time.sleep(0.01)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)

    def reset(self) -> None:
        self.status, self.delay_s, self.guard_p_unsafe = None, 0.0, 0.1
        self.calls.clear()

    # --- toy tokenizer ----------------------------------------------------------------------------
    def tokenize(self, text: str) -> list[str]:
        return _TOKEN.findall(text)

    def token_id(self, token: str) -> int:
        return self.vocab.setdefault(token, 1000 + len(self.vocab))

    def logprob(self, token: str) -> float:
        return self.low_logprob if token.strip() in self.unsure else -0.05

    @staticmethod
    def render(messages: list[dict[str, Any]], continue_final: bool) -> str:
        """A Qwen-like chat template; the final message stays open with continue_final_message."""
        parts = []
        for i, m in enumerate(messages):
            body = m.get("content") or ""
            if m.get("reasoning"):
                body = f"<think>\n{m['reasoning']}\n</think>\n\n{body}"
            for call in m.get("tool_calls") or ():
                fn = call["function"]
                body += f'<tool_call>\n{{"name": "{fn["name"]}", "arguments": {fn["arguments"]}}}\n</tool_call>'
            last = i == len(messages) - 1
            parts.append(f"<|im_start|>{m['role']}\n{body}" + ("" if last and continue_final else "<|im_end|>\n"))
        return "".join(parts)

    # --- app --------------------------------------------------------------------------------------
    def _app(self) -> FastAPI:
        app = FastAPI()

        @app.middleware("http")
        async def knobs(request: Request, call_next: Any) -> Any:
            body = await request.body()
            self.calls.append((request.url.path, json.loads(body) if body else {}))
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if self.status is not None:
                return JSONResponse({"error": {"message": "stub failure", "type": "InternalServerError",
                                               "code": self.status}}, status_code=self.status)
            return await call_next(request)

        @app.post("/v1/completions")
        async def completions(request: Request) -> JSONResponse:
            return JSONResponse(self.completions(await request.json()))

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> JSONResponse:
            return JSONResponse(self.chat(await request.json()))

        @app.post("/tokenize")
        async def tokenize(request: Request) -> JSONResponse:
            body = await request.json()
            text = self.render(body["messages"], body.get("continue_final_message", False)) \
                if "messages" in body else body["prompt"]
            ids = [self.token_id(t) for t in self.tokenize(text)]
            return JSONResponse({"count": len(ids), "max_model_len": 32768, "tokens": ids, "token_strs": None})

        @app.post("/detokenize")
        async def detokenize(request: Request) -> JSONResponse:
            ids = (await request.json())["tokens"]
            by_id = {v: k for k, v in self.vocab.items()}
            return JSONResponse({"prompt": "".join(by_id.get(i, "") for i in ids)})

        return app

    def completions(self, body: dict[str, Any]) -> dict[str, Any]:
        """echo + max_tokens 0 scoring, shaped like completion_echo_max_tokens0_logprobs0_scoring.json."""
        out = fixture("completion_echo_max_tokens0_logprobs0_scoring.json")
        tokens = self.tokenize(body["prompt"])
        k = int(body.get("logprobs") or 0)
        offsets, position = [], 0
        for t in tokens:
            offsets.append(position)
            position += len(t)
        values = [self.logprob(t) for t in tokens]
        top: list[Any] = [None] + [self._completion_top(t, v, k) for t, v in zip(tokens[1:], values[1:], strict=True)]
        choice = out["choices"][0]
        choice["text"] = body["prompt"]
        choice["logprobs"] = {"text_offset": offsets, "token_logprobs": [None, *values[1:]], "tokens": tokens,
                              "top_logprobs": top}
        choice["prompt_logprobs"] = [None] + [
            {str(self.token_id(t)): {"logprob": v, "rank": 1 if v > -1 else 5, "decoded_token": t}}
            for t, v in zip(tokens[1:], values[1:], strict=True)]
        out["usage"].update(prompt_tokens=len(tokens), total_tokens=len(tokens) + 1)
        return out

    def _completion_top(self, token: str, value: float, k: int) -> dict[str, float]:
        top = {token: value}
        for j in range(k):
            top.setdefault(f" alt{j}", -1.0 - j if value < -1 else -4.0 - j)
        return top

    def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("prompt_logprobs") is not None:
            return self._chat_scoring(body)
        return self._judge(body)

    def _chat_scoring(self, body: dict[str, Any]) -> dict[str, Any]:
        """continue_final_message scoring, shaped like chat_completion_prompt_logprobs.json."""
        out = fixture("chat_completion_prompt_logprobs.json")
        tokens = self.tokenize(self.render(body["messages"], body.get("continue_final_message", False)))
        k = int(body["prompt_logprobs"])
        entries: list[Any] = [None]
        for t in tokens[1:]:
            v = self.logprob(t)
            entry = {str(self.token_id(t)): {"logprob": v, "rank": 1 if v > -1 else 3, "decoded_token": t}}
            for j in range(k):
                entry.setdefault(str(9000 + j), {"logprob": -1.5 - j, "rank": j + 1, "decoded_token": f" alt{j}"})
            entries.append(entry)
        out["prompt_logprobs"] = entries
        out["usage"].update(prompt_tokens=len(tokens), total_tokens=len(tokens) + 1, completion_tokens=1)
        return out

    def _judge(self, body: dict[str, Any]) -> dict[str, Any]:
        """A one-token Yes/No verdict with logprobs, shaped like chat_completion_content_logprobs.json."""
        import math

        out = copy.deepcopy(fixture("chat_completion_content_logprobs.json"))
        p = min(max(self.guard_p_unsafe, 1e-6), 1 - 1e-6)
        yes, no = math.log(p * 0.98), math.log((1 - p) * 0.98)
        sampled, sampled_lp = ("Yes", yes) if p >= 0.5 else ("No", no)
        alts = [{"token": "Yes", "logprob": yes, "bytes": list(b"Yes")},
                {"token": "No", "logprob": no, "bytes": list(b"No")},
                {"token": " The", "logprob": math.log(0.02), "bytes": list(b" The")}]
        alts.sort(key=lambda a: a["token"] != sampled)  # vLLM: sampled token first
        k = int(body.get("top_logprobs") or 0)
        choice = out["choices"][0]
        choice["message"]["content"] = sampled
        choice["logprobs"] = {"content": [{"token": sampled, "logprob": sampled_lp, "bytes": list(sampled.encode()),
                                           "top_logprobs": alts[:k]}]}
        out["usage"].update(completion_tokens=1)
        return out
