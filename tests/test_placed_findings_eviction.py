"""The engine's memo of placed findings stays bounded, evicts oldest first, and evicts without scanning."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from test_engine import make_policy, registry

from guardrails.adapters import HistoryMemo, read_exchange
from guardrails.engine import Engine, PlacedFindings
from guardrails.exchange import Segment

BOUND = 4


def run_history(engine: Engine, memo: HistoryMemo, turns: int) -> list[Segment]:
    """Check a chat whose history has `turns` user turns; return its user segments, oldest first."""
    history = [{"role": "user", "content": f"turn {i} about Paris"} for i in range(turns)]
    exchange = read_exchange({"model": "m", "messages": history}, None, memo=memo)
    result = asyncio.run(engine.run(exchange))
    assert [f.pointer for f in result.findings] == [f"/request/messages/{i}/content" for i in range(turns)]
    return [s for s in exchange.segments if s.text.startswith("turn ")]


def test_placed_findings_stay_bounded_and_evict_the_oldest_segments(tmp_path: Path) -> None:
    policy = make_policy(tmp_path, "detectors:\n  counting: {}\n")
    engine, memo = Engine(policy, registry()), HistoryMemo()
    # (Set here: `Engine(cache=SegmentCache(BOUND))` would not do, an empty cache being falsy there.)
    placed = engine._placed = PlacedFindings(BOUND)
    for turns in (3, 6, 10):  # each check resends the history and adds turns: past the bound
        segments = run_history(engine, memo, turns)
        assert len(placed.entries) <= BOUND
        # The newest segments are kept, in the order they were placed; the oldest went first.
        assert list(placed.entries) == [id(s) for s in segments[-BOUND:]]
        assert all(placed.entries[id(s)][0] is s for s in segments[-BOUND:])


class NoScan(dict[int, Any]):
    """`entries` that count how often they are scanned (what `next(iter(entries))` does)."""

    scans = 0

    def __iter__(self) -> Iterator[int]:
        self.scans += 1
        return super().__iter__()


def test_put_evicts_without_scanning_and_keeps_a_replaced_entry_in_place() -> None:
    placed = PlacedFindings(BOUND)
    placed.entries = entries = NoScan()
    history = [{"role": "user", "content": f"turn {i}"} for i in range(3 * BOUND)]
    segments = list(read_exchange({"model": "m", "messages": history}, None).segments)
    assert len(segments) == 3 * BOUND
    for k, segment in enumerate(segments):
        placed.put(k, (segment, ((0, []),)))
        assert len(entries) == min(k + 1, BOUND)
    assert entries.scans == 0  # each put did constant work, however full the memo
    assert list(dict.keys(entries)) == list(range(2 * BOUND, 3 * BOUND))
    # Replacing an entry does not move it: the next put still evicts the oldest one.
    placed.put(2 * BOUND, (segments[0], ()))
    placed.put(3 * BOUND, (segments[1], ()))
    assert list(dict.keys(entries)) == [*range(2 * BOUND + 1, 3 * BOUND), 3 * BOUND]
