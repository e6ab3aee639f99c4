"""`recover(text)`: every tool call written as markup in raw model text, whatever the family."""

from __future__ import annotations

import re
from bisect import bisect_left, insort
from collections import defaultdict
from functools import cache
from typing import NamedTuple

from guardrails.toolparse.base import MAX_CANDIDATES, PARSERS, Budget, RecoveredCall, Schemas, ToolParser, by_span

# Who wins a tie between equally wide markup blocks: specific markup first; the bare-JSON and pythonic
# readers last, because they also read the bodies other families wrap.
PRECEDENCE = (
    "harmony", "kimi_k2", "deepseek_v3", "deepseek_v31", "seed_oss", "qwen3_coder", "glm45", "hermes",
    "granite", "jamba", "internlm", "granite_20b_fc", "gemma4", "functiongemma", "mistral_v11",
    "mistral_prev11", "phi4_mini_json", "llama4_pythonic", "react", "llama3_json", "xlam", "pythonic",
)
# Every marker contains one of these characters; text with none of them (most prose) costs four memchr
# scans, and the markers containing one are looked for only when it occurs.
_ANCHORS = ("<", "[", '"', "'")
_QUICK = ("<", "[", '"name"', "'name'", "Action")  # (the last: ReAct's `Action:` lines)
# A regex call has a fixed cost that a short text does not repay: there, an anchor's markers are looked for with
# `in` when they are few (slower per byte than the regex engine's search for their first character, faster
# below ~1 KB).
_SHORT = 512
_FEW = 3
# Up to this many overlap tests, `_resolve` tests every pair of blocks rather than sorting them first.
_FEW_TESTS = 64
# Calls recovered per text, all families together (and per check: `leaks.read_leaks` shares them out among the texts
# of a response): past them the text is not read (`Recovery.unread`). Each becomes a tool-call segment that every
# tool detector judges (~0.1 ms per call and check); a parser tries at most MAX_CANDIDATES candidates, about as
# many calls.
MAX_CALLS = MAX_CANDIDATES

Span = tuple[int, int]
Candidate = tuple[int, int, int, int]  # (-width, precedence rank, start, end) of a block, see `_resolve`
Ranked = tuple[tuple[int, ToolParser], ...]  # (precedence rank, parser), in precedence order
Scan = tuple[str, tuple[re.Pattern[str], ...], tuple[str, ...]]  # see `_scans`


class _Dispatch:
    """Parsers in precedence order, and the marker scan that tells which of them the text wakes."""

    def __init__(self) -> None:
        rank = {family: k for k, family in enumerate(PRECEDENCE)}
        self.parsers = sorted(PARSERS.values(), key=lambda p: rank.get(p.family, len(rank)))
        self.bare = 0  # mask of the bare readers (they run last, on what the others left)
        # (bit, marker, parser) of the parsers with their own `applies`: each has one marker, which any text it
        # applies to holds (the cheap test before the call)
        self.custom: list[tuple[int, str, ToolParser]] = []
        self.wakes: dict[str, int] = {}  # marker -> mask of the parsers it wakes
        for k, parser in enumerate(self.parsers):
            if parser.bare:
                self.bare |= 1 << k
            if type(parser).applies is not ToolParser.applies:
                if len(parser.markers) != 1:
                    raise ValueError(f"{parser.family}: a parser with its own `applies` has exactly one marker")
                self.custom.append((1 << k, parser.markers[0], parser))
                continue
            for marker in parser.markers:
                self.wakes[marker] = self.wakes.get(marker, 0) | 1 << k
        self.scans = _scans(list(self.wakes))
        self.subsumed = _subsumed(self.parsers)
        self.woken: dict[int, tuple[Ranked, Ranked]] = {}  # mask -> (specific, bare), see `wake`

    def mask(self, text: str) -> int:
        """The parsers the text wakes, as a mask of precedence ranks."""
        mask = 0
        wakes = self.wakes
        for anchor, patterns, few in self.scans:
            if anchor in text:
                if few and len(text) <= _SHORT:
                    for marker in few:
                        if marker in text:
                            mask |= wakes[marker]
                    continue
                for pattern in patterns:
                    # findall skips a marker that starts inside another match: no other marker of the group can
                    # (checked in `_scans`), and a marker's own repeat wakes nothing new.
                    for marker in pattern.findall(text):
                        mask |= wakes[marker]
        for bit, marker, parser in self.custom:
            if marker in text and parser.applies(text):
                mask |= bit
        return mask

    def wake(self, mask: int) -> tuple[Ranked, Ranked]:
        """The specific parsers and the bare readers in `mask`, each in precedence order (kept in `woken`)."""
        ranked = [(k, parser) for k, parser in enumerate(self.parsers) if mask >> k & 1]
        woken = (tuple(item for item in ranked if not self.bare >> item[0] & 1),
                 tuple(item for item in ranked if self.bare >> item[0] & 1))
        if len(self.woken) >= 4096:  # bounded: masks are few in practice, but a text chooses its own
            self.woken.clear()
        self.woken[mask] = woken
        return woken


def _scans(markers: list[str]) -> list[Scan]:
    """Per anchor: the regexes of its markers, and the markers themselves when they are few (see `_SHORT`).

    One regex per (anchor, first character), run only when the anchor occurs: an alternation whose branches
    share their first character is searched at memchr-like speed, one that mixes first characters is tried at
    every position."""
    grouped: dict[tuple[str, str], list[str]] = defaultdict(list)
    for marker in markers:
        anchor = next((a for a in _ANCHORS if a in marker), None)
        if anchor is None:
            raise ValueError(f"tool-call marker {marker!r} has none of the anchor characters {_ANCHORS}")
        grouped[(anchor, marker[0])].append(marker)
    by_anchor: dict[str, list[list[str]]] = defaultdict(list)
    for (anchor, first), group in sorted(grouped.items()):
        hiding = [(a, b) for a in group for b in group if a != b and first in a[1:]]
        if hiding:  # `mask` uses findall, which would miss a marker starting inside another one
            raise ValueError(f"tool-call marker {hiding[0][1]!r} can start inside {hiding[0][0]!r}")
        by_anchor[anchor].append(group)
    return [(anchor, tuple(re.compile(_trie(group)) for group in groups),
             tuple(marker for group in groups for marker in group) if sum(map(len, groups)) <= _FEW else ())
            for anchor, groups in by_anchor.items()]


def _subsumed(parsers: list[ToolParser]) -> list[int]:
    """By rank, for each bare reader with the plain `applies`: the mask of the ones before it whose markers
    include all of its own. When those are absent from the text left to read, so are its own: it is not asked."""
    plain = {k: set(p.markers) for k, p in enumerate(parsers) if p.bare and type(p).applies is ToolParser.applies}
    return [sum(1 << j for j, wider in plain.items() if j < k and plain[k] <= wider) if k in plain else 0
            for k in range(len(parsers))]


def _trie(markers: list[str]) -> str:
    """An alternation of the literal `markers` factored by their common prefixes: the regex engine then tries
    one branch per character rather than one per marker. A longer marker comes before its prefix, as in an
    alternation sorted by length."""
    rests: dict[str, list[str]] = defaultdict(list)
    for marker in markers:
        if marker:
            rests[marker[0]].append(marker[1:])
    branches = [re.escape(first) + _trie(rest) for first, rest in sorted(rests.items())]
    if "" in markers:
        branches.append("")
    return branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"


@cache
def _dispatch() -> _Dispatch:
    return _Dispatch()  # built on first use, once every family module has registered its parser


def might_contain_calls(text: str) -> bool:
    return any(q in text for q in _QUICK) or text.rstrip().endswith(")")


class Recovery(NamedTuple):
    """The calls recovered from a text, in order, and `unread`: where the text stops being read (None when it was
    read to its end). Past MAX_CALLS calls, or where a parser ran out of its budget of candidates, the rest of
    the text is not read: no call starting there is kept, and the caller reports the region as not read."""

    calls: list[RecoveredCall]
    unread: int | None = None


def recover(text: str, tools: Schemas | None = None) -> list[RecoveredCall]:
    """All calls found in `text`, in order (up to where it stops being read, see `recover_bounded`)."""
    return recover_bounded(text, tools).calls


def recover_bounded(text: str, tools: Schemas | None = None, max_calls: int | None = None) -> Recovery:
    """All calls found in `text`, in order, and where reading stopped (see `Recovery`): at most `max_calls` of them
    (what the check has left), and never more than MAX_CALLS. `tools` maps declared tool names to their parameter
    schemas.

    Families overlap (`<tool_call>` opens Hermes JSON, Qwen3-Coder XML, GLM and Granite bodies; a bare
    array may be xLAM or an unwrapped Mistral list), so each parser reports the markup blocks it reads and
    the widest block wins a contested region; on a tie, the family earlier in PRECEDENCE. Bare readers
    run last, on the text with the blocks already claimed blanked out.
    """
    if not text:
        return Recovery([])
    dispatch = _dispatch()
    mask = dispatch.mask(text)
    if not mask:
        return Recovery([])
    specific, bare = dispatch.woken.get(mask) or dispatch.wake(mask)
    limit = MAX_CALLS if max_calls is None else max(0, min(max_calls, MAX_CALLS))
    # A parser needs no more candidates than the calls left to find (each call is one candidate, or more).
    candidates = min(MAX_CANDIDATES, limit)
    taken: list[Span] = []
    stops: list[int] = []  # where parsers ran out of candidates
    calls = _resolve(text, specific, tools, taken, stops, candidates) if specific else []
    if len(calls) > limit:  # the bare readers read no further than the calls kept
        calls.sort(key=by_span)
        stops.append(calls[limit].span[0])
    view = text  # what the bare readers read: the text with the claimed blocks blanked out
    blanked = 0  # how many of `taken` the view blanks
    absent = 0  # the bare readers whose markers are not in the view
    for k, parser in bare:  # one by one, so that each claims its blocks before the next one reads
        if len(taken) != blanked:
            view, blanked, absent = _blank(text, taken), len(taken), 0
            if view.isspace():
                break  # the claimed blocks hold all the text: no call is left to read
        if view is not text and (dispatch.subsumed[k] & absent or not parser.applies(view)):
            absent |= 1 << k
            continue  # its markers were all inside claimed blocks
        calls += _resolve(view, ((k, parser),), tools, taken, stops, candidates)
    if len(calls) > 1:
        calls.sort(key=by_span)
    unread = min(stops) if stops else None
    if len(calls) > limit and (unread is None or calls[limit].span[0] < unread):
        unread = calls[limit].span[0]
    if unread is not None:
        # Nothing from there on: a region one parser did not read may hold another family's calls that its own
        # blocks would have beaten. (Calls are sorted by start: cut at the first one at or past it.)
        cut = bisect_left(calls, unread, key=_start)
        del calls[cut:]
    return Recovery(calls, unread)


def _start(call: RecoveredCall) -> int:
    return call.span[0]



def _blank(text: str, spans: list[Span]) -> str:
    """`text` with `spans` replaced by spaces (offsets unchanged)."""
    if len(spans) == 1:  # the common case: one claimed block
        (start, end), = spans
        return text[:start] + " " * (end - start) + text[end:]
    parts, pos = [], 0
    for start, end in sorted(spans):
        if start >= pos:
            parts += [text[pos:start], " " * (end - start)]
            pos = end
    parts.append(text[pos:])
    return "".join(parts)


def _resolve(text: str, parsers: Ranked, tools: Schemas | None, taken: list[Span],
             stops: list[int] | None = None, candidates: int | None = None) -> list[RecoveredCall]:
    """Run `parsers`, each with its budget of `candidates` (where one ran out goes to `stops`); keep the widest
    non-overlapping blocks (ties: precedence); extend `taken`."""
    found = []  # (rank, calls) of the parsers that found calls (a loop: cheaper than a comprehension here)
    for rank, parser in parsers:
        # (no candidate past where an earlier parser stopped: nothing from there on is kept)
        budget = Budget(candidates, until=min(stops) if stops else None)
        calls = parser.read(text, tools, budget)
        if budget.unread is not None and stops is not None:
            stops.append(budget.unread)
        if calls:
            found.append((rank, calls))
    if not found:
        return []
    if len(found) == 1 and not taken:  # the common case: one parser, one block, nothing claimed yet
        calls = found[0][1]
        block = calls[0].block
        for call in calls:  # (loops here rather than any() or all() over a generator: cheaper)
            if call.block != block:
                break
        else:
            taken.append(block)
            return calls
    groups: dict[tuple[int, Span], list[RecoveredCall]] = {}
    for rank, calls in found:
        for call in calls:
            groups.setdefault((rank, call.block), []).append(call)
    kept: list[RecoveredCall] = []
    # Widest first, then by precedence, then leftmost: (-width, rank, start, end) tuples sort that way.
    for _, rank, start, end in _winners(sorted([(start - end, rank, start, end) for rank, (start, end) in groups]),
                                        taken):
        kept += groups[(rank, (start, end))]
    return kept


def _winners(order: list[Candidate], taken: list[Span]) -> list[Candidate]:
    """The blocks of `order` (best first) that overlap neither a better one kept nor `taken`; extend `taken`.

    The same choice as testing each block against every block kept, without its quadratic cost: one sweep
    splits the blocks (and `taken`) into groups that cannot overlap across; a block alone in its group wins
    outright (the common case: calls side by side), the others are tested by bisection against the sorted
    blocks kept in their group."""
    if len(order) * (len(order) + len(taken)) <= _FEW_TESTS:  # a few blocks (most texts): test each pair
        return _winners_few(order, taken)
    group, seeds = _contested(order, taken)
    kept_in: dict[int, list[Span]] = {}  # contested group -> its blocks kept so far, sorted (they are disjoint)
    winners: list[Candidate] = []
    for k, candidate in enumerate(order):
        g = group[k]
        if g >= 0:
            start, end = candidate[2], candidate[3]
            kept = kept_in.get(g)
            if kept is None:
                kept = kept_in[g] = seeds.get(g, [])  # (sorted, as the sweep met them)
            # Disjoint blocks sorted by start are sorted by end too: of those starting before `end`, the last
            # one ends latest, and overlaps this block when it ends after `start`.
            i = bisect_left(kept, (end,))
            if i and kept[i - 1][1] > start:
                continue
            insort(kept, (start, end))
        winners.append(candidate)
        taken.append((candidate[2], candidate[3]))
    return winners


def _winners_few(order: list[Candidate], taken: list[Span]) -> list[Candidate]:
    """`_winners` by testing each block against every block kept: cheaper for a few blocks."""
    winners: list[Candidate] = []
    for candidate in order:
        start, end = candidate[2], candidate[3]
        for t_start, t_end in taken:
            if start < t_end and t_start < end:
                break  # overlaps a block already kept
        else:
            taken.append((start, end))
            winners.append(candidate)
    return winners


def _contested(order: list[Candidate], taken: list[Span]) -> tuple[list[int], dict[int, list[Span]]]:
    """Per block of `order`: the id of its group of possibly overlapping blocks, or -1 when it overlaps no
    other block nor `taken`; and the `taken` blocks in each group. A group is a run of blocks, by start, each
    starting before the furthest end so far (a superset of the overlaps: a looser grouping only costs time)."""
    spans = sorted([(start, end, k) for k, (_, _, start, end) in enumerate(order)]
                   + [(start, end, -1) for start, end in taken])
    group = [-1] * len(order)
    seeds: dict[int, list[Span]] = {}
    run: list[tuple[int, int, int]] = []
    reach = -1
    for span in spans:
        if span[0] >= reach:
            _close(run, group, seeds)
            run = []
        run.append(span)
        reach = max(reach, span[1])
    _close(run, group, seeds)
    return group, seeds


def _close(run: list[tuple[int, int, int]], group: list[int], seeds: dict[int, list[Span]]) -> None:
    """Number a run of `_contested` as a group (by its first block of `order`) when it holds more than one
    block and one of `order`'s."""
    members = [k for _, _, k in run if k >= 0]
    if len(run) < 2 or not members:
        return
    for k in members:
        group[k] = members[0]
    if len(members) < len(run):
        seeds[members[0]] = [(start, end) for start, end, k in run if k < 0]
