"""Mistral before tokenizer v11: `[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]`."""

from __future__ import annotations

import re

from guardrails.toolparse.base import BoundedParser, Budget, RecoveredCall, Schemas, register
from guardrails.toolparse.blocks import skip_space
from guardrails.toolparse.jsoncalls import call_array, call_objects, with_block

TOOL_CALLS = "[TOOL_CALLS]"
# A call list or object right after the token; v11 texts (`[TOOL_CALLS]NAME[ARGS]`) are turned away at once.
_ANY_BODY = re.compile(r"\[TOOL_CALLS\](?:\s*\[|[\s,]*\{)")


@register
class MistralPreV11Parser(BoundedParser):
    family = "mistral_prev11"
    markers = (TOOL_CALLS,)

    def read(self, text: str, schemas: Schemas | None, budget: Budget) -> list[RecoveredCall]:
        calls: list[RecoveredCall] = []
        if _ANY_BODY.search(text) is None:
            return calls
        i = text.find(TOOL_CALLS)
        while i >= 0:
            if not budget.take(i):
                break
            body = skip_space(text, i + len(TOOL_CALLS))
            bound = text.find(TOOL_CALLS, body)
            bound = bound if bound >= 0 else len(text)
            # Mistral decodes arguments written as a JSON string (unlike Hermes).
            if text.startswith("[", body):
                found, after = call_array(self.family, text, body, bound, decode_string_arguments=True,
                                          budget=budget)
            else:
                found, after = call_objects(self.family, text, body, bound, separators=",",
                                            decode_string_arguments=True, budget=budget)
            calls += with_block(found, (i, after))
            if budget.unread is not None:
                break
            i = bound if bound < len(text) else -1
        return calls
