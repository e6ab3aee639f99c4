"""Granite 3.x: `<|tool_call|>[{"name": ..., "arguments": {...}}]`; Granite 3.1 may write
`<tool_call>[...]`."""

from __future__ import annotations

import re

from guardrails.toolparse.base import BoundedParser, Budget, RecoveredCall, Schemas, by_span, register
from guardrails.toolparse.blocks import NextFind, skip_space
from guardrails.toolparse.jsoncalls import call_array, with_block

_TAGS = ("<|tool_call|>", "<tool_call>")
# A Granite call needs an array right after its tag: texts of the families that share `<tool_call>`
# (Hermes, Qwen3-Coder, GLM) are turned away with one search.
_TAG_ARRAY = re.compile(r"(?:<\|tool_call\|>|<tool_call>)\s*\[")


@register
class GraniteParser(BoundedParser):
    family = "granite"
    markers = _TAGS

    def read(self, text: str, schemas: Schemas | None, budget: Budget) -> list[RecoveredCall]:
        calls: list[RecoveredCall] = []
        if "[" not in text or _TAG_ARRAY.search(text) is None:
            return calls  # (the character test first: it turns away most other bodies at a fraction of the cost)
        # The next tag of each kind from a position: one search per tag passed, not one per call to the end of the
        # text (a text of one kind of tag scanned its whole rest for the other kind at every call).
        nexts = (NextFind(text, _TAGS[0]), NextFind(text, _TAGS[1]))
        for tag, find in zip(_TAGS, nexts, strict=True):
            i = find(0)
            while i >= 0:
                if not budget.take(i):
                    break
                body = skip_space(text, i + len(tag))
                if text.startswith("[", body):
                    found, after = call_array(self.family, text, body, _bound(nexts, body, len(text)),
                                              budget=budget)
                    close = skip_space(text, after)
                    if text.startswith("</tool_call>", close) and budget.unread is None:
                        after = close + len("</tool_call>")
                    calls += with_block(found, (i, after))
                    if budget.unread is not None:
                        break
                i = find(body)
        if budget.unread is not None:  # the other tag's calls past where this one stopped are not kept either
            calls = [call for call in calls if call.span[0] < budget.unread]
        if len(calls) > 1:
            calls.sort(key=by_span)
        return calls


def _bound(nexts: tuple[NextFind, NextFind], start: int, end: int) -> int:
    """Where the next tag starts (or the end of text)."""
    first, second = nexts[0](start), nexts[1](start)
    if first < 0:
        return second if second >= 0 else end
    return first if second < 0 else min(first, second)
