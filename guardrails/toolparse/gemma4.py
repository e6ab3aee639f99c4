"""Gemma 4: `<|tool_call>call:NAME{key:<|"|>text<|"|>,n:2,obj:{...}}<tool_call|>`."""

from __future__ import annotations

import re

from guardrails.toolparse.base import RecoveredCall, Schemas, ToolParser, register
from guardrails.toolparse.lenient import LenientReader, NotAValue

_CALL = re.compile(r"call:([A-Za-z_][\w.\-]*)\s*(?=\{)")


def call_syntax(family: str, text: str, open_: str, close: str, delimiter: str) -> list[RecoveredCall]:
    """Calls written `open_ call:NAME{k:<delim>v<delim>,...} close` (the Gemma call syntax)."""
    calls = []
    heads = list(_CALL.finditer(text))
    for k, head in enumerate(heads):
        start = head.start()
        if text.endswith(open_, 0, start):
            start -= len(open_)
        elif text.find(close, head.end()) < 0:
            continue  # neither marker: `call:x{...}` in prose is not a call
        next_head = heads[k + 1].start() if k + 1 < len(heads) else len(text)
        close_at = text.find(close, head.end(), next_head)
        bound = close_at if close_at >= 0 else next_head
        if bound == next_head and k + 1 < len(heads) and text.endswith(open_, 0, next_head):
            bound -= len(open_)
        reader = LenientReader(text, bound, delimiter=delimiter, bare_keys=True)
        try:
            arguments, after = reader.value(head.end())
        except (NotAValue, RecursionError):
            continue
        repairs = set(reader.repairs)
        if close_at < 0 and after >= len(text.rstrip()):
            repairs.add("truncated")
        end = close_at + len(close) if close_at >= 0 else after
        calls.append(RecoveredCall(
            family=family, name=head.group(1), arguments=arguments, arguments_parsed=True,
            span=(start, end), name_span=head.span(1), arguments_span=(head.end(), after), block=(start, end),
            repairs=tuple(sorted(repairs)),
        ))
    return calls


@register
class Gemma4Parser(ToolParser):
    family = "gemma4"
    markers = ("<|tool_call>", "<tool_call|>")

    def parse(self, text: str, schemas: Schemas | None = None) -> list[RecoveredCall]:
        return call_syntax(self.family, text, "<|tool_call>", "<tool_call|>", '<|"|>')
