"""String settings that name one of a closed list of values (a mode, a severity, a SQL dialect).

A typo there (`pull_mode: chatt`) must stop the policy from loading, as a misspelt key does: read silently, it
would run another mode or match nothing. The message names the closest valid value, then all of them, as the
policy loader does for its own closed lists.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, overload

from guardrails.detector import SettingError, read_setting
from guardrails.findings import Severity
from guardrails.policy import choices_hint

SEVERITIES = tuple(s.value for s in Severity)


@overload
def read_choice(settings: Mapping[Any, Any], key: str, choices: Collection[str], default: str,
                where: str = "") -> str: ...


@overload
def read_choice(settings: Mapping[Any, Any], key: str, choices: Collection[str], default: None = None,
                where: str = "") -> str | None: ...


def read_choice(settings: Mapping[Any, Any], key: str, choices: Collection[str], default: str | None = None,
                where: str = "") -> str | None:
    """`settings[key]`, a string that must be one of `choices`; `default` when absent or null (see
    `read_setting`, whose `where` prefixes the key in messages)."""
    value = read_setting(settings, key, str, default, where=where)
    if value is not None and value not in choices:
        raise SettingError(f"setting {where}{key}: {value!r} is not valid{choices_hint(value, choices)}")
    return value


def read_severity(settings: Mapping[Any, Any], key: str, default: Severity, where: str = "") -> Severity:
    """A severity setting (`low`, `medium`, `high`, `critical`)."""
    return Severity(read_choice(settings, key, SEVERITIES, default.value, where=where))
