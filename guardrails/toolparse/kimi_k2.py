"""Kimi K2: `<|tool_call_begin|>functions.NAME:IDX<|tool_call_argument_begin|>{...}<|tool_call_end|>`,
inside `<|tool_calls_section_begin|>...<|tool_calls_section_end|>`. The header is the call id."""

from __future__ import annotations

import re

from guardrails.toolparse.base import BoundedParser, Budget, RecoveredCall, Schemas, register
from guardrails.toolparse.blocks import tagged_blocks
from guardrails.toolparse.jsoncalls import named_call

_HEADER = re.compile(r"\s*((?:functions\.)?([\w.\-]+?)(?::\d+)?)\s*<\|tool_call_argument_begin\|>")


@register
class KimiK2Parser(BoundedParser):
    family = "kimi_k2"
    markers = ("<|tool_call_begin|>",)

    def read(self, text: str, schemas: Schemas | None, budget: Budget) -> list[RecoveredCall]:
        calls = []
        for block_start, body, body_end, block_end, _, closed in tagged_blocks(
                text, "<|tool_call_begin|>", "<|tool_call_end|>", stray_close=False,
                terminators=("<|tool_calls_section_end|>",), limit=budget.left + 1):
            if not budget.take(block_start):
                break
            header = _HEADER.match(text, body, body_end)
            if header is None:
                continue
            calls.append(named_call(self.family, text, header.span(2), header.end(), body_end,
                                    block_start=block_start, closed_end=block_end if closed else None,
                                    call_id=header.group(1)))
        return calls
