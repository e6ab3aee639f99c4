"""`tool_policy`: which tools an agent may call, and what their arguments may hold."""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from detectors._argspans import ArgPath, dotted, finding_at, leaves, locate_argument, locate_name
from detectors._schema_guard import pattern_checks
from detectors._toolnames import name_key, without_namespace
from detectors.tool_policy.assumption import unconfirmed_assumption
from detectors.tool_policy.base import ArgumentRule, Violation, string_list
from detectors.tool_policy.classify import classify, writes_script_file
from detectors.tool_policy.code import CodeRule, EncodedRule, ScriptRule
from detectors.tool_policy.context import context_violations
from detectors.tool_policy.numbers import NumberRule
from detectors.tool_policy.paths import PathRule
from detectors.tool_policy.patterns import PatternRule
from detectors.tool_policy.shell import ShellRule, current_budget, not_read, shell_budget
from detectors.tool_policy.sql import SqlRule
from detectors.tool_policy.urls import UrlRule
from guardrails.detector import (
    Detector,
    RecordedSettings,
    ScanContext,
    Scope,
    SettingError,
    read_setting,
    refuse_unknown_keys,
)
from guardrails.exchange import Exchange, Phase, Segment, SegmentKind, ToolSpec
from guardrails.findings import Category, Finding, Severity

RULE_TYPES: dict[str, type] = {"path": PathRule, "url": UrlRule, "shell": ShellRule, "sql": SqlRule,
                               "code": CodeRule, "number": NumberRule, "pattern": PatternRule}
ANY_AGENT = "*"
# The keys an `agents:` entry and a `tools:` entry may hold; an argument rule's are those its type reads (and `type`).
AGENT_KEYS = ("allow_tools", "deny_tools", "high_risk_tools")
TOOL_KEYS = ("arguments",)

# The rule ids each built-in check can report (the modules write them as literals; tests/
# test_tool_policy_disabled_rules.py reads the modules and fails on an id missing here). A check whose ids are all
# in `disabled_rules` is not run; otherwise the disabled ids are dropped from what it reports.
_PATH_IDS = frozenset({"path.null_byte", "path.traversal", "path.sensitive"})
_SHELL_IDS = frozenset({"shell.destructive", "shell.pipe_to_shell", "shell.reverse_shell", "shell.privilege",
                        "shell.persistence", "shell.sensitive_file", "shell.exfiltration", "shell.keylogger",
                        "shell.malware_script", "shell.too_complex", "shell.not_read"})
_CODE_IDS = frozenset({"code.reverse_shell", "code.destructive", "code.persistence", "code.privilege",
                       "code.exfiltration", "code.sensitive_file", "code.keylogger"}) | _SHELL_IDS  # + spawned commands
BUILTIN_RULES: dict[str, frozenset[str]] = {
    "path": _PATH_IDS,
    "script": _PATH_IDS | {"path.malware_script"},
    "url": frozenset({"url.malformed", "url.scheme", "url.credentials", "url.metadata", "url.private"}),
    "shell": _SHELL_IDS,
    "sql": frozenset({"sql.stacked", "sql.too_long", "sql.schema_change", "sql.unbounded_write", "sql.command_exec",
                      "sql.file_access"}),
    "code": _CODE_IDS, "written_code": _CODE_IDS, "encoded": _CODE_IDS,
    "context": frozenset({"context.safety_device_off", "context.system_process_kill", "context.standing_access"}),
    "assumption": frozenset({"context.unconfirmed_assumption"}),
}
BUILTIN_RULE_IDS = frozenset().union(*BUILTIN_RULES.values())
# Ids only the policy's own `agents:` lists and `tools:` rules report: their entries are where to change them.
CONFIGURED_RULE_IDS = frozenset({
    "agent.deny_tools", "agent.allow_tools", "agent.high_risk_tools", "path.outside_roots", "path.denied",
    "url.ip_literal", "url.denied_domain", "url.domain_not_allowed", "shell.denied_command",
    "shell.command_not_allowed", "sql.unparsed", "sql.statement_not_allowed", "sql.denied_table",
    "number.not_a_number", "number.below_min", "number.above_max", "number.not_integer", "pattern.denied",
    "pattern.not_allowed", "pattern.unchecked", "path.unchecked"})


@dataclass(frozen=True, slots=True)
class AgentLists:
    allow: re.Pattern[str] | None  # None: every tool allowed
    deny: re.Pattern[str] | None  # deny and high-risk globs ignore case (see `_listed`)
    high_risk: re.Pattern[str] | None


class ToolPolicyDetector(Detector):
    name = "tool_policy"
    category = Category.TOOL_POLICY
    default_scope = Scope(kinds=frozenset({SegmentKind.TOOL_CALL}), phases=frozenset({Phase.RESPONSE}))

    def __init__(self, settings: Mapping[str, Any] | None = None, services: Any = None) -> None:
        super().__init__(settings, services)
        agents = self.setting("agents", dict, {})
        for agent in agents:
            if not isinstance(agent, str):  # `007:` is 7 to YAML, `off:` false: `str()` would match another agent
                raise SettingError(f"setting agents: agent key {agent!r} is not a string: quote it ('007', 'off')")
        entries = {agent: _entry(agents, agent, "agents", AGENT_KEYS) for agent in agents}
        default = entries.get(ANY_AGENT, {})
        self._agents = {str(agent): _lists(default, entry, str(agent)) for agent, entry in entries.items()}
        self._any_agent = _lists(default, {}, ANY_AGENT)
        tools = self.setting("tools", dict, {})
        self._tools = [(_globs([str(pattern)], re.IGNORECASE),
                        _argument_rules(str(pattern), _entry(tools, pattern, "tools", TOOL_KEYS))) for pattern in tools]
        self._rules_by_tool: dict[str, dict[str, tuple[str, ArgumentRule]]] = {}
        self.builtin = self.setting("builtin_rules", bool, True)
        self.disabled = _disabled_rules(self.setting("disabled_rules", list, [], items=str))
        # The built-in checks left with an id to report: the others are never run.
        self._checks = frozenset(check for check, ids in BUILTIN_RULES.items() if self.builtin and ids - self.disabled)
        self._builtin = {kind: rule for kind, rule in _builtin_rules(self.disabled).items() if kind in self._checks}

    async def scan(self, exchange: Exchange, ctx: ScanContext) -> list[Finding]:
        lists = self._agents.get(exchange.context.agent_id or "", self._any_agent)
        findings: list[Finding] = []
        # What the shell and code readers, and the policy's own patterns, may spend on this whole check.
        with shell_budget() as budget, pattern_checks():
            for segment in ctx.segments:
                call = segment.tool_call
                if call is None:
                    continue
                if not exchange.name_may_grow(segment):  # the final check judges the whole name
                    findings.extend(self._check_name(segment, call.name, lists, exchange.context.agent_id))
                if isinstance(call.arguments, dict):
                    findings.extend(self._check_arguments(segment, call.name, call.arguments,
                                                          exchange.tools.get(call.name)))
                    if "context" in self._checks:
                        findings.extend(self._finding(segment, call.name, path, "context", violation)
                                        for path, violation in context_violations(call.name, call.arguments, exchange)
                                        if violation.rule not in self.disabled)
                if "assumption" in self._checks:
                    findings.extend(self._assumption(segment, call.name, exchange))
        if budget.unread:
            ctx.signals[self.name] = {"shell_budget": budget.summary()}
        return findings

    def _assumption(self, segment: Segment, tool: str, exchange: Exchange) -> list[Finding]:
        """A call that acts on what the agent said it guessed (see assumption.py); located at the call's name,
        the evidence points at the agent's sentence."""
        found = unconfirmed_assumption(tool, exchange)
        if found is None:
            return []
        said, start, end = found
        where = said.locate(start, end)
        return [finding_at(self, locate_name(segment), f"{tool}: acts on a guess the agent stated instead of asking "
                           f"the user ({said.text[start:end]!r})", Severity.MEDIUM,
                           {"tool": tool, "kind": "context", "rule": "context.unconfirmed_assumption",
                            "source": {"pointer": where.pointer, "start": where.start, "end": where.end,
                                       "kind": said.kind.value}})]

    def _check_name(self, segment: Segment, tool: str, lists: AgentLists, agent: str | None) -> list[Finding]:
        who = f"agent {agent!r}" if agent else "this agent"
        evidence = {"tool": tool, "agent": agent}
        if _listed(lists.deny, tool):
            return [finding_at(self, locate_name(segment), f"tool {tool!r} is denied for {who}", Severity.HIGH,
                               {**evidence, "rule": "agent.deny_tools"})]
        if lists.allow and not lists.allow.match(tool):
            return [finding_at(self, locate_name(segment), f"tool {tool!r} is not in the allow list of {who}",
                               Severity.HIGH, {**evidence, "rule": "agent.allow_tools"})]
        if _listed(lists.high_risk, tool):
            return [finding_at(self, locate_name(segment), f"high-risk tool {tool!r} needs review",
                               Severity.MEDIUM, {**evidence, "rule": "agent.high_risk_tools"})]
        return []

    def _check_arguments(self, segment: Segment, tool: str, arguments: dict[str, Any], spec: ToolSpec | None
                         ) -> list[Finding]:
        configured = self._configured(tool)
        # (with `code.*` disabled, written source is still read as source, not as some other kind of argument)
        script = bool(self._builtin) and writes_script_file(tool, arguments)
        findings = []
        for path, value in leaves(arguments):
            kind, violations = self._judge(tool, path, value, configured, spec, script)
            for violation in violations:
                findings.append(self._finding(segment, tool, path, kind, violation))
        return findings

    def _judge(self, tool: str, path: ArgPath, value: Any, configured: dict[str, tuple[str, ArgumentRule]],
               spec: ToolSpec | None, script: bool = False) -> tuple[str, list[Violation]]:
        key = dotted(path)
        entry = configured.get(key) or configured.get(_strip_items(key))
        if entry is not None:
            return entry[0], _read(entry[1], value)
        if not self._builtin or not isinstance(value, str) or len(value) < 2:
            return "", []
        name = next((t for t in reversed(path) if isinstance(t, str)), None)
        kind = classify(tool, name, value, _property_schema(spec, path), script and len(path) == 1)
        rule = self._builtin.get(kind) if kind else None
        if rule is None:  # not a recognisable argument, or its check is disabled
            return "", []
        return kind, [v for v in _read(rule, value) if v.rule not in self.disabled]

    def _configured(self, tool: str) -> dict[str, tuple[str, ArgumentRule]]:
        """Argument rules of every `tools:` entry whose name pattern matches; cached per tool name."""
        rules = self._rules_by_tool.get(tool)
        if rules is None:
            rules = {}
            for pattern, tool_rules in self._tools:
                if _listed(pattern, tool):  # `Transfer_Funds ` is still transfer_funds
                    rules.update(tool_rules)
            # Real tool names are at most 64 characters (OpenAI, Anthropic, Gemini): a longer one is not kept,
            # so the memo holds at most 4,096 short names, never megabyte names a hostile body made up.
            if len(tool) <= MAX_CACHED_NAME and len(self._rules_by_tool) < 4096:
                self._rules_by_tool[tool] = rules
        return rules

    def _finding(self, segment: Segment, tool: str, path: ArgPath, kind: str, violation: Violation) -> Finding:
        argument = dotted(path)
        return finding_at(self, locate_argument(segment, path), f"{tool} {argument}: {violation.message}",
                          violation.severity, {"tool": tool, "argument": argument, "kind": kind,
                                               "rule": violation.rule})


MAX_CACHED_NAME = 256


def _read(rule: ArgumentRule, value: Any) -> list[Violation]:
    """`rule.check(value)`, and `shell.not_read` where the check's shell budget left the value unread."""
    budget = current_budget()
    unread = budget.unread
    violations = rule.check(value)
    return [*violations, not_read(budget)] if budget.unread > unread else violations


def _disabled_rules(ids: list[str]) -> frozenset[str]:
    """`disabled_rules`, every id a built-in rule's; a typo or an id of the policy's own rules is refused."""
    for rule in ids:
        if rule in CONFIGURED_RULE_IDS:
            raise ValueError(f"tool_policy: disabled_rules: {rule!r} is reported by the policy's own agents: or "
                             "tools: entries, not by a built-in rule: change that entry instead")
    unknown = sorted(set(ids) - BUILTIN_RULE_IDS)
    if not unknown:
        return frozenset(ids)
    close = {rule: difflib.get_close_matches(rule, BUILTIN_RULE_IDS, n=1) for rule in unknown}
    hints = [f"{near[0]!r} for {rule!r}" if len(unknown) > 1 else repr(near[0]) for rule, near in close.items() if near]
    hint = f"; did you mean {', '.join(hints)}?" if hints else ""
    known = "" if len(hints) == len(unknown) else f"; built-in rule ids: {sorted(BUILTIN_RULE_IDS)}"
    raise ValueError(f"tool_policy: unknown rule ids in disabled_rules: {unknown}{hint}{known}")


def _builtin_rules(disabled: frozenset[str]) -> dict[str, ArgumentRule]:
    """The built-in rule of each argument kind; a check the rule can switch off is off when its id is disabled."""
    path = {"sensitive": "path.sensitive" not in disabled, "traversal": "path.traversal" not in disabled}
    url = {"allow_private": "url.private" in disabled}
    return {"path": PathRule(path), "script": ScriptRule(path), "url": UrlRule(url), "shell": ShellRule(),
            "sql": SqlRule(), "code": CodeRule(), "written_code": CodeRule(written=True), "encoded": EncodedRule()}


def _lists(default: Mapping[str, Any], agent: Mapping[str, Any], name: str) -> AgentLists:
    """An agent's own allow list replaces the default one; deny and high-risk lists add up."""
    here, everyone = f"agents.{name}.", f"agents.{ANY_AGENT}."
    allow = (string_list(agent, "allow_tools", here) if "allow_tools" in agent
             else string_list(default, "allow_tools", everyone))
    deny = string_list(default, "deny_tools", everyone) + string_list(agent, "deny_tools", here)
    high_risk = string_list(default, "high_risk_tools", everyone) + string_list(agent, "high_risk_tools", here)
    return AgentLists(_globs(allow), _globs(deny, re.IGNORECASE), _globs(high_risk, re.IGNORECASE))


def _listed(globs: re.Pattern[str] | None, tool: str) -> bool:
    """A deny, high-risk or `tools:` glob matches the name as written, or as a reader reads it (case, invisible
    and look-alike characters, whitespace, a namespace prefix): `Delete_Files` and `functions.delete_files` are
    still `delete_*` to a client that looks names up loosely. (Allow lists stay exact: `tool_undeclared`
    reports a disguised name.)"""
    if globs is None:
        return False
    return any(globs.match(name) for name in (tool, name_key(tool), name_key(without_namespace(tool))))


def _entry(settings: Mapping[str, Any], key: Any, where: str, known: tuple[str, ...]) -> Mapping[str, Any]:
    """One agent's or tool's entry: a mapping of `known` keys, or empty when left blank."""
    entry: Mapping[str, Any] = read_setting(settings, key, dict, {}, where=f"{where}.")
    refuse_unknown_keys(entry, known, f"tool_policy.{where}.{key}")
    return entry


def _argument_rules(tool: str, raw: Mapping[str, Any]) -> dict[str, tuple[str, ArgumentRule]]:
    rules: dict[str, tuple[str, ArgumentRule]] = {}
    for argument, constraint in read_setting(raw, "arguments", dict, {}, where=f"tools.{tool}.").items():
        where = f"tool_policy.tools.{tool}.arguments.{argument}"
        if not isinstance(constraint, Mapping):
            raise SettingError(f"{where}: must be a mapping with a type (e.g. {{type: number, max: 1000}}), "
                               f"not {constraint!r}")
        kind = constraint.get("type")
        if kind not in RULE_TYPES:
            close = difflib.get_close_matches(str(kind), RULE_TYPES, n=1) if isinstance(kind, str) else []
            hint = f", not {kind!r}" + (f"; did you mean {close[0]!r}?" if close else "") if kind is not None else ""
            raise SettingError(f"{where}: type must be one of {sorted(RULE_TYPES)}{hint}")
        # The keys the rule reads are the ones it knows: any other is a typo that would switch part of it off.
        recorded = RecordedSettings(constraint)
        recorded.asked["type"] = None
        try:
            rules[str(argument)] = (kind, RULE_TYPES[kind](recorded))
            refuse_unknown_keys(constraint, recorded.asked, where)
        except SettingError as exc:
            if str(exc).startswith(where):
                raise
            raise SettingError(f"{where}: {exc}") from exc  # the same key repeats across tools: name the rule
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from exc
    return rules


def _globs(patterns: list[str], flags: int = 0) -> re.Pattern[str] | None:
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns), flags)


def _strip_items(key: str) -> str:
    """A rule on "recipients" covers each element "recipients.*"."""
    while key.endswith(".*"):
        key = key[:-2]
    return key


def _property_schema(spec: ToolSpec | None, path: ArgPath) -> Mapping[str, Any] | None:
    schema: Any = spec.parameters if spec is not None else None
    for token in path:
        if not isinstance(schema, Mapping):
            return None
        if isinstance(token, str):
            properties = schema.get("properties")  # a declared schema is the caller's: `true`, a list...
            schema = properties.get(token) if isinstance(properties, Mapping) else None
        else:
            schema = schema.get("items")
    return schema if isinstance(schema, Mapping) else None
