"""DeepSeek V3.1: `<｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{...}<｜tool▁call▁end｜>`."""

from __future__ import annotations

import re

from guardrails.toolparse.base import RecoveredCall, Schemas, ToolParser, register
from guardrails.toolparse.deepseek_v3 import CALL_BEGIN, SEP, call_blocks
from guardrails.toolparse.jsoncalls import named_call

_HEAD = re.compile(r"\s*(?!function\s*" + SEP + r")([\w.\-]+)\s*" + SEP)
_ANY_HEAD = re.compile(CALL_BEGIN + _HEAD.pattern)  # V3 texts (`begin function sep`) are turned away at once


@register
class DeepSeekV31Parser(ToolParser):
    family = "deepseek_v31"
    markers = (CALL_BEGIN,)

    def parse(self, text: str, schemas: Schemas | None = None) -> list[RecoveredCall]:
        calls: list[RecoveredCall] = []
        if _ANY_HEAD.search(text) is None:
            return calls
        for block_start, body, body_end, block_end, _, closed in call_blocks(text):
            head = _HEAD.match(text, body, body_end)
            if head is None:
                continue
            calls.append(named_call(self.family, text, head.span(1), head.end(), body_end,
                                    block_start=block_start, closed_end=block_end if closed else None))
        return calls
