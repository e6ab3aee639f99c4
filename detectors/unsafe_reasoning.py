"""placeholder"""
from __future__ import annotations

from guardrails.detector import Detector, ScanContext, Scope
from guardrails.exchange import Exchange, SegmentKind
from guardrails.findings import Category, Finding


class UnsafeReasoningDetector(Detector):
    name = "unsafe_reasoning"
    category = Category.UNSAFE_REASONING
    default_scope = Scope(kinds=frozenset({SegmentKind.REASONING}))

    async def scan(self, exchange: Exchange, ctx: ScanContext) -> list[Finding]:
        return []
