"""The adapter interface and the builder adapters use to emit a normalized exchange."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

from guardrails.errors import BodyError
from guardrails.exchange import (
    CallerContext,
    Constraints,
    Exchange,
    Generation,
    LogprobSource,
    Phase,
    Piece,
    Segment,
    SegmentKind,
    ToolCall,
    ToolSpec,
    Trust,
)
from guardrails.reasoning import split_reasoning

TRUST_BY_KIND = {
    SegmentKind.SYSTEM: Trust.TRUSTED,
    SegmentKind.USER: Trust.TRUSTED,
    SegmentKind.ASSISTANT: Trust.MODEL,
    SegmentKind.REASONING: Trust.MODEL,
    SegmentKind.TOOL_CALL: Trust.MODEL,
    SegmentKind.TOOL_RESULT: Trust.UNTRUSTED,
    SegmentKind.DOCUMENT: Trust.UNTRUSTED,
}


def parse_arguments(raw: str) -> tuple[Any, str | None]:
    """Parse a tool call's argument string; return (value, error). Never raises."""
    if raw.strip() == "":
        return {}, None
    try:
        return json.loads(raw), None
    except (ValueError, RecursionError) as exc:
        return None, f"arguments are not valid JSON: {exc}"


class ExchangeBuilder:
    """Collects what an adapter reads, in order, and freezes it into an `Exchange`."""

    def __init__(self, format: str, context: CallerContext, raw_output: str | None = None) -> None:
        self.format = format
        self.context = context
        self.raw_output = raw_output
        self.segments: list[Segment] = []
        self.tools: dict[str, ToolSpec] = {}
        self.tool_choice: Any = None
        self.forced_tool_choice = False
        self.response_format = False
        self.logprobs: list[LogprobSource] = []
        self.generation = Generation()
        self.has_response = False
        self.next_turn = 0  # turn index of the response; adapters set it from the request history

    # --- segments -------------------------------------------------------------------------------
    def text(
        self,
        kind: SegmentKind,
        text: str,
        pointer: str,
        *,
        role: str,
        turn: int,
        phase: Phase,
        start: int = 0,
        pieces: tuple[Piece, ...] = (),
        source: str = "",
        trust: Trust | None = None,
        tool_call_id: str | None = None,
        tool_name: str | None = None,
    ) -> Segment | None:
        """Add one text segment; empty text adds nothing."""
        if not text:
            return None
        segment = Segment(
            index=len(self.segments),
            kind=kind,
            role=role,
            trust=trust or TRUST_BY_KIND[kind],
            turn=turn,
            phase=phase,
            text=text,
            pointer=pointer,
            start=start,
            pieces=pieces,
            source=source,
            tool_call_id=tool_call_id,
            tool_name=tool_name,
        )
        self.segments.append(segment)
        return segment

    def assistant_text(
        self,
        text: str,
        pointer: str,
        *,
        role: str = "assistant",
        turn: int,
        phase: Phase,
        start: int = 0,
        pieces: tuple[Piece, ...] = (),
    ) -> None:
        """Add model-written text, splitting out reasoning left inline (`<think>` and the other tag families)."""
        for kind, span_start, span_end, source in split_reasoning(text):
            self.text(
                kind,
                text[span_start:span_end],
                pointer,
                role=role,
                turn=turn,
                phase=phase,
                start=start + span_start,
                pieces=slice_pieces(pieces, span_start, span_end),
                source=source,
            )

    def tool_call(
        self,
        *,
        name: str,
        arguments: str | Mapping[str, Any] | Any,
        call_id: str | None,
        name_pointer: str,
        arguments_pointer: str,
        turn: int,
        phase: Phase,
        role: str = "assistant",
        recovered_from: str | None = None,
        pieces: tuple[Piece, ...] = (),
        name_offset: int = 0,
        arguments_offset: int = 0,
    ) -> Segment:
        """Add a tool call. `arguments` is the raw JSON string (OpenAI) or an object (Anthropic, Gemini)."""
        if isinstance(arguments, str):
            raw, is_object = arguments, False
            parsed, error = parse_arguments(raw)
        else:
            raw, is_object = json.dumps(arguments, ensure_ascii=False), True
            parsed, error = arguments, None
        call = ToolCall(
            name=name,
            arguments_raw=raw,
            arguments=parsed,
            arguments_error=error,
            id=call_id,
            name_pointer=name_pointer,
            arguments_pointer=arguments_pointer,
            arguments_is_object=is_object,
            recovered_from=recovered_from,
            name_offset=name_offset,
        )
        segment = Segment(
            index=len(self.segments),
            kind=SegmentKind.TOOL_CALL,
            role=role,
            trust=Trust.MODEL,
            turn=turn,
            phase=phase,
            text=raw,
            pointer=arguments_pointer,
            start=arguments_offset,
            pieces=pieces,
            tool_call=call,
            tool_call_id=call_id,
            tool_name=name,
        )
        self.segments.append(segment)
        return segment

    # --- declarations and metadata -----------------------------------------------------------------
    def tool(self, spec: ToolSpec) -> None:
        self.tools[spec.name] = spec

    def add_logprobs(self, shape: str, pointer: str, data: Any, choice: int = 0) -> None:
        if data:
            self.logprobs.append(LogprobSource(shape=shape, pointer=pointer, data=data, choice=choice))

    def build(self) -> Exchange:
        return Exchange(
            format=self.format,
            segments=tuple(self.segments),
            tools=dict(self.tools),
            tool_choice=self.tool_choice,
            constraints=Constraints(
                tool_choice_forced=self.forced_tool_choice,
                strict_tools=any(t.strict for t in self.tools.values()),
                response_format=self.response_format,
            ),
            logprobs=tuple(self.logprobs),
            generation=self.generation,
            context=self.context,
            has_response=self.has_response,
            raw_output=self.raw_output,
        )


class Adapter(ABC):
    """Reads one API format. Request and response sides are both read by the same adapter."""

    format: ClassVar[str]

    @classmethod
    @abstractmethod
    def sniff(cls, request: Mapping[str, Any], response: Any) -> int:
        """How sure we are that the body is in this format: 0 (no) to 100 (certain)."""

    @abstractmethod
    def read_request(self, request: Mapping[str, Any], b: ExchangeBuilder) -> None:
        """Read the request side; pointers start at "/request"."""

    @abstractmethod
    def read_response(self, response: Mapping[str, Any], b: ExchangeBuilder) -> None:
        """Read a complete response; pointers start at "/response"."""

    @abstractmethod
    def read_stream(self, chunks: list[Any], b: ExchangeBuilder) -> None:
        """Read a response given as the list of streamed chunks/events; pointers start at "/response"."""


def assemble(fragments: list[tuple[str, str]]) -> tuple[str, tuple[Piece, ...]]:
    """Concatenate (text, pointer) fragments of a stream into one text with its pieces."""
    pieces: list[Piece] = []
    offset = 0
    for text, pointer in fragments:
        if text:
            pieces.append(Piece(offset=offset, length=len(text), pointer=pointer, start=0))
            offset += len(text)
    return "".join(text for text, _ in fragments), tuple(pieces)


def slice_pieces(pieces: tuple[Piece, ...], start: int, end: int) -> tuple[Piece, ...]:
    """The pieces covering [start, end) of an assembled text, re-based to the slice."""
    if not pieces:
        return ()
    out: list[Piece] = []
    for p in pieces:
        lo, hi = max(start, p.offset), min(end, p.offset + p.length)
        if lo < hi:
            out.append(Piece(offset=lo - start, length=hi - lo, pointer=p.pointer, start=p.start + lo - p.offset))
    return tuple(out)


def expect(value: Any, kind: type | tuple[type, ...], pointer: str, what: str) -> Any:
    """Type-check one field of the body, raising the documented 422 with its pointer."""
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise BodyError(f"{what} must be {_article(names)}, got {type(value).__name__}", pointer)
    return value


def _article(names: str) -> str:
    mapping = {"dict": "an object", "list": "an array", "str": "a string", "int": "an integer"}
    return " or ".join(mapping.get(n, n) for n in names.split(" or "))
