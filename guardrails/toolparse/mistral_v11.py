"""Mistral tokenizer v11+: `[TOOL_CALLS]NAME[ARGS]{...}`, repeated for parallel calls."""

from __future__ import annotations

import re
from operator import methodcaller

from guardrails.toolparse.base import RecoveredCall, Schemas, ToolParser, register
from guardrails.toolparse.jsoncalls import named_call

_NAME = r"([A-Za-z_][\w.\-]*)\s*(?:\[CALL_ID\]\s*([\w\-]+)\s*)?"
_HEAD = re.compile(r"\[TOOL_CALLS\]\s*" + _NAME + r"(\[ARGS\]|(?=\{))")
# The model forgot [TOOL_CALLS]: the name is the word just before [ARGS] (searched in a short window).
_BARE = re.compile(r"([A-Za-z_][\w.\-]*+)\s*+(?:\[CALL_ID\]\s*([\w\-]++)\s*)?\[ARGS\]")  # possessive: no backtracking
_WINDOW = 200
_START = methodcaller("start")


@register
class MistralV11Parser(ToolParser):
    family = "mistral_v11"
    markers = ("[ARGS]", "[TOOL_CALLS]")

    def parse(self, text: str, schemas: Schemas | None = None) -> list[RecoveredCall]:
        heads = list(_HEAD.finditer(text))
        # An [ARGS] that no full head ends with starts a bare head: count first, as usually there is none.
        if text.count("[ARGS]") > sum(1 for head in heads if head.group(3)):
            heads += _bare_heads(text, heads)
            heads.sort(key=_START)
        calls = []
        for k, head in enumerate(heads):
            bound = text.find("[TOOL_CALLS]", head.end())
            if k + 1 < len(heads):
                bound = min(bound, heads[k + 1].start()) if bound >= 0 else heads[k + 1].start()
            calls.append(named_call(self.family, text, head.span(1), head.end(),
                                    bound if bound >= 0 else len(text), block_start=head.start(),
                                    call_id=head.group(2)))
        return calls


def _bare_heads(text: str, full_heads: list[re.Match[str]]) -> list[re.Match[str]]:
    """Heads `NAME[ARGS]` without `[TOOL_CALLS]`, for the `[ARGS]` tokens no full head ends with."""
    heads: list[re.Match[str]] = []
    at = text.find("[ARGS]")
    claimed = {m.end() for m in full_heads}
    while at >= 0:
        end = at + len("[ARGS]")
        if end not in claimed:
            for match in _BARE.finditer(text, max(0, at - _WINDOW), end):
                if match.end() == end:
                    heads.append(match)
                    break
        at = text.find("[ARGS]", at + 1)
    return heads
