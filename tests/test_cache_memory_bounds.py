"""The caches keyed or valued by request text are bounded in bytes, not only in entries.

A hostile-input review found that a check carrying a 1 MB tool-argument name kept about 4 MB alive after it ended:
the segment cache, the placed findings, the argument-span memo and tool_loop's memos each held its text (or a copy)
for thousands of checks. Here checks with 1 MB argument names and values go through the service under small byte
bounds, and what each cache holds is measured by walking its contents (sys.getsizeof of every object once).
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from types import BuiltinFunctionType, FunctionType, ModuleType
from typing import Any

import pytest
from policy_bundles import bundle

from detectors import tool_loop
from guardrails import argspans
from guardrails import engine as engine_module
from guardrails.argspans import SizedMemo
from guardrails.detector import DetectorRegistry, Services
from guardrails.engine import Engine, PlacedFindings, SegmentCache
from guardrails.exchange import Phase
from guardrails.policy import PolicyStore
from guardrails.service import CheckService

MiB = 2**20
BOUND = 8 * MiB  # each cache's byte bound in these tests
BIG = 1_000_000  # characters of a hostile argument name or value
CHECKS = 12  # hostile checks: what each cache held before grew with every one of them
SLACK = 256 * 1024  # empty tables, queues and counters
SECRET = "AKIAZ7QW3ERT5YUI9OPL"  # a finding inside the big value: its offsets are placed in the object

POLICY = """colang_version: "2.x"
rails:
  tool_output:
    flows: [check secrets, check tool schema, check tool loop]
"""
TOOLS = [{"type": "function", "function": {"name": "write_file", "parameters": {"type": "object"}}}]


def openai_body(step: int, arguments: str, previous: str) -> dict[str, Any]:
    """An agent step: the previous call resent in the history with its result, and a new call in the response."""
    history = [
        {"role": "user", "content": "Save the report."},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": f"call_{step - 1}", "type": "function", "function": {"name": "write_file", "arguments": previous}}]},
        {"role": "tool", "tool_call_id": f"call_{step - 1}", "content": "written"},
    ]
    return {"format": "openai.chat", "context": {"session_id": "agent-1"},
            "request": {"model": "m", "messages": history, "tools": TOOLS},
            "response": {"id": f"r{step}", "object": "chat.completion", "model": "m", "choices": [
                {"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": None,
                 "tool_calls": [{"id": f"call_{step}", "type": "function",
                                 "function": {"name": "write_file", "arguments": arguments}}]}}]}}


def anthropic_body(step: int, arguments: dict[str, Any]) -> dict[str, Any]:
    """Arguments carried as an object: a finding's offsets are placed in the value holding it."""
    return {"format": "anthropic.messages", "context": {"session_id": "agent-2"},
            "request": {"model": "claude-x", "max_tokens": 256,
                        "messages": [{"role": "user", "content": "Save the report."}],
                        "tools": [{"name": "write_file", "input_schema": {"type": "object"}}]},
            "response": {"id": f"msg_{step}", "type": "message", "role": "assistant", "model": "claude-x",
                         "stop_reason": "tool_use", "usage": {"input_tokens": 40, "output_tokens": 60},
                         "content": [{"type": "tool_use", "id": f"toolu_{step}", "name": "write_file",
                                      "input": arguments}]}}


def hostile_bodies() -> Iterator[dict[str, Any]]:
    """Distinct 1 MB argument names (a raw JSON string) and 1 MB values (an object, with a secret in it)."""
    previous = json.dumps({"path": "/tmp/report.txt"})
    for step in range(CHECKS):
        if step % 2:
            value = f"{step:06d} {SECRET} " + "v" * BIG
            yield anthropic_body(step, {"path": "/tmp/report.txt", "content": value})
        else:
            arguments = json.dumps({f"{step:06d}" + "n" * BIG: "x"})
            yield openai_body(step, arguments, previous)
            previous = arguments


def deep_size(root: object) -> int:
    """Bytes of `root` and of everything it references, each object once; classes, modules, functions and enum
    members are shared by the whole process and not counted."""
    seen: set[int] = set()
    stack = [root]
    size = 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, (type, ModuleType, FunctionType, BuiltinFunctionType, Enum)):
            continue
        seen.add(id(obj))
        size += sys.getsizeof(obj)
        stack.extend(gc.get_referents(obj))
    return size


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CheckService]:
    monkeypatch.setattr(argspans, "_spans", SizedMemo(4096, BOUND, latest=True))
    monkeypatch.setattr(argspans, "_escapes", SizedMemo(1024, BOUND, latest=True))
    monkeypatch.setattr(tool_loop, "MEMO_BYTES", BOUND)  # read when the detector is built
    bundle(tmp_path / "policies", "default", POLICY)
    svc = CheckService(PolicyStore(tmp_path / "policies"), DetectorRegistry.from_entry_points(), Services())
    svc.cache = SegmentCache(max_bytes=BOUND)  # before the engine is built: it shares this cache
    yield svc
    svc.close()


def caches(svc: CheckService) -> dict[str, Any]:
    engine = svc.engine_for(svc.policies.get("default"))
    loop = next(slot.detector for slot in engine.slots if slot.detector.name == "tool_loop")
    return {"segment cache": svc.cache, "placed findings": engine._placed, "argument spans": argspans._spans,
            "string escapes": argspans._escapes, "tool_loop signatures": loop._signatures,
            "tool_loop shingles": loop._shingles, "tool_loop pairs": loop._similar_pairs}


def test_hostile_megabyte_arguments_stay_within_each_caches_byte_bound(service: CheckService) -> None:
    findings = set()
    for body in hostile_bodies():
        result = asyncio.run(service.check(body))
        findings |= {f["detector"] for f in result["findings"]}
    assert "secret" in findings  # the 1 MB value was read, and its secret placed
    for name, cache in caches(service).items():
        assert cache.bytes <= cache.max_bytes, name  # what it accounted
        # What it holds (the estimates are upper bounds), and at most the latest entry too big to keep with them.
        latest = getattr(cache, "latest_bytes", 0)
        assert latest <= 3 * BIG, name
        assert deep_size(cache) <= cache.max_bytes + latest + SLACK, name
    # Normal-sized agent traffic is still served from the caches: a step resent unchanged analyzes nothing again.
    normal = openai_body(1, json.dumps({"path": "/tmp/notes.txt", "content": "Meeting moved to 3pm."}),
                         json.dumps({"path": "/tmp/report.txt"}))
    asyncio.run(service.check(normal))
    misses = service.cache.misses
    asyncio.run(service.check(normal))
    assert service.cache.misses == misses


def test_segment_cache_counts_a_text_once_for_all_detector_tables_and_frees_it_with_the_last() -> None:
    cache = SegmentCache(max_entries=4, max_bytes=MiB)
    entry = engine_module._ENTRY_BYTES
    text = "Quarterly numbers attached. " * 1000  # ~28 KB: three detectors' tables hold the same string
    tables = [cache.table((slot, "tool_result")) for slot in range(3)]
    for slot, table in enumerate(tables):
        cache.put((slot, "tool_result"), table, text, [])
    assert cache.bytes == sys.getsizeof(text) + 3 * entry
    others = [f"Build {k} passed." for k in range(4)]
    for k, other in enumerate(others):  # first in, first out: each evicts one of the text's entries
        cache.put((0, "tool_result"), tables[0], other, [])
        holders = [slot for slot, table in enumerate(tables) if text in table]
        assert holders == list(range(k, 3))
        assert cache.bytes == (sys.getsizeof(text) if holders else 0) + sum(sys.getsizeof(o) for o in others[:k + 1]) \
            + len(cache) * entry
    # By bytes: megabyte texts push the oldest out, and one above a quarter of the bound is not kept at all.
    cache = SegmentCache(max_entries=100, max_bytes=MiB)
    table = cache.table((0, "tool_result"))
    big = [f"{k} " + "y" * 200_000 for k in range(6)]
    for text in big:
        cache.put((0, "tool_result"), table, text, [])
        assert cache.bytes <= cache.max_bytes
    assert [text in table for text in big] == [False, True, True, True, True, True]
    huge = "z" * (MiB // 4)
    cache.put((0, "tool_result"), table, huge, [])
    assert huge not in table and big[1] in table


def test_response_segments_are_not_kept_by_the_placed_findings(tmp_path: Path) -> None:
    """Next step reads a response from the request, as new segments: keeping the response's only held its text."""
    bundle(tmp_path / "policies", "default", POLICY)
    svc = CheckService(PolicyStore(tmp_path / "policies"), DetectorRegistry.from_entry_points(), Services())
    arguments = json.dumps({"path": "/tmp/report.txt", "content": f"key {SECRET}"})
    asyncio.run(svc.check(openai_body(1, arguments, arguments)))
    engine: Engine = svc.engine_for(svc.policies.get("default"))
    placed: PlacedFindings = engine._placed
    phases = {segment.phase for segment, _ in placed.entries.values()}
    assert phases == {Phase.REQUEST}
    svc.close()


def test_spans_too_big_to_keep_are_kept_alone_until_the_next_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    """A check locates each finding of a call: an oversized call is scanned once per check, not once per finding,
    and no more than the latest such call stays."""
    memo: SizedMemo[str, Any] = SizedMemo(16, 256 * 1024, latest=True)
    monkeypatch.setattr(argspans, "_spans", memo)
    calls = [json.dumps({"commands": [f"rm -rf /srv/{k}/{i}" for i in range(2000)]}) for k in range(2)]
    spans = argspans.argument_spans(calls[0])
    assert spans[("commands", 1999)] == (calls[0].rindex("rm -rf"), len(calls[0]) - 3)
    assert argspans.argument_spans(calls[0]) is spans  # the second finding's lookup: not scanned again
    assert memo.bytes == 0 and memo.latest_bytes > memo.max_bytes // 4  # not kept with the others
    argspans.argument_spans(calls[1])
    assert memo.latest is not None and memo.latest[0] is calls[1]  # the previous one is gone
    small = json.dumps({"path": "/tmp/report.txt"})
    assert argspans.argument_spans(small) == {("path",): (10, 25), (): (0, 27)}
    assert small in memo.entries and memo.bytes > 0
