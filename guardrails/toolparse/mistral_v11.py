"""Mistral tokenizer v11+: `[TOOL_CALLS]NAME[ARGS]{...}`, repeated for parallel calls."""

from __future__ import annotations

import re
from itertools import islice
from operator import methodcaller

from guardrails.toolparse.base import BoundedParser, Budget, RecoveredCall, Schemas, register
from guardrails.toolparse.blocks import NextFind
from guardrails.toolparse.jsoncalls import named_call

_NAME = r"([A-Za-z_][\w.\-]*)\s*(?:\[CALL_ID\]\s*([\w\-]+)\s*)?"
_HEAD = re.compile(r"\[TOOL_CALLS\]\s*" + _NAME + r"(\[ARGS\]|(?=\{))")
# The model forgot [TOOL_CALLS]: the name is the word just before [ARGS] (searched in a short window).
_BARE = re.compile(r"([A-Za-z_][\w.\-]*+)\s*+(?:\[CALL_ID\]\s*([\w\-]++)\s*)?\[ARGS\]")  # possessive: no backtracking
_WINDOW = 200
_START = methodcaller("start")


@register
class MistralV11Parser(BoundedParser):
    family = "mistral_v11"
    markers = ("[ARGS]", "[TOOL_CALLS]")

    def read(self, text: str, schemas: Schemas | None, budget: Budget) -> list[RecoveredCall]:
        limit = budget.left + 1  # (the heads the budget lets it try, and the one where it stops)
        heads = list(islice(_HEAD.finditer(text), limit))
        cut = len(text)  # where the heads looked for end (bare heads are looked for up to a bound too)
        # An [ARGS] that no full head ends with starts a bare head: count first, as usually there is none.
        if text.count("[ARGS]") > sum(1 for head in heads if head.group(3)):
            bare, cut = _bare_heads(text, heads, limit)
            heads += bare
            heads.sort(key=_START)
            if cut < len(text):  # bare heads were not looked for past `cut`: nothing is read there
                heads = [head for head in heads if head.start() < cut]
                budget.stop(cut)
        calls = []
        # (the next [TOOL_CALLS] searched again only once passed: from every head to the end of a text of bare
        # heads, quadratic)
        next_tool_calls = NextFind(text, "[TOOL_CALLS]")
        for k, head in enumerate(heads):
            if budget.unread is None and not budget.take(head.start()):
                break
            bound = next_tool_calls(head.end())
            if k + 1 < len(heads):
                bound = min(bound, heads[k + 1].start()) if bound >= 0 else heads[k + 1].start()
            elif budget.unread is not None:
                bound = min(bound, budget.unread) if bound >= 0 else budget.unread
            calls.append(named_call(self.family, text, head.span(1), head.end(),
                                    bound if bound >= 0 else len(text), block_start=head.start(),
                                    call_id=head.group(2)))
        return calls


def _bare_heads(text: str, full_heads: list[re.Match[str]], limit: int) -> tuple[list[re.Match[str]], int]:
    """Heads `NAME[ARGS]` without `[TOOL_CALLS]`, for the `[ARGS]` tokens no full head ends with (at most `limit`
    of them looked at); and where a head not looked for may start: the end of the last [ARGS] before the first
    one not looked at (the end of text when all were)."""
    heads: list[re.Match[str]] = []
    at = text.find("[ARGS]")
    claimed = {m.end() for m in full_heads}
    tried = 0
    end = 0
    while at >= 0:
        if at + len("[ARGS]") not in claimed:
            if tried == limit:
                return heads, end
            tried += 1
        end = at + len("[ARGS]")
        if end not in claimed:
            for match in _BARE.finditer(text, max(0, at - _WINDOW), end):
                if match.end() == end:
                    heads.append(match)
                    break
        at = text.find("[ARGS]", at + 1)
    return heads, len(text)
