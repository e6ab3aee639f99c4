"""placeholder"""
from __future__ import annotations

from guardrails.detector import Scope, SegmentDetector
from guardrails.exchange import Segment, SegmentKind
from guardrails.findings import Category, Hit


class JailbreakDetector(SegmentDetector):
    name = "jailbreak"
    category = Category.JAILBREAK
    default_scope = Scope(kinds=frozenset({SegmentKind.USER}))

    def analyze(self, segment: Segment) -> list[Hit]:
        return []
