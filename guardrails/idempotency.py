"""Idempotent retries of a check: the `Idempotency-Key` request header (as Stripe's API and the IETF draft
draft-ietf-httpapi-idempotency-key-header have it).

A client that lost the answer to a check (the connection dropped after the service got it) sends it again with the
same key. The service answers that retry with the first check's stored answer, byte for byte (same `check_id`),
without running the detectors, writing an audit record or counting budgets again. A retry that arrives while the
first is still running waits for it. The same key with another body is refused (422 `idempotency_key_reused`):
the caller reused a key, and answering with another body's verdict would be wrong.

Only answered checks are stored: a check that failed (any error) leaves nothing, and its retry runs again. Keys are
scoped by the body's `context.tenant` (no tenant: one global scope), kept `ttl_s` seconds and at most
`max_entries` answers / `max_bytes` bytes (the oldest goes first). The store is this process's memory: with
`guardrails serve --workers N` a retry on a new connection may reach another worker, which does not know the key
(README, "Retries").
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from guardrails.errors import IdempotencyKeyReused, InvalidIdempotencyKey

HEADER = "idempotency-key"
REPLAYED_HEADER = "idempotent-replayed"
MAX_KEY_CHARS = 255
DEFAULT_TTL_S = 600
MAX_ENTRIES = 20_000
MAX_BYTES = 64 * 1024 * 1024
# A stored answer costs its bytes plus the entry's Python objects (dict slot, tuple, dataclass, digest): about this.
ENTRY_OVERHEAD = 400


def read_key(values: Sequence[str]) -> str:
    """The key of the `Idempotency-Key` header values (one header, 1-255 printable ASCII characters). The draft's
    structured-field form (`"…"`) and a bare token are the same key. Raises `InvalidIdempotencyKey` otherwise."""
    if len(values) != 1:
        raise InvalidIdempotencyKey(f"send one Idempotency-Key header, got {len(values)}")
    key = values[0].strip()
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
    if not key:
        raise InvalidIdempotencyKey("the Idempotency-Key header is empty")
    if len(key) > MAX_KEY_CHARS:
        raise InvalidIdempotencyKey(f"the Idempotency-Key is {len(key)} characters long; at most {MAX_KEY_CHARS}")
    if not key.isascii() or not key.isprintable():
        raise InvalidIdempotencyKey("the Idempotency-Key must be printable ASCII (a UUID, say)")
    if "," in key or '"' in key:  # two headers a proxy joined into one ("a, b"), or a broken quoted string
        raise InvalidIdempotencyKey("the Idempotency-Key must not hold ',' or '\"': send one key in one header")
    return key


@dataclass(slots=True)
class _Running:
    digest: bytes
    done: asyncio.Event


@dataclass(slots=True)
class _Answered:
    digest: bytes
    answer: bytes
    expires: float
    size: int


Slot = tuple[str, str]  # (tenant or "", key)


class IdempotencyStore:
    """Answers by (tenant, key), in this process. Every method runs on the event loop: no locks needed."""

    def __init__(self, ttl_s: float = DEFAULT_TTL_S, *, max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_BYTES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s  # 0: keys are ignored, every check runs
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.clock = clock
        self.bytes = 0
        self.evicted = 0  # answers dropped by the bounds before their TTL: a retry of one runs again
        self.replays = 0  # retries answered with a stored answer (waiters on a running check included)
        self._running: dict[Slot, _Running] = {}
        # In insertion order, which is expiry order (one TTL for all): expired and evicted entries leave from the front.
        self._answered: OrderedDict[Slot, _Answered] = OrderedDict()

    def __len__(self) -> int:
        return len(self._answered)

    async def run(self, tenant: str | None, key: str, digest: bytes,
                  check: Callable[[], Awaitable[bytes]]) -> tuple[bytes, bool]:
        """`check()`'s answer and False; or, for a key answered within the TTL, the stored answer and True. `digest`
        is the hash of the body's bytes: the same key with another one raises `IdempotencyKeyReused`."""
        slot = (tenant or "", key)
        while True:
            self._expire(self.clock())
            answered = self._answered.get(slot)
            if answered is not None:
                _same_body(answered.digest, digest, key)
                self.replays += 1
                return answered.answer, True
            running = self._running.get(slot)
            if running is None:
                break
            _same_body(running.digest, digest, key)
            # The first is still running: its answer is this retry's. If it fails, the loop runs the check here.
            await running.done.wait()
        entry = _Running(digest, asyncio.Event())
        self._running[slot] = entry
        try:
            answer = await check()
            self._remember(slot, digest, answer)
        finally:  # an error (or cancellation) stores nothing: waiters wake up and run the check themselves
            del self._running[slot]
            entry.done.set()
        return answer, False

    def _remember(self, slot: Slot, digest: bytes, answer: bytes) -> None:
        size = len(answer) + len(slot[0]) + len(slot[1]) + len(digest) + ENTRY_OVERHEAD
        if self.ttl_s <= 0 or size > self.max_bytes:
            return
        self._answered[slot] = _Answered(digest, answer, self.clock() + self.ttl_s, size)
        self.bytes += size
        while len(self._answered) > self.max_entries or self.bytes > self.max_bytes:
            self._pop_oldest()
            self.evicted += 1

    def _expire(self, now: float) -> None:
        answered = self._answered
        while answered:
            if next(iter(answered.values())).expires > now:
                return
            self._pop_oldest()

    def _pop_oldest(self) -> None:
        _, entry = self._answered.popitem(last=False)
        self.bytes -= entry.size


def _same_body(stored: bytes, digest: bytes, key: str) -> None:
    if stored != digest:
        raise IdempotencyKeyReused(f"Idempotency-Key {key!r} was used for a check with another body; send each "
                                   "check with its own key, and a retry with the same body bytes")
