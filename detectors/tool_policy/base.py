"""What every argument rule returns, and how rules are built from policy settings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from guardrails.detector import SettingError
from guardrails.findings import Severity


@dataclass(frozen=True, slots=True)
class Violation:
    rule: str  # stable id, e.g. "shell.pipe_to_shell"
    message: str
    severity: Severity


class ArgumentRule(Protocol):
    """A compiled constraint on one kind of argument value; built once, called on the hot path."""

    def check(self, value: Any) -> list[Violation]: ...


def string_list(settings: Mapping[str, Any], key: str, where: str = "") -> list[str]:
    """A list-of-strings setting; a single string is accepted as a one-element list. Anything else (a mapping, a
    number, `false`) is refused: read as empty, it would switch its rule off without a word."""
    raw = settings.get(key)
    if raw is None or raw == "":
        return []
    if isinstance(raw, str):
        return [raw]
    if not isinstance(raw, (list, tuple)):
        raise SettingError(f"setting {where}{key} must be a string or a list of strings, not {raw!r}")
    wrong = [item for item in raw if not isinstance(item, str)]
    if wrong:
        raise SettingError(f"setting {where}{key} must be a list of strings, but holds {wrong[0]!r}")
    return list(raw)
