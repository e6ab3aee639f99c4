"""Pythonic tool calls (Llama 3.2, ToolACE...): `[get_weather(city="Paris"), get_time(tz="CET")]`.

vLLM parses the list only when it is the entire output; we find it anywhere, and also accept an output
that is one bare call (the model forgot the brackets).
"""

from __future__ import annotations

import re

from guardrails.toolparse.base import BoundedParser, Budget, RecoveredCall, Schemas, new_call, register
from guardrails.toolparse.blocks import rskip_space, skip_space
from guardrails.toolparse.jsoncalls import with_block
from guardrails.toolparse.pycalls import CALL_HEAD, call_list, one_call

_LIST_START = re.compile(r"\[\s*[A-Za-z_][\w.]*\s*\(")


@register
class PythonicParser(BoundedParser):
    family = "pythonic"
    bare = True
    markers = ("(",)  # in every pythonic call; `applies` below is the full test

    def applies(self, text: str) -> bool:
        return "(" in text and ("[" in text or text.rstrip().endswith(")"))

    def read(self, text: str, schemas: Schemas | None, budget: Budget) -> list[RecoveredCall]:
        calls: list[RecoveredCall] = []
        i = 0
        for start in _LIST_START.finditer(text):
            if start.start() < i:
                continue
            if not budget.take(start.start()):
                break
            found, i = call_list(self.family, text, start.start(), len(text), schemas, budget)
            calls += with_block(found, (start.start(), i))
            if budget.unread is not None:
                break
        if not calls and budget.unread is None:  # the whole output may be one call without its brackets
            head = CALL_HEAD.match(text, skip_space(text, 0))
            text_end = rskip_space(text, len(text)) if head else 0
            if head and text.endswith(")", 0, text_end):
                draft, end = one_call(self.family, text, head, len(text), schemas)
                if end == text_end:
                    calls.append(new_call(draft))
        return calls

