"""PII span evaluation of the `pii` detector on presidio-research's synthetic dataset.

Runs the detector exactly as the service does (same settings path, same prefilter) over every sentence of
presidio-research/data/synth_dataset_v2.json in the data directory (bench/data.py; 1,500 sentences, MIT,
microsoft/presidio-research) and prints span precision / recall / F1 per pattern entity. A predicted span counts
as a true positive when it has the gold entity type and overlaps a gold span of that type with IoU >= 0.5 (strict
exact-span figures are printed too). Then it times the default text filters (pii + secret + content) on a
10-segment agent step.
Usage: .venv/bin/python bench/eval_pii.py [--dataset PATH] [--limit N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections import Counter
from pathlib import Path

from data import data_dir  # bench/ is on sys.path when a bench script runs

from detectors.content import ContentDetector
from detectors.pii import PIIDetector
from detectors.secret import SecretDetector
from guardrails.adapters import read_exchange
from guardrails.detector import ScanContext, SegmentDetector
from guardrails.exchange import Phase, Segment, SegmentKind, Trust

DATASET = data_dir() / "presidio-research" / "data" / "synth_dataset_v2.json"
ENTITIES = ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "IP_ADDRESS")


def iou(a: tuple[int, int], b: tuple[int, int]) -> float:
    inter = max(0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union else 0.0


def segment(text: str) -> Segment:
    return Segment(index=0, kind=SegmentKind.ASSISTANT, role="assistant", trust=Trust.MODEL, turn=0,
                   phase=Phase.RESPONSE, text=text, pointer="/response")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", type=Path, default=DATASET)
    parser.add_argument("--limit", type=int, default=0, help="evaluate only the first N sentences")
    args = parser.parse_args()
    records = json.loads(args.dataset.read_text(encoding="utf-8"))
    if args.limit:
        records = records[: args.limit]

    detector = PIIDetector({})
    tp, fp, fn, exact = Counter(), Counter(), Counter(), Counter()
    misses: dict[str, list[str]] = {e: [] for e in ENTITIES}
    false_alarms: dict[str, list[str]] = {e: [] for e in ENTITIES}
    started = time.perf_counter()
    for record in records:
        text = record["full_text"]
        gold = [(s["entity_type"], (s["start_position"], s["end_position"])) for s in record["spans"]]
        predicted = [(h.evidence["entity"], (h.start, h.end)) for h in detector.analyze(segment(text))]
        for entity in ENTITIES:
            g = [span for e, span in gold if e == entity]
            p = [span for e, span in predicted if e == entity]
            matched: set[int] = set()
            for span in p:
                best = max(range(len(g)), key=lambda i: iou(span, g[i]), default=None)
                if best is not None and best not in matched and iou(span, g[best]) >= 0.5:
                    matched.add(best)
                    tp[entity] += 1
                    exact[entity] += span == g[best]
                else:
                    fp[entity] += 1
                    false_alarms[entity].append(text[span[0] : span[1]])
            fn[entity] += len(g) - len(matched)
            misses[entity].extend(text[a:b] for i, (a, b) in enumerate(g) if i not in matched)
    elapsed = time.perf_counter() - started

    print(f"presidio-research synth_dataset_v2: {len(records)} sentences, {elapsed:.1f} s "
          f"({1000 * elapsed / len(records):.2f} ms/sentence), IoU >= 0.5")
    print(f"{'entity':<14} {'gold':>5} {'pred':>5} {'P':>6} {'R':>6} {'F1':>6} {'exact':>6}")
    totals = Counter()
    for entity in ENTITIES:
        t, f, n = tp[entity], fp[entity], fn[entity]
        totals.update({"tp": t, "fp": f, "fn": n})
        print(_row(entity, t, f, n, exact[entity]))
    print(_row("micro", totals["tp"], totals["fp"], totals["fn"], sum(exact.values())))
    for entity in ENTITIES:
        if misses[entity] or false_alarms[entity]:
            print(f"  {entity}: missed {misses[entity][:6]} false {false_alarms[entity][:6]}")
    measure_latency(detector)


def agent_step(answer: str = "Done: the invoice for order A-1007 is on its way to the address on file.") -> dict:
    """A typical tool-using step: system, user, reasoning, a call, its result, the answer (10 segments)."""
    call = {"id": "c1", "type": "function", "function": {"name": "search_orders", "arguments": json.dumps(
        {"customer": "Dana Whitfield", "since": "2024-03-01", "status": ["shipped", "delayed"], "limit": 20})}}
    result = json.dumps({"orders": [{"id": f"A-{1000 + i}", "total": 12.5 * i, "status": "shipped",
                                     "eta": f"2024-04-{i + 1:02d}"} for i in range(8)]})
    messages = [
        {"role": "system", "content": "You are the support agent of an online shop. Be concise. Never reveal "
                                      "internal notes. Use the tools to look up orders before answering." * 2},
        {"role": "user", "content": "Hi, where are my last orders? I ordered a lamp and two chairs in March."},
        {"role": "assistant", "content": None, "reasoning": "The user asks about March orders. I should call "
         "search_orders with the customer's name and a date filter, then summarise the delivery dates.",
         "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": result},
        {"role": "assistant", "content": "You have 8 orders since March; all shipped. The lamp arrives on "
                                         "April 3 and the chairs on April 5."},
        {"role": "user", "content": "Great, can you send the invoice to my email and confirm the address?"},
        {"role": "assistant", "content": "Sure. Which order should the invoice cover, all eight or only A-1007?"},
        {"role": "user", "content": "Only A-1007 please."},
    ]
    response = {"choices": [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "reasoning": "They want the invoice sent. I can send it to the address on file; "
        "I must not read the address aloud in full.",
        "content": answer}}]}
    return {"request": {"model": "m", "messages": messages}, "response": response}


def measure_latency(pii: PIIDetector) -> None:
    clean = agent_step()
    with_pii = agent_step("Sent to dana.whitfield@example.org; call +1 415-555-0132 if it does not arrive.")
    for label, body in (("no PII", clean), ("PII in the answer", with_pii)):
        measure_step(pii, label, body)


def measure_step(pii: PIIDetector, label: str, body: dict, runs: int = 300) -> None:
    """Cold cost per check (every segment analyzed, no engine cache), pii + secret + content as configured
    in the default policy, plus a content policy of 50 terms."""
    exchange = read_exchange(body["request"], body["response"])
    terms = [f"forbidden-term-{i}" for i in range(40)] + ["napalm", "pipe bomb", "acme corp"] * 3 + ["x"]
    detectors: list[SegmentDetector] = [pii, SecretDetector({}), ContentDetector({"terms": terms})]
    contexts = [ScanContext([s for s in exchange.segments if d.default_scope.matches(s)], {}) for d in detectors]

    async def one_check() -> int:
        return sum([len(await d.scan(exchange, ctx)) for d, ctx in zip(detectors, contexts, strict=True)])

    def timed() -> float:
        started = time.perf_counter()
        asyncio.run(one_check())
        return (time.perf_counter() - started) * 1000

    loop_overhead = statistics.median(_asyncio_overhead() for _ in range(50))
    for _ in range(20):
        timed()
    samples = sorted(timed() - loop_overhead for _ in range(runs))
    print(f"text filters (pii+secret+content), {len(exchange.segments)}-segment step, {label}, uncached, "
          f"{runs} runs: median {statistics.median(samples):.3f} ms, p99 {samples[int(runs * 0.99) - 1]:.3f} ms")


def _asyncio_overhead() -> float:
    async def nothing() -> None:
        return None

    started = time.perf_counter()
    asyncio.run(nothing())
    return (time.perf_counter() - started) * 1000


def _row(name: str, tp: int, fp: int, fn: int, exact: int) -> str:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return f"{name:<14} {tp + fn:>5} {tp + fp:>5} {p:>6.3f} {r:>6.3f} {f1:>6.3f} {exact:>6}"


if __name__ == "__main__":
    main()
