"""Audit exports: JSON lines, CSV, and OTLP/JSON traces with OpenTelemetry GenAI attributes.

The OTLP form is an `ExportTraceServiceRequest` (`{"resourceSpans": [...]}`): one span per check, named
`guardrails.check <model>`, with the `gen_ai.*` attributes of the call that was checked, our verdict and
policy under `guardrails.*`, and one `guardrails.finding` event per finding. A file of such requests, one
per line, loads into an OpenTelemetry Collector (otlpjsonfile receiver) or can be POSTed to /v1/traces.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import re
from collections.abc import Iterable, Iterator
from typing import Any

import orjson

import guardrails
from guardrails.audit.chain import StoredRecord

FORMATS = ("jsonl", "csv", "otlp")
CSV_COLUMNS = (
    "seq",
    "check_id",
    "time",
    "tenant",
    "agent",
    "session",
    "user",
    "policy_id",
    "policy_version",
    "format",
    "phase",
    "model",
    "finish_reason",
    "input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "total_tokens",
    "verdict",
    "partial",
    "findings",
    "categories",
    "detectors",
    "service_version",
    "hash",
    # Appended (consumers read the columns above by position): what an incident reviewer looks up next.
    "response_id",
    "trace_id",
    "span_id",
    "finding_locations",
)
# Excel shows at most 32,767 characters in a cell: a longer findings list is cut, saying how many were left out.
MAX_CELL = 32_000
# The API format tells which provider's wire protocol the call used (gen_ai.provider.name values).
PROVIDERS = {"openai": "openai", "anthropic": "anthropic", "gemini": "gcp.gemini"}
OPERATIONS = {"openai.chat": "chat", "openai.responses": "chat", "anthropic.messages": "chat"}
# What makes a spreadsheet read a cell as a formula (or, for tab and CR, start one in the next cell).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")
HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX16 = re.compile(r"^[0-9a-f]{16}$")
SPAN_KIND_INTERNAL = 1
OTLP_BATCH = 200


def export_jsonl(rows: Iterable[StoredRecord]) -> Iterator[str]:
    for row in rows:
        yield orjson.dumps(row.exported()).decode() + "\n"


def export_csv(rows: Iterable[StoredRecord]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    yield _drain(buffer)
    for row in rows:
        r = row.record()
        usage, findings = r.get("usage") or {}, r.get("findings") or []
        writer.writerow(
            _cell(value)
            for value in (
                row.seq,
                r.get("check_id"),
                r.get("time"),
                r.get("tenant"),
                r.get("agent"),
                r.get("session"),
                r.get("user"),
                (r.get("policy") or {}).get("id"),
                (r.get("policy") or {}).get("version"),
                r.get("format"),
                r.get("phase"),
                r.get("model"),
                r.get("finish_reason"),
                usage.get("input_tokens"),
                usage.get("output_tokens"),
                usage.get("reasoning_tokens"),
                usage.get("total_tokens"),
                r.get("verdict"),
                "true" if r.get("partial") else "false",
                len(findings),
                ";".join(sorted({f["category"] for f in findings})),
                ";".join(sorted({f["detector"] for f in findings})),
                r.get("service_version"),
                row.hash,
                r.get("response_id"),
                r.get("trace_id"),
                r.get("span_id"),
                finding_locations(findings),
            )
        )
        yield _drain(buffer)


def finding_locations(findings: list[dict[str, Any]]) -> str:
    """`category:detector@pointer` per finding, in the record's order, joined by `; ` (an exchange-wide finding, such
    as a budget, has no `@pointer`); repeats are counted (`pii:pii@/request/messages/0/content x3`)."""
    counts: dict[str, int] = {}
    for f in findings:
        if not isinstance(f, dict):
            continue
        pointer = f.get("pointer")
        where = f"{f.get('category')}:{f.get('detector')}" + (f"@{pointer}" if pointer else "")
        counts[where] = counts.get(where, 0) + 1
    parts = [where if n == 1 else f"{where} x{n}" for where, n in counts.items()]
    text = "; ".join(parts)
    if len(text) <= MAX_CELL:
        return text
    kept, size = 0, 0
    for part in parts:
        if size + len(part) + 2 > MAX_CELL - 40:  # room for the note
            break
        kept, size = kept + 1, size + len(part) + 2
    return "; ".join(parts[:kept]) + f"; ... {len(parts) - kept} more (the JSONL export has them all)"


def _cell(value: Any) -> Any:
    """A text cell a spreadsheet would run as a formula (`=HYPERLINK(...)` as a tenant or user name: callers choose
    those) gets a leading `'`, which Excel and LibreOffice show as text (OWASP's CSV injection advice)."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def export_otlp(rows: Iterable[StoredRecord], batch: int = OTLP_BATCH) -> Iterator[str]:
    """One ExportTraceServiceRequest per line, `batch` spans each."""
    spans: list[dict[str, Any]] = []
    for row in rows:
        spans.append(otlp_span(row.record(), row.seq))
        if len(spans) >= batch:
            yield orjson.dumps(otlp_request(spans)).decode() + "\n"
            spans = []
    if spans:
        yield orjson.dumps(otlp_request(spans)).decode() + "\n"


EXPORTERS = {"jsonl": export_jsonl, "csv": export_csv, "otlp": export_otlp}


def otlp_request(spans: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": _attributes(
                        {"service.name": "guardrails", "service.version": guardrails.__version__}
                    )
                },
                "scopeSpans": [
                    {"scope": {"name": "guardrails.audit", "version": guardrails.__version__}, "spans": spans}
                ],
            }
        ]
    }


def otlp_span(record: dict[str, Any], seq: int | None = None) -> dict[str, Any]:
    usage = record.get("usage") or {}
    fmt = record.get("format") or ""
    provider = PROVIDERS.get(fmt.split(".")[0], fmt.split(".")[0] or "unknown")
    model = record.get("model")
    check_id = record["check_id"]
    digest = hashlib.sha256(check_id.encode()).hexdigest()
    trace_id = (record.get("trace_id") or "").lower()
    parent = (record.get("span_id") or "").lower()
    start_ns = round(record["ts"] * 1e6) * 1000  # the record keeps microseconds; floats blur nanoseconds
    elapsed_ms = _elapsed_ms(record.get("timings_ms") or {})
    attributes = {
        "gen_ai.operation.name": OPERATIONS.get(fmt, "generate_content"),
        "gen_ai.provider.name": provider,
        "gen_ai.system": provider,
        "gen_ai.request.model": model,
        "gen_ai.response.model": model,
        "gen_ai.response.id": record.get("response_id"),
        "gen_ai.response.finish_reasons": [record["finish_reason"]] if record.get("finish_reason") else None,
        "gen_ai.usage.input_tokens": usage.get("input_tokens"),
        "gen_ai.usage.output_tokens": usage.get("output_tokens"),
        "gen_ai.conversation.id": record.get("session"),
        "gen_ai.agent.id": record.get("agent"),
        "guardrails.check_id": check_id,
        "guardrails.verdict": record.get("verdict"),
        "guardrails.partial": True if record.get("partial") else None,  # only on mid-stream re-checks
        "guardrails.phase": record.get("phase"),
        "guardrails.format": fmt,
        "guardrails.policy.id": (record.get("policy") or {}).get("id"),
        "guardrails.policy.version": (record.get("policy") or {}).get("version"),
        "guardrails.tenant": record.get("tenant"),
        "guardrails.user": record.get("user"),
        "guardrails.usage.reasoning_tokens": usage.get("reasoning_tokens"),
        "guardrails.findings": len(record.get("findings") or []),
        "guardrails.audit.seq": seq,
    }
    span: dict[str, Any] = {
        "traceId": trace_id if HEX32.match(trace_id) else digest[:32],
        "spanId": digest[32:48],
        "name": f"guardrails.check {model}" if model else "guardrails.check",
        "kind": SPAN_KIND_INTERNAL,
        "startTimeUnixNano": str(start_ns),
        "endTimeUnixNano": str(start_ns + int(elapsed_ms * 1e6)),
        "attributes": _attributes(attributes),
        "events": [
            {
                "timeUnixNano": str(start_ns),
                "name": "guardrails.finding",
                "attributes": _attributes(
                    {
                        "guardrails.finding.category": f.get("category"),
                        "guardrails.finding.detector": f.get("detector"),
                        "guardrails.finding.action": f.get("action"),
                        "guardrails.finding.severity": f.get("severity"),
                        "guardrails.finding.pointer": f.get("pointer"),
                        "guardrails.finding.score": _score(f.get("score")),
                        "guardrails.finding.error": f.get("error"),  # a detector_error's kind
                    }
                ),
            }
            for f in record.get("findings") or []
        ],
        "status": {"code": 0},
    }
    if HEX32.match(trace_id) and HEX16.match(parent):
        span["parentSpanId"] = parent
    return span


def _elapsed_ms(timings: dict[str, Any]) -> float:
    """The check's duration: its recorded `total`; a record written before it had one gets the sum of its reading
    and detector times (an approximation: detectors that ran concurrently are counted one after another)."""
    total = timings.get("total")
    if _number(total):
        return max(0.0, float(total))
    detectors = timings.get("detectors") or {}
    parts = [*detectors.values(), timings.get("normalize")] if isinstance(detectors, dict) else []
    return sum(float(v) for v in parts if _number(v))


def _score(value: Any) -> Any:
    """A score as a double, as the live spans send it: records store a whole-number score as an integer (`1`)."""
    return float(value) if _number(value) else value


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _attributes(values: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": k, "value": _any_value(v)} for k, v in values.items() if v is not None]


def _any_value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}  # OTLP/JSON carries 64-bit integers as strings
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, (list, tuple)):
        return {"arrayValue": {"values": [_any_value(v) for v in value]}}
    return {"stringValue": str(value)}


def _drain(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text
