"""The `number` argument rule reads amounts as tools write them, and a bound it cannot check is not met."""

from __future__ import annotations

import pytest

from detectors.tool_policy.numbers import NumberRule
from guardrails.findings import Severity

RULE = NumberRule({"min": 0, "max": 1000})


def rules(value: object) -> list[tuple[str, Severity]]:
    return [(v.rule, v.severity) for v in RULE.check(value)]


@pytest.mark.parametrize("value", ["5.000,00", "5000 EUR", "EUR 5000", "€ 1.234,56", "1,500.00", "12 345",
                                   "1\u202f500", "5000", 5000, "1e4", "$ 2,000"])
def test_amounts_over_the_maximum_in_any_common_notation_are_refused(value: object) -> None:
    assert rules(value) == [("number.above_max", Severity.HIGH)]


@pytest.mark.parametrize("value", ["950", "$20", "USD 900", "0.125", "0,125", "1,5", "999.99", 12, "-0"])
def test_amounts_within_the_bounds_pass(value: object) -> None:
    assert rules(value) == []


def test_a_text_that_reads_two_ways_is_judged_on_the_reading_that_breaks_the_bound() -> None:
    # en-US 5.0, de-DE 5000: the maximum sees 5000.
    [violation] = RULE.check("5.000")
    assert violation.rule == "number.above_max" and "read as 5 or 5000" in violation.message
    assert NumberRule({"min": 100}).check("1,500")[0].rule == "number.below_min"  # 1.5 in de-DE


@pytest.mark.parametrize("value", ["1e999", float("inf"), float("nan"), 10**400, "5000 dollars", "five",
                                   "1.2.3", "+-5", True, None, ["5"]])
def test_a_bound_that_cannot_be_checked_is_a_high_finding(value: object) -> None:
    assert rules(value) == [("number.not_a_number", Severity.HIGH)]


def test_without_a_bound_a_non_number_stays_medium() -> None:
    assert [(v.rule, v.severity) for v in NumberRule({"integer": True}).check("abc")] == \
        [("number.not_a_number", Severity.MEDIUM)]
    assert [v.rule for v in NumberRule({"integer": True}).check("5.000")] == []  # 5 or 5000: both whole
    assert [v.rule for v in NumberRule({"integer": True}).check("2,5")] == ["number.not_integer"]
