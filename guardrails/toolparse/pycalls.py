"""Shared reading of Python-style call lists: `[get_weather(city="Paris"), search(q='x', n=2)]`."""

from __future__ import annotations

import re
from typing import Any

from guardrails.toolparse.base import Budget, Draft, Schemas
from guardrails.toolparse.blocks import skip_space
from guardrails.toolparse.lenient import read_value

CALL_HEAD = re.compile(r"([A-Za-z_][\w.]*)\s*\(")
_KEYWORD = re.compile(r"([A-Za-z_]\w*)\s*=(?!=)")
_OPENERS, _CLOSERS = "([{", ")]}"
_EXPRESSION_STOP = re.compile(r"[()\[\]{},]")


def call_list(family: str, text: str, start: int, bound: int, schemas: Schemas | None,
              budget: Budget | None = None) -> tuple[list[Draft], int]:
    """Read the list of calls whose `[` is at `start` (their drafts, see `jsoncalls.with_block`); ([], start)
    when it is not one. Each call after the first (which the list paid for) is a candidate of `budget`: past it,
    the calls read so far."""
    calls: list[Draft] = []
    i = start + 1
    read_to = start  # the end of the last call read
    while True:
        i = skip_space(text, i, bound)
        if i >= bound:
            break
        if text[i] == "]":
            i += 1
            break
        if text[i] == ",":
            i += 1
            continue
        head = CALL_HEAD.match(text, i, bound)
        if head is None:
            return [], start  # `[f(x) for x in y]`, `[f(a) + 1]`: an expression, not a call list
        if calls and budget is not None and not budget.take(i):
            return calls, read_to
        call, i = one_call(family, text, head, bound, schemas)
        calls.append(call)
        read_to = i
    return calls, (i if calls else start)


def one_call(family: str, text: str, head: re.Match[str], bound: int, schemas: Schemas | None) -> tuple[Draft, int]:
    """Read `name(k=v, ...)` from its head match (a draft); tolerates a missing `)` and truncation."""
    arguments: dict[str, Any] = {}
    positional: list[Any] = []
    repairs: set[str] = set()
    i = head.end()
    args_end = i
    while True:
        i = skip_space(text, i, bound)
        if i >= bound:
            repairs.update(("unclosed", "truncated") if bound >= len(text.rstrip()) else ("unclosed",))
            break
        char = text[i]
        if char == ")":
            i += 1
            break
        if char == ",":
            i += 1
            continue
        if char in "]}":
            repairs.add("unclosed")
            break
        keyword = _KEYWORD.match(text, i, bound)
        value_start = skip_space(text, keyword.end(), bound) if keyword else i
        value, i = _argument(text, value_start, bound, repairs)
        args_end = i
        if keyword:
            arguments[keyword.group(1)] = value
        else:
            positional.append(value)
    if positional:
        repairs.add("positional_arguments")
        arguments.update(_name_positional(positional, schemas, head.group(1), arguments))
    span = (head.start(), i)
    return (family, head.group(1), arguments, True, span, head.span(1), (head.end(), args_end), span, None,
            tuple(sorted(repairs)) if repairs else ()), i


def _argument(text: str, start: int, bound: int, repairs: set[str]) -> tuple[Any, int]:
    """A literal value; anything else (`1+1`, a variable) is kept as its source text."""
    read = read_value(text, start, bound)
    if read is not None:
        value, after, repaired = read
        following = skip_space(text, after, bound)
        if following >= bound or text[following] in ",)]":
            if repaired:
                repairs.update(repaired - {"python_literals", "single_quotes"})
            return value, after
    end = _expression_end(text, start, bound)
    repairs.add("non_literal")
    return text[start:end].strip(), end


def _expression_end(text: str, i: int, bound: int) -> int:
    """Where the expression at `i` ends: at a comma or an unmatched closer (the regex skips the rest)."""
    depth = 0
    for stop in _EXPRESSION_STOP.finditer(text, i, bound):
        char = stop.group()
        if char in _OPENERS:
            depth += 1
        elif depth == 0:
            return stop.start()
        elif char in _CLOSERS:
            depth -= 1
    return bound


def _name_positional(values: list[Any], schemas: Schemas | None, tool: str,
                     named: dict[str, Any]) -> dict[str, Any]:
    """Positional arguments take the declared parameter names in order, else `_args`."""
    schema = schemas.get(tool) if schemas else None
    properties = schema.get("properties") if isinstance(schema, dict) else None
    names = [p for p in properties if p not in named] if isinstance(properties, dict) else []
    if len(names) >= len(values):
        return dict(zip(names, values, strict=False))
    return {"_args": values}
