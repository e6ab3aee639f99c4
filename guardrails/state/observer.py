"""Block streaks: after each check, extend or end the streaks the budget detector asked about.

A streak counts consecutive checks blocked by other detectors (an agent that keeps trying what policy
forbids). The verdict is only known after every detector ran, so the update happens here, after the
check; the budget detector lists the streak keys it tracks in its signal (`signals["budget"]["streaks"]`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from guardrails.findings import Action, Category
from guardrails.state.base import StateStore

if TYPE_CHECKING:
    from guardrails.service import CheckOutcome

SIGNAL = "budget"


class StreakObserver:
    def __init__(self, store: StateStore) -> None:
        self.store = store

    async def __call__(self, outcome: CheckOutcome) -> None:
        signal = outcome.result.signals.get(SIGNAL)
        streaks = signal.get("streaks") if isinstance(signal, dict) else None
        if not streaks:
            return
        blocked = any(
            f.action is Action.BLOCK and f.category is not Category.BUDGET for f in outcome.result.findings
        )
        keys = list(streaks) if blocked else [key for key, count in streaks.items() if count]
        if keys:  # nothing to write on the common path: not blocked, no streak running
            self.store.record_streaks(keys, blocked)
