"""DeepSeek V3: `<｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\n```json\n{...}\n```<｜tool▁call▁end｜>`."""

from __future__ import annotations

import re

from guardrails.toolparse.base import RecoveredCall, Schemas, ToolParser, register
from guardrails.toolparse.blocks import Block, tagged_blocks
from guardrails.toolparse.jsoncalls import named_call

CALL_BEGIN, CALL_END, SEP = "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>", "<｜tool▁sep｜>"
SECTION_END = "<｜tool▁calls▁end｜>"
_V3_HEAD = re.compile(r"\s*function\s*" + SEP + r"\s*([\w.\-]+)[ \t]*\n?(?:\s*```(?:json)?\s*)?")
# A V3 call needs `begin function sep` (V3.1 texts, `begin NAME sep`, are turned away with one search).
_ANY_HEAD = re.compile(CALL_BEGIN + r"\s*function\s*" + SEP)


def call_blocks(text: str) -> list[Block]:
    return tagged_blocks(text, CALL_BEGIN, CALL_END, stray_close=False, terminators=(SECTION_END,))


def fence_end(text: str, start: int, end: int) -> int:
    """Where the arguments end: before a closing ``` fence when there is one."""
    fence = text.rfind("```", start, end)
    return fence if fence >= 0 else end


@register
class DeepSeekV3Parser(ToolParser):
    family = "deepseek_v3"
    markers = (CALL_BEGIN,)

    def parse(self, text: str, schemas: Schemas | None = None) -> list[RecoveredCall]:
        calls: list[RecoveredCall] = []
        if _ANY_HEAD.search(text) is None:
            return calls
        for block_start, body, body_end, block_end, _, closed in call_blocks(text):
            head = _V3_HEAD.match(text, body, body_end)
            if head is None:
                continue
            calls.append(named_call(self.family, text, head.span(1), head.end(), fence_end(text, head.end(), body_end),
                                    block_start=block_start, closed_end=block_end if closed else None))
        return calls
