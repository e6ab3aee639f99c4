"""`prompt_injection`: instructions planted in untrusted content (tool results, documents).

What an attacker controls reaches the model as tool output or a retrieved document: overrides of earlier
instructions, fake chat turns, notes addressed to the AI, planted task requests, exfiltration, concealment from the
user, instructions about the model's own answer, hidden characters. The rules and how they read a text are
detectors/_injection_analysis.py's, shared with the detectors that reuse them (unsafe_reasoning, tool_poisoning);
this module is the detector: its settings and scope.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from detectors._injection_analysis import (
    ANSWER_RULES,
    EMAIL,
    HIDDEN_TEXT_RULE_IDS,
    OVERRIDE_PATTERN,
    RULE_IDS,
    RULES,
    InjectionAnalysis,
    agent_request_hits,
    hidden_text_hits,
)
from guardrails.detector import Scope, SegmentDetector, Services
from guardrails.exchange import Segment, Trust
from guardrails.findings import Category, Hit

# Importers of these from here before they moved to detectors/_injection_analysis.py keep working.
__all__ = ["ANSWER_RULES", "EMAIL", "HIDDEN_TEXT_RULE_IDS", "OVERRIDE_PATTERN", "RULES", "RULE_IDS",
           "PromptInjectionDetector", "agent_request_hits", "hidden_text_hits"]


class PromptInjectionDetector(SegmentDetector):
    """Flags instructions aimed at the model inside tool results and documents.

    Settings: `disabled_rules` (list of rule ids), `max_hits` (per segment, default 20; past it, only hits more
    severe than all reported), `agent_requests` (default true: flag task requests like "Please transfer $500
    from my account").
    """

    name = "prompt_injection"
    category = Category.PROMPT_INJECTION
    default_scope = Scope(trust=frozenset({Trust.UNTRUSTED}))

    def __init__(self, settings: Mapping[str, Any] | None = None, services: Services | None = None) -> None:
        super().__init__(settings, services)
        disabled = set(self.setting("disabled_rules", list, [], items=str))
        unknown = disabled - RULE_IDS
        if unknown:
            raise ValueError(f"prompt_injection: unknown rule ids in disabled_rules: {sorted(unknown)}")
        self.analysis = InjectionAnalysis(
            disabled, agent_requests=self.setting("agent_requests", bool, True),
            max_hits=self.setting("max_hits", int, 20, minimum=1))  # below 1 drops hits the cap should keep

    def analyze(self, segment: Segment) -> list[Hit]:
        return self.analysis.analyze(segment)
