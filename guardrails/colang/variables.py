"""What a custom flow sees of a check: NeMo's context variables, filled from the exchange.

`$user_message`, `$bot_message`, `$bot_thinking`, `$tool_calls` (OpenAI format), `$tool_message` /
`$tool_name` / `$tool_call_id` (the last tool result) are NeMo's own names; the rest are ours:
`$tool_results`, `$agent_id`, `$tenant`, `$session_id`, `$model`, `$phase`, `$findings` and `$verdict` (what
the detectors found so far), `$logprobs` (the low_confidence detector's signals) and `$min_logprob`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from guardrails.exchange import Exchange, Phase, Segment, SegmentKind
from guardrails.findings import Finding, strictest

VARIABLE_NAMES = (
    "user_message", "bot_message", "bot_thinking", "tool_calls", "tool_results", "tool_message", "tool_name",
    "tool_call_id", "agent_id", "tenant", "session_id", "model", "phase", "findings", "verdict", "logprobs",
    "min_logprob",
)
# Tool results end the request when the agent sends them back; these may sit between them.
_BESIDE_TOOL_RESULTS = {SegmentKind.TOOL_RESULT, SegmentKind.DOCUMENT, SegmentKind.SYSTEM}


@dataclass(frozen=True, slots=True)
class RailSegments:
    """The segments each rail type checks in this exchange; the custom finding of a rail points at them."""

    user: Segment | None
    assistant: tuple[Segment, ...]
    reasoning: tuple[Segment, ...]
    tool_calls: tuple[Segment, ...]
    tool_results: tuple[Segment, ...]

    @classmethod
    def of(cls, exchange: Exchange) -> RailSegments:
        response = [s for s in exchange.segments if s.phase is Phase.RESPONSE]
        users = [s for s in exchange.segments if s.kind is SegmentKind.USER]
        return cls(
            user=users[-1] if users else None,
            assistant=tuple(s for s in response if s.kind is SegmentKind.ASSISTANT),
            reasoning=tuple(s for s in response if s.kind is SegmentKind.REASONING),
            tool_calls=tuple(s for s in response if s.kind is SegmentKind.TOOL_CALL),
            tool_results=_trailing_tool_results(exchange.segments),
        )

    def first(self, rail_type: str) -> Segment | None:
        candidates: Sequence[Segment] = {
            "input": (self.user,) if self.user else (),
            "output": self.assistant + self.reasoning,
            "tool_output": self.tool_calls,
            "tool_input": self.tool_results,
        }[rail_type]
        return candidates[0] if candidates else None

    def has(self, rail_type: str) -> bool:
        return self.first(rail_type) is not None


def _trailing_tool_results(segments: Sequence[Segment]) -> tuple[Segment, ...]:
    found: list[Segment] = []
    for segment in reversed(segments):
        if segment.phase is Phase.RESPONSE:
            continue
        if segment.kind not in _BESIDE_TOOL_RESULTS:
            break
        if segment.kind is SegmentKind.TOOL_RESULT:
            found.append(segment)
    return tuple(reversed(found))


def flow_variables(exchange: Exchange, rails: RailSegments, findings: Sequence[Finding],
                   signals: Mapping[str, Any]) -> dict[str, Any]:
    tool_calls = [_openai_tool_call(s) for s in rails.tool_calls]
    tool_results = [{"tool_call_id": s.tool_call_id, "name": s.tool_name, "content": s.text}
                    for s in rails.tool_results]
    last_result = tool_results[-1] if tool_results else {}
    logprobs = signals.get("low_confidence") or {}
    context = exchange.context
    return {
        "user_message": rails.user.text if rails.user else "",
        "bot_message": "\n".join(s.text for s in rails.assistant),
        "bot_thinking": "\n".join(s.text for s in rails.reasoning),
        "tool_calls": tool_calls,
        "tool_results": tool_results,
        "tool_message": last_result.get("content", ""),
        "tool_name": last_result.get("name") or "",
        "tool_call_id": last_result.get("tool_call_id") or "",
        "agent_id": context.agent_id or "",
        "tenant": context.tenant or "",
        "session_id": context.session_id or "",
        "model": exchange.generation.model or "",
        "phase": exchange.phase.value,
        "findings": [f.to_dict() for f in findings],
        "verdict": strictest([f.action for f in findings if f.action is not None]).value,
        "logprobs": logprobs if isinstance(logprobs, Mapping) else {},
        "min_logprob": _min_logprob(logprobs),
    }


def _openai_tool_call(segment: Segment) -> dict[str, Any]:
    call = segment.tool_call
    name = call.name if call else ""
    return {"id": (call.id if call else None) or "", "type": "function",
            "function": {"name": name, "arguments": segment.text}}


def _min_logprob(logprobs: Any) -> float | None:
    if not isinstance(logprobs, Mapping):
        return None
    values = [u.get("min") for u in logprobs.get("units") or () if isinstance(u, Mapping)]
    numbers = [v for v in values if isinstance(v, (int, float))]
    return min(numbers) if numbers else None
