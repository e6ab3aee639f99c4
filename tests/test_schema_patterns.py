"""Declared `pattern`s and `patternProperties` keys are searched with a time limit (detectors/_schema_guard.py), not
judged by their shape: a pattern that backtracks on a value leaves that value unjudged and says so, never hangs.

The tool schemas are the caller's input (or a remote MCP server's tool list): the slow patterns below are what a
hostile or careless one declares. No test measures time: a hang shows as the suite's own duration.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from tool_bodies import body, scan

from detectors._schema_guard import (
    MAX_COMPILED_SIZE,
    _CompiledPatterns,
    compiled_pattern,
    compiled_size,
    declared_pattern,
    guarded_schema,
    pattern_checks,
)
from detectors.tool_schema import ToolSchemaDetector
from guardrails.findings import Finding

NOTE = ("pattern_unchecked", "low")
MISMATCH = ("pattern", "high")


def findings(arguments: dict[str, Any], schema: dict[str, Any], tool: str = "create_ticket") -> list[Finding]:
    check_body = body("openai.chat", tool, {}, schema=schema)
    check_body["response"]["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] = json.dumps(arguments)
    return scan(ToolSchemaDetector(), check_body)


def rules(found: list[Finding]) -> list[tuple[str, str]]:
    return [(f.evidence.get("rule"), f.severity.value) for f in found]


def ticket_schema(tag_pattern: str) -> dict[str, Any]:
    """A ticketing tool as an MCP server lists it: the `tag` pattern is the server's choice."""
    return {"type": "object", "required": ["title", "tag"], "properties": {
        "title": {"type": "string", "minLength": 1},
        "tag": {"type": "string", "pattern": tag_pattern},
        "priority": {"type": "string", "enum": ["low", "normal", "high"]}}}


@pytest.mark.parametrize(("pattern", "tag"), [
    ("^(a|aa)+$", "a" * 40 + "!"),  # overlapping alternatives: exponential in a backtracking engine
    ("^(\\w|\\d)+$", "1" * 40 + "!"),
    ("^(a+)+$", "a" * 40 + "!"),  # nested repeats
])
def test_a_backtracking_pattern_never_hangs_and_never_passes_silently(pattern: str, tag: str) -> None:
    """Each ran for minutes in `re` (the first two were not caught by the old shape test). Now the value is either
    judged (regex answers some of these at once) or reported as not checked."""
    found = findings({"title": "Disk full on build-7", "tag": tag}, ticket_schema(pattern))
    assert rules(found) in ([MISMATCH], [NOTE])
    assert found[0].evidence["path"] == ["tag"]


def test_a_search_that_runs_out_of_time_is_a_low_note_at_the_value() -> None:
    found = findings({"title": "Disk full on build-7", "tag": "a" * 40 + "!"}, ticket_schema("^(a|aa)+$"))
    assert rules(found) == [NOTE]
    note = found[0]
    assert note.evidence == {"tool": "create_ticket", "path": ["tag"], "rule": "pattern_unchecked",
                             "pattern": "^(a|aa)+$", "reason": "timeout", "values": 1}
    assert note.message.startswith("'create_ticket' tag: not checked against pattern '^(a|aa)+$': the search ran")


@pytest.mark.parametrize(("pattern", "good", "bad"), [
    ("^[a-z]+$", "backend", "Backend-2"),
    ("\\d{3}", "room 101", "room 10"),
    ("^ORD-\\d{6}$", "ORD-004217", "ORD-4217"),
    ("^\\w+$", "caf\u00e9", "caf\u00e9 au lait"),  # \w is Unicode, as in `re`
    ("^\\d+$", "\u0661\u0662\u0663", "12a"),  # so is \d (Arabic-Indic digits)
    ("^[^\\s@]+@[^\\s@]+\\.[a-z]{2,}$", "ops@example.com", "ops@example"),
    ("(?i)^urgent", "URGENT: pager", "not urgent"),
    ("^(?:[0-9a-f]{2}:){5}[0-9a-f]{2}$", "00:1a:2b:3c:4d:5e", "00:1a:2b:3c:4d"),
])
def test_ordinary_patterns_judge_as_re_does(pattern: str, good: str, bad: str) -> None:
    assert re.search(pattern, good) and not re.search(pattern, bad)  # (the table itself is right)
    assert findings({"title": "t", "tag": good}, ticket_schema(pattern)) == []
    assert rules(findings({"title": "t", "tag": bad}, ticket_schema(pattern))) == [MISMATCH]


def test_an_invalid_pattern_still_makes_the_schema_invalid() -> None:
    """As before: a pattern `re` refuses fails the schema check, and an invalid declaration is skipped."""
    assert findings({"title": 5, "tag": "x"}, ticket_schema("[a-z")) == []


def env_schema(key_pattern: str, additional: Any) -> dict[str, Any]:
    """A deploy tool whose `env` map takes keys of a declared shape, each value a string."""
    env = {"type": "object", "patternProperties": {key_pattern: {"type": "string"}}}
    env.update(additional)
    return {"type": "object", "properties": {"service": {"type": "string"}, "env": env}}


@pytest.mark.parametrize("closing", [{"additionalProperties": False}, {"unevaluatedProperties": False}])
def test_a_slow_pattern_properties_key(closing: dict[str, Any]) -> None:
    """A key the pattern cannot judge counts as matching it: its value is still checked against that pattern's
    subschema, the key is not called extra, and the note says which key went unjudged."""
    slow_key = "a" * 40 + "!"
    found = findings({"service": "api", "env": {slow_key: 3}}, env_schema("^(a|aa)+$", closing), tool="deploy")
    assert rules(found) == [("type", "high"), NOTE]
    assert found[0].evidence["path"] == ["env", slow_key]
    assert found[1].evidence["path"] == ["env", slow_key]
    assert found[1].evidence["pattern"] == "^(a|aa)+$"


def test_pattern_properties_still_judge_ordinary_keys() -> None:
    schema = env_schema("^[A-Z_][A-Z0-9_]*$", {"additionalProperties": False})
    arguments = {"service": "api", "env": {"LOG_LEVEL": "debug", "PORT": 8080, "db-url": "postgres://db/app"}}
    found = findings(arguments, schema, tool="deploy")
    assert sorted((f.evidence["rule"], tuple(f.evidence["path"])) for f in found) == [
        ("additionalProperties", ("env", "db-url")), ("type", ("env", "PORT"))]


def test_pattern_properties_are_matched_one_at_a_time() -> None:
    """jsonschema joined them with `|`: a later pattern with a global flag, `(?i)`, made the join an error (a
    detector_error on every call of the tool)."""
    schema = {"type": "object", "additionalProperties": False,
              "patternProperties": {"^x-": {"type": "string"}, "(?i)^label_": {"type": "string"}}}
    found = findings({"x-team": "infra", "LABEL_env": "prod", "owner": "sre"}, schema, tool="tag_resource")
    assert [(f.evidence["rule"], f.evidence["path"]) for f in found] == [("additionalProperties", ["owner"])]


def test_the_check_has_one_budget_for_all_its_searches() -> None:
    """Twenty slow values: the first searches time out, the rest are not started once the check's budget is
    spent. One note per pattern, counting the values it did not judge."""
    schema = {"type": "object", "properties": {
        f"tag{i}": {"type": "string", "pattern": "^(a|aa)+$"} for i in range(20)}}
    found = findings({f"tag{i}": "a" * (40 + i) + "!" for i in range(20)}, schema)
    assert rules(found) == [NOTE]
    assert found[0].evidence["values"] == 20
    assert found[0].evidence["path"] == ["tag0"]


def test_a_spent_budget_judges_nothing_more() -> None:
    with pattern_checks(budget=0) as checks:
        assert checks.matches("^[a-z]+$", "abc") is None
    assert [(u.pattern, u.text, u.reason) for u in checks.unchecked] == [("^[a-z]+$", "abc", "budget")]
    with pattern_checks() as checks:
        assert checks.matches("^[a-z]+$", "abc") is True
        assert checks.matches("^[a-z]+$", "ab1") is False
    assert checks.unchecked == []


@pytest.mark.parametrize(("pattern", "size"), [
    ("^[a-z]+$", 3), ("x{3}", 3), ("(ab){2,5}", 4), ("(?:ab){2,5}", 6), ("a{0,9}", 1), ("^.{1,65536}$", 3),
    ("\\N{BULLET}{4}", 4), ("[{]{5}", 5), ("(?#{9999})a", 1), ("(?:a{1000}){1000}", 1_001_000),
])
def test_compiled_size_counts_what_regex_lays_out(pattern: str, size: int) -> None:
    assert compiled_size(pattern) == size


def test_a_pattern_regex_would_unroll_into_gigabytes_is_not_compiled() -> None:
    """regex lays a counted repeat's body out `min` times: `((a{1000}){1000}){1000}` (which `re` compiles at once)
    took all the memory of the machine. Such a pattern is reported as not checked."""
    assert compiled_size("((a{1000}){1000}){1000}") > MAX_COMPILED_SIZE
    assert compiled_pattern("((a{1000}){1000}){1000}") == "too_large"
    found = findings({"title": "t", "tag": "a"}, ticket_schema("((a{1000}){1000}){1000}"))
    assert [(f.evidence["rule"], f.evidence["reason"]) for f in found] == [("pattern_unchecked", "too_large")]


def test_the_compiled_pattern_cache_is_bounded_by_size() -> None:
    cache = _CompiledPatterns(capacity=10)
    for name, size in [("a", 4), ("b", 4), ("c", 4)]:
        cache.put(name, "too_large", size)
    assert cache.get("a") is None and cache.get("b") == "too_large" and cache.get("c") == "too_large"


def test_sentinels_keep_the_declared_pattern_and_only_where_needed() -> None:
    plain = env_schema("^(a|aa)+$", {"additionalProperties": False})
    assert guarded_schema(plain) is plain
    rewritten = guarded_schema(env_schema("^(a|aa)+$", {"unevaluatedProperties": False}))
    (key,) = rewritten["properties"]["env"]["patternProperties"]
    assert key != "^(a|aa)+$" and declared_pattern(key) == "^(a|aa)+$"
    assert re.search(key, "a" * 40 + "!")  # (what jsonschema's own bookkeeping runs: a comment, at once)
    # a property named like a keyword is a name, not the keyword
    named = {"properties": {"patternProperties": {"type": "string"}}, "unevaluatedProperties": False}
    assert guarded_schema(named) == named
