"""Review of this session's tool checks: false positives on what coding, devops and data agents run every day,
crashes on odd input, and inputs whose cost grew far faster than their size. (Timings: bench/bench_tool_adversarial.py.)
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest
from tool_bodies import body, scan

from detectors.tool_policy import ToolPolicyDetector, shell, sql
from detectors.tool_policy.classify import looks_like_sql
from detectors.tool_policy.inline_code import opens_reverse_shell
from detectors.tool_policy.paths import PathRule
from detectors.tool_policy.shell import MAX_NESTING, MAX_READ, Reading, ShellRule
from detectors.tool_policy.shell_expand import expand
from detectors.tool_policy.sql import SqlRule
from detectors.tool_policy.urls import UrlRule
from detectors.tool_policy.windows import windows_violations
from detectors.tool_schema import ToolSchemaDetector
from guardrails.findings import Severity


def rules(violations: list[Any]) -> set[tuple[str, Severity]]:
    return {(v.rule, v.severity) for v in violations}


def schema_findings(arguments: dict[str, Any] | str, schema: dict[str, Any]) -> list[tuple[str, str]]:
    check_body = body("openai.chat", "t", {}, schema=schema)
    function = check_body["response"]["choices"][0]["message"]["tool_calls"][0]["function"]
    function["arguments"] = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return [(f.evidence.get("rule"), f.severity.value) for f in scan(ToolSchemaDetector(), check_body)]


# --- SQL: everyday statements that read as attacks ------------------------------------------------------------------

@pytest.mark.parametrize("statement", [
    # an upsert: the UPDATE in `WHEN MATCHED` is bounded by the MERGE's ON, not a write without WHERE
    "MERGE INTO target t USING source s ON t.id = s.id WHEN MATCHED THEN UPDATE SET t.v = s.v "
    "WHEN NOT MATCHED THEN INSERT (id, v) VALUES (s.id, s.v)",
    "SELECT 'copy from program' AS label",  # quoted words are data
    "SELECT * FROM alerts WHERE query_text ILIKE '%xp_cmdshell%'",
    "COPY users TO STDOUT WITH CSV HEADER",  # an export through the client (psql's \copy), no server file
    "COPY users FROM STDIN",
    "INSERT INTO audit (stmt) VALUES ('UPDATE users SET x = 1') ON CONFLICT DO NOTHING",  # DO NOTHING runs no string
])
def test_everyday_sql_stays_clean(statement: str) -> None:
    assert SqlRule().check(statement) == []


def test_a_client_copy_in_a_query_argument_stays_clean() -> None:
    check_body = body("openai.chat", "run_query", {"query": "COPY users TO STDOUT WITH CSV HEADER"})
    assert scan(ToolPolicyDetector(), check_body) == []


@pytest.mark.parametrize(("statement", "expected"), [
    ("EXEC('xp_cmdshell ''whoami''')", ("sql.command_exec", Severity.CRITICAL)),  # a string that is run
    ("SELECT 1; COPY (SELECT 1) TO PROGRAM 'id'", ("sql.command_exec", Severity.CRITICAL)),
    ("COPY users FROM '/etc/passwd'", ("sql.schema_change", Severity.HIGH)),  # a server file
    ("MERGE INTO t USING s ON 1=1 WHEN MATCHED THEN UPDATE SET t.v = s.v", ("sql.unbounded_write", Severity.HIGH)),
    ("DO $$ BEGIN EXECUTE 'DROP TABLE users'; END $$", ("sql.schema_change", Severity.HIGH)),
])
def test_the_attacks_beside_them_are_still_found(statement: str, expected: tuple[str, Severity]) -> None:
    assert expected in rules(SqlRule().check(statement))


def test_a_long_and_chain_is_read_without_overflowing_the_stack() -> None:
    """2,000 `1=1` joined by AND (16 KB): each operand was one recursion, a RecursionError past ~1000."""
    statement = "DELETE FROM t WHERE " + " AND ".join(["1=1"] * 2000)
    assert rules(SqlRule().check(statement)) == {("sql.unbounded_write", Severity.HIGH)}
    assert SqlRule().check("DELETE FROM t WHERE " + " OR ".join(f"id = {i}" for i in range(1500))) == []


def test_sql_past_the_length_cap_is_not_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 4 MB query took sqlglot 17 s; past MAX_LENGTH only the text patterns run, and a statement that changes
    something is reported as too long to judge."""
    def no_parse(*_: Any, **__: Any) -> None:
        raise AssertionError("parsed")

    monkeypatch.setattr(sql.sqlglot, "parse", no_parse)
    ids = ",".join(str(i) for i in range(sql.MAX_LENGTH // 4))  # longer than MAX_LENGTH
    assert rules(SqlRule().check(f"DELETE FROM t WHERE id IN ({ids})")) == {("sql.too_long", Severity.MEDIUM)}
    assert SqlRule().check(f"SELECT * FROM t WHERE id IN ({ids})") == []
    assert rules(SqlRule({"allow_statements": ["select"]}).check(f"SELECT * FROM t WHERE id IN ({ids})")) == {
        ("sql.too_long", Severity.MEDIUM)}
    assert ("sql.command_exec", Severity.CRITICAL) in rules(SqlRule().check(f"EXEC xp_cmdshell 'dir' -- {ids}"))


def test_grant_statements_are_still_recognised() -> None:
    assert looks_like_sql("GRANT SELECT, INSERT ON reports TO analyst")
    assert looks_like_sql("grant all privileges on db.* to 'eve'@'%'")
    assert not looks_like_sql("grant a" + " " * 5000)


# --- URLs, paths, formats ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("reference", ["/users/42", "/v1/chat?x=1", "./a", "../b", "?page=2", "#top"])
def test_a_relative_reference_names_no_host(reference: str) -> None:
    """Read as `http:///users/42`, the WHATWG reading took `users` for the host: every relative endpoint broke an
    allow list."""
    assert UrlRule({"allow_domains": ["api.example.com"], "schemes": ["https"]}).check(reference) == []


@pytest.mark.parametrize("url", ["/\\evil.test/x", "\\/evil.test", "//evil.test", "\\\\evil.test\\x", "/\t/evil.test"])
def test_a_scheme_relative_reference_still_names_its_host(url: str) -> None:
    found = UrlRule({"allow_domains": ["api.example.com"]}).check(url)
    assert ("url.domain_not_allowed", Severity.HIGH) in rules(found)


@pytest.mark.parametrize("path", [".env.example", "config/.env.sample", ".env.template", ".env.dist"])
def test_env_templates_are_not_secrets(path: str) -> None:
    assert PathRule().check(path) == []
    assert ShellRule().check(f"cat > {path} <<EOF\nDATABASE_URL=postgres://localhost/dev\nEOF") == []


@pytest.mark.parametrize("path", [".env", ".env.local", "app/.env.production"])
def test_env_files_are_still_secrets(path: str) -> None:
    assert ("path.sensitive", Severity.HIGH) in rules(PathRule().check(path))


@pytest.mark.parametrize(("fmt", "value"), [
    ("date-time", "2016-12-31T23:59:60Z"),  # a leap second
    ("date-time", "1990-12-31T15:59:60-08:00"),
    ("uri", "https://b\u00fccher.example/"),  # an IDN, as a client IDNA-encodes it
    ("uri", "https://en.wikipedia.org/wiki/Caf\u00e9"),
    ("uri-reference", "/wiki/Caf\u00e9"),
])
def test_valid_formats_pass(fmt: str, value: str) -> None:
    schema = {"type": "object", "properties": {"v": {"type": "string", "format": fmt}}}
    assert schema_findings({"v": value}, schema) == []


@pytest.mark.parametrize(("fmt", "value"), [
    ("date-time", "2024-02-30T23:59:60Z"), ("date-time", "2024-01-01T00:00:61Z"),
    ("uri", "https://b\u00fccher.example/a b"), ("uri", "not a uri"),
])
def test_invalid_formats_still_fail(fmt: str, value: str) -> None:
    schema = {"type": "object", "properties": {"v": {"type": "string", "format": fmt}}}
    assert schema_findings({"v": value}, schema) == [("format", "medium")]


# --- tool_schema: what a declared schema may not make the validator do ---------------------------------------------

def test_a_remote_ref_is_never_fetched(monkeypatch: pytest.MonkeyPatch) -> None:
    """jsonschema fetched any `$ref` it could not resolve, with urlopen: a request from this service to an address
    the caller (or an MCP server's tool list) chose, blocking the check, its answer then trusted as the schema."""
    fetched: list[Any] = []
    monkeypatch.setattr(urllib.request, "urlopen", lambda *args, **kwargs: fetched.append(args))
    schema = {"type": "object", "properties": {"v": {"$ref": "http://169.254.169.254/latest/meta-data/s.json"}}}
    assert schema_findings({"v": "x"}, schema) == []
    assert fetched == []


@pytest.mark.parametrize("schema", [
    {"type": "object", "properties": {"v": {"$ref": "#/$defs/missing"}}},
    {"type": "object", "properties": {"v": {"$ref": "urn:example:nowhere"}}},
    {"$ref": "#"},  # a cycle: recursion until Python's stack ran out
    {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"},
])
def test_a_ref_that_resolves_nowhere_is_skipped_like_an_invalid_schema(schema: dict[str, Any]) -> None:
    assert schema_findings({"v": {"v": "x"}}, schema) == []


def test_a_schema_orjson_cannot_write_is_still_used() -> None:
    """orjson refuses integers past 64 bits and nesting past 255 levels (the validator cache key): a TypeError out
    of the detector. A schema that deep is past what the validator's recursion can read, and is skipped."""
    schema = {"type": "object", "properties": {"v": {"type": "integer", "maximum": 10 ** 30}}}
    assert schema_findings('{"v": 1000000000000000000000000000000000}', schema) == [("maximum", "high")]
    deep: dict[str, Any] = {"type": "string"}
    for _ in range(300):
        deep = {"type": "object", "properties": {"v": deep}}
    assert schema_findings({"v": 5}, deep) == []


def test_duplicate_keys_in_deeply_nested_arguments() -> None:
    """The key count walked the arguments by recursion: 450 levels of objects in lists overflowed the stack."""
    nested = '{"a": [' * 450 + '"x"' + "]}" * 450
    found = schema_findings('{"command": "rm -rf /", "command": ' + nested + "}", {"type": "object"})
    assert found == [("duplicate_key", "high")]


# (Declared patterns that backtrack: tests/test_schema_patterns.py.)


# --- shell: nesting, and the patterns that re-read the text --------------------------------------------------------

def test_each_nested_command_line_is_parsed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """`bash -c $(bash -c $(...))`: each level's script was judged inside every level around it; 25 levels
    (283 characters) took minutes. Now each nested text is parsed once."""
    parsed: list[str] = []
    real_parse = shell.parse
    monkeypatch.setattr(shell, "parse", lambda text: parsed.append(text) or real_parse(text))
    depth = 8
    ShellRule().check("bash -c " + "$(bash -c " * depth + "ls" + ")" * depth)
    assert len(parsed) == len(set(parsed)) <= depth + 3


def test_substitutions_nested_too_deep_are_split_by_words_only() -> None:
    command = "rm -rf / " + "$(" * (MAX_NESTING + 1) + "ls" + ")" * (MAX_NESTING + 1)
    assert rules(ShellRule().check(command)) == {("shell.too_complex", Severity.MEDIUM),
                                                 ("shell.destructive", Severity.CRITICAL)}
    assert ShellRule().check("echo " + "$(" * MAX_NESTING + "date" + ")" * MAX_NESTING) == []


def test_a_check_parses_at_most_its_budget() -> None:
    reading = Reading()
    texts = [f"rm -rf x{i} " + "a" * (MAX_READ // 4 + 100) for i in range(4)]  # three fit, four do not
    assert all(reading.parse(text) for text in texts[:3])
    assert reading.parse(texts[3]) == []
    assert rules(reading) == {("shell.too_complex", Severity.MEDIUM)}


@pytest.mark.parametrize(("command", "expected"), [
    ("rd rd rd /s /q C:\\", {("shell.destructive", Severity.CRITICAL)}),  # the first verb of the statement
    ("del a.txt; Remove-Item -Recurse .\\build", {("shell.destructive", Severity.MEDIUM)}),
    ("Remove-Item .\\old.log; Get-ChildItem -Recurse", set()),  # the flag belongs to another statement
    ("powershell -NoProfile -WindowStyle Hidden -enc UgBlAG0AbwB2AGUALQBJAHQAZQBtACAALQBSAGUAYwB1AHIAcwBlACAAQwA6AFwA",
     {("shell.destructive", Severity.CRITICAL)}),
    ("pwsh -c Get-Date; echo -enc UgBlAG0AbwB2AGUALQBJAHQAZQBtACAALQBSAGUAYwB1AHIAcwBlACAAQwA6AFwA", set()),
])
def test_windows_rules_read_statement_by_statement(command: str, expected: set[tuple[str, Severity]]) -> None:
    assert rules(windows_violations(command)) == expected


def test_reverse_shell_needs_a_shell_after_the_socket() -> None:
    assert opens_reverse_shell("import socket,os;s=socket.socket();s.connect(('h',1));os.dup2(s.fileno(),0)")
    assert not opens_reverse_shell("import subprocess, socket; print(socket.gethostname())")


def test_brace_lists_expand_only_when_closed() -> None:
    assert expand("{rm,-rf,/}") == "rm -rf /"
    assert expand("echo {a,,b} x") == "echo a  b x"
    unclosed = "echo {" + "a," * 50
    assert expand(unclosed) == unclosed
