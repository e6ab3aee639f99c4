"""Tool-call recovery on megabytes of repeated markup does bounded work, linear in the text up to its bound.

The reproducers of the review (a check stalls its worker's event loop): Granite `<|tool_call|>[...]` markup grew
quadratically (3.5 MB: 43 s), and 3.7 MB of `<function=get_weather>` tags or 3.3 MB of pythonic `[f(x)]` markup took
8-9 s. No timing here: the tests count the work (characters searched, candidates read, name comparisons) at 1x and
4x the input, or against the bound; quadratic work grows sixteen-fold. What the bound leaves unread is reported, and
below it the calls are the ones an unbounded reading finds (the timings: /tmp/leakperf/measure.py, in the report
of the leakperf task)."""

from __future__ import annotations

import asyncio
import importlib
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import SHARED, counted
from test_check_cost_bounds import Compared  # a str that counts its comparisons

from detectors.tool_call_leak import ToolCallLeakDetector
from guardrails.adapters import read_exchange
from guardrails.detector import ScanContext
from guardrails.exchange import Exchange
from guardrails.findings import Finding, Severity
from guardrails.pointer import resolve
from guardrails.toolparse import (
    MAX_CALLS,
    CarriedCalls,
    RecoveredCall,
    base,
    harmony,
    lenient,
    recover,
    recover_bounded,
)
from guardrails.toolparse.base import Budget, get_parser

LINEAR = 4.5  # allowed growth of the work for 4x the input (quadratic work grows 16x)
SLACK = 2_000  # a constant allowance (the first search of each marker)
GRANITE = '<|tool_call|>[{"name": "get_weather", "arguments": {"city": "P"}}]'
FUNCTION_TAG = "<function=get_weather>"
PYTHONIC = '[get_weather(city="P")]'
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}]
SCHEMAS = {"get_weather": TOOLS[0]["function"]["parameters"]}
FIXTURES = SHARED / "fixtures" / "vllm-0.33.0-parsers.jsonl"
# The module, not the function `guardrails.toolparse` exports under the same name.
recover_module = importlib.import_module("guardrails.toolparse.recover")


class Searched(str):
    """A text that counts the characters its `find`/`rfind` searches scan (to the match, or the whole range)."""

    scanned = 0

    def find(self, sub: str, start: Any = None, end: Any = None) -> int:  # type: ignore[override]
        lo, hi = _range(len(self), start, end)
        at = str.find(self, sub, lo, hi)
        Searched.scanned += (at + len(sub) if at >= 0 else hi) - lo
        return at

    def rfind(self, sub: str, start: Any = None, end: Any = None) -> int:  # type: ignore[override]
        lo, hi = _range(len(self), start, end)
        at = str.rfind(self, sub, lo, hi)
        Searched.scanned += hi - (at if at >= 0 else lo)
        return at


def _range(size: int, start: int | None, end: int | None) -> tuple[int, int]:
    return slice(start, end).indices(size)[:2]


def searched(text: str) -> tuple[int, list[RecoveredCall]]:
    Searched.scanned = 0
    calls = recover(Searched(text), SCHEMAS)
    return Searched.scanned, calls


@pytest.mark.parametrize(("prefix", "unit", "per_unit"), [
    ("", GRANITE, 1),
    ("", '<tool_call>[{"name": "f", "arguments": {}}]', 1),
    ("", 'get_weather[ARGS]{"city": "P"}', 1),  # Mistral v11 heads without [TOOL_CALLS]
    ("<|tool_call>", 'call:f{a:<|"|>x<|"|>} ', 0),  # Gemma 4 heads with neither tag: prose, no call
])
def test_searches_grow_linearly_with_the_calls(prefix: str, unit: str, per_unit: int) -> None:
    """Granite looked for the next tag of each kind from every call: where one kind is absent, that search
    scanned the rest of the text each time (1.5 MB: 8.7 s). Mistral v11 did so for `[TOOL_CALLS]`, Gemma 4 for
    its close tag."""
    small, calls = searched(prefix + unit * 500)
    large, more = searched(prefix + unit * 2_000)
    first = 1 if prefix else 0  # (the head right after the prefix is a call)
    assert (len(calls), len(more)) == (500 * per_unit + first, 2_000 * per_unit + first)
    assert large <= LINEAR * small + SLACK, (small, large)


class CountingSearch:
    """A compiled pattern whose `search` counts the characters it scans."""

    def __init__(self, pattern: Any) -> None:
        self.pattern, self.scanned = pattern, 0

    def search(self, text: str, pos: int = 0, endpos: int | None = None) -> Any:
        found = self.pattern.search(text, pos, len(text) if endpos is None else endpos)
        self.scanned += (found.end() if found else len(text) if endpos is None else endpos) - pos
        return found


def test_harmony_looks_for_a_body_end_once_per_end(monkeypatch: pytest.MonkeyPatch) -> None:
    """Headers with no `<|call|>` after them: the search for the body's end scanned the rest of the text from each."""
    unit = "<|constrain|>to=functions.get_weather<|message|>{}"
    work = []
    for n in (500, 2_000):
        counting = CountingSearch(harmony._BODY_END)
        monkeypatch.setattr(harmony, "_BODY_END", counting)
        calls = recover(unit * n)
        monkeypatch.undo()
        assert [c.family for c in calls] == ["harmony"] * n
        work.append(counting.scanned)
    assert work[1] <= LINEAR * work[0] + SLACK, work


SHAPES = {  # unit -> (the reader each call of it costs, by module and name)
    GRANITE: ("guardrails.toolparse.jsoncalls", "_draft_object"),
    FUNCTION_TAG: ("guardrails.toolparse.xmlcalls", "_parameters"),
    PYTHONIC: ("guardrails.toolparse.pycalls", "one_call"),
}


@pytest.mark.parametrize("unit", list(SHAPES))
def test_a_text_of_repeated_markup_reads_at_most_its_bound_of_calls(monkeypatch: pytest.MonkeyPatch,
                                                                    unit: str) -> None:
    """The review's shapes, at the size of a 1 MB body: at most MAX_CALLS calls are read, and the text from the
    first call not read is reported as not read (the calls up to it are the ones an unbounded reading finds)."""
    module, name = SHAPES[unit]
    reads = counted(monkeypatch, __import__(module, fromlist=[name]), name)
    n = 1_000_000 // len(unit)
    text = unit * n
    found = recover_bounded(text, SCHEMAS)
    assert n > 2 * MAX_CALLS and len(reads) <= MAX_CALLS + 1
    assert len(found.calls) == MAX_CALLS and found.unread == MAX_CALLS * len(unit)
    family = found.calls[0].family
    unbounded = get_parser(family).read(text[:(MAX_CALLS + 1) * len(unit)], SCHEMAS, Budget(limit=10**9))
    assert found.calls == unbounded[:MAX_CALLS]


def test_a_call_nesting_whose_names_are_no_strings_is_not_read_level_by_level(monkeypatch: pytest.MonkeyPatch) -> None:
    """`[{"name": [{"name": ...` read each level's array to the reader's depth limit (~1 ms per level: 1 MB took
    minutes): an object whose name is no string is no call, and is not tried; a call inside is still found."""
    keys = counted(monkeypatch, lenient.LenientReader, "_key")
    call = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
    assert recover('[{"name": ' * 2_000) == []
    text = '[{"name": ' * 50 + "[" + call + "]"
    [found] = recover(text)  # (the bare-object reader's, as without the nesting: it reads before xLAM's)
    assert (found.family, found.arguments) == ("llama3_json", {"city": "Paris"})
    assert text[found.span[0]:found.span[1]] == call
    assert len(keys) <= 100


def scan(exchange: Exchange) -> tuple[list[Finding], dict[str, Any]]:
    detector = ToolCallLeakDetector({})
    ctx = ScanContext(segments=[s for s in exchange.segments if detector.default_scope.matches(s)], signals={})
    return asyncio.run(detector.scan(exchange, ctx)), ctx.signals


def body(content: str, raw_output: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "request": {"model": "m", "messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": TOOLS},
        "response": {"choices": [{"index": 0, "finish_reason": "stop",
                                  "message": {"role": "assistant", "content": content}}]}}
    if raw_output is not None:
        out["raw_output"] = raw_output
    return out


@pytest.mark.parametrize("where", ["content", "raw_output"])
def test_the_text_past_the_bound_is_reported_as_not_read(where: str) -> None:
    markup = "Checking.\n" + GRANITE * (MAX_CALLS + 300)
    check = body(markup) if where == "content" else body("ok", raw_output=markup)
    exchange = read_exchange(check["request"], check["response"], raw_output=check.get("raw_output"))
    recovered = [s for s in exchange.segments if s.tool_call is not None and s.tool_call.recovered_from]
    assert len(recovered) == MAX_CALLS  # the tool detectors judge the calls read, no more
    findings, signals = scan(exchange)
    leaks = [f for f in findings if "family" in f.evidence]
    [not_read] = [f for f in findings if f.evidence.get("rule") == "calls_not_read"]
    assert len(leaks) == MAX_CALLS and len(findings) == MAX_CALLS + 1
    assert not_read.severity is Severity.MEDIUM and not_read.evidence["where"] == where
    pointer = "/response/choices/0/message/content" if where == "content" else "/raw_output"
    assert not_read.pointer == pointer
    assert not_read.start == len("Checking.\n") + MAX_CALLS * len(GRANITE) and not_read.end == len(markup)
    assert resolve(check, pointer)[not_read.start:not_read.end] == GRANITE * 300
    assert signals["tool_call_leak"]["leaked_calls"] == MAX_CALLS
    assert signals["tool_call_leak"]["not_read"] == [where]


def test_a_check_reads_at_most_its_bound_of_calls_over_all_its_texts() -> None:
    """Hundreds of choices, each within the bound of a text, held 180,000 calls in 4 MB (17 s): the texts share
    the check's bound, in order, and each one it leaves (partly) unread is reported."""
    per_text = MAX_CALLS // 8
    check = body("")
    check["response"]["choices"] = [{"index": i, "finish_reason": "stop", "message": {
        "role": "assistant", "content": FUNCTION_TAG * per_text}} for i in range(20)]
    exchange = read_exchange(check["request"], check["response"])
    recovered = [s for s in exchange.segments if s.tool_call is not None and s.tool_call.recovered_from]
    assert len(recovered) == MAX_CALLS
    findings, signals = scan(exchange)
    not_read = [f for f in findings if f.evidence.get("rule") == "calls_not_read"]
    assert len(findings) - len(not_read) == MAX_CALLS
    assert [(f.pointer, f.start) for f in not_read] == [
        (f"/response/choices/{i}/message/content", 0) for i in range(8, 20)]
    assert signals["tool_call_leak"]["not_read"] == ["content"] * 12


def test_a_text_within_the_bound_is_read_whole() -> None:
    check = body("Checking.\n" + GRANITE * 300)
    findings, signals = scan(read_exchange(check["request"], check["response"]))
    assert len(findings) == 300 and all(f.evidence["family"] == "granite" for f in findings)
    assert "not_read" not in signals["tool_call_leak"]


# --- the same calls as an unbounded reading, on real outputs ----------------------------------------------------
def fixture_texts() -> Iterator[tuple[str, dict[str, Any]]]:
    if not FIXTURES.exists():
        pytest.skip(f"shared fixtures not found at {FIXTURES}")
    for line in Path(FIXTURES).read_text(encoding="utf-8").splitlines():
        case = json.loads(line)
        tools = {t["function"]["name"]: t["function"].get("parameters") or {} for t in case.get("tools") or []
                 if "name" in t.get("function", {})}
        yield case.get("raw") or "", tools


def unbounded(monkeypatch: pytest.MonkeyPatch, text: str, tools: dict[str, Any]) -> list[RecoveredCall]:
    with monkeypatch.context() as patch:
        for module in (base, recover_module):
            patch.setattr(module, "MAX_CANDIDATES", 10**9)
        patch.setattr(recover_module, "MAX_CALLS", 10**9)
        found = recover_bounded(text, tools)
    assert found.unread is None
    return found.calls


def test_real_outputs_read_the_same_calls_as_without_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """The vLLM parser fixtures, alone and joined into long outputs: nothing is left unread, and the calls are the
    ones read without the bound; repeated past it, the calls read are the first ones of the unbounded reading."""
    texts = list(fixture_texts())
    rng = random.Random(5)
    joined = ["\n\n".join(rng.choice(texts)[0] for _ in range(rng.randint(2, 40))) for _ in range(60)]
    for text, tools in texts + [(t, SCHEMAS) for t in joined]:
        found = recover_bounded(text, tools)
        assert found.unread is None
        assert found.calls == unbounded(monkeypatch, text, tools)
    for text, tools in rng.sample(texts, 8):
        repeated = (text + "\n") * (MAX_CALLS + 10)
        found = recover_bounded(repeated, tools)
        every = unbounded(monkeypatch, repeated, tools)
        assert found.calls == [c for c in every if found.unread is None or c.span[0] < found.unread]
        assert len(found.calls) <= MAX_CALLS


# --- carried calls: a claim does not scan every call carried -------------------------------------------------------
def claims(n: int) -> int:
    """Name comparisons to claim `n` recovered calls against `n` carried calls of other names."""
    carried = CarriedCalls([(Compared(f"carried_{i}"), {"k": i}, True) for i in range(n)])
    Compared.count = 0
    for i in range(n):
        assert not carried.claim(RecoveredCall("hermes", f"leaked_{i}", {"k": i}, True, (0, 1), (0, 1), (0, 1),
                                               (0, 1)))
    return Compared.count


def test_claims_do_not_compare_every_carried_call() -> None:
    """Thousands of structured calls (or calls shown in the content, for raw_output's) and as many leaked ones of
    other names: each claim compared the name of every call carried."""
    small, large = claims(500), claims(2_000)
    assert large <= LINEAR * small + 10, (small, large)


class ListCarried:
    """The reference: carried calls scanned in order, the first match taken."""

    def __init__(self, calls: list[tuple[str, Any, bool]]) -> None:
        self.calls = [(name, json.dumps(a, sort_keys=True) if parsed else None) for name, a, parsed in calls]

    def claim(self, name: str, arguments: Any, parsed: bool) -> bool:
        mine = json.dumps(arguments, sort_keys=True) if parsed else None
        for k, (carried, theirs) in enumerate(self.calls):
            if carried == name and (theirs == mine or theirs is None or mine is None):
                del self.calls[k]
                return True
        return False


@pytest.mark.parametrize("seed", range(30))
def test_claims_take_the_first_matching_call_carried(seed: int) -> None:
    rng = random.Random(seed)

    def call() -> tuple[str, Any, bool]:
        return rng.choice("fgh"), {"a": rng.randint(0, 2)}, rng.random() < 0.7

    carried = [call() for _ in range(rng.randint(0, 12))]
    indexed, reference = CarriedCalls(carried), ListCarried(carried)
    for _ in range(rng.randint(0, 20)):
        name, arguments, parsed = call()
        if rng.random() < 0.2:
            indexed.add(name, arguments, parsed)
            reference.calls.append((name, json.dumps(arguments, sort_keys=True) if parsed else None))
            continue
        recovered = RecoveredCall("hermes", name, arguments, parsed, (0, 1), (0, 1), (0, 1), (0, 1))
        assert indexed.claim(recovered) == reference.claim(name, arguments, parsed)
