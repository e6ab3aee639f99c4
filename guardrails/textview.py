"""Small text helpers shared by the text-filter detectors (pii, secret, content, ...).

Everything here preserves offsets: a detector scans a view of `segment.text` and its spans still index the
original text, so the engine can place them in the check body unchanged.
"""

from __future__ import annotations

import re

from guardrails.exchange import Segment, SegmentKind

# A JSON string escape inside a tool call's raw argument text: `\n`, `\"`, `\\`, `\u00e9`...
JSON_ESCAPE = re.compile(r"\\(?:u[0-9A-Fa-f]{4}|.)", re.DOTALL)


def _blank(match: re.Match[str]) -> str:
    return " " * (match.end() - match.start())


def _blank_unless_unicode(match: re.Match[str]) -> str:
    escape = match.group()
    return escape if escape[1] == "u" and len(escape) == 6 else " " * len(escape)


def blank_json_escapes(text: str, keep_unicode: bool = False) -> str:
    """`text` (raw JSON) with each escape replaced by spaces of the same width; with `keep_unicode`, `\\uXXXX`
    escapes are kept, for a reader that decodes them (detectors/_fold.py)."""
    if "\\" not in text:
        return text
    return JSON_ESCAPE.sub(_blank_unless_unicode if keep_unicode else _blank, text)


def scan_view(segment: Segment) -> str:
    """The text a pattern detector should scan: same length as `segment.text`, offsets unchanged.

    A tool call's text is raw JSON, where `"call\\n212-555-0199"` would glue the `n` of the escape to the
    number and defeat word boundaries. Escapes are blanked with spaces of the same width.
    """
    if segment.kind is SegmentKind.TOOL_CALL:
        return blank_json_escapes(segment.text)
    return segment.text


IN_ARGUMENTS = "in arguments"  # a tool call's: the detector adds "of <tool>" when it places the hit
_WHERE_BY_KIND = {
    SegmentKind.SYSTEM: "in the system prompt",
    SegmentKind.USER: "in a user message",
    SegmentKind.ASSISTANT: "in model output",
    SegmentKind.REASONING: "in the model's reasoning",
    SegmentKind.TOOL_RESULT: "in a tool result",
    SegmentKind.DOCUMENT: "in a document",
}


def where(segment: Segment) -> str:
    """Where a hit sits, in words that depend only on the segment kind (hits are cached by kind and text)."""
    if segment.kind is SegmentKind.TOOL_CALL:
        return IN_ARGUMENTS
    return _WHERE_BY_KIND.get(segment.kind, "in the exchange")


def redact(value: str, keep_prefix: int = 0) -> str:
    """A preview that never shows the whole value: a public prefix, an ellipsis and the last few characters.

    `keep_prefix` is how much of the start is public structure (e.g. "sk-", "ghp_", "AKIA"); of the secret part
    after it, at most the last 4 characters of 16 or more (2 of 8 or more, none of a shorter one) are shown.
    """
    head = value[:keep_prefix]
    rest = len(value) - len(head)
    tail = 4 if rest >= 16 else 2 if rest >= 8 else 0
    return f"{head}…{value[len(value) - tail:] if tail else ''}"
