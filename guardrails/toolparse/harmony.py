"""gpt-oss harmony: a message addressed to a tool,
`<|start|>assistant<|channel|>commentary to=functions.NAME <|constrain|>json<|message|>{...}<|call|>`
(the recipient may also sit in the role part: `<|start|>assistant to=functions.NAME<|channel|>...`)."""

from __future__ import annotations

import re

from guardrails.toolparse.base import BoundedParser, Budget, RecoveredCall, Schemas, register
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
class HarmonyParser(BoundedParser):
    family = "harmony"
    markers = ("<|message|>",)

    def read(self, text: str, schemas: Schemas | None, budget: Budget) -> list[RecoveredCall]:
        calls = []
        stop: re.Match[str] | None = None
        searched = -1  # where `stop` was searched from (-1: not yet)
        for header in _headers(text, budget):
            recipient = _RECIPIENT.search(text, header.start(), header.end())
            if recipient is None:
                continue
            # The body's end, searched again only once passed: a search from every header to the end of a text
            # without one was quadratic.
            if searched < 0 or header.end() < searched or (stop is not None and stop.start() < header.end()):
                stop, searched = _BODY_END.search(text, header.end()), header.end()
            bound = stop.start() if stop else len(text)
            closed_end = stop.end() if stop is not None and stop.group() in _CLOSERS else None
            calls.append(named_call(self.family, text, recipient.span(2), header.end(), bound,
                                    block_start=header.start(), closed_end=closed_end))
        return calls


def _headers(text: str, budget: Budget) -> list[re.Match[str]]:
    """The longest header ending at each `<|message|>`: the leftmost match that ends with it (one candidate of
    `budget` each)."""
    headers = []
    at = text.find("<|message|>")
    end = 0
    while at >= 0:
        if not budget.take(max(end, at - _WINDOW)):  # (where its header may start: after the last one read)
            break
        end = at + len("<|message|>")
        found = _HEADER.search(text, max(0, at - _WINDOW), end)
        if found is not None:
            headers.append(found)
        at = text.find("<|message|>", end)
    return headers
