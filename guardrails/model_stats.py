"""Per-model running statistics of token and segment logprobs.

A "low" logprob means little on its own: models differ (a 0.5B model's typical token sits far below a 70B
model's). Detectors judge against the model's own running mean and spread, kept per model key behind two
methods, `get` and `update`: in the service's state store (`SharedModelStats`: SQLite or Redis, so every
replica judges against the same numbers), or in memory when the service runs without one. Code on the event
loop calls them through `run`, which takes a remote store's calls off the loop (`StateStore.run`).

What is learned is the caller's word: the key is the model name the check body claims, so learning is per
caller-claimed model, and whoever may call the service can feed a name's statistics. What limits that here:
detectors judge relative to the statistics only past their minimum counts (`relative.min_tokens`, `min_segments`
of `low_confidence`); a mid-stream re-check (`partial`) is never learned from (it resends every chunk so far); a
response already counted (same response id and model, a gateway's retry) is not counted again (`first_count`,
the last `MAX_SEEN_RESPONSES` per process); the memory store keeps at most `max_models` names, the state stores
forget a name idle for 30 days; one check weighs at most `MAX_TOKENS_PER_CHECK` tokens and
`MAX_SEGMENTS_PER_CHECK` segments (`ModelStats.capped`): a longer response adds its mean and spread with that
weight, so reaching the default `min_tokens` (500) takes at least five responses, `min_segments` (30) eight,
where one 500-token response used to set the baseline alone.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from guardrails.state.base import StateStore

T = TypeVar("T")
# Responses remembered as counted, per process: a retry comes seconds after its first check, not 65,536 checks.
MAX_SEEN_RESPONSES = 65_536
# The most one check weighs in a model's statistics: a typical answer (a few sentences, a tool call) counts in full,
# a long one no more than that, so one caller's single response cannot make the baseline (see the module docstring).
MAX_TOKENS_PER_CHECK = 100
MAX_SEGMENTS_PER_CHECK = 4
_CREATING = threading.Lock()


@dataclass(frozen=True, slots=True)
class Moments:
    """Count, mean and sum of squared deviations: mergeable without keeping samples (Chan et al.)."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / (self.count - 1)) if self.count > 1 else 0.0

    def merge(self, other: Moments) -> Moments:
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        count = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * other.count / count
        m2 = self.m2 + other.m2 + delta * delta * self.count * other.count / count
        return Moments(count, mean, m2)

    def capped(self, limit: int) -> Moments:
        """These moments weighing at most `limit` values: the same mean and sample variance (`std`), as if `limit`
        of them had been drawn. Deterministic, unlike a random sample: a retried check would weigh the same."""
        if self.count <= limit:
            return self
        m2 = self.m2 * (limit - 1) / (self.count - 1) if limit > 1 else 0.0
        return Moments(limit, self.mean, m2)


@dataclass(frozen=True, slots=True)
class ModelStats:
    tokens: Moments = Moments()  # weighted logprob (logprob x token weight) of every token that counted
    segments: Moments = Moments()  # weighted mean logprob of each judged segment

    def merge(self, other: ModelStats) -> ModelStats:
        return ModelStats(self.tokens.merge(other.tokens), self.segments.merge(other.segments))

    def capped(self, tokens: int = MAX_TOKENS_PER_CHECK, segments: int = MAX_SEGMENTS_PER_CHECK) -> ModelStats:
        """One check's batch weighing at most `tokens` tokens and `segments` segments (see `Moments.capped`)."""
        return ModelStats(self.tokens.capped(tokens), self.segments.capped(segments))

    def to_dict(self) -> dict[str, list[float]]:
        return {"tokens": [self.tokens.count, self.tokens.mean, self.tokens.m2],
                "segments": [self.segments.count, self.segments.mean, self.segments.m2]}

    @classmethod
    def from_dict(cls, raw: dict[str, list[float]]) -> ModelStats:
        t, s = raw.get("tokens", [0, 0.0, 0.0]), raw.get("segments", [0, 0.0, 0.0])
        return cls(Moments(int(t[0]), float(t[1]), float(t[2])), Moments(int(s[0]), float(s[1]), float(s[2])))


class SeenResponses:
    """(model key, response id) pairs already counted, the most recent `max_entries` of them. Kept as 16-byte
    digests, so memory is bounded by the count whatever the ids' length (about 9 MB at 65,536)."""

    def __init__(self, max_entries: int = MAX_SEEN_RESPONSES) -> None:
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()
        self._max_entries = max_entries

    def first(self, key: str, response_id: str, scope: str = "") -> bool:
        """True the first time this (scope, key, id) is seen (it is remembered from then on), False for a repeat."""
        # Length-prefixed: ("a:b", "c") and ("a", "b:c") are different pairs. surrogatepass: a library caller's
        # string may hold a lone surrogate.
        raw = f"{len(scope)}:{scope}{len(key)}:{key}{response_id}".encode("utf-8", "surrogatepass")
        digest = hashlib.blake2b(raw, digest_size=16).digest()
        with self._lock:
            if digest in self._seen:
                return False
            if len(self._seen) >= self._max_entries:
                self._seen.popitem(last=False)  # the oldest: a retry of it is long past
            self._seen[digest] = None
            return True

    def __len__(self) -> int:
        return len(self._seen)


class ModelStatsStore(ABC):
    """get/update per model key. Implementations must make `update` atomic per key."""

    _responses: SeenResponses | None = None

    def first_count(self, key: str, response_id: str | None, scope: str = "") -> bool:
        """Whether a check of response `response_id` may be learned from under `key`: not when that response was
        counted already (a gateway that retries a check sends the same response again). A response without an id
        cannot be told apart from another: it always counts. `scope` (the caller's tenant) keeps one caller's ids
        apart from another's: sending another tenant's response id first must not keep that response out. Per
        process: a retry that reaches another replica is counted there too."""
        if not response_id:
            return True
        if self._responses is None:
            with _CREATING:  # created on first use: a subclass need not call an __init__ for it
                if self._responses is None:
                    self._responses = SeenResponses()
        return self._responses.first(key, response_id, scope)

    @property
    def remote(self) -> bool:
        """Whether `get` and `update` may wait on the network (then call them through `run`)."""
        return False

    async def run(self, call: Callable[[], T]) -> T:
        """`call()`, a `get` or an `update`, without holding the event loop while a remote store answers."""
        return call()

    @abstractmethod
    def get(self, key: str) -> ModelStats | None:
        """The model's statistics, or None when it was never seen."""

    @abstractmethod
    def update(self, key: str, batch: ModelStats) -> ModelStats:
        """Merge one check's batch into the model's statistics; return the merged statistics."""


class InMemoryModelStats(ModelStatsStore):
    """Per-process statistics; a cap on models keeps a caller that invents model names from growing it."""

    def __init__(self, max_models: int = 10_000) -> None:
        self._stats: dict[str, ModelStats] = {}
        self._lock = threading.Lock()
        self._max_models = max_models

    def get(self, key: str) -> ModelStats | None:
        return self._stats.get(key)

    def update(self, key: str, batch: ModelStats) -> ModelStats:
        with self._lock:
            current = self._stats.get(key)
            if current is None and len(self._stats) >= self._max_models:
                return batch
            merged = (current or ModelStats()).merge(batch)
            self._stats[key] = merged
            return merged


class SharedModelStats(ModelStatsStore):
    """Statistics in the state store, shared by every replica. One store round trip per check: `update`
    returns the merged statistics, which then answer `get` for `max_age_s` (a threshold a second old is as
    good as a fresh one; another replica's checks show up at the next merge or read)."""

    def __init__(
        self,
        store: StateStore,
        max_age_s: float = 1.0,
        max_models: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self._max_age_s = max_age_s
        self._max_models = max_models
        self._clock = clock
        self._recent: dict[str, tuple[float, ModelStats | None]] = {}

    @property
    def remote(self) -> bool:
        return self.store.remote

    async def run(self, call: Callable[[], T]) -> T:
        return await self.store.run(call)

    def get(self, key: str) -> ModelStats | None:
        recent = self._recent.get(key)
        if recent is not None and self._clock() - recent[0] < self._max_age_s:
            return recent[1]
        return self._remember(key, self.store.model_stats(key))

    def update(self, key: str, batch: ModelStats) -> ModelStats:
        merged = self.store.merge_model_stats(key, batch)
        self._remember(key, merged)
        return merged

    def _remember(self, key: str, stats: ModelStats | None) -> ModelStats | None:
        if len(self._recent) >= self._max_models:
            self._recent.clear()  # a caller inventing model names must not grow it
        self._recent[key] = (self._clock(), stats)
        return stats


_default = InMemoryModelStats()


def default_store() -> InMemoryModelStats:
    """The process-wide store, used when no shared store was wired into the detector's services."""
    return _default
