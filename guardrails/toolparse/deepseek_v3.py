"""DeepSeek V3: `<｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\n```json\n{...}\n```<｜tool▁call▁end｜>`."""

from __future__ import annotations

import re
from collections.abc import Callable

from guardrails.toolparse.base import BoundedParser, Budget, RecoveredCall, Schemas, register
from guardrails.toolparse.blocks import Block, tagged_blocks
from guardrails.toolparse.jsoncalls import named_call

CALL_BEGIN, CALL_END, SEP = "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>", "<｜tool▁sep｜>"
SECTION_END = "<｜tool▁calls▁end｜>"
_V3_HEAD = re.compile(r"\s*function\s*" + SEP + r"\s*([\w.\-]+)[ \t]*\n?(?:\s*```(?:json)?\s*)?")
# A V3 call needs `begin function sep` (V3.1 texts, `begin NAME sep`, are turned away with one search).
_ANY_HEAD = re.compile(CALL_BEGIN + r"\s*function\s*" + SEP)


def call_blocks(text: str, limit: int | None = None) -> list[Block]:
    return tagged_blocks(text, CALL_BEGIN, CALL_END, stray_close=False, terminators=(SECTION_END,), limit=limit)


def fence_end(text: str, start: int, end: int) -> int:
    """Where the arguments end: before a closing ``` fence when there is one."""
    fence = text.rfind("```", start, end)
    return fence if fence >= 0 else end


@register
class DeepSeekV3Parser(BoundedParser):
    family = "deepseek_v3"
    markers = (CALL_BEGIN,)

    def read(self, text: str, schemas: Schemas | None, budget: Budget) -> list[RecoveredCall]:
        if _ANY_HEAD.search(text) is None:
            return []
        return headed_calls(self.family, text, _V3_HEAD, fence_end, budget)


def headed_calls(family: str, text: str, head_pattern: re.Pattern[str],
                 arguments_end: Callable[[str, int, int], int], budget: Budget) -> list[RecoveredCall]:
    """One call per begin/end block whose body opens with `head_pattern` (its group 1 is the name); the
    arguments run from the head's end to `arguments_end(text, head_end, body_end)`. Shared by V3 and V3.1,
    whose blocks differ only in the head and in the fence V3 wraps the arguments in."""
    calls: list[RecoveredCall] = []
    for block_start, body, body_end, block_end, _, closed in call_blocks(text, budget.left + 1):
        if not budget.take(block_start):
            break
        head = head_pattern.match(text, body, body_end)
        if head is None:
            continue
        calls.append(named_call(family, text, head.span(1), head.end(), arguments_end(text, head.end(), body_end),
                                block_start=block_start, closed_end=block_end if closed else None))
    return calls
