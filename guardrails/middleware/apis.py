"""What the middleware needs to know about each model API: how to recognise it from the request path, the
check-body `format` it maps to, its native error body and SSE error event, which stream events carry
answer text, reasoning or tool calls (they trigger incremental checks), and which of a stream chunk's values are
fragments that consecutive chunks may join (`Coalescing`: a long stream's check body)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import orjson

from guardrails.middleware.coalesce import Coalescing


class EventKind(IntEnum):
    """What a stream event means for incremental checking, from least to most urgent."""

    OTHER = 0  # metadata, usage, signatures: checked at the next trigger
    PROGRESS = 1  # an answer-text, reasoning or tool-argument fragment: checked at bounded frequency
    BOUNDARY = 2  # a reasoning or tool-call block ended: checked if fragments are pending
    COPY = 3  # a whole copy of what deltas streamed (Responses `.done` events): a client may read it instead of
    #           the deltas, and it may say what they did not, so it is always checked before it is forwarded
    TOOL_START = 4  # a tool call's name is known: always checked before it is forwarded
    TERMINAL = 5  # the stream's success marker: the final output-phase check runs before it


@dataclass(frozen=True, slots=True)
class BlockNotice:
    """Why a call was blocked, as the client will read it."""

    message: str
    check_id: str
    status: int = 400
    # Failing closed because the service gave no answer: a server-side error (retryable), not the caller's.
    unavailable: bool = False


@dataclass(frozen=True, slots=True)
class Api:
    name: str
    format: str  # the check body's `format`
    error_body: Callable[[BlockNotice], dict[str, Any]]
    sse_error: Callable[[BlockNotice, bytes], bytes]  # (notice, event separator) -> SSE event bytes
    classify: Callable[[str | None, Any], EventKind]  # (SSE event name, parsed data) -> kind
    coalescing: Coalescing | None = None  # how consecutive stream chunks merge (None: they never do)


# --- native error shapes ---------------------------------------------------------------------------

def _openai_error(notice: BlockNotice) -> dict[str, Any]:
    kind, code = (("api_error", "guardrails_unavailable") if notice.unavailable
                  else ("invalid_request_error", "guardrails_blocked"))
    return {"error": {"message": notice.message, "type": kind, "param": None, "code": code}}


def _anthropic_error(notice: BlockNotice) -> dict[str, Any]:
    kind = "api_error" if notice.unavailable else "invalid_request_error"
    return {"type": "error", "error": {"type": kind, "message": notice.message}}


def _google_error(notice: BlockNotice) -> dict[str, Any]:
    status = "UNAVAILABLE" if notice.unavailable else "INVALID_ARGUMENT"
    return {"error": {"code": notice.status, "message": notice.message, "status": status}}


def _data_event(payload: Mapping[str, Any], sep: bytes, event: str | None = None) -> bytes:
    head = f"event: {event}{sep.decode()[: len(sep) // 2]}".encode() if event else b""
    return head + b"data: " + orjson.dumps(payload) + sep


def _openai_chat_sse(notice: BlockNotice, sep: bytes) -> bytes:
    # The OpenAI SDKs raise APIError on a data event with an `error` key; no [DONE] follows.
    return _data_event(_openai_error(notice), sep)


def _openai_responses_sse(notice: BlockNotice, sep: bytes) -> bytes:
    # Both a Responses `error` event (type/code/message/param) and, for the SDKs, the `error` object.
    error = _openai_error(notice)["error"]
    payload = {"type": "error", "code": error["code"], "message": notice.message, "param": None,
               "sequence_number": 0, "error": error}
    return _data_event(payload, sep, "error")


def _anthropic_sse(notice: BlockNotice, sep: bytes) -> bytes:
    return _data_event(_anthropic_error(notice), sep, "error")


def _gemini_sse(notice: BlockNotice, sep: bytes) -> bytes:
    return _data_event(_google_error(notice), sep)


def _interactions_sse(notice: BlockNotice, sep: bytes) -> bytes:
    return _data_event({"event_type": "error", **_google_error(notice)}, sep, "error")


# --- stream event classification -------------------------------------------------------------------

def _chat_kind(event: str | None, data: Any) -> EventKind:
    kind = EventKind.OTHER
    for choice in data.get("choices") or () if isinstance(data, dict) else ():
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if not isinstance(delta, dict):
            continue
        for call in delta.get("tool_calls") or ():
            function = call.get("function") if isinstance(call, dict) else None
            named = isinstance(function, dict) and function.get("name")
            kind = max(kind, EventKind.TOOL_START if named else EventKind.PROGRESS)
        if delta.get("reasoning") or delta.get("reasoning_content") or delta.get("content") or delta.get("refusal"):
            kind = max(kind, EventKind.PROGRESS)
    return kind


_RESPONSES_KINDS = {
    "response.output_text.delta": EventKind.PROGRESS,
    "response.refusal.delta": EventKind.PROGRESS,
    "response.reasoning_text.delta": EventKind.PROGRESS,
    "response.reasoning_summary_text.delta": EventKind.PROGRESS,
    "response.function_call_arguments.delta": EventKind.PROGRESS,
    "response.custom_tool_call_input.delta": EventKind.PROGRESS,
    "response.output_item.done": EventKind.COPY,
    "response.content_part.done": EventKind.COPY,
    "response.output_text.done": EventKind.COPY,
    "response.refusal.done": EventKind.COPY,
    "response.reasoning_text.done": EventKind.COPY,
    "response.reasoning_summary_text.done": EventKind.COPY,
    "response.reasoning_summary_part.done": EventKind.COPY,
    "response.function_call_arguments.done": EventKind.COPY,
    "response.custom_tool_call_input.done": EventKind.COPY,
    "response.completed": EventKind.TERMINAL,
    "response.incomplete": EventKind.TERMINAL,
}


def _responses_kind(event: str | None, data: Any) -> EventKind:
    kind_name = data.get("type") if isinstance(data, dict) else None
    if kind_name == "response.output_item.added":
        item = data.get("item")
        return EventKind.TOOL_START if isinstance(item, dict) and item.get("name") else EventKind.OTHER
    return _RESPONSES_KINDS.get(kind_name, EventKind.OTHER) if isinstance(kind_name, str) else EventKind.OTHER


@dataclass(frozen=True, slots=True)
class _BlockEvents:
    """Streams of typed events around content blocks (Anthropic) or steps (Interactions): a start event
    naming a tool, deltas, a stop event per block, and one final event."""

    type_key: str
    delta: str
    progress_deltas: tuple[str, ...]
    start: str
    started: str  # the start event's field holding the block
    stop: str
    terminal: str

    def __call__(self, event: str | None, data: Any) -> EventKind:
        if not isinstance(data, dict):
            return EventKind.OTHER
        kind_name = data.get(self.type_key)
        if kind_name == self.delta:
            delta = data.get("delta")
            delta_type = delta.get("type") if isinstance(delta, dict) else None
            return EventKind.PROGRESS if delta_type in self.progress_deltas else EventKind.OTHER
        if kind_name == self.start:
            block = data.get(self.started)
            return EventKind.TOOL_START if isinstance(block, dict) and block.get("name") else EventKind.OTHER
        if kind_name == self.stop:
            return EventKind.BOUNDARY
        return EventKind.TERMINAL if kind_name == self.terminal else EventKind.OTHER


_anthropic_kind = _BlockEvents("type", "content_block_delta", ("text_delta", "thinking_delta", "input_json_delta"),
                               "content_block_start", "content_block", "content_block_stop", "message_stop")
_interactions_kind = _BlockEvents("event_type", "step.delta", ("text", "thought_summary", "arguments_delta"),
                                  "step.start", "step", "step.stop", "interaction.completed")


def _gemini_kind(event: str | None, data: Any) -> EventKind:
    kind = EventKind.OTHER
    for candidate in data.get("candidates") or () if isinstance(data, dict) else ():
        if not isinstance(candidate, dict):
            continue
        content = candidate.get("content")
        for part in content.get("parts") or () if isinstance(content, dict) else ():
            if isinstance(part, dict) and part.get("functionCall"):
                kind = max(kind, EventKind.TOOL_START)
            elif isinstance(part, dict) and (part.get("thought") or part.get("text")):
                kind = max(kind, EventKind.PROGRESS)
        if candidate.get("finishReason"):
            kind = max(kind, EventKind.TERMINAL)
    return kind


# --- coalescing: what consecutive chunks may differ in and still be one chunk ---------------------------------
# Paths the adapters read fragment by fragment, in order. A chunk naming a tool (`function/name`, a block or step
# start), a finish reason or another kind of text differs elsewhere, so it stays a chunk of its own.

_CHAT_COALESCING = Coalescing(
    joined=("choices/*/delta/content", "choices/*/delta/reasoning", "choices/*/delta/reasoning_content",
            "choices/*/delta/refusal", "choices/*/delta/tool_calls/*/function/arguments",
            "choices/*/delta/tool_calls/*/custom/input"),
    listed=("choices/*/logprobs/content", "choices/*/token_ids"),
    latest=("usage",),  # vLLM's continuous usage stats: cumulative, the last one stands
)
_RESPONSES_COALESCING = Coalescing(joined=("delta",), listed=("logprobs",),  # the `*.delta` events
                                   latest=("sequence_number", "obfuscation"))
_ANTHROPIC_COALESCING = Coalescing(joined=("delta/text", "delta/thinking", "delta/partial_json"))
_GEMINI_COALESCING = Coalescing(
    joined=("candidates/*/content/parts/*/text",),
    listed=("candidates/*/logprobsResult/chosenCandidates", "candidates/*/logprobsResult/topCandidates"),
    latest=("usageMetadata",),
)
_INTERACTIONS_COALESCING = Coalescing(joined=("delta/text", "delta/content", "delta/content/text", "delta/arguments"),
                                      latest=("event_id",))

OPENAI_CHAT = Api("openai.chat", "openai.chat", _openai_error, _openai_chat_sse, _chat_kind, _CHAT_COALESCING)
OPENAI_RESPONSES = Api("openai.responses", "openai.responses", _openai_error, _openai_responses_sse,
                       _responses_kind, _RESPONSES_COALESCING)
ANTHROPIC_MESSAGES = Api("anthropic.messages", "anthropic.messages", _anthropic_error, _anthropic_sse,
                         _anthropic_kind, _ANTHROPIC_COALESCING)
GEMINI_GENERATE = Api("gemini", "gemini", _google_error, _gemini_sse, _gemini_kind, _GEMINI_COALESCING)
GEMINI_INTERACTIONS = Api("gemini.interactions", "gemini.interactions", _google_error, _interactions_sse,
                          _interactions_kind, _INTERACTIONS_COALESCING)

# Matched on the path's end so a gateway prefix (/openai/v1/chat/completions) still works.
_ROUTES: tuple[tuple[re.Pattern[str], Api], ...] = (
    (re.compile(r"/v1/chat/completions/?$"), OPENAI_CHAT),
    (re.compile(r"/v1/responses/?$"), OPENAI_RESPONSES),
    (re.compile(r"/v1/messages/?$"), ANTHROPIC_MESSAGES),
    (re.compile(r"/v1(?:beta|alpha)?/interactions/?$"), GEMINI_INTERACTIONS),
    (re.compile(r":(?:stream)?[gG]enerateContent$"), GEMINI_GENERATE),
)


def detect_api(path: str) -> Api | None:
    """The API a request path belongs to, or None for paths the middleware leaves alone."""
    for pattern, api in _ROUTES:
        if pattern.search(path):
            return api
    return None


__all__ = ["ANTHROPIC_MESSAGES", "GEMINI_GENERATE", "GEMINI_INTERACTIONS", "OPENAI_CHAT", "OPENAI_RESPONSES",
           "Api", "BlockNotice", "EventKind", "detect_api"]
