"""InternLM 2.5: `<|action_start|><|plugin|>\n{"name": ..., "parameters": {...}}<|action_end|>`."""

from __future__ import annotations

from guardrails.toolparse.base import BoundedParser, Budget, RecoveredCall, Schemas, register
from guardrails.toolparse.blocks import skip_space, tagged_blocks
from guardrails.toolparse.jsoncalls import call_objects, with_block


@register
class InternLMParser(BoundedParser):
    family = "internlm"
    markers = ("<|plugin|>",)

    def read(self, text: str, schemas: Schemas | None, budget: Budget) -> list[RecoveredCall]:
        calls: list[RecoveredCall] = []
        for opener, body, body_end, block_end, _, closed in tagged_blocks(text, "<|plugin|>", "<|action_end|>",
                                                                          stray_close=False, limit=budget.left + 1):
            if text.endswith("<|action_start|>", 0, opener):
                opener -= len("<|action_start|>")
            if not budget.take(opener):
                break
            start = skip_space(text, body, body_end)
            found, after = call_objects(self.family, text, start, body_end, separators="", budget=budget)
            if found:
                calls += with_block(found, (opener, block_end if closed and budget.unread is None else after))
            if budget.unread is not None:
                break
        return calls
