"""Block streaks: after each check, extend or end the streaks the budget detector asked about.

A streak counts consecutive checks blocked by other detectors (an agent that keeps trying what policy
forbids). The verdict is only known after every detector ran, so the update happens here, after the
check; the budget detector lists the streak keys it tracks in its signal (`signals["budget"]["streaks"]`).

A streak that cannot be written (the store failed between the budget step and now) is logged and skipped:
the budget detector's own store errors are `detector_error` findings, never a failed check, and a counter
must not fail a check the detectors have judged.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING

from guardrails.config import redacted_url
from guardrails.findings import Action, Category
from guardrails.state.base import StateStore

if TYPE_CHECKING:
    from guardrails.service import CheckOutcome

SIGNAL = "budget"
log = logging.getLogger("guardrails.state")


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
        if not keys:  # nothing to write on the common path: not blocked, no streak running
            return
        try:
            await self.store.run(partial(self.store.record_streaks, keys, blocked))
        except Exception as exc:
            log.warning("state store %s: block streaks of check %s not updated (%s: %s)",
                        redacted_url(self.store.url), outcome.check_id, type(exc).__name__, exc)
