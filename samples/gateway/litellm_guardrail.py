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
import re
import weakref
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


# What ends an SSE event: a blank line.
SSE_EVENT_ENDS = (b"\r\n\r\n", b"\n\n")


def split_sse(buffer: bytes) -> tuple[bytes, bytes]:
    """`buffer` cut after its last complete SSE event: (the complete events, the start of one still arriving)."""
    end = max((buffer.rfind(mark) + len(mark) for mark in SSE_EVENT_ENDS if mark in buffer), default=0)
    return buffer[:end], buffer[end:]


def sse_events(complete: bytes) -> list[dict[str, Any]]:
    """The JSON events in whole SSE events (comments, keep-alives and `[DONE]` have none). Raises ValueError
    for an event that is not UTF-8 or whose `data` is not a JSON object."""
    events = []
    for raw in re.split(rb"\r\n\r\n|\n\n", complete):
        lines = raw.decode("utf-8").splitlines()
        data = "\n".join(line[5:].removeprefix(" ") for line in lines if line.startswith("data:"))
        if data.strip() in ("", "[DONE]"):
            continue
        event = json.loads(data)
        if not isinstance(event, dict):
            raise ValueError(f"an SSE event that is not a JSON object: {data[:200]!r}")
        events.append(event)
    return events


class StreamReader:
    """A stream's chunks as the API's events. Chat chunks and Responses events come as LiteLLM objects, one event
    each. Anthropic Messages events come as the upstream's SSE bytes, cut anywhere (LiteLLM passes on
    `aiter_bytes()` chunks: an event, even a UTF-8 character, can be split): they are held until their event is
    complete, so checks see whole events and the caller never gets part of an event a check then stops."""

    def __init__(self) -> None:
        self.ready: list[Any] = []  # chunks whose events were read: to pass on
        self.pending = b""  # the start of an event still arriving
        self.text = False  # the chunks are str: what is passed on stays str

    def read(self, chunk: Any) -> list[dict[str, Any]]:
        """Takes `chunk` in and returns the events it completes. Raises (ValueError, see `sse_events`) for an event
        that cannot be read; `release` then hands back all that is held."""
        if not isinstance(chunk, bytes | str):
            self.ready.append(chunk)
            return [as_json(chunk)]
        self.text = isinstance(chunk, str)
        self.pending += chunk.encode() if self.text else chunk
        complete, rest = split_sse(self.pending)
        events = sse_events(complete)
        self._hand_on(complete)
        self.pending = rest
        return events

    def end(self) -> list[dict[str, Any]]:
        """At the end of the stream: the events of a last one sent without its blank line."""
        events = sse_events(self.pending)
        self._hand_on(self.pending)
        self.pending = b""
        return events

    def take(self) -> list[Any]:
        """The chunks read so far, to pass on."""
        ready, self.ready = self.ready, []
        return ready

    def release(self) -> list[Any]:
        """All that is held, read or not: the rest of the stream goes on unchecked."""
        self._hand_on(self.pending)
        self.pending = b""
        return self.take()

    def _hand_on(self, raw: bytes) -> None:
        if raw:
            self.ready.append(raw.decode("utf-8", "replace") if self.text else raw)


def refuses_partial(answer: httpx.Response) -> bool:
    """The 422 of a service that predates `partial` ("unknown field(s) ['partial']"): the hook only sends `true`."""
    if answer.status_code != 422:
        return False
    try:
        error = answer.json().get("error") or {}
    except (ValueError, AttributeError):
        return False
    return isinstance(error, dict) and error.get("pointer") == "/partial"


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
        # The policy each call's pre-call check was answered by (routing.yml's choice for its caller), for the
        # call's mid-stream checks, which go without context. Keyed by the call's LiteLLM logging object: the
        # proxy makes one per call (a caller cannot send one), and the entry goes with it.
        self.routed_policies: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()

    async def _verdict(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """The service's answer; None when it gave no verdict and `fail_open` lets the call go on unchecked."""
        try:
            answer = await self._post(body)
            if refuses_partial(answer) and body.pop("partial", None):
                # A service older than `partial` (rolled back, or not upgraded yet): this stream's re-checks go as
                # ordinary checks, as before the field, not as no verdict (fail_closed would cut every stream).
                logger.warning("guardrails service refused `partial` (older than this hook): re-checking as an "
                               "ordinary check; upgrade the service")
                answer = await self._post(body)
            answer.raise_for_status()  # a 4xx too: our body or key is wrong, and passing the call would hide it
            result = answer.json()
            if not isinstance(result, dict) or result.get("verdict") not in VERDICTS:  # a 200 from a wrong URL
                raise ValueError(f"not a check answer: {answer.text[:200]!r}")
            return result
        except (httpx.HTTPError, ValueError, TypeError) as exc:  # TypeError: a request that is not JSON
            self._no_verdict(f"guardrails service gave no verdict: {type(exc).__name__}: {exc}", exc)
            return None

    async def _post(self, body: dict[str, Any]) -> httpx.Response:
        # A key per check body (the service ignores it where it predates keys): should anything between here and the
        # service send the request again (a proxy retrying a dropped connection), the check runs, is audited and
        # counts against budgets once; the retry gets the first answer.
        return await self.http.post("/v1/checks", content=json.dumps(body),
                                    headers={"content-type": "application/json",
                                             "idempotency-key": os.urandom(16).hex()})

    def _no_verdict(self, reason: str, exc: Exception) -> None:
        """A call that cannot be checked: it goes on unchecked with `fail_open`, else LiteLLM answers 503."""
        if self.fail_open:
            logger.error("%s; the call goes on unchecked (unreachable_fallback: fail_open)", reason)
            return
        logger.error("%s; the call is refused (unreachable_fallback: fail_closed)", reason)
        raise GuardrailRaisedException(self.guardrail_name, reason, should_wrap_with_default_message=False,
                                       status_code=503) from exc

    async def _enforce(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """The service's answer, as `_verdict`; a `block` raises LiteLLM's block."""
        result = await self._verdict(body)
        message = block_message(result or {})
        if message:
            self._block(message)
        return result

    def _block(self, message: str) -> NoReturn:
        # LiteLLM's own guardrail exception: a 400 in the API's error shape before the answer started, an error
        # event in a stream (an HTTPException there only drops the connection).
        raise GuardrailRaisedException(self.guardrail_name, message, should_wrap_with_default_message=False,
                                       status_code=400, blocked_content=True)

    async def _routed_policy(self, data: Mapping[str, Any], request_check: dict[str, Any]) -> str | None:
        """The policy routing.yml gives the caller, for mid-stream checks: the pre-call check's, else asked once with
        `request_check` (a request check spends no budget). None: no agent or tenant to route by (routing gives a
        check without context the same policy), or no verdict."""
        call = _weakly_held(data.get("litellm_logging_obj"))
        if call is not None and call in self.routed_policies:
            return self.routed_policies[call]
        context = request_check["context"]
        if not (context.get("agent_id") or context.get("tenant")):
            return None
        return _policy_id(await self._verdict(request_check))

    async def async_pre_call_hook(self, user_api_key_dict: Any, cache: Any, data: dict,  # type: ignore[override]
                                  call_type: Any) -> dict:
        check_as = check_format(call_type)
        if check_as:
            result = await self._enforce({"request": api_request(data), "format": check_as,
                                          "context": check_context(user_api_key_dict, data)})
            call, policy = _weakly_held(data.get("litellm_logging_obj")), _policy_id(result)
            if call is not None and policy:
                self.routed_policies[call] = policy
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
        """See `StreamCheck`. A call type that is not checked streams through as it comes."""
        check_as = check_format(_call_type(request_data))
        if check_as is None:
            async for chunk in response:
                yield chunk
            return
        stream = StreamCheck(self, request_data, check_as, check_context(user_api_key_dict, request_data))
        async for chunk in response:
            for passed in await stream.feed(chunk):
                yield passed
        for passed in await stream.end():
            yield passed


class StreamCheck:
    """One stream through the streaming hook. The events so far are checked before an event that names a tool call
    is passed on (mid-stream: only STOP_MID_STREAM blocks, marked `partial`, and without context, so budgets count a
    call once; with the policy routing gives the caller) and before the stream completes (the final check: before
    `response.completed` / `message_stop`, or before LiteLLM's `[DONE]`). Text in between is passed on as it comes.
    An event that cannot be read is a stream that cannot be checked: the fail mode decides, as for no verdict."""

    def __init__(self, guardrail: InferenceGuardrails, request_data: Mapping[str, Any], check_as: str,
                 context: dict[str, str]) -> None:
        self.guardrail = guardrail
        self.request_data = request_data
        self.reader = StreamReader()
        request, events = api_request(request_data), []  # the events so far: both check bodies share the list
        # Mid-stream checks: no context (budgets count the call once) and `partial` (advisory verdicts, which the
        # service keeps out of its audit and metrics block counts). The final check carries the caller's context.
        self.partial: dict[str, Any] = {"request": request, "response": events, "format": check_as, "partial": True}
        self.final: dict[str, Any] = {"request": request, "response": events, "format": check_as, "context": context}
        self.routed = False  # the mid-stream checks' policy is resolved
        self.done = False  # checked to its end, or left unchecked: the rest passes as it comes

    async def feed(self, chunk: Any) -> list[Any]:
        """The chunks to pass on now; raises LiteLLM's exception for a block or (fail_closed) no verdict."""
        if self.done:
            return [chunk]
        try:
            events = self.reader.read(chunk)
            triggers = {stream_trigger(event) for event in events}
        except Exception as exc:  # anything the upstream sent: a parsing error must not end the caller's stream
            return self._unreadable(exc)
        self.partial["response"].extend(events)
        if "final" in triggers:
            self.done = True
            await self.guardrail._enforce(self.final)
            return self.reader.release()
        if "tool" in triggers:
            await self._mid_stream_check()
        return self.reader.take()

    async def end(self) -> list[Any]:
        """What is left to pass on when the upstream ends; a stream not checked complete yet (Chat, or one without
        its completion event) gets its final check first."""
        if self.done:
            return []
        try:
            self.partial["response"].extend(self.reader.end())
        except Exception as exc:
            return self._unreadable(exc)
        if self.partial["response"]:
            await self.guardrail._enforce(self.final)
        return self.reader.take()

    async def _mid_stream_check(self) -> None:
        if not self.routed:
            self.routed = True
            request_check = {key: value for key, value in self.final.items() if key != "response"}
            policy = await self.guardrail._routed_policy(self.request_data, request_check)
            if policy:
                self.partial["policy"] = policy
        stop = block_message(await self.guardrail._verdict(self.partial) or {}, STOP_MID_STREAM)
        if stop:  # the final check now, with context: the block counts for the caller, as in §2
            self.guardrail._block(block_message(await self.guardrail._verdict(self.final) or {}) or stop)

    def _unreadable(self, exc: Exception) -> list[Any]:
        self.done = True
        self.guardrail._no_verdict(f"unreadable stream event: {type(exc).__name__}: {exc}", exc)
        return self.reader.release()


def _call_type(data: Mapping[str, Any]) -> object:
    # The post-call hooks get no call_type; LiteLLM's logging object for the call carries it.
    return getattr(data.get("litellm_logging_obj"), "call_type", None)


def _weakly_held(call: object) -> object | None:
    try:
        weakref.ref(call)
    except TypeError:  # None, or a stand-in
        return None
    return call


def _policy_id(result: Mapping[str, Any] | None) -> str | None:
    policy = (result or {}).get("policy")
    return policy.get("id") if isinstance(policy, dict) and isinstance(policy.get("id"), str) else None
