"""ReAct, the text protocol of LangChain-style agents and of many open models prompted as agents:

    Thought: I need the weather.
    Action: get_weather
    Action Input: {"city": "Paris"}

also `Action Input: Paris` (a plain string, the tool's single input), `Action: get_weather[Paris]` (the ReAct
paper's form), `Action:` followed by a JSON blob `{"action": NAME, "action_input": ...}`, usually fenced (LangChain's
structured chat agent), numbered steps (`Action 2:`), and several blocks in one text, each often followed by an
`Observation:` the model invented.

"Action:" is also plain English (meeting notes, "Action items:", docs about ReAct), so only what is unambiguous
counts: a line-anchored `Action: NAME` line followed by an `Action Input:` line; `Action:` followed by the blob,
whose keys say what it is; and `Action: NAME[arg]` only where NAME is a declared tool. An undeclared name is also
turned away inside a fenced code block (a tutorial's example) and when it stands for "no action" or a placeholder.
When the request declares no tools at all, ReAct text is the agent's protocol and nothing is reported, unless its
prompt lists the agent's tools (`prompt_tools` below): the exchange builder then declares those, and the calls are
read and judged like any other (docs/tool-call-recovery.md, "ReAct agents that list their tools in the prompt").
"""

from __future__ import annotations

import re
import sys
from bisect import bisect_left
from collections.abc import Iterator
from itertools import pairwise
from typing import Any, NamedTuple

from guardrails.argspans import SizedMemo
from guardrails.toolparse.base import RecoveredCall, Schemas, ToolParser, new_call, register
from guardrails.toolparse.blocks import rskip_space, skip_space
from guardrails.toolparse.lenient import LenientReader, NotAValue, read_value
from guardrails.toolparse.schema import coerce, tool_properties

_BOLD = r"(?:\*\*|__)?"  # `**Action:**`, `**Action**:`
# `Action:` / `Action 2:` (that it starts its line is checked apart: a regex with a literal prefix is found fast)
_HEAD = re.compile(r"Action(?:[ \t]*\d+)?" + _BOLD + r"[ \t]*:" + _BOLD + r"[ \t]*")
_ACTION = re.compile("Action")
_SHORT = 512  # up to this length, `"Action" in text` costs less than a regex call
_INDENT = 16  # at most this many spaces or bold marks before `Action` on its line
_NAME = r"[A-Za-z_](?:[\w.\-]{0,126}\w)?"
_NAME_LINE = re.compile(r"[`'\"]?(" + _NAME + r")[`'\"]?[ \t]*(?=\n|\Z)")
_BRACKET_LINE = re.compile(r"(" + _NAME + r")\[([^\n]*)\][ \t]*(?=\n|\Z)")  # `get_weather[Paris]`
_BRACKET_OPEN = re.compile(r"(" + _NAME + r")\[([^\n]*)\Z")  # cut off before its `]`
# The `Action Input:` line after the name line (blank lines between are allowed).
_INPUT = re.compile(r"[ \t]*\n(?:[ \t]*\n)*[ \t]*" + _BOLD + r"Action[ \t]*(?:\d+[ \t]*)?Input(?:[ \t]*\d+)?" + _BOLD
                    + r"[ \t]*:" + _BOLD + r"[ \t]*")
# The next ReAct line: an input ends before it.
_NEXT = re.compile(r"\n[ \t]*" + _BOLD + r"(?:Observation|Thought|Action|Final Answer|Question)[^\n:]{0,16}:")
_PARAGRAPH_END = re.compile(r"\n[ \t]*\n")
_FENCE = re.compile(r"```[\w+\-]*[ \t]*\n")
_FENCE_MARK = re.compile(r"```")  # a position after an odd number of these is inside a fenced code block
# An `Observation:` after the call: the model wrote the tool's result itself.
_OBSERVATION = re.compile(r"[^\n]*(?:\n[ \t]*)*" + _BOLD + r"Observation(?:[ \t]*\d+)?" + _BOLD + r"[ \t]*:" + _BOLD)
_OBSERVATION_SHOWN = 200  # characters of an invented observation quoted in evidence
# Not tools: what agents write for "no action", the final answer, and the placeholders of prompt templates and
# ReAct tutorials. Only undeclared names are turned away.
_NOT_TOOLS = frozenset({"none", "null", "nothing", "finish", "final_answer", "tool_name", "action", "tool",
                        "function_name", "the_action"})
_NO_ARGUMENTS = ("no_arguments",)


@register
class ReActParser(ToolParser):
    family = "react"
    # In every block, and found at memchr speed (a text without a colon costs nothing more); `applies` is the full
    # test. It looks for "Action" with a regex search, twice as fast as `in` on prose (where its "A" is rare), except
    # in a short text, where the regex call's fixed cost is more than the search.
    markers = (":",)

    def applies(self, text: str) -> bool:
        if ("Action" not in text) if len(text) <= _SHORT else (_ACTION.search(text) is None):
            return False
        return next(_heads(text), None) is not None

    def parse(self, text: str, schemas: Schemas | None = None) -> list[RecoveredCall]:
        calls: list[RecoveredCall] = []
        if schemas is not None and not schemas:
            # The request declared no tools: ReAct text is then the agent's own protocol (a LangChain ReAct agent
            # prompts its tools in text), not a call that missed the structured channel.
            return calls
        fences: list[int] | None = None  # where the ``` marks are, looked for at the first undeclared name
        for head in _heads(text):
            call = _call(text, head, schemas)
            if call is None:
                continue
            if not (schemas and call.name in schemas):
                if fences is None:
                    fences = [m.start() for m in _FENCE_MARK.finditer(text)]
                if call.name.lower() in _NOT_TOOLS or bisect_left(fences, call.span[0]) % 2 == 1:
                    continue  # "no action", a placeholder, or an example inside a tutorial's fenced code block
            calls.append(call)
        return calls


def invented_observation(text: str, call_end: int) -> str | None:
    """The `Observation:` the model wrote after a ReAct call ending at `call_end` (its start, shortened), if any."""
    found = _OBSERVATION.match(text, call_end)
    if found is None:
        return None
    start = skip_space(text, found.end())
    stop = _NEXT.search(text, start)
    observation = text[start:stop.start() if stop else len(text)].strip()
    return observation[:_OBSERVATION_SHOWN] + ("..." if len(observation) > _OBSERVATION_SHOWN else "")


def _heads(text: str, start: int = 0) -> Iterator[re.Match[str]]:
    """The `Action:` heads that start their line (after spaces or Markdown bold), in order, from `start` on."""
    at = text.find("Action", start)
    while at >= 0:
        # The line's start is looked for only within the indent allowed (a long line of prose costs no more).
        window = max(0, at - _INDENT)
        line_start = text.rfind("\n", window, at) + 1
        if (line_start or not window) and text[line_start:at].strip(" \t") in ("", "**", "__"):
            head = _HEAD.match(text, at)
            if head is not None:
                yield head
        at = text.find("Action", at + 6)


def _start(text: str, head: re.Match[str]) -> int:
    """Where the block starts: at `Action`, or at the Markdown bold before it."""
    start = head.start()
    return start - 2 if text[start - 2:start] in ("**", "__") else start


def _call(text: str, head: re.Match[str], schemas: Schemas | None, observed: bool = False) -> RecoveredCall | None:
    """The call at an `Action:` head, if it is one. `observed`: only a call an `Observation:` can follow (a
    transcript's step); the input of another is not read."""
    at = head.end()
    if at >= len(text) or text[at] in "\n`{":
        return _blob_call(text, head, schemas, observed)
    line = _NAME_LINE.match(text, at)
    if line is not None:
        started = _INPUT.match(text, line.end())
        if started is None:
            return None  # `Action: approve` with no input line: prose as likely as a call
        return _text_call(text, _start(text, head), line.span(1), started.end(), schemas, observed)
    bracket = _BRACKET_LINE.match(text, at) or _BRACKET_OPEN.match(text, at)
    if bracket is None or not schemas or bracket.group(1) not in schemas:
        return None  # `Action: Search[...]` reads as a call only for a declared tool
    closed = bracket.re is _BRACKET_LINE
    args_start, args_end = bracket.span(2)
    arguments, parsed, after, repairs = _input(text, args_start, args_end, bracket.group(1), schemas)
    if not closed:
        repairs.add("truncated")
    end = args_end + 1 if closed else after
    span = (_start(text, head), end)
    return new_call(("react", bracket.group(1), arguments, parsed, span, bracket.span(1), (args_start, after), span,
                     None, tuple(sorted(repairs))))


def _text_call(text: str, start: int, name_span: tuple[int, int], input_at: int,
               schemas: Schemas | None, observed: bool = False) -> RecoveredCall | None:
    """`Action: NAME` then `Action Input: ...`: the input runs to the next ReAct line (`Observation:`...)."""
    name = text[name_span[0]:name_span[1]]
    stop = _NEXT.search(text, input_at)
    if observed and not _observable(text, input_at, stop):
        return None
    bound = stop.start() if stop else len(text)
    args_start = skip_space(text, input_at, bound)
    if args_start >= bound:
        arguments: Any = {}
        parsed, after, repairs = True, args_start, set(_NO_ARGUMENTS)
    else:
        arguments, parsed, after, repairs = _input(text, args_start, bound, name, schemas)
    span = (start, after)
    return new_call(("react", name, arguments, parsed, span, name_span, (args_start, after), span, None,
                     tuple(sorted(repairs))))


def _observable(text: str, start: int, stop: re.Match[str] | None) -> bool:
    """Whether an `Observation:` can follow an input that starts at `start` and ends by the next ReAct line `stop`:
    the input ends before `stop` (or the text's end), and the observation is on the input's last line or after
    blank lines only, so on or before `stop`'s line. Tested before the input is read (a transcript reads only its
    steps' inputs)."""
    return text.find("Observation", start, stop.end() if stop else len(text)) >= 0


def _input(text: str, start: int, bound: int, name: str,
           schemas: Schemas | None) -> tuple[Any, bool, int, set[str]]:
    """The input at `start`: a JSON-like value, or plain text up to a blank line (the tool's single input).
    Returns (arguments, parsed, end, repairs)."""
    char = text[start] if start < bound else ""
    if char in ("{", "[", '"', "'"):
        read = read_value(text, start, bound)
        if read is not None and (char in "{[" or _line_ends(text, read[1], bound)):
            value, after, repaired = read
            repairs = set(repaired)
            if "unclosed" in repairs and after >= rskip_space(text, len(text)):
                repairs.add("truncated")
            return _single_input(value, name, schemas, repairs), True, after, repairs
        if char in "{[":  # an object or array the reader cannot read: kept as text
            after = rskip_space(text, bound)
            truncated = {"truncated"} if after >= rskip_space(text, len(text)) else set()
            return text[start:after], False, after, {"unreadable_arguments"} | truncated
    paragraph = _PARAGRAPH_END.search(text, start, bound)
    after = rskip_space(text, paragraph.start() if paragraph else bound)
    repairs = set()
    return _single_input(text[start:after], name, schemas, repairs), True, after, repairs


def _line_ends(text: str, i: int, bound: int) -> bool:
    """Whether only spaces follow `i` on its line (a quoted input, not a quote that starts a sentence)."""
    end = text.find("\n", i, bound)
    return not text[i:end if end >= 0 else bound].strip()


def _single_input(value: Any, name: str, schemas: Schemas | None, repairs: set[str]) -> Any:
    """A text input of a tool with one declared parameter is that parameter, typed by its schema (as LangChain
    passes a single input); other values are the arguments as they are."""
    if not isinstance(value, str):
        return value
    properties = tool_properties(schemas, name)
    if properties is None or len(properties) != 1:
        return value
    (parameter,) = properties
    repairs.add("single_input")
    return {parameter: coerce(value, properties, parameter, repairs)}


def _blob_call(text: str, head: re.Match[str], schemas: Schemas | None, observed: bool = False
               ) -> RecoveredCall | None:
    """`Action:` then `{"action": NAME, "action_input": ...}`, fenced or not."""
    start = skip_space(text, head.end())
    stop = _NEXT.search(text, start)
    bound = stop.start() if stop else len(text)
    fence_end = -1
    fence = _FENCE.match(text, start)
    if fence is not None:
        close = text.find("```", fence.end())
        bound = len(text)
        if close >= 0:
            bound, fence_end = close, close + 3
            if observed and _OBSERVATION.match(text, fence_end) is None:
                return None  # the call ends at its fence, and no observation follows
        elif observed and text.find("Observation", start) < 0:
            return None
        start = skip_space(text, fence.end(), bound)
    elif observed and not _observable(text, start, stop):
        return None
    if start >= bound or text[start] != "{":
        return None
    reader = LenientReader(text, bound)
    try:
        members, after = reader.object_spans(start)
    except (NotAValue, RecursionError):
        return None
    action = members.get("action")
    if action is None or not isinstance(action[0], str) or not re.fullmatch(_NAME, action[0]):
        return None  # also LangChain's `"action": "Final Answer"`
    name, (name_start, name_end) = action[0], action[1:]
    if text[name_start + 1:name_end - 1] == name:  # the name without its quotes
        name_start, name_end = name_start + 1, name_end - 1
    repairs = set(reader.repairs)
    if "action_input" in members:
        arguments, args_start, args_end = members["action_input"]
        arguments = _single_input(arguments, name, schemas, repairs)
    else:
        arguments, args_start, args_end = {}, after - 1, after - 1
        repairs.add("no_arguments")
    if "unclosed" in repairs and after >= rskip_space(text, len(text)):
        repairs.add("truncated")
    span = (_start(text, head), fence_end if fence_end >= 0 else after)
    return new_call(("react", name, arguments, True, span, (name_start, name_end), (args_start, args_end), span, None,
                     tuple(sorted(repairs))))


# --- ReAct transcripts inside a request ---------------------------------------------------------------------------
# Actions read per check (steps, and actions no observation follows), over all the texts of its request: 1 MB of
# steps took ~1 s to carve into ~70,000 segments, and a body of many such messages multiplied it. Real scratchpads
# hold tens of steps; the text past the last action read is not carved (`unread_pieces`). The exchange builder keeps
# what is left of the budget (`read_transcript`'s `budget`).
MAX_ACTIONS = 2_000
# A LangChain-style agent sends its scratchpad as text: `Thought:`/`Action:`/`Action Input:` lines the model wrote,
# each followed by an `Observation:`, the tool's output, which the agent framework pasted in (often into one user
# message). The exchange builder carves such a transcript into segments (docs/tool-call-recovery.md, "ReAct
# transcripts in the request"): each observation is an untrusted tool result, each action an earlier tool call.
_LEADING_OBSERVATION = re.compile(r"[ \t\r\n]*" + _BOLD + r"Observation(?:[ \t]*\d+)?" + _BOLD + r"[ \t]*:" + _BOLD)
# A line that ends a transcript: the agent's answer. What comes before it is an example or a finished episode.
# (Cases spelt out: a case-insensitive search costs ~30 ns per character, and these run over whole transcripts.)
_FINISHED = re.compile(r"\n[ \t]*" + _BOLD + r"(?:Final[ \t]+[Aa]nswer|FINAL[ \t]+ANSWER)" + _BOLD + r"[ \t]*:")
# A line that starts a new question: what follows a finished episode (the next episode is another one).
_NEW_QUESTION = re.compile(r"\n[ \t]*" + _BOLD + r"(?:Question|QUESTION|User[ \t]+[Ii]nput|New[ \t]+[Ii]nput)" + _BOLD
                           + r"[ \t]*:")
# The model's reasoning line, which precedes its final answer in every ReAct format.
_THOUGHT = re.compile(r"\n[ \t]*" + _BOLD + r"Thought[^\n:]{0,16}:")
# A line of a step: after a final answer, the same episode carried on.
_STEP_LINE = re.compile(r"\n[ \t]*" + _BOLD + r"(?:Thought|Action|Observation)[^\n:]{0,16}:")
# Where a text that is not carved is cut (`unread_pieces`).
_OBSERVATION_LINE = re.compile(r"\n[ \t]*" + _BOLD + r"Observation")
# Only ReAct labels and white space: nothing worth a segment of its own.
_LABELS_ONLY = re.compile(r"(?:\s|\*\*|__|(?:Observation|Thought|Action(?:[ \t]+Input)?)(?:[ \t]*\d+)?[ \t]*:)*")


class TranscriptStep(NamedTuple):
    """One step of a ReAct transcript: the action (None for an observation that opens the text, answering the action
    an earlier message ended with) and its observation, [start, end) in the text (empty when the tool said nothing).
    The action is a `RecoveredCall` of family "react", read without schemas: a plain-text input stays a string.
    `finished`: the step is part of an episode the model finished (a format example, an earlier question): its
    observation is a tool's output all the same, but its action is no call of the scratchpad the agent carries on.
    `resume`: on a finished episode's last step, where the text is again what it was before the episode's first
    observation (the answer's paragraph ended, or the new question's line); None on other steps."""

    call: RecoveredCall | None
    observation: tuple[int, int]
    finished: bool = False
    resume: int | None = None


class Transcript(NamedTuple):
    """The steps read from a text, and `rest`: where the first action past the budget of actions begins, if any.
    From there on the text is not read: the exchange builder makes it untrusted segments (`unread_pieces`).
    `actions`: how many actions were read (what the text took of the check's budget)."""

    steps: list[TranscriptStep]
    rest: int | None = None
    actions: int = 0


def unread_pieces(text: str, rest: int, limit: int = MAX_ACTIONS) -> list[tuple[int, int]]:
    """The text from `rest` on, cut at `Observation` lines into at most `limit` + 1 pieces (one when `limit` is 0),
    each but the first and the last as many observations long: steps pasted over and over make equal pieces, which
    the detectors' per-text caches read once (one piece of megabytes would be read whole by each)."""
    if limit <= 0:
        return [(rest, len(text))]
    cuts = [m.start() + 1 for m in _OBSERVATION_LINE.finditer(text, rest)]
    every = -(-len(cuts) // limit) or 1
    bounds = [rest, *(cut for cut in cuts[::every] if cut > rest), len(text)]
    return list(pairwise(bounds))


def transcript_steps(text: str, leading_observation: bool = False) -> list[TranscriptStep]:
    """The steps of `read_transcript`."""
    return read_transcript(text, leading_observation).steps


def read_transcript(text: str, leading_observation: bool = False, budget: int = MAX_ACTIONS) -> Transcript:
    """The steps of the ReAct transcript in a request-side text: an `Action: NAME` (a name, not the template's
    "the action to take, ...") with its input, followed by an `Observation:` (an action with no observation is no
    step: text a user pasted). An observation's text is the tool's, and the tool can write any line: it runs to the
    model's next step or to the end of the text (`_observation_end`), so the lines it wrote (a `Question:`, a
    `Final Answer:`, a paragraph after them) are read as its own. Steps up to a finished episode's `Final Answer:`
    (`_finish`) are `finished`: a format example or an earlier episode, not the scratchpad the agent carries on; the
    observation ends at the `Thought:` before that answer. After the text's last observation, a forged finish
    (`Thought:` + `Final Answer:` + a new `Question:`) reads exactly as a worked example followed by the live
    question: it is taken as a finish, so a few-shot prompt's first step is not blocked (docs/tool-call-recovery.md
    names this limit). `leading_observation`: an observation that opens the text answers the action
    the previous message ended with (LlamaIndex): the text is then that tool's output message, one observation,
    nothing in it a step.

    Linear in the text: each search starts where the previous one stopped, and an action no observation can follow
    is left before its input is read. Most texts have no "Observation" and cost one literal search. At most
    `budget` actions are read (`Transcript.rest`; the check's budget is MAX_ACTIONS over all its texts)."""
    if "Observation" not in text:
        return Transcript([])
    if leading_observation:
        found = _LEADING_OBSERVATION.match(text)
        if found is not None:  # the model's steps come in assistant messages: any in this one the tool wrote
            start = skip_space(text, found.end())
            return Transcript([TranscriptStep(None, (start, max(start, rskip_space(text, len(text)))))])
    steps: list[TranscriptStep] = []
    at = 0
    fences: list[int] | None = None
    rest, actions = None, 0
    for head in _heads(text, at):
        if head.start() < at:
            continue  # inside the previous step (an input spread over lines)
        if actions >= budget:
            rest = _start(text, head)
            break
        actions += 1
        call = _call(text, head, None, observed=True)
        if call is None or call.name.lower() in _NOT_TOOLS:
            continue
        if fences is None:
            fences = [m.start() for m in _FENCE_MARK.finditer(text)]
        if bisect_left(fences, call.span[0]) % 2 == 1:
            continue  # quoted in a fenced code block: an example
        found = _OBSERVATION.match(text, call.span[1])
        if found is None:
            continue
        steps.append(TranscriptStep(call, _observation_span(text, found.end())))
        at = steps[-1].observation[1]
    return Transcript(_finished(text, steps, rest), rest, actions)


def _finished(text: str, steps: list[TranscriptStep], rest: int | None) -> list[TranscriptStep]:
    """The steps with their observations' whole spans (`_observation_end`), those of finished episodes marked
    (`_finish`); `rest`: where the text read ends, if before its end. Each step's gap up to the next action is
    searched once: linear in the text."""
    marked: list[TranscriptStep] = []
    last = -1  # the last step that finishes an episode
    for i, step in enumerate(steps):
        start, stop = step.observation
        following = steps[i + 1].call if i + 1 < len(steps) else None
        if following is not None:
            bound: int | None = following.span[0]
            finish = _finish(text, step, following.span[0])
        elif rest is None:
            bound, finish = None, _finish(text, step, len(text))
        else:  # the unread text follows: what an answer would give back is not all read
            bound, finish = rest, None
        if finish is not None:
            end, resume = finish
            last = i
        else:
            end, resume = _observation_end(text, stop, bound), None
        marked.append(TranscriptStep(step.call, (start, max(start, rskip_space(text, end))), False, resume))
    if last < 0:
        return marked
    return [step._replace(finished=True) if i <= last and step.call is not None else step
            for i, step in enumerate(marked)]


def _observation_end(text: str, stop: int, following: int | None) -> int:
    """Where the text an observation wrote ends: at the model's next step, the last `Thought:` line before the next
    action `following` (a `Question:` or `Final Answer:` line before it is the tool's), else at that action. After
    the last observation the tool's text runs to the end of the text; only a bare `Thought:` label that ends it (the
    agent's prompt for the model's turn) or a `Thought:` line an action follows (the model's step, its observation
    still to come) is the model's. `stop`: where the observation's first line of ReAct cut it (`_observation_span`)."""
    if following is not None:
        thought = _last_thought(text, stop, following)
        return thought.start() if thought is not None else following
    thought = _last_thought(text, stop, len(text))
    if thought is not None and (skip_space(text, thought.end()) == len(text)
                                or next(_heads(text, thought.end()), None) is not None):
        return thought.start()
    return len(text)


def _last_thought(text: str, start: int, end: int) -> re.Match[str] | None:
    """The last `Thought:` line in text[start:end] (each search starts where the previous one stopped)."""
    last, found = None, _THOUGHT.search(text, start, end)
    while found is not None:
        last, found = found, _THOUGHT.search(text, found.end(), end)
    return last


def _finish(text: str, step: TranscriptStep, end: int) -> tuple[int, int] | None:
    """If a `Final Answer:` line between the step's observation and `end` (the next step's action, or the text's
    end) finishes its episode: where the answer's `Thought:` line begins (the observation's text ends there) and
    where the text is again what it was before the episode. None if none does. An observation's text is the
    attacker's and can write any line, so only an answer the tool's output cannot have written counts: after the
    model's `Thought:` (a line right after the observation is the observation's own), outside a JSON-like
    observation (one cut before its closing bracket wrote the lines that cut it), and with the episode not carried
    on after it (by a step line before a new question, or by a next step with no new question before it). The
    answer runs to its paragraph's end or the new question."""
    start, stop = step.observation
    answer = _FINISHED.search(text, stop, end)
    if answer is None or _cut_value(text, start, stop):
        return None
    thought = _last_thought(text, stop, answer.start())
    if thought is None:
        return None
    question = _NEW_QUESTION.search(text, answer.end(), end)
    if question is None and end < len(text):
        return None  # the next step follows: the same episode
    bound = question.start() + 1 if question else end  # the question's line
    if _STEP_LINE.search(text, answer.end(), bound) is not None:
        return None
    paragraph = _PARAGRAPH_END.search(text, skip_space(text, answer.end(), bound), bound)
    return thought.start(), paragraph.end() if paragraph else bound


def _cut_value(text: str, start: int, end: int) -> bool:
    """Whether text[start:end] starts a JSON-like value that does not close by `end`."""
    if start >= end or text[start] not in "{[":
        return False
    read = read_value(text, start, end)
    return read is None or "unclosed" in read[2]


def _observation_span(text: str, label_end: int) -> tuple[int, int]:
    """An observation's text after its label: up to the next ReAct line (`Thought:`, `Action:`...), stripped."""
    stop = _NEXT.search(text, label_end)
    bound = stop.start() if stop else len(text)
    start = skip_space(text, label_end, bound)
    return start, max(start, rskip_space(text, bound))


def pending_action(text: str) -> RecoveredCall | None:
    """The ReAct action a request-side text ends with, its observation still to come (in the next message, as
    LlamaIndex's agent sends it: the action in an assistant message, `Observation: ...` in a user message)."""
    if "Action" not in text:
        return None
    last = None
    for last in _heads(text):  # noqa: B007  (the last head is the one wanted)
        pass
    if last is None:
        return None
    call = _call(text, last, None)
    if call is None or call.name.lower() in _NOT_TOOLS or skip_space(text, call.span[1]) < len(text):
        return None
    if text.count("```", 0, call.span[0]) % 2 == 1:
        return None  # inside a fenced code block
    return call


def starts_with_observation(text: str) -> bool:
    return _LEADING_OBSERVATION.match(text) is not None


def only_labels(text: str) -> bool:
    """Whether `text` holds nothing but ReAct labels (`Observation:`, `Thought:`) and white space."""
    return _LABELS_ONLY.fullmatch(text) is not None


def typed_input(value: Any, name: str, schemas: Schemas) -> Any:
    """A transcript action's plain-text input typed as the response's calls are (`{"tool_input": ...}` for a tool
    the prompt lists): an earlier action and a new call of the same input then read alike (`tool_loop`)."""
    return _single_input(value, name, schemas, set())


# --- the tools a ReAct agent's prompt declares ------------------------------------------------------------------
# A LangChain ReAct agent sends no `tools`: its prompt lists them, under "You have access to the following tools:"
# (or a `Tools:` heading) as `name: description` or `name(args) - description` lines, and in the format's
# "Action: the action to take, should be one of [a, b, c]". InjecAgent's prompted agent lists JSON tool
# specifications under "The following tools are available:", LlamaIndex's ReAct agent `> Tool Name: X` entries
# (each with `Tool Description:` and `Tool Args:` lines) and "Action: tool name (one of a, b) if using a tool."
# Only these shapes declare names: a prompt that merely talks about tools declares none.
_TOOLS_HEADER = re.compile(r"(?:^|(?<=[.!?:])[ \t]+)(?:you have access to the following tools|the following tools are "
                           r"available)[ \t]*:[ \t]*$"
                           r"|^[ \t]*(?:#{1,6}[ \t]+)?" + _BOLD + r"tools" + _BOLD + r"[ \t]*:" + _BOLD + r"[ \t]*$",
                           re.IGNORECASE | re.MULTILINE)
# LlamaIndex's entry: its name line, and the `Tool Args:` line (a JSON schema) that ends it.
_NAMED_ENTRY = re.compile(r"[ \t]{0,3}>[ \t]*Tool Name:[ \t]*(" + _NAME + r")[ \t]*\n")
_ENTRY_ARGS = re.compile(r"^[ \t]{0,3}Tool Args:[ \t]*([^\n]*)", re.MULTILINE)
# The keys that make a JSON object with a "name" a tool's specification (InjecAgent's, OpenAI's, JSON schema's).
_SPEC_KEYS = frozenset({"description", "summary", "parameters", "arguments", "args", "input_schema"})
# `name: description`, `name(args) - description` (also `name(args): description`), bulleted or numbered.
_TOOL_ENTRY = re.compile(r"[ \t]{0,3}(?:[-*\u2022][ \t]+|\d{1,2}[.)][ \t]+)?[`*]{0,2}(" + _NAME + r")[`*]{0,2}"
                         r"(?:(\([^\n]*?\))[ \t]*(?::|[ \t]+-|[ \t]+\u2014)|:)[ \t]+\S")
_ONE_OF = re.compile(r"^[ \t]*" + _BOLD + r"Action" + _BOLD + r"[ \t]*:" + _BOLD
                     + r"(?:[^\n\[]{0,80}?should be one of[ \t]*\[([^\]\n]*)\]"  # LangChain's
                     + r"|[^\n(]{0,80}?\btool[^\n(]{0,40}\(one of[ \t]+([^()\n]*)\))",  # LlamaIndex's
                     re.IGNORECASE | re.MULTILINE)
_PROMPT_MARKERS = re.compile(r"following tools|tools" + _BOLD + r"[ \t]*:|should be one of|\(one of", re.IGNORECASE)
# Lines shaped like an entry that are not tools: the ReAct format's own lines, and a description's sections.
_NOT_ENTRIES = frozenset({"question", "thought", "action", "observation", "answer", "begin", "args", "arguments",
                          "returns", "return", "raises", "example", "examples", "note", "notes", "usage",
                          "parameters", "input", "output"})
_PARAMETER = re.compile(r"[ \t]*\*{0,2}(" + _NAME + r")")
# Tools read from one prompt, and declared per check: 40,000 listed took seconds to read and declare; a real agent
# lists tens (OpenAI takes 128 tools). A call to a tool listed past them is undeclared.
MAX_PROMPT_TOOLS = 1_000
TEXT_INPUT = "tool_input"  # what LangChain names the one text input of a tool declared without arguments
# The tools read from each prompt, kept: an agent resends the same system prompt every step, and most requests
# without `tools` list none. Bounded by bytes (a prompt may be 4 MiB): a prompt over PROMPT_TOOLS_TEXT_BYTES is read
# each time rather than kept.
PROMPT_TOOLS_BYTES = 16 * 2**20
PROMPT_TOOLS_TEXT_BYTES = 2**20
_PROMPT_TOOL_BYTES = 250  # a PromptTool, its span and its slot in the tuple, beside its two strings


class PromptTool(NamedTuple):
    name: str
    text_input: str  # the argument a plain-text `Action Input:` goes under
    span: tuple[int, int]  # the list it was read from, in the prompt's text


def prompt_tools(text: str) -> list[PromptTool]:
    """The tools a ReAct prompt declares, in order, each name once (its first list wins), at most MAX_PROMPT_TOOLS
    (the lists are read no further)."""
    return list(_prompt_tools(text))


_prompt_memo: SizedMemo[str, tuple[PromptTool, ...]] = SizedMemo(1024, PROMPT_TOOLS_BYTES)


def _prompt_tools(text: str) -> tuple[PromptTool, ...]:
    """`_read_prompt_tools`, kept per prompt text (`_prompt_memo`, up to PROMPT_TOOLS_BYTES)."""
    size = sys.getsizeof(text)
    if size > PROMPT_TOOLS_TEXT_BYTES:
        return _read_prompt_tools(text)
    found = _prompt_memo.entries.get(text)
    if found is None:
        found = _read_prompt_tools(text)
        _prompt_memo.put(text, found, size + sum(_PROMPT_TOOL_BYTES + sys.getsizeof(tool.name)
                                                 + sys.getsizeof(tool.text_input) for tool in found))
    return found


def _read_prompt_tools(text: str) -> tuple[PromptTool, ...]:
    lowered = text.lower()
    # The literals every marker holds, tested before the case-insensitive regex (which costs ~30 ns per character).
    if all(marker not in lowered for marker in ("tools", "should be one of", "(one of")) \
            or _PROMPT_MARKERS.search(text) is None:
        return ()
    found: dict[str, PromptTool] = {}
    # Where LlamaIndex's `Tool Args:` lines are, found once: an entry's end is looked up, not searched for again.
    args_lines = [m.start() for m in _ENTRY_ARGS.finditer(text)] if "Tool Args:" in text else []
    read_to = 0  # a header inside what an earlier one's list took (a JSON value's text) is not read again
    for header in _TOOLS_HEADER.finditer(text):
        if len(found) >= MAX_PROMPT_TOOLS:
            return tuple(found.values())
        if header.start() < read_to:
            continue
        start = header.start() + len(header.group()) - len(header.group().lstrip())  # not the space before it
        tools, read_to = _header_tools(text, start, header.end(), args_lines, MAX_PROMPT_TOOLS - len(found))
        for tool in tools:
            found.setdefault(tool.name, tool)
    for one_of in _ONE_OF.finditer(text):
        group = 1 if one_of.group(1) is not None else 2
        names = [n.strip().strip("`'\"") for n in one_of.group(group).split(",")]
        if names and all(re.fullmatch(_NAME, n) for n in names):  # else a template's `[{tool_names}]`, or prose
            for name in names:
                if len(found) >= MAX_PROMPT_TOOLS:
                    break
                found.setdefault(name, PromptTool(name, TEXT_INPUT, one_of.span(group)))
    return tuple(found.values())


def _header_tools(text: str, start: int, at: int, args_lines: list[int], room: int) -> tuple[list[PromptTool], int]:
    """The tools listed after a tools header ending at `at`, in whichever shape the list has (the first `room` of
    them), and where what was read ends."""
    first = skip_space(text, at)
    if text[first:first + 1] in ("[", "{"):
        return _spec_tools(text, start, first, room)
    if _NAMED_ENTRY.match(text, first):
        tools = _named_tools(text, start, first, args_lines, room)
    else:
        tools = _listed_tools(text, start, at, room)
    return tools, tools[-1].span[1] if tools else at


def _spec_tools(text: str, start: int, at: int, room: int) -> tuple[list[PromptTool], int]:
    """A JSON array (or object) of tool specifications at `at`: the objects with a "name" and a key that
    describes a tool (OpenAI's `{"type": "function", "function": {...}}` too). Other JSON declares nothing."""
    read = read_value(text, at)
    if read is None:
        return [], at
    value, end, _ = read
    tools: list[PromptTool] = []
    for item in value if isinstance(value, list) else [value]:
        if len(tools) >= room:
            break
        if isinstance(item, dict) and isinstance(item.get("function"), dict):
            item = item["function"]
        name = item.get("name") if isinstance(item, dict) else None
        if isinstance(name, str) and re.fullmatch(_NAME, name) and not _SPEC_KEYS.isdisjoint(item):
            parameters = next((item[key] for key in ("parameters", "arguments", "args", "input_schema")
                               if key in item), None)
            tools.append(PromptTool(name, _spec_input(parameters), (start, end)))
    return tools, end


def _named_tools(text: str, start: int, at: int, args_lines: list[int], room: int) -> list[PromptTool]:
    """LlamaIndex's `> Tool Name: X` entries from `at` on, each ended by its `Tool Args:` line (a JSON schema;
    the description between may run over several lines)."""
    entries: list[tuple[str, str]] = []
    end = at
    entry = _NAMED_ENTRY.match(text, at)
    while entry is not None and len(entries) < room:
        i = bisect_left(args_lines, entry.end())
        if i == len(args_lines):
            break  # no entry's end: not this shape
        args = _ENTRY_ARGS.match(text, args_lines[i])
        if args is None:
            break
        read = read_value(args.group(1), 0) if args.group(1).startswith("{") else None
        entries.append((entry.group(1), _spec_input(read[0] if read else None)))
        end = args.end()
        entry = _NAMED_ENTRY.match(text, skip_space(text, end))
    return [PromptTool(name, text_input, (start, end)) for name, text_input in entries]


def _spec_input(parameters: Any) -> str:
    """The one parameter a specification declares (a JSON schema's properties, or InjecAgent's list of
    `{"name": ...}`): a plain-text input goes under it. LangChain's `tool_input` otherwise."""
    if isinstance(parameters, dict) and isinstance(parameters.get("properties"), dict):
        names = list(parameters["properties"])
    elif isinstance(parameters, list):
        names = [p.get("name") for p in parameters if isinstance(p, dict)]
    else:
        return TEXT_INPUT
    return names[0] if len(names) == 1 and isinstance(names[0], str) and re.fullmatch(_NAME, names[0]) else TEXT_INPUT


def _listed_tools(text: str, start: int, at: int, room: int) -> list[PromptTool]:
    """The entries after a tools header at `at`: lines of the entry shapes, each maybe followed by lines that
    continue its description (indented, or right after it); the list ends at a blank line followed by neither an
    entry nor an indented line, or at a line that is neither."""
    entries: list[tuple[str, str]] = []
    end = at
    blank = True  # before the first entry, blank lines are skipped
    indent = -1  # the first entry's: a line indented deeper continues a description (its `Args:` section)
    line_break = text.find("\n", at)
    for line_start, line_end in _lines(text, len(text) if line_break < 0 else line_break + 1):
        content = text[line_start:line_end]
        if not content.strip():
            blank = True
            continue
        entry = _TOOL_ENTRY.match(content)
        depth = len(content) - len(content.lstrip(" \t"))
        if entry is not None and entry.group(1).lower() not in _NOT_ENTRIES and (indent < 0 or depth <= indent):
            if len(entries) >= room:
                break
            indent = depth if indent < 0 else indent
            entries.append((entry.group(1), _text_input(entry.group(2))))
        elif not entries or not (depth > indent or not blank):
            break  # the first line is no entry, or a new paragraph begins
        elif entry is not None and not blank and entry.group(1).lower() in ("question", "thought", "action"):
            break  # the ReAct format right after the list
        end, blank = line_end, False
    span = (start, end)
    return [PromptTool(name, text_input, span) for name, text_input in entries]


def _lines(text: str, at: int) -> Iterator[tuple[int, int]]:
    while at < len(text):
        stop = text.find("\n", at)
        stop = len(text) if stop < 0 else stop
        yield at, stop
        at = stop + 1


def _text_input(arguments: str | None) -> str:
    """The one parameter a `name(query: str)` signature names; LangChain's `tool_input` otherwise."""
    if not arguments:
        return TEXT_INPUT
    parts, depth, current = [], 0, []
    for char in arguments[1:-1]:
        depth += char in "([{"
        depth -= char in ")]}"
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    names = [m.group(1) for m in map(_PARAMETER.match, parts) if m is not None and m.group(1) not in ("self",)]
    return names[0] if len(names) == 1 else TEXT_INPUT
