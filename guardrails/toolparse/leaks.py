"""Which recovered calls the structured response does not already carry (shared by the exchange builder
and the `tool_call_leak` detector, so both agree on what a leak is)."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any, Generic, NamedTuple, TypeVar

from guardrails.toolparse.base import RecoveredCall, Schemas
from guardrails.toolparse.recover import MAX_CALLS, recover_bounded

Source = TypeVar("Source")
StructuredCall = tuple[str, Any, bool]  # (name, parsed arguments, whether the arguments parsed)


def canonical(arguments: Any) -> str:
    return json.dumps(arguments, sort_keys=True, ensure_ascii=False, default=str)


class CarriedCalls:
    """A multiset of calls; each can vouch for one recovered call.

    Indexed by name and by (name, canonical arguments), with the order they were added in: a claim takes the
    first one added that matches, as a scan of a list would, without scanning all of them (a text of thousands
    of calls, claimed against as many, was quadratic)."""

    def __init__(self, calls: Iterable[StructuredCall] = ()) -> None:
        self._added = 0
        self._claimed: set[int] = set()  # the order numbers of the calls claimed
        self._by_name: dict[str, deque[int]] = {}  # name -> order numbers, claimed ones removed lazily
        self._by_arguments: dict[tuple[str, str | None], deque[int]] = {}  # (name, canonical or None) -> same
        for name, arguments, parsed in calls:
            self.add(name, arguments, parsed)

    def add(self, name: str, arguments: Any, parsed: bool) -> None:
        key = (name, canonical(arguments) if parsed else None)
        self._by_name.setdefault(name, deque()).append(self._added)
        self._by_arguments.setdefault(key, deque()).append(self._added)
        self._added += 1

    def claim(self, call: RecoveredCall) -> bool:
        """Remove and return True when a carried call matches `call` (same name and arguments; the name
        alone when either side's arguments could not be parsed). The first one added wins."""
        found = self._first(self._by_name.get(call.name))
        if found < 0:
            return False  # (no call of that name: the arguments need no canonical form)
        if call.arguments_parsed:
            same = self._first(self._by_arguments.get((call.name, canonical(call.arguments))))
            unparsed = self._first(self._by_arguments.get((call.name, None)))
            found = min(same, unparsed) if same >= 0 and unparsed >= 0 else max(same, unparsed)
            if found < 0:
                return False
        self._claimed.add(found)
        return True

    def _first(self, order: deque[int] | None) -> int:
        """The first unclaimed order number in `order` (-1 when none), dropping the claimed ones before it."""
        while order and order[0] in self._claimed:
            order.popleft()
        return order[0] if order else -1


class LeakReading(NamedTuple, Generic[Source]):
    """The leaked calls, and the texts not read to their end: (source, where reading stopped), the source None
    for raw_output (see `recover_bounded`)."""

    leaks: list[tuple[Source | None, RecoveredCall]]
    unread: list[tuple[Source | None, int]]


def find_leaks(texts: Sequence[tuple[Source, str]], raw_output: str | None,
               structured: Sequence[StructuredCall],
               tools: Schemas | None = None) -> list[tuple[Source | None, RecoveredCall]]:
    """Calls written as markup in `texts` (response content/reasoning) or in `raw_output` (source None)
    that `structured` does not carry. A call in raw_output that also shows in the texts counts once."""
    return read_leaks(texts, raw_output, structured, tools).leaks


def read_leaks(texts: Sequence[tuple[Source, str]], raw_output: str | None,
               structured: Sequence[StructuredCall], tools: Schemas | None = None) -> LeakReading[Source]:
    """`find_leaks`, and where the texts stopped being read: MAX_CALLS calls are read in all, in text order (a
    response of hundreds of choices, each under the bound of a text, held 180,000 calls)."""
    found: list[tuple[Source, RecoveredCall]] = []
    unread: list[tuple[Source | None, int]] = []
    left = MAX_CALLS
    for source, text in texts:
        calls, stop = recover_bounded(text, tools, left)
        found += [(source, call) for call in calls]
        left -= len(calls)
        if stop is not None:
            unread.append((source, stop))
    from_raw: list[RecoveredCall] = []
    if raw_output:
        from_raw, stop = recover_bounded(raw_output, tools, left)
        if stop is not None:
            unread.append((None, stop))
    if not found and not from_raw:
        return LeakReading([], unread)  # the common case: no markup, no need to canonicalize the structured calls
    carried = CarriedCalls(structured)
    seen = CarriedCalls(structured) if from_raw else None  # (the calls shown in the texts: only raw_output asks)
    leaks: list[tuple[Source | None, RecoveredCall]] = []
    for source, call in found:
        if seen is not None:
            seen.add(call.name, call.arguments, call.arguments_parsed)
        if not carried.claim(call):
            leaks.append((source, call))
    if seen is not None:
        leaks += [(None, call) for call in from_raw if not seen.claim(call)]
    return LeakReading(leaks, unread)
