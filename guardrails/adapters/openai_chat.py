"""OpenAI Chat Completions, as served by vLLM of every version (and legacy Completions).

Dialects handled: `reasoning` (vLLM >= 0.16), `reasoning_content` (<= 0.11.0), both (0.11.1-0.15);
`tool_calls` (function calls, and OpenAI's `custom` tool calls, whose free-form `custom.input` is read as the
arguments `{"input": ...}` at the call's `custom` object, as the Responses adapter reads `custom_tool_call`) and
legacy `function_call`; `tools` (function and custom) and legacy `functions`; `logprobs.content` and the
completions `logprobs` object; top-level `prompt_logprobs`; streamed chunks with `delta.reasoning`,
`delta.reasoning_content`, tool-call argument fragments, and logprobs on chunks with an empty delta. vLLM's
request `documents` (`list[dict[str, str]]`, rendered by the chat template for RAG): every value is an untrusted
document segment at `/request/documents/<i>/<key>`.

A streamed custom tool call comes as `delta.tool_calls[]` fragments `{"index", "id", "type": "custom",
"custom": {"name", "input"}}`, both fields optional in each (openai-python's `ChoiceDeltaToolCallCustom`; older
SDKs and OpenAPI specs type only `function` deltas): the name in the first fragment, the `input` in pieces, as a
function's `arguments`. It is assembled on the same path as those, into the call the whole response gives
(arguments `{"input": ...}`), its text keeping one piece per fragment, so a finding in the input points into the
chunk that holds it. Its arguments text is then the input itself, not a serialization of the arguments.

Legacy Completions with `echo: true`: vLLM returns each choice's `text` as the prompt followed by the
completion, and its `logprobs` over the prompt's tokens then the completion's (a stream puts the prompt in the
choice's first chunk). Where the prompt is a string and the text starts with it, only the completion is
assistant text (located at offset len(prompt) of `text`), and the completions logprob source holds only the
completion's tokens: the prompt was the caller's, so it is neither judged as model output nor learned from
(vLLM also returns its logprobs as `prompt_logprobs`). A token-id prompt's text is unknown, so its choices are
read whole, as model text, as without `echo`.

Chat Completions with `echo: true`: where the last request message has the role of the response's message (an
assistant prefill, as a rule), vLLM puts that message's text (its text parts joined with "\n") before each
choice's `message.content`, and a stream sends it as a choice's first content delta, with no logprobs. That text
is already read as the request's last message: only the content after it is assistant text (located at offset
len(text) of the content), where the content starts with it. Chat logprobs never cover it: they are kept whole.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import replace
from itertools import accumulate
from typing import Any

from guardrails.adapters.anthropic_messages import MARKER_BLOCK_TYPES, MARKER_REQUEST_KEYS, MARKER_TOOL_KEYS
from guardrails.adapters.base import Adapter, EchoedPrompts, ExchangeBuilder, assemble
from guardrails.adapters.jsonread import any_object_with, any_of_type, expect, has_any, integer, is_mapping, string
from guardrails.adapters.openai_common import (
    CHAT_USAGE,
    content_texts,
    custom_input_arguments,
    is_forced_choice,
    openai_usage,
    read_chat_logprobs,
    tool_spec,
)
from guardrails.errors import BodyError
from guardrails.exchange import Generation, Phase, SegmentKind
from guardrails.logprobs.check import check_completions
from guardrails.pointer import join

# Pointers are f-strings: every token is a literal key or an index, so none needs RFC 6901 escaping (but the
# caller's keys of a `documents` entry, joined with `join`).

KIND_BY_ROLE = {
    "system": SegmentKind.SYSTEM,
    "developer": SegmentKind.SYSTEM,
    "user": SegmentKind.USER,
    "tool": SegmentKind.TOOL_RESULT,
    "function": SegmentKind.TOOL_RESULT,
    "ipython": SegmentKind.TOOL_RESULT,
}
# Tuples, not sets: the values tested against them come from the body and may be unhashable.
CONSTRAINED_FORMATS = ("json_schema", "json_object", "structural_tag")
GUIDED_KEYS = ("guided_json", "guided_regex", "guided_choice", "guided_grammar", "structured_outputs")
REASONING_KEYS = ("reasoning", "reasoning_content")  # `reasoning` wins: 0.11.1-0.15 copy it to both
# Anthropic Messages also has `messages`; its markers (and the `anthropic_version` field of the Anthropic bodies
# Bedrock and Vertex AI take) never occur in a Chat Completions body.
ANTHROPIC_REQUEST_KEYS = (*MARKER_REQUEST_KEYS, "anthropic_version")
CHAT_ONLY_ROLES = ("system", "developer", "tool", "function")  # roles Anthropic Messages does not have
STREAM_META_KEYS = ("id", "model", "created", "system_fingerprint")
# `object` of a stream chunk: Chat Completions, legacy Completions (its chunks say "text_completion" too), and
# the error object older vLLM versions sent mid-stream. A "chat.completion" is a whole response, not a chunk.
STREAM_OBJECTS = ("chat.completion.chunk", "text_completion", "error")


class OpenAIChatAdapter(Adapter):
    format = "openai.chat"
    top_score = 90
    # prompt: legacy Completions; documents: vLLM's RAG documents, rendered by the chat template.
    content_keys = frozenset({"messages", "prompt", "tools", "functions", "documents"})
    stream_event = ('an OpenAI Chat Completions or legacy Completions stream chunk (an object with "choices", '
                    'its "object" "chat.completion.chunk" or "text_completion" where present, or an "error")')
    response_kind = 'an OpenAI Chat Completions (or legacy Completions) response, with "choices"'
    response_fields = ("choices",)
    response_markers = ("choices",)
    response_tags = (("object", "chat.completion"), ("object", "chat.completion.chunk"), ("object", "text_completion"))

    @classmethod
    def is_stream_event(cls, chunk: Mapping[str, Any]) -> bool:
        # Usage-only chunks have `choices: []`; `object` is absent where a server leaves unset fields out.
        obj = chunk.get("object")
        if obj:  # Azure's prompt-filter frame leads its stream with `"object": ""` and `choices: []`
            return obj in STREAM_OBJECTS
        return "choices" in chunk or "error" in chunk

    @classmethod
    def sniff(cls, request: Mapping[str, Any], response: Any) -> int:
        if not is_mapping(request):
            return 0
        score = 0
        messages = request.get("messages")
        if isinstance(messages, list):
            score = 50
        elif isinstance(request.get("prompt"), (str, list)):
            score = 40  # legacy completions
        tools = request.get("tools")
        if isinstance(tools, list) and tools and is_mapping(tools[0]) and "function" in tools[0]:
            score = max(score, 80)
        chat_response = _looks_like_chat_response(response)
        # Chat-only roles raise 50 to 80, which changes the outcome only when neither function tools nor a
        # chat response have decided it: a long history is then scanned only when it matters.
        if score == 50 and not chat_response and _has_chat_only_message(messages):
            score = 80
        if chat_response:
            score = max(score, 90) if score else 60
        if 0 < score <= 50 and _anthropic_markers(request, messages, response):  # min(0, 10) is still 0
            score = min(score, 10)
        return score

    # --- request ------------------------------------------------------------------------------------
    def read_request(self, request: Mapping[str, Any], b: ExchangeBuilder) -> None:
        base = "/request"
        messages = request.get("messages")
        if messages is None and "prompt" in request:
            self._read_prompt(request["prompt"], b)
            if request.get("echo") is True:
                b.echo = _echoed_prompts(request["prompt"], request.get("n"))
        else:
            expect(messages, list, f"{base}/messages", "messages")
            b.next_turn = len(messages)
            b.read_items(f"{base}/messages", messages,
                         lambda message, i: self._read_message(message, f"{base}/messages/{i}", i, Phase.REQUEST, b))
            if request.get("echo") is True:
                b.echo = _echoed_message(messages, request.get("n"))
        self._read_documents(request.get("documents"), b)
        self._read_tools(request, b)
        self._read_tool_choice(request, b)
        fmt = request.get("response_format")
        if (is_mapping(fmt) and fmt.get("type") in CONSTRAINED_FORMATS) or (
            has_any(request, GUIDED_KEYS) and any(request.get(k) is not None for k in GUIDED_KEYS)
        ):
            b.response_format = True

    @staticmethod
    def _read_prompt(prompt: Any, b: ExchangeBuilder) -> None:
        if isinstance(prompt, str):
            b.text(SegmentKind.USER, prompt, "/request/prompt", role="user", turn=0, phase=Phase.REQUEST)
            return
        expect(prompt, list, "/request/prompt", "prompt", "a string or an array of strings or token ids")
        for i, p in enumerate(prompt):
            if isinstance(p, str):  # other entries are token ids: nothing to read
                b.text(SegmentKind.USER, p, f"/request/prompt/{i}", role="user", turn=0, phase=Phase.REQUEST)
        b.next_turn = 1

    @staticmethod
    def _read_documents(documents: Any, b: ExchangeBuilder) -> None:
        """vLLM's `documents` (`list[dict[str, str]]`): the chat template renders every value for the model, so
        each is third-party text, read as untrusted in the turn being generated. vLLM refuses other types."""
        if documents is None:
            return
        expect(documents, list, "/request/documents", "documents")
        for i, document in enumerate(documents):
            dptr = f"/request/documents/{i}"
            expect(document, Mapping, dptr, "a document")
            for key, value in document.items():
                vptr = join(dptr, key)  # keys are the caller's ("title", "text"...): escaped
                b.text(SegmentKind.DOCUMENT, expect(value, str, vptr, "a document field"), vptr, role="document",
                       turn=b.next_turn, phase=Phase.REQUEST, source="documents")

    def _read_message(self, message: Any, ptr: str, turn: int, phase: Phase, b: ExchangeBuilder) -> None:
        expect(message, Mapping, ptr, "a message")
        role = message.get("role")
        if not isinstance(role, str):
            raise BodyError("message role must be a string", f"{ptr}/role")
        if role == "assistant":
            self._read_assistant(message, ptr, turn, phase, b)
            return
        kind = KIND_BY_ROLE.get(role, SegmentKind.USER)
        call_id = name = None
        if kind is SegmentKind.TOOL_RESULT:
            call_id, name = string(message.get("tool_call_id")), string(message.get("name"))
            if name is None and call_id is not None:  # `name` is optional: the call it answers has one
                name = b.called_name(call_id)
        for text, pointer in content_texts(message.get("content"), f"{ptr}/content"):
            b.text(kind, text, pointer, role=role, turn=turn, phase=phase, tool_call_id=call_id, tool_name=name)

    def _read_assistant(self, message: Mapping[str, Any], ptr: str, turn: int, phase: Phase,
                        b: ExchangeBuilder, echoed: int = 0) -> None:
        """`echoed`: leading characters of a string content that vLLM echoed from the request (chat `echo`)."""
        read = False
        for key in REASONING_KEYS:
            value = message.get(key)
            if value is None:
                continue
            if not isinstance(value, str):  # an array or object would be skipped unread
                expect(value, str, f"{ptr}/{key}", f"message {key}", "a string or null")
            if value and not read:
                read = True
                b.text(SegmentKind.REASONING, value, f"{ptr}/{key}", role="assistant", turn=turn, phase=phase,
                       source=key)
        content = message.get("content")
        if content is not None:  # agents' tool-calling turns have none: no pointer to build
            for text, pointer in content_texts(content, f"{ptr}/content"):  # a string content: one run
                b.assistant_text(text[echoed:], pointer, turn=turn, phase=phase, start=echoed)
        refusal = message.get("refusal")
        if refusal is not None:
            b.assistant_text(expect(refusal, str, f"{ptr}/refusal", "message refusal", "a string or null"),
                             f"{ptr}/refusal", turn=turn, phase=phase)
        tool_calls = message.get("tool_calls")
        if tool_calls is not None:
            expect(tool_calls, list, f"{ptr}/tool_calls", "tool_calls")
            for j, call in enumerate(tool_calls):
                cptr = f"{ptr}/tool_calls/{j}"
                expect(call, Mapping, cptr, "a tool call")
                if call.get("type") == "custom":
                    self._custom_call(call, cptr, turn, phase, b)
                    continue
                if call.get("type", "function") != "function":
                    continue  # a type this adapter does not know: no function to read
                fptr = f"{cptr}/function"
                fn = expect(call.get("function"), Mapping, fptr, "tool call function")
                self._tool_call(fn, call.get("id"), fptr, turn, phase, b)
        fn_call = message.get("function_call")
        if fn_call is not None:
            expect(fn_call, Mapping, f"{ptr}/function_call", "function_call")
            self._tool_call(fn_call, None, f"{ptr}/function_call", turn, phase, b)

    @staticmethod
    def _tool_call(fn: Mapping[str, Any], call_id: Any, fptr: str, turn: int, phase: Phase,
                   b: ExchangeBuilder) -> None:
        name = fn.get("name")
        if not isinstance(name, str):
            raise BodyError("tool call name must be a string", f"{fptr}/name")
        arguments, args_ptr = fn.get("arguments"), f"{fptr}/arguments"
        if arguments is None:  # absent or null: no arguments, and no string to point into
            arguments, args_ptr = {}, args_ptr if "arguments" in fn else fptr
        b.tool_call(name=name, arguments=arguments, call_id=string(call_id),
                    name_pointer=f"{fptr}/name", arguments_pointer=args_ptr, turn=turn, phase=phase)

    @staticmethod
    def _custom_call(call: Mapping[str, Any], cptr: str, turn: int, phase: Phase, b: ExchangeBuilder) -> None:
        """A custom tool call: free-form `custom.input`, read as the arguments `{"input": ...}` of `custom`."""
        xptr = f"{cptr}/custom"
        custom = expect(call.get("custom"), Mapping, xptr, "custom tool call")
        name = expect(custom.get("name"), str, f"{xptr}/name", "custom tool call name")
        b.tool_call(name=name, arguments=custom_input_arguments(custom, xptr, "custom tool call"),
                    call_id=string(call.get("id")), name_pointer=f"{xptr}/name", arguments_pointer=xptr,
                    turn=turn, phase=phase)

    @staticmethod
    def _read_tools(request: Mapping[str, Any], b: ExchangeBuilder) -> None:
        tools = request.get("tools")
        if tools is not None:
            expect(tools, list, "/request/tools", "tools")
            for i, tool in enumerate(tools):
                tptr = f"/request/tools/{i}"
                expect(tool, Mapping, tptr, "a tool")
                key = "custom" if tool.get("type") == "custom" else "function"
                fn = tool.get(key)
                if is_mapping(fn) and isinstance(fn.get("name"), str):  # vLLM ignores other tools too
                    b.tool(tool_spec(fn, f"{tptr}/{key}"))
        functions = request.get("functions")
        if isinstance(functions, list):
            for i, fn in enumerate(functions):
                if is_mapping(fn) and isinstance(fn.get("name"), str):
                    b.tool(tool_spec(fn, f"/request/functions/{i}"))

    @staticmethod
    def _read_tool_choice(request: Mapping[str, Any], b: ExchangeBuilder) -> None:
        choice = request["tool_choice"] if "tool_choice" in request else request.get("function_call")
        b.tool_choice = choice
        b.forced_tool_choice = is_forced_choice(choice)

    # --- response -----------------------------------------------------------------------------------
    def read_response(self, response: Mapping[str, Any], b: ExchangeBuilder) -> None:
        turn = b.next_turn
        choices = response.get("choices")
        if choices is not None:
            expect(choices, list, "/response/choices", "choices")
        first: Mapping[str, Any] = {}
        for i, choice in enumerate(choices or ()):
            cptr = f"/response/choices/{i}"
            expect(choice, Mapping, cptr, "a choice")
            first = first or choice
            index = _index(choice.get("index"), i)
            message = choice.get("message")
            echoed = (0, 0)
            if is_mapping(message):
                self._read_assistant(message, f"{cptr}/message", turn, Phase.RESPONSE, b,
                                     _echoed_content(b.echo, index, message))
            elif message is not None:  # a string or an array would be skipped unread
                expect(message, Mapping, f"{cptr}/message", "a choice's message")
            elif isinstance(choice.get("text"), str):  # legacy completions
                text = choice["text"]
                echoed = _echoed(b.echo, index, choice, text)
                if len(text) > echoed[0]:  # `max_tokens: 0` scoring echoes the prompt alone: no assistant text
                    b.assistant_text(text[echoed[0]:], f"{cptr}/text", turn=turn, phase=Phase.RESPONSE,
                                     start=echoed[0])
            else:
                _refuse_textless_choice(choice, cptr)
            _read_choice_logprobs(choice, cptr, index, b, echoed[1])
            if isinstance(choice.get("prompt_logprobs"), list):
                b.add_logprobs("prompt", f"{cptr}/prompt_logprobs", choice["prompt_logprobs"], index)
        if isinstance(response.get("prompt_logprobs"), list):
            b.add_logprobs("prompt", "/response/prompt_logprobs", response["prompt_logprobs"])
        read_chat_logprobs(b)
        b.generation = _generation(response, first.get("finish_reason"), first.get("stop_reason"),
                                   response.get("usage"))

    def read_stream(self, chunks: list[Any], b: ExchangeBuilder) -> None:
        turn = b.next_turn
        state: dict[int, _ChoiceStream] = {}
        # Runs once per chunk (hundreds per response): pointers are built only for what is kept or raised.
        for k, chunk in enumerate(chunks):
            if chunk == "[DONE]":
                continue
            if not (type(chunk) is dict or isinstance(chunk, Mapping)):
                expect(chunk, Mapping, f"/response/{k}", "a stream chunk")
            choices = chunk.get("choices")
            if choices is None:
                continue
            if not isinstance(choices, list):
                expect(choices, list, f"/response/{k}/choices", "choices")
            for j, choice in enumerate(choices):
                cptr = f"/response/{k}/choices/{j}"
                if not (type(choice) is dict or isinstance(choice, Mapping)):
                    expect(choice, Mapping, cptr, "a stream choice")
                index = choice.get("index")
                if type(index) is not int:
                    index = _index(index, 0)
                stream = state.get(index)
                if stream is None:
                    stream = state[index] = _ChoiceStream(index)
                stream.absorb(choice, cptr, b)
        for index in sorted(state):
            state[index].emit(b, turn)
        read_chat_logprobs(b)  # every chunk's list in one pass
        first = state[min(state)] if state else _ChoiceStream(0)
        meta, usage = _stream_meta(chunks)
        b.generation = _generation(meta, first.finish_reason, first.stop_reason, usage)


class _ChoiceStream:
    """Accumulates one choice's deltas across chunks, remembering where each fragment came from."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.content: list[tuple[str, str]] = []
        self.refusal: list[tuple[str, str]] = []
        self.reasoning: list[tuple[str, str]] = []
        self.reasoning_key: str | None = None
        self.calls: dict[Any, _CallStream] = {}
        self.finish_reason: str | None = None
        self.stop_reason: Any = None
        self.echoed = 0  # leading characters of the content that are an echoed prompt (or chat message)
        self.role: str | None = None  # the role its deltas named (vLLM: in the first chunk)
        self.has_text = False  # a non-empty content delta was read: the one vLLM echoes into is the first

    def absorb(self, choice: Mapping[str, Any], cptr: str, b: ExchangeBuilder) -> None:
        delta = choice.get("delta")
        echoed_tokens = 0
        if type(delta) is dict or isinstance(delta, Mapping):
            if delta:  # many chunks carry only logprobs or a finish reason
                self._absorb_delta(delta, f"{cptr}/delta", b.echo)
        elif delta is not None:
            expect(delta, Mapping, f"{cptr}/delta", "delta")
        elif isinstance(choice.get("text"), str):  # legacy completions stream
            text = choice["text"]
            if b.echo is not None and not self.content:  # vLLM echoes the prompt in a choice's first chunk
                self.echoed, echoed_tokens = _echoed(b.echo, self.index, choice, text)
            self.content.append((text, f"{cptr}/text"))
        elif "message" in choice:  # a whole response's choice: its message would be skipped unread
            raise BodyError("a stream choice carries a \"delta\" (or a completions \"text\"), not a \"message\"; "
                            "send a complete response as an object, not in a list", f"{cptr}/message")
        _read_choice_logprobs(choice, cptr, self.index, b, echoed_tokens)
        finish_reason = choice.get("finish_reason")
        if isinstance(finish_reason, str):
            self.finish_reason = finish_reason
        if "stop_reason" in choice:
            self.stop_reason = choice["stop_reason"]

    def _absorb_delta(self, delta: Mapping[str, Any], dptr: str, echo: EchoedPrompts | None) -> None:
        role = delta.get("role")
        if isinstance(role, str):
            self.role = role
        content = delta.get("content")
        if isinstance(content, str):
            if content and not self.has_text:
                self.has_text = True
                if echo is not None:  # vLLM's echo chunk: the role chunk's "" comes before it
                    self.echoed = _echoed_chars(echo, self.index, content, self.role or "assistant")
            self.content.append((content, f"{dptr}/content"))
        elif content is not None:  # an array of parts (Mistral's streams) is read as a message's; an object refused
            parts = content_texts(content, f"{dptr}/content", "delta content")
            self.has_text = self.has_text or any(text for text, _ in parts)
            self.content.extend(parts)
        refusal = delta.get("refusal")
        if isinstance(refusal, str):
            self.refusal.append((refusal, f"{dptr}/refusal"))
        elif refusal is not None:
            expect(refusal, str, f"{dptr}/refusal", "delta refusal", "a string or null")
        for key in REASONING_KEYS:
            value = delta.get(key)
            if value is None:
                continue
            if not isinstance(value, str):
                expect(value, str, f"{dptr}/{key}", f"delta {key}", "a string or null")
            if self.reasoning_key in (None, key):
                self.reasoning_key = key
                self.reasoning.append((value, f"{dptr}/{key}"))
        tool_calls = delta.get("tool_calls")
        if tool_calls is not None:
            expect(tool_calls, list, f"{dptr}/tool_calls", "tool_calls")
            for m, call in enumerate(tool_calls):
                tptr = f"{dptr}/tool_calls/{m}"
                expect(call, Mapping, tptr, "a tool call delta")
                index = _index(call.get("index"), m)
                slot = self.calls.get(index)
                if slot is None:
                    slot = self.calls[index] = _CallStream()
                slot.absorb_call(call, tptr)
        fn_call = delta.get("function_call")
        if fn_call is not None:
            self.calls.setdefault("function_call", _CallStream()).absorb(fn_call, f"{dptr}/function_call")

    def emit(self, b: ExchangeBuilder, turn: int) -> None:
        b.streamed_text(self.reasoning, turn=turn, reasoning=self.reasoning_key or "")
        b.streamed_text(self.content, turn=turn, skip=self.echoed)
        b.streamed_text(self.refusal, turn=turn)
        # Numbered tool calls first, in index order; a legacy `function_call` last.
        for key in sorted(self.calls, key=lambda k: (isinstance(k, str), k if isinstance(k, int) else 0)):
            self.calls[key].emit(b, turn)


class _CallStream:
    """One streamed tool call: the id and name arrive once, the arguments in fragments. A function's fragments
    are `function` objects (`arguments` text); a custom tool's are `custom` objects (`input` text)."""

    def __init__(self) -> None:
        self.id: str | None = None
        self.name = ""
        self.name_pointer: str | None = None
        self.name_split = False  # the name came in more than one fragment (clients concatenate them)
        self.arguments: list[tuple[str, str]] = []
        self.pointer = ""  # the first delta of this call (its function or custom object, else the call delta)
        self.id_pointer: str | None = None
        self.kind: str | None = None  # "function" or "custom", from the first delta that says which
        self.has_input = False  # a custom call streamed an `input`, if only "": arguments {"input": ...}

    def absorb_call(self, call: Mapping[str, Any], tptr: str) -> None:
        """A `tool_calls` delta: a custom tool's fragment where it has a `custom` object, else a function's. The
        object decides, not `type`: only the first fragment has a `type`, and a delta may carry the id alone."""
        custom, function = call.get("custom"), call.get("function")
        if custom is not None and function is not None:
            raise BodyError('a tool call delta carries a "function" or a "custom" object, not both', f"{tptr}/custom")
        kind = "custom" if custom is not None else "function" if function is not None else None
        if kind is not None:
            if self.kind not in (None, kind):
                raise BodyError(f"a {kind} fragment for the {self.kind} call of the same index", f"{tptr}/{kind}")
            self.kind = kind
        if self.kind == "custom":
            self.absorb(custom, f"{tptr}/custom", call.get("id"), key="input", what="a custom tool call delta")
        else:
            self.absorb(function, f"{tptr}/function", call.get("id"))

    def absorb(self, fn: Any, fptr: str, call_id: Any = None, key: str = "arguments",
               what: str = "a tool call function delta") -> None:
        """One fragment object at `fptr`: its `name`, and its text under `key` (a function's `arguments`, a
        custom call's `input`)."""
        if isinstance(call_id, str) and call_id:
            self.id = call_id
            self.id_pointer = self.id_pointer or f"{fptr.rpartition('/')[0]}/id"
        if fn is None:  # a delta with only the call's id: point at the call delta (fptr less its object key)
            self.pointer = self.pointer or fptr.rpartition("/")[0]
            return
        self.pointer = self.pointer or fptr
        expect(fn, Mapping, fptr, what)
        name = fn.get("name")
        if name is not None and not isinstance(name, str):
            raise BodyError("tool call name must be a string", f"{fptr}/name")
        if name:
            self.name_split = bool(self.name)
            self.name += name
            self.name_pointer = self.name_pointer or f"{fptr}/name"
        text = fn.get(key)
        if isinstance(text, str):
            self.arguments.append((text, f"{fptr}/{key}"))
            self.has_input = self.has_input or key == "input"
        elif text is not None and key == "input":  # as a whole response's custom call: never skipped unread
            expect(text, str, f"{fptr}/{key}", "custom tool call input")

    def emit(self, b: ExchangeBuilder, turn: int) -> None:
        raw, pieces = assemble(self.arguments)
        if not (self.name or pieces or self.id):
            return  # deltas that carried nothing (an index alone): no call to judge
        arguments: str | dict[str, Any] = raw
        if pieces:
            args_pointer = pieces[0].pointer
        elif self.has_input:  # a custom call's empty input: {"input": ""} at the object that holds it
            arguments, args_pointer = {"input": ""}, self.arguments[0][1].rpartition("/")[0]
        else:  # no argument text streamed: read as no arguments, located at the call delta as a whole
            arguments, args_pointer = {}, self.pointer
        # A name is located with offsets. A name streamed in fragments is located in the chunk where it starts,
        # as the whole of that fragment: offsets up to len(name) would run past the fragment's string. No name
        # streamed (its chunk is missing): a string of the call (arguments, else id) as a whole, not an empty span.
        name_pointer = self.name_pointer or (args_pointer if pieces else self.id_pointer) or args_pointer
        segment = b.tool_call(name=self.name, arguments=arguments, call_id=self.id, name_pointer=name_pointer,
                              arguments_pointer=args_pointer, turn=turn, phase=Phase.RESPONSE, pieces=pieces,
                              name_in_text=bool(self.name) and not self.name_split)
        if self.kind == "custom" and pieces and segment.tool_call is not None:
            # Free-form input, not JSON: the text stays the input as streamed (each piece in its fragment), read
            # as the arguments {"input": ...} that the whole response's call has.
            call = replace(segment.tool_call, arguments={"input": raw}, arguments_error=None)
            b.segments[-1] = replace(segment, tool_call=call)


def _index(value: Any, default: int) -> int:
    index = integer(value)
    return default if index is None else index


def _read_choice_logprobs(choice: Mapping[str, Any], cptr: str, index: int, b: ExchangeBuilder,
                          echoed_tokens: int = 0) -> None:
    """Add a choice's logprob source, or leave it unread where it is malformed (`skip_logprobs`)."""
    try:
        _add_choice_logprobs(choice, cptr, index, b, echoed_tokens)
    except BodyError as exc:
        b.skip_logprobs(exc)


def _add_choice_logprobs(choice: Mapping[str, Any], cptr: str, index: int, b: ExchangeBuilder,
                         echoed_tokens: int) -> None:
    """`echoed_tokens`: leading completions tokens that are an echoed prompt. A chat list is checked with the
    response's others (`read_chat_logprobs`); a completions object here, before the echoed tokens are cut, so
    the error points at the body's own index."""
    logprobs = choice.get("logprobs")
    if logprobs is None:
        return
    if type(logprobs) is not dict:
        expect(logprobs, Mapping, f"{cptr}/logprobs", "choice logprobs", "an object or null")
    content = logprobs.get("content")
    if content is not None:
        if type(content) is not list:
            expect(content, list, f"{cptr}/logprobs/content", "logprobs content", "an array or null")
        b.add_logprobs("chat", f"{cptr}/logprobs/content", content, index)
    elif logprobs.get("tokens") is not None:
        check_completions(logprobs, f"{cptr}/logprobs")
        # Kept when no token is left (`max_tokens: 0`): the response had logprobs, there is nothing to pull.
        data = _without_echo(logprobs, echoed_tokens) if echoed_tokens > 0 else logprobs
        b.add_logprobs("completions", f"{cptr}/logprobs", data, index)


def _echoed_prompts(prompt: Any, n: Any) -> EchoedPrompts:
    """The text vLLM echoes per prompt: a string prompt's own; None for token ids, whose text we do not have."""
    if isinstance(prompt, str):
        prompts: tuple[str | None, ...] = (prompt,)
    elif isinstance(prompt, list) and prompt and all(type(p) is int for p in prompt):  # one prompt of token ids
        prompts = (None,)
    elif isinstance(prompt, list):
        prompts = tuple(p if isinstance(p, str) else None for p in prompt)
    else:
        prompts = ()
    return EchoedPrompts(prompts, _choices_per_prompt(n))


def _choices_per_prompt(n: Any) -> int:
    count = integer(n)
    return count if count is not None and count > 0 else 1


def _echoed_message(messages: list[Any], n: Any) -> EchoedPrompts | None:
    """What vLLM's chat `echo` puts before each choice's content: the last message's text, its text parts joined
    with "\n" (as vLLM joins them), for a response message of that message's role. None if it has no text."""
    last = messages[-1] if messages else None
    role = last.get("role") if is_mapping(last) else None
    if not isinstance(role, str):
        return None
    parts = content_texts(last.get("content"), f"/request/messages/{len(messages) - 1}/content")
    text = "\n".join(part for part, _ in parts)
    return EchoedPrompts((text,), _choices_per_prompt(n), role) if text else None


def _echoed_content(echo: EchoedPrompts | None, index: int, message: Mapping[str, Any]) -> int:
    """Leading characters of a chat choice's string content that are the request's echoed last message."""
    content = message.get("content")
    if echo is None or not isinstance(content, str):
        return 0
    role = message.get("role")
    return _echoed_chars(echo, index, content, role if isinstance(role, str) else "assistant")


def _echoed_chars(echo: EchoedPrompts, index: int, text: str, role: str | None = None) -> int:
    """len(prompt) where `text` starts with the prompt echoed into choice `index`, else 0 (read whole)."""
    prompt = echo.of(index, role)
    return len(prompt) if prompt and text.startswith(prompt) else 0


def _echoed(echo: EchoedPrompts | None, index: int, choice: Mapping[str, Any], text: str) -> tuple[int, int]:
    """(characters, tokens) of the prompt echoed at the start of a completions choice (or of its first stream
    chunk): (0, 0) without `echo` or for a token-id prompt. The token count is vLLM's own where the choice has
    `prompt_token_ids` or `prompt_logprobs` (one per prompt token); else the tokens that start inside the
    echoed characters. With `return_token_ids` vLLM echoes no text but still the prompt's logprobs."""
    if echo is None or echo.of(index) is None:
        return 0, 0
    chars = _echoed_chars(echo, index, text)
    for key in ("prompt_token_ids", "prompt_logprobs"):
        counted = choice.get(key)
        if isinstance(counted, list):
            return chars, len(counted)
    logprobs = choice.get("logprobs")
    tokens = logprobs.get("tokens") if is_mapping(logprobs) else None
    if not chars or not isinstance(tokens, list) or not tokens:
        return chars, 0
    offsets = logprobs.get("text_offset")
    if not (isinstance(offsets, list) and len(offsets) == len(tokens) and all(type(o) is int for o in offsets)):
        offsets = [0, *accumulate(len(t) if isinstance(t, str) else 0 for t in tokens[:-1])]
    first = offsets[0] if offsets else 0
    return chars, bisect_left([o - first for o in offsets], chars)


def _without_echo(logprobs: Mapping[str, Any], count: int) -> dict[str, Any]:
    """Completions logprobs less their first `count` tokens (an echoed prompt's), offsets rebased to the first
    token kept: the rest is exactly what vLLM returns for the completion alone."""
    out = dict(logprobs)
    for key in ("tokens", "token_logprobs", "top_logprobs"):
        if isinstance(out.get(key), list):
            out[key] = out[key][count:]
    offsets = out.get("text_offset")
    if isinstance(offsets, list):
        kept = offsets[count:]
        base = kept[0] if kept and type(kept[0]) is int else 0
        out["text_offset"] = [o - base if type(o) is int else o for o in kept]
    return out


def _refuse_textless_choice(choice: Mapping[str, Any], cptr: str) -> None:
    """A whole response's choice with neither a `message` nor a completions `text`: what it carries instead (a
    stream chunk's `delta`, a text of the wrong type, a misspelt key) would be skipped unread."""
    if choice.get("delta") is not None:
        raise BodyError("a whole response's choice carries a \"message\" (or a completions \"text\"), not a "
                        "\"delta\"; send a stream as the list of its chunks", f"{cptr}/delta")
    if choice.get("text") is not None:
        expect(choice["text"], str, f"{cptr}/text", "a completions choice's text", "a string")
    if choice.get("finish_reason") == "content_filter" or choice.get("error") is not None:
        return  # filtered (Azure) or failed (OpenRouter) before any text: nothing was generated
    raise BodyError("a choice must carry a \"message\" (Chat Completions) or a \"text\" (legacy Completions)", cptr)


def _looks_like_chat_response(response: Any) -> bool:
    if is_mapping(response):
        obj = response.get("object")
        return "choices" in response or (isinstance(obj, str) and obj.startswith(("chat.completion",
                                                                                    "text_completion")))
    return isinstance(response, list) and bool(response) and is_mapping(response[0]) and "choices" in response[0]


def _has_chat_only_message(messages: list[Any]) -> bool:
    """A message with a role or a call field that only Chat Completions has."""
    for m in messages:
        if (type(m) is dict or isinstance(m, Mapping)) and (
                m.get("role") in CHAT_ONLY_ROLES or "tool_calls" in m or "function_call" in m):
            return True
    return False


def _anthropic_markers(request: Mapping[str, Any], messages: Any, response: Any) -> bool:
    if has_any(request, ANTHROPIC_REQUEST_KEYS) or any_object_with(request.get("tools"), MARKER_TOOL_KEYS):
        return True
    for m in messages if isinstance(messages, list) else ():  # a loop: every check runs all the sniffs
        content = m.get("content") if type(m) is dict or isinstance(m, Mapping) else None
        if isinstance(content, list) and any_of_type(content, MARKER_BLOCK_TYPES):
            return True
    return is_mapping(response) and response.get("type") == "message"


def _stream_meta(chunks: list[Any]) -> tuple[dict[str, Any], Any]:
    """The last non-null id, model, created and system_fingerprint of a stream and its last non-empty usage:
    what overwriting them chunk by chunk keeps, read from the end, where they all are (not once per chunk)."""
    meta: dict[str, Any] = {}
    usage: Any = None
    for chunk in reversed(chunks):
        if chunk == "[DONE]":
            continue
        for key in STREAM_META_KEYS:
            if key not in meta:
                value = chunk.get(key)
                if value is not None:
                    meta[key] = value
        if usage is None:
            value = chunk.get("usage")
            if value:
                usage = value
        if usage is not None and len(meta) == len(STREAM_META_KEYS):
            break
    return meta, usage


def _generation(meta: Mapping[str, Any], finish: Any, stop: Any, usage: Any) -> Generation:
    return Generation(
        model=string(meta.get("model")),
        response_id=string(meta.get("id")),
        created=meta.get("created"),
        finish_reason=string(finish),
        stop_reason=stop,
        system_fingerprint=string(meta.get("system_fingerprint")),
        usage=openai_usage(usage, CHAT_USAGE),
    )
