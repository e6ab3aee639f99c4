"""Numeric bounds: `{type: number, min: 0, max: 500, integer: true}`."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from detectors.tool_policy.base import Violation
from guardrails.detector import SettingError, read_setting
from guardrails.findings import Severity

# An amount as tools carry it: a sign, a currency symbol or code before or after, digits grouped by "," or "."
# (or by spaces) with a decimal part after the other mark. "1,500.00", "$20", "5000 EUR", "5.000,00", "-3e2".
_CURRENCY = r"(?:[$€£¥]|[A-Z]{3})"
_AMOUNT = re.compile(rf"^\s*(?P<sign>[-+]?)\s*(?:{_CURRENCY}\s?)?(?P<sign2>[-+]?)(?P<body>[\d.,' \u00a0\u202f]*\d"
                     rf"(?:[eE][-+]?\d+)?)\s*(?:{_CURRENCY})?\s*$")
_GROUPED = {  # the decimal mark -> the body with it, grouped by the other mark (or not grouped)
    ".": re.compile(r"^[1-9]\d{0,2}(?:[,' \u00a0\u202f]\d{3})+(?:\.\d*)?$|^\d+(?:\.\d*)?(?:[eE][-+]?\d+)?$"
                    r"|^\.\d+$"),
    ",": re.compile(r"^[1-9]\d{0,2}(?:[.' \u00a0\u202f]\d{3})+(?:,\d*)?$|^\d+,\d*$"),
}


class NumberRule:
    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        settings = settings or {}
        self.minimum = _bound(settings.get("min"))
        self.maximum = _bound(settings.get("max"))
        self.integer = read_setting(settings, "integer", bool, False)
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise SettingError(f"min {self.minimum:g} is above max {self.maximum:g}: every value would be refused")

    def check(self, value: Any) -> list[Violation]:
        readings = _readings(value)
        if not readings:
            # A bound that cannot be checked is not met: "5000 dollars", NaN or 1e400 against `max: 1000`.
            bounded = self.minimum is not None or self.maximum is not None
            return [Violation("number.not_a_number", f"expected a finite number, got {_shown(value)}",
                              Severity.HIGH if bounded else Severity.MEDIUM)]
        low, high = min(readings), max(readings)
        # "5.000" is 5 in en-US and 5000 in de-DE: each bound is judged on the reading that could break it.
        either = "" if low == high else f" (read as {low:g} or {high:g})"
        out = []
        if self.minimum is not None and low < self.minimum:
            out.append(Violation("number.below_min", f"{low:g} is below the minimum {self.minimum:g}{either}",
                                 Severity.HIGH))
        if self.maximum is not None and high > self.maximum:
            out.append(Violation("number.above_max", f"{high:g} is above the maximum {self.maximum:g}{either}",
                                 Severity.HIGH))
        if self.integer and not all(float(n).is_integer() for n in readings):
            out.append(Violation("number.not_integer", f"{low:g} is not an integer", Severity.MEDIUM))
        return out


def _bound(raw: Any) -> float | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or math.isnan(raw):
        raise SettingError(f"numeric bound must be a number, got {raw!r}")
    return float(raw)


def _readings(value: Any) -> list[float]:
    """The finite numbers `value` can be read as: one for a JSON number, one or two for an amount written as text
    (both decimal marks where the text allows both), none where it is no number or not a finite one."""
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        try:
            number = float(value)
        except OverflowError:  # an integer beyond a float's range
            return []
        return [number] if math.isfinite(number) else []
    if not isinstance(value, str) or len(value) > 64:
        return []
    found = _AMOUNT.match(value)
    if found is None or (found["sign"] and found["sign2"]):
        return []
    negative = (found["sign"] or found["sign2"]) == "-"
    body = found["body"]
    out = []
    for mark, grouped in _GROUPED.items():
        if grouped.match(body):
            digits = re.sub(r"[^\deE+\-" + re.escape(mark) + "]", "", body).replace(mark, ".")
            try:
                number = float(digits)
            except ValueError:
                continue
            if math.isfinite(number):
                out.append(-number if negative else number)
    return list(dict.fromkeys(out))


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
