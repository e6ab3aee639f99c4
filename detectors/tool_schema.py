"""`tool_schema`: tool-call arguments against the declared JSON Schema, and calls against `tool_choice`.

vLLM's tool parsers do not validate arguments unless decoding was constrained (shared/reference/vllm.md §3.2):
arguments may be broken JSON, a double-encoded string, or an object that ignores the schema.

Calls the provider runs itself (`ToolCall.hosted`: web search, code execution, MCP servers) have no JSON Schema
in the request: they are validated only where the request declares one for their name (a client tool of the
same name); the provider checks its own tools' input when it runs them.

A `partial` check (a mid-stream re-check, `Exchange.partial`) sees calls still arriving: arguments that are not
JSON yet, or none yet. Those are not judged until they are complete (the stream's final check judges them all),
nor is a `tool_choice` that asks for a call the stream has not reached yet. Complete arguments are judged as usual.

What a default validator lets through, and this one does not: a key written twice in the arguments (parsers
disagree on which value counts, so the tool may run the one no check read); an extra argument to a `strict`
tool whose schema does not say `additionalProperties: false` (strict mode means the declared shape, exactly);
`format`s whose checker needs a package that is not installed (uri, date-time, hostname...: checked here).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

import orjson
from jsonschema import FormatChecker, SchemaError, ValidationError, validators
from jsonschema.protocols import Validator
from referencing.exceptions import Unresolvable

from detectors._argspans import ArgPath, argument_spans, finding_at, locate_argument, locate_name
from detectors._schema_formats import with_fallback_formats
from detectors._schema_guard import (
    OFFLINE_REGISTRY,
    REASONS,
    Unchecked,
    additional_keys,
    current_checks,
    guarded_schema,
    guarded_validator,
    pattern_checks,
    unchecked_by_pattern,
)
from guardrails.detector import Detector, ScanContext, Scope
from guardrails.exchange import Exchange, Location, Phase, Segment, SegmentKind, ToolCall
from guardrails.findings import Category, Finding, Severity
from guardrails.memo import SizedMemo

VALIDATOR_CACHE_SIZE = 1024


class ToolSchemaDetector(Detector):
    name = "tool_schema"
    category = Category.TOOL_SCHEMA
    default_scope = Scope(kinds=frozenset({SegmentKind.TOOL_CALL}), phases=frozenset({Phase.RESPONSE}))

    def __init__(self, settings: Mapping[str, Any] | None = None, services: Any = None) -> None:
        super().__init__(settings, services)
        self.max_errors = self.setting("max_errors_per_call", int, 10, minimum=1)  # 0 would report no invalid argument
        self.check_tool_choice = self.setting("check_tool_choice", bool, True)
        # Schemas arrive as fresh dicts on every request: cache compiled validators by content (and strictness),
        # first in, first out. None (a broken declaration) is kept too: look keys up in `entries`.
        self._validators: SizedMemo[bytes, Validator | None] = SizedMemo(VALIDATOR_CACHE_SIZE)
        self._format_checkers: dict[type, FormatChecker] = {}

    async def scan(self, exchange: Exchange, ctx: ScanContext) -> list[Finding]:
        findings: list[Finding] = []
        with pattern_checks():  # one time budget for all the declared patterns this check searches
            for segment in ctx.segments:
                if segment.tool_call is not None and _has_known_schema(exchange, segment) \
                        and not (exchange.partial and _still_arriving(segment)):
                    findings.extend(self._check_arguments(exchange, segment))
        if self.check_tool_choice and exchange.has_response:
            findings.extend(self._check_tool_choice(exchange, ctx))
        return findings

    # --- arguments ----------------------------------------------------------------------------------
    def _check_arguments(self, exchange: Exchange, segment: Segment) -> list[Finding]:
        call = segment.tool_call
        assert call is not None
        whole = _locate(segment, ())
        evidence: dict[str, Any] = {"tool": call.name}
        if call.arguments_error is not None:
            return [finding_at(self, whole, f"arguments of {call.name!r} are not valid JSON",
                               Severity.HIGH, {**evidence, "error": call.arguments_error})]
        arguments = call.arguments
        if isinstance(arguments, str):
            inner = _try_json(arguments)
            note = " (they decode to a JSON object)" if isinstance(inner, dict) else ""
            message = f"arguments of {call.name!r} are a double-encoded JSON string{note}"
            return [finding_at(self, whole, message, Severity.HIGH, {**evidence, "error": "double_encoded"})]
        if not isinstance(arguments, dict):
            message = f"arguments of {call.name!r} must be a JSON object, got {_json_type(arguments)}"
            return [finding_at(self, whole, message, Severity.HIGH, {**evidence, "error": "not_object"})]
        findings = [] if call.arguments_is_object else self._duplicate_keys(segment, call, evidence)
        spec = exchange.tools.get(call.name)
        if spec is None or not isinstance(spec.parameters, Mapping) or not spec.parameters:
            return findings  # undeclared tools are tool_undeclared's business
        validator = self._validator(spec.parameters, spec.strict)
        if validator is None:
            return findings
        checks = current_checks()
        already_unchecked = len(checks.unchecked)
        try:
            for error in validator.iter_errors(arguments):
                findings.extend(self._error_findings(segment, error, evidence))
                if len(findings) >= self.max_errors:
                    break
        except Unresolvable:  # a `$ref` to nowhere (never fetched): the declaration is broken, as if invalid
            self._validators.put(_schema_key(spec.parameters, spec.strict), None)
            return findings[: self.max_errors]
        except RecursionError:
            pass  # a `$ref` cycle, or arguments nested deeper than Python's stack: what was found so far stands
        notes = self._unchecked_notes(segment, arguments, checks.unchecked[already_unchecked:], evidence)
        return findings[: self.max_errors] + notes[: self.max_errors]

    def _duplicate_keys(self, segment: Segment, call: ToolCall, evidence: dict[str, Any]) -> list[Finding]:
        """A key written twice: this check (like Python) read the last value, a first-wins parser runs the other."""
        findings = []
        for path, count in duplicate_keys(call.arguments_raw, call.arguments):
            where = "/".join(str(t) for t in path)
            message = (f"{evidence['tool']!r} {where}: key written {count} times; parsers disagree on which value "
                       "counts, and the checks read only the last")
            findings.append(finding_at(self, _locate(segment, path), message, Severity.HIGH,
                                       {**evidence, "path": list(path), "rule": "duplicate_key"}))
        return findings

    def _validator(self, schema: Mapping[str, Any], strict: bool = False) -> Validator | None:
        key = _schema_key(schema, strict)
        known = self._validators.entries
        if key in known:
            return known[key]
        cls = validators.validator_for(schema, default=validators.Draft202012Validator)
        try:
            cls.check_schema(schema)
            validator: Validator | None = guarded_validator(cls)(
                guarded_schema(closed(schema) if strict else schema), registry=OFFLINE_REGISTRY,
                format_checker=self._format_checker(cls))
        except (SchemaError, RecursionError):
            validator = None  # a broken (or too deep) declaration is the caller's bug, not the model's
        return self._validators.put(key, validator)

    def _format_checker(self, cls: type) -> FormatChecker:
        checker = self._format_checkers.get(cls)
        if checker is None:
            checker = self._format_checkers[cls] = with_fallback_formats(cls.FORMAT_CHECKER)  # type: ignore[attr-defined]
        return checker

    def _error_findings(self, segment: Segment, error: ValidationError, evidence: dict[str, Any]
                        ) -> list[Finding]:
        path: ArgPath = tuple(error.absolute_path)
        kind = str(error.validator)
        base = {**evidence, "path": list(path), "rule": kind}
        if kind == "additionalProperties" and isinstance(error.instance, dict):
            extras = additional_keys(error.instance, error.schema)
            return [finding_at(self, _locate(segment, (*path, key)),
                               f"unexpected argument {key!r} for {evidence['tool']!r}",
                               Severity.MEDIUM, {**base, "path": [*path, key]}) for key in extras]
        severity = Severity.MEDIUM if kind in ("additionalProperties", "format") else Severity.HIGH
        where = "/".join(str(t) for t in path) or "arguments"
        message = f"{evidence['tool']!r} {where}: {error.message}"
        return [finding_at(self, _locate(segment, path), message[:300], severity, base)]

    def _unchecked_notes(self, segment: Segment, arguments: dict[str, Any], unchecked: list[Unchecked],
                         evidence: dict[str, Any]) -> list[Finding]:
        """Values a declared pattern did not judge in time (one note per pattern, at the first such value). Low:
        not the model's error, and blocking on them would let a slow pattern in the caller's own schema stop every
        call; a gateway that must not pass an unverified value acts on `rule: pattern_unchecked`."""
        notes = []
        for pattern, misses in unchecked_by_pattern(unchecked).items():
            texts = list(dict.fromkeys(miss.text for miss in misses))
            path = path_of_text(arguments, texts[0])
            where = "/".join(str(t) for t in path) or "arguments"
            reason = misses[0].reason
            message = f"{evidence['tool']!r} {where}: not checked against pattern {pattern!r}: {REASONS[reason]}"
            notes.append(finding_at(self, _locate(segment, path), message[:300], Severity.LOW, {
                **evidence, "path": list(path), "rule": "pattern_unchecked", "pattern": pattern[:200],
                "reason": reason, "values": len(texts)}))
        return notes

    # --- tool_choice -------------------------------------------------------------------------------
    def _check_tool_choice(self, exchange: Exchange, ctx: ScanContext) -> list[Finding]:
        mode, names = normalize_tool_choice(exchange.tool_choice)
        if mode in (None, "auto"):
            return []
        calls = [s for s in exchange.segments if s.phase is Phase.RESPONSE and s.tool_call is not None]
        # Allowed-tool lists name client tools; a hosted tool (listed by type, if at all) is not judged by them.
        named_calls = [s for s in calls if s.tool_call is not None and not s.tool_call.hosted]
        findings = []
        if mode == "none":  # no tool at all, the provider's included (a name still arriving is a call already)
            for segment in calls:
                assert segment.tool_call is not None
                findings.append(finding_at(
                    self, _name_location(segment), f"tool_choice is 'none' but the model called "
                    f"{segment.tool_call.name!r}", Severity.HIGH, {"tool_choice": "none"}))
        elif mode == "required" and not calls and _ended(exchange):
            findings.append(finding_at(self, Location("/response"), "tool_choice requires a tool call but "
                                       "the response has none", Severity.MEDIUM, {"tool_choice": "required"}))
        elif mode in ("required", "named") and names:
            for segment in named_calls:
                assert segment.tool_call is not None
                if segment.tool_call.name not in names and not exchange.name_may_grow(segment):
                    findings.append(finding_at(
                        self, _name_location(segment), f"tool_choice allows {sorted(names)} but the model "
                        f"called {segment.tool_call.name!r}", Severity.HIGH, {"tool_choice": sorted(names)}))
            if mode == "named" and not named_calls and _ended(exchange):
                findings.append(finding_at(self, Location("/response"), f"tool_choice names {sorted(names)} "
                                           "but the response has no tool call", Severity.MEDIUM,
                                           {"tool_choice": sorted(names)}))
        return findings


def _schema_key(schema: Mapping[str, Any], strict: bool) -> bytes:
    """The cache key of a schema's validator: its content. orjson refuses integers past 64 bits and nesting past
    255 levels, json.dumps nesting past Python's stack; such a schema gets one key, and so no validator."""
    suffix = b"+strict" if strict else b""
    try:
        return orjson.dumps(schema, option=orjson.OPT_SORT_KEYS) + suffix
    except TypeError:  # (orjson.JSONEncodeError is a TypeError)
        pass
    try:
        return json.dumps(schema, sort_keys=True, default=repr).encode() + suffix
    except (RecursionError, ValueError, TypeError):
        return b"<unreadable schema>" + suffix


def _still_arriving(segment: Segment) -> bool:
    """Arguments a stream may still be sending: not valid JSON (yet), or none at all (the adapters read a call
    whose name came before any argument text as `{}`). A finished call like that is judged by the final check."""
    call = segment.tool_call
    assert call is not None
    return call.arguments_error is not None or call.arguments == {}


def _ended(exchange: Exchange) -> bool:
    """The response is complete and not cut by the token limit: a call it lacks will not come."""
    return not exchange.partial and exchange.generation.finish_reason != "length"


def _has_known_schema(exchange: Exchange, segment: Segment) -> bool:
    """A client call always has one to check against (or is tool_undeclared's); a hosted call only where the
    request declares a schema under its name."""
    call = segment.tool_call
    if call is None or not call.hosted:
        return True
    spec = exchange.tools.get(call.name)
    return spec is not None and isinstance(spec.parameters, Mapping) and bool(spec.parameters)


def normalize_tool_choice(choice: Any) -> tuple[str | None, frozenset[str]]:
    """(mode, allowed names) from any API's tool choice: mode is auto, none, required or named.

    OpenAI chat: "none"/"auto"/"required"/{"type": "function", "function": {"name"}}; Responses:
    {"type": "function", "name"} or {"type": "allowed_tools", "tools": [...]}; Anthropic: {"type":
    auto|any|tool|none, "name"}; Gemini: {"function_calling_config": {"mode": AUTO|ANY|NONE,
    "allowed_function_names"}}.
    """
    if choice is None:
        return None, frozenset()
    if isinstance(choice, str):
        mode = {"any": "required", "validated": "auto"}.get(choice.lower(), choice.lower())
        return (mode if mode in ("auto", "none", "required") else None), frozenset()
    if not isinstance(choice, Mapping):
        return None, frozenset()
    for key in ("function_calling_config", "functionCallingConfig"):
        if isinstance(choice.get(key), Mapping):
            return normalize_tool_choice(choice[key])
    if "mode" in choice and "type" not in choice:
        mode, _ = normalize_tool_choice(choice.get("mode"))
        allowed = choice.get("allowed_function_names") or choice.get("allowedFunctionNames") or ()
        names = frozenset(n for n in allowed if isinstance(n, str))
        return mode, names
    kind = str(choice.get("type", "")).lower()
    function = choice.get("function")
    name = function.get("name") if isinstance(function, Mapping) else choice.get("name")
    if isinstance(name, str) and kind in ("function", "tool", ""):
        return "named", frozenset({name})
    if kind == "allowed_tools":
        tools = choice.get("tools") or ()
        names = frozenset(t.get("name") or (t.get("function") or {}).get("name") for t in tools
                          if isinstance(t, Mapping)) - {None}
        required = str(choice.get("mode", "auto")).lower() == "required"
        return ("required" if required else "auto"), frozenset(n for n in names if isinstance(n, str))
    return normalize_tool_choice(kind) if kind else (None, frozenset())


def closed(schema: Any) -> Any:
    """A strict tool's schema as strict mode reads it: every object schema that lists `properties` and says
    nothing about other keys takes no other keys."""
    if isinstance(schema, list):
        return [closed(item) for item in schema]
    if not isinstance(schema, Mapping):
        return schema
    out = {key: closed(value) for key, value in schema.items()}
    if isinstance(schema.get("properties"), Mapping) and not {"additionalProperties", "patternProperties",
                                                               "unevaluatedProperties"} & set(schema):
        out["additionalProperties"] = False
    return out


_KEY = re.compile(r'"(?:[^"\\]|\\.)*"\s*:')


def duplicate_keys(raw: str, parsed: Any) -> list[tuple[ArgPath, int]]:
    """Keys written more than once in a JSON object text (`parsed`: as json.loads read it): the path of the (last)
    value, and the count.

    Counted first against the keys `parsed` kept: every key is followed by a colon (no more colons than keys: no
    repeat), and then by a regex (a key never hides from it; a string value that looks like one only costs the full
    read), so arguments without repeats are not parsed again."""
    colons = raw.count(":")
    if isinstance(parsed, dict) and colons <= len(parsed):
        return []  # (the common case: a flat object without colons in its values, counted without a walk)
    kept = _key_count(parsed)
    if colons <= kept or len(_KEY.findall(raw)) <= kept:
        return []
    repeated: list[tuple[dict[str, Any], str, int]] = []  # (the object, its repeated key, how many times)

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(items)
        counts: dict[str, int] = {}
        for key, _ in items:
            counts[key] = counts.get(key, 0) + 1
        repeated.extend((obj, key, n) for key, n in counts.items() if n > 1)
        return obj

    try:
        root = json.loads(raw, object_pairs_hook=pairs)
    except (ValueError, RecursionError):
        return []
    paths = {id(obj): path for path, obj in _objects(root)}
    return [((*paths.get(id(obj), ()), key), n) for obj, key, n in repeated]


# Both walk with a stack, not by recursion: arguments may nest as deep as the JSON parser allows (~1000 levels).
def _objects(value: Any) -> Iterator[tuple[ArgPath, Any]]:
    """Every object in a parsed JSON value, with its path."""
    stack: list[tuple[ArgPath, Any]] = [((), value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, dict):
            yield path, item
            stack.extend(((*path, key), child) for key, child in item.items())
        elif isinstance(item, list):
            stack.extend(((*path, index), child) for index, child in enumerate(item))


def _key_count(value: Any) -> int:
    count = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            count += len(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return count


def path_of_text(arguments: Any, text: str) -> ArgPath:
    """Where `text` first stands in the arguments, as a string value or as a key (the path of its value)."""
    stack: list[tuple[ArgPath, Any]] = [((), arguments)]
    while stack:
        path, item = stack.pop()
        if item == text and isinstance(item, str):
            return path
        if isinstance(item, dict):
            if text in item:
                return (*path, text)
            stack.extend(reversed([((*path, key), child) for key, child in item.items()]))
        elif isinstance(item, list):
            stack.extend(reversed([((*path, index), child) for index, child in enumerate(item)]))
    return ()


def _try_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _json_type(value: Any) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", list: "an array", type(None): "null"}.get(
        type(value), type(value).__name__)


def _locate(segment: Segment, path: ArgPath) -> Location:
    """`locate_argument`, never an empty span (start == end points at nothing): an empty string value is located
    with its quotes; arguments with no text at all (a call recovered without "arguments", `"arguments": ""`), at
    the call's name, which names the call the finding is about."""
    location = locate_argument(segment, path)
    if location.start is None or location.start != location.end:
        return location
    call = segment.tool_call
    if call is not None and call.arguments_is_object:
        return Location(location.pointer)  # the empty string value itself, as a whole value
    span = argument_spans(call.arguments_raw).get(path) if call is not None and path else None
    if span is not None and span[0] == span[1] > 0:
        quoted = segment.locate(span[0] - 1, span[1] + 1)
        if quoted.start != quoted.end:
            return quoted
    return _name_location(segment)


def _name_location(segment: Segment) -> Location:
    """The call's name; an empty name as the whole value that holds it, not an empty span."""
    location = locate_name(segment)
    if location.start is not None and location.start == location.end:
        return Location(location.pointer)
    return location
