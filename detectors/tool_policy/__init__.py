"""`tool_policy`: per-agent tool allow/deny lists and per-argument constraints (paths, URLs, shell, SQL, numbers,
patterns), plus built-in dangerous-operation rules for any argument recognisable as one of those."""

from detectors.tool_policy.detector import ToolPolicyDetector

__all__ = ["ToolPolicyDetector"]
