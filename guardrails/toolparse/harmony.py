"""gpt-oss harmony: a message addressed to a tool,
`<|start|>assistant<|channel|>commentary to=functions.NAME <|constrain|>json<|message|>{...}<|call|>`
(the recipient may also sit in the role part: `<|start|>assistant to=functions.NAME<|channel|>...`)."""

from __future__ import annotations

import re

from guardrails.toolparse.base import RecoveredCall, Schemas, ToolParser, register
from guardrails.toolparse.jsoncalls import named_call

_HEADER = re.compile(r"(?:<\|start\|>[^<]*)?(?:<\|channel\|>[^<]*)?(?:<\|constrain\|>[^<]*)?<\|message\|>")
_WINDOW = 300  # a header is short: look for its start only this far before <|message|>
_RECIPIENT = re.compile(r"to=((?:functions\.)?([^\s<]+))")
_BODY_END = re.compile(r"<\|(?:call|end|return|start|channel)\|>")
_CLOSERS = ("<|call|>", "<|end|>", "<|return|>")


@register
class HarmonyParser(ToolParser):
    family = "harmony"
    markers = ("<|message|>",)

    def parse(self, text: str, schemas: Schemas | None = None) -> list[RecoveredCall]:
        calls = []
        for header in _headers(text):
            recipient = _RECIPIENT.search(text, header.start(), header.end())
            if recipient is None:
                continue
            stop = _BODY_END.search(text, header.end())
            bound = stop.start() if stop else len(text)
            closer = next((c for c in _CLOSERS if stop and stop.group() == c), None)
            calls.append(named_call(self.family, text, recipient.span(2), header.end(), bound,
                                    block_start=header.start(),
                                    closed_end=bound + len(closer) if closer else None))
        return calls


def _headers(text: str) -> list[re.Match[str]]:
    """The longest header ending at each `<|message|>`. A header is a chain of at most four tokens with no
    other `<` between them, so it can only start at one of the last three `<` before the message token."""
    headers = []
    at = text.find("<|message|>")
    while at >= 0:
        end = at + len("<|message|>")
        floor, starts = max(0, at - _WINDOW), [at]
        for _ in range(3):
            before = text.rfind("<", floor, starts[-1])
            if before < 0:
                break
            starts.append(before)
        found = next((m for start in reversed(starts) if (m := _HEADER.fullmatch(text, start, end))), None)
        if found is not None:
            headers.append(found)
        at = text.find("<|message|>", end)
    return headers
