"""The audit record: what one check leaves behind, built from a `CheckOutcome`.

Message content is not kept by default. `content="redacted"` keeps each segment's text with every
finding span replaced by `[<category>]`; `content="hashed"` keeps a SHA-256 of each segment's text
(enough to prove later that a given message was or was not checked, without storing it).
"""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import guardrails
from guardrails.config import AUDIT_CONTENT_MODES
from guardrails.exchange import Exchange, Segment
from guardrails.findings import Category, Finding

if TYPE_CHECKING:
    from guardrails.service import CheckOutcome

RECORD_VERSION = 1
CONTENT_MODES = AUDIT_CONTENT_MODES
# Per-check signals worth keeping: the logprob confidence summary and the budget state that judged it.
KEPT_SIGNALS = {"low_confidence": "logprobs", "budget": "budget"}
MAX_ERROR_TYPE = 100


def build_record(outcome: CheckOutcome, content: str = "none") -> dict[str, Any]:
    exchange, result = outcome.exchange, outcome.result
    ctx, gen = exchange.context, exchange.generation
    usage = {
        k: v
        for k, v in (
            ("input_tokens", gen.usage.input_tokens),
            ("output_tokens", gen.usage.output_tokens),
            ("reasoning_tokens", gen.usage.reasoning_tokens),
            ("cached_tokens", gen.usage.cached_tokens),
            ("total_tokens", gen.usage.total_tokens),
        )
        if v is not None
    }
    # `ts` (what --since/--until compare) is the shown `time` to the microsecond, not time.time()'s extra
    # digits: otherwise a record's own time, passed back as --since, can miss it (the float rounds up).
    moment = datetime.fromtimestamp(outcome.received_at, UTC)
    record: dict[str, Any] = {
        "v": RECORD_VERSION,
        "check_id": outcome.check_id,
        "time": moment.isoformat(timespec="microseconds"),
        "ts": moment.timestamp(),
        "tenant": ctx.tenant,
        "agent": ctx.agent_id,
        "session": ctx.session_id,
        "user": ctx.user,
        "trace_id": ctx.trace_id,
        "span_id": ctx.span_id,
        "policy": {"id": outcome.policy.id, "version": outcome.policy.version},
        "format": exchange.format,
        "phase": exchange.phase.value,
        "model": gen.model,
        "response_id": gen.response_id,
        "usage": usage,
        "finish_reason": gen.finish_reason,
        "verdict": result.verdict.value,
        "findings": [_finding(f) for f in result.findings],
        "timings_ms": {
            "normalize": outcome.response.get("timings_ms", {}).get("normalize"),
            "detectors": dict(result.timings_ms),
            # From the check's arrival to its record (the OTLP span's end): detectors run concurrently, so their sum
            # is not the check's time. The answer's `timings_ms.total` is taken later and also counts this write.
            "total": max(0.0, round((time.time() - outcome.received_at) * 1000, 3)),
        },
        "service_version": guardrails.__version__,
    }
    if exchange.partial:  # a mid-stream re-check: its verdict is advisory (the key is absent on other checks)
        record["partial"] = True
    for signal, field_name in KEPT_SIGNALS.items():
        if signal in result.signals:
            record[field_name] = result.signals[signal]
    if content != "none":
        record["content"] = {"mode": content, "segments": _content(exchange, result.findings, content)}
    return record


def _finding(f: Finding) -> dict[str, Any]:
    """The finding's compact form; a detector error also says what kind it was (`TimeoutError`, `Overrun`...): the
    exception's class only, never its message, which may quote the checked text."""
    entry = f.to_record()
    if f.category is Category.DETECTOR_ERROR:
        kind = f.evidence.get("error_type") or f.evidence.get("error")
        if isinstance(kind, str) and kind:
            return {**entry, "error": kind[:MAX_ERROR_TYPE]}  # a copy: to_record's dict is shared with later checks
    return entry


def _content(exchange: Exchange, findings: list[Finding], mode: str) -> list[dict[str, Any]]:
    if mode not in CONTENT_MODES:
        raise ValueError(f"audit content mode must be one of {CONTENT_MODES}, got {mode!r}")
    out = []
    for seg in exchange.segments:
        entry: dict[str, Any] = {"pointer": seg.pointer, "kind": seg.kind.value, "role": seg.role}
        if mode == "hashed":
            entry["sha256"] = hashlib.sha256(seg.text.encode()).hexdigest()
        else:
            entry["text"] = redact(seg, findings)
        out.append(entry)
    return out


# Which category names a redacted span that several findings cover: what the hidden text is comes first.
LABEL_RANK = {label: rank for rank, label in enumerate(("secret", "pii", "prompt_injection", "jailbreak", "content"))}


def redact(segment: Segment, findings: list[Finding]) -> str:
    """The segment's text with every finding span that falls in it replaced by `[<category>]`."""
    spans: list[tuple[int, int, str]] = []
    for f in findings:
        if not f.pointer:
            continue  # exchange-wide findings (budget, detector errors) cover no text
        for start, end in _spans_in(segment, f):
            if f.span is not None and f.span[0] == start:  # its location was clipped to one stream chunk
                end = max(end, min(f.span[1], len(segment.text)))
            spans.append((start, end, f.category.value))
    if not spans:
        return segment.text
    # Where spans start together the widest one is cut (it covers the others), labelled by what the data is:
    # a secret or PII span inside a custom flow's whole-answer finding is recorded as [secret], not [custom].
    spans.sort(key=lambda span: (span[0], -span[1], LABEL_RANK.get(span[2], len(LABEL_RANK)), span[2]))
    parts, cursor = [], 0
    for start, end, label in spans:
        if end <= cursor:
            continue
        parts.append(segment.text[cursor : max(start, cursor)])
        parts.append(f"[{label}]")
        cursor = end
    parts.append(segment.text[cursor:])
    return "".join(parts)


def _spans_in(segment: Segment, f: Finding) -> list[tuple[int, int]]:
    """Segment-relative spans a body-located finding covers (a whole-string finding covers it all)."""
    call = segment.tool_call
    if call is not None and call.arguments_is_object and f.span is not None \
            and (f.pointer == segment.pointer or f.pointer.startswith(segment.pointer + "/")):
        # Arguments carried as an object (Anthropic, Gemini): a hit is placed on the string value inside it, or on
        # the object itself when it spans several values; `span` is the hit in this segment's own text, so only
        # that much is redacted.
        return [f.span]
    runs = [(p.offset, p.length, p.pointer, p.start) for p in segment.pieces] or [
        (0, len(segment.text), segment.pointer, segment.start)
    ]
    spans = []
    for offset, length, pointer, start in runs:
        if pointer != f.pointer:
            continue
        lo, hi = (
            (start, start + length)
            if f.start is None
            else (max(f.start, start), min(f.end or f.start, start + length))
        )
        if hi > lo or (f.start is None and length == 0):
            spans.append((offset + lo - start, offset + hi - start))
    return spans
