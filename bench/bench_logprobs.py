"""Benchmark: logprob analysis of a 4,000-token response with 5 alternatives per token.

The response is a vLLM 0.33.0-shaped chat completion (reasoning inline as <think>, content, and a tool call
whose JSON arguments hold 200 values), built from the shapes of the shared fixtures. Timed: reading the
logprobs, aligning them to segments and arguments, and computing every signal (`analyze`), then the whole
`low_confidence` detector scan (with judging and the signals summary), with the model statistics in memory
and in a SQLite state store as `guardrails serve` wires it (one merge per check). Target: median <= 2 ms
for analyze.

The body is parsed from JSON bytes with orjson, as the service parses request bodies (api/body.py): dicts
built by orjson share their key strings and read measurably faster than `json.loads`'s, so timing the
stdlib parser's dicts would overstate what the service pays.

    .venv/bin/python bench/bench_logprobs.py [--tokens 4000] [--repeat 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from detectors.low_confidence import LowConfidenceDetector
from guardrails.adapters import read_exchange
from guardrails.detector import ScanContext, Services
from guardrails.logprobs import align_exchange, analyze
from guardrails.logprobs.jsonspans import leaves
from guardrails.logprobs.tokens import read_chat
from guardrails.model_stats import InMemoryModelStats, ModelStatsStore, SharedModelStats
from guardrails.serve import tune_gc
from guardrails.state import open_state_store

WORDS = [" the", " weather", " in", " Paris", " is", " 18", " degrees", ",", " and", " I", " should", " call",
         " get_weather", " for", " Tokyo", " tomorrow", ".", " Let", " me", " check", " 2024", " results"]


def entry(rng: random.Random, token: str, k: int) -> dict[str, Any]:
    logprob = -rng.expovariate(2.0)
    alts = [{"token": token, "logprob": logprob, "bytes": list(token.encode())}]
    for j in range(k - 1):
        alt = WORDS[(j * 7 + len(token)) % len(WORDS)] + str(j)
        alts.append({"token": alt, "logprob": logprob - rng.uniform(0.1, 6.0), "bytes": list(alt.encode())})
    rng.shuffle(alts)  # vLLM does not sort them
    return {"token": token, "logprob": logprob, "bytes": list(token.encode()), "top_logprobs": alts}


def build(tokens: int, k: int = 5, seed: int = 1) -> dict[str, Any]:
    rng = random.Random(seed)
    n_reason, n_content = tokens // 2, tokens // 4
    n_args = (tokens - n_reason - n_content - 12) // 5  # each argument: ' "', key, '":', ' "', value... 5 tokens
    reasoning = [WORDS[rng.randrange(len(WORDS))] for _ in range(n_reason)]
    content = [WORDS[rng.randrange(len(WORDS))] for _ in range(n_content)]
    args = {f"k{i}": f"v{i}x" for i in range(n_args)}
    call = ["<tool_call>", "\n", '{"', "name", '":', ' "', "get", "_weather", '",', ' "', "arguments", '":', " {"]
    for i, (key, value) in enumerate(args.items()):
        call += [("" if i == 0 else ", ") + '"', key, '": "', value, '"']
    call += ["}}", "\n", "</tool_call>"]
    stream = ["<think>", *reasoning, "</think>", *content, *call]
    message = {"role": "assistant", "content": "<think>" + "".join(reasoning) + "</think>" + "".join(content),
               "tool_calls": [{"id": "chatcmpl-tool-1", "type": "function",
                               "function": {"name": "get_weather", "arguments": json.dumps(args)}}]}
    response = {"id": "chatcmpl-bench", "object": "chat.completion", "created": 1767225600, "model": "bench-model",
                "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls", "stop_reason": None,
                             "logprobs": {"content": [entry(rng, t, k) for t in stream]}}]}
    request = {"model": "bench-model", "messages": [{"role": "user", "content": "Weather?"}],
               "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}],
               "logprobs": True, "top_logprobs": k}
    return {"request": request, "response": response}


def measure(fn: Any, repeat: int) -> list[float]:
    fn()  # warm caches (token weights) as a running service would have them
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=4000)
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    body = orjson.loads(orjson.dumps(build(args.tokens)))  # parsed from JSON bytes as the service does
    ex = read_exchange(body["request"], body["response"])
    n = len(ex.logprobs[0].data)
    segments = [s for s in ex.segments if LowConfidenceDetector.default_scope.matches(s)]
    tune_gc()  # the collector as `guardrails serve` runs it: the analysis runs in that process

    def analysis() -> Any:
        leaves.cache_clear()  # a new response: its argument JSON has not been scanned before
        return analyze(align_exchange(ex), ex.constraints.any, -2.3)

    def reading() -> Any:  # the part of analyze that touches the 4k entries and their 20k alternative dicts
        return read_chat([ex.logprobs[0].data])

    def scan_with(stats: ModelStatsStore) -> Any:
        det = LowConfidenceDetector({}, Services(extra={"model_stats": stats}))
        loop = asyncio.new_event_loop()  # one loop, as in the service (asyncio.run would add ~0.1 ms per call)

        def scan() -> Any:
            leaves.cache_clear()
            return loop.run_until_complete(det.scan(ex, ScanContext(segments=segments, signals={})))

        return scan

    units = len(analysis().reports)
    print(f"{n} tokens x {len(ex.logprobs[0].data[0]['top_logprobs'])} alternatives, {units} units "
          f"(segments, tool name, arguments)")
    with tempfile.TemporaryDirectory() as tmp:
        state = open_state_store(f"sqlite:///{Path(tmp) / 'state.sqlite3'}")
        for name, fn in (("analyze (read + align + signals)", analysis),
                         ("  of which: reading the logprobs", reading),
                         ("low_confidence scan, stats in memory", scan_with(InMemoryModelStats())),
                         ("low_confidence scan, stats in SQLite", scan_with(SharedModelStats(state)))):
            times = measure(fn, args.repeat)
            q = statistics.quantiles(times, n=100)
            print(f"{name:38s} median {statistics.median(times):.3f} ms  min {min(times):.3f} ms  "
                  f"p90 {q[89]:.3f} ms  p99 {q[98]:.3f} ms")
        state.close()


if __name__ == "__main__":
    main()
