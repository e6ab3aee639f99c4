"""SQL, parsed with sqlglot: schema and permission changes, unbounded writes (also inside a CTE, or behind a
WHERE that does not depend on the row), stacked statements, file access and command execution from SQL, and
the SQL a dynamic EXECUTE runs."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import SqlglotError
from sqlglot.optimizer.simplify import simplify

from detectors._choices import read_choice
from detectors.tool_policy.base import Violation, string_list
from guardrails.argspans import SizedMemo
from guardrails.detector import SettingError, read_setting
from guardrails.findings import Severity

# sqlglot logs a warning for every statement it keeps as an opaque Command (GRANT...); we judge those ourselves.
logging.getLogger("sqlglot").setLevel(logging.ERROR)

# What makes a string SQL rather than prose that starts with "delete" or "select".
LOOKS_LIKE_SQL = re.compile(
    r"""(?isx)^\s*(?:
        select\s.+?\sfrom\s | select\s[^;]*;\s*\w | insert\s+into\s | update\s+[\w."`\[\]]+\s+set\s | delete\s+from\s
        | drop\s+(?:table|database|schema|view|index|user|role)\s | truncate\s+(?:table\s+)?[\w."`]+
        | alter\s+(?:table|user|database|role|system)\s | grant\s+[\w,]+(?:\s+[\w,]+)*?\s+(?:on|to)\s | revoke\s
        | create\s+(?:table|user|database|role|or\s+replace)\s | with\s+\w+\s+as\s*\( | merge\s+into\s
        | select\s+[\w.]+\s*\([^()]*\)\s*;?\s*$ | exec(?:ute)?\s+(?:immediate\s|master\.|xp_|sp_)
        | load\s+data\s+(?:local\s+)?infile\s | copy\s+(?:\(|[\w."]+\s+(?:to|from)\s+(?:program\s|'|stdout|stdin))
    )"""
)
SCHEMA_CHANGES = {exp.Drop: "DROP", exp.TruncateTable: "TRUNCATE", exp.Alter: "ALTER", exp.Grant: "GRANT",
                  exp.Revoke: "REVOKE"}
PRIVILEGED_COMMANDS = frozenset({"GRANT", "REVOKE", "ALTER", "DROP", "TRUNCATE", "COPY", "LOAD", "SHUTDOWN",
                                 "CREATE USER", "CREATE ROLE", "CREATE LOGIN"})
WRITES = (exp.Delete, exp.Update, exp.Insert, exp.Merge)  # data-modifying statements, wherever they nest
# Reading or writing server files, or running programs, from SQL: the usual ways an injected query leaves the
# database. Matched on the text: sqlglot reads most of them only in their own dialect, or not at all.
COMMAND_EXEC = re.compile(r"(?i)\b(?:xp_cmdshell|sp_oacreate|sys_exec|sys_eval)\b")
COPY = re.compile(r"(?i)\bcopy\b")
TO_PROGRAM = re.compile(r"(?i)\b(?:to|from)\s+program\b")  # COPY ... TO PROGRAM 'cmd', in the same statement
FILE_ACCESS = re.compile(r"(?i)\binto\s+(?:out|dump)file\b|\bload\s+data\s+(?:local\s+)?infile\b"
                         r"|\b(?:load_file|pg_read_file|pg_read_binary_file|pg_ls_dir|lo_import|lo_export|"
                         r"openrowset|utl_file\.\w+)\s*\(|\bbulk\s+insert\b")
# Dynamic SQL: the statement runs a string (EXECUTE IMMEDIATE '...', EXEC('...'), sp_executesql, DO $$...$$,
# dblink_exec); its string literals that read as SQL are judged as SQL too. (`DO` only as PostgreSQL's statement:
# `ON CONFLICT DO NOTHING` runs no string.)
DYNAMIC = re.compile(r"(?i)\b(?:exec(?:ute)?|sp_executesql|dblink_exec|dblink|prepare)\b"
                     r"|\bdo\s+(?:\$|'|language\b)")
LITERAL = re.compile(r"'((?:[^']|'')*)'")
MAX_DEPTH = 2
# Longer SQL is not parsed (sqlglot takes ~4 ms per KB, a 4 MB query 17 s): reported as too long where it holds a
# statement that changes something, or wherever the policy allows only some statements.
MAX_LENGTH = 20_000
CHANGES = re.compile(r"(?i)\b(?:drop|truncate|alter|grant|revoke|delete|update|merge|create|copy|exec(?:ute)?)\b")
CLIENT_STREAMS = frozenset({"STDIN", "STDOUT"})  # COPY to or from the client, not a server file or program
# Values judged per rule, kept: agents resend their history every step. Bounded by bytes too: a value is the
# client's (4 MB); the latest one too big to keep with the others is kept alone.
MEMO_ENTRIES = 2048
MEMO_BYTES = 16 * 2**20
_VIOLATION_BYTES = 150  # a violation, its list slot and the entry's slots in the memo's tables
# An unknown dialect makes every parse fail, which would read as "not SQL": refused when the policy loads.
DIALECTS = tuple(sorted(name for name in Dialect.classes if name))


def _dialect(settings: Mapping[str, Any]) -> str | None:
    """The `dialect` setting: a sqlglot dialect name, optionally followed by that dialect's settings, as sqlglot
    reads it (`"mysql, normalization_strategy=lowercase"`). The name is one of DIALECTS; the settings are
    checked by sqlglot itself, since a wrong one would make every parse fail too."""
    value = read_setting(settings, "dialect", str)
    if value is None:
        return None
    read_choice({"dialect": value.split(",", 1)[0].strip()}, "dialect", DIALECTS)
    try:
        Dialect.get_or_raise(value)
    except ValueError as exc:
        raise SettingError(f"setting dialect: {value!r} is not valid: {exc}") from None
    return value


class SqlRule:
    """`{type: sql, dialect: postgres, allow_statements: [select], deny_tables: [...]}`."""

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        settings = settings or {}
        self.dialect = _dialect(settings)
        self.allow = frozenset(s.upper() for s in string_list(settings, "allow_statements"))
        self.deny_tables = frozenset(t.lower() for t in string_list(settings, "deny_tables"))
        self._judged: SizedMemo[str, list[Violation]] = SizedMemo(MEMO_ENTRIES, MEMO_BYTES, latest=True)

    def check(self, value: Any) -> list[Violation]:
        try:
            found = self._judged.entries.get(value)  # the hot path: a plain dict lookup
        except TypeError:  # unhashable: a list or an object, no SQL
            return []
        if found is None:
            if not isinstance(value, str):
                return []
            found = self._judged.get(value)
            if found is None:
                found = self._check(value)
                self._judged.put(value, found, sys.getsizeof(value) + sys.getsizeof(found) + sum(
                    _VIOLATION_BYTES + sys.getsizeof(v.message) for v in found))
        return found

    def _check(self, value: Any, depth: int = 0) -> list[Violation]:
        if not isinstance(value, str) or not value.strip():
            return []
        dynamic = DYNAMIC.search(value) is not None
        out = _escapes(value if dynamic else LITERAL.sub("''", value))  # quoted text is data, unless it is run
        if len(value) > MAX_LENGTH:
            return out + self._too_long(value)
        if depth < MAX_DEPTH and dynamic:
            for literal in LITERAL.findall(value):
                if looks_like_sql(literal := literal.replace("''", "'")):
                    out.extend(self._check(literal, depth + 1))
        try:
            statements = [s for s in sqlglot.parse(value, read=self.dialect) if s is not None]
            if len(statements) > 1:
                out.append(Violation("sql.stacked", f"{len(statements)} stacked statements", Severity.HIGH))
            for statement in statements:
                out.extend(self._statement(statement))
        except (SqlglotError, RecursionError, ValueError):  # (a condition nested past Python's stack, too)
            return out + ([Violation("sql.unparsed", "SQL could not be parsed", Severity.MEDIUM)] if self.allow else [])
        return out

    def _too_long(self, value: str) -> list[Violation]:
        if not self.allow and not CHANGES.search(value):
            return []
        return [Violation("sql.too_long", f"{len(value)} characters of SQL, over the {MAX_LENGTH} read statement by "
                          "statement: not judged", Severity.MEDIUM)]

    def _statement(self, statement: exp.Expression) -> list[Violation]:
        out: list[Violation] = []
        kind = statement_kind(statement)
        if _adds_columns_only(statement):  # additive: no row, column or table is lost
            out.append(Violation("sql.schema_change", "ALTER TABLE adding columns", Severity.LOW))
        elif kind in PRIVILEGED_COMMANDS and not _copies_with_client(statement):
            out.append(Violation("sql.schema_change", f"{kind} statement", Severity.HIGH))
        writes = list(statement.find_all(*WRITES))  # the statement itself, and a DELETE inside a CTE
        for write in writes:
            if not isinstance(write.parent, exp.When):  # MERGE's `WHEN MATCHED THEN UPDATE`: the ON bounds it
                out.extend(_unbounded(write, nested=write is not statement))
        if self.allow:
            for denied in sorted({kind, *(statement_kind(w) for w in writes)} - self.allow):
                out.append(Violation("sql.statement_not_allowed", f"{denied} is not an allowed statement",
                                     Severity.HIGH))
        if self.deny_tables:
            tables = {t.name.lower() for t in statement.find_all(exp.Table)}
            for table in sorted(tables & self.deny_tables):
                out.append(Violation("sql.denied_table", f"statement touches table {table!r}", Severity.HIGH))
        return out


def statement_kind(statement: exp.Expression) -> str:
    for cls, kind in SCHEMA_CHANGES.items():
        if isinstance(statement, cls):
            return kind
    if isinstance(statement, exp.Command):
        kind = str(statement.this).upper()
        target = str(statement.expression or "").split(maxsplit=1)[:1]
        return f"CREATE {target[0].upper()}" if kind == "CREATE" and target else kind
    if isinstance(statement, exp.Query):
        return "SELECT"
    return type(statement).__name__.upper()


def looks_like_sql(value: str) -> bool:
    return bool(LOOKS_LIKE_SQL.match(value))


def _adds_columns_only(statement: exp.Expression) -> bool:
    """`ALTER TABLE t ADD COLUMN c ...` (one or more): what migrations do every day. A DROP, RENAME, type change or
    constraint among the actions makes the statement a schema change like any other ALTER."""
    actions = statement.args.get("actions") or []
    return (isinstance(statement, exp.Alter) and str(statement.args.get("kind", "")).upper() == "TABLE"
            and bool(actions) and all(isinstance(action, exp.ColumnDef) for action in actions))


def _copies_with_client(statement: exp.Expression) -> bool:
    """`COPY t TO STDOUT` / `COPY t FROM STDIN`: an export or import through the client connection (psql's \\copy),
    which reaches no server file or program."""
    if not isinstance(statement, exp.Copy):
        return False
    files = statement.args.get("files") or []
    return bool(files) and all(isinstance(f, exp.Identifier) and f.name.upper() in CLIENT_STREAMS for f in files)


def _escapes(value: str) -> list[Violation]:
    out = []
    if COMMAND_EXEC.search(value) or _copies_to_program(value):
        out.append(Violation("sql.command_exec", "SQL runs an operating-system command", Severity.CRITICAL))
    if FILE_ACCESS.search(value):
        out.append(Violation("sql.file_access", "SQL reads or writes a server file", Severity.HIGH))
    return out


def _copies_to_program(value: str) -> bool:
    """`COPY ... TO PROGRAM` / `FROM PROGRAM` in one statement. Read statement by statement from its first COPY: a
    pattern that looked ahead from every `copy` word re-read the rest of the text each time."""
    for statement in value.split(";"):
        copy = COPY.search(statement)
        if copy is not None and TO_PROGRAM.search(statement, copy.end()):
            return True
    return False


def _unbounded(write: exp.Expression, nested: bool) -> list[Violation]:
    """A DELETE/UPDATE without a WHERE that selects rows; a MERGE whose ON matches every row."""
    kind = statement_kind(write)
    where = f"{kind} inside another statement" if nested else kind
    if isinstance(write, exp.Merge):
        on = write.args.get("on")
        always = on is not None and _always_true(on)
        return [Violation("sql.unbounded_write", f"{where} matching every row", Severity.HIGH)] if always else []
    if not isinstance(write, (exp.Delete, exp.Update)):
        return []
    condition = write.args.get("where")
    if condition is None:
        return [Violation("sql.unbounded_write", f"{where} without WHERE", Severity.HIGH)]
    if _always_true(condition.this):
        return [Violation("sql.unbounded_write", f"{where} with an always-true WHERE", Severity.HIGH)]
    return []


def _always_true(condition: exp.Expression) -> bool:
    """True for a condition every row meets: `1=1`, `'a'='a'`, `NOT 0`, `1`, `x OR 1=1`, `id = id`...

    A condition that reads no column is the same for every row: unless it is plainly false, it selects them all."""
    condition = condition.unnest()
    if isinstance(condition, exp.Or):  # a chain read as a list: a recursion per operand overflowed at ~1000
        return any(_always_true(operand) for operand in condition.flatten())
    if isinstance(condition, exp.And):
        return all(_always_true(operand) for operand in condition.flatten())
    if isinstance(condition, exp.EQ) and isinstance(condition.left, exp.Column) and condition.left == condition.right:
        return True  # a column compared with itself
    if condition.find(exp.Column) is not None:
        return False
    return not _plainly_false(simplify(condition.copy()))


def _plainly_false(constant: exp.Expression) -> bool:
    if isinstance(constant, exp.Boolean):
        return not constant.this
    if isinstance(constant, exp.Literal):
        return str(constant.this).strip().lower() in ("0", "", "false", "0.0")
    return isinstance(constant, exp.Null)
