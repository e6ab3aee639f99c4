"""`recover(text)`: every tool call written as markup in raw model text, whatever the family."""

from __future__ import annotations

import re
from collections import defaultdict
from functools import cache, lru_cache

from guardrails.toolparse.base import PARSERS, RecoveredCall, Schemas, ToolParser

# Who wins a tie between equally wide markup blocks: specific markup first; the bare-JSON and pythonic
# readers last, because they also read the bodies other families wrap.
PRECEDENCE = (
    "harmony", "kimi_k2", "deepseek_v3", "deepseek_v31", "seed_oss", "qwen3_coder", "glm45", "hermes",
    "granite", "jamba", "internlm", "granite_20b_fc", "gemma4", "functiongemma", "mistral_v11",
    "mistral_prev11", "phi4_mini_json", "llama4_pythonic", "llama3_json", "xlam", "pythonic",
)
# Every marker contains one of these characters; text with none of them (most prose) costs four memchr
# scans, and the markers containing one are looked for only when it occurs.
_ANCHORS = ("<", "[", '"', "'")
_QUICK = ("<", "[", '"name"', "'name'")

Span = tuple[int, int]
Ranked = tuple[tuple[int, ToolParser], ...]  # (precedence rank, parser), in precedence order


class _Dispatch:
    """Parsers in precedence order, and the marker scan that tells which of them the text wakes."""

    def __init__(self) -> None:
        rank = {family: k for k, family in enumerate(PRECEDENCE)}
        self.parsers = sorted(PARSERS.values(), key=lambda p: rank.get(p.family, len(rank)))
        self.bare = 0  # mask of the bare readers (they run last, on what the others left)
        self.custom: list[tuple[int, ToolParser]] = []  # (bit, parser) of the parsers with their own `applies`
        self.wakes: dict[str, int] = {}  # marker -> mask of the parsers it wakes
        for k, parser in enumerate(self.parsers):
            if parser.bare:
                self.bare |= 1 << k
            if type(parser).applies is not ToolParser.applies:
                self.custom.append((1 << k, parser))
                continue
            for marker in parser.markers:
                self.wakes[marker] = self.wakes.get(marker, 0) | 1 << k
        # One regex per (anchor, first character), run only when the anchor occurs: an alternation whose
        # branches share their first character is searched at memchr-like speed, one that mixes first
        # characters is tried at every position.
        grouped: dict[tuple[str, str], list[str]] = defaultdict(list)
        for marker in self.wakes:
            anchor = next((a for a in _ANCHORS if a in marker), None)
            if anchor is None:
                raise ValueError(f"tool-call marker {marker!r} has none of the anchor characters {_ANCHORS}")
            grouped[(anchor, marker[0])].append(marker)
        for (_, first), markers in grouped.items():
            hiding = [(a, b) for a in markers for b in markers if a != b and first in a[1:]]
            if hiding:  # `mask` uses findall, which would miss a marker starting inside another one
                raise ValueError(f"tool-call marker {hiding[0][1]!r} can start inside {hiding[0][0]!r}")
        self.scans = [(anchor, re.compile("|".join(re.escape(m) for m in sorted(markers, key=len, reverse=True))))
                      for (anchor, _), markers in sorted(grouped.items())]

    def mask(self, text: str) -> int:
        """The parsers the text wakes, as a mask of precedence ranks."""
        mask = 0
        wakes = self.wakes
        for anchor, pattern in self.scans:
            if anchor in text:
                # findall skips a marker that starts inside another match: no other marker of the scan can
                # (checked in __init__), and a marker's own repeat wakes nothing new.
                for marker in pattern.findall(text):
                    mask |= wakes[marker]
        for bit, parser in self.custom:
            if parser.applies(text):
                mask |= bit
        return mask


@cache
def _dispatch() -> _Dispatch:
    return _Dispatch()  # built on first use, once every family module has registered its parser


@lru_cache(maxsize=4096)
def _woken(mask: int) -> tuple[Ranked, Ranked]:
    """The specific parsers and the bare readers in `mask`, each in precedence order."""
    dispatch = _dispatch()
    ranked = [(k, parser) for k, parser in enumerate(dispatch.parsers) if mask >> k & 1]
    return (tuple(item for item in ranked if not dispatch.bare >> item[0] & 1),
            tuple(item for item in ranked if dispatch.bare >> item[0] & 1))


def might_contain_calls(text: str) -> bool:
    return any(q in text for q in _QUICK) or text.rstrip().endswith(")")


def recover(text: str, tools: Schemas | None = None) -> list[RecoveredCall]:
    """All calls found in `text`, in order. `tools` maps declared tool names to their parameter schemas.

    Families overlap (`<tool_call>` opens Hermes JSON, Qwen3-Coder XML, GLM and Granite bodies; a bare
    array may be xLAM or an unwrapped Mistral list), so each parser reports the markup blocks it reads and
    the widest block wins a contested region; on a tie, the family earlier in PRECEDENCE. Bare readers
    run last, on the text with the blocks already claimed blanked out.
    """
    if not text:
        return []
    mask = _dispatch().mask(text)
    if not mask:
        return []
    specific, bare = _woken(mask)
    taken: list[Span] = []
    calls = _resolve(text, specific, tools, taken) if specific else []
    view = text  # what the bare readers read: the text with the claimed blocks blanked out
    blanked = 0  # how many of `taken` the view blanks
    for k, parser in bare:  # one by one, so that each claims its blocks before the next one reads
        if len(taken) != blanked:
            view, blanked = _blank(text, taken), len(taken)
        if view is not text and not parser.applies(view):
            continue  # its markers were all inside claimed blocks
        calls += _resolve(view, ((k, parser),), tools, taken)
    if len(calls) > 1:
        calls.sort(key=lambda c: c.span)
    return calls


def _blank(text: str, spans: list[Span]) -> str:
    """`text` with `spans` replaced by spaces (offsets unchanged)."""
    parts, pos = [], 0
    for start, end in sorted(spans):
        if start >= pos:
            parts += [text[pos:start], " " * (end - start)]
            pos = end
    parts.append(text[pos:])
    return "".join(parts)


def _resolve(text: str, parsers: Ranked, tools: Schemas | None, taken: list[Span]) -> list[RecoveredCall]:
    """Run `parsers`; keep the widest non-overlapping blocks (ties: precedence); extend `taken`."""
    groups: dict[tuple[int, Span], list[RecoveredCall]] = {}
    for rank, parser in parsers:
        for call in parser.parse(text, tools):
            groups.setdefault((rank, call.block), []).append(call)
    if len(groups) == 1 and not taken:
        (key, calls), = groups.items()
        taken.append(key[1])
        return calls
    calls = []
    for rank, (start, end) in sorted(groups, key=lambda g: (g[1][0] - g[1][1], g[0], g[1][0])):
        if any(start < t_end and t_start < end for t_start, t_end in taken):
            continue
        taken.append((start, end))
        calls += groups[(rank, (start, end))]
    return calls
