"""Which recovered calls the structured response does not already carry (shared by the exchange builder
and the `tool_call_leak` detector, so both agree on what a leak is)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from guardrails.toolparse.base import RecoveredCall, Schemas
from guardrails.toolparse.recover import recover

Source = TypeVar("Source")
StructuredCall = tuple[str, Any, bool]  # (name, parsed arguments, whether the arguments parsed)


def canonical(arguments: Any) -> str:
    return json.dumps(arguments, sort_keys=True, ensure_ascii=False, default=str)


class CarriedCalls:
    """A multiset of calls; each can vouch for one recovered call."""

    def __init__(self, calls: Iterable[StructuredCall] = ()) -> None:
        self._calls: list[tuple[str, str | None]] = []
        for name, arguments, parsed in calls:
            self.add(name, arguments, parsed)

    def add(self, name: str, arguments: Any, parsed: bool) -> None:
        self._calls.append((name, canonical(arguments) if parsed else None))

    def claim(self, call: RecoveredCall) -> bool:
        """Remove and return True when a carried call matches `call` (same name and arguments; the name
        alone when either side's arguments could not be parsed)."""
        mine = canonical(call.arguments) if call.arguments_parsed else None
        for k, (name, arguments) in enumerate(self._calls):
            if name == call.name and (arguments == mine or arguments is None or mine is None):
                del self._calls[k]
                return True
        return False


def find_leaks(texts: Sequence[tuple[Source, str]], raw_output: str | None,
               structured: Sequence[StructuredCall],
               tools: Schemas | None = None) -> list[tuple[Source | None, RecoveredCall]]:
    """Calls written as markup in `texts` (response content/reasoning) or in `raw_output` (source None)
    that `structured` does not carry. A call in raw_output that also shows in the texts counts once."""
    found = [(source, call) for source, text in texts for call in recover(text, tools)]
    from_raw = recover(raw_output, tools) if raw_output else []
    if not found and not from_raw:
        return []  # the common case: no markup, no need to canonicalize the structured calls
    carried = CarriedCalls(structured)
    seen = CarriedCalls(structured)
    leaks: list[tuple[Source | None, RecoveredCall]] = []
    for source, call in found:
        seen.add(call.name, call.arguments, call.arguments_parsed)
        if not carried.claim(call):
            leaks.append((source, call))
    leaks += [(None, call) for call in from_raw if not seen.claim(call)]
    return leaks
