"""What every argument rule returns, and how rules are built from policy settings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from guardrails.findings import Severity


@dataclass(frozen=True, slots=True)
class Violation:
    rule: str  # stable id, e.g. "shell.pipe_to_shell"
    message: str
    severity: Severity


class ArgumentRule(Protocol):
    """A compiled constraint on one kind of argument value; built once, called on the hot path."""

    def check(self, value: Any) -> list[Violation]: ...


def string_list(settings: Mapping[str, Any], key: str) -> list[str]:
    """A list-of-strings setting; a single string is accepted as a one-element list."""
    raw = settings.get(key) or []
    if isinstance(raw, str):
        return [raw]
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        raise ValueError(f"{key} must be a list of strings")
    return list(raw)
