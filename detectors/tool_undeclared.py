"""`tool_undeclared`: a tool call to a name the request did not declare.

vLLM's tool parsers do not check names against `tools` unless decoding was constrained, so a Hermes
model can "call" `delete_all_files` when only `get_weather` was declared (shared/reference/vllm.md §3.2).

Calls the provider runs itself (`ToolCall.hosted`) are judged the same way against the hosted tools the request
declares (adapters declare them under the names their calls carry), except calls to a remote MCP server: the
server lists its tools itself, so which names it offers cannot be known from the request.

A name that only imitates a declared one (`Get_Weather`, `get_weather `, `get_wea\u200bther`, `get_weаther` with a
Cyrillic `а`, `functions.get_weather`) is undeclared too, and the finding says which tool it imitates and how
(`evidence.imitates`, `evidence.disguise`): a client that looks names up loosely would run that tool. Invisible or
look-alike characters are written to deceive, not by a slip: those findings are critical.

In a `partial` check (a mid-stream re-check) a response call's name may still be arriving in pieces (Chat streams
`"get_"`, then `"weather"`): a name that is a proper prefix of a declared tool's name is not reported, since more
data can make it that name. The stream's final check judges the name it ends with; a partial name that no declared
name starts with is reported at once.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from detectors._toolnames import imitation
from guardrails.detector import Detector, ScanContext, Scope, Services
from guardrails.exchange import Exchange, Location, Phase, SegmentKind
from guardrails.findings import Category, Finding, Severity


class ToolUndeclared(Detector):
    name = "tool_undeclared"
    category = Category.TOOL_UNDECLARED
    # History calls were judged when they were made; by default only the new response is checked.
    default_scope = Scope(kinds=frozenset({SegmentKind.TOOL_CALL}), phases=frozenset({Phase.RESPONSE}))

    def __init__(self, settings: Mapping[str, Any] | None = None, services: Services | None = None) -> None:
        super().__init__(settings, services)
        # Read when built, not per check: a wrong type must stop the policy from loading.
        self.flag_when_no_tools = self.setting("flag_when_no_tools_declared", bool, True)

    async def scan(self, exchange: Exchange, ctx: ScanContext) -> list[Finding]:
        if not exchange.tools and not self.flag_when_no_tools:
            return []
        declared = sorted(exchange.tools)
        lists = _prompt_lists(exchange)
        findings = []
        for segment in ctx.segments:
            call = segment.tool_call
            if call is None or call.name in exchange.tools or call.mcp_server is not None:
                continue  # declared, or an MCP server's tool, which the request cannot declare
            if exchange.name_may_grow(segment):
                continue  # the start of a declared name, whose rest has not arrived yet
            evidence: dict[str, Any] = {"tool": call.name, "declared": declared,
                                        "recovered_from": call.recovered_from, "hosted": call.hosted}
            message, severity = _describe(call.name, declared, evidence)
            if lists:
                evidence["declared_in"] = lists
                message += f" (not among the tools its prompt lists, at {lists[0]['pointer']})"
            where = call.name_location()
            if where.start is not None and where.start == where.end:  # an empty name: the value, not a span in it
                where = Location(where.pointer)
            findings.append(
                Finding(
                    category=self.category,
                    detector=self.name,
                    severity=severity,
                    message=message,
                    pointer=where.pointer,
                    start=where.start,
                    end=where.end,
                    score=1.0,
                    evidence=evidence,
                )
            )
        return findings


def _prompt_lists(exchange: Exchange) -> list[dict[str, Any]]:
    """Where the prompt lists the tools it declares (a ReAct agent's, in a request without `tools`), each once."""
    places = dict.fromkeys(spec.declared_in for spec in exchange.tools.values() if spec.declared_in is not None)
    return [{"pointer": p.pointer, "start": p.start, "end": p.end} for p in places]


def _describe(name: str, declared: list[str], evidence: dict[str, Any]) -> tuple[str, Severity]:
    """The message and severity; an imitated declared name goes into `evidence`."""
    message = f"tool call to undeclared tool {name!r}"
    imitated = imitation(name, declared)
    if imitated is not None:
        evidence.update(imitates=imitated.declared, disguise=list(imitated.disguise))
        if imitated.characters:
            evidence["characters"] = list(imitated.characters)
        how = ", ".join(imitated.disguise)
        return (f"{message}, which imitates declared tool {imitated.declared!r} ({how})",
                Severity.CRITICAL if imitated.deceptive else Severity.HIGH)
    close = difflib.get_close_matches(name, declared, n=1, cutoff=0.8)
    if close:
        message += f" (did you mean {close[0]!r}?)"
    elif not declared:
        message += " (the request declared no tools)"
    return message, Severity.HIGH
