"""Split model text into reasoning and answer spans when reasoning was left inline.

vLLM's reasoning parsers move reasoning out of `content`, but not always: a server without a reasoning
parser, a missing start tag (the tag was in the prompt), a missing end tag (truncation) or a tag family
the parser does not know all leave reasoning in the answer text. The families are those of vLLM 0.33.0's
reasoning parsers (see shared/reference/vllm.md, section 2.1).
"""

from __future__ import annotations

import re

from guardrails.exchange import SegmentKind

# (open marker, close marker, source name). Order matters only for readability.
TAG_FAMILIES: tuple[tuple[str, str, str], ...] = (
    ("<think>", "</think>", "think_tag"),
    ("<seed:think>", "</seed:think>", "seed_think_tag"),
    ("[THINK]", "[/THINK]", "mistral_think"),
    ("<|channel>thought", "<channel|>", "gemma_channel"),
    ("<|START_THINKING|>", "<|END_THINKING|>", "cohere_thinking"),
    ("<|channel|>analysis<|message|>", "<|end|>", "harmony_analysis"),
    ("<|open|>think<|sep|>", "<|close|>think<|sep|>", "kimi_think"),
    ("Here's my thought process:", "Here's my response:", "granite_thought"),
)

_OPEN = {open_: (close, source) for open_, close, source in TAG_FAMILIES}
_CLOSE = {close: source for _, close, source in TAG_FAMILIES}
_MARKERS = re.compile("|".join(re.escape(m) for m in sorted({*_OPEN, *_CLOSE}, key=len, reverse=True)))
_QUICK = ("<think", "</think", "think", "THINK", "<|", "Here's my")

Span = tuple[SegmentKind, int, int, str]


def split_reasoning(text: str) -> list[Span]:
    """Return (kind, start, end, source) spans covering the non-markup text, in order.

    Whitespace-only spans are dropped. Text with no marker is one assistant span.
    """
    if not any(q in text for q in _QUICK):
        return [(SegmentKind.ASSISTANT, 0, len(text), "")] if text.strip() else []
    spans: list[Span] = []
    pos = 0
    open_close: str | None = None
    open_source = ""
    for match in _MARKERS.finditer(text):
        marker = match.group()
        if open_close is None and marker in _OPEN:
            _add(spans, SegmentKind.ASSISTANT, text, pos, match.start(), "")
            open_close, open_source = _OPEN[marker]
            pos = match.end()
        elif open_close is not None and marker == open_close:
            _add(spans, SegmentKind.REASONING, text, pos, match.start(), open_source)
            open_close = None
            pos = match.end()
        elif open_close is None and marker in _CLOSE and not spans and pos == 0:
            # The start tag was in the prompt: everything before the first end tag is reasoning.
            _add(spans, SegmentKind.REASONING, text, 0, match.start(), _CLOSE[marker] + ":no_start")
            pos = match.end()
    if open_close is not None:
        _add(spans, SegmentKind.REASONING, text, pos, len(text), open_source + ":no_end")
    else:
        _add(spans, SegmentKind.ASSISTANT, text, pos, len(text), "")
    return spans


def _add(spans: list[Span], kind: SegmentKind, text: str, start: int, end: int, source: str) -> None:
    if end > start and text[start:end].strip():
        spans.append((kind, start, end, source))
