"""Granite 3.x: `<|tool_call|>[{"name": ..., "arguments": {...}}]`; Granite 3.1 may write
`<tool_call>[...]`."""

from __future__ import annotations

import re

from guardrails.toolparse.base import RecoveredCall, Schemas, ToolParser, register
from guardrails.toolparse.blocks import skip_space
from guardrails.toolparse.jsoncalls import call_array, with_block

_TAGS = ("<|tool_call|>", "<tool_call>")
# A Granite call needs an array right after its tag: texts of the families that share `<tool_call>`
# (Hermes, Qwen3-Coder, GLM) are turned away with one search.
_TAG_ARRAY = re.compile(r"(?:<\|tool_call\|>|<tool_call>)\s*\[")


@register
class GraniteParser(ToolParser):
    family = "granite"
    markers = _TAGS

    def parse(self, text: str, schemas: Schemas | None = None) -> list[RecoveredCall]:
        calls: list[RecoveredCall] = []
        if _TAG_ARRAY.search(text) is None:
            return calls
        for tag in _TAGS:
            i = text.find(tag)
            while i >= 0:
                body = skip_space(text, i + len(tag))
                if text.startswith("[", body):
                    found, after = call_array(self.family, text, body, _bound(text, body))
                    if text.startswith("</tool_call>", skip_space(text, after)):
                        after = skip_space(text, after) + len("</tool_call>")
                    calls += with_block(found, (i, after))
                i = text.find(tag, body)
        return sorted(calls, key=lambda c: c.span)


def _bound(text: str, start: int) -> int:
    ends = [x for x in (text.find(t, start) for t in _TAGS) if x >= 0]
    return min(ends) if ends else len(text)
