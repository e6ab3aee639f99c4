"""Google Gemini generateContent / streamGenerateContent (format `gemini`).

Requests: `contents` ([{role: user|model|function, parts}]), `systemInstruction`,
`tools[].functionDeclarations`, `toolConfig.functionCallingConfig`, `generationConfig`. The REST API also
accepts the snake_case spelling of every field (Google's curl samples use it), so both are read. Parts:
`text` (with `thought: true` for reasoning), `functionCall {name, args, id?}`, `functionResponse {name,
response, id?}`, `codeExecutionResult` (untrusted output); `thoughtSignature` is opaque and never a
segment. Responses: `candidates[]` with `content.parts`, `finishReason`, `logprobsResult`, `groundingMetadata`;
a stream is the list of partial response objects, assembled per candidate.

Normalization choices (shared with the other adapters):
* The system instruction is turn 0 when present, as in OpenAI Chat; each `contents` entry is one turn.
* `finish_reason` uses the OpenAI vocabulary (STOP -> stop, or tool_calls when the response calls tools;
  MAX_TOKENS -> length; SAFETY and the other block reasons -> content_filter; others verbatim).
* `usage.output_tokens` counts everything generated (Gemini reports thought tokens apart).
* Function declarations' OpenAPI-subset `parameters` are rewritten as JSON Schema for detectors.
* Function responses are arbitrary objects: every string inside becomes an untrusted TOOL_RESULT segment
  pointing at that string.
* `executableCode` is a call of the code_execution built-in, which Google runs in its sandbox: a hosted tool
  call named `code_execution` whose arguments are the part's `executableCode` object (`language`, `code`; its
  `id` is the call id), declared by a `codeExecution` tool. No string in the body holds that name: the name's
  location is the `executableCode` object itself.
* A candidate's `groundingMetadata` (Google Search grounding): its `webSearchQueries` are queries the model
  wrote, read as one hosted call of the google_search built-in (declared by a `googleSearch` or legacy
  `googleSearchRetrieval` tool) whose arguments are `{"webSearchQueries": [...]}` located at the
  `groundingMetadata` object, so a query's finding points at `.../webSearchQueries/<j>`; as for
  `executableCode`, the name's location is that object. What the search found is untrusted TOOL_RESULT text
  (source "grounding_chunk"): `groundingChunks[].web.title` and `groundingChunks[].retrievedContext.title` /
  `.text`; their `uri`s are addresses, not read. `groundingSupports[].segment.text` quotes the answer already
  read as assistant text and `searchEntryPoint` is Google's rendering of the queries: neither is read again.
  In a stream, every chunk's `groundingMetadata` is read (usually only the last has one), except one equal to
  a metadata the candidate already sent.

Vertex AI streams a call's arguments in pieces when the request sets `toolConfig.functionCallingConfig.
streamFunctionCallArguments`: the call's first `functionCall` part carries its `name` (and `willContinue: true`), the
next ones only `partialArgs` (`[{jsonPath, stringValue | numberValue | boolValue | nullValue, willContinue}]`, the
path an RFC 9535 one such as `$.location`, `$.a.b` or `$.items[0].name`), until a part without `willContinue` (or an
empty `functionCall`) ends it. Such parts are assembled into one call per function call, as the SDKs assemble
them: the string values of a path concatenated, a number, boolean or null set. The call's text is our serialization
of the assembled arguments; a span of it is located in the part that carried the value holding it (a string's
piece at its offsets in that `stringValue`, in the piece where it starts, as a streamed Chat argument is; another
value as a whole), and a span over several values at the first part's `functionCall`. A path that is not one, or
that contradicts an earlier one (a key under a string, an array index past the end), is a 422 at its `jsonPath`.
A call whose last part says `willContinue` has unfinished arguments, as a Chat call whose JSON is cut short: a
mid-stream check judges its values but reports no `tool_schema` finding for them; a final check reports them as
not complete (`arguments_error`).

Logprobs are added with shape "gemini": the candidate's `logprobsResult` object as returned,
`{"chosenCandidates": [{"token", "logProbability", "tokenId"?}], "topCandidates": [{"candidates": [...]}]}`
(one `topCandidates` entry per chosen token). A stream yields one source per chunk, in order.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from typing import Any

from guardrails.adapters.base import Adapter, ExchangeBuilder
from guardrails.adapters.gemini_usage import GENERATE_CONTENT, thought_usage
from guardrails.adapters.jsonread import (
    any_object_with,
    has_any,
    integer,
    is_mapping,
    json_type,
    obj,
    optional_list,
    same_value,
    string,
    string_leaves,
)
from guardrails.argspans import ArgPath, object_span
from guardrails.errors import BodyError
from guardrails.exchange import Generation, Location, Phase, Piece, Segment, SegmentKind, ToolSpec
from guardrails.logprobs.check import check_gemini
from guardrails.pointer import join

# Pointers are f-strings: every token is a literal key or an index, so none needs RFC 6901 escaping (the
# keys of a function response, read from the body, are escaped by `string_leaves`).
REQUEST_MARKERS = ("systemInstruction", "generationConfig", "toolConfig", "safetySettings", "cachedContent")
FUNCTION_TOOL_KEYS = ("functionDeclarations", "function_declarations")  # a tool that declares functions
RESPONSE_MARKERS = ("candidates", "usageMetadata", "promptFeedback")
JSON_MIMES = frozenset({"application/json", "text/x.enum"})
STREAM_META_KEYS = ("modelVersion", "responseId", "createTime")
# The fields of a streamed GenerateContentResponse (either spelling), any of which a chunk has: a chunk may have
# no candidates (usage or prompt feedback only). Google's mid-stream error is {"error": {code, message, status}}.
STREAM_CHUNK_KEYS = (*RESPONSE_MARKERS, *STREAM_META_KEYS, "usage_metadata", "prompt_feedback", "model_version",
                     "response_id", "create_time", "error")
# A whole response carries candidates, or only prompt feedback where the prompt was blocked, or, when Gemini
# returned no candidate at all (proto JSON leaves an empty list out), only its usage and ids. No other API's whole
# response has these fields (camelCase, or Gemini's own names): a response read as another API that carries one is
# Gemini's.
RESPONSE_FIELDS = ("candidates", "promptFeedback", "prompt_feedback", "usageMetadata", "usage_metadata",
                   "modelVersion", "responseId")
MAX_SCHEMA_DEPTH = 64
# One step of a `partialArgs` jsonPath after its `$`: `.name`, `[0]`, `['name']` or `["name"]`.
# A dot-notation name holds no whitespace and is no wildcard (`$.*`, `$.a[*]` select many values, not one):
# a name written with those is quoted (`$['a b']`).
JSON_PATH_STEP = re.compile(r"""\.((?!\*(?:[.\[]|$))[^.\[\]\s]+)|\[(\d+)\]"""
                            r"""|\['((?:[^'\\]|\\.)*)'\]|\["((?:[^"\\]|\\.)*)"\]""")
MAX_PATH_STEPS = 64  # deeper than any declared schema: a deeper path is refused, not walked
UNFINISHED = "arguments are not complete: the stream ends before the call's last part (willContinue)"
CODE_EXECUTION = "code_execution"  # the built-in whose calls are `executableCode` parts
GOOGLE_SEARCH = "google_search"  # the built-in whose queries come back in `groundingMetadata`
# The tools (either spelling) that let the model search: googleSearchRetrieval is the Gemini 1.5 spelling.
GOOGLE_SEARCH_TOOLS = ("googleSearch", "google_search", "googleSearchRetrieval", "google_search_retrieval")
# finishReason in the OpenAI vocabulary; others (MALFORMED_FUNCTION_CALL, OTHER...) are kept verbatim.
FINISH_REASONS = {
    "STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter", "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter", "PROHIBITED_CONTENT": "content_filter", "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}


def camel_or_snake(container: Mapping[str, Any], camel: str, snake: str) -> tuple[Any, str]:
    """A field under either spelling, with the key actually used (for pointers)."""
    if camel in container:
        return container[camel], camel
    return container.get(snake), snake


class GeminiGenerateContentAdapter(Adapter):
    format = "gemini"
    top_score = 95
    content_keys = frozenset({"systemInstruction", "system_instruction", "contents", "tools"})
    stream_event = ('a Gemini streamGenerateContent chunk (a partial GenerateContentResponse, with "candidates", '
                    '"usageMetadata", "promptFeedback", "modelVersion" or "responseId", or an "error")')
    response_kind = 'a Gemini generateContent response, with "candidates" (or "promptFeedback" for a blocked prompt)'
    response_fields = RESPONSE_FIELDS
    response_markers = RESPONSE_FIELDS

    @classmethod
    def is_stream_event(cls, chunk: Mapping[str, Any]) -> bool:
        return has_any(chunk, STREAM_CHUNK_KEYS)

    @classmethod
    def sniff(cls, request: Mapping[str, Any], response: Any) -> int:
        score = 0
        if "contents" in request:
            score = 90
        elif has_any(request, REQUEST_MARKERS) or any_object_with(request.get("tools"), FUNCTION_TOOL_KEYS):
            score = 85
        first = response[0] if isinstance(response, list) and response else response
        if is_mapping(first) and has_any(first, RESPONSE_MARKERS):
            score = 95
        return score

    # --- request ------------------------------------------------------------------------------------
    def read_request(self, request: Mapping[str, Any], b: ExchangeBuilder) -> None:
        system, key = camel_or_snake(request, "systemInstruction", "system_instruction")
        if isinstance(system, str):  # lenient: a bare string instead of a Content
            b.text(SegmentKind.SYSTEM, system, f"/request/{key}", role="system", turn=0,
                   phase=Phase.REQUEST)
        elif system is not None:
            self._read_content(system, f"/request/{key}", 0, Phase.REQUEST, "system", b)
        # The system prompt is turn 0 when present, as in OpenAI Chat, so turn numbers agree across formats.
        # Decided by the segments before the history, so a content's segments depend only on it and its index.
        first = 1 if b.segments else 0
        contents = request.get("contents")
        if is_mapping(contents):  # a single Content is accepted in place of the list
            self._read_content(contents, "/request/contents", first, Phase.REQUEST, "user", b)
            b.next_turn = first + 1
        else:
            items = optional_list(contents, "/request/contents", "contents", "an array of contents, a content or null")

            def read_one(content: Any, i: int) -> None:
                self._read_content(content, f"/request/contents/{i}", first + i, Phase.REQUEST, "user", b)

            # Agents resend the whole history each step: an unchanged prefix's segments are reused.
            b.read_items("/request/contents", items, read_one)
            b.next_turn = first + len(items)
        tool_config, key = camel_or_snake(request, "toolConfig", "tool_config")
        if tool_config is not None:
            self._read_tool_config(obj(tool_config, f"/request/{key}", key), f"/request/{key}", b)
        self._read_tools(request.get("tools"), b)
        config, key = camel_or_snake(request, "generationConfig", "generation_config")
        if config is not None:
            config = obj(config, f"/request/{key}", key)
            b.response_format = any(
                config.get(k) is not None
                for k in ("responseSchema", "response_schema", "responseJsonSchema", "response_json_schema")
            ) or string(camel_or_snake(config, "responseMimeType", "response_mime_type")[0]) in JSON_MIMES

    def _read_content(self, content: Any, ptr: str, turn: int, phase: Phase, default_role: str,
                      b: ExchangeBuilder) -> None:
        content = obj(content, ptr, "a content")
        # A system instruction's parts are system text whatever role it claims.
        role = "system" if default_role == "system" else content.get("role", default_role)
        if not isinstance(role, str):
            raise BodyError("content role must be a string", f"{ptr}/role")
        parts, pptr = content.get("parts"), f"{ptr}/parts"
        if is_mapping(parts):  # a single part is accepted in place of the list
            self._read_part(parts, pptr, turn, phase, role, b)
            return
        for j, part in enumerate(optional_list(parts, pptr, "parts", "an array of parts, a part or null")):
            self._read_part(part, f"{pptr}/{j}", turn, phase, role, b)

    @staticmethod
    def _read_part(part: Any, ptr: str, turn: int, phase: Phase, role: str, b: ExchangeBuilder) -> None:
        part = obj(part, ptr, "a part")
        text = part.get("text")
        if text is not None:
            tptr = f"{ptr}/text"
            if not isinstance(text, str):
                raise BodyError("part text must be a string", tptr)
            if part.get("thought") is True:
                b.text(SegmentKind.REASONING, text, tptr, role="assistant", turn=turn, phase=phase,
                       source="thought")
            elif role == "model":
                b.assistant_text(text, tptr, turn=turn, phase=phase)
            elif role == "system":
                b.text(SegmentKind.SYSTEM, text, tptr, role="system", turn=turn, phase=phase)
            else:
                b.text(SegmentKind.USER, text, tptr, role="user", turn=turn, phase=phase)
            return
        call, key = camel_or_snake(part, "functionCall", "function_call")
        if call is not None:
            _function_call(obj(call, f"{ptr}/{key}", key), f"{ptr}/{key}", turn, phase, b)
            return
        result, key = camel_or_snake(part, "functionResponse", "function_response")
        if result is not None:
            rptr = f"{ptr}/{key}"
            result = obj(result, rptr, key)
            name, call_id = string(result.get("name")), string(result.get("id"))
            for leaf, lptr in string_leaves(result.get("response"), f"{rptr}/response"):
                b.text(SegmentKind.TOOL_RESULT, leaf, lptr, role="tool", turn=turn, phase=phase,
                       tool_call_id=call_id, tool_name=name)
            return
        code, key = camel_or_snake(part, "executableCode", "executable_code")
        if code is not None:
            _code_call(obj(code, f"{ptr}/{key}", key), f"{ptr}/{key}", turn, phase, b)
            return
        output = _code_output(part, ptr)
        if output is not None:
            _code_result(b, *output, turn, phase)
        # inlineData / fileData / thoughtSignature-only parts carry no text we judge.

    @staticmethod
    def _read_tool_config(config: Mapping[str, Any], ptr: str, b: ExchangeBuilder) -> None:
        calling, key = camel_or_snake(config, "functionCallingConfig", "function_calling_config")
        if calling is None:
            return
        calling = obj(calling, f"{ptr}/{key}", key)
        b.tool_choice = calling
        mode = calling.get("mode")
        # ANY forces a call; VALIDATED constrains calls to the declared schemas: both count as forced.
        b.forced_tool_choice = isinstance(mode, str) and mode.upper() in ("ANY", "VALIDATED")

    @staticmethod
    def _read_tools(tools: Any, b: ExchangeBuilder) -> None:
        mode = b.tool_choice.get("mode") if is_mapping(b.tool_choice) else None
        strict = isinstance(mode, str) and mode.upper() == "VALIDATED"
        for i, tool in enumerate(optional_list(tools, "/request/tools", "tools")):
            tptr = f"/request/tools/{i}"
            tool = obj(tool, tptr, "a tool")
            if "codeExecution" in tool or "code_execution" in tool:  # Google runs it: its calls are hosted
                b.hosted_tool(CODE_EXECUTION, tptr)
            if has_any(tool, GOOGLE_SEARCH_TOOLS):  # its queries are hosted calls too (groundingMetadata)
                b.hosted_tool(GOOGLE_SEARCH, tptr)
            declarations, key = camel_or_snake(tool, "functionDeclarations", "function_declarations")
            # Other built-ins (urlContext, googleMaps...) run on Google's side and send no call we read.
            for j, decl in enumerate(optional_list(declarations, f"{tptr}/{key}", key)):
                dptr = f"{tptr}/{key}/{j}"
                decl = obj(decl, dptr, "a function declaration")
                name = decl.get("name")
                if not isinstance(name, str):
                    raise BodyError("function declaration name must be a string", f"{dptr}/name")
                schema, schema_key = _parameters(decl)
                b.tool(ToolSpec(name=name, parameters=schema, strict=strict, pointer=dptr,
                                description=string(decl.get("description")) or "", name_pointer=f"{dptr}/name",
                                schema_pointer=None if schema_key is None else f"{dptr}/{schema_key}"))

    # --- response -----------------------------------------------------------------------------------
    def read_response(self, response: Mapping[str, Any], b: ExchangeBuilder) -> None:
        turn = b.next_turn
        candidates = optional_list(response.get("candidates"), "/response/candidates", "candidates")
        for i, candidate in enumerate(candidates):
            cptr = f"/response/candidates/{i}"
            candidate = obj(candidate, cptr, "a candidate")
            index = _index(candidate, i)
            content = candidate.get("content")
            if content is not None:
                self._read_content(content, f"{cptr}/content", turn, Phase.RESPONSE, "model", b)
            _read_logprobs(candidate, cptr, index, b)
            grounding = _grounding_metadata(candidate, cptr)
            if grounding is not None:
                _read_grounding(*grounding, turn, b)
        first = candidates[0] if candidates and is_mapping(candidates[0]) else {}
        b.generation = _generation(response, _finish_reason(first.get("finishReason"), b),
                                   response.get("usageMetadata"))

    def read_stream(self, chunks: list[Any], b: ExchangeBuilder) -> None:
        streams: dict[int, _CandidateStream] = {}
        meta: dict[str, Any] = {}
        usage: Any = None
        for k, chunk in enumerate(chunks):
            kptr = f"/response/{k}"
            chunk = obj(chunk, kptr, "a stream chunk")
            for key in STREAM_META_KEYS:
                if key in chunk:
                    meta[key] = chunk[key]
            usage = chunk.get("usageMetadata", usage)
            for j, candidate in enumerate(optional_list(chunk.get("candidates"), f"{kptr}/candidates",
                                                        "candidates")):
                cptr = f"{kptr}/candidates/{j}"
                candidate = obj(candidate, cptr, "a candidate")
                index = _index(candidate, j)
                stream = streams.get(index)
                if stream is None:  # not setdefault: that would build a throwaway per chunk
                    stream = streams[index] = _CandidateStream()
                stream.absorb(candidate, cptr, index, b)
        for index in sorted(streams):
            streams[index].emit(b)
        first = streams.get(0) or next(iter(streams.values()), _CandidateStream())
        b.generation = _generation(meta, _finish_reason(first.finish_reason, b), usage)


class _CandidateStream:
    """Accumulates one candidate's parts across stream chunks."""

    def __init__(self) -> None:
        self.thought: list[tuple[str, str]] = []
        self.text: list[tuple[str, str]] = []
        # (call, pointer, is code execution) for a call sent whole, or a call Vertex streams in parts
        self.calls: list[tuple[Mapping[str, Any], str, bool] | _StreamedCall] = []
        self.streaming: _StreamedCall | None = None  # the streamed call whose parts are still arriving
        self.code_outputs: list[tuple[str, str]] = []  # code execution output arrives whole, one per part
        self.grounding: list[tuple[Mapping[str, Any], str]] = []  # groundingMetadata objects and pointers
        self.finish_reason: Any = None

    def absorb(self, candidate: Mapping[str, Any], cptr: str, index: int, b: ExchangeBuilder) -> None:
        if candidate.get("finishReason") is not None:
            self.finish_reason = candidate["finishReason"]
        _read_logprobs(candidate, cptr, index, b)
        grounding = _grounding_metadata(candidate, cptr)
        if grounding is not None and not _repeats(grounding[0], self.grounding):
            self.grounding.append(grounding)
        content = candidate.get("content")
        if content is None:
            return
        content = obj(content, f"{cptr}/content", "content")
        pptr = f"{cptr}/content/parts"
        for j, part in enumerate(optional_list(content.get("parts"), pptr, "parts")):
            ptr = f"{pptr}/{j}"
            part = obj(part, ptr, "a part")
            text = part.get("text")
            if isinstance(text, str):
                (self.thought if part.get("thought") is True else self.text).append((text, f"{ptr}/text"))
            elif text is not None:
                raise BodyError("part text must be a string", f"{ptr}/text")
            call, key = camel_or_snake(part, "functionCall", "function_call")
            if call is not None:
                self._function_call(obj(call, f"{ptr}/{key}", key), f"{ptr}/{key}")
            code, key = camel_or_snake(part, "executableCode", "executable_code")
            if code is not None:
                self.calls.append((obj(code, f"{ptr}/{key}", key), f"{ptr}/{key}", True))
            output = _code_output(part, ptr)
            if output is not None:
                self.code_outputs.append(output)

    def _function_call(self, call: Mapping[str, Any], ptr: str) -> None:
        """A `functionCall` part: a whole call, or a part of one Vertex streams (`streamFunctionCallArguments`)."""
        streamed = _field(call, "partialArgs", "partial_args") is not None or _continues(call)
        if call.get("name") is not None:  # a named part starts a call, which ends one still open
            self.streaming = None
            if not streamed:
                self.calls.append((call, ptr, False))
                return
        elif self.streaming is None and not streamed:
            if call.get("args") is not None:
                self.calls.append((call, ptr, False))  # arguments of no call: refused for its missing name
            return  # an empty `functionCall` (or `willContinue: false` alone): the end of a streamed call
        if self.streaming is None:  # its first part, or, missing that, a part of a call with no name
            self.streaming = _StreamedCall(ptr)
            self.calls.append(self.streaming)
        self.streaming.absorb(call, ptr)
        if not _continues(call):
            self.streaming = None

    def emit(self, b: ExchangeBuilder) -> None:
        turn = b.next_turn
        b.streamed_text(self.thought, turn=turn, reasoning="thought")
        b.streamed_text(self.text, turn=turn)
        for entry in self.calls:  # whole calls, one per part, and calls assembled from their parts
            if isinstance(entry, _StreamedCall):
                entry.emit(b, turn)
                continue
            call, ptr, is_code = entry
            (_code_call if is_code else _function_call)(call, ptr, turn, Phase.RESPONSE, b)
        for text, ptr in self.code_outputs:
            _code_result(b, text, ptr, turn, Phase.RESPONSE)
        for metadata, ptr in self.grounding:
            _read_grounding(metadata, ptr, turn, b)


class _StreamedCall:
    """One function call Vertex streamed over several `functionCall` parts (`streamFunctionCallArguments`)."""

    def __init__(self, pointer: str) -> None:
        self.pointer = pointer  # the first part's functionCall: where the call as a whole is located
        self.name = ""
        self.name_pointer: str | None = None
        self.call_id: str | None = None
        self.arguments: dict[str, Any] = {}  # as assembled so far, a string value "" until `emit` joins it
        self.strings: dict[ArgPath, list[tuple[str, str]]] = {}  # a string value's pieces (text, pointer)
        self.values: dict[ArgPath, str] = {}  # where another value was set
        self.open = True  # no part has ended the call yet

    def absorb(self, call: Mapping[str, Any], ptr: str) -> None:
        self.open = _continues(call)
        name = call.get("name")
        if name is not None:
            if not isinstance(name, str):
                raise BodyError("functionCall name must be a string", f"{ptr}/name")
            self.name, self.name_pointer = name, f"{ptr}/name"
        self.call_id = self.call_id or string(call.get("id"))
        args = call.get("args")
        if args is not None:  # whole values beside the streamed ones (none in Google's samples): read as set there
            for path, value in _leaves(obj(args, f"{ptr}/args", "functionCall args")):
                where = join(f"{ptr}/args", *path)
                if isinstance(value, str):
                    self._string(path, value, where, where)
                else:
                    self._value(path, value, where, where)
        partial, key = camel_or_snake(call, "partialArgs", "partial_args")
        for j, arg in enumerate(optional_list(partial, f"{ptr}/{key}", key)):
            aptr = f"{ptr}/{key}/{j}"
            self._partial(obj(arg, aptr, "a partialArgs entry"), aptr)

    def _partial(self, arg: Mapping[str, Any], aptr: str) -> None:
        json_path, key = camel_or_snake(arg, "jsonPath", "json_path")
        if not isinstance(json_path, str):
            raise BodyError(f"partialArgs jsonPath must be a string, got {json_type(json_path)}", f"{aptr}/{key}")
        path_pointer = f"{aptr}/{key}"
        path = _json_path(json_path, path_pointer)
        text, key = camel_or_snake(arg, "stringValue", "string_value")
        if text is not None:
            if not isinstance(text, str):
                raise BodyError(f"partialArgs stringValue must be a string, got {json_type(text)}", f"{aptr}/{key}")
            self._string(path, text, f"{aptr}/{key}", path_pointer)
            return
        number, key = camel_or_snake(arg, "numberValue", "number_value")
        if key in arg:  # null too: NaN or 1e400 as the edge reads them, judged as a null value (not "none yet")
            if number is not None and (isinstance(number, bool) or not isinstance(number, (int, float))):
                raise BodyError(f"partialArgs numberValue must be a number, got {json_type(number)}", f"{aptr}/{key}")
            self._value(path, number, f"{aptr}/{key}", path_pointer)
            return
        flag, key = camel_or_snake(arg, "boolValue", "bool_value")
        if flag is not None:
            if not isinstance(flag, bool):
                raise BodyError(f"partialArgs boolValue must be a boolean, got {json_type(flag)}", f"{aptr}/{key}")
            self._value(path, flag, f"{aptr}/{key}", path_pointer)
            return
        for key in ("nullValue", "null_value"):
            if key in arg:
                self._value(path, None, f"{aptr}/{key}", path_pointer)
                return
        # A path with no value yet (only `willContinue`): nothing to set.

    def _string(self, path: ArgPath, text: str, pointer: str, path_pointer: str) -> None:
        pieces = self.strings.get(path)
        if pieces is None:  # a new string value, or one replacing another value at the path
            self._set(path, "", path_pointer)
            self.values.pop(path, None)
            pieces = self.strings[path] = []
        pieces.append((text, pointer))

    def _value(self, path: ArgPath, value: Any, pointer: str, path_pointer: str) -> None:
        self._set(path, value, path_pointer)
        self.strings.pop(path, None)
        self.values[path] = pointer

    def _set(self, path: ArgPath, value: Any, path_pointer: str) -> None:
        """Put `value` at `path`, making the objects and arrays on the way; a path that contradicts what is there
        (a key under a string, an array index past the end, a value over an object) is refused."""
        node: Any = self.arguments
        for depth, token in enumerate(path):
            last = depth == len(path) - 1
            if isinstance(token, int):
                if not isinstance(node, list) or token > len(node):
                    raise BodyError(_contradiction(path, "an array index past the end or not in an array"),
                                    path_pointer)
                if token == len(node):
                    node.append(None if last else _container(path[depth + 1]))
            elif not isinstance(node, dict):
                raise BodyError(_contradiction(path, "a key in a value that is not an object"), path_pointer)
            elif token not in node:
                node[token] = None if last else _container(path[depth + 1])
            if last:
                if isinstance(node[token], (dict, list)):
                    raise BodyError(_contradiction(path, "a value over an object or array"), path_pointer)
                node[token] = value
            else:
                node = node[token]

    def emit(self, b: ExchangeBuilder, turn: int) -> None:
        places: dict[ArgPath, str | tuple[Piece, ...]] = dict(self.values)
        for path, pieces in self.strings.items():
            text, offset, located = [], 0, []
            for piece, pointer in pieces:
                if piece:
                    located.append(Piece(offset=offset, length=len(piece), pointer=pointer, start=0))
                    offset += len(piece)
                text.append(piece)
            _put(self.arguments, path, "".join(text))
            places[path] = tuple(located) or pieces[0][1]  # an empty string: its first piece, as a whole value
        raw = json.dumps(self.arguments, ensure_ascii=False)
        named = bool(self.name)
        segment = b.tool_call(name=self.name, arguments=raw, call_id=self.call_id,
                              name_pointer=self.name_pointer if named and self.name_pointer else self.pointer,
                              arguments_pointer=self.pointer, turn=turn, phase=Phase.RESPONSE, name_in_text=named)
        values = {f.name: getattr(segment, f.name) for f in dataclasses.fields(Segment) if f.init}
        if self.open and segment.tool_call is not None:
            # Parts still to come may add arguments: what arrived is judged, but not as the call's whole arguments
            # (a mid-stream check gets no tool_schema finding for them, as for a Chat call's unfinished JSON).
            values["tool_call"] = dataclasses.replace(segment.tool_call, arguments_error=UNFINISHED)
        b.segments[-1] = _StreamedArguments(**values, places=places)


@dataclasses.dataclass(frozen=True, slots=True)
class _StreamedArguments(Segment):
    """The segment of a call whose arguments Vertex streamed in `partialArgs`: its text is our serialization of the
    assembled arguments, and `locate` places a span of it on the part that carried the value holding it."""

    # Each value's path -> the pieces of a string (offsets in the decoded value), or the pointer of another value.
    places: Mapping[ArgPath, str | tuple[Piece, ...]] = dataclasses.field(default_factory=dict, compare=False,
                                                                             repr=False)

    def locate(self, start: int, end: int) -> Location:
        call = self.tool_call
        assert call is not None
        path, lo, hi = object_span(self.text, call.arguments, start, end)
        place = self.places.get(path)
        if place is None:  # keys, punctuation, an object or array holding several values: the call
            return Location(self.pointer)
        if isinstance(place, str) or lo is None or hi is None:
            return Location(place if isinstance(place, str) else place[0].pointer)
        for piece in place:  # in the piece where the span starts, its end clipped to that piece
            if piece.offset <= lo < piece.offset + piece.length:
                return Location(piece.pointer, lo - piece.offset, min(hi, piece.offset + piece.length) - piece.offset)
        return Location(place[-1].pointer, place[-1].length, place[-1].length)  # an empty span at the very end


def _field(container: Mapping[str, Any], camel: str, snake: str) -> Any:
    return camel_or_snake(container, camel, snake)[0]


def _continues(call: Mapping[str, Any]) -> bool:
    return _field(call, "willContinue", "will_continue") is True


def _json_path(text: str, pointer: str) -> ArgPath:
    """An RFC 9535 path to one argument (`$.a.b`, `$.items[0]`, `$['a b']`) as our argument path."""
    if not text.startswith("$"):
        raise BodyError(f"partialArgs jsonPath must start with '$', got {text[:60]!r}", pointer)
    path: list[str | int] = []
    at = 1
    while at < len(text):
        step = JSON_PATH_STEP.match(text, at)
        if step is None or len(path) >= MAX_PATH_STEPS:
            raise BodyError(f"partialArgs jsonPath {text[:60]!r} is not a path to one argument (at offset {at})",
                            pointer)
        name, index, single, double = step.groups()
        if index is not None:
            path.append(int(index))
        else:
            quoted = single if single is not None else double
            path.append(name if quoted is None else re.sub(r"\\(.)", r"\1", quoted))
        at = step.end()
    if not path or not isinstance(path[0], str):
        raise BodyError(f"partialArgs jsonPath {text[:60]!r} must name an argument", pointer)
    return tuple(path)


def _container(token: str | int) -> dict[str, Any] | list[Any]:
    return [] if isinstance(token, int) else {}


def _contradiction(path: ArgPath, what: str) -> str:
    return f"partialArgs jsonPath to {'.'.join(map(str, path))[:60]!r} contradicts the arguments so far: {what}"


def _put(arguments: dict[str, Any], path: ArgPath, value: Any) -> None:
    node: Any = arguments
    for token in path[:-1]:
        node = node[token]
    node[path[-1]] = value


def _leaves(value: Any, path: ArgPath = ()) -> list[tuple[ArgPath, Any]]:
    """Every scalar of an `args` object with its path (an empty object or array is a value of its own)."""
    if isinstance(value, Mapping) and value:
        return [leaf for key, item in value.items() for leaf in _leaves(item, (*path, key))]
    if isinstance(value, list) and value:
        return [leaf for index, item in enumerate(value) for leaf in _leaves(item, (*path, index))]
    return [(path, value)] if path else []


def _index(candidate: Mapping[str, Any], position: int) -> int:
    index = integer(candidate.get("index"))
    return position if index is None else index


def _function_call(call: Mapping[str, Any], ptr: str, turn: int, phase: Phase, b: ExchangeBuilder) -> None:
    name = call.get("name")
    if not isinstance(name, str):
        raise BodyError("functionCall name must be a string", f"{ptr}/name")
    args = call.get("args")
    if args is None:
        args, args_ptr = {}, ptr  # no args field: point at the call itself
    elif is_mapping(args):
        args_ptr = f"{ptr}/args"
    else:
        raise BodyError("functionCall args must be an object", f"{ptr}/args")
    b.tool_call(name=name, arguments=args, call_id=string(call.get("id")), name_pointer=f"{ptr}/name",
                arguments_pointer=args_ptr, turn=turn, phase=phase)


def _code_call(code: Mapping[str, Any], ptr: str, turn: int, phase: Phase, b: ExchangeBuilder) -> None:
    """An `executableCode` part: the code Google runs for the code_execution built-in, a hosted call."""
    arguments = {key: value for key, value in code.items() if key != "id"}
    b.tool_call(name=CODE_EXECUTION, arguments=arguments, call_id=string(code.get("id")), name_pointer=ptr,
                name_in_text=False, arguments_pointer=ptr, turn=turn, phase=phase, hosted=True)


def _code_output(part: Mapping[str, Any], ptr: str) -> tuple[str, str] | None:
    """The output (and its pointer) of a `codeExecutionResult` part: what the sandboxed code printed."""
    outcome, key = camel_or_snake(part, "codeExecutionResult", "code_execution_result")
    if is_mapping(outcome) and isinstance(outcome.get("output"), str):
        return outcome["output"], f"{ptr}/{key}/output"
    return None


def _code_result(b: ExchangeBuilder, text: str, ptr: str, turn: int, phase: Phase) -> None:
    b.text(SegmentKind.TOOL_RESULT, text, ptr, role="tool", turn=turn, phase=phase, source="code_execution_result")


def _read_logprobs(candidate: Mapping[str, Any], cptr: str, index: int, b: ExchangeBuilder) -> None:
    """A candidate's `logprobsResult` (one per chunk in a stream), checked as it is added: one with a field of the
    wrong type is left unread (`skip_logprobs`)."""
    result = candidate.get("logprobsResult")
    if result is not None:
        lptr = f"{cptr}/logprobsResult"
        try:
            check_gemini(obj(result, lptr, "logprobsResult"), lptr)
        except BodyError as exc:
            b.skip_logprobs(exc)
        else:
            b.add_logprobs("gemini", lptr, result, index)


def _grounding_metadata(candidate: Mapping[str, Any], cptr: str) -> tuple[Mapping[str, Any], str] | None:
    """A candidate's `groundingMetadata` object and its pointer, if it has one."""
    metadata, key = camel_or_snake(candidate, "groundingMetadata", "grounding_metadata")
    if metadata is None:
        return None
    return obj(metadata, f"{cptr}/{key}", key), f"{cptr}/{key}"


def _repeats(metadata: Mapping[str, Any], seen: list[tuple[Mapping[str, Any], str]]) -> bool:
    """Whether a chunk repeats metadata the candidate already sent: it adds nothing, and its queries read again
    would look like a loop. Metadata nested too deep to compare counts as new (it is read, never a 500)."""
    return any(same_value(metadata, earlier) for earlier, _ in seen)


def _read_grounding(metadata: Mapping[str, Any], ptr: str, turn: int, b: ExchangeBuilder) -> None:
    """Google Search grounding: the queries the model searched (a hosted google_search call), then the titles
    and retrieved texts of what the search found (untrusted). `groundingSupports` quote the answer: not read."""
    queries, key = camel_or_snake(metadata, "webSearchQueries", "web_search_queries")
    qptr = f"{ptr}/{key}"
    for j, query in enumerate(optional_list(queries, qptr, key)):
        if not isinstance(query, str):
            raise BodyError(f"{key} entries must be strings", f"{qptr}/{j}")
    if queries:
        # No string holds the name: it is located at the metadata object, which is also where the arguments
        # `{key: queries}` sit, so a query's finding points at `<ptr>/<key>/<j>`.
        b.tool_call(name=GOOGLE_SEARCH, arguments={key: queries}, call_id=None, name_pointer=ptr,
                    name_in_text=False, arguments_pointer=ptr, turn=turn, phase=Phase.RESPONSE, hosted=True)
    chunks, key = camel_or_snake(metadata, "groundingChunks", "grounding_chunks")
    for j, chunk in enumerate(optional_list(chunks, f"{ptr}/{key}", key)):
        _read_grounding_chunk(chunk, f"{ptr}/{key}/{j}", turn, b)


def _read_grounding_chunk(chunk: Any, ptr: str, turn: int, b: ExchangeBuilder) -> None:
    """A web page's title, or a retrieved document's title and text: third-party words, untrusted."""
    chunk = obj(chunk, ptr, "a grounding chunk")
    retrieved, key = camel_or_snake(chunk, "retrievedContext", "retrieved_context")
    for source, skey, fields, tool in ((chunk.get("web"), "web", ("title",), GOOGLE_SEARCH),
                                       (retrieved, key, ("title", "text"), None)):
        if source is None:
            continue
        sptr = f"{ptr}/{skey}"
        source = obj(source, sptr, skey)
        for field in fields:
            text = source.get(field)
            if text is None:
                continue
            if not isinstance(text, str):
                raise BodyError(f"grounding chunk {field} must be a string", f"{sptr}/{field}")
            b.text(SegmentKind.TOOL_RESULT, text, f"{sptr}/{field}", role="tool", turn=turn, phase=Phase.RESPONSE,
                   tool_name=tool, source="grounding_chunk")


def _parameters(decl: Mapping[str, Any]) -> tuple[Mapping[str, Any] | None, str | None]:
    """The declaration's arguments as JSON Schema, and the key it was read from (None: none): the schema under
    `parametersJsonSchema` as is, or the OpenAPI-subset `parameters` with Gemini's upper-case types and `nullable`
    rewritten (detectors use jsonschema), which keeps the path of every other string."""
    schema, key = camel_or_snake(decl, "parametersJsonSchema", "parameters_json_schema")
    if is_mapping(schema):
        return schema, key
    schema = decl.get("parameters")
    return (_json_schema(schema, 0), "parameters") if is_mapping(schema) else (None, None)


def _json_schema(node: Any, depth: int) -> Any:
    if depth > MAX_SCHEMA_DEPTH:
        return node
    if isinstance(node, list):
        return [_json_schema(v, depth + 1) for v in node]
    if not is_mapping(node):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties" and is_mapping(value):
            out[key] = {name: _json_schema(sub, depth + 1) for name, sub in value.items()}
        elif key in ("items", "anyOf", "oneOf", "allOf", "not", "additionalProperties"):
            out[key] = _json_schema(value, depth + 1)
        elif key == "type" and isinstance(value, str):
            out[key] = value.lower()
        elif key != "nullable":
            out[key] = value
    if node.get("nullable") is True and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


def _finish_reason(reason: Any, b: ExchangeBuilder) -> str | None:
    """`finishReason` in the OpenAI vocabulary; Gemini says STOP also when it stopped to call tools."""
    if not isinstance(reason, str):
        return None
    # Segments before `response_from` were read from the request: a long history is not walked again.
    # Code Google ran itself (a hosted call) leaves the client nothing to do.
    if reason == "STOP" and any(s.tool_call is not None and s.phase is Phase.RESPONSE and not s.tool_call.hosted
                                for s in b.segments[b.response_from:]):
        return "tool_calls"
    return FINISH_REASONS.get(reason, reason)


def _generation(meta: Mapping[str, Any], finish: str | None, usage: Any) -> Generation:
    return Generation(
        model=string(meta.get("modelVersion")),
        response_id=string(meta.get("responseId")),
        created=string(meta.get("createTime")),
        finish_reason=finish,
        usage=thought_usage(usage, GENERATE_CONTENT),
    )
