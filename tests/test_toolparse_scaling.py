"""Tool-call recovery does work linear in the calls a text holds (a model's content can hold thousands).

No timing: the tests count the work (block look-ups, overlap tests) at 1x and 4x the input; quadratic work
would grow sixteen-fold."""

from __future__ import annotations

import importlib
import random
from collections.abc import Iterator
from typing import Any

import pytest

from guardrails.toolparse import RecoveredCall, recover

BARE = '{"name": "f", "arguments": {}} '
HERMES = '<tool_call>{"name": "f", "arguments": {"a": 1}}</tool_call>'
MIXED = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>\n' \
        'Also: {"name": "get_time", "arguments": {"tz": "CET"}} '
# The module, not the function `guardrails.toolparse` exports under the same name.
recover_module = importlib.import_module("guardrails.toolparse.recover")
LINEAR = 4.5  # allowed growth of the work for 4x the input (quadratic work grows 16x)


def count_block_reads(monkeypatch: pytest.MonkeyPatch, text: str) -> tuple[int, list[RecoveredCall]]:
    """How often recovery reads a call's block (what a per-candidate scan of the calls found so far does)."""
    reads = [0]
    getter = RecoveredCall.block

    def block(call: RecoveredCall) -> tuple[int, int]:
        reads[0] += 1
        return getter.__get__(call)  # type: ignore[attr-defined,no-any-return]

    with monkeypatch.context() as patch:
        patch.setattr(RecoveredCall, "block", property(block))
        calls = recover(text)
    return reads[0], calls


@pytest.mark.parametrize("unit", [BARE, HERMES, MIXED])
def test_block_reads_grow_linearly_with_the_calls(monkeypatch: pytest.MonkeyPatch, unit: str) -> None:
    small, calls = count_block_reads(monkeypatch, unit * 500)
    large, more = count_block_reads(monkeypatch, unit * 2000)
    per_unit = len(calls) // 500
    assert per_unit >= 1 and len(more) == 4 * len(calls)
    assert large <= LINEAR * small


def test_bare_json_calls_are_all_recovered_with_their_spans() -> None:
    text = "Calling now: " + BARE * 300
    calls = recover(text)
    assert [c.family for c in calls] == ["llama3_json"] * 300
    assert [c.span for c in calls] == [(13 + k * len(BARE), 13 + (k + 1) * len(BARE) - 1) for k in range(300)]
    # A tagged block first: the bare objects after it are still read, the one inside it is not read twice.
    tagged = '<|python_tag|>{"name": "a", "parameters": {"x": {"name": "b", "arguments": {}}}} ' + BARE * 3
    assert [c.name for c in recover(tagged)] == ["a", "f", "f", "f"]


class CountingSpans(list[tuple[int, int]]):
    """`taken` for `_resolve`, counting the blocks read from it (each is one overlap test)."""

    read = 0

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for span in super().__iter__():
            self.read += 1
            yield span


def count_overlap_tests(text: str) -> tuple[int, list[RecoveredCall]]:
    dispatch = recover_module._dispatch()
    specific, _ = dispatch.wake(dispatch.mask(text))
    taken = CountingSpans()
    calls = recover_module._resolve(text, specific, None, taken)
    assert len(taken) == len(calls)
    return taken.read, calls


def test_overlap_tests_grow_linearly_with_the_blocks() -> None:
    # `<tool_call>` wakes several families (Hermes, Qwen3-Coder, GLM...): each block is contested.
    small, calls = count_overlap_tests(HERMES * 500)
    large, more = count_overlap_tests(HERMES * 2000)
    assert [c.family for c in more] == ["hermes"] * 2000 and len(calls) == 500
    assert sorted(c.span for c in more) == [(k * len(HERMES), (k + 1) * len(HERMES)) for k in range(2000)]
    assert large <= LINEAR * max(small, 1)


def reference_winners(order: list[Any], taken: list[tuple[int, int]]) -> list[Any]:
    """The choice `_winners` makes, by testing each block against every block kept (quadratic)."""
    winners = []
    for candidate in order:
        start, end = candidate[2], candidate[3]
        if not any(start < t_end and t_start < end for t_start, t_end in taken):
            taken.append((start, end))
            winners.append(candidate)
    return winners


@pytest.mark.parametrize("seed", range(40))
def test_winners_match_the_quadratic_choice(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recover_module, "_FEW_TESTS", 0)  # the sorted sweep, however few the blocks
    rng = random.Random(seed)
    size = rng.choice((10, 40, 200))
    blocks = set()
    for _ in range(rng.randint(1, 60)):
        start = rng.randrange(size)
        blocks.add((rng.randrange(4), start, min(size, start + rng.choice((0, 1, 3, 8, 30)))))
    order = sorted((start - end, rank, start, end) for rank, start, end in blocks)
    taken = reference_winners([(0, 0, s, s + rng.randint(0, 5)) for s in rng.sample(range(size), 3)], [])
    expected_taken = [(c[2], c[3]) for c in taken]
    want_taken = list(expected_taken)
    want = reference_winners(order, want_taken)
    got_taken = list(expected_taken)
    assert recover_module._winners(order, got_taken) == want
    assert got_taken == want_taken
