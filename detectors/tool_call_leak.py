"""`tool_call_leak`: tool-call markup in the response's content or reasoning (or in the `raw_output` the
gateway may add) that the structured response does not carry.

A vLLM tool parser that fails leaves the call, markup included, in `content` (malformed JSON, a missing
start token, text around a pythonic list); a call written inside the reasoning block stays there for most
reasoning parsers; some parsers drop the output silently. Either way the agent step silently loses a call,
or a downstream consumer that re-parses text runs one nobody checked. The exchange builder already turned
these calls into tool-call segments (so tool_undeclared, tool_schema, tool_policy... judge them); this
detector reports the leak itself, pointing at the markup.

`dangerous_names` (a regex over the leaked call's name) may come from an inline config, written by the caller: it is
compiled by `regex` and searched under detectors/_schema_guard.py's timeout and per-check budget. A name it could not
judge is not taken as harmless: its leak is high severity and a `pattern_unchecked` finding says why.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import regex

from detectors._schema_guard import REASONS, PatternChecks, Reason, pattern_checks, policy_pattern
from guardrails.detector import Detector, ScanContext, Scope, Services, SettingError
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
        try:
            self.dangerous = policy_pattern(self.setting("dangerous_names", str, DANGEROUS_NAMES), regex.IGNORECASE)
        except ValueError as exc:
            raise SettingError(f"setting dangerous_names: {exc}") from None

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
        findings: list[Finding] = []
        with pattern_checks() as checks:  # one time budget for the names this check searches
            for segment, call in reading.leaks:
                if not (react_is_protocol and call.family == "react"):
                    findings.extend(self._findings(exchange, segment, call, checks))
        leaks = [f for f in findings if "family" in f.evidence]
        signals: dict[str, Any] = {"leaked_calls": len(leaks),
                                   "families": sorted({f.evidence["family"] for f in leaks})}
        if len(leaks) < len(findings):
            signals["names_unchecked"] = len(findings) - len(leaks)
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

    def _findings(self, exchange: Exchange, segment: Segment | None, call: RecoveredCall, checks: PatternChecks
                  ) -> list[Finding]:
        """The leak, and where `dangerous_names` could not judge the call's name, a finding saying so."""
        if segment is None:
            where, location, text = "raw_output", Location("/raw_output", *call.span), exchange.raw_output or ""
        else:
            where = "reasoning" if segment.kind is SegmentKind.REASONING else "content"
            location, text = segment.locate(*call.span), segment.text
        declared = call.name in exchange.tools
        found = False if declared else checks.judge(self.dangerous, call.name)  # a declared leak is high anyway
        dangerous = found is not False  # a name the pattern could not judge is not taken as harmless
        why = "a declared tool" if declared else "a dangerous-looking tool" if found is True else (
            "a tool whose name was not checked against dangerous_names" if dangerous else "an undeclared tool")
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
        leak = Finding(
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
        return [leak] if isinstance(found, bool) else [leak, self._unchecked(call.name, location, found)]

    def _unchecked(self, name: str, location: Location, reason: Reason) -> Finding:
        shown = repr(name if len(name) <= 60 else name[:57] + "...")
        return Finding(
            category=self.category,
            detector=self.name,
            severity=Severity.HIGH,
            message=f"tool name {shown} not checked against dangerous_names {self.dangerous.pattern[:80]!r}: "
                    f"{REASONS[reason]}",
            pointer=location.pointer,
            start=location.start,
            end=location.end,
            score=1.0,
            evidence={"rule": "pattern_unchecked", "pattern": self.dangerous.pattern[:200], "reason": reason,
                      "name": name[:200]},
        )
