"""`SizedMemo`: the bounded memo the checks keep what they computed per text in (agents resend their history every
step, so a step should cost what it adds), bounded so that what they keep cannot grow with the traffic."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SizedMemo(Generic[K, V]):
    """A first-in-first-out memo bounded by entries and by bytes, each entry's size estimated by its caller.

    A bound on entries alone lets a few megabyte-sized texts (a 1 MB argument name) stay alive long after the
    checks that sent them. An entry above a quarter of the byte bound (`max_entry_bytes`) is not kept with the
    others: it would flush them. With `latest`, the latest such entry is kept alone until the next one
    (`latest_bytes`): a check asks for the same key once per finding, and 1,000 findings must not each scan a
    megabyte again.

    `max_entries` None: bounded by bytes only; `max_bytes` None: by entries only (then `size` may be left out).
    With `lru`, `get` counts as a use: the least recently used entry goes first (for what is costly to rebuild and
    asked for again and again); a lookup in `entries`, a plain dict a hot path may read directly, does not count.
    """

    def __init__(self, max_entries: int | None, max_bytes: int | None = None, *, latest: bool = False,
                 max_entry_bytes: int | None = None, lru: bool = False) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_entry_bytes = max_bytes // 4 if max_entry_bytes is None and max_bytes is not None else max_entry_bytes
        self.entries: dict[K, V] = {}
        self.bytes = 0  # the estimated size of what is kept, `latest` aside
        self.keeps_latest = latest
        self.latest: tuple[K, V] | None = None
        self.latest_bytes = 0
        self._lru = lru
        # Each key's size, in the order keys go: evicting with `next(iter(entries))` would scan the deleted slots a
        # dict keeps at its front until it resizes (quadratic once full); an OrderedDict pops its first in O(1).
        self._sizes: OrderedDict[K, int] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self.entries.get(key)
        if value is None:
            if self.latest is not None and self.latest[0] == key:
                return self.latest[1]
        elif self._lru:
            self._sizes.move_to_end(key)
        return value

    def put(self, key: K, value: V, size: int = 0) -> V:
        """Keep `value` (`size` bytes, with its key); a replaced entry keeps its place."""
        if self.max_entry_bytes is not None and size > self.max_entry_bytes:
            if self.keeps_latest:
                self.latest, self.latest_bytes = (key, value), size
            return value
        old = self._sizes.get(key, 0)
        self.entries[key] = value
        self._sizes[key] = size
        self.bytes += size - old
        sizes, max_entries, max_bytes = self._sizes, self.max_entries, self.max_bytes
        while (max_entries is not None and len(sizes) > max_entries) or (
                max_bytes is not None and self.bytes > max_bytes):
            evicted, evicted_size = sizes.popitem(last=False)
            self.entries.pop(evicted, None)
            self.bytes -= evicted_size
        return value

    def clear(self) -> None:
        self.entries.clear()
        self._sizes.clear()
        self.bytes = 0
        self.latest, self.latest_bytes = None, 0

    def __len__(self) -> int:
        return len(self._sizes)
