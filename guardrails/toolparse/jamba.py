"""AI21 Jamba: `<tool_calls>[{"name": ..., "arguments": {...}}]</tool_calls>`."""

from __future__ import annotations

from guardrails.toolparse.base import BoundedParser, Budget, RecoveredCall, Schemas, register
from guardrails.toolparse.blocks import tagged_blocks
from guardrails.toolparse.jsoncalls import call_array, with_block


@register
class JambaParser(BoundedParser):
    family = "jamba"
    markers = ("<tool_calls>", "</tool_calls>")

    def read(self, text: str, schemas: Schemas | None, budget: Budget) -> list[RecoveredCall]:
        calls: list[RecoveredCall] = []
        for block_start, body, body_end, block_end, opened, closed in tagged_blocks(text, "<tool_calls>",
                                                                                    "</tool_calls>",
                                                                                    limit=budget.left + 1):
            if not budget.take(block_start):
                break
            start = body if opened else text.rfind("[{", body, body_end)
            if start < 0:
                continue
            found, after = call_array(self.family, text, start, body_end, budget=budget)
            stopped = budget.unread is not None  # inside the block: it ends after the last object read
            if found:
                calls += with_block(found, (block_start if opened else start,
                                            block_end if closed and not stopped else after))
            if stopped:
                break
        return calls
