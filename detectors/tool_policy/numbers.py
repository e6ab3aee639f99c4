"""Numeric bounds: `{type: number, min: 0, max: 500, integer: true}`."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from detectors.tool_policy.base import Violation
from guardrails.detector import SettingError, read_setting
from guardrails.findings import Severity


class NumberRule:
    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        settings = settings or {}
        self.minimum = _bound(settings.get("min"))
        self.maximum = _bound(settings.get("max"))
        self.integer = read_setting(settings, "integer", bool, False)
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise SettingError(f"min {self.minimum:g} is above max {self.maximum:g}: every value would be refused")

    def check(self, value: Any) -> list[Violation]:
        number = _as_number(value)
        if number is None:
            return [Violation("number.not_a_number", f"expected a number, got {value!r}", Severity.MEDIUM)]
        out = []
        if self.minimum is not None and number < self.minimum:
            out.append(Violation("number.below_min", f"{number:g} is below the minimum {self.minimum:g}",
                                 Severity.HIGH))
        if self.maximum is not None and number > self.maximum:
            out.append(Violation("number.above_max", f"{number:g} is above the maximum {self.maximum:g}",
                                 Severity.HIGH))
        if self.integer and not float(number).is_integer():
            out.append(Violation("number.not_integer", f"{number:g} is not an integer", Severity.MEDIUM))
        return out


def _bound(raw: Any) -> float | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or math.isnan(raw):
        raise SettingError(f"numeric bound must be a number, got {raw!r}")
    return float(raw)


def _as_number(value: Any) -> float | None:
    """Numbers, and numeric strings the way tools often carry amounts ("1,500.00", "$20")."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            number = float(value.strip().lstrip("$€£").replace(",", ""))
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None
