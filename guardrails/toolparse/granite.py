"""Granite 3.x: `<|tool_call|>[{"name": ..., "arguments": {...}}]`; Granite 3.1 may write
`<tool_call>[...]`."""

from __future__ import annotations

import re

from guardrails.toolparse.base import RecoveredCall, Schemas, ToolParser, by_span, register
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
        if "[" not in text or _TAG_ARRAY.search(text) is None:
            return calls  # (the character test first: it turns away most other bodies at a fraction of the cost)
        for tag in _TAGS:
            i = text.find(tag)
            while i >= 0:
                body = skip_space(text, i + len(tag))
                if text.startswith("[", body):
                    found, after = call_array(self.family, text, body, _bound(text, body))
                    close = skip_space(text, after)
                    if text.startswith("</tool_call>", close):
                        after = close + len("</tool_call>")
                    calls += with_block(found, (i, after))
                i = text.find(tag, body)
        if len(calls) > 1:
            calls.sort(key=by_span)
        return calls


def _bound(text: str, start: int) -> int:
    """Where the next tag starts (or the end of text)."""
    first, second = text.find(_TAGS[0], start), text.find(_TAGS[1], start)
    if first < 0:
        return second if second >= 0 else len(text)
    return first if second < 0 else min(first, second)
