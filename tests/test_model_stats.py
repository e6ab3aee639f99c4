"""Per-model logprob statistics in the shared state store: replicas judge against the same numbers.

The store contract itself (exact merges, concurrent replicas) is in test_state_stores.py; here: the
`SharedModelStats` adapter the service wires in, and `low_confidence` running on two replicas.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_logprobs_align import two_calls_body
from test_state_stores import opener  # noqa: F401  (the SQLite/Redis store fixture, shared)

from detectors.low_confidence import LowConfidenceDetector
from guardrails.adapters import read_exchange
from guardrails.config import Settings
from guardrails.detector import ScanContext, Services
from guardrails.model_stats import ModelStats, Moments, SharedModelStats
from guardrails.serve import build_service
from guardrails.state import StateStore

MODEL = "Qwen/Qwen3-8B"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def check(det: LowConfidenceDetector, body: dict[str, Any]) -> dict[str, Any]:
    ex = read_exchange(body["request"], body["response"])
    ctx = ScanContext(segments=[s for s in ex.segments if det.default_scope.matches(s)], signals={})
    asyncio.run(det.scan(ex, ctx))
    return ctx.signals["low_confidence"]


def test_replicas_see_each_others_merges_after_at_most_max_age(opener: Callable[[], StateStore]) -> None:  # noqa: F811
    clock = Clock()
    a = SharedModelStats(opener(), max_age_s=1.0, clock=clock)
    b = SharedModelStats(opener(), max_age_s=1.0, clock=clock)
    assert b.get(MODEL) is None
    batch = ModelStats(Moments(100, -0.4, 30.0), Moments(2, -0.5, 0.02))
    assert a.update(MODEL, batch) == batch
    assert a.get(MODEL) == batch  # answered by the merge itself: no second round trip
    assert b.get(MODEL) is None  # b read a moment ago; that answer is still fresh enough
    clock.now = 1.5
    assert b.get(MODEL) == batch
    merged = b.update(MODEL, batch)
    assert merged.tokens.count == 200 and a.get(MODEL) == merged  # a's answer aged out too


def test_low_confidence_on_two_replicas_learns_into_one_store(opener: Callable[[], StateStore]) -> None:  # noqa: F811
    replicas = [LowConfidenceDetector({}, Services(extra={"model_stats": SharedModelStats(opener(), max_age_s=0)}))
                for _ in range(2)]
    check(replicas[0], two_calls_body())
    first = replicas[1].stats.get(MODEL)
    assert first is not None and first.tokens.count > 0 and first.segments.count == 1
    check(replicas[1], two_calls_body())
    both = replicas[0].stats.get(MODEL)
    assert both is not None and both.tokens.count == 2 * first.tokens.count
    assert both.tokens.mean == pytest.approx(first.tokens.mean)
    # Traffic seen on one replica makes the other judge relative to the model's own distribution.
    seen = replicas[0].stats.update(MODEL, ModelStats(Moments(10_000, -3.0, 1.5**2 * 9_999), Moments(100, -2.5, 24.75)))
    thresholds = check(replicas[1], two_calls_body())["thresholds"]
    assert thresholds["relative"] is True
    assert thresholds["token"] == pytest.approx(seen.tokens.mean - 2.5 * seen.tokens.std, abs=1e-3)


def test_serve_keeps_model_statistics_in_the_configured_state_store(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, audit_url="none", state_url=f"sqlite:///{tmp_path / 'state.sqlite3'}")
    services = build_service(settings).services
    stats = services.extra["model_stats"]
    assert isinstance(stats, SharedModelStats) and stats.store is services.state
    # Without a state store the detector falls back to the per-process store.
    assert "model_stats" not in build_service(Settings(data_dir=tmp_path, audit_url="none",
                                                       state_url="none")).services.extra
