"""Ask vLLM for the logprobs a response came without (teacher-forced scoring, vllm.md §1.4).

* "completions": `POST /v1/completions` with `echo: true, max_tokens: 0, logprobs: k` on raw text (the
  gateway's `raw_output`, or a legacy completions prompt followed by its answer).
* "chat": `POST /v1/chat/completions` with the conversation ending in the assistant's message,
  `continue_final_message: true` and `prompt_logprobs: k`; `POST /tokenize` of the same conversation with
  an empty final message tells where the assistant's tokens start.

Both return `Aligned` streams whose units point into the check body like the response's own logprobs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from operator import itemgetter
from typing import Any

from guardrails.exchange import Exchange, Phase, Segment, SegmentKind
from guardrails.logprobs.align import align
from guardrails.logprobs.analysis import Aligned, generated_segments
from guardrails.logprobs.tokens import TOKEN_ID, read_completions, read_prompt
from guardrails.vllm_client import VLLMClient, VLLMError

_token = itemgetter("token")
ROLE_BY_KIND = {
    SegmentKind.SYSTEM: "system",
    SegmentKind.USER: "user",
    SegmentKind.ASSISTANT: "assistant",
    SegmentKind.TOOL_RESULT: "tool",
    SegmentKind.DOCUMENT: "user",
}


def pull_mode(exchange: Exchange, mode: str = "auto") -> str:
    if mode != "auto":
        return mode
    legacy_prompt = any(s.pointer.startswith("/request/prompt") for s in exchange.segments)
    return "completions" if exchange.raw_output or legacy_prompt else "chat"


async def pull_logprobs(client: VLLMClient, exchange: Exchange, *, top_k: int = 5, mode: str = "auto") -> Aligned:
    """Score the response's generated text on vLLM and align it; raises VLLMError."""
    segments = generated_segments(exchange)
    if pull_mode(exchange, mode) == "completions":
        return await _by_completions(client, exchange, segments, top_k)
    return await _by_chat(client, exchange, segments, top_k)


async def _by_completions(client: VLLMClient, exchange: Exchange, segments: list[Segment], top_k: int) -> Aligned:
    prefix = "".join(s.text for s in exchange.segments
                     if s.phase is Phase.REQUEST and s.pointer.startswith("/request/prompt"))
    scored = exchange.raw_output or "".join(s.text for s in segments)
    answer = await client.completions({"prompt": prefix + scored, "max_tokens": 0, "echo": True,
                                       "logprobs": top_k, "temperature": 0})
    logprobs = _first_choice(answer).get("logprobs")
    if not isinstance(logprobs, Mapping) or not isinstance(logprobs.get("tokens"), list):
        raise VLLMError("vLLM /v1/completions answered without logprobs")
    stream = read_completions(logprobs)
    return Aligned(stream, align(stream, segments, start=len(prefix)), "pulled")


async def _by_chat(client: VLLMClient, exchange: Exchange, segments: list[Segment], top_k: int) -> Aligned:
    history = conversation(exchange)
    final = assistant_message(segments)
    scoring = client.chat({"messages": [*history, final], "add_generation_prompt": False,
                           "continue_final_message": True, "max_tokens": 1, "temperature": 0,
                           "prompt_logprobs": top_k})
    prefix = client.tokenize({"messages": [*history, {"role": "assistant", "content": ""}],
                              "add_generation_prompt": False, "continue_final_message": True})
    answer, tokenized = await asyncio.gather(scoring, prefix)
    prompt_logprobs = answer.get("prompt_logprobs")
    if not isinstance(prompt_logprobs, list):
        raise VLLMError("vLLM /v1/chat/completions answered without prompt_logprobs")
    stream = read_prompt(prompt_logprobs)
    count = tokenized.get("count")
    if not isinstance(count, int):
        count = len(tokenized.get("tokens") or ())
    start = int(stream.starts[count]) if 0 <= count < len(stream) else 0
    return Aligned(stream, align(stream, segments, start=start), "pulled")


def conversation(exchange: Exchange) -> list[dict[str, Any]]:
    """The request's conversation as chat messages, rebuilt from its segments (one message per turn)."""
    messages: list[dict[str, Any]] = []
    last: tuple[int, str] | None = None
    for segment in exchange.segments:
        if segment.phase is not Phase.REQUEST:
            continue
        if segment.kind is SegmentKind.TOOL_CALL:
            call = segment.tool_call
            if call is not None:
                if last != (segment.turn, "assistant"):
                    messages.append({"role": "assistant", "content": ""})
                    last = (segment.turn, "assistant")
                messages[-1].setdefault("tool_calls", []).append(_call(call.id, call.name, call.arguments_raw))
            continue
        if segment.kind is SegmentKind.REASONING:
            continue  # templates drop past reasoning anyway
        role = ROLE_BY_KIND[segment.kind]
        if last == (segment.turn, role):
            messages[-1]["content"] += segment.text
            continue
        message: dict[str, Any] = {"role": role, "content": segment.text}
        if role == "tool":
            message["tool_call_id"] = segment.tool_call_id or ""
        messages.append(message)
        last = (segment.turn, role)
    return messages


def assistant_message(segments: list[Segment]) -> dict[str, Any]:
    """The response as the final assistant message (reasoning, content, tool calls)."""
    message: dict[str, Any] = {"role": "assistant", "content": "".join(
        s.text for s in segments if s.kind is SegmentKind.ASSISTANT)}
    reasoning = "".join(s.text for s in segments if s.kind is SegmentKind.REASONING)
    if reasoning:
        message["reasoning"] = reasoning
    calls = [s.tool_call for s in segments if s.tool_call is not None]
    if calls:
        message["tool_calls"] = [_call(c.id, c.name, c.arguments_raw) for c in calls]
    return message


def _call(call_id: str | None, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id or f"call_{name}", "type": "function", "function": {"name": name, "arguments": arguments}}


def _first_choice(answer: Mapping[str, Any]) -> Mapping[str, Any]:
    choices = answer.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        raise VLLMError("vLLM answered without choices")
    return choices[0]


def token_ids_to_resolve(exchange: Exchange) -> list[int]:
    """Ids of "token_id:N" tokens (`return_tokens_as_token_ids`) in the response's chat-shaped logprobs."""
    ids: set[int] = set()
    for source in exchange.logprobs:
        if source.shape in ("chat", "responses") and _may_hold_ids(source.data):
            for entry in source.data:
                token = entry.get("token") if isinstance(entry, Mapping) else None
                if isinstance(token, str) and token.startswith("token_id:"):
                    match = TOKEN_ID.match(token)
                    if match:
                        ids.add(int(match.group(1)))
    return sorted(ids)


def _may_hold_ids(entries: Any) -> bool:
    """Whether a token string may hold "token_id:": one C-level scan of the joined tokens (most responses
    carry none), or True when an entry is odd (not a dict, no token, not a string) and the careful loop
    must look."""
    try:
        return "token_id:" in "".join(map(_token, entries))
    except (KeyError, TypeError):
        return True


async def resolve_token_ids(client: VLLMClient, ids: list[int]) -> dict[int, str]:
    """id -> text via `/detokenize`, one id per call (concurrency is bounded by the client)."""
    texts = await asyncio.gather(*(client.detokenize([i]) for i in ids))
    return dict(zip(ids, texts, strict=True))
