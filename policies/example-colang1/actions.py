"""Python actions of the example Colang 1.0 policy; NeMo loads this file with the policy."""

from __future__ import annotations

import json
from typing import Any

from nemoguardrails.actions import action

LIMITS = {"support-lead": 1000.0}
DEFAULT_LIMIT = 100.0


@action(name="refund_over_limit")
async def refund_over_limit(tool_calls: list[dict[str, Any]] | None = None, agent_id: str = "") -> bool:
    limit = LIMITS.get(agent_id, DEFAULT_LIMIT)
    for call in tool_calls or []:
        function = call.get("function") or {}
        if function.get("name") != "issue_refund":
            continue
        try:
            amount = float(json.loads(function.get("arguments") or "{}").get("amount", 0))
        except (ValueError, TypeError, AttributeError):
            return True  # unreadable amount: treat as over the limit
        if amount > limit:
            return True
    return False
