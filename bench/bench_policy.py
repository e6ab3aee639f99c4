"""Policy overhead: built-in rails vs the same detectors without rails, and custom Colang flows vs NeMo.

    .venv/bin/python bench/bench_policy.py [--checks 300]

1. Built-in rails: the same detectors configured under `detectors:` only, and listed as built-in flows in
   `rails.*.flows`. Built-in flows are resolved at policy load (no Colang runtime), so the difference per
   check should be noise (target: at most 0.1 ms).
2. Custom flows: `policies/example-colang1` (Colang 1.0) and `policies/example-colang2` (2.x) through our
   engine (detectors + flows, all bookkeeping), beside nemoguardrails' own runtime called directly on the
   same staged policy and flows (`generate_async`, the way NeMo's server does), in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from guardrails.adapters import read_exchange  # noqa: E402
from guardrails.colang.variables import RailSegments, flow_variables  # noqa: E402
from guardrails.detector import DetectorRegistry  # noqa: E402
from guardrails.engine import Engine  # noqa: E402
from guardrails.policy import load_policy  # noqa: E402

DETECTORS = """detectors:
  secret: {}
  content: {terms: [forbidden]}
  tool_undeclared: {}
  tool_schema: {}
  tool_policy: {builtin_rules: true}
"""
RAILS = """rails:
  input: {flows: [check secrets, check content]}
  output: {flows: [check secrets, check content]}
  tool_input: {flows: [check secrets, check content]}
  tool_output:
    flows: [check secrets, check content, check tool undeclared, check tool schema, check tool policy]
"""
TOOLS = [{"type": "function", "function": {"name": "run_shell", "parameters": {
    "type": "object", "properties": {"command": {"type": "string"}}}}}]
REQUEST = {"model": "m", "tools": TOOLS, "messages": [
    {"role": "system", "content": "You are a coding agent."},
    {"role": "user", "content": "The build fails, please fix it."},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c0", "type": "function",
         "function": {"name": "run_shell", "arguments": "{\"command\": \"make\"}"}}]},
    {"role": "tool", "tool_call_id": "c0", "content": "error: missing import in build.py line 3"}]}
RESPONSE = {"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
    "role": "assistant", "content": "I will fix the import.",
    "reasoning_content": "The import path is wrong.",
    "tool_calls": [{"id": "c1", "type": "function",
                    "function": {"name": "run_shell",
                                 "arguments": "{\"command\": \"sed -i s/a/b/ build.py\"}"}}]}}]}


def measure(run: Callable[[], Awaitable[Any]], checks: int) -> list[float]:
    async def loop() -> list[float]:
        for _ in range(min(20, checks)):
            await run()
        times = []
        for _ in range(checks):
            started = time.perf_counter()
            await run()
            times.append((time.perf_counter() - started) * 1000)
        return times

    return asyncio.run(loop())


def summary(times: list[float]) -> str:
    ordered = sorted(times)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"median {statistics.median(times):8.3f} ms   p99 {p99:8.3f} ms"


def builtin_rails(checks: int, registry: DetectorRegistry) -> None:
    with tempfile.TemporaryDirectory() as root:
        engines = {}
        for name, text in (("detectors only", DETECTORS), ("built-in rails", DETECTORS + RAILS)):
            directory = Path(root) / name.replace(" ", "-")
            directory.mkdir()
            (directory / "config.yml").write_text(text)
            engines[name] = Engine(load_policy(directory), registry)
        assert all(e.colang is None for e in engines.values())
        results: dict[str, list[float]] = {name: [] for name in engines}
        for _ in range(5):  # interleave rounds so drift on a shared machine hits both alike
            for name, engine in engines.items():
                results[name] += measure(partial(_check, engine), checks // 5)
        print("1. built-in rails (same detectors, one exchange: history + reasoning + tool call)")
        for name, times in results.items():
            print(f"   {name:<16} {summary(times)}")
        delta = statistics.median(results["built-in rails"]) - statistics.median(results["detectors only"])
        print(f"   built-in rails add {delta:+.3f} ms per check (median)")


def _check(engine: Engine) -> Awaitable[Any]:
    return engine.run(read_exchange(REQUEST, RESPONSE))


def custom_flows(checks: int, registry: DetectorRegistry) -> None:
    print("2. custom Colang flows: our engine (detectors + flows) beside NeMo's runtime on the same policy")
    for name in ("example-colang1", "example-colang2"):
        engine = Engine(load_policy(REPO / "policies" / name), registry)
        bridge = engine.colang
        exchange = read_exchange(REQUEST, RESPONSE)
        ours = measure(lambda e=engine: e.run(read_exchange(REQUEST, RESPONSE)), checks)
        variables = flow_variables(exchange, RailSegments.of(exchange), [], {})
        nemo = measure(lambda b=bridge, v=variables: _nemo_direct(b, v), checks)
        print(f"   {name} (Colang {bridge.version})")
        print(f"     guardrails engine   {summary(ours)}")
        print(f"     NeMo runtime alone  {summary(nemo)}")


async def _nemo_direct(bridge: Any, variables: dict[str, Any]) -> Any:
    """What NeMo itself does for the same flows: one generate_async per rail type (1.0) or one event (2.x)."""
    from guardrails.colang.bridge import _v1_messages

    rails = bridge.rails
    if bridge.version == "1.0":
        return await asyncio.gather(*(
            rails.generate_async(messages=_v1_messages(t, variables),
                                 options={"rails": [t], "log": {"activated_rails": True}})
            for t in ("output", "tool_output") if bridge.custom.get(t)))
    flows = [f for flows in bridge.custom.values() for f in flows]
    return await rails.generate_async(messages=[{"role": "event", "event": {
        "type": "GuardrailsCheck", "rails": flows, **variables}}])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=300)
    args = parser.parse_args()
    registry = DetectorRegistry.from_entry_points()
    builtin_rails(args.checks * 5, registry)
    custom_flows(args.checks, registry)


if __name__ == "__main__":
    main()
