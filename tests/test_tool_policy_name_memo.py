"""tool_policy remembers which `tools:` argument rules apply per tool name, but never a name no API allows.

The names come from the model's tool calls, so a hostile body can make up megabyte names: 4,096 of them kept
for the life of the process held gigabytes.
"""

from __future__ import annotations

from detectors.tool_policy import ToolPolicyDetector
from detectors.tool_policy.detector import MAX_CACHED_NAME

SETTINGS = {"tools": {"*transfer*": {"arguments": {"amount": {"type": "number", "max": 100}}}}}


def test_a_long_made_up_name_gets_its_rules_and_is_not_kept() -> None:
    detector = ToolPolicyDetector(SETTINGS)
    name = "transfer_" + "x" * 1_000_000
    assert set(detector._configured(name)) == {"amount"}  # the pattern still applies to it
    assert name not in detector._rules_by_tool
    for i in range(50):
        detector._configured(f"transfer_{i}_" + "y" * 100_000)
    assert all(len(key) <= MAX_CACHED_NAME for key in detector._rules_by_tool)


def test_a_real_name_is_kept_and_answered_from_the_memo() -> None:
    detector = ToolPolicyDetector(SETTINGS)
    first = detector._configured("transfer_funds")
    assert set(first) == {"amount"}
    assert detector._configured("transfer_funds") is first
    assert detector._configured("get_weather") == {}
