"""The adapter interface and the builder adapters use to emit a normalized exchange."""

from __future__ import annotations

import json
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Mapping
from dataclasses import replace
from typing import Any, ClassVar, NamedTuple

from guardrails.adapters.jsonread import describe_object, same_value
from guardrails.errors import BodyError
from guardrails.exchange import (
    TRUST_BY_KIND,
    CallerContext,
    Constraints,
    Exchange,
    Generation,
    Location,
    LogprobSource,
    Phase,
    Piece,
    Segment,
    SegmentKind,
    ToolCall,
    ToolSpec,
    Trust,
    UnreadLogprobs,
    recovery_schemas,
)
from guardrails.reasoning import split_reasoning
from guardrails.toolparse import RecoveredCall, find_leaks
from guardrails.toolparse.react import (
    MAX_ACTIONS,
    MAX_PROMPT_TOOLS,
    only_labels,
    pending_action,
    prompt_tools,
    read_transcript,
    starts_with_observation,
    typed_input,
    unread_pieces,
)


def parse_arguments(raw: str) -> tuple[Any, str | None]:
    """Parse a tool call's argument string; return (value, error). Never raises."""
    if not raw or raw.isspace():  # what raw.strip() == "" tests, without copying long arguments
        return {}, None
    try:
        return json.loads(raw), None
    except (ValueError, RecursionError) as exc:
        return None, f"arguments are not valid JSON: {exc}"


HISTORY_BYTES = 64 * 2**20  # all sessions' histories together: 256 bodies of 4 MiB would be gigabytes
HISTORY_ENTRY_BYTES = 16 * 2**20  # a larger history is read again each step rather than flush the others
_NODE_BYTES = 64  # a JSON container or scalar and its slot in its parent (an estimate)
_SEGMENT_BYTES = 300  # a segment, its tool call and pointers, beside its text and parsed arguments


class HistoryEntry(NamedTuple):
    items: list[Any]  # a copy of the list read
    ends: list[int]  # per item: len(builder.segments) after reading it
    segments: list[Segment]
    start: int  # len(builder.segments) before the list
    sizes: list[int]  # per item: the estimated bytes of the items up to it and of their segments


class HistoryMemo:
    """Segments read from a history list, reused while the next check's history starts the same way.

    An agent resends its whole history every step. Comparing the new list to the previous one item by item
    (dict equality runs in C) is far cheaper than reading it again, so normalizing step N costs about the
    new items only. Reuse is decided by equality alone, so a wrong key costs speed, never correctness.
    Bounded by entries and by estimated bytes; the least recently stored session goes first (a session
    stores its entry every step, so active ones stay).
    """

    def __init__(self, max_entries: int = 256, max_bytes: int = HISTORY_BYTES,
                 max_entry_bytes: int = HISTORY_ENTRY_BYTES) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_entry_bytes = max_entry_bytes
        self.bytes = 0  # the estimated size of what is kept
        self._entries: dict[Hashable, HistoryEntry] = {}

    def get(self, key: Hashable) -> HistoryEntry | None:
        return self._entries.get(key)

    def put(self, key: Hashable, entry: HistoryEntry) -> None:
        self._forget(key)
        size = entry.sizes[-1] if entry.sizes else 0
        if size > self.max_entry_bytes:
            return
        self._entries[key] = entry
        self.bytes += size
        while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
            self._forget(next(iter(self._entries)))

    def _forget(self, key: Hashable) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None and entry.sizes:
            self.bytes -= entry.sizes[-1]

    def __len__(self) -> int:
        return len(self._entries)


def _value_bytes(value: Any) -> int:
    """Estimated memory of a decoded JSON value: its strings' sizes plus a flat cost per other node."""
    total, stack = 0, [value]
    while stack:  # a loop, not recursion: items may nest as deep as the JSON parser allows
        node = stack.pop()
        if isinstance(node, str):
            total += sys.getsizeof(node)
            continue
        total += _NODE_BYTES
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list | tuple):
            stack.extend(node)
    return total


def _segment_bytes(segment: Segment) -> int:
    size = _SEGMENT_BYTES + sys.getsizeof(segment.text)
    if segment.tool_call is not None:  # the raw arguments are usually the text; the parsed ones are new
        size += _value_bytes(segment.tool_call.arguments)
    return size


class ExchangeBuilder:
    """Collects what an adapter reads, in order, and freezes it into an `Exchange`."""

    def __init__(
        self,
        format: str,
        context: CallerContext,
        raw_output: str | None = None,
        memo: HistoryMemo | None = None,
    ) -> None:
        self.memo = memo
        self.format = format
        self.context = context
        self.raw_output = raw_output
        self.segments: list[Segment] = []
        self.tools: dict[str, ToolSpec] = {}
        self.tool_declarations: list[ToolSpec] = []  # every declaration, in body order (see `tool`)
        self.tool_choice: Any = None
        self.forced_tool_choice = False
        self.response_format = False
        self.logprobs: list[LogprobSource] = []
        self.unread_logprobs: list[UnreadLogprobs] = []  # malformed sources, left unread (see `skip_logprobs`)
        self.generation: Generation | None = None  # set by response readers; build() makes an empty one if not
        self.has_response = False
        self.next_turn = 0  # turn index of the response; adapters set it from the request history
        self.response_from = 0  # segments before this index were read from the request (no response text)
        self.echo: EchoedPrompts | None = None  # Completions or Chat with `echo: true` (set from the request)
        # ReAct transcripts: what is left of the check's budget of actions read and of pieces their overflow is cut
        # into (`_transcript`). A history prefix the memo reuses was read, and charged, by an earlier check.
        self.react_actions = MAX_ACTIONS
        self.react_pieces = MAX_ACTIONS

    # --- history lists ----------------------------------------------------------------------------
    def read_items(self, pointer: str, items: list[Any], read_one: Callable[[Any, int], None]) -> None:
        """Read a history list (messages, input items, contents) with `read_one(item, index)`.

        `read_one` must depend only on the item, its index and the items before it, and must add
        segments only through this builder: the segments of an unchanged prefix are then reused as is.
        """
        start = len(self.segments)
        reused = 0
        ends: list[int] = []
        sizes: list[int] = []
        entry = self.memo.get((self.format, pointer, self.context.session_id)) if self.memo else None
        if entry is not None and entry.start == start:
            limit = min(len(entry.items), len(items))
            if entry.items[:limit] == items[:limit]:  # the usual step: the old history, unchanged, then more
                reused = limit
            else:
                while reused < limit and entry.items[reused] == items[reused]:
                    reused += 1
            if reused:
                ends, sizes = entry.ends[:reused], entry.sizes[:reused]
                self.segments.extend(entry.segments[: ends[-1] - start])
        for index in range(reused, len(items)):
            read_one(items[index], index)
            ends.append(len(self.segments))
        if self.memo is not None:
            # Only the new items are sized: the reused prefix keeps its sizes.
            for index in range(len(sizes), len(items)):
                first = ends[index - 1] if index else start
                added = sum(map(_segment_bytes, self.segments[first:ends[index]]))
                sizes.append((sizes[-1] if sizes else 0) + _value_bytes(items[index]) + added)
            # A copy of the list: a caller may append to the same list for its next check. The items
            # themselves are compared by equality, so an embedding app must not edit them in place.
            self.memo.put((self.format, pointer, self.context.session_id),
                          HistoryEntry(list(items), ends, self.segments[start:], start, sizes))

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
        """Add one text segment; empty text adds nothing. A request's user or assistant text that holds a ReAct
        transcript is carved into several (`_transcript`)."""
        if not text:
            return None
        if (phase is Phase.REQUEST and trust is None and not pieces and "Observation" in text
                and (kind is SegmentKind.USER or kind is SegmentKind.ASSISTANT)
                and self._transcript(kind, text, pointer, role=role, turn=turn, start=start, source=source)):
            return self.segments[-1]
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

    def _transcript(self, kind: SegmentKind, text: str, pointer: str, *, role: str, turn: int, start: int,
                    source: str) -> bool:
        """Carve a ReAct transcript (docs/tool-call-recovery.md, "ReAct transcripts in the request"), in text order:
        each observation becomes an untrusted tool result, a finished episode's too (it is a tool's output, or an
        example's harmless text); each action of the live scratchpad an earlier tool call (a finished episode's stays
        text: an example's call was never made). The rest keeps its kind and trust up to the first observation, and
        after it is model text that cannot be told from the tool's output (an observation can write a `Thought:` or
        a `Question:` line), so untrusted, up to where a finished episode's answer ends. An observation's own text runs
        to the model's next step or the end of the text (`read_transcript`). Segments that would hold only ReAct labels
        are left out. Past the actions `read_transcript`
        reads (MAX_ACTIONS per check, over all the texts of the request), the rest of the text is untrusted tool
        results (`source` `react_unread`; at most MAX_ACTIONS of them per check, then one per text). False, adding
        nothing, when the text holds no transcript."""
        pending = self._pending_call() if kind is SegmentKind.USER and starts_with_observation(text) else None
        steps, rest, actions = read_transcript(text, leading_observation=pending is not None,
                                               budget=self.react_actions)
        self.react_actions -= actions
        if not steps and rest is None:
            return False
        at, after_observation = 0, False

        def keep(end: int) -> None:
            """The text from `at` to `end`, as its region has it."""
            nonlocal at
            if after_observation:
                self._scratchpad(text[at:end], pointer, role=role, turn=turn, start=start + at)
            elif at < end and not only_labels(text[at:end]):
                self.text(kind, text[at:end], pointer, role=role, turn=turn, phase=Phase.REQUEST, start=start + at,
                          source=source, trust=TRUST_BY_KIND[kind])
            at = end

        name = None
        for call, (observed, observed_end), finished, resume in steps:
            if call is None:  # the observation of the action the previous message ended with
                assert pending is not None
                earlier, call_at_end = pending
                self._react_call(call_at_end, earlier.text, earlier.locate, earlier.turn)
                name = call_at_end.name
            elif finished:  # not counted by tool_loop, nor a tool tool_taint takes as called before
                name = call.name
            else:
                keep(call.arguments_span[0])
                self._react_call(call, text, lambda lo, hi: Location(pointer, start + lo, start + hi), turn)
                at, name = call.arguments_span[1], call.name
            keep(observed)
            self.text(SegmentKind.TOOL_RESULT, text[observed:observed_end], pointer, role="tool", turn=turn,
                      phase=Phase.REQUEST, start=start + observed, source="react_observation", tool_name=name)
            at, after_observation = max(at, observed_end), True
            if resume is not None:  # the finished episode's answer ends: the text is as it was before it
                keep(resume)
                after_observation = False
        if rest is not None:  # not read: may hold more observations, so it is read as them
            keep(rest)
            pieces = unread_pieces(text, rest, self.react_pieces)
            self.react_pieces = max(0, self.react_pieces - len(pieces))
            for lo, hi in pieces:
                self.text(SegmentKind.TOOL_RESULT, text[lo:hi], pointer, role="tool", turn=turn, phase=Phase.REQUEST,
                          start=start + lo, source="react_unread")
            at = len(text)
        keep(len(text))
        return True

    def _scratchpad(self, text: str, pointer: str, *, role: str, turn: int, start: int) -> None:
        """Transcript text after an observation: the model's `Thought:` lines, or what the tool's output made look
        like them. Model-written by kind, untrusted: `prompt_injection` reads it, `tool_taint` does not trust it."""
        if text and not only_labels(text):
            self.text(SegmentKind.ASSISTANT, text, pointer, role=role, turn=turn, phase=Phase.REQUEST, start=start,
                      source="react_scratchpad", trust=Trust.UNTRUSTED)

    def _pending_call(self) -> tuple[Segment, RecoveredCall] | None:
        """The ReAct action the previous message ended with (an assistant text of the request), if any."""
        if not self.segments:
            return None
        earlier = self.segments[-1]
        if earlier.phase is not Phase.REQUEST or earlier.kind is not SegmentKind.ASSISTANT or earlier.pieces:
            return None
        call = pending_action(earlier.text)
        return None if call is None else (earlier, call)

    def _react_call(self, call: RecoveredCall, text: str, locate: Callable[[int, int], Location], turn: int) -> None:
        """An action of a request's ReAct transcript, as an earlier tool call of the history (phase request: judged
        as history, like the structured calls of earlier turns)."""
        (name_start, name_end), (args_start, args_end) = call.name_span, call.arguments_span
        name_at, args_at = locate(name_start, name_end), locate(args_start, args_end)
        raw = text[args_start:args_end]
        # The arguments the parser read (the raw text may be plain text or repaired JSON), as `_add_recovered` does.
        arguments, error = (call.arguments, None) if call.arguments_parsed else parse_arguments(raw)
        tool_call = ToolCall(name=call.name, arguments_raw=raw, arguments=arguments, arguments_error=error, id=None,
                             name_pointer=name_at.pointer, arguments_pointer=args_at.pointer,
                             recovered_from=call.family, name_offset=name_at.start or 0)
        self.segments.append(Segment(index=len(self.segments), kind=SegmentKind.TOOL_CALL, role="assistant",
                                     trust=Trust.MODEL, turn=turn, phase=Phase.REQUEST, text=raw,
                                     pointer=args_at.pointer, start=args_at.start or 0, tool_call=tool_call,
                                     tool_name=call.name))

    def streamed_text(self, fragments: list[tuple[str, str]], *, turn: int, phase: Phase = Phase.RESPONSE,
                      reasoning: str | None = None, skip: int = 0) -> None:
        """Add text that arrived as (fragment, pointer) deltas, its pieces pointing at each fragment: a
        reasoning segment when `reasoning` names its source, else model-written text. Nothing if empty.
        `skip`: leading characters that are not the model's (an echoed prompt), left out."""
        text, pieces = assemble(fragments)
        if skip:
            text, pieces = text[skip:], slice_pieces(pieces, skip, len(text))
        if not pieces:
            return
        if reasoning is not None:
            self.text(SegmentKind.REASONING, text, pieces[0].pointer, role="assistant", turn=turn, phase=phase,
                      pieces=pieces, source=reasoning)
        else:
            self.assistant_text(text, pieces[0].pointer, turn=turn, phase=phase, pieces=pieces)

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
        name_in_text: bool = True,
        arguments_offset: int = 0,
        hosted: bool = False,
        mcp_server: str | None = None,
    ) -> Segment:
        """Add a tool call. `arguments` is the raw JSON string (OpenAI) or an object (Anthropic, Gemini).
        `hosted`: the API provider runs the call (see `ToolCall.hosted`); `mcp_server`: the MCP server it calls."""
        if isinstance(arguments, str):
            raw, is_object = arguments, False
            parsed, error = parse_arguments(raw)
        else:
            try:
                raw, is_object = json.dumps(arguments, ensure_ascii=False), True
            except (RecursionError, ValueError, TypeError) as exc:
                raise BodyError(f"tool call arguments cannot be serialized: {type(exc).__name__}",
                                arguments_pointer) from None
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
            name_in_text=name_in_text,
            hosted=hosted,
            mcp_server=mcp_server,
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

    def called_name(self, call_id: str) -> str | None:
        """The name of the latest tool call read so far with this id (memoized history included): what a tool
        result answers when its message does not repeat the name (OpenAI Chat's `tool` messages)."""
        for segment in reversed(self.segments):
            call = segment.tool_call
            if call is not None and call.id == call_id:
                return call.name
        return None

    # --- declarations and metadata -----------------------------------------------------------------
    def tool(self, spec: ToolSpec) -> None:
        """Declare a tool. Every declaration is kept, in body order: vLLM accepts a name twice and renders both
        into the prompt (tool shadowing), so each is scanned. By name, the last one wins, as in vLLM, which
        constrains a named tool_choice to the last tool of that name; but a hosted one (an MCP server's listing)
        never displaces a client tool, as in `hosted_tool`."""
        self.tool_declarations.append(spec)
        known = self.tools.get(spec.name)
        if known is None or known.hosted or not spec.hosted:
            self.tools[spec.name] = spec

    def hosted_tool(self, name: str, pointer: str, name_pointer: str | None = None) -> None:
        """Declare a tool the provider runs, named as its calls name it. A client tool of the same name keeps
        its own declaration (and schema), whichever comes first in the request. `name_pointer`: the string that
        holds `name`, if one does (most built-ins are declared by their type only)."""
        spec = ToolSpec(name=name, parameters=None, pointer=pointer, hosted=True, name_pointer=name_pointer)
        self.tool_declarations.append(spec)
        if name not in self.tools:
            self.tools[name] = spec

    def add_logprobs(self, shape: str, pointer: str, data: Any, choice: int = 0) -> None:
        if data:
            self.logprobs.append(LogprobSource(shape=shape, pointer=pointer, data=data, choice=choice))

    def skip_logprobs(self, error: BodyError) -> None:
        """Leave a malformed logprob source unread, recording the field and the reason: logprobs are data only
        `low_confidence` reads, so it reports them and the rest of the response is checked as usual."""
        self.unread_logprobs.append(UnreadLogprobs(error.pointer or "", error.message))

    def build(self) -> Exchange:
        if not self.tool_declarations:
            self._add_prompt_tools()
        if self.tools:
            self._type_transcript_inputs()
        self._add_recovered_calls()
        return Exchange(
            format=self.format,
            segments=tuple(self.segments),
            tools=dict(self.tools),
            tool_declarations=tuple(self.tool_declarations),
            tool_choice=self.tool_choice,
            constraints=Constraints(
                tool_choice_forced=self.forced_tool_choice,
                # Over the list, as vLLM decides it: a strict tool shadowed by a later duplicate still counts.
                strict_tools=any(t.strict for t in self.tool_declarations),
                response_format=self.response_format,
            ),
            logprobs=tuple(self.logprobs),
            generation=Generation() if self.generation is None else self.generation,
            context=self.context,
            has_response=self.has_response,
            raw_output=self.raw_output,
            unread_logprobs=tuple(self.unread_logprobs),
        )

    def _add_prompt_tools(self) -> None:
        """Declare the tools a ReAct agent lists in its prompt (system messages or its first user message), for a
        request without `tools`: its `Action:` calls are then judged like any call (docs/tool-call-recovery.md)."""
        request = [s for s in self.segments[:self.response_from] if s.phase is Phase.REQUEST]
        first_user = next((s.turn for s in request if s.kind is SegmentKind.USER), None)
        for segment in request:
            if segment.kind is SegmentKind.SYSTEM or (segment.kind is SegmentKind.USER and segment.turn == first_user):
                for tool in prompt_tools(segment.text):
                    if len(self.tools) >= MAX_PROMPT_TOOLS:
                        return  # the rest are not declared: a call to one is undeclared (tool_poisoning's signal)
                    if tool.name not in self.tools:
                        where = segment.locate(*tool.span)
                        self.tool(ToolSpec(name=tool.name, parameters=None, pointer=where.pointer, declared_in=where,
                                           text_input=tool.text_input))

    def _type_transcript_inputs(self) -> None:
        """Type the plain-text inputs of a request transcript's actions by the declared tools, as the response's
        recovered calls are typed (`{"tool_input": "..."}`): the same action then reads alike in both. Done here,
        once the tools are known; the history memo keeps the segments as read."""
        schemas = None
        segments = self.segments
        for i in range(self.response_from):
            call = segments[i].tool_call
            if call is None or call.recovered_from != "react" or not isinstance(call.arguments, str):
                continue
            if schemas is None:
                schemas = recovery_schemas(self.tools)
            typed = typed_input(call.arguments, call.name, schemas)
            if typed is not call.arguments:
                segments[i] = _with_arguments(segments[i], call, typed)

    # --- tool calls left as markup in the response text (see docs/tool-call-recovery.md) -----------
    def _add_recovered_calls(self) -> None:
        """Add, as tool-call segments, the calls written as markup in the response's content or reasoning
        (or in `raw_output`) that the structured response does not carry, so tool detectors judge them."""
        response = [s for s in self.segments[self.response_from:] if s.phase is Phase.RESPONSE]
        texts = [(s, s.text) for s in response if s.kind in (SegmentKind.ASSISTANT, SegmentKind.REASONING)]
        if not texts and not self.raw_output:
            return
        structured = [(s.tool_call.name, s.tool_call.arguments, s.tool_call.arguments_error is None)
                      for s in response if s.tool_call is not None]
        schemas = recovery_schemas(self.tools)
        for segment, call in find_leaks(texts, self.raw_output, structured, schemas):
            self._add_recovered(segment, call)

    def _add_recovered(self, segment: Segment | None, call: RecoveredCall) -> None:
        (name_start, name_end), (args_start, args_end) = call.name_span, call.arguments_span
        if segment is None:  # found in raw_output
            text, turn, pieces = self.raw_output or "", self.next_turn, ()
            name_ptr, name_at, args_ptr, args_at = "/raw_output", name_start, "/raw_output", args_start
        else:
            text, turn = segment.text, segment.turn
            pieces = slice_pieces(segment.pieces, args_start, args_end)
            name_loc, args_loc = segment.locate(name_start, name_end), segment.locate(args_start, args_end)
            name_ptr, name_at = name_loc.pointer, name_loc.start or 0
            args_ptr, args_at = args_loc.pointer, args_loc.start or 0
            # A name split across stream chunks: its start's chunk holds only part of it, so the name is located at
            # that whole fragment (offsets up to len(name) would run past it), as a streamed Chat name is.
            whole_name = name_loc.end is None or name_loc.end - name_at == name_end - name_start
        added = self.tool_call(name=call.name, arguments=text[args_start:args_end], call_id=call.call_id,
                               name_pointer=name_ptr, arguments_pointer=args_ptr, turn=turn,
                               phase=Phase.RESPONSE, recovered_from=call.family, pieces=pieces,
                               name_offset=name_at, arguments_offset=args_at,
                               name_in_text=segment is None or whole_name)
        if call.arguments_parsed and added.tool_call is not None:
            # The raw text may be XML or repaired JSON: detectors get the arguments the parser read.
            mended = replace(added.tool_call, arguments=call.arguments, arguments_error=None)
            self.segments[-1] = replace(added, tool_call=mended)


def _with_arguments(segment: Segment, call: ToolCall, arguments: Any) -> Segment:
    """A transcript action's segment (`_react_call`) with its call's arguments replaced, built directly:
    `dataclasses.replace` costs several times as much, on every check of a history that holds such a call."""
    typed = ToolCall(name=call.name, arguments_raw=call.arguments_raw, arguments=arguments,
                     arguments_error=call.arguments_error, id=call.id, name_pointer=call.name_pointer,
                     arguments_pointer=call.arguments_pointer, recovered_from=call.recovered_from,
                     name_offset=call.name_offset)
    return Segment(index=segment.index, kind=segment.kind, role=segment.role, trust=segment.trust, turn=segment.turn,
                   phase=segment.phase, text=segment.text, pointer=segment.pointer, start=segment.start,
                   tool_call=typed, tool_name=segment.tool_name, source=segment.source)


class EchoedPrompts(NamedTuple):
    """The prompts of a legacy Completions request with `echo: true`, which vLLM puts before each choice's text
    (and its logprobs): choice i echoes prompt i // n, as vLLM numbers choices prompt by prompt. None stands for
    a token-id prompt, whose text is unknown here. A Chat Completions `echo` is one prompt, the last message's
    text, that vLLM puts before a choice's `message.content` only where the message has that message's role."""

    prompts: tuple[str | None, ...]
    n: int = 1
    role: str | None = None  # chat: the echoed message's role; None (completions): every choice echoes

    def of(self, choice: int, role: str | None = None) -> str | None:
        """The text echoed at the start of choice `choice`, whose message has role `role` (chat)."""
        if self.role is not None and role != self.role:
            return None
        index = choice // self.n
        return self.prompts[index] if 0 <= index < len(self.prompts) else None


class Adapter(ABC):
    """Reads one API format. Request and response sides are both read by the same adapter."""

    format: ClassVar[str]
    # The highest score `sniff` can return. Detection runs adapters by falling top score and stops once a
    # score seen is above the top score of those left: they could neither win nor tie.
    top_score: ClassVar[int] = 100
    # What a streamed chunk of this API is, named in the 422 that refuses one that is not (`check_stream`).
    stream_event: ClassVar[str]
    # The top-level request keys that carry content (text, history, tool declarations) and that `read_request`
    # reads. A body whose format is detected, not given, is refused when it also holds another API's content key
    # that the detected adapter does not read: the server would read that text, the guardrail never would.
    content_keys: ClassVar[frozenset[str]] = frozenset()
    # What a whole response of this API is, named in the 422 that refuses one that is not (`check_response`).
    response_kind: ClassVar[str]
    # Top-level fields of which every whole response of this API carries one (not null): a response with none
    # of them would be read as empty, so it is refused.
    response_fields: ClassVar[tuple[str, ...]] = ()
    # Top-level fields only this API's whole responses have, and ("object"/"type", value) tags naming them: a
    # response read as another API that carries one holds text that API's reader would skip.
    response_markers: ClassVar[tuple[str, ...]] = ()
    response_tags: ClassVar[tuple[tuple[str, str], ...]] = ()

    @classmethod
    def response_marks(cls, response: Mapping[str, Any]) -> list[str]:
        """The marker fields and tags of this API that `response` carries, as a 422 names them."""
        marks = [f'"{key}"' for key in cls.response_markers if response.get(key) is not None]
        marks += [f'"{key}": "{value}"' for key, value in cls.response_tags if response.get(key) == value]
        return marks

    @classmethod
    def carries_response_fields(cls, response: Mapping[str, Any]) -> bool:
        for key in cls.response_fields:  # noqa: SIM110  (a loop: any() over a generator costs twice as much)
            if response.get(key) is not None:
                return True
        return False

    @classmethod
    @abstractmethod
    def sniff(cls, request: Mapping[str, Any], response: Any) -> int:
        """How sure we are that the body is in this format: 0 (no) to 100 (certain), at most `top_score`."""

    @abstractmethod
    def read_request(self, request: Mapping[str, Any], b: ExchangeBuilder) -> None:
        """Read the request side; pointers start at "/request"."""

    @abstractmethod
    def read_response(self, response: Mapping[str, Any], b: ExchangeBuilder) -> None:
        """Read a complete response; pointers start at "/response"."""

    @abstractmethod
    def read_stream(self, chunks: list[Any], b: ExchangeBuilder) -> None:
        """Read a response given as the list of streamed chunks/events; pointers start at "/response".
        `read_exchange` has run `check_stream` on them first."""

    @classmethod
    @abstractmethod
    def is_stream_event(cls, chunk: Mapping[str, Any]) -> bool:
        """Whether an object is a chunk/event of this API's streams, of any type, known or not (a keep-alive,
        an error, an event type added after this was written). False only for what this API never sends, such
        as another API's chunk: the reader would skip it unread. Only objects are asked."""

    def check_stream(self, chunks: list[Any]) -> None:
        """Refuse, with the documented 422, the first object that is not one of this API's stream events.

        Readers skip event types they do not use, so without this a chunk of another API (a mixed list, or
        `format` naming the wrong API) would pass unread: a secret in it would get `allow`. Values that are not
        objects are left to `read_stream`, which accepts (`[DONE]`) or refuses them with its own message."""
        is_event = self.is_stream_event
        for k, chunk in enumerate(chunks):
            if (type(chunk) is dict or isinstance(chunk, Mapping)) and not is_event(chunk):
                raise BodyError(f"expected {self.stream_event}, got {describe_object(chunk)}: every chunk of a stream "
                                f"must be an event of the API it is read as, {self.format}", f"/response/{k}")


def assemble(fragments: list[tuple[str, str]]) -> tuple[str, tuple[Piece, ...]]:
    """Concatenate (text, pointer) fragments of a stream into one text with its pieces."""
    pieces: list[Piece] = []
    offset = 0
    for text, pointer in fragments:
        if text:
            pieces.append(Piece(offset=offset, length=len(text), pointer=pointer, start=0))
            offset += len(text)
    return "".join([text for text, _ in fragments]), tuple(pieces)


def drop_repeats(b: ExchangeBuilder, start: int, since: int) -> None:
    """Keep, of the segments added from `start` on (another copy of a streamed response, such as the whole output a
    final event repeats), only those that say what the segments from `since` on did not: a text that no earlier
    segment of its kind contains, a call that no earlier call makes with the same name and arguments. Where the
    copies agree, the stream's text is judged once; where they disagree, both are, each where it is."""
    added = b.segments[start:]
    if not added:
        return
    kept: list[Segment] = []
    earlier = b.segments[since:start]
    for segment in added:
        if not (_repeats(segment, earlier) or _repeats(segment, kept)):
            kept.append(segment)
    if len(kept) < len(added):
        b.segments[start:] = [s if s.index == start + i else replace(s, index=start + i) for i, s in enumerate(kept)]


def _repeats(segment: Segment, earlier: list[Segment]) -> bool:
    call = segment.tool_call
    for other in earlier:
        if other.kind is not segment.kind:
            continue
        said = other.tool_call
        if call is None:
            if said is None and segment.text in other.text:
                return True
        elif (said is not None and said.name == call.name and said.hosted == call.hosted
              and (said.arguments_raw == call.arguments_raw or _same_arguments(said, call))):
            return True
    return False


def _same_arguments(one: ToolCall, other: ToolCall) -> bool:
    """Parsed arguments that are equal (the same object, spaced or ordered differently); nested too deep to compare:
    not the same, so both are read."""
    if one.arguments_error is not None or other.arguments_error is not None:
        return False
    return same_value(one.arguments, other.arguments)


def slice_pieces(pieces: tuple[Piece, ...], start: int, end: int) -> tuple[Piece, ...]:
    """The pieces covering [start, end) of an assembled text, re-based to the slice."""
    if not pieces:
        return ()
    if start == 0 and _within(pieces, end):
        return pieces  # the usual span, the whole text: re-basing would rebuild equal pieces
    out: list[Piece] = []
    for p in pieces:
        lo, hi = max(start, p.offset), min(end, p.offset + p.length)
        if lo < hi:
            out.append(Piece(offset=lo - start, length=hi - lo, pointer=p.pointer, start=p.start + lo - p.offset))
    return tuple(out)


def _within(pieces: tuple[Piece, ...], end: int) -> bool:
    """Every piece is non-empty and lies in [0, end): slicing [0, end) keeps each one unchanged."""
    return all(p.offset >= 0 and p.length > 0 and p.offset + p.length <= end for p in pieces)
