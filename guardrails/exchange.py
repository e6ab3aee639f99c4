"""The normalized exchange: one immutable model of an agent step, built once per check.

Adapters turn a request/response body of any supported API into an `Exchange`. Detectors read only this
model; every piece of text in it remembers where it came from (a JSON Pointer into the submitted check
body plus character offsets), so findings can point back into the caller's original payload.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from itertools import chain
from operator import attrgetter
from typing import Any

from guardrails.argspans import object_span
from guardrails.pointer import join


class SegmentKind(StrEnum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"  # assistant text (content)
    REASONING = "reasoning"
    TOOL_CALL = "tool_call"  # text is the raw argument string
    TOOL_RESULT = "tool_result"
    DOCUMENT = "document"


class Trust(StrEnum):
    TRUSTED = "trusted"  # system, developer, user
    UNTRUSTED = "untrusted"  # tool results, documents
    MODEL = "model"  # anything the model generated


# Who wrote a segment's text follows from its kind (an adapter may lower it: a ReAct observation is untrusted).
TRUST_BY_KIND = {
    SegmentKind.SYSTEM: Trust.TRUSTED,
    SegmentKind.USER: Trust.TRUSTED,
    SegmentKind.ASSISTANT: Trust.MODEL,
    SegmentKind.REASONING: Trust.MODEL,
    SegmentKind.TOOL_CALL: Trust.MODEL,
    SegmentKind.TOOL_RESULT: Trust.UNTRUSTED,
    SegmentKind.DOCUMENT: Trust.UNTRUSTED,
}


class Phase(StrEnum):
    REQUEST = "request"
    RESPONSE = "response"


@dataclass(frozen=True, slots=True)
class Piece:
    """A run of segment text that is a verbatim substring of one string in the check body."""

    offset: int  # where the run starts in the segment text
    length: int
    pointer: str  # JSON Pointer to the string in the check body
    start: int  # where the run starts in that string


@dataclass(frozen=True, slots=True)
class Location:
    pointer: str
    start: int | None = None
    end: int | None = None


@dataclass(frozen=True, slots=True)
class ToolCall:
    name: str
    arguments_raw: str  # exactly what the model produced (a JSON string in most APIs)
    arguments: Any  # parsed arguments; None when `arguments_raw` is not valid JSON
    arguments_error: str | None  # why parsing failed, if it did
    id: str | None
    name_pointer: str
    arguments_pointer: str
    # True when the API carried the arguments as a JSON object (Anthropic, Gemini): `arguments_raw` is then
    # our serialization and offsets into it are not offsets into the body.
    arguments_is_object: bool = False
    recovered_from: str | None = None  # parser family, for calls recovered from raw text
    name_offset: int = 0  # where the name starts in the string at `name_pointer` (recovered calls)
    # False where no string in the body holds the name (Gemini `executableCode`): `name_pointer` then names the
    # call's object, and a location there has no offsets.
    name_in_text: bool = True
    # Who runs the call. False: the caller's own code (function and custom tools, and built-ins the client runs,
    # such as Responses `shell` or Anthropic `bash`). True: the API provider runs it on its side before the
    # response comes back (Anthropic server tools, OpenAI hosted tools, Gemini built-ins, remote MCP servers),
    # so no client code ever sees the call: this check is the only place it is judged.
    hosted: bool = False
    # For a hosted call to a remote MCP server: the server's label (Responses `server_label`, Anthropic and
    # Gemini `server_name`). Such a server lists its own tools, so the request declares the server, not them.
    mcp_server: str | None = None

    def name_location(self, start: int = 0, end: int | None = None) -> Location:
        """Where the call's name (or chars [start, end) of it) is in the check body."""
        if not self.name_in_text:
            return Location(self.name_pointer)
        end = len(self.name) if end is None else end
        return Location(self.name_pointer, self.name_offset + start, self.name_offset + end)

    def arguments_location(self, start: int, end: int) -> Location:
        """Where [start, end) of an object's serialization (`arguments_is_object`) is in the check body: the
        string value holding it, offsets in that string; otherwise the value or object holding it, no offsets."""
        path, lo, hi = object_span(self.arguments_raw, self.arguments, start, end)
        return Location(join(self.arguments_pointer, *path), lo, hi)


@dataclass(frozen=True, slots=True)
class Segment:
    index: int
    kind: SegmentKind
    role: str
    trust: Trust
    turn: int
    phase: Phase
    text: str
    pointer: str
    start: int = 0  # offset of `text` inside the string at `pointer`
    pieces: tuple[Piece, ...] = ()  # set when the text was assembled from several strings (streams)
    tool_call: ToolCall | None = None
    tool_call_id: str | None = None  # for tool results: the call they answer
    tool_name: str | None = None  # for tool results, when the API names the tool
    source: str = ""  # free-form origin hint, e.g. "think_tag", "reasoning_content"
    # (kind, trust, phase): what detector scopes select on, built once since history segments are reused.
    signature: tuple[SegmentKind, Trust, Phase] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "signature", (self.kind, self.trust, self.phase))

    @property
    def end(self) -> int:
        return self.start + len(self.text)

    def locate(self, start: int, end: int) -> Location:
        """Map a [start, end) span of this segment's text to a location in the check body (for arguments carried
        as an object, the string value holding the span; see `ToolCall.arguments_location`)."""
        call = self.tool_call
        if call is not None and call.arguments_is_object:  # our serialization: offsets into it are not the body's
            return call.arguments_location(start, end)
        if not self.pieces:
            return Location(self.pointer, self.start + start, self.start + end)
        for piece in self.pieces:
            if piece.offset <= start < piece.offset + piece.length or (
                start == end == piece.offset + piece.length
            ):
                local = start - piece.offset
                clipped_end = min(end, piece.offset + piece.length) - piece.offset
                return Location(piece.pointer, piece.start + local, piece.start + clipped_end)
        last = self.pieces[-1]
        return Location(last.pointer, last.start + last.length, last.start + last.length)


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    parameters: Mapping[str, Any] | None  # JSON Schema of the arguments
    description: str = ""
    strict: bool = False
    pointer: str = ""
    # A tool the API provider runs (web search, code execution...), declared by its type: it has no JSON Schema
    # of its own, `parameters` is None.
    hosted: bool = False
    # Where the adapter read them, so findings land in the body without knowing each API's keys: the `name`
    # string (None for a tool declared by its type only, such as Responses `{"type": "shell"}`), and the object
    # `parameters` was read from (None when there is none). `parameters` may be a rewrite of that object
    # (Gemini's OpenAPI subset) that keeps the path of every string but `type`'s. Left None, findings point at
    # the declaration (`pointer`) without offsets.
    name_pointer: str | None = None
    schema_pointer: str | None = None
    # A tool the prompt's own text declares (a ReAct agent's tool list, in a request without `tools`): where that
    # list was read, and the argument name its plain-text input goes under (the one parameter its signature names,
    # else LangChain's `tool_input`). Its `parameters` stay None: the prompt gives no schema to judge against.
    declared_in: Location | None = None
    text_input: str | None = None


def recovery_schemas(tools: Mapping[str, ToolSpec]) -> dict[str, Any]:
    """What the tool-call parsers get for each declared tool: its schema; for a tool the prompt declares, one whose
    only property is its text input, so a ReAct `Action Input: rm -rf ~` reads as `{"tool_input": "rm -rf ~"}`."""
    return {name: spec.parameters if spec.text_input is None
            else {"type": "object", "properties": {spec.text_input: {"type": "string"}}}
            for name, spec in tools.items()}


@dataclass(frozen=True, slots=True)
class LogprobSource:
    """Token logprobs exactly as the API returned them; read lazily (they can be thousands of tokens).

    `shape` names the container: "chat" (list of {token, logprob, bytes, top_logprobs}), "completions"
    ({tokens, token_logprobs, top_logprobs, text_offset}), "responses" (output_text logprobs), "prompt"
    (vLLM prompt_logprobs), or "gemini" (generateContent `logprobsResult`: chosenCandidates/topCandidates).
    A streamed response yields one source per chunk, in order.
    """

    shape: str
    pointer: str
    data: Any
    choice: int = 0


@dataclass(frozen=True, slots=True)
class UnreadLogprobs:
    """A response's logprob source left unread because a field of it is malformed: `low_confidence` reports it
    (a `detector_error`) while every other detector checks the response as usual."""

    pointer: str  # the malformed field in the check body
    reason: str  # what is wrong with it ("logprob must be a number or null, got a string")


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int | None = None
    output_tokens: int | None = None
    reasoning_tokens: int | None = None
    cached_tokens: int | None = None
    total_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Generation:
    model: str | None = None
    response_id: str | None = None
    created: Any = None
    finish_reason: str | None = None
    stop_reason: Any = None
    system_fingerprint: str | None = None
    usage: Usage = field(default_factory=Usage)


@dataclass(frozen=True, slots=True)
class CallerContext:
    agent_id: str | None = None
    session_id: str | None = None
    tenant: str | None = None
    user: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


# The caller-context fields a check body's `context` names (strings or null; other keys go to `extra`): the one
# list the service reads and the contract's `CheckContext` documents.
CONTEXT_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(CallerContext) if f.name != "extra")


@dataclass(frozen=True, slots=True)
class Constraints:
    """Whether decoding was constrained: forced tokens then carry no confidence signal."""

    tool_choice_forced: bool = False  # tool_choice required / any / a named tool
    strict_tools: bool = False
    response_format: bool = False  # a JSON schema or guided decoding

    @property
    def any(self) -> bool:
        return self.tool_choice_forced or self.strict_tools or self.response_format


@dataclass(frozen=True, slots=True)
class Exchange:
    format: str
    segments: tuple[Segment, ...]
    # The declared tools by name, for looking a call's tool up. A name declared more than once maps to its last
    # client declaration (what vLLM constrains a named tool_choice to); a hosted one (a built-in, an MCP server's
    # listed tool) only where no client tool has its name. Every declaration is in `tool_declarations`.
    tools: Mapping[str, ToolSpec]
    tool_choice: Any
    constraints: Constraints
    logprobs: tuple[LogprobSource, ...]
    generation: Generation
    context: CallerContext
    has_response: bool
    raw_output: str | None = None  # raw model text the gateway may add (see tool_call_leak)
    # Every tool declaration of the request in body order, a name declared twice included twice (vLLM renders
    # both into the prompt), hosted built-ins included. Left empty, it is filled from `tools`.
    tool_declarations: tuple[ToolSpec, ...] = ()
    # A mid-stream re-check (the check body's `partial`): the response is still arriving, so its last tool call
    # may be unfinished (arguments not JSON yet). Its verdict is advisory; the stream's final check is not partial.
    partial: bool = False
    # Malformed logprob sources the adapters left unread (guardrails/logprobs/check.py), in the order met.
    unread_logprobs: tuple[UnreadLogprobs, ...] = ()
    # Segments by (kind, trust, phase), each list in exchange order: what detector scopes select from.
    by_signature: dict[tuple[SegmentKind, Trust, Phase], list[Segment]] = field(init=False, repr=False,
                                                                                compare=False)
    # The views below, built on first use: several detectors walk them, most checks need one or none.
    _views: dict[str, tuple[Segment, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        groups: dict[tuple[SegmentKind, Trust, Phase], list[Segment]] = {}
        for s in self.segments:
            group = groups.get(s.signature)
            if group is None:
                groups[s.signature] = [s]
            else:
                group.append(s)
        object.__setattr__(self, "by_signature", groups)
        object.__setattr__(self, "_views", {})
        if not self.tool_declarations and self.tools:  # built by code that predates the field
            object.__setattr__(self, "tool_declarations", tuple(self.tools.values()))

    def name_may_grow(self, segment: Segment) -> bool:
        """Whether `segment`'s tool-call name may still be arriving: a partial check's response call whose name is
        the start of a declared tool's name (Chat streams `"get_"`, then `"weather"`). Name checks wait for the
        stream's final check, which judges the name it ends with."""
        call = segment.tool_call
        if not self.partial or call is None or segment.phase is not Phase.RESPONSE or call.name in self.tools:
            return False
        return any(name.startswith(call.name) for name in self.tools)

    @property
    def trusted(self) -> tuple[Segment, ...]:
        return self._view("trusted", lambda sig: sig[1] is Trust.TRUSTED)

    @property
    def untrusted(self) -> tuple[Segment, ...]:
        return self._view("untrusted", lambda sig: sig[1] is Trust.UNTRUSTED)

    @property
    def tool_calls(self) -> tuple[Segment, ...]:
        return self._view("tool_calls", lambda sig: sig[0] is SegmentKind.TOOL_CALL)

    def _view(self, name: str, wanted: Callable[[tuple[SegmentKind, Trust, Phase]], bool]) -> tuple[Segment, ...]:
        """The segments whose signature is `wanted`, in exchange order (decided per signature, not segment)."""
        view = self._views.get(name)
        if view is None:
            chosen = {sig for sig in self.by_signature if wanted(sig)}
            if len(chosen) == 1:
                view = tuple(self.by_signature[chosen.pop()])
            else:  # merge the groups (each in exchange order) instead of testing every segment
                view = tuple(sorted(chain.from_iterable(self.by_signature[sig] for sig in chosen), key=_position))
            self._views[name] = view
        return view

    @property
    def phase(self) -> Phase:
        return Phase.RESPONSE if self.has_response else Phase.REQUEST

    def of_kind(self, *kinds: SegmentKind) -> Iterator[Segment]:
        return (s for s in self.segments if s.kind in kinds)


_position = attrgetter("index")  # a segment's place in its exchange
