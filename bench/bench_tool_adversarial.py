"""Cost of the tool checks on adversarial arguments: inputs whose cost grew faster than their size.

    .venv/bin/python bench/bench_tool_adversarial.py [--limit SECONDS]

Each line times one rule (or detector) on one input, best of three runs, and stops a run at `--limit` seconds
(printed as `>limit`). The inputs are the ones a review found superlinear: nested `$(...)` and `bash -c` scripts,
statements of repeated verbs that a look-ahead pattern re-read, unclosed brace lists, huge SQL, JSON Schema
`pattern`s and `patternProperties` keys that backtrack exponentially (each search stops at 50 ms, a check's at
about 250 ms: detectors/_schema_guard.py), a pattern `regex` would unroll into gigabytes. Run it against another tree
with `PYTHONPATH=<tree>` to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detectors.tool_policy.classify import classify
from detectors.tool_policy.shell import ShellRule
from detectors.tool_policy.sql import SqlRule
from detectors.tool_schema import ToolSchemaDetector
from guardrails.adapters import read_exchange
from guardrails.detector import ScanContext

KB = 1024
MB = KB * KB


class Overrun(BaseException):  # (not an Exception: the rules catch those)
    pass


def _overrun(*_: Any) -> None:
    raise Overrun


def shell(text: str) -> Callable[[], Any]:
    return lambda: ShellRule().check(text)


def sql(text: str) -> Callable[[], Any]:
    return lambda: SqlRule().check(text)


def schema_check(arguments: dict[str, Any], schema: dict[str, Any]) -> Callable[[], Any]:
    request = {"model": "m", "messages": [{"role": "user", "content": "hi"}],
               "tools": [{"type": "function", "function": {"name": "t", "parameters": schema}}]}
    response = {"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "t", "arguments": json.dumps(arguments)}}]}}]}

    def run() -> Any:
        exchange = read_exchange(request, response, format="openai.chat")
        detector = ToolSchemaDetector()
        ctx = ScanContext(segments=[s for s in exchange.segments if detector.default_scope.matches(s)], signals={})
        return asyncio.run(detector.scan(exchange, ctx))
    return run


def pattern_check(pattern: str, value: str) -> Callable[[], Any]:
    return schema_check({"v": value}, {"type": "object", "properties": {"v": {"type": "string", "pattern": pattern}}})


def nested_bash(depth: int) -> str:
    return "bash -c " + "$(bash -c " * depth + "ls" + ")" * depth


CASES: list[tuple[str, Callable[[], Any]]] = [
    ("shell: bash -c $(bash -c ...) x25, 283 B", shell(nested_bash(25))),
    ("shell: bash -c $(bash -c ...) x100, 1.1 KB", shell(nested_bash(100))),
    ("shell: $( nested x100, 308 B", shell("$(" * 100 + "rm -rf /" + ")" * 100)),
    ("shell: <( nested x100, 805 B", shell("bash " + "<(bash " * 100 + ")" * 100)),
    ("shell: `rd ` x6666 (20 KB)", shell("rd " * 6666)),
    ("shell: `iex pwsh pwsh ...` (20 KB)", shell("iex " + "pwsh " * 4000)),
    ("shell: python -c 'socket socket ...' (20 KB)", shell('python -c "' + "socket " * 2850 + '"')),
    ("shell: unclosed {a,a,a,... (20 KB)", shell(" {" + "a," * 10000)),
    ("shell: 20 KB of `rm -r a a a ...`", shell("rm -r " + "a " * 10000)),
    ("shell: 4 MB of `rm -rf build; ...`", shell("rm -rf build; " * (4 * MB // 14))),
    ("sql: 4 MB `a = 1 AND ...`", sql("SELECT a FROM b WHERE " + "a = 1 AND " * (4 * MB // 10) + "1")),
    ("sql: 1 MB of `SELECT 1;`", sql("SELECT 1; " * (MB // 10))),
    ("sql: 5000 CTEs", sql("WITH " + ", ".join(f"c{i} AS (SELECT {i})" for i in range(5000)) + " SELECT 1")),
    ("sql: 200 KB of `copy ` words", sql("copy " * (200 * KB // 5))),
    ("classify: `grant a` + 200 KB of spaces", lambda: classify("t", "text", "grant a" + " " * 200 * KB, None)),
    ("schema: pattern ^(a+)+$ on 40 chars", pattern_check("^(a+)+$", "a" * 40 + "!")),
    ("schema: pattern ^(a|aa)+$ on 40 chars", pattern_check("^(a|aa)+$", "a" * 40 + "!")),
    ("schema: pattern ^(\\w|\\d)+$ on 40 digits", pattern_check("^(\\w|\\d)+$", "1" * 40 + "!")),
    ("schema: pattern ^(a+)+$ on 5000 chars", pattern_check("^(a+)+$", "a" * 5000 + "!")),
    ("schema: patternProperties ^(a|aa)+$, 40-char key", schema_check({"a" * 40 + "!": 1}, {
        "type": "object", "patternProperties": {"^(a|aa)+$": {"type": "integer"}}, "additionalProperties": False})),
    ("schema: 20 values x pattern ^(a|aa)+$", schema_check({f"v{i}": "a" * (40 + i) + "!" for i in range(20)}, {
        "type": "object", "properties": {f"v{i}": {"type": "string", "pattern": "^(a|aa)+$"} for i in range(20)}})),
    ("schema: pattern ((a{1000}){1000}){1000}", pattern_check("((a{1000}){1000}){1000}", "a")),
]


def best_of(run: Callable[[], Any], repeats: int, limit: float) -> float | None:
    best: float | None = None
    for _ in range(repeats):
        signal.setitimer(signal.ITIMER_REAL, limit)
        start = time.perf_counter()
        try:
            run()
        except Overrun:
            return None
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        elapsed = time.perf_counter() - start
        best = elapsed if best is None else min(best, elapsed)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=float, default=10.0, help="seconds before a run is stopped")
    args = parser.parse_args()
    signal.signal(signal.SIGALRM, _overrun)
    for name, run in CASES:
        seconds = best_of(run, 3, args.limit)
        shown = f">{args.limit:g} s" if seconds is None else f"{seconds * 1000:9.1f} ms"
        print(f"{name:<48} {shown:>12}", flush=True)


if __name__ == "__main__":
    main()
