"""Coalescing a stream's chunks for its check body, so a long stream's re-check grows with its text, not with its
number of chunks.

vLLM sends one chunk per token: about 245 bytes of JSON for a few bytes of text (477 with logprobs), so a check body
that holds every chunk so far passes the service's 4 MiB limit near 17k tokens (9k with logprobs), and the rest of
the stream could no longer be checked. Consecutive chunks that differ only in their text fragments are one chunk of
the same API with those fragments joined: the service reads the same text, tool calls and logprobs from it.

What may differ between two chunks that merge is data, per API (`Coalescing`, in `apis.py`): paths whose strings are
joined (text, reasoning, argument fragments), paths whose lists are concatenated (logprobs), and paths where the
later value stands (sequence numbers, cumulative usage). Everything else must be equal, keys included, so a chunk
that names a tool, starts a block, carries a finish reason or switches from reasoning to answer text starts a chunk
of its own: what the service reads from the boundaries between chunks is kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

_JOIN, _LIST, _LATEST = 1, 2, 3
UNPARSED: Any = object()  # `add` without a value: it parses the bytes


class _Node:
    """One step of the paths a `Coalescing` names: a key of an object, or `*` for every item of a list."""

    __slots__ = ("children", "kind")

    def __init__(self) -> None:
        self.kind = 0
        self.children: dict[str, _Node] = {}


@dataclass(frozen=True, slots=True)
class Coalescing:
    """Which values may differ between two consecutive chunks of an API that merge into one. Paths are `/`-separated
    keys from the chunk's root, `*` standing for any list item."""

    joined: tuple[str, ...] = ()  # strings concatenated: text, reasoning and tool-argument fragments
    listed: tuple[str, ...] = ()  # lists concatenated: logprobs, token ids
    latest: tuple[str, ...] = ()  # the later value stands (both present): sequence numbers, running usage
    root: _Node = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        root = _Node()
        for kind, paths in ((_JOIN, self.joined), (_LIST, self.listed), (_LATEST, self.latest)):
            for path in paths:
                node = root
                for step in path.split("/"):
                    node = node.children.setdefault(step, _Node())
                node.kind = kind
        object.__setattr__(self, "root", root)


class _Pieces:
    """A joined string still being built: its fragments, joined once when the chunk is serialized."""

    __slots__ = ("parts",)

    def __init__(self, parts: list[str]) -> None:
        self.parts = parts


def _serialize_pieces(value: Any) -> str:
    if type(value) is _Pieces:
        joined = "".join(value.parts)
        value.parts = [joined]  # a later serialization of the same open chunk does not join again
        return joined
    raise TypeError(f"{type(value).__name__} is not JSON")


_Op = tuple[Any, Any, Any, int]  # (container, key, the later chunk's value, kind)


def _plan(holder: Any, key: Any, run: Any, new: Any, node: _Node | None, ops: list[_Op]) -> bool:
    """Whether `new` merges into `run` (held at `holder[key]`); the changes go to `ops`, applied only if all of
    the chunk merges."""
    if node is None:
        return run == new  # no path below: must be equal (no joined strings or grown lists down here)
    kind = node.kind
    if kind == _JOIN and type(new) is str and (type(run) is str or type(run) is _Pieces):
        ops.append((holder, key, new, _JOIN))
        return True
    if kind == _LIST and type(run) is list and type(new) is list:
        ops.append((holder, key, new, _LIST))
        return True
    if kind == _LATEST and _present(run) and _present(new):
        ops.append((holder, key, new, _LATEST))
        return True
    if type(run) is dict and type(new) is dict:
        if run.keys() != new.keys():
            return False
        children = node.children
        for k, value in run.items():  # a loop, not all(<generator>): this runs for every chunk of a long stream
            child = children.get(k)
            if child is None:
                if value != new[k]:
                    return False
            elif not _plan(run, k, value, new[k], child, ops):
                return False
        return True
    if type(run) is list and type(new) is list:
        if len(run) != len(new):
            return False
        item = node.children.get("*")
        if item is None:
            return run == new
        return all(_plan(run, i, value, new[i], item, ops) for i, value in enumerate(run))
    return run == new


def _present(value: Any) -> bool:
    # The readers keep the last non-empty value (usage): an empty or null one must not replace a real one.
    return value is not None and value != {} and value != [] and value != ""


def _apply(ops: list[_Op]) -> None:
    for holder, key, new, kind in ops:
        if kind == _JOIN:
            current = holder[key]
            if type(current) is _Pieces:
                current.parts.append(new)
            else:
                holder[key] = _Pieces([current, new])
        elif kind == _LIST:
            holder[key].extend(new)  # the open chunk's own list, parsed from its bytes: ours to grow
        else:
            holder[key] = new


class Coalescer:
    """Stream chunks in, fewer equivalent chunks out. A chunk that merged with none keeps its own bytes."""

    def __init__(self, spec: Coalescing) -> None:
        self._root = spec.root
        self._done: list[bytes] = []
        self._open: Any = None  # the chunk still taking fragments (parsed), or None
        self._open_raw: bytes | None = None  # its bytes while nothing merged into it

    def add(self, raw: bytes, value: Any = UNPARSED) -> None:
        """One chunk's check bytes (strict JSON), and its parsed value where the caller has it (ours to keep)."""
        if value is UNPARSED:
            try:
                value = orjson.loads(raw)
            except orjson.JSONDecodeError:  # valid JSON orjson refuses (an integer over 64 bits): kept as it is
                self._close()
                self._done.append(raw)
                return
        if type(value) is dict and type(self._open) is dict:
            ops: list[_Op] = []
            if _plan(None, None, self._open, value, self._root, ops):
                _apply(ops)
                self._open_raw = None
                return
        self._close()
        self._open, self._open_raw = value, raw

    def chunks(self) -> list[bytes]:
        """The coalesced chunks so far, in order."""
        if self._open is None:
            return list(self._done)
        return [*self._done, self._open_raw if self._open_raw is not None else self._dump(self._open)]

    def _close(self) -> None:
        if self._open is not None:
            self._done.append(self._open_raw if self._open_raw is not None else self._dump(self._open))
        self._open = self._open_raw = None

    @staticmethod
    def _dump(value: Any) -> bytes:
        return orjson.dumps(value, default=_serialize_pieces)


def coalesce(chunks: list[bytes], spec: Coalescing) -> list[bytes]:
    """`chunks` with consecutive mergeable ones merged (see the module docstring)."""
    coalescer = Coalescer(spec)
    for chunk in chunks:
        coalescer.add(chunk)
    return coalescer.chunks()


__all__ = ["UNPARSED", "Coalescer", "Coalescing", "coalesce"]
