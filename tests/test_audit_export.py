"""Export shapes: OTLP/JSON spans with GenAI attributes, CSV columns, and live OTLP/HTTP to a collector."""

from __future__ import annotations

import csv
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, ClassVar

from guardrails.audit.chain import StoredRecord, canonical
from guardrails.audit.export import export_csv, export_jsonl, export_otlp, otlp_span
from guardrails.audit.otlp import OtlpSender, traces_url

RECORD: dict[str, Any] = {
    "v": 1,
    "check_id": "chk_019b6f0a0000aaaaaaaaaaaaaaaaaaaa",
    "ts": 1767225600.25,
    "time": "2026-01-01T00:00:00.25Z",
    "tenant": "acme",
    "agent": "travel-agent",
    "session": "s-1",
    "user": "u-1",
    "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
    "span_id": "00f067aa0ba902b7",
    "policy": {"id": "default", "version": "7de9d0888440"},
    "format": "openai.chat",
    "phase": "response",
    "model": "Qwen/Qwen3-8B",
    "response_id": "chatcmpl-1",
    "usage": {"input_tokens": 120, "output_tokens": 40, "reasoning_tokens": 25},
    "finish_reason": "tool_calls",
    "verdict": "block",
    "timings_ms": {"normalize": 0.2, "detectors": {"tool_undeclared": 0.05}},
    "findings": [
        {
            "category": "tool_undeclared",
            "detector": "tool_undeclared",
            "severity": "high",
            "action": "block",
            "pointer": "/response/choices/0/message/tool_calls/0/function/name",
            "start": 0,
            "end": 9,
            "score": 1.0,
        }
    ],
    "service_version": "0.1.0",
}


def attrs(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {a["key"]: next(iter(a["value"].values())) for a in items}


def row(seq: int = 1, record: dict[str, Any] = RECORD) -> StoredRecord:
    return StoredRecord(seq, "0" * 64, "ab" * 32, canonical(record))


def test_otlp_span_uses_genai_conventions_and_keeps_the_callers_trace() -> None:
    span = otlp_span(RECORD, 7)
    a = attrs(span["attributes"])
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.system"] == "openai" and a["gen_ai.request.model"] == "Qwen/Qwen3-8B"
    assert a["gen_ai.usage.input_tokens"] == "120" and a["gen_ai.usage.output_tokens"] == "40"
    assert a["gen_ai.response.finish_reasons"] == {"values": [{"stringValue": "tool_calls"}]}
    assert a["gen_ai.conversation.id"] == "s-1" and a["gen_ai.agent.id"] == "travel-agent"
    assert a["guardrails.verdict"] == "block" and a["guardrails.audit.seq"] == "7"
    assert a["guardrails.usage.reasoning_tokens"] == "25"
    assert span["traceId"] == RECORD["trace_id"] and span["parentSpanId"] == RECORD["span_id"]
    assert len(span["spanId"]) == 16 and span["startTimeUnixNano"] == "1767225600250000000"
    assert int(span["endTimeUnixNano"]) - int(span["startTimeUnixNano"]) == 250_000
    (event,) = span["events"]
    assert attrs(event["attributes"])["guardrails.finding.category"] == "tool_undeclared"


def test_otlp_span_without_caller_trace_gets_a_stable_one() -> None:
    record = {**RECORD, "trace_id": None, "span_id": None, "usage": {}}
    span = otlp_span(record)
    assert span == otlp_span(record) and len(span["traceId"]) == 32 and "parentSpanId" not in span
    assert "gen_ai.usage.input_tokens" not in attrs(span["attributes"])  # absent, not zero


def test_otlp_export_batches_requests_one_per_line() -> None:
    lines = list(export_otlp([row(i) for i in range(1, 6)], batch=2))
    requests = [json.loads(line) for line in lines]
    assert [len(r["resourceSpans"][0]["scopeSpans"][0]["spans"]) for r in requests] == [2, 2, 1]
    resource = attrs(requests[0]["resourceSpans"][0]["resource"]["attributes"])
    assert resource["service.name"] == "guardrails"


def test_csv_and_jsonl_carry_the_chain_position() -> None:
    table = list(csv.DictReader(io.StringIO("".join(export_csv([row(3)])))))
    assert table[0]["seq"] == "3" and table[0]["categories"] == "tool_undeclared"
    assert table[0]["reasoning_tokens"] == "25" and table[0]["hash"] == "ab" * 32
    (line,) = export_jsonl([row(3)])
    assert json.loads(line)["audit"] == {"seq": 3, "prev_hash": "0" * 64, "hash": "ab" * 32}


class _Collector(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, dict[str, Any]]]] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        _Collector.received.append((self.path, json.loads(self.rfile.read(length))))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        pass


def test_live_sender_posts_otlp_json_to_the_collector() -> None:
    server = HTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        sender = OtlpSender(f"http://127.0.0.1:{server.server_port}", batch=10, linger_s=0.05)
        for seq in range(3):
            sender.submit({**RECORD, "check_id": f"chk_{seq}"}, seq)
        sender.close()
    finally:
        server.shutdown()
    assert sender.sent == 3 and sender.dropped == 0
    paths = {path for path, _ in _Collector.received}
    assert paths == {"/v1/traces"}
    spans = [s for _, req in _Collector.received for s in req["resourceSpans"][0]["scopeSpans"][0]["spans"]]
    assert [attrs(s["attributes"])["guardrails.check_id"] for s in spans] == ["chk_0", "chk_1", "chk_2"]


def test_live_sender_drops_and_counts_when_the_collector_is_down() -> None:
    sender = OtlpSender("http://127.0.0.1:9", linger_s=0.01, timeout_s=0.5)
    sender.submit(RECORD, 1)
    sender.close()
    assert (sender.sent, sender.dropped) == (0, 1)
    assert traces_url("http://c:4318/") == "http://c:4318/v1/traces"
    assert traces_url("http://c:4318/v1/traces") == "http://c:4318/v1/traces"
