"""Colang policies: the built-in rails library, and the bridge that runs custom flows on NeMo's runtime.

`catalog` (flow names, rail types) is imported by the policy loader and the engine; `bridge` imports
nemoguardrails and is loaded only for policies that define flows of their own.
"""

from guardrails.colang.catalog import BUILTIN_FLOWS, RAIL_KINDS, RAIL_TYPES, flow_for_detector

__all__ = ["BUILTIN_FLOWS", "RAIL_KINDS", "RAIL_TYPES", "flow_for_detector"]
