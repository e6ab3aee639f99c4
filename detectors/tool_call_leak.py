"""`tool_call_leak`: tool-call markup in the response's content or reasoning (or in the `raw_output` the
gateway may add) that the structured response does not carry.

A vLLM tool parser that fails leaves the call, markup included, in `content` (malformed JSON, a missing
start token, text around a pythonic list); a call written inside the reasoning block stays there for most
reasoning parsers; some parsers drop the output silently. Either way the agent step silently loses a call,
or a downstream consumer that re-parses text runs one nobody checked. The exchange builder already turned
these calls into tool-call segments (so tool_undeclared, tool_schema, tool_policy... judge them); this
detector reports the leak itself, pointing at the markup.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from guardrails.detector import Detector, ScanContext, Scope, Services
from guardrails.exchange import Exchange, Location, Phase, Segment, SegmentKind, recovery_schemas
from guardrails.findings import Category, Finding, Severity
from guardrails.toolparse import MAX_CALLS, RecoveredCall, read_leaks
from guardrails.toolparse.react import invented_observation

# Names that look like they change or destroy something; a leaked call to one is high severity even when
# the request did not declare it.
DANGEROUS_NAMES = (
    r"(?:^|[_.\-])(?:delete|remove|rm|rmdir|drop|truncate|destroy|wipe|erase|purge|kill|shutdown|reboot|"
    r"exec|execute|eval|run|shell|bash|sh|cmd|command|sudo|chmod|chown|format|write|overwrite|upload|"
    r"transfer|pay|payment|withdraw|refund|grant|revoke|send)(?:$|[_.\-])"
)
_TEXT_KINDS = (SegmentKind.ASSISTANT, SegmentKind.REASONING)


class ToolCallLeakDetector(Detector):
    name = "tool_call_leak"
    category = Category.TOOL_CALL_LEAK
    # A leak in the request history is old news: the new response (and raw_output) by default.
    default_scope = Scope(kinds=frozenset(_TEXT_KINDS), phases=frozenset({Phase.RESPONSE}))

    def __init__(self, settings: Mapping[str, Any] | None = None, services: Services | None = None) -> None:
        super().__init__(settings, services)
        self.check_raw_output = self.setting("raw_output", bool, True)
        self.dangerous = re.compile(self.setting("dangerous_names", str, DANGEROUS_NAMES), re.IGNORECASE)

    async def scan(self, exchange: Exchange, ctx: ScanContext) -> list[Finding]:
        texts = [(s, s.text) for s in ctx.segments if s.kind in _TEXT_KINDS]
        structured = [(s.tool_call.name, s.tool_call.arguments, s.tool_call.arguments_error is None)
                      for s in exchange.tool_calls
                      if s.tool_call is not None and s.phase is Phase.RESPONSE and not s.tool_call.recovered_from]
        raw_output = exchange.raw_output if self.check_raw_output else None
        # An agent that lists its tools in the prompt calls them in ReAct text: its protocol, not a leak (the
        # builder turned those calls into tool-call segments, which the tool checks judge).
        react_is_protocol = any(spec.declared_in is not None for spec in exchange.tools.values())
        reading = read_leaks(texts, raw_output, structured, recovery_schemas(exchange.tools))
        findings = [self._finding(exchange, segment, call) for segment, call in reading.leaks
                    if not (react_is_protocol and call.family == "react")]
        signals: dict[str, Any] = {"leaked_calls": len(findings),
                                   "families": sorted({f.evidence["family"] for f in findings})}
        if reading.unread:  # past its bound a text is not read: said so, never passed as clean
            findings += [self._not_read(exchange, segment, at) for segment, at in reading.unread]
            signals["not_read"] = [f.evidence["where"] for f in findings[-len(reading.unread):]]
        ctx.signals[self.name] = signals
        return findings

    def _not_read(self, exchange: Exchange, segment: Segment | None, at: int) -> Finding:
        """The rest of a text, from `at`, that recovery did not read (past the check's MAX_CALLS calls, or a parser's
        bound on the candidates it tries): calls written there are neither reported nor judged by the tool
        detectors."""
        if segment is None:
            where, end = "raw_output", len(exchange.raw_output or "")
            location = Location("/raw_output", at, end)
        else:
            where = "reasoning" if segment.kind is SegmentKind.REASONING else "content"
            end = len(segment.text)
            location = segment.locate(at, end)
        return Finding(
            category=self.category,
            detector=self.name,
            severity=Severity.MEDIUM,
            message=(f"tool-call markup in the {where} not read: past the {MAX_CALLS:,} calls a check reads (or a "
                     f"parser's bound on the markup it tries), its last {end - at:,} characters are not checked"),
            pointer=location.pointer,
            start=location.start,
            end=location.end,
            score=1.0,
            evidence={"rule": "calls_not_read", "where": where, "not_read_chars": end - at},
        )

    def _finding(self, exchange: Exchange, segment: Segment | None, call: RecoveredCall) -> Finding:
        if segment is None:
            where, location, text = "raw_output", Location("/raw_output", *call.span), exchange.raw_output or ""
        else:
            where = "reasoning" if segment.kind is SegmentKind.REASONING else "content"
            location, text = segment.locate(*call.span), segment.text
        declared = call.name in exchange.tools
        dangerous = bool(self.dangerous.search(call.name))
        why = "a declared tool" if declared else "a dangerous-looking tool" if dangerous else "an undeclared tool"
        evidence: dict[str, Any] = {
            "family": call.family,
            "name": call.name,
            "arguments": call.arguments,
            "arguments_parsed": call.arguments_parsed,
            "repairs": list(call.repairs),
            "where": where,
        }
        message = (f"{call.family} tool-call markup for {why} {call.name!r} in the {where}, "
                   "not in the structured tool calls")
        # A ReAct agent that writes the `Observation:` itself has invented the tool's result.
        observation = invented_observation(text, call.span[1]) if call.family == "react" else None
        if observation is not None:
            evidence["invented_observation"] = observation
            message += ", followed by a tool result the model invented (Observation:)"
        return Finding(
            category=self.category,
            detector=self.name,
            severity=Severity.HIGH if declared or dangerous else Severity.MEDIUM,
            message=message,
            pointer=location.pointer,
            start=location.start,
            end=location.end,
            score=1.0,
            evidence=evidence,
        )
