"""Hermes 2/3, Qwen2.5, QwQ, Qwen3 JSON: `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`."""

from __future__ import annotations

import re

from guardrails.toolparse.base import BoundedParser, Budget, RecoveredCall, Schemas, register
from guardrails.toolparse.blocks import skip_space, tagged_blocks
from guardrails.toolparse.jsoncalls import call_objects, with_block

_CALL_START = re.compile(r"""\{\s*["']name["']""")
# What any Hermes call needs: an object right after `<tool_call>`, or a call object before a stray close.
# Texts of the families that share the tags (Qwen3-Coder, GLM, Granite) are turned away by these searches
# (two, each with a literal prefix the regex engine finds fast).
_OPENED_CALL = re.compile(r"<tool_call>\s*\{")


@register
class HermesParser(BoundedParser):
    family = "hermes"
    markers = ("<tool_call>", "</tool_call>")

    def read(self, text: str, schemas: Schemas | None, budget: Budget) -> list[RecoveredCall]:
        calls: list[RecoveredCall] = []
        if "{" not in text or (_OPENED_CALL.search(text) is None and _CALL_START.search(text) is None):
            return calls  # (the character test first: it turns away the XML and GLM bodies at a fraction of the cost)
        for block_start, body, body_end, block_end, opened, closed in tagged_blocks(text, "<tool_call>",
                                                                                    "</tool_call>",
                                                                                    limit=budget.left + 1):
            if not budget.take(block_start):
                break
            if opened:
                start = skip_space(text, body, body_end)
            else:  # no start tag: the call object is the last thing before `</tool_call>`
                found = _CALL_START.search(text, body, body_end)
                if found is None:
                    continue
                start = found.start()
            if start >= body_end or text[start] != "{":
                continue  # another family's body (XML, GLM, a Granite array)
            found_calls, after = call_objects(self.family, text, start, body_end, separators="", budget=budget)
            if budget.unread is not None:  # stopped inside the block: it ends after the last object read
                calls += with_block(found_calls, (block_start if opened else start, after))
                break
            if found_calls:
                calls += with_block(found_calls, (block_start if opened else start, block_end if closed else after))
        return calls
