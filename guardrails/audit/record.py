"""The audit record: what one check leaves behind, built from a `CheckOutcome`.

Message content is not kept by default. `content="redacted"` keeps each segment's text with every
finding span replaced by `[<category>]`, and every span a `Redactor` finds (the PII and secret recognizers, wired
by `guardrails/serve.py` whatever the policy enables); `content="hashed"` keeps a SHA-256 of each segment's text
(enough to prove later that a given message was or was not checked, without storing it).

Names the model wrote are text too: the keys of tool arguments carried as an object (Anthropic `input`, Gemini
`args`), which a JSON pointer below that object spells out, and the name of a tool no request declared. The record
keeps them as the content mode keeps text (`ModelNames`): with `none` and `hashed`, each key in a pointer becomes
`~h:<8 hex>` (the first 8 hex digits of its SHA-256: `~h` is no RFC 6901 escape, so it reads as no real key), and with
`redacted` it is redacted as segment text is. The check's own answer keeps the real pointers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import guardrails
from guardrails.config import AUDIT_CONTENT_MODES
from guardrails.exchange import Exchange, Segment
from guardrails.findings import Category, Finding, Hit
from guardrails.pointer import escape, split

if TYPE_CHECKING:
    from guardrails.service import CheckOutcome

RECORD_VERSION = 1
CONTENT_MODES = AUDIT_CONTENT_MODES
# Per-check signals worth keeping: the logprob confidence summary and the budget state that judged it.
KEPT_SIGNALS = {"low_confidence": "logprobs", "budget": "budget"}
MAX_ERROR_TYPE = 100
# A redacted segment's whole text when its redactor failed: what it holds is unknown, so none of it is kept.
UNREDACTED = "[unredacted]"
# A model-written name (an argument key in a pointer, an undeclared tool's name) with content `none` or `hashed`.
HASHED_NAME = "~h:"
HASHED_NAME_HEX = 8
# Usage counts past a signed 64-bit integer (a library caller's 10**30) are written as strings: orjson refuses them
# (the record, and so the check, would fail) and OTLP and the stores' readers take 64-bit integers. The number is kept
# exactly, where clamping would record a count nobody sent.
INT64_MIN, INT64_END = -(2**63), 2**63

Span = tuple[int, int, str]  # start, end in a segment's text, and the label that replaces it
# Spans to mask in a segment whatever the findings say (`redacted` content only).
Redactor = Callable[[Segment], Iterable[Span]]
# Told of each segment whose redactor raised (that segment's text is stored as UNREDACTED).
RedactorErrorHandler = Callable[[Segment, Exception], None]


def build_record(outcome: CheckOutcome, content: str = "none", redactor: Redactor | None = None,
                 on_redactor_error: RedactorErrorHandler | None = None) -> dict[str, Any]:
    exchange, result = outcome.exchange, outcome.result
    ctx, gen = exchange.context, exchange.generation
    usage = {
        k: v if INT64_MIN <= v < INT64_END else str(v)
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
    names = ModelNames(exchange, content, redactor)
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
        "findings": [_finding(f, names) for f in result.findings],
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
    if isinstance(record.get("logprobs"), dict):
        record["logprobs"] = names.logprobs(record["logprobs"])
    if content != "none":
        record["content"] = {"mode": content,
                             "segments": _content(exchange, result.findings, content, redactor, on_redactor_error)}
    return record


def _finding(f: Finding, names: ModelNames) -> dict[str, Any]:
    """The finding's compact form; a detector error also says what kind it was (`TimeoutError`, `Overrun`...): the
    exception's class only, never its message, which may quote the checked text."""
    entry = f.to_record()
    pointer = names.pointer(f.pointer)
    if pointer != f.pointer:
        entry = {**entry, "pointer": pointer}  # a copy: to_record's dict is shared with later checks
    if f.category is Category.DETECTOR_ERROR:
        kind = f.evidence.get("error_type") or f.evidence.get("error")
        if isinstance(kind, str) and kind:
            return {**entry, "error": kind[:MAX_ERROR_TYPE]}  # a copy: to_record's dict is shared with later checks
    return entry


def _content(exchange: Exchange, findings: list[Finding], mode: str, redactor: Redactor | None = None,
             on_redactor_error: RedactorErrorHandler | None = None) -> list[dict[str, Any]]:
    if mode not in CONTENT_MODES:
        raise ValueError(f"audit content mode must be one of {CONTENT_MODES}, got {mode!r}")
    out = []
    for seg in exchange.segments:
        entry: dict[str, Any] = {"pointer": seg.pointer, "kind": seg.kind.value, "role": seg.role}
        if mode == "hashed":
            entry["sha256"] = hashlib.sha256(utf8(seg.text)).hexdigest()
        elif redactor is None:
            entry["text"] = redact(seg, findings)
        else:
            try:
                entry["text"] = redact(seg, findings, redactor(seg))
            except Exception as exc:  # the record is still written, without this segment's text
                entry["text"] = UNREDACTED
                if on_redactor_error is not None:
                    on_redactor_error(seg, exc)
        out.append(entry)
    return out


def utf8(text: str) -> bytes:
    """`text` as UTF-8. A lone surrogate (a library caller's string: JSON from the HTTP edge is repaired before) is
    written as Python's `surrogatepass` writes it (3 bytes, as WTF-8 does), after surrogate pairs are joined: distinct
    texts keep distinct hashes, where `replace` would give every lone surrogate the same `?`."""
    try:
        return text.encode()
    except UnicodeEncodeError:
        joined = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
        return joined.encode("utf-8", "surrogatepass")


class ModelNames:
    """What the record keeps of names the model wrote (see the module's docstring): the keys below each tool call's
    arguments object in a pointer, and the name of a tool the request did not declare (low_confidence's
    `unaligned_calls`). Nothing to do for most checks: arguments carried as a JSON string are pointed at as a whole
    (a key is inside the string, not in the pointer)."""

    def __init__(self, exchange: Exchange, mode: str, redactor: Redactor | None = None) -> None:
        self.mode, self.redactor = mode, redactor
        self.declared, self.tool_calls = exchange.tools, exchange.tool_calls  # a view the detectors built already
        # Arguments objects by pointer, with their call's segment (the redactor reads a key as a text of that segment).
        self.objects: dict[str, tuple[Any, Segment]] = {
            segment.tool_call.arguments_pointer: (segment.tool_call.arguments, segment)
            for segment in self.tool_calls if segment.tool_call is not None and segment.tool_call.arguments_is_object}
        self._memo: dict[tuple[str, int], str] = {}

    def pointer(self, pointer: str) -> str:
        """`pointer`, with each object key below a tool call's arguments object kept as the content mode keeps text
        (array indexes are positions, not text: they stay)."""
        if not self.objects or not pointer:
            return pointer
        at = len(pointer)
        while (at := pointer.rfind("/", 0, at)) > 0:  # the longest arguments pointer it is below
            found = self.objects.get(pointer[:at])
            if found is not None:
                return pointer[:at] + self._below(split(pointer[at:]), *found)
        return pointer

    def _below(self, tokens: list[str], node: Any, segment: Segment) -> str:
        parts = []
        for token in tokens:
            if isinstance(node, list) and token.isdigit():
                parts.append(token)
                node = node[int(token)] if int(token) < len(node) else None
            else:
                parts.append(self.name(token, segment, token=True))
                node = node.get(token) if isinstance(node, dict) else None
        return "".join("/" + part for part in parts)

    def name(self, text: str, segment: Segment | None = None, token: bool = False) -> str:
        """A model-written name as kept: `~h:<8 hex>` (none, hashed) or redacted; a pointer `token` is escaped as
        RFC 6901 says (the hashed form is left as is: that it is no escape is what marks it)."""
        key = (text, segment.index if segment is not None else -1)
        kept = self._memo.get(key)
        if kept is None:
            kept = self._memo[key] = self._kept(text, segment)
        return escape(kept) if token and self.mode == "redacted" else kept

    def _kept(self, text: str, segment: Segment | None) -> str:
        if self.mode != "redacted":
            return HASHED_NAME + hashlib.sha256(utf8(text)).hexdigest()[:HASHED_NAME_HEX]
        if self.redactor is None or segment is None:
            return text  # redacted without recognizers keeps text but for finding spans, which hold no name
        alone = dataclasses.replace(segment, text=text, start=0, pieces=(), tool_call=None)
        try:
            return redact(alone, [], self.redactor(alone))
        except Exception:  # as for a segment: nothing of it is kept (the segment's own failure is what is counted)
            return UNREDACTED

    def logprobs(self, summary: dict[str, Any]) -> dict[str, Any]:
        """low_confidence's signals summary with its pointers and undeclared tool names kept as above (a copy: the
        check's answer shows the original)."""
        units, unaligned = summary.get("units"), summary.get("unaligned_calls")
        out = dict(summary)
        if isinstance(units, list) and self.objects:
            out["units"] = [self._located(u) for u in units]
        if isinstance(unaligned, list):
            out["unaligned_calls"] = [self._located(self._named(c)) for c in unaligned]
        return out

    def _located(self, entry: Any) -> Any:
        if not isinstance(entry, dict) or not isinstance(entry.get("pointer"), str):
            return entry
        pointer = self.pointer(entry["pointer"])
        return entry if pointer == entry["pointer"] else {**entry, "pointer": pointer}

    def _named(self, entry: Any) -> Any:
        tool = entry.get("tool") if isinstance(entry, dict) else None
        if not isinstance(tool, str) or tool in self.declared:
            return entry  # a declared tool's name is the operator's text
        pointer = entry.get("pointer")
        segment = next((s for s in self.tool_calls if s.tool_call and s.tool_call.arguments_pointer == pointer), None)
        return {**entry, "tool": self.name(tool, segment)}


# Which category names a redacted span that several findings cover: what the hidden text is comes first.
LABEL_RANK = {label: rank for rank, label in enumerate(("secret", "pii", "prompt_injection", "jailbreak", "content"))}


def redact(segment: Segment, findings: list[Finding], extra: Iterable[Span] = ()) -> str:
    """The segment's text with every finding span that falls in it replaced by `[<category>]`, and each of the
    `extra` (segment-relative) spans by `[<label>]`."""
    length = len(segment.text)
    spans: list[tuple[int, int, str]] = [
        (max(0, start), min(end, length), label) for start, end, label in extra if min(end, length) > max(0, start)
    ]
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


Recognizer = Callable[[Segment], Sequence[Hit]]  # a segment detector's `analyze`
# Hits a recognizer would return for a segment, already computed (by a policy's own detector with the same class and
# settings), or None when there are none to reuse.
KnownHits = Callable[[Segment], Sequence[Hit] | None]


class RecognizerRedactor:
    """A `Redactor` from recognizers (label, `analyze`): every hit they return is a span to mask, a hit on the whole
    segment covers all of it.

    Built once at startup (`guardrails/serve.py` gives it the `pii` and `secret` detectors). An agent resends its
    history every step, so each (kind, trust, text) is read once: the spans are memoized, bounded, first in first
    out (a dict lookup per resent segment, as in the engine's segment cache). A recognizer that raises is not
    memoized: the segment is read again next time.

    `known_hits(outcome)`, when given, says per recognizer where the check's policy may already hold its hits (a
    policy detector of the same class and settings caches the hits of every segment in its scope): `for_check`
    binds it, and a segment read for the first time takes those hits instead of running the recognizer again.
    """

    def __init__(self, recognizers: Sequence[tuple[str, Recognizer]], max_entries: int = 50_000,
                 known_hits: Callable[[CheckOutcome], Sequence[KnownHits | None]] | None = None) -> None:
        self.recognizers = tuple(recognizers)
        self.max_entries = max_entries
        self.known_hits = known_hits
        self._memo: dict[tuple[Any, Any, str], tuple[Span, ...]] = {}
        self._order: deque[tuple[Any, Any, str]] = deque()
        self.hits = 0  # segments answered from the memo
        self.misses = 0  # segments read
        self.reused = 0  # recognizer reads answered by the policy's own cached hits

    def __call__(self, segment: Segment) -> tuple[Span, ...]:
        return self.spans(segment, ())

    def for_check(self, outcome: CheckOutcome) -> Redactor:
        """This redactor, reusing the hits `outcome`'s policy already produced (itself when there is nothing to
        reuse; a lookup that fails only costs the reuse)."""
        if self.known_hits is None:
            return self
        try:
            known = tuple(self.known_hits(outcome))
        except Exception:
            return self
        return self if not any(known) else lambda segment: self.spans(segment, known)

    def spans(self, segment: Segment, known: Sequence[KnownHits | None]) -> tuple[Span, ...]:
        key = (segment.kind, segment.trust, segment.text)  # what a segment detector's hits may depend on
        spans = self._memo.get(key)
        if spans is not None:
            self.hits += 1
            return spans
        self.misses += 1
        spans = tuple(self._read(segment, known))
        self._memo[key] = spans
        self._order.append(key)
        if len(self._order) > self.max_entries:
            self._memo.pop(self._order.popleft(), None)
        return spans

    def _read(self, segment: Segment, known: Sequence[KnownHits | None]) -> Iterable[Span]:
        length = len(segment.text)
        for i, (label, analyze) in enumerate(self.recognizers):
            hits = self._known(known[i] if i < len(known) else None, segment)
            if hits is None:
                hits = analyze(segment)
            else:
                self.reused += 1
            for hit in hits:
                label_here = hit.category.value if hit.category is not None else label
                if hit.start is None:
                    yield 0, length, label_here
                elif hit.end is not None and hit.end > hit.start:
                    yield hit.start, hit.end, label_here

    @staticmethod
    def _known(lookup: KnownHits | None, segment: Segment) -> Sequence[Hit] | None:
        if lookup is None:
            return None
        try:
            return lookup(segment)
        except Exception:  # only an optimisation: the recognizer reads the segment itself
            return None

    def __len__(self) -> int:
        return len(self._memo)
