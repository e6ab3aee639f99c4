"""Phi-4-mini: `functools[{"name": ..., "arguments": {...}}]`."""

from __future__ import annotations

from guardrails.toolparse.base import BoundedParser, Budget, RecoveredCall, Schemas, register
from guardrails.toolparse.jsoncalls import call_array, with_block

_TAG = "functools"


@register
class Phi4MiniParser(BoundedParser):
    family = "phi4_mini_json"
    markers = ("functools[",)

    def read(self, text: str, schemas: Schemas | None, budget: Budget) -> list[RecoveredCall]:
        calls: list[RecoveredCall] = []
        i = text.find("functools[")
        while i >= 0:
            if not budget.take(i):
                break
            bound = text.find("functools[", i + 1)
            found, after = call_array(self.family, text, i + len(_TAG), bound if bound >= 0 else len(text),
                                      budget=budget)
            calls += with_block(found, (i, after))
            if budget.unread is not None:
                break
            i = bound
        return calls
