"""Gemma 4: `<|tool_call>call:NAME{key:<|"|>text<|"|>,n:2,obj:{...}}<tool_call|>`."""

from __future__ import annotations

import re
from functools import cache
from itertools import islice

from guardrails.toolparse.base import BoundedParser, Budget, RecoveredCall, Schemas, new_call, register
from guardrails.toolparse.blocks import rskip_space
from guardrails.toolparse.lenient import LenientReader, NotAValue

_CALL = re.compile(r"call:([A-Za-z_][\w.\-]*)\s*(?=\{)")
_KEY = r"[A-Za-z_][\w.\-]*"  # a bare key, as the tolerant reader reads one


@cache
def _plain_object(delimiter: str) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """`{key:<d>text<d>,key:<d>text<d>}` with nothing else (no space, no other kind of value), and one of its
    members. Most calls are written so; two matches read them as the tolerant reader would, at a fraction of
    its cost."""
    d, first, rest = re.escape(delimiter), re.escape(delimiter[0]), re.escape(delimiter[1:])
    value = f"[^{first}]*+(?:{first}(?!{rest})[^{first}]*+)*+"  # up to the next delimiter, as the reader finds it
    member = f"{_KEY}[:=]{d}{value}{d}"
    return re.compile(rf"\{{(?:{member},)*{member}\}}"), re.compile(f"({_KEY})[:=]{d}({value}){d}")


def call_syntax(family: str, text: str, open_: str, close: str, delimiter: str, budget: Budget) -> list[RecoveredCall]:
    """Calls written `open_ call:NAME{k:<delim>v<delim>,...} close` (the Gemma call syntax)."""
    calls = []
    heads = list(islice(_CALL.finditer(text), budget.left + 1))
    last_close = text.rfind(close)  # (a close after a head: one search, not one to the end per head)
    for k, head in enumerate(heads):
        start = head.start()
        opened = text.endswith(open_, 0, start)
        if opened:
            start -= len(open_)
        if not budget.take(start):
            break
        if not opened and last_close < head.end():
            continue  # neither marker: `call:x{...}` in prose is not a call
        next_head = heads[k + 1].start() if k + 1 < len(heads) else len(text)
        close_at = text.find(close, head.end(), next_head)
        bound = close_at if close_at >= 0 else next_head
        if bound == next_head and k + 1 < len(heads) and text.endswith(open_, 0, next_head):
            bound -= len(open_)
        plain_object, plain_member = _plain_object(delimiter)
        plain = plain_object.match(text, head.end(), bound)
        if plain is not None:
            after, repairs = plain.end(), set()
            arguments = dict(plain_member.findall(text, head.end(), after))
        else:
            reader = LenientReader(text, bound, delimiter=delimiter, bare_keys=True)
            try:
                arguments, after = reader.value(head.end())
            except (NotAValue, RecursionError):
                continue
            repairs = set(reader.repairs)
        if close_at < 0 and after >= rskip_space(text, len(text)):
            repairs.add("truncated")
        end = close_at + len(close) if close_at >= 0 else after
        span = (start, end)
        calls.append(new_call((family, head.group(1), arguments, True, span, head.span(1), (head.end(), after), span,
                               None, tuple(sorted(repairs)) if repairs else ())))
    return calls


@register
class Gemma4Parser(BoundedParser):
    family = "gemma4"
    markers = ("<|tool_call>", "<tool_call|>")

    def read(self, text: str, schemas: Schemas | None, budget: Budget) -> list[RecoveredCall]:
        return call_syntax(self.family, text, "<|tool_call>", "<tool_call|>", '<|"|>', budget)
