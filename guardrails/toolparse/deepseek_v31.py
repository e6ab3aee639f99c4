"""DeepSeek V3.1: `<｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{...}<｜tool▁call▁end｜>`."""

from __future__ import annotations

import re

from guardrails.toolparse.base import BoundedParser, Budget, RecoveredCall, Schemas, register
from guardrails.toolparse.deepseek_v3 import CALL_BEGIN, SEP, headed_calls

_HEAD = re.compile(r"\s*(?!function\s*" + SEP + r")([\w.\-]+)\s*" + SEP)
_ANY_HEAD = re.compile(CALL_BEGIN + _HEAD.pattern)  # V3 texts (`begin function sep`) are turned away at once


@register
class DeepSeekV31Parser(BoundedParser):
    family = "deepseek_v31"
    markers = (CALL_BEGIN,)

    def read(self, text: str, schemas: Schemas | None, budget: Budget) -> list[RecoveredCall]:
        if _ANY_HEAD.search(text) is None:
            return []
        return headed_calls(self.family, text, _HEAD, _body_end, budget)


def _body_end(text: str, head_end: int, body_end: int) -> int:
    return body_end  # V3.1 arguments are bare JSON up to the end marker
