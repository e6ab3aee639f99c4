"""Phi-4-mini: `functools[{"name": ..., "arguments": {...}}]`."""

from __future__ import annotations

from guardrails.toolparse.base import RecoveredCall, Schemas, ToolParser, register
from guardrails.toolparse.jsoncalls import call_array, with_block

_TAG = "functools"


@register
class Phi4MiniParser(ToolParser):
    family = "phi4_mini_json"
    markers = ("functools[",)

    def parse(self, text: str, schemas: Schemas | None = None) -> list[RecoveredCall]:
        calls: list[RecoveredCall] = []
        i = text.find("functools[")
        while i >= 0:
            bound = text.find("functools[", i + 1)
            found, after = call_array(self.family, text, i + len(_TAG), bound if bound >= 0 else len(text))
            calls += with_block(found, (i, after))
            i = bound
        return calls
