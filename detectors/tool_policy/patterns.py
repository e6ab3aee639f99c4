"""Regular-expression constraints: `{type: pattern, allow: [...], deny: [...], ignore_case: true}`.

`allow`: the whole value must match one of the patterns; `deny`: no pattern may match anywhere in it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from detectors.tool_policy.base import Violation, string_list
from guardrails.detector import read_setting
from guardrails.findings import Severity


class PatternRule:
    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        settings = settings or {}
        flags = re.IGNORECASE if read_setting(settings, "ignore_case", bool, True) else 0
        self.allow = [re.compile(p, flags) for p in string_list(settings, "allow")]
        self.deny = [re.compile(p, flags) for p in string_list(settings, "deny")]

    def check(self, value: Any) -> list[Violation]:
        if isinstance(value, bool) or value is None:
            return []
        text = value if isinstance(value, str) else str(value)
        out = [Violation("pattern.denied", f"{_short(text)} matches denied pattern {p.pattern!r}", Severity.HIGH)
               for p in self.deny if p.search(text)]
        if self.allow and not any(p.fullmatch(text) for p in self.allow):
            out.append(Violation("pattern.not_allowed", f"{_short(text)} matches no allowed pattern",
                                 Severity.HIGH))
        return out


def _short(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:57] + "...")
