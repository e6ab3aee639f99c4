"""The built-in rails: one Colang flow per detector, and the segments each rail type covers.

A policy that lists only these flows in `rails.*.flows` runs natively: the engine maps each flow to its
detector and never starts a Colang runtime, as NeMo's IORails does for its own built-ins. The flows
themselves live in `library/v1.co` and `library/v2.co` so authors can read, call and override them; this
module is what the engine reads, and it must never import nemoguardrails (slow, and not needed here).
"""

from __future__ import annotations

from pathlib import Path

from guardrails.exchange import SegmentKind

LIBRARY_DIR = Path(__file__).resolve().parent / "library"
LIBRARY_FILES = {"1.0": LIBRARY_DIR / "v1.co", "2.x": LIBRARY_DIR / "v2.x.co"}
COLANG_VERSIONS = tuple(LIBRARY_FILES)

# NeMo's rail types. Beware the naming: `tool_output` is the model's tool *call*, `tool_input` the tool's
# result.
RAIL_TYPES = ("input", "output", "tool_input", "tool_output")

# Which segments a built-in flow listed under a rail type may look at.
RAIL_KINDS: dict[str, frozenset[SegmentKind]] = {
    "input": frozenset({SegmentKind.SYSTEM, SegmentKind.USER}),
    "output": frozenset({SegmentKind.ASSISTANT, SegmentKind.REASONING}),
    "tool_output": frozenset({SegmentKind.TOOL_CALL}),
    "tool_input": frozenset({SegmentKind.TOOL_RESULT, SegmentKind.DOCUMENT}),
}

# Built-in flow name -> (detector, the rail type it reports under when a policy enables the detector
# without listing the flow).
BUILTIN_FLOWS: dict[str, tuple[str, str]] = {
    "check pii": ("pii", "output"),
    "check secrets": ("secret", "output"),
    "check prompt injection": ("prompt_injection", "tool_input"),
    "check jailbreak": ("jailbreak", "input"),
    "check content": ("content", "output"),
    "check reasoning": ("unsafe_reasoning", "output"),
    "check tool undeclared": ("tool_undeclared", "tool_output"),
    "check tool schema": ("tool_schema", "tool_output"),
    "check tool policy": ("tool_policy", "tool_output"),
    "check tool taint": ("tool_taint", "tool_output"),
    "check tool loop": ("tool_loop", "tool_output"),
    "check tool call leak": ("tool_call_leak", "output"),
    "check low confidence": ("low_confidence", "output"),
    "check budget": ("budget", "input"),
    "check guard model": ("guard_model", "output"),
}
FLOW_BY_DETECTOR: dict[str, str] = {detector: flow for flow, (detector, _) in BUILTIN_FLOWS.items()}


def flow_for_detector(detector: str) -> str:
    """The rail name a detector's findings are reported under (its built-in flow, or the detector name)."""
    return FLOW_BY_DETECTOR.get(detector, detector)


def default_rail_type(detector: str) -> str:
    flow = FLOW_BY_DETECTOR.get(detector)
    return BUILTIN_FLOWS[flow][1] if flow else "output"


def action_names(detector: str) -> tuple[str, str]:
    """The detector's action names in Colang 1.0 (`detect_tool_policy`) and 2.x (`DetectToolPolicyAction`)."""
    camel = "".join(part.capitalize() for part in detector.split("_"))
    return f"detect_{detector}", f"Detect{camel}Action"
