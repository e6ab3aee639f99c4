"""OpenAI Chat Completions, as served by vLLM of every version (and legacy Completions responses).

Dialects handled: `reasoning` (vLLM >= 0.16), `reasoning_content` (<= 0.11.0), both (0.11.1-0.15);
`tool_calls` and legacy `function_call`; `tools` and legacy `functions`; `logprobs.content` and the
completions `logprobs` object; top-level `prompt_logprobs`; streamed chunks with `delta.reasoning`,
`delta.reasoning_content`, tool-call argument fragments, and logprobs on chunks with an empty delta.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from guardrails.adapters.base import Adapter, ExchangeBuilder, assemble, expect
from guardrails.errors import BodyError
from guardrails.exchange import Generation, Phase, SegmentKind, ToolSpec, Usage
from guardrails.pointer import join

KIND_BY_ROLE = {
    "system": SegmentKind.SYSTEM,
    "developer": SegmentKind.SYSTEM,
    "user": SegmentKind.USER,
    "tool": SegmentKind.TOOL_RESULT,
    "function": SegmentKind.TOOL_RESULT,
    "ipython": SegmentKind.TOOL_RESULT,
}
TEXT_PART_TYPES = {"text", "input_text", "output_text"}
GUIDED_KEYS = ("guided_json", "guided_regex", "guided_choice", "guided_grammar", "structured_outputs")


class OpenAIChatAdapter(Adapter):
    format = "openai.chat"

    @classmethod
    def sniff(cls, request: Mapping[str, Any], response: Any) -> int:
        score = 0
        messages = request.get("messages")
        if isinstance(messages, list):
            score = 50
            for m in messages:
                if isinstance(m, Mapping) and (m.get("role") in ("system", "developer", "tool", "function")
                                               or "tool_calls" in m or "function_call" in m):
                    score = 80
                    break
        elif isinstance(request.get("prompt"), (str, list)):
            score = 40  # legacy completions
        tools = request.get("tools")
        if isinstance(tools, list) and tools and isinstance(tools[0], Mapping) and "function" in tools[0]:
            score = max(score, 80)
        if isinstance(response, Mapping) and ("choices" in response or str(response.get("object", "")).startswith(
            ("chat.completion", "text_completion"))):
            score = max(score, 90) if score else 60
        if isinstance(response, list) and response and isinstance(response[0], Mapping) and "choices" in response[0]:
            score = max(score, 90) if score else 60
        return score

    # --- request ------------------------------------------------------------------------------------
    def read_request(self, request: Mapping[str, Any], b: ExchangeBuilder) -> None:
        base = "/request"
        messages = request.get("messages")
        if messages is None and "prompt" in request:
            self._read_prompt(request["prompt"], b)
        else:
            expect(messages, list, join(base, "messages"), "messages")
            b.next_turn = len(messages)
            for i, message in enumerate(messages):
                self._read_message(message, join(base, "messages", i), i, Phase.REQUEST, b)
        self._read_tools(request, b)
        self._read_tool_choice(request, b)
        fmt = request.get("response_format")
        if (isinstance(fmt, Mapping) and fmt.get("type") in ("json_schema", "json_object", "structural_tag")) or any(
            request.get(k) is not None for k in GUIDED_KEYS
        ):
            b.response_format = True

    def _read_prompt(self, prompt: Any, b: ExchangeBuilder) -> None:
        if isinstance(prompt, str):
            b.text(SegmentKind.USER, prompt, "/request/prompt", role="user", turn=0, phase=Phase.REQUEST)
        elif isinstance(prompt, list):
            for i, p in enumerate(prompt):
                if isinstance(p, str):
                    b.text(SegmentKind.USER, p, join("/request/prompt", i), role="user", turn=0,
                           phase=Phase.REQUEST)

    def _read_message(self, message: Any, ptr: str, turn: int, phase: Phase, b: ExchangeBuilder) -> None:
        expect(message, Mapping, ptr, "a message")
        role = message.get("role")
        if not isinstance(role, str):
            raise BodyError("message role must be a string", join(ptr, "role"))
        if role == "assistant":
            self._read_assistant(message, ptr, turn, phase, b)
            return
        kind = KIND_BY_ROLE.get(role, SegmentKind.USER)
        call_id = message.get("tool_call_id") if kind is SegmentKind.TOOL_RESULT else None
        name = message.get("name") if kind is SegmentKind.TOOL_RESULT else None
        for text, pointer in _content_texts(message.get("content"), join(ptr, "content")):
            b.text(kind, text, pointer, role=role, turn=turn, phase=phase, tool_call_id=call_id, tool_name=name)

    def _read_assistant(self, message: Mapping[str, Any], ptr: str, turn: int, phase: Phase,
                        b: ExchangeBuilder) -> None:
        # `reasoning` wins; 0.11.1-0.15 copy the same text into `reasoning_content`.
        for key in ("reasoning", "reasoning_content"):
            value = message.get(key)
            if isinstance(value, str) and value:
                b.text(SegmentKind.REASONING, value, join(ptr, key), role="assistant", turn=turn, phase=phase,
                       source=key)
                break
        for text, pointer in _content_texts(message.get("content"), join(ptr, "content")):
            b.assistant_text(text, pointer, turn=turn, phase=phase)
        tool_calls = message.get("tool_calls")
        if isinstance(tool_calls, list):
            for j, call in enumerate(tool_calls):
                cptr = join(ptr, "tool_calls", j)
                expect(call, Mapping, cptr, "a tool call")
                fn = expect(call.get("function"), Mapping, join(cptr, "function"), "tool call function")
                self._tool_call(fn, call.get("id"), join(cptr, "function"), turn, phase, b)
        fn_call = message.get("function_call")
        if isinstance(fn_call, Mapping):
            self._tool_call(fn_call, None, join(ptr, "function_call"), turn, phase, b)

    @staticmethod
    def _tool_call(fn: Mapping[str, Any], call_id: Any, fptr: str, turn: int, phase: Phase,
                   b: ExchangeBuilder) -> None:
        name = fn.get("name")
        if not isinstance(name, str):
            raise BodyError("tool call name must be a string", join(fptr, "name"))
        arguments = fn.get("arguments", "")
        if arguments is None:
            arguments = ""
        b.tool_call(name=name, arguments=arguments, call_id=call_id if isinstance(call_id, str) else None,
                    name_pointer=join(fptr, "name"), arguments_pointer=join(fptr, "arguments"),
                    turn=turn, phase=phase)

    @staticmethod
    def _read_tools(request: Mapping[str, Any], b: ExchangeBuilder) -> None:
        tools = request.get("tools")
        if isinstance(tools, list):
            for i, tool in enumerate(tools):
                tptr = join("/request/tools", i)
                expect(tool, Mapping, tptr, "a tool")
                fn = tool.get("function")
                if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
                    continue  # non-function tools (vLLM ignores them too)
                b.tool(ToolSpec(name=fn["name"], parameters=fn.get("parameters"),
                                description=str(fn.get("description") or ""),
                                strict=bool(fn.get("strict")), pointer=join(tptr, "function")))
        elif tools is not None:
            expect(tools, list, "/request/tools", "tools")
        functions = request.get("functions")
        if isinstance(functions, list):
            for i, fn in enumerate(functions):
                if isinstance(fn, Mapping) and isinstance(fn.get("name"), str):
                    b.tool(ToolSpec(name=fn["name"], parameters=fn.get("parameters"),
                                    description=str(fn.get("description") or ""),
                                    pointer=join("/request/functions", i)))

    @staticmethod
    def _read_tool_choice(request: Mapping[str, Any], b: ExchangeBuilder) -> None:
        choice = request.get("tool_choice", request.get("function_call"))
        b.tool_choice = choice
        if choice == "required" or (isinstance(choice, Mapping) and (
                choice.get("type") == "function" or "name" in choice)):
            b.forced_tool_choice = True

    # --- response -----------------------------------------------------------------------------------
    def read_response(self, response: Mapping[str, Any], b: ExchangeBuilder) -> None:
        turn = _next_turn(b)
        choices = response.get("choices")
        if choices is not None:
            expect(choices, list, "/response/choices", "choices")
        for i, choice in enumerate(choices or ()):
            cptr = join("/response/choices", i)
            expect(choice, Mapping, cptr, "a choice")
            message = choice.get("message")
            if isinstance(message, Mapping):
                self._read_assistant(message, join(cptr, "message"), turn, Phase.RESPONSE, b)
            elif isinstance(choice.get("text"), str):  # legacy completions
                b.assistant_text(choice["text"], join(cptr, "text"), turn=turn, phase=Phase.RESPONSE)
            logprobs = choice.get("logprobs")
            if isinstance(logprobs, Mapping):
                if isinstance(logprobs.get("content"), list):
                    b.add_logprobs("chat", join(cptr, "logprobs", "content"), logprobs["content"], i)
                elif isinstance(logprobs.get("tokens"), list):
                    b.add_logprobs("completions", join(cptr, "logprobs"), logprobs, i)
            if isinstance(choice.get("prompt_logprobs"), list):
                b.add_logprobs("prompt", join(cptr, "prompt_logprobs"), choice["prompt_logprobs"], i)
        if isinstance(response.get("prompt_logprobs"), list):
            b.add_logprobs("prompt", "/response/prompt_logprobs", response["prompt_logprobs"])
        first = choices[0] if choices and isinstance(choices[0], Mapping) else {}
        b.generation = _generation(response, first.get("finish_reason"), first.get("stop_reason"),
                                   response.get("usage"))

    def read_stream(self, chunks: list[Any], b: ExchangeBuilder) -> None:
        turn = _next_turn(b)
        state: dict[int, _ChoiceStream] = {}
        meta: dict[str, Any] = {}
        usage: Any = None
        for k, chunk in enumerate(chunks):
            if chunk == "[DONE]":
                continue
            kptr = join("/response", k)
            expect(chunk, Mapping, kptr, "a stream chunk")
            for key in ("id", "model", "created", "system_fingerprint"):
                if chunk.get(key) is not None:
                    meta[key] = chunk[key]
            if chunk.get("usage"):
                usage = chunk["usage"]
            for j, choice in enumerate(chunk.get("choices") or ()):
                cptr = join(kptr, "choices", j)
                expect(choice, Mapping, cptr, "a stream choice")
                st = state.setdefault(int(choice.get("index", 0) or 0), _ChoiceStream())
                st.absorb(choice, cptr, b)
        for index in sorted(state):
            state[index].emit(b, turn)
        first = state.get(0) or (next(iter(state.values())) if state else _ChoiceStream())
        b.generation = _generation(meta, first.finish_reason, first.stop_reason, usage)


class _ChoiceStream:
    """Accumulates one choice's deltas across chunks."""

    def __init__(self) -> None:
        self.content: list[tuple[str, str]] = []
        self.reasoning: list[tuple[str, str]] = []
        self.reasoning_key: str | None = None
        self.calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None
        self.stop_reason: Any = None

    def absorb(self, choice: Mapping[str, Any], cptr: str, b: ExchangeBuilder) -> None:
        delta = choice.get("delta") or {}
        dptr = join(cptr, "delta")
        if isinstance(delta.get("content"), str):
            self.content.append((delta["content"], join(dptr, "content")))
        for key in ("reasoning", "reasoning_content"):
            if isinstance(delta.get(key), str) and self.reasoning_key in (None, key):
                self.reasoning_key = key
                self.reasoning.append((delta[key], join(dptr, key)))
        for m, call in enumerate(delta.get("tool_calls") or ()):
            if not isinstance(call, Mapping):
                continue
            tptr = join(dptr, "tool_calls", m)
            slot = self.calls.setdefault(int(call.get("index", m) or 0),
                                         {"id": None, "name": "", "name_ptr": None, "args": []})
            if call.get("id"):
                slot["id"] = call["id"]
            fn = call.get("function") or {}
            if fn.get("name"):
                slot["name"] += fn["name"]
                slot["name_ptr"] = slot["name_ptr"] or join(tptr, "function", "name")
            if isinstance(fn.get("arguments"), str):
                slot["args"].append((fn["arguments"], join(tptr, "function", "arguments")))
        logprobs = choice.get("logprobs")
        if isinstance(logprobs, Mapping) and isinstance(logprobs.get("content"), list):
            b.add_logprobs("chat", join(cptr, "logprobs", "content"), logprobs["content"],
                           int(choice.get("index", 0) or 0))
        if choice.get("finish_reason"):
            self.finish_reason = choice["finish_reason"]
        if "stop_reason" in choice:
            self.stop_reason = choice["stop_reason"]

    def emit(self, b: ExchangeBuilder, turn: int) -> None:
        if self.reasoning:
            text, pieces = assemble(self.reasoning)
            b.text(SegmentKind.REASONING, text, pieces[0].pointer if pieces else "/response", role="assistant",
                   turn=turn, phase=Phase.RESPONSE, pieces=pieces, source=self.reasoning_key or "")
        if self.content:
            text, pieces = assemble(self.content)
            if pieces:
                b.assistant_text(text, pieces[0].pointer, turn=turn, phase=Phase.RESPONSE, pieces=pieces)
        for index in sorted(self.calls):
            slot = self.calls[index]
            raw, pieces = assemble(slot["args"])
            args_ptr = pieces[0].pointer if pieces else (slot["name_ptr"] or "/response")
            b.tool_call(name=slot["name"], arguments=raw, call_id=slot["id"],
                        name_pointer=slot["name_ptr"] or args_ptr, arguments_pointer=args_ptr,
                        turn=turn, phase=Phase.RESPONSE, pieces=pieces)


def _content_texts(content: Any, ptr: str) -> list[tuple[str, str]]:
    """The text of a message's content: a string, or text parts of a list."""
    if isinstance(content, str):
        return [(content, ptr)]
    if isinstance(content, list):
        out = []
        for j, part in enumerate(content):
            if isinstance(part, str):
                out.append((part, join(ptr, j)))
            elif isinstance(part, Mapping) and part.get("type", "text") in TEXT_PART_TYPES:
                if isinstance(part.get("text"), str):
                    out.append((part["text"], join(ptr, j, "text")))
        return out
    if content is not None:
        raise BodyError("message content must be a string, an array of parts, or null", ptr)
    return []


def _next_turn(b: ExchangeBuilder) -> int:
    return b.next_turn


def _generation(meta: Mapping[str, Any], finish: Any, stop: Any, usage: Any) -> Generation:
    u = usage if isinstance(usage, Mapping) else {}
    details = u.get("completion_tokens_details") or {}
    prompt_details = u.get("prompt_tokens_details") or {}
    return Generation(
        model=meta.get("model"),
        response_id=meta.get("id"),
        created=meta.get("created"),
        finish_reason=finish,
        stop_reason=stop,
        system_fingerprint=meta.get("system_fingerprint"),
        usage=Usage(
            input_tokens=u.get("prompt_tokens"),
            output_tokens=u.get("completion_tokens"),
            reasoning_tokens=details.get("reasoning_tokens") if isinstance(details, Mapping) else None,
            cached_tokens=prompt_details.get("cached_tokens") if isinstance(prompt_details, Mapping) else None,
            total_tokens=u.get("total_tokens"),
        ),
    )
