"""What the two OpenAI adapters (Chat Completions and Responses) read the same way: content parts, custom tool
inputs, function declarations, `tool_choice`, chat-shaped logprobs and usage."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from guardrails.adapters.base import ExchangeBuilder
from guardrails.adapters.jsonread import expect, integer, is_mapping
from guardrails.errors import BodyError
from guardrails.exchange import LogprobSource, ToolSpec, Usage
from guardrails.logprobs.check import check_chat_sources
from guardrails.pointer import resolve

# A tuple, not a set: the part type tested against it comes from the body and may be unhashable.
TEXT_PART_TYPES = ("text", "input_text", "output_text")


class OpenAIUsageKeys(NamedTuple):
    """Where one API's usage object puts each count (the details are objects holding the named count)."""

    input: str
    output: str
    input_details: str
    output_details: str


CHAT_USAGE = OpenAIUsageKeys("prompt_tokens", "completion_tokens", "prompt_tokens_details", "completion_tokens_details")
RESPONSES_USAGE = OpenAIUsageKeys("input_tokens", "output_tokens", "input_tokens_details", "output_tokens_details")


def content_texts(content: Any, ptr: str, what: str = "message content") -> list[tuple[str, str]]:
    """The (text, pointer) runs of a message's content: a string, or the text parts of an array."""
    if isinstance(content, str):
        return [(content, ptr)]
    if content is None:
        return []
    expect(content, list, ptr, what, "a string, an array of content parts or null")
    out = []
    for j, part in enumerate(content):
        pptr = f"{ptr}/{j}"
        if isinstance(part, str):
            out.append((part, pptr))
            continue
        expect(part, Mapping, pptr, "a content part")
        kind = expect(part.get("type", "text"), str, f"{pptr}/type", "content part type")
        key = "text" if kind in TEXT_PART_TYPES else "refusal" if kind == "refusal" else None
        if key is not None:  # images, audio and files carry no text we can point into
            text = expect(part.get(key), str, f"{pptr}/{key}", f"{kind} part {key}")
            out.append((text, f"{pptr}/{key}"))
    return out


def custom_input_arguments(call: Mapping[str, Any], ptr: str, what: str) -> dict[str, str]:
    """A custom tool call's free-form `input` (not JSON) as the arguments `{"input": ...}` of the object at `ptr`
    that holds it (a Responses `custom_tool_call` item, a Chat call's `custom`): the argument path `input` then
    resolves to that `input` string. No input: no arguments."""
    text = call.get("input")
    return {} if text is None else {"input": expect(text, str, f"{ptr}/input", f"{what} input")}


def tool_spec(fn: Mapping[str, Any], pointer: str) -> ToolSpec:
    """A declared function: `fn` holds name/description/parameters/strict (chat's `function` or a flat tool), at
    `pointer`."""
    parameters = fn.get("parameters")
    schema = parameters if is_mapping(parameters) else None
    description = fn.get("description")
    return ToolSpec(name=fn["name"], parameters=schema,
                    description=description if isinstance(description, str) else "",
                    strict=fn.get("strict") is True, pointer=pointer, name_pointer=f"{pointer}/name",
                    schema_pointer=None if schema is None else f"{pointer}/parameters")


def is_forced_choice(choice: Any) -> bool:
    """`required`, a named function, or an allowed-tools list in required mode constrain decoding."""
    if choice == "required":
        return True
    if not is_mapping(choice):
        return False
    if choice.get("type") == "allowed_tools":
        allowed = choice.get("allowed_tools")
        mode = allowed.get("mode") if is_mapping(allowed) else choice.get("mode")
        return mode == "required"
    return choice.get("type") == "function" or "name" in choice or "function" in choice


def openai_usage(usage: Any, keys: OpenAIUsageKeys) -> Usage:
    """`usage` (anything: only an object is read) with its reasoning and cached counts from the details objects."""
    u = usage if is_mapping(usage) else {}
    in_details, out_details = u.get(keys.input_details), u.get(keys.output_details)
    return Usage(
        input_tokens=integer(u.get(keys.input)),
        output_tokens=integer(u.get(keys.output)),
        reasoning_tokens=integer(out_details.get("reasoning_tokens")) if is_mapping(out_details) else None,
        cached_tokens=integer(in_details.get("cached_tokens")) if is_mapping(in_details) else None,
        total_tokens=integer(u.get("total_tokens")),
    )


def read_chat_logprobs(b: ExchangeBuilder) -> None:
    """Check the response's chat-shaped logprob sources (a stream's chunks together, in one pass); a malformed
    one is left unread (`skip_logprobs`), the others are read."""
    try:
        check_chat_sources(b.logprobs)
    except BodyError:  # the rare case: find every malformed source, not only the first
        b.logprobs = [source for source in b.logprobs if _well_formed(source, b)]


def _well_formed(source: LogprobSource, b: ExchangeBuilder) -> bool:
    try:
        check_chat_sources((source,))
    except BodyError as exc:
        b.skip_logprobs(BodyError(exc.message, _present(exc.pointer or source.pointer, source)))
        return False
    return True


def _present(pointer: str, source: LogprobSource) -> str:
    """`pointer`, or for a member the entry lacks (a `token`, an alternative's `logprob`), the object that lacks it:
    a finding's pointer resolves in the body (the reason names the member)."""
    try:
        resolve(source.data, pointer[len(source.pointer):])
    except KeyError:
        return pointer.rpartition("/")[0]
    return pointer
