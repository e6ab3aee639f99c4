"""A LiteLLM proxy guardrail that checks each call with the inference-guardrails service (`POST /v1/checks`):
the request before it is forwarded, the response before it is returned, and a stream as it arrives.

The reference for docs/gateway-integration.md §4, verified with LiteLLM 1.106.2 (`litellm[proxy]`) against a
vLLM-shaped upstream. Copy it next to the proxy's config.yaml (see `litellm_config.yaml` beside it): it needs
nothing the proxy does not install. Without LiteLLM the module still imports, so its helpers can be tested.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any, NoReturn

import httpx

try:
    from litellm.exceptions import GuardrailRaisedException
    from litellm.integrations.custom_guardrail import CustomGuardrail
except ImportError:  # the helpers stay importable (and testable) without LiteLLM

    class CustomGuardrail:  # type: ignore[no-redef]
        def __init__(self, **kwargs: Any) -> None:
            raise ImportError("InferenceGuardrails runs inside LiteLLM's proxy: pip install 'litellm[proxy]'")


logger = logging.getLogger("inference_guardrails.litellm")

# LiteLLM call_type -> the check's `format`: the gateway knows the API, so the service never has to guess.
# Other call types (embeddings, images, audio, ...) pass unchecked, as other paths do in the ASGI middleware.
FORMATS = {
    "acompletion": "openai.chat", "completion": "openai.chat",
    "atext_completion": "openai.chat", "text_completion": "openai.chat",
    "aresponses": "openai.responses", "responses": "openai.responses",
    "anthropic_messages": "anthropic.messages", "aanthropic_messages": "anthropic.messages",
}

# What LiteLLM adds to the request dict its hooks get (besides `litellm_*` and `_*` keys and live objects such as
# the aiohttp session): its metadata, a copy of the request with the caller's headers, the caller's raw headers
# (API key included) and the routed deployment. None of it is part of the API request; `secret_fields` must
# never leave the proxy.
LITELLM_KEYS = frozenset({"metadata", "proxy_server_request", "secret_fields", "deployment", "shared_session",
                          "user_api_key_dict", "guardrails", "model_info", "mock_response", "mock_tool_calls"})

# Request headers -> `context` fields, as the ASGI middleware reads them (the key's identity comes first).
CONTEXT_HEADERS = {"x-agent-id": "agent_id", "x-session-id": "session_id", "x-tenant-id": "tenant",
                   "x-user-id": "user"}

# A mid-stream check sees unfinished tool calls (arguments not yet JSON): it stops the stream only for what more
# chunks cannot undo. The check on the finished stream blocks on anything. Same list as the ASGI middleware's.
STOP_MID_STREAM = frozenset({"tool_undeclared", "content", "pii", "secret", "prompt_injection", "jailbreak",
                             "unsafe_reasoning", "tool_call_leak", "custom", "budget"})

VERDICTS = frozenset({"allow", "warn", "block"})

# Events that complete a Responses or Anthropic Messages stream.
FINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "message_stop"})


def check_format(call_type: object) -> str | None:
    """The `format` for a LiteLLM call type (a `CallTypes` member or its string value); None: not checked."""
    return FORMATS.get(str(getattr(call_type, "value", call_type)))


def api_request(data: Mapping[str, Any]) -> dict[str, Any]:
    """The API request as the caller sent it: `data` without what LiteLLM added to it."""
    return {key: value for key, value in data.items()
            if key not in LITELLM_KEYS and not key.startswith(("litellm_", "_")) and _is_json(value)}


def _is_json(value: object) -> bool:
    return value is None or isinstance(value, str | int | float | bool | list | dict)


def as_json(response: Any) -> Any:
    """A LiteLLM response or stream chunk as the JSON the API sends (Anthropic answers are plain dicts that carry
    LiteLLM's `_hidden_params`)."""
    if hasattr(response, "model_dump"):
        return response.model_dump(mode="json")
    if isinstance(response, Mapping):
        return {key: value for key, value in response.items() if not str(key).startswith("_")}
    return response


def check_context(user_api_key_dict: Any, data: Mapping[str, Any]) -> dict[str, str]:
    """`context` for the check: the virtual key's team, user and agent, LiteLLM's session id, then the
    x-agent-id / x-session-id / x-tenant-id / x-user-id and traceparent headers for what is still missing."""
    context = {field: str(value) for field, value in (
        ("tenant", getattr(user_api_key_dict, "team_id", None)),
        ("user", getattr(user_api_key_dict, "user_id", None)),
        ("agent_id", getattr(user_api_key_dict, "agent_id", None)),
        ("session_id", _litellm_session_id(data)),
    ) if value}
    sent = (data.get("proxy_server_request") or {}).get("headers") or {}  # LiteLLM leaves the API key out
    headers = {str(name).lower(): str(value) for name, value in sent.items()}
    for header, field in CONTEXT_HEADERS.items():
        if headers.get(header):
            context.setdefault(field, headers[header])
    context.update(_trace_ids(headers.get("traceparent", "")))
    return context


def _litellm_session_id(data: Mapping[str, Any]) -> str | None:
    # Where LiteLLM keeps it (litellm.integrations.custom_guardrail.get_session_id_from_request_data).
    found = (data.get("litellm_session_id") or (data.get("metadata") or {}).get("session_id")
             or (data.get("litellm_metadata") or {}).get("session_id"))
    return str(found) if found else None


def _trace_ids(traceparent: str) -> dict[str, str]:
    parts = traceparent.split("-")
    if len(parts) != 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        return {}
    return {"trace_id": parts[1], "span_id": parts[2]}


def block_message(result: Mapping[str, Any], categories: frozenset[str] | None = None) -> str | None:
    """The error message for a `block` verdict (None: not blocked), naming the blocking categories, the first
    finding and the check id, as the ASGI middleware does. With `categories`, only those block."""
    if result.get("verdict") != "block":
        return None
    blocking = [f for f in result.get("findings", []) if f.get("action") == "block"]
    if categories is not None:
        blocking = [f for f in blocking if f.get("category") in categories]
        if not blocking:
            return None
    names = ", ".join(sorted({str(f.get("category")) for f in blocking})) or "policy"
    detail = f": {blocking[0].get('message')}" if blocking else ""
    return f"Blocked by guardrails ({names}){detail} [check {result.get('check_id')}]"


def stream_events(chunk: Any) -> list[Any]:
    """What the streaming hook got, as the API's stream events: Chat chunks and Responses events come as
    LiteLLM objects, Anthropic Messages events as the SSE bytes themselves."""
    if isinstance(chunk, bytes | str):
        text = chunk.decode("utf-8") if isinstance(chunk, bytes) else chunk
        lines = (line.strip() for line in text.splitlines())
        return [json.loads(line[5:]) for line in lines if line.startswith("data:") and line[5:].strip() != "[DONE]"]
    return [as_json(chunk)]


def stream_trigger(event: Mapping[str, Any]) -> str | None:
    """`"final"` for the event that completes a Responses or Anthropic stream (a Chat stream is complete when it
    ends: LiteLLM adds `[DONE]` after the hook), `"tool"` for one that names a tool call, else None."""
    kind = event.get("type")
    if kind in FINAL_EVENTS:
        return "final"
    started = (event.get("item") if kind == "response.output_item.added"
               else event.get("content_block") if kind == "content_block_start" else None)
    if started is not None:  # a Responses output item or an Anthropic content block: a tool call has a name
        return "tool" if started.get("name") else None
    deltas = [choice.get("delta") or {} for choice in event.get("choices") or []]
    return "tool" if any((call.get("function") or {}).get("name")
                         for delta in deltas for call in delta.get("tool_calls") or []) else None


class InferenceGuardrails(CustomGuardrail):
    """`litellm_params`: `api_base` (the service; default $GUARDRAILS_URL or http://127.0.0.1:8000), `api_key`
    (its bearer token, if it has keys), `timeout` (seconds per check, default 2) and `unreachable_fallback`
    (`fail_closed`, LiteLLM's default, or `fail_open`: what a call gets when the service gives no verdict).

    LiteLLM runs a streaming hook only when the configured class itself defines it (`type(guardrail).__dict__`):
    a subclass must define `async_post_call_streaming_iterator_hook` again, or its streams go out unchecked."""

    def __init__(self, api_base: str | None = None, api_key: str | None = None,
                 unreachable_fallback: str = "fail_closed", transport: httpx.AsyncBaseTransport | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fail_open = unreachable_fallback == "fail_open"
        self.http = httpx.AsyncClient(
            base_url=api_base or os.environ.get("GUARDRAILS_URL", "http://127.0.0.1:8000"),
            headers={"authorization": f"Bearer {api_key}"} if api_key else {},
            timeout=self.timeout or 2.0, transport=transport)

    async def _verdict(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """The service's answer; None when it gave no verdict and `fail_open` lets the call go on unchecked."""
        try:
            answer = await self.http.post("/v1/checks", content=json.dumps(body),
                                          headers={"content-type": "application/json"})
            answer.raise_for_status()  # a 4xx too: our body or key is wrong, and passing the call would hide it
            result = answer.json()
            if not isinstance(result, dict) or result.get("verdict") not in VERDICTS:  # a 200 from a wrong URL
                raise ValueError(f"not a check answer: {answer.text[:200]!r}")
            return result
        except (httpx.HTTPError, ValueError, TypeError) as exc:  # TypeError: a request that is not JSON
            reason = f"guardrails service gave no verdict: {type(exc).__name__}: {exc}"
            if self.fail_open:
                logger.error("%s; the call goes on unchecked (unreachable_fallback: fail_open)", reason)
                return None
            raise GuardrailRaisedException(self.guardrail_name, reason, should_wrap_with_default_message=False,
                                           status_code=503) from exc

    async def _enforce(self, body: dict[str, Any]) -> None:
        message = block_message(await self._verdict(body) or {})
        if message:
            self._block(message)

    def _block(self, message: str) -> NoReturn:
        # LiteLLM's own guardrail exception: a 400 in the API's error shape before the answer started, an error
        # event in a stream (an HTTPException there only drops the connection).
        raise GuardrailRaisedException(self.guardrail_name, message, should_wrap_with_default_message=False,
                                       status_code=400, blocked_content=True)

    async def async_pre_call_hook(self, user_api_key_dict: Any, cache: Any, data: dict,  # type: ignore[override]
                                  call_type: Any) -> dict:
        check_as = check_format(call_type)
        if check_as:
            await self._enforce({"request": api_request(data), "format": check_as,
                                 "context": check_context(user_api_key_dict, data)})
        return data  # never altered

    async def async_post_call_success_hook(self, data: dict, user_api_key_dict: Any,  # type: ignore[override]
                                           response: Any) -> Any:
        check_as = check_format(_call_type(data))
        if check_as:
            await self._enforce({"request": api_request(data), "response": as_json(response), "format": check_as,
                                 "context": check_context(user_api_key_dict, data)})
        return response

    async def async_post_call_streaming_iterator_hook(  # type: ignore[override]
            self, user_api_key_dict: Any, response: AsyncIterator[Any], request_data: dict,
    ) -> AsyncGenerator[Any, None]:
        """The events so far are checked before an event that names a tool call is passed on (mid-stream: only
        STOP_MID_STREAM blocks, and without context, so budgets count a call once) and before the stream completes
        (the final check: before `response.completed` / `message_stop`, or before LiteLLM's `[DONE]`). Text in
        between is passed on as it comes."""
        check_as = check_format(_call_type(request_data))
        body: dict[str, Any] = {"request": api_request(request_data), "response": [], "format": check_as}
        final_body = {**body, "context": check_context(user_api_key_dict, request_data)}  # shares the event list
        finished = check_as is None  # a call type that is not checked streams through
        async for chunk in response:
            if not finished:
                events = stream_events(chunk)
                body["response"].extend(events)
                triggers = {stream_trigger(event) for event in events}
                finished = "final" in triggers
                if finished:
                    await self._enforce(final_body)
                elif "tool" in triggers:
                    stop = block_message(await self._verdict(body) or {}, STOP_MID_STREAM)
                    if stop:  # the final check now, with context: the block counts for the caller, as in §2
                        self._block(block_message(await self._verdict(final_body) or {}) or stop)
            yield chunk
        if not finished and body["response"]:  # a Chat stream, or one that ended without its completion event
            await self._enforce(final_body)


def _call_type(data: Mapping[str, Any]) -> object:
    # The post-call hooks get no call_type; LiteLLM's logging object for the call carries it.
    return getattr(data.get("litellm_logging_obj"), "call_type", None)
