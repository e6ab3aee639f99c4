"""Regular-expression constraints: `{type: pattern, allow: [...], deny: [...], ignore_case: true}`.

`allow`: the whole value must match one of the patterns; `deny`: no pattern may match anywhere in it.

The patterns are the policy's, and an inline config (the NeMo endpoint) is written by whoever calls the service: a
backtracking pattern (`^(a|aa)+$`) must not stall a check. They are compiled by `regex` and searched with a
timeout and a per-check budget (detectors/_schema_guard.py, as tool_schema's declared patterns); a search that does
not finish is reported as `pattern.unchecked` (`path.unchecked` for a path rule's `deny`), never passed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import regex

from detectors._schema_guard import REASONS, Reason, current_checks, policy_pattern
from detectors.tool_policy.base import Violation, string_list
from guardrails.detector import SettingError, read_setting
from guardrails.findings import Severity


class PatternRule:
    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        settings = settings or {}
        flags = regex.IGNORECASE if read_setting(settings, "ignore_case", bool, True) else 0
        self.allow = compile_patterns(settings, "allow", flags)
        self.deny = compile_patterns(settings, "deny", flags)

    def check(self, value: Any) -> list[Violation]:
        if isinstance(value, bool) or value is None:
            return []
        text = value if isinstance(value, str) else str(value)
        checks = current_checks()
        out = []
        for p in self.deny:
            found = checks.judge(p, text)
            if found is True:
                out.append(Violation("pattern.denied", f"{_short(text)} matches denied pattern {p.pattern!r}",
                                     Severity.HIGH))
            elif found is not False:
                out.append(Violation("pattern.unchecked", unchecked_message(text, "denied", p, found),
                                     Severity.HIGH))
        if self.allow:
            missed: list[tuple[regex.Pattern[str], Reason]] = []
            for p in self.allow:
                found = checks.judge(p, text, full=True)
                if found is True:
                    return out
                if found is not False:
                    missed.append((p, found))
            if missed:  # no allowed pattern matched, and one could not say: not allowed until it can
                p, reason = missed[0]
                out.append(Violation("pattern.unchecked", unchecked_message(text, "allowed", p, reason),
                                     Severity.HIGH))
            else:
                out.append(Violation("pattern.not_allowed", f"{_short(text)} matches no allowed pattern",
                                     Severity.HIGH))
        return out


def compile_patterns(settings: Mapping[str, Any], key: str, flags: int = 0) -> list[regex.Pattern[str]]:
    """The patterns of a list setting, compiled for `PatternChecks.judge`; one that does not compile, or compiles
    too large, stops the policy from loading."""
    compiled = []
    for pattern in string_list(settings, key):
        try:
            compiled.append(policy_pattern(pattern, flags))
        except ValueError as exc:
            raise SettingError(f"setting {key}: {exc}") from None
    return compiled


def unchecked_message(text: str, which: str, pattern: regex.Pattern[str], reason: Reason) -> str:
    return f"{_short(text)} not checked against {which} pattern {pattern.pattern!r}: {REASONS[reason]}"


def _short(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:57] + "...")
