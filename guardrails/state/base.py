"""The state store behind budgets, circuit breakers and per-model logprob statistics: shared, atomic, small.

Everything a check needs is read and updated in one atomic `step` (one transaction on SQLite, one Lua
script on Redis), so several service replicas sharing a store count the same tokens and see the same
breakers. Keys are opaque strings chosen by the caller (the budget detector).

* Sliding windows are bucketed: a window of W seconds is kept as `buckets` counters of W/buckets seconds;
  a total covers the buckets that end inside the last W seconds (so between W(1-1/buckets) and W).
* Rates keep an exponentially weighted mean and variance of per-period totals (periods with traffic only),
  plus the running total of the current period, for z-scores against an agent's own baseline.
* Breakers are open (checks are blocked until `until`), then half-open (checks go through; the next trip
  reopens, a clean check closes); a closed breaker is simply absent.
* Streaks count consecutive blocked checks.
* Model statistics (`guardrails.model_stats`) are running moments of each model's token and segment
  logprobs; a merge is atomic (Chan et al.), so replicas add their checks without losing one. A model not
  updated for `MODEL_STATS_IDLE_S` is forgotten: its name comes from the caller.

The methods are synchronous. Code on the event loop calls them through `run`: inline for a local store (an
SQLite step takes microseconds, less than a hop to a thread), on the store's own threads for a remote one
(`remote`: Redis), so a store that is slow or hangs holds a thread and its caller, not the worker's other
requests. SQLite's inline attempt never waits for a lock another process holds: it is rolled back and the
call runs again on a thread that waits (guardrails/state/sqlite.py): a call passed to `run` may run twice,
so it changes nothing outside the store.
"""

from __future__ import annotations

import asyncio
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from guardrails.model_stats import ModelStats

OPEN = "open"
HALF_OPEN = "half_open"
MODEL_STATS_IDLE_S = 30 * 86_400.0

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class WindowAdd:
    key: str
    window_s: float
    amount: float  # 0 reads the total without changing it
    buckets: int = 60


@dataclass(frozen=True, slots=True)
class RateAdd:
    key: str
    amount: float
    period_s: float = 60.0
    alpha: float = 0.1  # weight of the newest period in the running mean
    clamp_z: float = 0.0  # > 0: a closing period is capped at mean + clamp_z * std, so spikes stay outliers
    min_samples: int = 10  # before this many periods the cap does not apply


@dataclass(frozen=True, slots=True)
class RateStats:
    current: float  # total of the current period, this step included
    mean: float
    std: float
    samples: int  # closed periods folded into the mean


@dataclass(slots=True)
class Breaker:
    key: str
    state: str  # open | half_open
    reason: str
    opened_at: float
    until: float
    trips: int = 1
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class Snapshot:
    totals: list[float]  # one per WindowAdd, in order, after the add
    rate: RateStats | None
    breakers: dict[str, Breaker]  # the requested keys that are open or half-open
    streaks: dict[str, int]  # the requested keys' current streaks


class StateStore(ABC):
    url: str
    # Set by a store whose calls wait on the network: `run` hands calls to these threads. None: calls run inline.
    pool: Executor | None = None

    @property
    def remote(self) -> bool:
        """Whether a call waits on the network (and may wait for the socket timeout): run it through `run`."""
        return self.pool is not None

    async def run(self, call: Callable[[], T]) -> T:
        """`call()`, one or more calls on this store, without holding the event loop while a remote store answers
        (or, on SQLite, while another process holds the lock). A caller that stops waiting (a detector's timeout)
        leaves the call to finish on its thread."""
        if self.pool is None:
            return call()
        return await asyncio.get_running_loop().run_in_executor(self.pool, call)

    @abstractmethod
    def step(
        self,
        now: float,
        adds: Sequence[WindowAdd],
        rate: RateAdd | None = None,
        breaker_keys: Sequence[str] = (),
        streak_keys: Sequence[str] = (),
    ) -> Snapshot:
        """Atomically add to windows and the rate, promote expired open breakers to half-open, read back."""

    @abstractmethod
    def trip(
        self, key: str, reason: str, now: float, cooldown_s: float, details: dict[str, Any] | None = None
    ) -> Breaker:
        """Open (or reopen) a breaker; resets the key's streak."""

    @abstractmethod
    def close_half_open(self, key: str) -> bool:
        """Close a half-open breaker after a clean check; an open one (tripped meanwhile) stays."""

    @abstractmethod
    def reset(self, key: str) -> bool:
        """Operator reset: close the breaker whatever its state. False when there was none."""

    @abstractmethod
    def breaker(self, key: str) -> Breaker | None: ...

    @abstractmethod
    def breakers(self) -> list[Breaker]: ...

    @abstractmethod
    def record_streaks(self, keys: Sequence[str], blocked: bool) -> None:
        """Extend the streaks of `keys` by one blocked check, or end them."""

    @abstractmethod
    def model_stats(self, key: str) -> ModelStats | None:
        """A model's running logprob statistics; None when it was never seen (or forgotten)."""

    @abstractmethod
    def merge_model_stats(self, key: str, batch: ModelStats) -> ModelStats:
        """Atomically merge one check's statistics into the model's; return the merged statistics."""

    @abstractmethod
    def close(self) -> None: ...


def fold(mean: float, var: float, samples: int, value: float, rate: RateAdd) -> tuple[float, float, int]:
    """Fold one closed period into an exponentially weighted mean and variance."""
    if samples == 0:
        return value, 0.0, 1
    if rate.clamp_z > 0 and samples >= rate.min_samples:
        value = min(value, mean + rate.clamp_z * std_floor(mean, var))
    diff = value - mean
    increment = rate.alpha * diff
    return mean + increment, (1 - rate.alpha) * (var + diff * increment), samples + 1


def std_floor(mean: float, var: float) -> float:
    """Standard deviation with a floor (a quarter of the mean): a steady agent is not flagged for a wobble."""
    return max(math.sqrt(max(var, 0.0)), 0.25 * abs(mean), 1.0)
