"""OpenAI Responses API (`/v1/responses`), as served by OpenAI and by vLLM >= 0.10.

Request: `instructions`, `input` (a string or items: messages, `function_call`, `function_call_output`,
`reasoning`), flat function `tools`, `tool_choice`, `text.format`. Response: `output` items (reasoning,
message with `output_text` parts and their logprobs, function_call), usage, `status`/`incomplete_details`.
A stream is the list of events: text is assembled from the deltas (each piece pointing at its delta) when
there are any, else read from `response.output_item.done` or the final `response.completed`. Those, and the `.done`
events of the deltas (`response.output_text.done`, `response.function_call_arguments.done`...), repeat the item
whole: a client may use any copy (the SDKs' final response is the `response.completed` one), so each copy is read
too, and only what it says that the deltas (or an earlier copy) did not is kept, pointing into that copy. The
deltas' call is named by `response.output_item.added`, which is where a client reading deltas learns the name.

Besides function calls, the client runs the calls of custom tools (`custom_tool_call`, free-form `input`) and of
the shell, patch and computer built-ins (`local_shell_call`, `shell_call`: `action`; `apply_patch_call`:
`operation`; `computer_call`: `action`): each is a tool call named after its tool (`custom` tools by their name,
built-ins by their type, declared the same way; `computer_use_preview` declares `computer`, the name of the
tool's current type). A custom call's arguments are read as `{"input": <input>}` at the item's pointer, so an
argument path (`input`) resolves to the item's `input` string. A computer call's arguments are its `action`
object (`{"type": "type", "text": ...}`, a click...), or `{"actions": [...]}` at the item for a batch. What comes
back (the `*_output` items, an MCP server's `mcp_call` output, code interpreter logs, file search results) is
untrusted TOOL_RESULT text; a `computer_call_output` is a screenshot, no text.

The calls OpenAI runs itself are tool calls too, marked hosted: `mcp_call` and `mcp_approval_request` (named
after the MCP tool, arguments the JSON string `arguments`, `server_label` kept), `web_search_call` (its
`action`: a search's query, a page's url, a find's pattern; `sources` are results, not arguments),
`code_interpreter_call` (`{"code": ...}` at the item, as a custom call's input) and `file_search_call`
(`{"queries": [...]}` at the item). The built-ins are named after their tool type, as the client-run ones
(`web_search`, `code_interpreter`, `file_search`), and a hosted tool declared in `tools` is declared under
that name, its version suffix dropped (`web_search_preview_2025_03_11` declares `web_search`). An item with
nothing the model wrote (a web search call without `action`, code still null) is not a call.

The tools an MCP server lists (`mcp_list_tools`, in `output` or replayed in `input`) are declared tools, hosted:
each listed tool's name, `description` and `input_schema` (as its parameters), pointing at the tool inside the
item, so `tool_poisoning` reads what the server wrote and `tool_schema` judges `mcp_call` arguments against it.
A tool the request's own `tools` declares under the same name keeps its declaration.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from guardrails.adapters.base import Adapter, ExchangeBuilder, assemble, drop_repeats
from guardrails.adapters.gemini_interactions import REQUEST_MARKERS as INTERACTIONS_KEYS
from guardrails.adapters.gemini_interactions import STEP_TYPES as INTERACTIONS_ITEM_TYPES
from guardrails.adapters.gemini_interactions import GeminiInteractionsAdapter
from guardrails.adapters.jsonread import expect, has_any, integer, is_mapping, is_one_of, json_type, same_value, string
from guardrails.adapters.openai_common import (
    RESPONSES_USAGE,
    content_texts,
    custom_input_arguments,
    is_forced_choice,
    openai_usage,
    read_chat_logprobs,
    tool_spec,
)
from guardrails.errors import BodyError
from guardrails.exchange import Generation, Phase, SegmentKind, ToolSpec

# Pointers are f-strings: every token is a literal key or an index, so none needs RFC 6901 escaping.

# Input item types only the Responses API has (Gemini Interactions shares `function_call`).
ITEM_TYPES = ("message", "function_call_output", "reasoning", "item_reference", "custom_tool_call",
              "custom_tool_call_output", "web_search_call", "file_search_call", "computer_call",
              "computer_call_output", "mcp_call", "mcp_list_tools", "local_shell_call", "local_shell_call_output")
REQUEST_KEYS = ("instructions", "previous_response_id", "max_output_tokens", "include", "conversation")
# Gemini Interactions also sends `input` and flat function tools: its markers (INTERACTIONS_KEYS, its step types
# INTERACTIONS_ITEM_TYPES, but for the `function_call` the two share, and its response fields) never occur in a
# Responses body.
INTERACTIONS_RESPONSE_KEYS = GeminiInteractionsAdapter.response_markers
INTERACTIONS_RESPONSE_TAGS = GeminiInteractionsAdapter.response_tags
CONSTRAINED_FORMATS = ("json_schema", "json_object")
ITEMS_OR_TEXT = "a string, an array of input items or null"  # `input` and `instructions`, in 422 messages
# Stream event type -> (item type, fragment group) for the text-carrying deltas.
DELTA_EVENTS = {
    "response.output_text.delta": ("message", "content"),
    "response.refusal.delta": ("message", "content"),
    "response.reasoning_text.delta": ("reasoning", "content"),
    "response.reasoning_summary_text.delta": ("reasoning", "summary"),
    "response.function_call_arguments.delta": ("function_call", "arguments"),
}
# The events that repeat, whole, what deltas streamed (event type -> the field that holds it): copies a client may
# use instead of the deltas (the SDKs' `.done` callbacks), read where they say what the deltas did not.
DONE_TEXT_EVENTS = {
    "response.output_text.done": "text",
    "response.refusal.done": "refusal",
    "response.reasoning_text.done": "text",
    "response.reasoning_summary_text.done": "text",
}
DONE_PART_EVENTS = ("response.content_part.done", "response.reasoning_part.done",  # `part`: text or refusal
                    "response.reasoning_summary_part.done")
# `status` / `incomplete_details.reason` in the OpenAI finish_reason vocabulary the other adapters use.
INCOMPLETE_REASONS = {"max_output_tokens": "length", "content_filter": "content_filter"}
FINAL_EVENTS = ("response.completed", "response.incomplete", "response.failed")
# Calls the client runs for built-in tools: item type -> (tool name = the tool's `type`, field the client runs).
# The name is the start of the item type, so the call's name pointer is the item's `type`, from offset 0.
ACTION_CALLS = {"local_shell_call": ("local_shell", "action"), "shell_call": ("shell", "action"),
                "apply_patch_call": ("apply_patch", "operation"), "computer_call": ("computer", "action")}
ACTION_TOOLS = frozenset(name for name, _ in ACTION_CALLS.values())
# Client-run built-ins declared under another type: the preview computer tool is the `computer` tool's.
ACTION_TOOL_ALIASES = {"computer_use_preview": "computer"}
# Where the request's own `tools` are declared: an MCP server's listing never replaces one of them.
REQUEST_TOOLS_POINTER = "/request/tools/"
# What a tool call returned to the model: untrusted text, whoever ran the tool.
OUTPUT_ITEMS = frozenset({"function_call_output", "custom_tool_call_output", "local_shell_call_output",
                          "shell_call_output", "apply_patch_call_output"})
# Hosted tools whose results come back inside the call item: item type -> (list field, text field of an entry).
HOSTED_RESULTS = {"code_interpreter_call": ("outputs", "logs"), "file_search_call": ("results", "text")}
# Calls of hosted built-ins: item type -> (tool name, the item's fields the model wrote). Named like ACTION_CALLS.
HOSTED_CALLS = {"code_interpreter_call": ("code_interpreter", ("code",)),
                "file_search_call": ("file_search", ("queries",))}
MCP_CALLS = ("mcp_call", "mcp_approval_request")  # named after the MCP tool; `arguments` is a JSON string
SEARCH_RESULT_KEYS = ("sources",)  # what a web search action lists that the search found, not the model
# A hosted tool's declared type less its version: web_search_preview_2025_03_11 -> web_search.
TOOL_VERSION = re.compile(r"(?:_preview)?(?:_\d{4}_\d{2}_\d{2})?$")
NOT_HOSTED_TOOLS = frozenset({"function", "custom", "mcp"})  # mcp: the server's tools are its own


class OpenAIResponsesAdapter(Adapter):
    format = "openai.responses"
    top_score = 95
    content_keys = frozenset({"instructions", "input", "tools"})
    stream_event = 'an OpenAI Responses stream event (an object whose "type" starts with "response." or is "error")'
    response_kind = 'an OpenAI Responses response, with "output"'
    response_fields = ("output",)
    response_markers = ("output",)
    response_tags = (("object", "response"),)

    @classmethod
    def is_stream_event(cls, chunk: Mapping[str, Any]) -> bool:
        kind = chunk.get("type")
        if not isinstance(kind, str):
            return "type" in chunk  # a type that is not a string: the reader refuses it, pointing at it
        # Every event type is namespaced "response." (types we do not use are skipped); errors are "error".
        return kind.startswith("response.") or kind == "error"

    @classmethod
    def sniff(cls, request: Mapping[str, Any], response: Any) -> int:
        if not is_mapping(request) or "messages" in request or "contents" in request:
            return 0
        if isinstance(request.get("prompt"), (str, list)) or _interactions_markers(request, response):
            return 0
        if _looks_like_responses_output(response):
            return 95
        items = request.get("input")
        text = request.get("text")
        if (has_any(request, REQUEST_KEYS) or (is_mapping(text) and "format" in text)
                or (isinstance(items, list) and any(_is_responses_item(i) for i in items))):
            return 90
        return 50 if isinstance(items, (str, list)) else 0

    # --- request ------------------------------------------------------------------------------------
    def read_request(self, request: Mapping[str, Any], b: ExchangeBuilder) -> None:
        reader = _ItemReader(b, Phase.REQUEST)
        instructions = request.get("instructions")
        if isinstance(instructions, str):
            b.text(SegmentKind.SYSTEM, instructions, "/request/instructions", role="system",
                   turn=reader.turn(model=False), phase=Phase.REQUEST)
        elif instructions is not None:  # a prompt template expands to a list of items
            expect(instructions, list, "/request/instructions", "instructions", ITEMS_OR_TEXT)
            reader.items(instructions, "/request/instructions")
        items = request.get("input")
        if isinstance(items, str):
            b.text(SegmentKind.USER, items, "/request/input", role="user", turn=reader.turn(model=False),
                   phase=Phase.REQUEST)
        elif items is not None:
            expect(items, list, "/request/input", "input", ITEMS_OR_TEXT)
            reader.items(items, "/request/input")
        b.next_turn = reader.turns
        self._read_tools(request.get("tools"), b)
        reader.declare_listed()  # after `tools`: a tool the request declares itself keeps its declaration
        b.tool_choice = request.get("tool_choice")
        b.forced_tool_choice = is_forced_choice(b.tool_choice)
        text = request.get("text")
        fmt = text.get("format") if is_mapping(text) else None
        if is_mapping(fmt) and fmt.get("type") in CONSTRAINED_FORMATS:
            b.response_format = True

    @staticmethod
    def _read_tools(tools: Any, b: ExchangeBuilder) -> None:
        if tools is None:
            return
        expect(tools, list, "/request/tools", "tools")
        for i, tool in enumerate(tools):
            tptr = f"/request/tools/{i}"
            expect(tool, Mapping, tptr, "a tool")
            kind = tool.get("type")
            if kind == "custom":  # free-form input (plain text or a grammar), no JSON Schema
                b.tool(ToolSpec(name=expect(tool.get("name"), str, f"{tptr}/name", "custom tool name"),
                                parameters=None, description=string(tool.get("description")) or "",
                                pointer=tptr, name_pointer=f"{tptr}/name"))
                continue
            kind = ACTION_TOOL_ALIASES.get(kind, kind) if isinstance(kind, str) else kind
            if isinstance(kind, str) and kind in ACTION_TOOLS:  # run by the client, which is sent their calls
                b.tool(ToolSpec(name=kind, parameters=None, pointer=tptr))  # declared by type: no name string
                continue
            if isinstance(kind, str) and kind not in NOT_HOSTED_TOOLS:  # web search, file search... run by OpenAI
                b.hosted_tool(TOOL_VERSION.sub("", kind), tptr)
                continue
            if kind != "function":
                continue  # MCP servers list their own tools; other values are not tools
            if is_mapping(tool.get("function")):  # tolerate the nested Chat Completions shape
                tool, tptr = tool["function"], f"{tptr}/function"
            expect(tool.get("name"), str, f"{tptr}/name", "function tool name")
            b.tool(tool_spec(tool, tptr))

    # --- response -----------------------------------------------------------------------------------
    def read_response(self, response: Mapping[str, Any], b: ExchangeBuilder) -> None:
        output = response.get("output")
        if output is not None:
            expect(output, list, "/response/output", "output")
            reader = _ItemReader(b, Phase.RESPONSE, fixed_turn=b.next_turn)
            reader.items(output, "/response/output")
            reader.declare_listed()
        read_chat_logprobs(b)
        b.generation = _generation(response, _called(b))

    def read_stream(self, chunks: list[Any], b: ExchangeBuilder) -> None:
        stream = _EventStream()
        for k, event in enumerate(chunks):
            if event == "[DONE]":
                continue
            kptr = f"/response/{k}"
            expect(event, Mapping, kptr, "a stream event")
            stream.absorb(event, kptr)
        for error in stream.unread:
            b.skip_logprobs(error)
        reader = _ItemReader(b, Phase.RESPONSE, fixed_turn=b.next_turn, logprobs=not stream.logprobs)
        for pointer, data in stream.logprobs:
            b.add_logprobs("responses", pointer, data)
        start = len(b.segments)
        for index in sorted(stream.indexes()):
            stream.emit(index, reader)
        stream.emit_copies(reader, start)
        reader.declare_listed()
        read_chat_logprobs(b)  # every delta's list (or the final response's) in one pass
        b.generation = _generation(stream.final or stream.latest, _called(b))


class _ItemReader:
    """Reads input/output items. Consecutive model items (reasoning, calls, assistant text) share a turn,
    as one Chat Completions assistant message would; every other item starts a turn of its own."""

    def __init__(self, b: ExchangeBuilder, phase: Phase, *, fixed_turn: int | None = None,
                 logprobs: bool = True) -> None:
        self.b = b
        self.phase = phase
        self.fixed_turn = fixed_turn
        self.logprobs = logprobs
        self.turns = 0
        self.last_was_model = False
        self.call_names: dict[str, str] = {}
        self.listed: list[ToolSpec] = []  # tools MCP servers listed, declared once the request's own are known

    def turn(self, *, model: bool) -> int:
        if self.fixed_turn is not None:
            return self.fixed_turn
        if not (model and self.last_was_model):
            self.turns += 1
        self.last_was_model = model
        return self.turns - 1

    def items(self, items: list[Any], ptr: str) -> None:
        for i, item in enumerate(items):
            self.item(item, f"{ptr}/{i}")

    def item(self, item: Any, ptr: str) -> None:
        expect(item, Mapping, ptr, "an item")
        kind = item.get("type")
        if kind is None and "role" in item:
            kind = "message"  # the short message form: {"role", "content"}
        if kind is not None and not isinstance(kind, str):
            raise BodyError("item type must be a string", f"{ptr}/type")
        if kind == "message":
            self.message(item, ptr)
        elif kind == "function_call":
            self.function_call(item, ptr)
        elif kind in OUTPUT_ITEMS:
            self.function_output(item, ptr)
        elif kind == "reasoning":
            self.reasoning(item, ptr)
        elif kind == "custom_tool_call":
            self.custom_call(item, ptr)
        elif kind == "computer_call":
            self.computer_call(item, ptr)
        elif kind == "computer_call_output":
            self.turn(model=False)  # a screenshot: no text, but the tool's answer ends the model's turn
        elif kind == "mcp_list_tools":
            self.mcp_listing(item, ptr)
        elif kind in ACTION_CALLS:
            self.action_call(item, ptr, *ACTION_CALLS[kind])
        elif kind in MCP_CALLS:
            self.mcp_call(item, ptr)
            self.mcp_output(item, ptr)
        elif kind == "web_search_call":
            self.web_search_call(item, ptr)
        elif kind in HOSTED_CALLS:
            self.hosted_call(item, ptr, *HOSTED_CALLS[kind])
            self.hosted_results(item, ptr, *HOSTED_RESULTS[kind])
        # Other items (item references, approval responses) carry no text we read.

    def message(self, item: Mapping[str, Any], ptr: str) -> None:
        role = item.get("role", "assistant" if self.phase is Phase.RESPONSE else None)
        if not isinstance(role, str):
            raise BodyError("message role must be a string", f"{ptr}/role")
        content = item.get("content")
        cptr = f"{ptr}/content"
        if role != "assistant":
            kind = SegmentKind.SYSTEM if role in ("system", "developer") else SegmentKind.USER
            turn = self.turn(model=False)
            for text, pointer in content_texts(content, cptr):
                self.b.text(kind, text, pointer, role=role, turn=turn, phase=self.phase)
            return
        turn = self.turn(model=True)
        for text, pointer in content_texts(content, cptr):
            self.b.assistant_text(text, pointer, turn=turn, phase=self.phase)
        if self.logprobs and isinstance(content, list):
            for j, part in enumerate(content):
                logprobs = part.get("logprobs") if is_mapping(part) else None
                if logprobs is not None:  # checked with the response's others (`read_chat_logprobs`)
                    self._logprobs(logprobs, f"{cptr}/{j}/logprobs")

    def _logprobs(self, logprobs: Any, lptr: str) -> None:
        """Add an `output_text`'s logprobs; a response's that are not a list are left unread (`skip_logprobs`)."""
        try:
            self.b.add_logprobs("responses", lptr, expect(logprobs, list, lptr, "output_text logprobs",
                                                          "an array or null"))
        except BodyError as exc:
            if self.phase is Phase.REQUEST:
                raise  # an input item replaying an answer: the request's contract is unchanged
            self.b.skip_logprobs(exc)

    def function_call(self, item: Mapping[str, Any], ptr: str) -> None:
        name = expect(item.get("name"), str, f"{ptr}/name", "function_call name")
        arguments, args_ptr = item.get("arguments"), f"{ptr}/arguments"
        if arguments is None:  # absent or null: no arguments, and no string to point into
            arguments, args_ptr = {}, args_ptr if "arguments" in item else ptr
        self._call(name, arguments, item, f"{ptr}/name", args_ptr)

    def custom_call(self, item: Mapping[str, Any], ptr: str) -> None:
        """A custom tool's free-form input, read as the arguments `{"input": ...}` of the item itself."""
        name = expect(item.get("name"), str, f"{ptr}/name", "custom_tool_call name")
        self._call(name, custom_input_arguments(item, ptr, "custom_tool_call"), item, f"{ptr}/name", ptr)

    def mcp_call(self, item: Mapping[str, Any], ptr: str) -> None:
        """An MCP tool call OpenAI runs (or, for an approval request, asks the client to approve): hosted."""
        kind = item["type"]
        name = expect(item.get("name"), str, f"{ptr}/name", f"{kind} name")
        arguments, args_ptr = item.get("arguments"), f"{ptr}/arguments"
        if arguments is None:  # absent or null: no arguments, and no string to point into
            arguments, args_ptr = {}, ptr
        else:
            expect(arguments, str, args_ptr, f"{kind} arguments")
        self._call(name, arguments, item, f"{ptr}/name", args_ptr, hosted=True,
                   mcp_server=string(item.get("server_label")))

    def web_search_call(self, item: Mapping[str, Any], ptr: str) -> None:
        """A web search OpenAI runs: the action (query, url, pattern) is what the model asked for."""
        action = item.get("action")
        if action is None:
            return  # older items say nothing of what was searched
        aptr = f"{ptr}/action"
        expect(action, Mapping, aptr, "web_search_call action")
        arguments = {key: value for key, value in action.items() if key not in SEARCH_RESULT_KEYS}
        self._call("web_search", arguments, item, f"{ptr}/type", aptr, hosted=True)

    def hosted_call(self, item: Mapping[str, Any], ptr: str, name: str, fields: tuple[str, ...]) -> None:
        """Code interpreter code, file search queries: read as the arguments of the item itself, like a custom
        call's input, so each argument path resolves to the item's own field."""
        arguments = {key: item[key] for key in fields if item.get(key) is not None}
        if arguments:
            self._call(name, arguments, item, f"{ptr}/type", ptr, hosted=True)

    def action_call(self, item: Mapping[str, Any], ptr: str, name: str, field: str) -> None:
        """A shell or patch call the client runs: its action object is the arguments."""
        action, aptr = item.get(field), f"{ptr}/{field}"
        if action is None:
            action, aptr = {}, ptr
        self._call(name, expect(action, Mapping, aptr, f"{item.get('type')} {field}"), item, f"{ptr}/type", aptr)

    def computer_call(self, item: Mapping[str, Any], ptr: str) -> None:
        """A computer use action the client runs: its `action` object, or a batch of them (`actions`), which
        is read as `{"actions": [...]}` at the item so that each argument path resolves in it."""
        actions = item.get("actions")
        if item.get("action") is None and actions is not None:
            expect(actions, list, f"{ptr}/actions", "computer_call actions")
            self._call("computer", {"actions": actions}, item, f"{ptr}/type", ptr)
            return
        self.action_call(item, ptr, *ACTION_CALLS["computer_call"])

    def mcp_listing(self, item: Mapping[str, Any], ptr: str) -> None:
        """The tools an MCP server lists: what the model reads about them is the server's to write, and is
        where poisoned descriptions arrive. Kept for `declare_listed`."""
        tools = item.get("tools")
        if tools is None:
            return  # a listing that failed (`error`) may carry none
        expect(tools, list, f"{ptr}/tools", "mcp_list_tools tools")
        for j, tool in enumerate(tools):
            tptr = f"{ptr}/tools/{j}"
            expect(tool, Mapping, tptr, "a listed MCP tool")
            schema = tool.get("input_schema")
            schema = schema if is_mapping(schema) else None
            self.listed.append(ToolSpec(
                name=expect(tool.get("name"), str, f"{tptr}/name", "MCP tool name"), parameters=schema,
                description=string(tool.get("description")) or "", pointer=tptr, hosted=True,
                name_pointer=f"{tptr}/name", schema_pointer=None if schema is None else f"{tptr}/input_schema"))

    def declare_listed(self) -> None:
        """Declare the listed MCP tools, as `hosted_tool` declares a built-in: a tool of the same name in the
        request's `tools` keeps its own declaration. A later listing of a name is passed on too (the builder
        decides which declaration of a name it keeps), so a changed description is read."""
        for spec in self.listed:
            declared = self.b.tools.get(spec.name)
            if declared is None or not declared.pointer.startswith(REQUEST_TOOLS_POINTER):
                self.b.tool(spec)
        self.listed.clear()

    def _call(self, name: str, arguments: Any, item: Mapping[str, Any], name_ptr: str, args_ptr: str, *,
              hosted: bool = False, mcp_server: str | None = None) -> None:
        """Add a call; `arguments` as `ExchangeBuilder.tool_call` takes them (a raw JSON string or a value).
        `hosted`: OpenAI runs it; `mcp_server`: the label of the MCP server it calls."""
        call_id = _call_id(item)
        if call_id is not None:
            self.call_names[call_id] = name
        self.b.tool_call(name=name, arguments=arguments, call_id=call_id, name_pointer=name_ptr,
                         arguments_pointer=args_ptr, turn=self.turn(model=True), phase=self.phase,
                         hosted=hosted, mcp_server=mcp_server)

    def function_output(self, item: Mapping[str, Any], ptr: str) -> None:
        call_id = string(item.get("call_id"))
        turn = self.turn(model=False)
        kind = item.get("type")
        output, optr = item.get("output"), f"{ptr}/output"
        texts = _shell_outputs(output, optr) if kind == "shell_call_output" else content_texts(
            output, optr, f"{kind} output")
        for text, pointer in texts:
            self.b.text(SegmentKind.TOOL_RESULT, text, pointer, role="tool", turn=turn, phase=self.phase,
                        tool_call_id=call_id, tool_name=self.call_names.get(call_id or ""))

    def mcp_output(self, item: Mapping[str, Any], ptr: str) -> None:
        """What a remote MCP server returned (run by OpenAI, read by the model next): untrusted."""
        name, call_id = string(item.get("name")), string(item.get("id"))
        turn = self.turn(model=False)
        for key, source in (("output", ""), ("error", "tool_error")):
            text = item.get(key)
            if isinstance(text, str):
                self.b.text(SegmentKind.TOOL_RESULT, text, f"{ptr}/{key}", role="tool", turn=turn,
                            phase=self.phase, source=source, tool_call_id=call_id, tool_name=name)

    def hosted_results(self, item: Mapping[str, Any], ptr: str, field: str, key: str) -> None:
        """Code interpreter logs, file search chunks: text a hosted tool fetched or printed, untrusted."""
        entries = item.get(field)
        if not isinstance(entries, list):
            return  # absent, or null until the results are included
        turn = self.turn(model=False)
        for j, entry in enumerate(entries):
            text = entry.get(key) if is_mapping(entry) else None
            if isinstance(text, str):
                self.b.text(SegmentKind.TOOL_RESULT, text, f"{ptr}/{field}/{j}/{key}", role="tool", turn=turn,
                            phase=self.phase, source=str(item.get("type")))

    def reasoning(self, item: Mapping[str, Any], ptr: str) -> None:
        turn = self.turn(model=True)
        for key, source in (("content", "reasoning_text"), ("summary", "summary_text")):
            parts = item.get(key)
            if parts is None:
                continue
            expect(parts, list, f"{ptr}/{key}", f"reasoning {key}")
            for j, part in enumerate(parts):
                pptr = f"{ptr}/{key}/{j}"
                expect(part, Mapping, pptr, f"a reasoning {key} part")
                text = part.get("text")
                if text is None:
                    continue
                expect(text, str, f"{pptr}/text", "reasoning text")
                self.b.text(SegmentKind.REASONING, text, f"{pptr}/text", role="assistant", turn=turn,
                            phase=self.phase, source=source)

    # --- streamed items --------------------------------------------------------------------------
    def streamed(self, kind: str | None, fragments: dict[tuple[str, int], list[tuple[str, str]]],
                 item: tuple[Mapping[str, Any], str] | None, name_event: tuple[str, str] | None) -> None:
        """Emit one item assembled from its deltas, with pieces pointing at each delta string."""
        turn = self.turn(model=True)
        for (group, _), parts in sorted(fragments.items(), key=lambda kv: (kv[0][0] == "summary", kv[0][1])):
            if kind == "reasoning":
                source = "summary_text" if group == "summary" else "reasoning_text"
                self.b.streamed_text(parts, turn=turn, phase=self.phase, reasoning=source)
            elif kind == "message":
                self.b.streamed_text(parts, turn=turn, phase=self.phase)
        arguments = fragments.get(("arguments", 0))
        if kind == "function_call" and arguments is not None:
            raw, pieces = assemble(arguments)
            args_pointer = pieces[0].pointer if pieces else arguments[0][1]
            name, name_pointer, call_id = _streamed_name(item, name_event, args_pointer)
            # No name streamed: the location is the first arguments delta as a whole, not an empty span in it.
            self.b.tool_call(name=name, arguments=raw, call_id=call_id, name_pointer=name_pointer,
                             arguments_pointer=args_pointer, turn=turn, phase=self.phase, pieces=pieces,
                             name_in_text=bool(name))

    def copied_text(self, kind: str | None, group: str, text: str, pointer: str) -> None:
        """The text a `.done` event repeats (a content part, a summary part), read as the item's kind reads it."""
        if kind == "reasoning":
            self.b.text(SegmentKind.REASONING, text, pointer, role="assistant", turn=self.turn(model=True),
                        phase=self.phase, source="summary_text" if group == "summary" else "reasoning_text")
        else:
            self.b.assistant_text(text, pointer, turn=self.turn(model=True), phase=self.phase)

    def copied_arguments(self, arguments: str, pointer: str, named: tuple[str, str, str | None]) -> None:
        """The arguments `response.function_call_arguments.done` repeats, for the call `named` (name, pointer, id)."""
        name, name_pointer, call_id = named
        self.b.tool_call(name=name, arguments=arguments, call_id=call_id, name_pointer=name_pointer,
                         arguments_pointer=pointer, turn=self.turn(model=True), phase=self.phase,
                         name_in_text=bool(name))


class _ItemStream:
    """What the events say about one output item."""

    def __init__(self) -> None:
        self.kind: str | None = None
        self.added: tuple[Mapping[str, Any], str] | None = None  # (item, pointer)
        self.done: tuple[Mapping[str, Any], str] | None = None
        self.fragments: dict[tuple[str, int], list[tuple[str, str]]] = {}
        self.name_event: tuple[str, str] | None = None  # newer `.arguments.done` events carry the name
        # What `.done` events repeat: (group, text, pointer); group "arguments" for `.arguments.done`.
        self.copies: list[tuple[str, str, str]] = []


class _EventStream:
    def __init__(self) -> None:
        self.items: dict[int, _ItemStream] = {}
        self.index_by_id: dict[str, int] = {}
        self.logprobs: list[tuple[str, list[Any]]] = []
        self.unread: list[BodyError] = []  # delta events whose logprobs are not a list: left unread
        self.final: Mapping[str, Any] | None = None  # the response of response.completed (or its kin)
        self.final_pointer = ""
        self.latest: Mapping[str, Any] = {}  # the newest partial response (created / in_progress)

    def absorb(self, event: Mapping[str, Any], kptr: str) -> None:
        kind = event.get("type")
        if not isinstance(kind, str):
            raise BodyError("stream event type must be a string", f"{kptr}/type")
        response = event.get("response")
        if response is not None and is_mapping(response):  # None: a delta, the bulk of a stream (no ABC check)
            if kind in FINAL_EVENTS:
                self.final, self.final_pointer = response, f"{kptr}/response"
            else:
                self.latest = response
            return
        delta_event = DELTA_EVENTS.get(kind)
        if delta_event is not None:  # the bulk of a stream
            item_kind, group = delta_event
            dptr = f"{kptr}/delta"
            delta = event.get("delta")
            if not isinstance(delta, str):
                expect(delta, str, dptr, f"{kind} delta")
            state = self._state(event)
            state.kind = state.kind or item_kind
            index = event.get("summary_index") if group == "summary" else event.get("content_index")
            key = (group, (index if type(index) is int else integer(index)) or 0)
            fragments = state.fragments.get(key)
            if fragments is None:
                fragments = state.fragments[key] = []
            fragments.append((delta, dptr))
            logprobs = event.get("logprobs")
            if type(logprobs) is list:
                if logprobs:
                    self.logprobs.append((f"{kptr}/logprobs", logprobs))
            elif logprobs is not None:
                self.unread.append(BodyError(f"{kind} logprobs must be an array or null, got {json_type(logprobs)}",
                                             f"{kptr}/logprobs"))
        elif kind in ("response.output_item.added", "response.output_item.done"):
            item = expect(event.get("item"), Mapping, f"{kptr}/item", "output item")
            state = self._state(event)
            if isinstance(item.get("id"), str):
                self.index_by_id[item["id"]] = _output_index(event, self.index_by_id)
            if kind.endswith("added"):
                state.added = (item, f"{kptr}/item")
                if isinstance(item.get("type"), str):
                    state.kind = item["type"]
            else:
                state.done = (item, f"{kptr}/item")
                if isinstance(item.get("type"), str):  # the deltas' kind is the added item's: a done item is a copy
                    state.kind = state.kind or item["type"]
        elif kind == "response.function_call_arguments.done":
            state = self._state(event)
            if isinstance(event.get("name"), str):
                state.name_event = (event["name"], f"{kptr}/name")
            arguments = event.get("arguments")
            if arguments is not None:
                state.copies.append(("arguments", expect(arguments, str, f"{kptr}/arguments",
                                                         f"{kind} arguments"), f"{kptr}/arguments"))
        elif kind in DONE_TEXT_EVENTS:
            field = DONE_TEXT_EVENTS[kind]
            text = event.get(field)
            if text is not None:
                group = "summary" if "summary" in kind else "content"
                self._state(event).copies.append((group, expect(text, str, f"{kptr}/{field}", f"{kind} {field}"),
                                                  f"{kptr}/{field}"))
        elif kind in DONE_PART_EVENTS:
            part = event.get("part")
            if is_mapping(part):
                group = "summary" if "summary" in kind else "content"
                for field in ("text", "refusal"):
                    if part.get(field) is not None:
                        self._state(event).copies.append(
                            (group, expect(part[field], str, f"{kptr}/part/{field}", f"{kind} part {field}"),
                             f"{kptr}/part/{field}"))

    def _state(self, event: Mapping[str, Any]) -> _ItemStream:
        index = _output_index(event, self.index_by_id)
        state = self.items.get(index)
        if state is None:
            state = self.items[index] = _ItemStream()
        return state

    def _final_output(self) -> list[Any]:
        output = self.final.get("output") if self.final is not None else None
        if output is None:
            return []
        return expect(output, list, f"{self.final_pointer}/output", "output")

    def indexes(self) -> set[int]:
        return set(self.items) | set(range(len(self._final_output())))

    def _final_item(self, index: int) -> tuple[Any, str] | None:
        output = self._final_output()
        return (output[index], f"{self.final_pointer}/output/{index}") if 0 <= index < len(output) else None

    def emit(self, index: int, reader: _ItemReader) -> None:
        """Read the item at `index` from its deltas, else from its first whole copy (`emit_copies` reads the rest)."""
        state = self.items.get(index) or _ItemStream()
        if state.fragments:
            reader.streamed(state.kind, state.fragments, state.added or state.done, state.name_event)
            return
        item = state.done or self._final_item(index) or state.added
        if item is not None:
            reader.item(*item)

    def emit_copies(self, reader: _ItemReader, since: int) -> None:
        """Read every other copy of each item (its `.done` events, its done item, the final response's item), each
        keeping only what the segments read from `since` on did not say (`drop_repeats`). Their logprobs, if any,
        are the deltas' again: not added twice."""
        b, logprobs = reader.b, reader.logprobs
        reader.logprobs = False
        try:
            for index in sorted(self.indexes()):
                state = self.items.get(index) or _ItemStream()
                final = self._final_item(index)
                read: list[Any] = []  # whole items read for this index: an equal copy is not read again
                if not state.fragments:
                    first = state.done or final or state.added
                    read.append(first[0] if first is not None else None)
                for group, text, pointer in state.copies:
                    start = len(b.segments)
                    if group == "arguments":
                        named = _streamed_name(state.added or state.done, state.name_event, pointer)
                        reader.copied_arguments(text, pointer, named)
                    else:
                        reader.copied_text(state.kind, group, text, pointer)
                    drop_repeats(b, start, since)
                for copy in (state.done, final):
                    if copy is None or any(same_value(copy[0], other) for other in read):
                        continue
                    read.append(copy[0])
                    start = len(b.segments)
                    reader.item(*copy)
                    drop_repeats(b, start, since)
        finally:
            reader.logprobs = logprobs


def _streamed_name(item: tuple[Mapping[str, Any], str] | None, name_event: tuple[str, str] | None,
                   fallback: str) -> tuple[str, str, str | None]:
    """A streamed call's (name, name pointer, call id): the item's (a name of another type, null included, is
    refused: never read as unnamed), else the `.arguments.done` event's name, else none, located at `fallback`."""
    if item is not None and "name" in item[0]:
        name = expect(item[0]["name"], str, f"{item[1]}/name", "function_call name")
        return name, f"{item[1]}/name", _call_id(item[0])
    if name_event is not None:
        return name_event[0], name_event[1], None
    return "", fallback, None


def _output_index(event: Mapping[str, Any], index_by_id: Mapping[str, int]) -> int:
    index = event.get("output_index")
    if type(index) is int:
        return index
    index = integer(index)
    if index is not None:
        return index
    item_id = event.get("item_id")
    return index_by_id.get(item_id, 0) if isinstance(item_id, str) else 0


def _called(b: ExchangeBuilder) -> bool:
    """Whether the response calls a tool the client runs: calls OpenAI ran itself leave nothing to do."""
    # Segments before `response_from` were read from the request, so none is a response call: a long
    # history is not walked again.
    return any(s.tool_call is not None and s.phase is Phase.RESPONSE and not s.tool_call.hosted
               for s in b.segments[b.response_from:])


def _looks_like_responses_output(response: Any) -> bool:
    if is_mapping(response):
        return response.get("object") == "response" or (isinstance(response.get("output"), list)
                                                        and "created_at" in response)
    if isinstance(response, list) and response and is_mapping(response[0]):
        kind = response[0].get("type")
        return isinstance(kind, str) and kind.startswith("response.")
    return False


def _shell_outputs(output: Any, ptr: str) -> list[tuple[str, str]]:
    """The stdout and stderr of each command of a `shell_call_output` (a list of {stdout, stderr, outcome})."""
    if output is None:
        return []
    if isinstance(output, str):
        return [(output, ptr)]
    out: list[tuple[str, str]] = []
    for j, entry in enumerate(expect(output, list, ptr, "shell_call_output output",
                                     "a string, an array of command outputs or null")):
        eptr = f"{ptr}/{j}"
        expect(entry, Mapping, eptr, "a shell command output")
        for key in ("stdout", "stderr"):
            if isinstance(entry.get(key), str):
                out.append((entry[key], f"{eptr}/{key}"))
    return out


def _call_id(item: Mapping[str, Any]) -> str | None:
    for key in ("call_id", "id"):
        if isinstance(item.get(key), str):
            return item[key]
    return None


def _is_responses_item(item: Any) -> bool:
    if not (type(item) is dict or isinstance(item, Mapping)):
        return False
    kind = item.get("type")
    if kind == "function_call":  # Responses: `call_id` and string arguments; Gemini: an object
        return "call_id" in item or isinstance(item.get("arguments"), str)
    return kind in ITEM_TYPES


def _has_interactions_item(items: list[Any]) -> bool:
    """An input item only Gemini Interactions has. Every item of a Responses history is looked at: kept tight."""
    for item in items:
        if not (type(item) is dict or isinstance(item, Mapping)):
            continue
        kind = item.get("type")
        if kind == "function_call":
            if "call_id" not in item and is_mapping(item.get("arguments")):
                return True
        elif is_one_of(kind, INTERACTIONS_ITEM_TYPES) or item.get("role") == "model":
            return True
    return False


def _interactions_markers(request: Mapping[str, Any], response: Any) -> bool:
    if has_any(request, INTERACTIONS_KEYS):
        return True
    items = request.get("input")
    if isinstance(items, list) and _has_interactions_item(items):
        return True
    if is_mapping(response):  # its response fields count where present, even null
        return has_any(response, INTERACTIONS_RESPONSE_KEYS) or any(
            response.get(key) == value for key, value in INTERACTIONS_RESPONSE_TAGS)
    if isinstance(response, list) and response and is_mapping(response[0]):
        return GeminiInteractionsAdapter.is_stream_event(response[0])
    return False


def _finish_reason(response: Mapping[str, Any], called: bool) -> str | None:
    status = response.get("status")
    if status == "completed":
        return "tool_calls" if called else "stop"
    if status == "incomplete":
        details = response.get("incomplete_details")
        reason = details.get("reason") if is_mapping(details) else None
        return INCOMPLETE_REASONS.get(reason, reason) if isinstance(reason, str) else "length"
    return status if isinstance(status, str) else None  # failed, cancelled, in_progress...


def _generation(response: Mapping[str, Any], called: bool) -> Generation:
    return Generation(
        model=string(response.get("model")),
        response_id=string(response.get("id")),
        created=response.get("created_at"),
        finish_reason=_finish_reason(response, called),
        usage=openai_usage(response.get("usage"), RESPONSES_USAGE),
    )
