"""SQL, parsed with sqlglot: schema and permission changes, unbounded writes, stacked statements."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import SqlglotError

from detectors._choices import read_choice
from detectors.tool_policy.base import Violation, string_list
from guardrails.detector import SettingError, read_setting
from guardrails.findings import Severity

# sqlglot logs a warning for every statement it keeps as an opaque Command (GRANT...); we judge those ourselves.
logging.getLogger("sqlglot").setLevel(logging.ERROR)

# What makes a string SQL rather than prose that starts with "delete" or "select".
LOOKS_LIKE_SQL = re.compile(
    r"""(?isx)^\s*(?:
        select\s.+?\sfrom\s | select\s[^;]*;\s*\w | insert\s+into\s | update\s+[\w."`\[\]]+\s+set\s | delete\s+from\s
        | drop\s+(?:table|database|schema|view|index|user|role)\s | truncate\s+(?:table\s+)?[\w."`]+
        | alter\s+(?:table|user|database|role|system)\s | grant\s+\w[\w\s,]*\s+(?:on|to)\s | revoke\s
        | create\s+(?:table|user|database|role|or\s+replace)\s | with\s+\w+\s+as\s*\( | merge\s+into\s
    )"""
)
SCHEMA_CHANGES = {exp.Drop: "DROP", exp.TruncateTable: "TRUNCATE", exp.Alter: "ALTER", exp.Grant: "GRANT",
                  exp.Revoke: "REVOKE"}
PRIVILEGED_COMMANDS = frozenset({"GRANT", "REVOKE", "ALTER", "DROP", "TRUNCATE", "COPY", "LOAD", "SHUTDOWN"})
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
        self.check = lru_cache(maxsize=2048)(self._check)  # type: ignore[method-assign]

    def check(self, value: Any) -> list[Violation]:
        return self._check(value)

    def _check(self, value: Any) -> list[Violation]:
        if not isinstance(value, str) or not value.strip():
            return []
        try:
            statements = [s for s in sqlglot.parse(value, read=self.dialect) if s is not None]
        except (SqlglotError, RecursionError, ValueError):
            return [Violation("sql.unparsed", "SQL could not be parsed", Severity.MEDIUM)] if self.allow else []
        out: list[Violation] = []
        if len(statements) > 1:
            out.append(Violation("sql.stacked", f"{len(statements)} stacked statements", Severity.HIGH))
        for statement in statements:
            out.extend(self._statement(statement))
        return out

    def _statement(self, statement: exp.Expression) -> list[Violation]:
        out: list[Violation] = []
        kind = statement_kind(statement)
        if kind in ("DROP", "TRUNCATE", "ALTER", "GRANT", "REVOKE") or kind in PRIVILEGED_COMMANDS:
            out.append(Violation("sql.schema_change", f"{kind} statement", Severity.HIGH))
        elif isinstance(statement, (exp.Delete, exp.Update)):
            where = statement.args.get("where")
            if where is None:
                out.append(Violation("sql.unbounded_write", f"{kind} without WHERE", Severity.HIGH))
            elif _always_true(where.this):
                out.append(Violation("sql.unbounded_write", f"{kind} with an always-true WHERE", Severity.HIGH))
        if self.allow and kind not in self.allow:
            out.append(Violation("sql.statement_not_allowed", f"{kind} is not an allowed statement",
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
        return str(statement.this).upper()
    if isinstance(statement, exp.Query):
        return "SELECT"
    return type(statement).__name__.upper()


def looks_like_sql(value: str) -> bool:
    return bool(LOOKS_LIKE_SQL.match(value))


def _always_true(condition: exp.Expression) -> bool:
    if isinstance(condition, exp.Boolean):
        return bool(condition.this)
    if isinstance(condition, exp.EQ):
        left, right = condition.left, condition.right
        return isinstance(left, exp.Literal) and isinstance(right, exp.Literal) and left.this == right.this
    if isinstance(condition, exp.Or):
        return _always_true(condition.left) or _always_true(condition.right)
    return False
