"""Anthropic Messages (`/v1/messages`), as served by Anthropic and by vLLM (>= 0.11.1).

Request: `system` (string or text blocks), `messages` whose `content` is a string or content blocks
(text, thinking, redacted_thinking, tool_use, tool_result, document, search_result, image, server-tool
blocks), `tools` (custom tools with `input_schema`; server tools have a versioned `type` and a `name`),
`tool_choice`, `thinking`, `output_format` / `output_config.format`.
Response: a `{"type": "message", "content": [...]}` object. Stream: the list of SSE event objects, either
bare (`{"type": "content_block_delta", ...}`) or wrapped as `{"event": name, "data": {...}}`.

Normalization choices:
* Turns count the system prompt as turn 0 when present, as in OpenAI Chat, so the same conversation gets the
  same turn numbers in both formats.
* Tool results get role "tool", the name of the `tool_use` they answer when the request holds it, and
  source "tool_error" when `is_error` is true. Everything readable inside a tool result is TOOL_RESULT,
  server tools' results included: fetched pages, MCP output, code execution stdout/stderr and viewed files,
  web search result titles (the pages themselves come encrypted).
* A text block's `citations` (any role, system included) each quote their source in `cited_text`: read as an
  untrusted DOCUMENT (TOOL_RESULT inside a tool result), pointer `.../citations/N/cited_text` (a stream's
  `citations_delta` events: `.../delta/citation/cited_text`), after the block's own text. For a
  `web_search_result_location` it is the only readable text of the encrypted page; for the document types it
  quotes a document of the request, which is then read twice, each time at its own place. A citation without
  `cited_text` (or a null one) quotes nothing; a non-string one is a BodyError.
* The calls Anthropic runs itself are tool calls like `tool_use`, marked hosted: `server_tool_use` (web_search,
  web_fetch, code_execution, bash_code_execution, text_editor_code_execution, tool search) and `mcp_tool_use`
  (with its `server_name`). A server tool is declared under its `name`; `code_execution_*` also declares the
  bash_code_execution and text_editor_code_execution calls it makes. MCP tools are the MCP server's, never
  declared in the request.
* A stream sends a result block whole in its `content_block_start`: it is read as in a complete response.
  `message_start`'s `message.content` is empty as Anthropic sends it; where it is not (a proxy replaying a
  message), the SDKs put its blocks first in the message they build, so they are read too, less what the streamed
  blocks already said. `message_delta` and `message_stop` carry no content.
  A server or MCP call streams its input as a `tool_use` does (`input_json_delta`).
* `finish_reason` uses the OpenAI vocabulary (end_turn -> stop, max_tokens -> length, tool_use ->
  tool_calls, refusal -> content_filter; others verbatim); `stop_reason` holds `stop_sequence`.
* Thinking signatures, `redacted_thinking` data and citations' other fields (urls, titles, encrypted indexes,
  locations) are opaque and never become segments.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from guardrails.adapters.base import Adapter, ExchangeBuilder, assemble, drop_repeats
from guardrails.adapters.jsonread import (
    any_object_with,
    any_of_type,
    expect,
    has_any,
    integer,
    is_one_of,
    json_type,
    string,
)
from guardrails.errors import BodyError
from guardrails.exchange import Generation, Phase, SegmentKind, ToolSpec, Usage

# Pointers are built with f-strings, not pointer.join: every token here is an index or a literal key that
# needs no RFC 6901 escaping, and this runs for every block of every resent history.

# What marks a request as Anthropic's (the OpenAI Chat sniff, which also reads `messages`, backs off on them too):
# a top-level system prompt, a tool declared with an `input_schema`, and block types OpenAI Chat never uses
# ("image" is left out: too generic a name to tell the two apart).
MARKER_REQUEST_KEYS = ("system",)
MARKER_TOOL_KEYS = ("input_schema",)
MARKER_BLOCK_TYPES = frozenset({
    "tool_use", "tool_result", "thinking", "redacted_thinking", "document", "search_result",
    "server_tool_use", "web_search_tool_result", "web_fetch_tool_result", "mcp_tool_use", "mcp_tool_result",
})
STREAM_EVENT_TYPES = frozenset({
    "message_start", "content_block_start", "content_block_delta", "content_block_stop", "message_delta",
    "message_stop",
})
# Anthropic's event types are snake_case names (message_start, ping, error, and whatever is added later);
# other APIs' events have a dotted `type` (Responses), an `event_type` (Interactions) or no type (Chat, Gemini).
EVENT_TYPE = re.compile(r"[a-z][a-z0-9_]*")
TOOL_CHOICE_TYPES = frozenset({"auto", "any", "tool", "none"})
FORCED_TOOL_CHOICES = frozenset({"any", "tool"})
TOOL_RESULT_TYPES = frozenset({
    "tool_result", "mcp_tool_result", "web_fetch_tool_result", "web_search_tool_result", "code_execution_tool_result",
    "bash_code_execution_tool_result", "text_editor_code_execution_tool_result",
})
# Blocks of a result's `content` list with text to read (web search results: only their title is readable).
NESTED_READABLE_TYPES = frozenset({"text", "document", "search_result", "web_search_result"})
OUTPUT_FIELDS = ("stdout", "stderr")  # code execution results
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
# Blocks that are tool calls: the client's, then those Anthropic runs itself (server tools, MCP servers).
HOSTED_CALL_TYPES = frozenset({"server_tool_use", "mcp_tool_use"})
CALL_TYPES = HOSTED_CALL_TYPES | {"tool_use"}
# `type` prefixes of the server tools Anthropic runs (web_search_20250305, code_execution_20250825...).
SERVER_TOOL_TYPES = ("web_search_", "web_fetch_", "code_execution_", "tool_search_tool_", "advisor_")
# The calls the code execution tool makes besides its own name (code_execution_20250825 and later).
CODE_EXECUTION_CALLS = ("bash_code_execution", "text_editor_code_execution")
# The delta type each streamed block kind accumulates, and the field holding its text.
DELTA_FIELDS = {"text": ("text_delta", "text"), "thinking": ("thinking_delta", "thinking"),
                "tool_use": ("input_json_delta", "partial_json")}
KIND_BY_DELTA = {delta: kind for kind, (delta, _) in DELTA_FIELDS.items()}  # before the hosted calls' entries
KIND_BY_DELTA["citations_delta"] = "text"  # only text blocks are cited; their citations may come before the text
DELTA_FIELDS.update({kind: DELTA_FIELDS["tool_use"] for kind in HOSTED_CALL_TYPES})


class AnthropicMessagesAdapter(Adapter):
    format = "anthropic.messages"
    top_score = 90
    content_keys = frozenset({"system", "messages", "tools"})
    stream_event = ('an Anthropic Messages stream event (an object whose "type" is an event name such as '
                    'message_start, content_block_delta or ping, bare or wrapped as {"event", "data"})')
    response_kind = 'an Anthropic Messages response, with "content"'
    response_fields = ("content",)
    response_markers = ("content",)  # no other API has a top-level `content`
    response_tags = (("type", "message"),)

    @classmethod
    def is_stream_event(cls, chunk: Mapping[str, Any]) -> bool:
        event = chunk
        if "type" not in chunk and "data" in chunk:
            event = chunk["data"]
            if not isinstance(event, dict):
                return True  # the reader refuses it, pointing at its data
        etype = event.get("type")
        # Unknown names are later event types: read as nothing, like content_block_stop.
        return isinstance(etype, str) and EVENT_TYPE.fullmatch(etype) is not None

    @classmethod
    def sniff(cls, request: Mapping[str, Any], response: Any) -> int:
        messages = request.get("messages")  # first, so a request that is not an object fails as it did
        if _is_message(response) or _is_event_stream(response):
            return 90  # whatever the request holds: its markers need not be looked for
        if isinstance(messages, list):
            # Plain text messages read the same as OpenAI Chat, which claims them at 50.
            return 90 if _request_has_marker(request, messages) else 20
        return 0

    # --- request ------------------------------------------------------------------------------------
    def read_request(self, request: Mapping[str, Any], b: ExchangeBuilder) -> None:
        system = request.get("system")
        if system is not None:
            self._read_system(system, b)
        # Decided by the segments before the history, so reading a message depends only on it and its index.
        first_turn = 1 if b.segments else 0
        messages = expect(request.get("messages"), list, "/request/messages", "messages")
        b.next_turn = len(messages) + first_turn
        names = _CallNames(b)

        def read_message(message: Any, i: int) -> None:
            ptr = f"/request/messages/{i}"
            expect(message, dict, ptr, "a message")
            role = message.get("role")
            if not isinstance(role, str):
                raise BodyError("message role must be a string", f"{ptr}/role")
            _read_content(message.get("content"), f"{ptr}/content", role, i + first_turn, Phase.REQUEST, b, names)

        b.read_items("/request/messages", messages, read_message)
        _read_tools(request.get("tools"), b)
        _read_tool_choice(request.get("tool_choice"), b)
        if request.get("thinking") is not None:
            expect(request["thinking"], dict, "/request/thinking", "thinking")
        b.response_format = _has_output_format(request)

    @staticmethod
    def _read_system(system: Any, b: ExchangeBuilder) -> None:
        if isinstance(system, str):
            b.text(SegmentKind.SYSTEM, system, "/request/system", role="system", turn=0, phase=Phase.REQUEST)
            return
        expect(system, list, "/request/system", "system", "a string, an array of text blocks or null")
        for j, block in enumerate(system):
            bptr = f"/request/system/{j}"
            expect(block, dict, bptr, "a system block")
            if block.get("type", "text") == "text":
                b.text(SegmentKind.SYSTEM, _string(block, "text", bptr), f"{bptr}/text", role="system",
                       turn=0, phase=Phase.REQUEST)
                _documents(_citations(block, bptr), "system", 0, Phase.REQUEST, b)

    # --- response -----------------------------------------------------------------------------------
    def read_response(self, response: Mapping[str, Any], b: ExchangeBuilder) -> None:
        if response.get("type") == "error":
            return  # an API error body: nothing was generated
        role = response.get("role", "assistant")
        _read_content(response.get("content"), "/response/content", role if isinstance(role, str) else "assistant",
                      b.next_turn, Phase.RESPONSE, b, _CallNames(b))
        b.generation = _generation(response, response.get("stop_reason"), response.get("stop_sequence"),
                                   response.get("usage"))

    def read_stream(self, chunks: list[Any], b: ExchangeBuilder) -> None:
        blocks: dict[int, _BlockStream] = {}
        message: Mapping[str, Any] = {}
        message_pointer = ""
        usage: dict[str, Any] = {}
        stop_reason: Any = None
        stop_sequence: Any = None
        for k, chunk in enumerate(chunks):
            event, eptr = _unwrap_event(chunk, f"/response/{k}")
            etype = event.get("type")
            if etype == "message_start":
                message = expect(event.get("message"), dict, f"{eptr}/message", "message_start message")
                message_pointer = f"{eptr}/message"
                if isinstance(message.get("usage"), dict):
                    usage.update(message["usage"])
            elif etype == "content_block_start":
                index = _index(event, eptr)
                bptr = f"{eptr}/content_block"
                blocks[index] = _BlockStream.start(expect(event.get("content_block"), dict, bptr,
                                                          "content_block"), bptr)
            elif etype == "content_block_delta":
                index = _index(event, eptr)
                dptr = f"{eptr}/delta"
                delta = expect(event.get("delta"), dict, dptr, "a content block delta")
                if index not in blocks:  # no start event (a truncated capture): infer the kind from the delta
                    dtype = delta.get("type")
                    blocks[index] = _BlockStream(KIND_BY_DELTA.get(dtype, "") if isinstance(dtype, str) else "")
                blocks[index].absorb(delta, dptr)
            elif etype == "message_delta":
                delta = event.get("delta")
                if isinstance(delta, dict):
                    stop_reason = delta.get("stop_reason", stop_reason)
                    stop_sequence = delta.get("stop_sequence", stop_sequence)
                if isinstance(event.get("usage"), dict):
                    usage.update(event["usage"])  # cumulative counts: later values win
            # content_block_stop, message_stop, ping and error events carry nothing to read
        names = _CallNames(b)
        since = len(b.segments)
        for index in sorted(blocks):
            blocks[index].emit(b, b.next_turn, names)
        if message.get("content"):  # empty as Anthropic sends it; the SDKs put what a proxy sends there first
            start = len(b.segments)
            _read_content(message["content"], f"{message_pointer}/content", "assistant", b.next_turn,
                          Phase.RESPONSE, b, names)
            drop_repeats(b, start, since)
        b.generation = _generation(message, stop_reason, stop_sequence, usage)


class _BlockStream:
    """Accumulates one streamed content block (by index) across delta events."""

    __slots__ = ("call_id", "citations", "fragments", "input", "input_pointer", "kind", "mcp_server", "name",
                 "name_pointer", "whole")

    def __init__(self, kind: str) -> None:
        self.kind = kind  # "text", "thinking", a call type (CALL_TYPES); anything else is kept but never read
        self.fragments: list[tuple[str, str]] = []
        self.name = ""
        self.name_pointer: str | None = None
        self.call_id: str | None = None
        self.input: Any = None
        self.input_pointer: str | None = None
        self.mcp_server: str | None = None
        self.whole: tuple[Mapping[str, Any], str] | None = None  # a block sent whole (a tool result), pointer
        self.citations: list[tuple[str, str]] = []  # (cited_text, pointer), from the start block and citations_delta

    @classmethod
    def start(cls, block: Mapping[str, Any], bptr: str) -> _BlockStream:
        btype = block.get("type")
        state = cls(btype if isinstance(btype, str) else "")
        if state.kind in ("text", "thinking") and block.get(state.kind) is not None:
            state.fragments.append((_string(block, state.kind, bptr), f"{bptr}/{state.kind}"))
        elif state.kind in CALL_TYPES:
            state.name = _string(block, "name", bptr)
            state.name_pointer = f"{bptr}/name"
            state.call_id = string(block.get("id"))
            state.input = block.get("input")
            state.input_pointer = f"{bptr}/input"
            state.mcp_server = string(block.get("server_name"))
        elif state.kind not in DELTA_FIELDS:  # no deltas follow: the block is all there is
            state.whole = (block, bptr)
        if state.kind == "text":  # normally none yet: they follow as citations_delta events
            state.citations = _citations(block, bptr)
        return state

    def absorb(self, delta: Mapping[str, Any], dptr: str) -> None:
        dtype = delta.get("type")
        if dtype == "citations_delta":  # read whatever the block's kind: quoted text is never skipped unread
            self.citations.extend(_cited_text(delta.get("citation"), f"{dptr}/citation"))
            return
        expected = DELTA_FIELDS.get(self.kind)
        if expected is not None and dtype == expected[0]:  # signature deltas: opaque
            self.fragments.append((_string(delta, expected[1], dptr), f"{dptr}/{expected[1]}"))

    def emit(self, b: ExchangeBuilder, turn: int, names: _CallNames) -> None:
        if self.whole is not None:
            _read_block(*self.whole, "assistant", turn, Phase.RESPONSE, b, names)
        elif self.kind in ("text", "thinking"):
            b.streamed_text(self.fragments, turn=turn, reasoning="thinking" if self.kind == "thinking" else None)
        elif self.kind in CALL_TYPES:
            text, pieces = assemble(self.fragments)
            if pieces:  # the arguments are the raw JSON the model streamed
                arguments: Any = text
                pointer = pieces[0].pointer
            else:  # nothing streamed: the start block's input object (normally {})
                arguments = self.input if isinstance(self.input, dict) else {}
                pointer = self.input_pointer or self.name_pointer or "/response"
            _add_tool_call(b, name=self.name, arguments=arguments, call_id=self.call_id,
                           name_pointer=self.name_pointer or pointer, arguments_pointer=pointer, turn=turn,
                           phase=Phase.RESPONSE, pieces=pieces, hosted=self.kind in HOSTED_CALL_TYPES,
                           mcp_server=self.mcp_server)
        _documents(self.citations, "assistant", turn, Phase.RESPONSE, b)  # after the text, as in a whole response


class _CallNames:
    """tool_use id -> tool name, read off the tool-call segments built so far (a reused history included)."""

    __slots__ = ("builder", "names", "seen")

    def __init__(self, builder: ExchangeBuilder) -> None:
        self.builder = builder
        self.names: dict[str, str] = {}
        self.seen = 0

    def get(self, call_id: str) -> str | None:
        segments = self.builder.segments
        for segment in segments[self.seen:]:
            if segment.tool_call is not None and segment.tool_call_id:
                self.names[segment.tool_call_id] = segment.tool_call.name
        self.seen = len(segments)
        return self.names.get(call_id)


# --- content blocks ---------------------------------------------------------------------------------
def _read_content(content: Any, ptr: str, role: str, turn: int, phase: Phase, b: ExchangeBuilder,
                  names: _CallNames) -> None:
    if isinstance(content, str):
        _text(content, ptr, role, turn, phase, b)
        return
    expect(content, list, ptr, "message content", "a string or an array of content blocks")
    for j, block in enumerate(content):
        _read_block(block, f"{ptr}/{j}", role, turn, phase, b, names)


def _read_block(block: Any, bptr: str, role: str, turn: int, phase: Phase, b: ExchangeBuilder,
                names: _CallNames) -> None:
    """One content block of a message, or a block a stream sent whole."""
    expect(block, dict, bptr, "a content block")
    btype = block.get("type")
    if not isinstance(btype, str):
        raise BodyError("content block type must be a string", f"{bptr}/type")
    if btype == "text":
        _text(_string(block, "text", bptr), f"{bptr}/text", role, turn, phase, b)
        _documents(_citations(block, bptr), role, turn, phase, b)
    elif btype == "thinking":
        b.text(SegmentKind.REASONING, _string(block, "thinking", bptr), f"{bptr}/thinking", role=role,
               turn=turn, phase=phase, source="thinking")
    elif btype in CALL_TYPES:
        _tool_use(block, bptr, role, turn, phase, b)
    elif btype in TOOL_RESULT_TYPES:
        call_id = string(block.get("tool_use_id"))
        name = names.get(call_id) if call_id else None
        source = "tool_error" if block.get("is_error") is True else ""
        for text, pointer in _readable(block, bptr):
            b.text(SegmentKind.TOOL_RESULT, text, pointer, role="tool", turn=turn, phase=phase,
                   tool_call_id=call_id, tool_name=name, source=source)
    elif btype in ("document", "search_result"):
        _documents(_readable(block, bptr), role, turn, phase, b)
    # image, redacted_thinking, container uploads: nothing readable


def _text(text: str, ptr: str, role: str, turn: int, phase: Phase, b: ExchangeBuilder) -> None:
    if role == "assistant":
        b.assistant_text(text, ptr, turn=turn, phase=phase)
    else:
        b.text(SegmentKind.USER, text, ptr, role=role, turn=turn, phase=phase)


def _documents(readable: list[tuple[str, str]], role: str, turn: int, phase: Phase, b: ExchangeBuilder) -> None:
    """Third-party text (documents, search results, cited quotes): untrusted, whoever's turn holds it."""
    for text, pointer in readable:
        b.text(SegmentKind.DOCUMENT, text, pointer, role=role, turn=turn, phase=phase)


def _citations(block: Mapping[str, Any], bptr: str) -> list[tuple[str, str]]:
    """(cited_text, pointer) of a text block's `citations` (absent or null: none)."""
    citations = block.get("citations")
    if citations is None:
        return []
    cptr = f"{bptr}/citations"
    expect(citations, list, cptr, "citations")
    out: list[tuple[str, str]] = []
    for n, citation in enumerate(citations):
        out.extend(_cited_text(citation, f"{cptr}/{n}"))
    return out


def _cited_text(citation: Any, ptr: str) -> list[tuple[str, str]]:
    """A citation's quoted source text. The location fields say where it was quoted from (a web search result's
    `encrypted_index` is opaque); only `cited_text` holds words, untrusted ones."""
    expect(citation, dict, ptr, "a citation")
    if citation.get("cited_text") is None:
        return []  # nothing quoted
    return [(_string(citation, "cited_text", ptr), f"{ptr}/cited_text")]


def _tool_use(block: Mapping[str, Any], bptr: str, role: str, turn: int, phase: Phase, b: ExchangeBuilder) -> None:
    """A `tool_use`, or a call Anthropic runs itself (`server_tool_use`, `mcp_tool_use`), which is hosted."""
    btype = block["type"]
    name = _string(block, "name", bptr)
    arguments = block.get("input")
    if not isinstance(arguments, (dict, str)):  # a string is read as raw JSON, with offsets into it
        raise BodyError(f"{btype} input must be an object", f"{bptr}/input")
    call_id = string(block.get("id"))
    _add_tool_call(b, name=name, arguments=arguments, call_id=call_id, name_pointer=f"{bptr}/name",
                   arguments_pointer=f"{bptr}/input", turn=turn, phase=phase, role=role,
                   hosted=btype in HOSTED_CALL_TYPES, mcp_server=string(block.get("server_name")))


def _add_tool_call(b: ExchangeBuilder, **call: Any) -> None:
    try:
        b.tool_call(**call)
    except RecursionError:  # serializing an object input nested deeper than Python's recursion limit
        raise BodyError("tool_use input is nested too deeply", call["arguments_pointer"]) from None


def _readable(block: Mapping[str, Any], bptr: str) -> list[tuple[str, str]]:
    """(text, pointer) of the readable text in a tool result, document or search result block."""
    btype = block.get("type")
    if btype == "text":  # a text block nested in a result or document may be cited like any other
        return [(_string(block, "text", bptr), f"{bptr}/text"), *_citations(block, bptr)]
    if btype == "document":
        source = block.get("source")
        sptr = f"{bptr}/source"
        expect(source, dict, sptr, "document source")
        stype = source.get("type")
        if stype == "text":
            return [(_string(source, "data", sptr), f"{sptr}/data")]
        if stype == "content":
            return _nested(source.get("content"), f"{sptr}/content")
        return []  # base64, url, file: not readable here
    if btype == "web_search_result":  # the page comes encrypted; its title is the page's own words
        title = block.get("title")
        return [(title, f"{bptr}/title")] if isinstance(title, str) else []
    out = [(block[key], f"{bptr}/{key}") for key in OUTPUT_FIELDS if isinstance(block.get(key), str)]
    content = block.get("content")
    cptr = f"{bptr}/content"
    if isinstance(content, dict):  # web_fetch_tool_result -> web_fetch_result -> document; code execution results
        return out + _readable(content, cptr)
    return out + _nested(content, cptr)  # a viewed file's text is a string `content`


def _nested(content: Any, ptr: str) -> list[tuple[str, str]]:
    """Readable text of a `content` field: a string or a list of blocks."""
    if content is None:
        return []
    if isinstance(content, str):
        return [(content, ptr)]
    expect(content, list, ptr, "content", "a string, an array of content blocks or null")
    out: list[tuple[str, str]] = []
    for k, inner in enumerate(content):
        iptr = f"{ptr}/{k}"
        expect(inner, dict, iptr, "a content block")
        if is_one_of(inner.get("type"), NESTED_READABLE_TYPES):
            out.extend(_readable(inner, iptr))
    return out


# --- declarations -----------------------------------------------------------------------------------
def _read_tools(tools: Any, b: ExchangeBuilder) -> None:
    if tools is None:
        return
    expect(tools, list, "/request/tools", "tools")
    for i, tool in enumerate(tools):
        tptr = f"/request/tools/{i}"
        expect(tool, dict, tptr, "a tool")
        schema = tool.get("input_schema")
        if schema is None:
            _declare_schemaless_tool(tool, tptr, b)
            continue
        expect(schema, dict, f"{tptr}/input_schema", "input_schema")
        description = tool.get("description")
        b.tool(ToolSpec(name=_string(tool, "name", tptr), parameters=schema,
                        description=description if isinstance(description, str) else "",
                        strict=tool.get("strict") is True, pointer=tptr, name_pointer=f"{tptr}/name",
                        schema_pointer=f"{tptr}/input_schema"))


def _declare_schemaless_tool(tool: Mapping[str, Any], tptr: str, b: ExchangeBuilder) -> None:
    """A tool declared by its versioned `type` and a `name`, with no schema: a server tool (run by Anthropic, its
    calls are `server_tool_use`), or one of Anthropic's client tools (bash, text editor, computer, memory: the
    client runs their `tool_use` calls, whose input Anthropic defines). MCP toolsets name no tool here."""
    kind, name = tool.get("type"), tool.get("name")
    if not (isinstance(kind, str) and isinstance(name, str)):
        return
    if not kind.startswith(SERVER_TOOL_TYPES):
        b.tool(ToolSpec(name=name, parameters=None, pointer=tptr, name_pointer=f"{tptr}/name"))
        return
    b.hosted_tool(name, tptr, f"{tptr}/name")
    if kind.startswith("code_execution_"):
        for call_name in CODE_EXECUTION_CALLS:  # names of its calls, not written in the declaration
            b.hosted_tool(call_name, tptr)


def _read_tool_choice(choice: Any, b: ExchangeBuilder) -> None:
    if choice is None:
        return
    expect(choice, dict, "/request/tool_choice", "tool_choice")
    b.tool_choice = choice
    b.forced_tool_choice = is_one_of(choice.get("type"), FORCED_TOOL_CHOICES)


def _has_output_format(request: Mapping[str, Any]) -> bool:
    config = request.get("output_config")
    fmt = config.get("format") if isinstance(config, dict) else request.get("output_format")
    return isinstance(fmt, dict) and fmt.get("type") == "json_schema"


# --- metadata ---------------------------------------------------------------------------------------
def _generation(message: Mapping[str, Any], stop_reason: Any, stop_sequence: Any, usage: Any) -> Generation:
    u = usage if isinstance(usage, dict) else {}
    reason = stop_reason if isinstance(stop_reason, str) else None
    return Generation(
        model=string(message.get("model")),
        response_id=string(message.get("id")),
        finish_reason=FINISH_REASONS.get(reason, reason) if reason else None,
        stop_reason=stop_sequence,
        usage=Usage(
            input_tokens=integer(u.get("input_tokens")),
            output_tokens=integer(u.get("output_tokens")),
            cached_tokens=integer(u.get("cache_read_input_tokens")),
        ),
    )


# --- sniffing ---------------------------------------------------------------------------------------
def _request_has_marker(request: Mapping[str, Any], messages: list[Any]) -> bool:
    if has_any(request, MARKER_REQUEST_KEYS) or isinstance(request.get("thinking"), dict):
        return True
    choice = request.get("tool_choice")
    if isinstance(choice, dict) and is_one_of(choice.get("type"), TOOL_CHOICE_TYPES):
        return True
    if any_object_with(request.get("tools"), MARKER_TOOL_KEYS):
        return True
    # A plain-text history is walked to its end: one loop, no generator per message.
    for message in messages:
        if not isinstance(message, dict):
            continue
        if message.get("role") not in ("user", "assistant"):
            return False  # a system or tool message: OpenAI's roles, never Anthropic's
        content = message.get("content")
        if isinstance(content, list) and any_of_type(content, MARKER_BLOCK_TYPES):
            return True
    return False


def _is_message(response: Any) -> bool:
    return isinstance(response, dict) and response.get("type") == "message" and isinstance(
        response.get("content"), list)


def _is_event_stream(response: Any) -> bool:
    if not isinstance(response, list):
        return False
    for chunk in response[:3]:
        if isinstance(chunk, dict):
            event = chunk.get("data") if "type" not in chunk else chunk
            if isinstance(event, dict) and is_one_of(event.get("type"), STREAM_EVENT_TYPES):
                return True
    return False


# --- small readers ----------------------------------------------------------------------------------
def _unwrap_event(chunk: Any, ptr: str) -> tuple[Mapping[str, Any], str]:
    """A stream event, bare or in an `{"event": name, "data": {...}}` wrapper, and its pointer."""
    expect(chunk, dict, ptr, "a stream event")
    if "type" not in chunk and "data" in chunk:
        dptr = f"{ptr}/data"
        return expect(chunk["data"], dict, dptr, "stream event data"), dptr
    return chunk, ptr


def _index(event: Mapping[str, Any], ptr: str) -> int:
    index = integer(event.get("index"))
    if index is None:
        raise BodyError("stream event index must be an integer", f"{ptr}/index")
    return index


def _string(obj: Mapping[str, Any], key: str, ptr: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise BodyError(f"{key} must be a string, got {json_type(value)}", f"{ptr}/{key}")
    return value
