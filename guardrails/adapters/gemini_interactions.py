"""Google Gemini Interactions API (`POST /v1beta|v1/interactions`), steps schema and legacy schema.

Request `input` is a string, one Content, Content[], Step[] (`user_input`, `model_output`, `thought`,
`function_call`, `function_result`, built-in call/result steps) or legacy `Turn[]` (`{role, content}`).
Responses carry `steps` (schema revision 2026-05-20) or legacy `outputs`; streams are lists of event
payloads (`interaction.created`, `step.start`/`step.delta`/`step.stop`, `interaction.completed`; legacy
`interaction.start`, `content.start`/`content.delta`/`content.stop`, `interaction.complete`).
See shared/reference/google-interactions.md. A thought's readable text is only `summary[*].text`: its
`signature` is an opaque blob that would look like a secret, so it never becomes a segment.

Normalization choices (shared with the other adapters):
* The system instruction is turn 0 when present, as in OpenAI Chat. In `input`, a new turn starts when the
  author changes (user, model, tool) and at each function result, so a thought + its function calls make
  one model turn, as one assistant message would.
* `finish_reason` is the status in the OpenAI vocabulary (completed -> stop, requires_action ->
  tool_calls, incomplete -> length; others verbatim). `usage.output_tokens` includes thought tokens.
* A `user_input` step echoed in a response repeats the request's input and is skipped.
* Function results are strings, Content lists or arbitrary objects: every string inside an object becomes
  an untrusted TOOL_RESULT segment pointing at that string (source "tool_error" when `is_error`), MCP server
  results and code execution output included (as `codeExecutionResult` in generateContent).
* Built-in call steps (`google_search_call`, `code_execution_call`, `url_context_call`, `file_search_call`,
  `google_maps_call`, `mcp_server_tool_call`...) are calls Google runs itself: hosted tool calls whose
  arguments are the step's `arguments` object. A built-in is named after its step type less `_call`, the name
  its tool declares as `type` (`{"type": "url_context"}` declares `url_context`); an MCP call is named after
  the MCP tool (`name`) and keeps its `server_name`.
* Built-in result steps with text: a `google_search_result`'s `result[]` entries are what the search found,
  untrusted TOOL_RESULT text named `google_search` (the call's name): each entry's `title`, `rendered_content`
  and `search_suggestions` (the field names of the SDK revisions; the latter two are Google's search widget
  HTML). Their `url`s are addresses, not read (nor are web search result urls in the other adapters). A
  `url_context_result` lists only `{url, status}`, the URLs the model asked for (judged in its call): nothing
  to read. Every `*_result` step starts a turn of its own, as a function result does.
* Streams: `arguments_delta` fragments are assembled into the raw argument string with pieces; a legacy
  whole-call delta keeps its arguments object. A result step, or a built-in call step, arrives whole, in its
  `step.start` or in a delta of its own type, and is read as in a complete response (a built-in call from the
  last of them that carries `arguments`); a `user_input` step is skipped there too. An event whose interaction
  carries its `steps` (or legacy `outputs`), as `interaction.completed` may, is another copy of the response that
  a client may use: its steps are read too, keeping only what the streamed steps did not say, located in it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from guardrails.adapters.base import Adapter, ExchangeBuilder, assemble, drop_repeats
from guardrails.adapters.gemini_usage import INTERACTIONS, thought_usage
from guardrails.adapters.jsonread import (
    has_any,
    integer,
    is_mapping,
    json_type,
    obj,
    optional_list,
    string,
    string_leaves,
)
from guardrails.errors import BodyError
from guardrails.exchange import Generation, Phase, SegmentKind, ToolSpec

# Pointers are f-strings: every token is a literal key or an index, so none needs RFC 6901 escaping. Only the
# keys of a result object come from the body: `string_leaves` escapes those with `join`.
USER_TYPES = frozenset({"user_input"})
MODEL_TYPES = frozenset({"model_output", "thought", "function_call"})
TOOL_RESULT_TYPES = frozenset({"function_result", "mcp_server_tool_result", "code_execution_result"})
STEP_TYPES = USER_TYPES | MODEL_TYPES | {"function_result"}
# Built-in result steps whose `result` entries hold text, and the entry fields that hold it.
BUILT_IN_RESULT_FIELDS = {"google_search_result": ("title", "rendered_content", "search_suggestions")}
READ_RESULT_TYPES = TOOL_RESULT_TYPES | frozenset(BUILT_IN_RESULT_FIELDS)
RESULT_SUFFIX = "_result"
FORCING_CHOICES = frozenset({"any", "validated"})
MCP_CALL_TYPE = "mcp_server_tool_call"  # named after the MCP tool, not after the step type
CALL_SUFFIX = "_call"  # built-in call steps: google_search_call, code_execution_call...
NOT_HOSTED_TOOLS = frozenset({"function", "mcp_server"})  # an MCP server's tools are its own, never declared
SCHEMA_TYPES = frozenset({"object", "array", "string", "number", "integer", "boolean"})
# Interaction status in the OpenAI finish_reason vocabulary; other statuses are kept verbatim.
FINISH_REASONS = {"completed": "stop", "requires_action": "tool_calls", "incomplete": "length"}
# Top-level request keys no other supported API uses.
REQUEST_MARKERS = ("system_instruction", "generation_config", "previous_interaction_id", "response_mime_type",
                   "agent_config")
EVENT_PREFIXES = ("interaction.", "step.", "content.")
TEXT_OR_ITEMS = "a string, an array of content items or null"  # a turn's or step's content, in 422s
Fragments = list[tuple[str, str]]


class GeminiInteractionsAdapter(Adapter):
    format = "gemini.interactions"
    top_score = 95
    content_keys = frozenset({"system_instruction", "input", "tools"})
    stream_event = 'a Gemini Interactions stream event (an object with a string "event_type")'
    response_kind = 'a Gemini Interactions response, with "steps", legacy "outputs", or at least a "status"'
    # An interaction still `in_progress` or `queued` (background) has a status and no steps yet.
    response_fields = ("steps", "outputs", "status")
    response_markers = ("steps", "outputs")
    response_tags = (("object", "interaction"),)

    @classmethod
    def is_stream_event(cls, chunk: Mapping[str, Any]) -> bool:
        # Every payload names its type (steps and legacy events, errors); unknown names are later additions.
        return isinstance(chunk.get("event_type"), str)

    @classmethod
    def sniff(cls, request: Mapping[str, Any], response: Any) -> int:
        score = 95 if _looks_like_interaction(response) else 0
        if "contents" in request or "messages" in request:
            return score  # generateContent / chat bodies reuse some snake_case names
        if has_any(request, REQUEST_MARKERS):
            return max(score, 85)
        items = request.get("input")
        if isinstance(items, list) and _has_step_item(items):
            return max(score, 85)
        if "input" in request:
            model = request.get("model")
            # A bare {"input": ...} is OpenAI Responses (which sniffs 50); only a Gemini model tips it here.
            return max(score, 60 if isinstance(model, str) and model.startswith("gemini") else 10)
        return score

    # --- request ------------------------------------------------------------------------------------
    def read_request(self, request: Mapping[str, Any], b: ExchangeBuilder) -> None:
        system = request.get("system_instruction")
        if isinstance(system, str):
            b.text(SegmentKind.SYSTEM, system, "/request/system_instruction", role="system", turn=0,
                   phase=Phase.REQUEST)
        elif system is not None:
            raise BodyError(f"system_instruction must be a string, got {json_type(system)}",
                            "/request/system_instruction")
        # The system prompt is turn 0 when present, as in OpenAI Chat, so turn numbers agree across formats.
        # Decided by the segments before the history, so an input item's segments depend only on the items.
        b.next_turn = self._read_input(request.get("input"), 1 if b.segments else 0, b)
        config = request.get("generation_config")
        if config is not None:
            config = obj(config, "/request/generation_config", "generation_config")
            self._read_tool_choice(config.get("tool_choice"), b)
        self._read_tools(request.get("tools"), b)
        b.response_format = _constrains_output(request.get("response_format")) or (
            request.get("response_mime_type") == "application/json")

    def _read_input(self, value: Any, first_turn: int, b: ExchangeBuilder) -> int:
        """Read `input` from turn `first_turn` on; return the turn index the response will have."""
        ptr = "/request/input"
        if value is None:
            return first_turn
        if isinstance(value, str):
            b.text(SegmentKind.USER, value, ptr, role="user", turn=first_turn, phase=Phase.REQUEST)
            return first_turn + 1
        if is_mapping(value):
            self._read_item(value, ptr, first_turn, Phase.REQUEST, "user", b)
            return first_turn + 1
        items = optional_list(value, ptr, "input", "a string, an input item, an array of input items or null")
        turns = _turns(items, first_turn)

        def read_one(item: Any, i: int) -> None:
            iptr = f"{ptr}/{i}"
            item = obj(item, iptr, "an input item")
            if "type" not in item and "role" in item:
                self._read_turn(item, iptr, turns[i], b)
            else:
                self._read_item(item, iptr, turns[i], Phase.REQUEST, "user", b)

        # Agents resend the whole history each step: an unchanged prefix's segments are reused.
        b.read_items(ptr, items, read_one)
        return turns[-1] + 1 if turns else first_turn

    def _read_turn(self, item: Mapping[str, Any], ptr: str, turn: int, b: ExchangeBuilder) -> None:
        """A legacy `{role, content}` Turn."""
        role = item.get("role")
        if role not in ("user", "model"):
            raise BodyError("a turn's role must be \"user\" or \"model\"", f"{ptr}/role")
        content, cptr = item.get("content"), f"{ptr}/content"
        if isinstance(content, str):
            self._text(content, cptr, turn, Phase.REQUEST, role, b)
            return
        for j, part in enumerate(optional_list(content, cptr, "turn content", TEXT_OR_ITEMS)):
            self._read_item(obj(part, f"{cptr}/{j}", "a content item"), f"{cptr}/{j}", turn, Phase.REQUEST,
                            role, b)

    def _read_item(self, item: Mapping[str, Any], ptr: str, turn: int, phase: Phase, speaker: str,
                   b: ExchangeBuilder) -> None:
        """One step or Content item; `speaker` ("user" or "model") owns bare text items."""
        kind = item.get("type", "text" if "text" in item else None)
        if not isinstance(kind, str):
            raise BodyError("an input item needs a string type", f"{ptr}/type")
        if kind == "text":
            self._text(item.get("text"), f"{ptr}/text", turn, phase, speaker, b)
        elif kind == "user_input":
            self._contents(item.get("content"), f"{ptr}/content", turn, phase, "user", b)
        elif kind == "model_output":
            self._contents(item.get("content"), f"{ptr}/content", turn, phase, "model", b)
        elif kind == "thought":
            for text, tptr in _texts(item.get("summary"), f"{ptr}/summary", "thought summary"):
                b.text(SegmentKind.REASONING, text, tptr, role="assistant", turn=turn, phase=phase,
                       source="thought_summary")
        elif kind == "function_call":
            self._function_call(item, ptr, turn, phase, b)
        elif kind in READ_RESULT_TYPES:
            _read_result(item, ptr, turn, phase, b)
        elif is_hosted_call(kind):
            _hosted_call(item, ptr, turn, phase, b)
        # Media and built-in result steps with no text carry nothing we judge; unknown types are newer additions.

    @staticmethod
    def _text(text: Any, ptr: str, turn: int, phase: Phase, speaker: str, b: ExchangeBuilder) -> None:
        if not isinstance(text, str):
            raise BodyError(f"text must be a string, got {json_type(text)}", ptr)
        if speaker == "model":
            b.assistant_text(text, ptr, turn=turn, phase=phase)
        else:
            b.text(SegmentKind.USER, text, ptr, role="user", turn=turn, phase=phase)

    def _contents(self, content: Any, ptr: str, turn: int, phase: Phase, speaker: str,
                  b: ExchangeBuilder) -> None:
        if isinstance(content, str):
            self._text(content, ptr, turn, phase, speaker, b)
            return
        for j, part in enumerate(optional_list(content, ptr, "content", TEXT_OR_ITEMS)):
            pptr = f"{ptr}/{j}"
            part = obj(part, pptr, "a content item")
            if part.get("type", "text") == "text":
                self._text(part.get("text"), f"{pptr}/text", turn, phase, speaker, b)

    @staticmethod
    def _function_call(item: Mapping[str, Any], ptr: str, turn: int, phase: Phase,
                       b: ExchangeBuilder) -> None:
        name = item.get("name")
        if not isinstance(name, str):
            raise BodyError("function_call name must be a string", f"{ptr}/name")
        arguments = item.get("arguments")
        args_ptr = f"{ptr}/arguments"
        if arguments is None:
            arguments, args_ptr = {}, ptr  # no arguments field: point at the call itself
        elif not isinstance(arguments, (Mapping, str)):
            raise BodyError(f"function_call arguments must be an object, got {json_type(arguments)}",
                            args_ptr)
        b.tool_call(name=name, arguments=arguments, call_id=string(item.get("id")),
                    name_pointer=f"{ptr}/name", arguments_pointer=args_ptr, turn=turn, phase=phase)

    @staticmethod
    def _read_tool_choice(choice: Any, b: ExchangeBuilder) -> None:
        b.tool_choice = choice
        mode = choice
        if is_mapping(choice) and is_mapping(choice.get("allowed_tools")):
            mode = choice["allowed_tools"].get("mode")
        # "validated" constrains calls to the declared schemas; we count it as forced and strict.
        b.forced_tool_choice = isinstance(mode, str) and mode.lower() in FORCING_CHOICES

    @staticmethod
    def _read_tools(tools: Any, b: ExchangeBuilder) -> None:
        strict = b.tool_choice == "validated"
        for i, tool in enumerate(optional_list(tools, "/request/tools", "tools")):
            tptr = f"/request/tools/{i}"
            tool = obj(tool, tptr, "a tool")
            kind = tool.get("type", "function")
            if isinstance(kind, str) and kind not in NOT_HOSTED_TOOLS:  # google_search, code_execution...
                b.hosted_tool(kind, tptr)
            if kind != "function":
                continue  # built-ins run on Google's side
            name = tool.get("name")
            if not isinstance(name, str):
                raise BodyError("function tool name must be a string", f"{tptr}/name")
            parameters = tool.get("parameters")
            schema = parameters if is_mapping(parameters) else None
            b.tool(ToolSpec(name=name, parameters=schema, description=string(tool.get("description")) or "",
                            strict=strict, pointer=tptr, name_pointer=f"{tptr}/name",
                            schema_pointer=None if schema is None else f"{tptr}/parameters"))

    # --- response -----------------------------------------------------------------------------------
    def read_response(self, response: Mapping[str, Any], b: ExchangeBuilder) -> None:
        key = "steps" if "steps" in response else "outputs"
        ptr = f"/response/{key}"
        for i, step in enumerate(optional_list(response.get(key), ptr, key)):
            sptr = f"{ptr}/{i}"
            step = obj(step, sptr, "a step")
            if step.get("type") == "user_input":
                continue  # an echo of the request's input, already read there
            self._read_item(step, sptr, b.next_turn, Phase.RESPONSE, "model", b)
        b.generation = _generation(response, response.get("status"))

    def read_stream(self, chunks: list[Any], b: ExchangeBuilder) -> None:
        steps: dict[int, _StepStream] = {}
        meta: dict[str, Any] = {}
        status: Any = None
        copies: list[tuple[Mapping[str, Any], str]] = []  # interactions that carry their steps, and pointers
        for k, event in enumerate(chunks):
            kptr = f"/response/{k}"
            event = obj(event, kptr, "a stream event")
            kind = event.get("event_type")
            interaction = event.get("interaction")
            if is_mapping(interaction):
                meta.update({key: v for key, v in interaction.items() if v is not None})
                status = interaction.get("status", status)
                if interaction.get("steps") is not None or interaction.get("outputs") is not None:
                    copies.append((interaction, f"{kptr}/interaction"))
            if kind == "interaction.status_update":
                status = event.get("status", status)
            elif kind in ("step.start", "content.start"):
                field = "step" if kind == "step.start" else "content"
                start = obj(event.get(field), f"{kptr}/{field}", field)
                _slot(steps, _index(event, steps), kptr).absorb_start(start, f"{kptr}/{field}")
            elif kind in ("step.delta", "content.delta"):
                dptr = f"{kptr}/delta"
                delta = obj(event.get("delta"), dptr, "delta")
                _slot(steps, _index(event, steps, default_last=True), kptr).absorb_delta(delta, dptr)
            elif kind == "error":
                status = "failed"
        since = len(b.segments)
        for slot in steps.values():
            slot.emit(b)
        for interaction, iptr in copies:
            self._read_copy(interaction, iptr, since, b)
        b.generation = _generation(meta, status)

    def _read_copy(self, interaction: Mapping[str, Any], ptr: str, since: int, b: ExchangeBuilder) -> None:
        """The steps an event's whole interaction carries (`interaction.completed`, a final event): a client may use
        them rather than the deltas, so each step is read, keeping only what the stream did not say (`drop_repeats`),
        located in that interaction."""
        key = "steps" if interaction.get("steps") is not None else "outputs"
        for i, step in enumerate(optional_list(interaction.get(key), f"{ptr}/{key}", key)):
            sptr = f"{ptr}/{key}/{i}"
            step = obj(step, sptr, "a step")
            if step.get("type") == "user_input":
                continue  # an echo of the request's input, already read there
            start = len(b.segments)
            self._read_item(step, sptr, b.next_turn, Phase.RESPONSE, "model", b)
            drop_repeats(b, start, since)


class _StepStream:
    """Accumulates one streamed step (or legacy content item) across events."""

    def __init__(self, pointer: str) -> None:
        self.pointer = pointer  # the event that opened the step, for errors
        self.type: str | None = None
        self.text: Fragments = []
        self.summary: Fragments = []
        self.arguments: Fragments = []
        self.arguments_object: tuple[Any, str] | None = None
        self.name: Any = None
        self.name_pointer: str | None = None
        self.call_id: Any = None
        self.results: list[tuple[Mapping[str, Any], str]] = []  # result steps/deltas, each whole, and pointers
        self.hosted: list[tuple[Mapping[str, Any], str]] = []  # built-in call steps/deltas, each whole

    def absorb_start(self, step: Mapping[str, Any], ptr: str) -> None:
        self.type = string(step.get("type")) or self.type
        if self.type == "text" and isinstance(step.get("text"), str):
            self.text.append((step["text"], f"{ptr}/text"))
        elif self.type == "model_output":
            self.text.extend(_texts(step.get("content"), f"{ptr}/content", "content"))
        elif self.type == "thought":
            self.summary.extend(_texts(step.get("summary"), f"{ptr}/summary", "thought summary"))
        elif self.type == "function_call":
            self._call_fields(step, ptr)
        elif self.type in READ_RESULT_TYPES:
            self.call_id = string(step.get("call_id")) or self.call_id
            self.name = string(step.get("name")) or self.name
            self.results.append((step, ptr))
        elif is_hosted_call(self.type):
            self.hosted.append((step, ptr))

    def absorb_delta(self, delta: Mapping[str, Any], ptr: str) -> None:
        kind = delta.get("type")
        if kind == "text" and isinstance(delta.get("text"), str):
            self.type = self.type or "model_output"
            self.text.append((delta["text"], f"{ptr}/text"))
        elif kind == "thought_summary":
            self.type = self.type or "thought"
            content = delta.get("content")
            if is_mapping(content) and isinstance(content.get("text"), str):
                self.summary.append((content["text"], f"{ptr}/content/text"))
            elif isinstance(content, str):
                self.summary.append((content, f"{ptr}/content"))
            else:
                self.summary.extend(_texts(content, f"{ptr}/content", "thought summary"))
        elif kind == "arguments_delta":
            self.type = self.type or "function_call"
            if isinstance(delta.get("arguments"), str):
                self.arguments.append((delta["arguments"], f"{ptr}/arguments"))
        elif kind == "function_call":  # legacy: the whole call in one delta
            self.type = "function_call"
            self._call_fields(delta, ptr)
        elif isinstance(kind, str) and kind in READ_RESULT_TYPES:  # whole; its call id may be on the step start
            self.type = self.type or kind
            self.results.append((delta, ptr))
        elif is_hosted_call(kind):  # a built-in call, whole
            self.type = self.type or kind
            self.hosted.append((delta, ptr))

    def _call_fields(self, call: Mapping[str, Any], ptr: str) -> None:
        if isinstance(call.get("name"), str):
            self.name, self.name_pointer = call["name"], f"{ptr}/name"
        self.call_id = string(call.get("id")) or self.call_id
        arguments = call.get("arguments")
        if is_mapping(arguments):
            self.arguments_object = (arguments, f"{ptr}/arguments")
        elif isinstance(arguments, str):
            self.arguments.append((arguments, f"{ptr}/arguments"))

    def emit(self, b: ExchangeBuilder) -> None:
        if self.type in USER_TYPES:
            return  # an echo of the request's input, skipped as in a complete response
        turn = b.next_turn
        for result, ptr in self.results:
            _read_result(result, ptr, turn, Phase.RESPONSE, b, self.call_id, string(self.name))
        if self.hosted:
            self._emit_hosted(b, turn)
        b.streamed_text(self.summary, turn=turn, reasoning="thought_summary")
        b.streamed_text(self.text, turn=turn)
        if self.type != "function_call":
            return
        if not isinstance(self.name, str) or self.name_pointer is None:
            raise BodyError("a streamed function_call step has no name", self.pointer)
        arguments: Any
        if self.arguments:
            arguments, pieces = assemble(self.arguments)
            args_ptr = pieces[0].pointer if pieces else self.arguments[0][1]
        elif self.arguments_object is not None:
            (arguments, args_ptr), pieces = self.arguments_object, ()
        else:
            arguments, args_ptr, pieces = {}, self.pointer, ()
        b.tool_call(name=self.name, arguments=arguments, call_id=self.call_id, name_pointer=self.name_pointer,
                    arguments_pointer=args_ptr, turn=turn, phase=Phase.RESPONSE, pieces=pieces)

    def _emit_hosted(self, b: ExchangeBuilder, turn: int) -> None:
        """A built-in call streamed as whole objects: the last one with arguments holds them (the start may carry
        only the id); the id, and an MCP call's name and server, are taken from whichever object has them."""
        with_arguments = [(call, ptr) for call, ptr in self.hosted if call.get("arguments") is not None]
        call, ptr = (with_arguments or self.hosted)[-1]
        named = next(((step["name"], f"{sptr}/name") for step, sptr in self.hosted
                      if isinstance(step.get("name"), str)), None)
        call_id = next((step["id"] for step, _ in self.hosted if isinstance(step.get("id"), str)), None)
        server = next((step["server_name"] for step, _ in self.hosted if isinstance(step.get("server_name"), str)),
                      None)
        _hosted_call(call, ptr, turn, Phase.RESPONSE, b, call_id=call_id, named=named, server=server)


def is_hosted_call(kind: Any) -> bool:
    """A built-in call step type (google_search_call, mcp_server_tool_call...): Google runs the call."""
    return isinstance(kind, str) and kind.endswith(CALL_SUFFIX) and kind != "function_call"


def _hosted_call(item: Mapping[str, Any], ptr: str, turn: int, phase: Phase, b: ExchangeBuilder, *,
                 call_id: str | None = None, named: tuple[str, str] | None = None,
                 server: str | None = None) -> None:
    """A built-in call step: named after its type less `_call` (the name at offset 0 of `type`), or for an MCP
    call after the MCP tool (`name`); its `arguments` object is what the model asked for. `call_id`, `named`
    (name, pointer) and `server`: a streamed step's, read off its other events."""
    kind = item["type"]
    if kind != MCP_CALL_TYPE:
        call_name, name_ptr = kind[: -len(CALL_SUFFIX)], f"{ptr}/type"
    elif isinstance(item.get("name"), str):
        call_name, name_ptr = item["name"], f"{ptr}/name"
    elif named is not None:
        call_name, name_ptr = named
    else:
        raise BodyError("an mcp_server_tool_call step has no name", f"{ptr}/name")
    arguments, args_ptr = item.get("arguments"), f"{ptr}/arguments"
    if arguments is None:
        arguments, args_ptr = {}, ptr  # no arguments field: point at the call itself
    elif not is_mapping(arguments):
        raise BodyError(f"{kind} arguments must be an object, got {json_type(arguments)}", args_ptr)
    mcp_server = (string(item.get("server_name")) or server) if kind == MCP_CALL_TYPE else None
    b.tool_call(name=call_name, arguments=arguments, call_id=string(item.get("id")) or call_id,
                name_pointer=name_ptr, arguments_pointer=args_ptr, turn=turn, phase=phase, hosted=True,
                mcp_server=mcp_server)


def _looks_like_interaction(response: Any) -> bool:
    if is_mapping(response):
        return (response.get("object") == "interaction" or isinstance(response.get("steps"), list)
                or isinstance(response.get("outputs"), list))
    if not isinstance(response, list):
        return False
    for event in response[:3]:
        if is_mapping(event):
            kind = event.get("event_type")
            if isinstance(kind, str) and kind.startswith(EVENT_PREFIXES):
                return True
    return False


def _has_step_item(items: list[Any]) -> bool:
    """A step, or a legacy turn by the model: input items only the Interactions API has."""
    for item in items:
        if (type(item) is dict or isinstance(item, Mapping)) and (
                string(item.get("type")) in STEP_TYPES or item.get("role") == "model"):
            return True
    return False


def _slot(steps: dict[int, _StepStream], index: int, kptr: str) -> _StepStream:
    """The step at `index`, opened by the event at `kptr` when new (a get: no throwaway per delta)."""
    slot = steps.get(index)
    if slot is None:
        slot = steps[index] = _StepStream(kptr)
    return slot


def _read_result(item: Mapping[str, Any], ptr: str, turn: int, phase: Phase, b: ExchangeBuilder,
                 call_id: str | None = None, name: str | None = None) -> None:
    """A function, MCP, code execution or built-in result: untrusted text. `call_id`/`name`: a stream step's, if
    the delta that carries the result names neither."""
    result, rptr = item.get("result"), f"{ptr}/result"
    call_id, name = string(item.get("call_id")) or call_id, string(item.get("name")) or name
    kind = item.get("type")
    if isinstance(kind, str) and kind in BUILT_IN_RESULT_FIELDS:
        _read_built_in_result(item, kind, rptr, turn, phase, b, call_id)
        return
    if name is None and call_id is not None:
        name = b.called_name(call_id)  # `name` is optional on results: the call's
    if isinstance(result, list):  # [text/image Content]
        texts: Iterator[tuple[str, str]] | list[tuple[str, str]] = _texts(result, rptr, "result")
    else:
        texts = string_leaves(result, rptr)
    source = "tool_error" if item.get("is_error") is True else ""
    for text, tptr in texts:
        b.text(SegmentKind.TOOL_RESULT, text, tptr, role="tool", turn=turn, phase=phase,
               tool_call_id=call_id, tool_name=name, source=source)


def _read_built_in_result(item: Mapping[str, Any], kind: str, rptr: str, turn: int, phase: Phase,
                          b: ExchangeBuilder, call_id: str | None) -> None:
    """The text fields of a built-in result step's `result` entries (search result titles...), named after the
    built-in, as its call is."""
    name = kind[: -len(RESULT_SUFFIX)]
    source = "tool_error" if item.get("is_error") is True else kind
    for j, entry in enumerate(optional_list(item.get("result"), rptr, f"{kind} result")):
        eptr = f"{rptr}/{j}"
        entry = obj(entry, eptr, f"a {kind} entry")
        for key in BUILT_IN_RESULT_FIELDS[kind]:
            text = entry.get(key)
            if text is None:
                continue
            if not isinstance(text, str):
                raise BodyError(f"{kind} {key} must be a string, got {json_type(text)}", f"{eptr}/{key}")
            b.text(SegmentKind.TOOL_RESULT, text, f"{eptr}/{key}", role="tool", turn=turn, phase=phase,
                   tool_call_id=call_id, tool_name=name, source=source)


def _turns(items: list[Any], first_turn: int) -> list[int]:
    """Each input item's turn: a new one when the author changes, and one per tool result (as in chat)."""
    turns: list[int] = []
    turn, previous = first_turn - 1, None
    for item in items:
        speaker = _speaker(item) if is_mapping(item) else None
        if speaker != previous or speaker == "tool":
            turn += 1
            previous = speaker
        turns.append(turn)
    return turns


def _speaker(item: Mapping[str, Any]) -> str:
    """Who wrote an input item: "user", "model" or "tool"."""
    kind = string(item.get("type"))
    if kind in MODEL_TYPES or is_hosted_call(kind):  # a built-in call is the model's too
        return "model"
    if kind is not None and kind.endswith(RESULT_SUFFIX):  # function, MCP and every built-in's result
        return "tool"
    if kind is None and item.get("role") == "model":
        return "model"
    return "user"


def _texts(content: Any, ptr: str, what: str) -> list[tuple[str, str]]:
    """The text items of a Content[] (other media are skipped)."""
    out = []
    for j, part in enumerate(optional_list(content, ptr, what)):
        pptr = f"{ptr}/{j}"
        if isinstance(part, str):
            out.append((part, pptr))
            continue
        part = obj(part, pptr, "a content item")
        if part.get("type", "text") == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise BodyError(f"text must be a string, got {json_type(text)}", f"{pptr}/text")
            out.append((text, f"{pptr}/text"))
    return out


def _index(event: Mapping[str, Any], steps: dict[int, Any], default_last: bool = False) -> int:
    index = integer(event.get("index"))
    if index is not None:
        return index
    if default_last and steps:
        return next(reversed(steps))
    return len(steps)


def _constrains_output(fmt: Any) -> bool:
    """A JSON schema / JSON mime type in `response_format` (steps: object or array; legacy: bare schema)."""
    for item in fmt if isinstance(fmt, list) else [fmt]:
        if is_mapping(item) and (
            item.get("schema") is not None
            or item.get("mime_type") == "application/json"
            or string(item.get("type")) in SCHEMA_TYPES
            or "properties" in item
        ):
            return True
    return False


def _generation(meta: Mapping[str, Any], status: Any) -> Generation:
    model = string(meta.get("model")) or string(meta.get("agent"))
    return Generation(
        model=model,
        response_id=string(meta.get("id")),
        created=string(meta.get("created")),
        finish_reason=FINISH_REASONS.get(status, status) if isinstance(status, str) else None,
        usage=thought_usage(meta.get("usage"), INTERACTIONS),
    )
