"""`tool_loop`: an agent stuck calling the same tool with the same (or nearly the same) arguments, or cycling.

Reads every tool call of the exchange (the assistant calls resent in the request history, then the
response's) and judges the new calls: the response's, or the last assistant turn's for a request-only check.
"""

from __future__ import annotations

import difflib
import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from detectors._argspans import finding_at, locate_name
from guardrails.argspans import SizedMemo
from guardrails.detector import Detector, ScanContext, Scope
from guardrails.exchange import Exchange, Phase, Segment, SegmentKind
from guardrails.findings import Category, Finding, Severity

MAX_COMPARED_LENGTH = 2000  # longer argument strings are compared on their first characters only
DICE_SLACK = 0.3  # trigram Dice this far below the threshold means difflib cannot reach it in practice
# difflib (autojunk off) grows about cubically on low-variety text: 128 characters cost < 3 ms at worst
# ("aaa…" with scattered edits), 2,000 cost seconds. Longer arguments get difflib on this prefix only.
DIFFLIB_CHARS = 128
MEMO_ENTRIES = 20_000
MEMO_BYTES = 16 * 2**20  # each of the three memos: a 1 MB argument name must not stay for 20,000 checks
_PAIR_BYTES = 150  # a pair's tuple, its verdict and its dict slots


class ToolLoopDetector(Detector):
    name = "tool_loop"
    category = Category.TOOL_LOOP
    default_scope = Scope(kinds=frozenset({SegmentKind.TOOL_CALL}))

    def __init__(self, settings: Mapping[str, Any] | None = None, services: Any = None) -> None:
        super().__init__(settings, services)
        # Ranges: 0 repeats would flag every call without saying so (1 says it: each call is its own first
        # occurrence), a similarity of 0 makes every call of a tool near, a cycle has at least 2 calls repeated at
        # least twice (less would never find one), and `window: 0` would read as the whole history.
        self.max_repeats = self.setting("max_repeats", int, 3, minimum=1)
        self.near_similarity = self.setting("near_similarity", float, 0.9, above=0, maximum=1)
        self.max_near_repeats = self.setting("max_near_repeats", int, 4, minimum=1)
        self.max_cycle_length = self.setting("max_cycle_length", int, 3, minimum=2)
        self.min_cycle_repeats = self.setting("min_cycle_repeats", int, 3, minimum=2)
        self.window = self.setting("window", int, 50, minimum=1)
        # Near repeats are looked for among this many latest calls of the same tool (a difflib ratio each).
        self.near_window = self.setting("near_window", int, 10, minimum=1)
        # History is resent every step: remember signatures, shingles and pair verdicts across checks.
        self._signatures: SizedMemo[tuple[str, str], tuple[str, str]] = SizedMemo(MEMO_ENTRIES, MEMO_BYTES)
        self._shingles: SizedMemo[str, frozenset[str]] = SizedMemo(MEMO_ENTRIES, MEMO_BYTES)
        self._similar_pairs: SizedMemo[tuple[str, str], bool] = SizedMemo(MEMO_ENTRIES, MEMO_BYTES)

    async def scan(self, exchange: Exchange, ctx: ScanContext) -> list[Finding]:
        calls = [s for s in ctx.segments if s.tool_call is not None][-self.window:]
        targets = _new_calls(calls, exchange)
        if not targets:
            return []
        signatures = [self._signature(s) for s in calls]
        findings = []
        # By identity: list.index would compare segments field by field (dataclass __eq__) up to the target.
        first_target = next(i for i in range(len(calls) - 1, -1, -1) if calls[i] is targets[0])
        for position in range(first_target, len(calls)):
            finding = self._judge(calls, signatures, position)
            if finding is not None:
                findings.append(finding)
        ctx.signals[self.name] = {"calls_seen": len(calls), "looping": bool(findings)}
        return findings

    def _judge(self, calls: Sequence[Segment], signatures: Sequence[tuple[str, str]], position: int
               ) -> Finding | None:
        segment, current = calls[position], signatures[position]
        earlier = range(position)
        exact = [i for i in earlier if signatures[i] == current]
        if len(exact) + 1 >= self.max_repeats:
            severity = Severity.HIGH if len(exact) + 1 >= 2 * self.max_repeats else Severity.MEDIUM
            return self._finding(segment, calls, exact, f"{current[0]!r} called {len(exact) + 1} times with the "
                                 "same arguments", severity, "repeat")
        near = self._near_repeats(signatures, position)
        if len(near) + 1 >= self.max_near_repeats:
            return self._finding(segment, calls, near, f"{current[0]!r} called at least {len(near) + 1} times with "
                                 "nearly the same arguments", Severity.MEDIUM, "near_repeat")
        cycle = _cycle(signatures[: position + 1], self.max_cycle_length, self.min_cycle_repeats)
        if cycle:
            names = [signatures[position - cycle + 1 + k][0] for k in range(cycle)]
            repeats = self.min_cycle_repeats
            indices = list(range(position + 1 - cycle * repeats, position))
            return self._finding(segment, calls, indices, f"cycle of {names} repeated {repeats} times",
                                 Severity.MEDIUM, "cycle")
        return None

    def _near_repeats(self, signatures: Sequence[tuple[str, str]], position: int) -> list[int]:
        """Earlier calls of the same tool with nearly the same arguments among its `near_window` latest ones,
        stopping once there are enough for a finding: each comparison is a difflib ratio, and a new call
        would otherwise meet the whole window of earlier calls every step."""
        name, arguments = signatures[position]
        near: list[int] = []
        compared = 0
        for i in range(position - 1, -1, -1):
            if signatures[i][0] != name:
                continue
            if self._similar(signatures[i][1], arguments):
                near.append(i)
                if len(near) + 1 >= self.max_near_repeats:
                    break
            compared += 1
            if compared >= self.near_window:
                break
        near.reverse()
        return near

    def _signature(self, segment: Segment) -> tuple[str, str]:
        call = segment.tool_call
        assert call is not None
        key = (call.name, call.arguments_raw)
        cached = self._signatures.get(key)
        if cached is None:
            cached = signature(segment)
            # The key's name and text, and the canonical arguments (the value shares the name).
            size = sys.getsizeof(call.name) + sys.getsizeof(call.arguments_raw) + sys.getsizeof(cached[1])
            self._signatures.put(key, cached, size + _PAIR_BYTES)
        return cached

    def _similar(self, a: str, b: str) -> bool:
        a, b = a[:MAX_COMPARED_LENGTH], b[:MAX_COMPARED_LENGTH]
        pair = (a, b) if a <= b else (b, a)
        verdict = self._similar_pairs.get(pair)
        if verdict is not None:
            return verdict
        # Character-trigram Dice is cheap (set ops in C) and bounds difflib's ratio from above well enough
        # to skip the quadratic comparison for arguments that clearly differ.
        sa, sb = self._shingle(a), self._shingle(b)
        dice = 2 * len(sa & sb) / (len(sa) + len(sb)) if sa or sb else 1.0
        if dice < self.near_similarity - DICE_SLACK:
            verdict = False
        elif max(len(a), len(b)) <= DIFFLIB_CHARS:
            verdict = self._difflib_similar(a, b)
        else:
            # Past the prefix, the whole texts must agree by length and by trigrams at the threshold itself
            # (Dice is stricter than difflib's ratio, so this misses rather than invents near repeats).
            lengths = 2 * min(len(a), len(b)) / (len(a) + len(b))
            verdict = (lengths >= self.near_similarity and dice >= self.near_similarity
                       and self._difflib_similar(a[:DIFFLIB_CHARS], b[:DIFFLIB_CHARS]))
        return self._similar_pairs.put(pair, verdict, sys.getsizeof(a) + sys.getsizeof(b) + _PAIR_BYTES)

    def _difflib_similar(self, a: str, b: str) -> bool:
        matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
        return (matcher.real_quick_ratio() >= self.near_similarity and matcher.quick_ratio() >= self.near_similarity
                and matcher.ratio() >= self.near_similarity)

    def _shingle(self, text: str) -> frozenset[str]:
        cached = self._shingles.get(text)
        if cached is None:
            cached = frozenset(text[i:i + 3] for i in range(len(text) - 2))
            # Every trigram is as wide as the widest one's string: size them all as that one.
            each = max(map(sys.getsizeof, cached), default=0)
            self._shingles.put(text, cached, sys.getsizeof(text) + sys.getsizeof(cached) + each * len(cached))
        return cached

    def _finding(self, segment: Segment, calls: Sequence[Segment], earlier: list[int], message: str,
                 severity: Severity, rule: str) -> Finding:
        assert segment.tool_call is not None
        previous = [{"pointer": calls[i].tool_call.name_pointer} for i in earlier[-5:]
                    if calls[i].tool_call is not None]
        return finding_at(self, locate_name(segment), message, severity,
                          {"tool": segment.tool_call.name, "rule": rule, "occurrences": len(earlier) + 1,
                           "previous": previous})


def signature(segment: Segment) -> tuple[str, str]:
    """(name, canonical arguments): key order and whitespace do not make a call new."""
    call = segment.tool_call
    assert call is not None
    if call.arguments_error is None:
        return call.name, json.dumps(call.arguments, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return call.name, " ".join(call.arguments_raw.split())


def _new_calls(calls: list[Segment], exchange: Exchange) -> list[Segment]:
    """The calls this check is about: the response's, or the last history turn's when there is no response."""
    if exchange.has_response:
        return [s for s in calls if s.phase is Phase.RESPONSE]
    if not calls:
        return []
    last_turn = calls[-1].turn
    return [s for s in calls if s.turn == last_turn]


def _cycle(sequence: Sequence[tuple[str, str]], max_length: int, min_repeats: int) -> int:
    """Length of a short cycle (>= 2 distinct calls) the sequence ends with, repeated min_repeats times; 0 if none."""
    for length in range(2, max_length + 1):
        span = length * min_repeats
        if len(sequence) < span:
            break
        tail = sequence[-span:]
        pattern = tail[:length]
        if len(set(pattern)) > 1 and all(tail[k] == pattern[k % length] for k in range(span)):
            return length
    return 0
