"""Shared reading of `<function=NAME><parameter=KEY>value</parameter>...</function>` (Qwen3-Coder,
Seed-OSS), and of the same header around a JSON object, `<function=NAME>{"k": "v"}</function>` (Llama 3.1's
custom-tool format, which a model may also write where another parser is configured)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from guardrails.toolparse.base import Budget, RecoveredCall, Schemas, new_call
from guardrails.toolparse.blocks import rskip_space, skip_space
from guardrails.toolparse.lenient import read_value
from guardrails.toolparse.schema import coerce, tool_properties

_FUNCTION = re.compile(r"<function=([^>\n<]*)>?")
# A parameter and its value, which runs to the first `</parameter>` (then group 3: the value is closed) or
# `<parameter=`: one match per parameter (the runs between `<` are possessive, so a long value is one scan).
_PARAMETER = re.compile(r"<parameter=([^>\n<]*)>?([^<]*+(?:<(?!/parameter>|parameter=)[^<]*+)*+)(</parameter>)?")
_FUNCTION_END = re.compile(r"</function>|<function=|</?tool_call>|</?seed:tool_call>")
TOOL_CALL, SEED_TOOL_CALL = "<tool_call>", "<seed:tool_call>"  # the wrappers, inner first
# The wrappers' close tags after a call, inner first (always a match; `lastindex` 2: the seed one is there).
_CLOSES = re.compile(r"(\s*</tool_call>)?(\s*</seed:tool_call>)?")


def function_calls(family: str, text: str, schemas: Schemas | None, *, seed_wrapped: bool,
                   budget: Budget) -> list[RecoveredCall]:
    """The `<function=...>` calls in a `<seed:tool_call>` wrapper (`seed_wrapped`), or the others. The wrapper
    is read before the parameters, so the family that does not want a call does not parse it. Each head is a
    candidate of `budget`."""
    out = []
    for head in _FUNCTION.finditer(text):
        if not budget.take(_wrapped_start(text, head.start())):
            break
        # The wrapper tags around the call (whitespace between), inner then outer on each side; the opening
        # side first: a seed tag there settles the family before the rest is looked for.
        start = head.start()
        before = rskip_space(text, start)
        if text.endswith(TOOL_CALL, 0, before):
            start = before - len(TOOL_CALL)
            before = rskip_space(text, start)
        seed_opened = text.endswith(SEED_TOOL_CALL, 0, before)
        if seed_opened:
            if not seed_wrapped:
                continue
            start = before - len(SEED_TOOL_CALL)
        header_end = head.end()
        stop = _FUNCTION_END.search(text, header_end)
        func_end = stop.start() if stop else len(text)
        closed = stop is not None and stop.group() == "</function>"
        closes = _CLOSES.match(text, func_end + len("</function>") if closed else func_end)
        if not seed_opened and (closes.lastindex == 2) != seed_wrapped:  # type: ignore[union-attr]
            continue
        end = closes.end()  # type: ignore[union-attr]
        raw_name = head.group(1)
        name = raw_name.strip()
        name_start = head.start(1)
        if name != raw_name:
            name_start += len(raw_name) - len(raw_name.lstrip())
        repairs: set[str] = set()
        if text[header_end - 1] != ">":
            repairs.add("unclosed_header")
        arguments, args_end = _parameters(text, header_end, func_end, tool_properties(schemas, name), repairs)
        if not closed and stop is None:
            repairs.add("truncated")
        span = (start, end)
        out.append(new_call((family, name, arguments, True, span, (name_start, name_start + len(name)),
                             (header_end, args_end), span, None, tuple(sorted(repairs)) if repairs else ())))
    return out


def _wrapped_start(text: str, start: int) -> int:
    """Where a call whose `<function=` is at `start` starts: at the wrapper tags before it, if any."""
    before = rskip_space(text, start)
    if text.endswith(TOOL_CALL, 0, before):
        start = before - len(TOOL_CALL)
        before = rskip_space(text, start)
    return before - len(SEED_TOOL_CALL) if text.endswith(SEED_TOOL_CALL, 0, before) else start


def _parameters(text: str, header_end: int, func_end: int, properties: Mapping[str, Any] | None,
                repairs: set[str]) -> tuple[dict[str, Any], int]:
    """The `<parameter=KEY>value</parameter>` arguments of one call, typed by `properties`, or the JSON object
    that is its body; and where they end."""
    body = skip_space(text, header_end, func_end)
    if body < func_end and text[body] == "{":
        read = read_value(text, body, func_end)
        if read is not None and isinstance(read[0], dict):
            repairs.update(read[2])
            return read[0], read[1]
    arguments: dict[str, Any] = {}
    args_end = header_end
    for param in _PARAMETER.finditer(text, header_end, func_end):
        key, value, close = param.groups()
        args_end = param.end()
        if close is None:
            repairs.add("unclosed")
            value = value.rstrip()
        value = value.removeprefix("\n").removesuffix("\n")
        key = key.strip()
        arguments[key] = coerce(value, properties, key, repairs)
    return arguments, args_end
