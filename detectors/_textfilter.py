"""Shared base of the text filters (pii, secret, content): placing span hits found in tool-call arguments.

The engine caches a segment detector's hits by segment kind, trust and text, so a hit must not name the
tool: two calls with the same arguments share it. The tool's name is added when the hit is placed. (For
APIs that carry arguments as a JSON object, `Segment.locate` already places a span on the string value.)
"""

from __future__ import annotations

from guardrails.detector import SegmentDetector
from guardrails.exchange import Segment
from guardrails.findings import Finding, Hit
from guardrails.textview import IN_ARGUMENTS


class TextFilter(SegmentDetector):
    """A segment detector whose spans may fall in tool-call arguments."""

    def finding(self, segment: Segment, hit: Hit) -> Finding:
        finding = super().finding(segment, hit)
        call = segment.tool_call
        if call is None:
            return finding
        if finding.message.endswith(IN_ARGUMENTS):
            finding.message = f"{finding.message} of {call.name}"
        finding.evidence = {**finding.evidence, "tool": call.name}  # the cached hit's dict stays untouched
        return finding
