"""gpt-oss harmony: a message addressed to a tool,
`<|start|>assistant<|channel|>commentary to=functions.NAME <|constrain|>json<|message|>{...}<|call|>`
(the recipient may also sit in the role part: `<|start|>assistant to=functions.NAME<|channel|>...`)."""

from __future__ import annotations

import re

from guardrails.toolparse.base import RecoveredCall, Schemas, ToolParser, register
from guardrails.toolparse.jsoncalls import named_call

# A header: at most four tokens, `<|start|>... <|channel|>... <|constrain|>... <|message|>`, with no other `<`
# between them; written with its first `<` factored out (the regex engine then skips to each `<` at once), and
# anchored at the end of the search (the `<|message|>` it belongs to).
_HEADER = re.compile(r"<(?:\|start\|>[^<]*<)?(?:\|channel\|>[^<]*<)?(?:\|constrain\|>[^<]*<)?\|message\|>\Z")
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
            closed_end = stop.end() if stop is not None and stop.group() in _CLOSERS else None
            calls.append(named_call(self.family, text, recipient.span(2), header.end(), bound,
                                    block_start=header.start(), closed_end=closed_end))
        return calls


def _headers(text: str) -> list[re.Match[str]]:
    """The longest header ending at each `<|message|>`: the leftmost match that ends with it."""
    headers = []
    at = text.find("<|message|>")
    while at >= 0:
        end = at + len("<|message|>")
        found = _HEADER.search(text, max(0, at - _WINDOW), end)
        if found is not None:
            headers.append(found)
        at = text.find("<|message|>", end)
    return headers
