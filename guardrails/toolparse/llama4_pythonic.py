"""Llama 4 pythonic: `<|python_start|>[get_weather(city="Paris")]<|python_end|>`."""

from __future__ import annotations

from guardrails.toolparse.base import BoundedParser, Budget, RecoveredCall, Schemas, register
from guardrails.toolparse.blocks import skip_space, tagged_blocks
from guardrails.toolparse.jsoncalls import with_block
from guardrails.toolparse.pycalls import call_list


@register
class Llama4PythonicParser(BoundedParser):
    family = "llama4_pythonic"
    markers = ("<|python_start|>",)

    def read(self, text: str, schemas: Schemas | None, budget: Budget) -> list[RecoveredCall]:
        calls: list[RecoveredCall] = []
        for block_start, body, body_end, block_end, _, closed in tagged_blocks(text, "<|python_start|>",
                                                                               "<|python_end|>", stray_close=False,
                                                                               limit=budget.left + 1):
            if not budget.take(block_start):
                break
            start = skip_space(text, body, body_end)
            if not text.startswith("[", start):
                continue
            found, after = call_list(self.family, text, start, body_end, schemas, budget)
            if budget.unread is not None:  # stopped inside the list: the block ends after the last call read
                calls += with_block(found, (block_start, after))
                break
            calls += with_block(found, (block_start, block_end if closed else after))
        return calls
