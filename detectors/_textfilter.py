"""Shared base of the text filters (pii, secret, content): placing span hits found in tool-call arguments.

The engine caches a segment detector's hits by segment kind, trust and text, so a hit must not name the
tool: two calls with the same arguments share it. The tool's name is added when the hit is placed. (For
APIs that carry arguments as a JSON object, `Segment.locate` already places a span on the string value.)
"""

from __future__ import annotations

from guardrails.detector import SegmentDetector
from guardrails.exchange import Segment
from guardrails.findings import Finding, Hit, Severity
from guardrails.textview import IN_ARGUMENTS

SEVERITY_RANK = {severity: rank for rank, severity in enumerate(Severity)}


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


def capped_by_severity(hits: list[Hit], max_hits: int) -> list[Hit]:
    """The first `max_hits` of `hits` (in position order), then only those more severe than every one kept before
    them: a cap that bounds the answer must not let twenty mild hits written first hide one that blocks."""
    kept = hits[:max_hits]
    worst = max((SEVERITY_RANK[h.severity] for h in kept), default=-1)
    for hit in hits[max_hits:]:
        if SEVERITY_RANK[hit.severity] > worst:
            kept.append(hit)
            worst = SEVERITY_RANK[hit.severity]
    return kept
