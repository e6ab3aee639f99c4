"""Salesforce xLAM: a bare JSON array of calls `[{"name": ..., "arguments": {...}}]`, alone or in a json
fence, after `</think>`, `[TOOL_CALLS]` or `<tool_call>`."""

from __future__ import annotations

import re

from guardrails.toolparse.base import BoundedParser, Budget, RecoveredCall, Schemas, register
from guardrails.toolparse.jsoncalls import call_array, with_block

# A call's name is a string: an object whose name is anything else reads as no call, so it is not tried (the
# nesting `[{"name": [{"name": ...` was read to the reader's depth limit from every level: ~1 ms per candidate).
_ARRAY = re.compile(r"""\[\s*\{\s*["']name["']\s*:\s*["']""")


@register
class XLAMParser(BoundedParser):
    family = "xlam"
    bare = True
    markers = ('"name"', "'name'")

    def read(self, text: str, schemas: Schemas | None, budget: Budget) -> list[RecoveredCall]:
        calls: list[RecoveredCall] = []
        covered = 0
        for match in _ARRAY.finditer(text):
            if match.start() < covered:
                continue
            if not budget.take(match.start()):
                break
            found, after = call_array(self.family, text, match.start(), fallback=False, budget=budget)
            if found and all("no_arguments" not in draft[-1] for draft in found):  # (a draft ends with its repairs)
                calls += with_block(found, (match.start(), after))
                covered = after
            if budget.unread is not None:
                break
        return calls
