"""Findings: what detectors report, and the closed vocabularies gateways can rely on."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson

from guardrails.surrogates import without_surrogates


class Category(StrEnum):
    PII = "pii"
    SECRET = "secret"
    PROMPT_INJECTION = "prompt_injection"
    JAILBREAK = "jailbreak"
    CONTENT = "content"
    UNSAFE_REASONING = "unsafe_reasoning"
    TOOL_UNDECLARED = "tool_undeclared"
    TOOL_SCHEMA = "tool_schema"
    TOOL_POLICY = "tool_policy"
    TOOL_TAINT = "tool_taint"
    TOOL_LOOP = "tool_loop"
    TOOL_CALL_LEAK = "tool_call_leak"
    LOW_CONFIDENCE = "low_confidence"
    BUDGET = "budget"
    CUSTOM = "custom"
    DETECTOR_ERROR = "detector_error"


class Severity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class Action(StrEnum):
    ALLOW = "allow"
    WARN = "warn"
    BLOCK = "block"


ACTION_RANK = {Action.ALLOW: 0, Action.WARN: 1, Action.BLOCK: 2}

# What a finding does when neither the detector's policy entry nor the finding says otherwise.
DEFAULT_ACTION_BY_SEVERITY = {
    Severity.LOW: Action.ALLOW,
    Severity.MEDIUM: Action.WARN,
    Severity.HIGH: Action.BLOCK,
    Severity.CRITICAL: Action.BLOCK,
}


def strictest(actions: list[Action]) -> Action:
    return max(actions, key=ACTION_RANK.__getitem__, default=Action.ALLOW)


@dataclass(frozen=True, slots=True)
class Hit:
    """A finding relative to one segment's text, before the engine places it in the check body.

    Segment detectors return hits so the engine can cache them per segment content and re-locate them
    wherever the same text appears again (an agent resends its whole history every step).
    """

    message: str
    start: int | None = None  # offsets in the segment text; None for the whole segment
    end: int | None = None
    severity: Severity = Severity.MEDIUM
    score: float | None = None
    category: Category | None = None  # defaults to the detector's category
    evidence: dict[str, Any] = field(default_factory=dict)
    action: Action | None = None  # a detector may force an action (e.g. from policy thresholds)


@dataclass(slots=True)
class Finding:
    category: Category
    detector: str
    severity: Severity
    message: str
    pointer: str
    start: int | None = None
    end: int | None = None
    score: float | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    action: Action | None = None  # filled by the policy when the detector leaves it open
    # A segment detector's hit as [start, end) of the segment's text. The location above is clipped to one
    # string of the body (one stream chunk); the audit log's redaction needs the whole span.
    span: tuple[int, int] | None = field(default=None, repr=False, compare=False)
    # The engine reuses the findings of history segments from step to step: serialize each once.
    _as_dict: dict[str, Any] | None = field(default=None, init=False, repr=False, compare=False)
    _as_record: dict[str, Any] | None = field(default=None, init=False, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The public JSON shape; computed once, after the action is set. Callers must not mutate it.

        A lone surrogate in a message or evidence (a detector's half-decoded escape) is no character: orjson
        refuses it, and the HTTP answer, the NeMo answer and the CLI's output all failed. So the shape is tried
        once here (a microsecond; a history finding reused step after step is not tried again), and copied with
        surrogates repaired only when that fails."""
        if self._as_dict is None or self._as_dict["action"] != (self.action or Action.ALLOW).value:
            shape = self._dict()
            try:
                orjson.dumps(shape)
            except TypeError:
                shape = without_surrogates(shape)
            self._as_dict = shape
        return self._as_dict

    def to_record(self) -> dict[str, Any]:
        """The compact form the audit log keeps (no message or evidence); computed once, like `to_dict`."""
        action = self.action.value if self.action else None
        if self._as_record is None or self._as_record["action"] != action:
            self._as_record = {"category": self.category.value, "detector": self.detector,
                               "severity": self.severity.value, "action": action, "pointer": self.pointer,
                               "start": self.start, "end": self.end, "score": self.score}
        return self._as_record

    def _dict(self) -> dict[str, Any]:
        location: dict[str, Any] = {"pointer": self.pointer}
        if self.start is not None:
            location["start"] = self.start
            location["end"] = self.end
        return {
            "category": self.category.value,
            "detector": self.detector,
            "severity": self.severity.value,
            "action": (self.action or Action.ALLOW).value,
            "message": self.message,
            "score": self.score,
            "location": location,
            "evidence": self.evidence,
        }
