"""The state store contract (windows, rates, breakers, streaks, model statistics), run against SQLite and Redis.

Redis runs when GUARDRAILS_TEST_REDIS_URL is set (e.g. redis://127.0.0.1:6379/0); each run uses its own
key prefix and deletes its keys.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from guardrails.model_stats import ModelStats, Moments
from guardrails.state import RateAdd, StateStore, WindowAdd, open_state_store
from guardrails.state.base import HALF_OPEN, OPEN

REDIS_URL = os.environ.get("GUARDRAILS_TEST_REDIS_URL")
T0 = 1_767_225_600.0  # a minute boundary


@pytest.fixture(params=["sqlite", "redis"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], StateStore]]:
    """Opens store instances on one shared state (as service replicas would)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'state.sqlite3'}"
    else:
        if not REDIS_URL:
            pytest.skip("Redis state tests need GUARDRAILS_TEST_REDIS_URL (e.g. redis://127.0.0.1:6379/0)")
        url = f"{REDIS_URL}{'&' if '?' in REDIS_URL else '?'}prefix=gr-test-{uuid.uuid4().hex[:10]}:"
    opened: list[StateStore] = []

    def open_one() -> StateStore:
        opened.append(open_state_store(url))
        return opened[-1]

    yield open_one
    if request.param == "redis" and opened:
        opened[0].purge()  # type: ignore[attr-defined]
    for store in opened:
        store.close()


def test_sliding_window_adds_reads_and_forgets(opener: Callable[[], StateStore]) -> None:
    store = opener()
    minute = WindowAdd("agent:a|tokens|60", 60, 100)
    assert store.step(T0, [minute]).totals == [100]
    assert store.step(T0 + 30, [minute]).totals == [200]
    assert store.step(T0 + 45, [WindowAdd("agent:a|tokens|60", 60, 0)]).totals == [200]  # a read
    assert store.step(T0 + 61, [WindowAdd("agent:a|tokens|60", 60, 0)]).totals == [100]  # the first add left
    assert store.step(T0 + 200, [WindowAdd("agent:a|tokens|60", 60, 0)]).totals == [0]
    other = store.step(
        T0 + 200, [WindowAdd("agent:b|tokens|60", 60, 7.5), WindowAdd("agent:a|tokens|60", 60, 1)]
    )
    assert other.totals == [7.5, 1]


def test_rate_folds_closed_periods_into_an_ewma(opener: Callable[[], StateStore]) -> None:
    store = opener()
    rate = RateAdd("agent:a|tpm", 0, period_s=60, alpha=0.5)
    stats = None
    for minute, tokens in enumerate([100, 300, 200]):
        stats = store.step(T0 + 60 * minute + 1, [], RateAdd(rate.key, tokens, 60, 0.5)).rate
    assert stats is not None
    assert stats.current == 200 and stats.samples == 2  # 100 and 300 folded, 200 still running
    assert stats.mean == pytest.approx(200.0)  # 100, then 100 + 0.5 * 200
    assert stats.std == pytest.approx((0.5 * (0 + 200 * 100)) ** 0.5)
    later = store.step(T0 + 600, [], RateAdd(rate.key, 50, 60, 0.5)).rate  # idle minutes are not samples
    assert later is not None and later.samples == 3 and later.current == 50


def test_breaker_opens_goes_half_open_after_cooldown_and_closes(opener: Callable[[], StateStore]) -> None:
    store = opener()
    key = "agent:acme/runaway"
    opened = store.trip(key, "repeated_tool_call", T0, 300, {"tool": "search"})
    assert (opened.state, opened.trips, opened.until) == (OPEN, 1, T0 + 300)
    assert store.step(T0 + 10, [], None, [key]).breakers[key].state == OPEN
    assert [b.key for b in store.breakers()] == [key]
    assert store.breaker(key).details == {"tool": "search"}  # type: ignore[union-attr]
    assert store.close_half_open(key) is False  # still open: a probe cannot close it
    assert store.step(T0 + 301, [], None, [key]).breakers[key].state == HALF_OPEN
    again = store.trip(key, "repeated_tool_call", T0 + 302, 300)
    assert again.trips == 2 and store.breaker(key).state == OPEN  # type: ignore[union-attr]
    assert store.step(T0 + 700, [], None, [key]).breakers[key].state == HALF_OPEN
    assert store.close_half_open(key) is True
    assert store.breaker(key) is None and store.breakers() == []
    assert store.step(T0 + 701, [], None, [key]).breakers == {}


def test_operator_reset_closes_an_open_breaker(opener: Callable[[], StateStore]) -> None:
    store = opener()
    store.trip("agent:acme/x", "token_rate_anomaly", T0, 300)
    assert store.reset("agent:acme/x") is True
    assert store.reset("agent:acme/x") is False
    assert store.breaker("agent:acme/x") is None


def test_streaks_extend_end_and_reset_on_trip(opener: Callable[[], StateStore]) -> None:
    store = opener()
    keys = ["agent:acme/a", "session:acme/a/s"]
    for _ in range(3):
        store.record_streaks(keys, blocked=True)
    assert store.step(T0, [], None, [], keys).streaks == {"agent:acme/a": 3, "session:acme/a/s": 3}
    store.record_streaks(["session:acme/a/s"], blocked=False)
    store.trip("agent:acme/a", "block_streak", T0, 60)
    assert store.step(T0, [], None, [], keys).streaks == {"agent:acme/a": 0, "session:acme/a/s": 0}


def test_concurrent_replicas_count_every_add(opener: Callable[[], StateStore]) -> None:
    replicas = [opener(), opener()]

    def hammer(store: StateStore) -> None:
        for _ in range(100):
            store.step(T0 + 1, [WindowAdd("agent:acme/a|requests|60", 60, 1)])

    threads = [threading.Thread(target=hammer, args=(r,)) for r in replicas for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert replicas[0].step(T0 + 2, [WindowAdd("agent:acme/a|requests|60", 60, 0)]).totals == [400]


def batches_of(samples: list[np.ndarray]) -> list[ModelStats]:
    """One check's batch per sample array (tokens), with its mean as a one-segment batch."""
    out = []
    for values in samples:
        mean = float(values.mean())
        out.append(ModelStats(Moments(values.size, mean, float(((values - mean) ** 2).sum())),
                              Moments(1, mean, 0.0)))
    return out


def test_model_stats_merge_exactly_across_replicas(opener: Callable[[], StateStore]) -> None:
    a, b = opener(), opener()
    assert a.model_stats("Qwen/Qwen3-8B") is None
    rng = np.random.default_rng(5)
    samples = [-rng.exponential(scale, size) for scale, size in ((0.5, 700), (2.0, 3), (1.0, 1200), (0.1, 1))]
    for store, batch in zip((a, b, a, b), batches_of(samples), strict=True):
        merged = store.merge_model_stats("Qwen/Qwen3-8B", batch)
    seen = b.model_stats("Qwen/Qwen3-8B")
    assert seen == merged  # what the last merge returned is what every replica reads
    everything = np.concatenate(samples)
    assert seen is not None and seen.tokens.count == everything.size
    assert seen.tokens.mean == pytest.approx(everything.mean(), rel=1e-12)
    assert seen.tokens.std == pytest.approx(everything.std(ddof=1), rel=1e-12)
    means = np.array([s.mean() for s in samples])
    assert seen.segments.count == 4 and seen.segments.std == pytest.approx(means.std(ddof=1), rel=1e-12)
    # An empty part of a batch leaves that part alone; other models are separate.
    again = a.merge_model_stats("Qwen/Qwen3-8B", ModelStats(Moments(), Moments(1, -1.0, 0.0)))
    assert again.tokens == seen.tokens and again.segments.count == 5
    assert a.model_stats("other") is None


def test_concurrent_model_stats_merges_lose_nothing(opener: Callable[[], StateStore]) -> None:
    replicas = [opener(), opener()]
    one = ModelStats(Moments(10, -0.5, 2.0), Moments(1, -0.5, 0.0))

    def hammer(store: StateStore) -> None:
        for _ in range(50):
            store.merge_model_stats("m", one)

    threads = [threading.Thread(target=hammer, args=(r,)) for r in replicas for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = replicas[0].model_stats("m")
    assert stats is not None and (stats.tokens.count, stats.segments.count) == (2000, 200)
    assert stats.tokens.mean == pytest.approx(-0.5) and stats.tokens.m2 == pytest.approx(200 * 2.0)
