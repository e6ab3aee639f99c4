"""Salesforce xLAM: a bare JSON array of calls `[{"name": ..., "arguments": {...}}]`, alone or in a json
fence, after `</think>`, `[TOOL_CALLS]` or `<tool_call>`."""

from __future__ import annotations

import re

from guardrails.toolparse.base import RecoveredCall, Schemas, ToolParser, register
from guardrails.toolparse.jsoncalls import call_array, with_block

_ARRAY = re.compile(r"""\[\s*\{\s*["']name["']\s*:""")


@register
class XLAMParser(ToolParser):
    family = "xlam"
    bare = True
    markers = ('"name"', "'name'")

    def parse(self, text: str, schemas: Schemas | None = None) -> list[RecoveredCall]:
        calls: list[RecoveredCall] = []
        covered = 0
        for match in _ARRAY.finditer(text):
            if match.start() < covered:
                continue
            found, after = call_array(self.family, text, match.start(), fallback=False)
            if found and all("no_arguments" not in draft[-1] for draft in found):  # (a draft ends with its repairs)
                calls += with_block(found, (match.start(), after))
                covered = after
        return calls
