"""Granite 20B function calling: `<function_call> {"name": ..., "arguments": {...}}`, repeated."""

from __future__ import annotations

from guardrails.toolparse.base import BoundedParser, Budget, RecoveredCall, Schemas, register
from guardrails.toolparse.blocks import skip_space, tagged_blocks
from guardrails.toolparse.jsoncalls import call_objects, with_block


@register
class Granite20bFCParser(BoundedParser):
    family = "granite_20b_fc"
    markers = ("<function_call>",)

    def read(self, text: str, schemas: Schemas | None, budget: Budget) -> list[RecoveredCall]:
        calls: list[RecoveredCall] = []
        for block_start, body, body_end, *_ in tagged_blocks(text, "<function_call>", None, limit=budget.left + 1):
            if not budget.take(block_start):
                break
            start = skip_space(text, body, body_end)
            found, after = call_objects(self.family, text, start, body_end, separators="", budget=budget)
            if found:
                calls += with_block(found, (block_start, after))
            if budget.unread is not None:
                break
        return calls
