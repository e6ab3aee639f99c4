"""The check engine: run one policy's detectors over an exchange and turn findings into a verdict.

Built once per policy version. Segment detectors run inline with a bounded per-segment cache, so the
history an agent resends every step costs a dictionary lookup; exchange detectors that wait on I/O run
concurrently, each cancelled at its timeout. CPU-bound detectors cannot be stopped midway: one that runs past
its timeout finishes, and the overrun is reported beside its findings. A detector that raises, times out or
overruns gives a `detector_error` finding whose action the policy sets: a check never fails because a detector did.

A setting no detector asked for while it was built (a typo such as `builtin_rule`) is kept in
`Engine.unknown_settings` and logged as a warning: `guardrails policy validate` makes it an error, the service
does not, since a third-party detector may read a setting only when it scans.
"""

from __future__ import annotations

import asyncio
import dataclasses
import difflib
import logging
import re
import sys
import time
from collections import deque
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from operator import attrgetter
from typing import Any

from guardrails.argspans import SizedMemo
from guardrails.colang.catalog import RAIL_KINDS
from guardrails.detector import (
    Detector,
    DetectorRegistry,
    RecordedSettings,
    ScanContext,
    Scope,
    SegmentDetector,
    Services,
)
from guardrails.exchange import Exchange, Phase, Segment, SegmentKind, Trust
from guardrails.findings import (
    ACTION_RANK,
    DEFAULT_ACTION_BY_SEVERITY,
    Action,
    Category,
    Finding,
    Hit,
    Severity,
    strictest,
)
from guardrails.policy import DetectorConfig, Policy, PolicyError

log = logging.getLogger(__name__)
# `scheme://user:password@`: a driver's error may quote its connection URL.
URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)[^\s@]+@")
MAX_REASON_CHARS = 500
# The bytes the segment cache and the placed findings may each keep (estimated): with 50,000 entries only, a few
# checks with megabyte texts kept them alive long after they ended.
SEGMENT_CACHE_BYTES = 64 * 2**20
_ENTRY_BYTES = 250  # an entry's list, its table and queue slots (and a placed entry's tuples)
_RECORD_BYTES = 250  # a hit or a finding and its list slot
_SEGMENT_BYTES = 400  # a segment and, for a tool call, its ToolCall
_ITEM_BYTES = 64  # what parsed JSON may hold per `,` `:` `[` `{` of its text (an object, a list or dict slot)


class SegmentCache:
    """Bounded memo of segment-detector hits: (detector slot, segment kind, trust) -> text -> hits.

    Lookups sit on the hot path (every history segment, every detector, every step), so it is plain
    dicts keyed by the segment text with first-in-first-out eviction, not an LRU with reordering.
    Bounded by entries and by bytes: a text is counted once however many detectors' tables hold it (the
    same string), with each entry's hits; a text above a quarter of `max_bytes` is not kept.
    """

    def __init__(self, max_entries: int = 50_000, max_bytes: int = SEGMENT_CACHE_BYTES) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0  # the estimated size of what is kept
        self._tables: dict[Hashable, dict[str, list[Hit]]] = {}
        self._order: deque[tuple[Hashable, str, int]] = deque()  # (table key, text, its size but the text)
        self._holders: dict[str, int] = {}  # text -> how many tables hold it
        self.hits = 0
        self.misses = 0

    def table(self, key: Hashable) -> dict[str, list[Hit]]:
        table = self._tables.get(key)
        if table is None:
            table = self._tables[key] = {}
        return table

    def put(self, key: Hashable, table: dict[str, list[Hit]], text: str, value: list[Hit]) -> None:
        if text in table:  # already counted
            table[text] = value
            return
        holders = self._holders.get(text, 0)
        hits_size = _ENTRY_BYTES + _records_bytes(value)
        text_size = 0 if holders else sys.getsizeof(text)
        if hits_size + text_size > self.max_bytes // 4:
            return
        table[text] = value
        self._holders[text] = holders + 1
        self._order.append((key, text, hits_size))
        self.bytes += hits_size + text_size
        while len(self._order) > self.max_entries or self.bytes > self.max_bytes:
            self._evict()

    def _evict(self) -> None:
        old_key, old_text, size = self._order.popleft()
        self._tables.get(old_key, {}).pop(old_text, None)
        holders = self._holders.pop(old_text, 1) - 1
        if holders:
            self._holders[old_text] = holders
        else:
            size += sys.getsizeof(old_text)
        self.bytes -= size

    def __len__(self) -> int:
        return len(self._order)


Placed = tuple[Segment, tuple[tuple[int, list[Finding]], ...]]


class PlacedFindings(SizedMemo[int, Placed]):
    """Findings placed for a segment object, by identity, bounded first-in-first-out, by entries and by bytes.

    The history memo hands back the same `Segment` objects while a session's history is unchanged; their
    findings (same pointer, same text) are then reused instead of re-created. Each entry keeps its segment
    alive, so an id cannot be reused while its entry exists; the identity check guards the rest. An entry is
    sized by what it keeps alive (`_segment_bytes`).
    """

    def __init__(self, max_entries: int, max_bytes: int = SEGMENT_CACHE_BYTES) -> None:
        super().__init__(max_entries, max_bytes)

    def put(self, key: int, value: Placed, size: int | None = None) -> Placed:
        if size is None:
            size = _ENTRY_BYTES + _segment_bytes(value[0]) + sum(_records_bytes(found) for _, found in value[1])
        return super().put(key, value, size)


def _records_bytes(records: Sequence[Hit] | Sequence[Finding]) -> int:
    """Hits or findings, with their strings (a pointer can name a megabyte argument key; evidence is a quote)."""
    size = 0
    for record in records:
        size += _RECORD_BYTES + sys.getsizeof(record.message) + sys.getsizeof(getattr(record, "pointer", ""))
        evidence = record.evidence if isinstance(record.evidence, dict) else {}  # a plug-in's may be anything
        size += sum(sys.getsizeof(v) for v in evidence.values() if isinstance(v, str))
    return size


def _segment_bytes(segment: Segment) -> int:
    """What a placed entry keeps alive: the segment's text and, for a tool call, its name, its argument text and
    the parsed arguments (estimated from that text, an upper bound on what json.loads builds)."""
    size = _SEGMENT_BYTES + sys.getsizeof(segment.text)
    call = segment.tool_call
    if call is not None:
        raw = call.arguments_raw
        size += sys.getsizeof(call.name) + (0 if raw is segment.text else sys.getsizeof(raw))
        if call.arguments is not None:
            width = 1 if raw.isascii() and "\\u" not in raw else 4  # an escape can widen a whole string
            size += width * len(raw) + _ITEM_BYTES * sum(map(raw.count, ",:[{"))
    return size


@dataclass(slots=True)
class _Slot:
    detector: Detector
    config: DetectorConfig
    scope: Scope
    key: int  # distinguishes this detector instance in the shared cache


@dataclass(slots=True)
class EngineResult:
    verdict: Action
    findings: list[Finding]
    timings_ms: dict[str, float]
    signals: dict[str, Any] = field(default_factory=dict)


class Engine:
    def __init__(
        self,
        policy: Policy,
        registry: DetectorRegistry,
        services: Services | None = None,
        cache: SegmentCache | None = None,
        *,
        log_unknown_settings: bool = True,
        collect_errors: bool = False,
    ) -> None:
        """Build the policy's detectors; `log_unknown_settings=False` leaves reporting `unknown_settings` to
        the caller (`guardrails policy validate` prints them as errors). A detector that does not build raises
        its `PolicyError`; with `collect_errors=True` (validate) every one is kept in `build_errors` instead, the
        detector left out, and so is a Colang runtime that does not build: an author sees them all in one run."""
        self.policy = policy
        self.cache = cache if cache is not None else SegmentCache()
        self.slots: list[_Slot] = []
        self.unknown_settings: list[PolicyError] = []  # config.yml keys no detector asked for while built
        self.build_errors: list[PolicyError] = []  # with collect_errors: what did not build
        services = services or Services()
        # Detectors are built per policy: let them find files kept in their bundle (judge prompts...).
        services = dataclasses.replace(services, extra={**services.extra, "policy_dir": policy.path})
        self.registry, self.services = registry, services
        # Looked up for every finding, history included: a dict, not a scan of the policy.
        self._detector_actions = {d.name: d.action for d in policy.detectors if d.action is not None}
        for config in policy.detectors:
            if not config.enabled:
                continue
            try:
                detector = self._build(config)
                scope = config.scope or type(detector).default_scope
                if config.rail_types:
                    scope = _narrow_to_rails(scope, config, policy.config_file or policy.path)
            except PolicyError as exc:
                if not collect_errors:
                    raise
                self.build_errors.append(exc)
                continue
            self.slots.append(_Slot(detector, config, scope, id(detector)))
        if log_unknown_settings:
            for problem in self.unknown_settings:
                log.warning("policy %s: %s (loaded anyway: a detector may read a setting only when it scans)",
                            policy.id, problem)
        # Custom Colang flows run on NeMo's runtime, built once per policy version; built-in flows never do.
        self._segment_slots = [i for i, slot in enumerate(self.slots) if isinstance(slot.detector, SegmentDetector)]
        self._plans: dict[tuple[Signature, ...], _Plan] = {}
        self._placed = PlacedFindings(self.cache.max_entries, self.cache.max_bytes)
        self.colang: Any = None
        if policy.rails.has_custom_flows:
            from guardrails.colang.bridge import ColangRails

            try:
                self.colang = ColangRails(self)
            except PolicyError as exc:
                if not collect_errors:
                    raise
                self.build_errors.append(exc)

    def _build(self, config: DetectorConfig) -> Detector:
        """One enabled detector, built with its settings; records the settings it never asked for."""
        detector, unknown = self.build_detector(config)
        self.unknown_settings += unknown
        return detector

    def build_detector(self, config: DetectorConfig) -> tuple[Detector, list[PolicyError]]:
        """`config`'s detector built with its settings, not added to the engine, and the settings it never asked
        for. `guardrails policy validate` builds disabled detectors this way; a load never does (a build may open
        clients or load models)."""
        file = self.policy.config_file or self.policy.path
        if config.name not in self.registry:
            reason = self.registry.load_errors.get(config.name, "not installed")
            close = [] if config.name in self.registry.load_errors else difflib.get_close_matches(
                config.name, self.registry.names(), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise PolicyError(f"policy enables detector {config.name!r}, which is unavailable: {reason}{hint}",
                              file, config.line)
        recorded = RecordedSettings(config.settings)
        try:
            detector = self.registry.get(config.name)(recorded, self.services)
        except Exception as exc:
            raise PolicyError(f"detector {config.name!r} rejected its settings: {exc}", file, config.line) from exc
        # Checks read the plain mapping: no recording on the hot path (a plug-in may keep settings elsewhere).
        if getattr(detector, "settings", None) is recorded:
            detector.settings = config.settings
        unknown = [PolicyError(_unknown_setting(config.name, key, list(recorded.asked)), file, config.line)
                   for key in recorded.unread()]
        return detector, unknown

    async def run(self, exchange: Exchange) -> EngineResult:
        timings: dict[str, float] = {}
        signals: dict[str, Any] = {}
        per_slot: list[list[Finding]] = [[] for _ in self.slots]
        pending: list[tuple[int, asyncio.Task[list[Finding]]]] = []
        plan = self._plan_for(exchange)
        self._run_segment_detectors(exchange, plan, per_slot, timings)
        select = _Selector(exchange)
        for i, allowed in plan.exchange_slots:
            slot = self.slots[i]
            ctx = ScanContext(segments=select(allowed), signals=signals, policy_id=self.policy.id)
            if getattr(slot.detector, "io_bound", False):
                pending.append((i, asyncio.ensure_future(self._run_io(slot, exchange, ctx, timings))))
            else:
                per_slot[i] = await self._run_inline(slot, exchange, ctx, timings)
        for i, task in pending:
            per_slot[i] = await task
        findings: list[Finding] = []
        for chunk in per_slot:
            for f in chunk:
                if f.action is None:
                    f.action = self._action_for(f)
            if len(chunk) > MAX_FINDINGS_PER_DETECTOR:
                kept = capped_findings(chunk, MAX_FINDINGS_PER_DETECTOR)
                signals.setdefault("findings_capped", {})[chunk[0].detector] = len(chunk) - len(kept)
                chunk = kept
            findings.extend(chunk)
        if self.colang is not None:
            started = time.perf_counter()
            for f in await self.colang.run(exchange, findings, signals):
                f.action = f.action or self._action_for(f)
                findings.append(f)
            timings["colang"] = _ms(started)
        verdict = strictest([f.action for f in findings if f.action is not None])
        return EngineResult(verdict=verdict, findings=findings, timings_ms=timings, signals=signals)

    def _action_for(self, finding: Finding) -> Action:
        if finding.category is Category.DETECTOR_ERROR:
            return self.policy.on_detector_error
        action = self._detector_actions.get(finding.detector)
        return action if action is not None else DEFAULT_ACTION_BY_SEVERITY[finding.severity]

    def _plan_for(self, exchange: Exchange) -> _Plan:
        """The plan for the signatures `exchange` holds, in the order they first appear (its `by_signature`)."""
        signatures = tuple(exchange.by_signature)
        plan = self._plans.get(signatures)
        if plan is None:
            if len(self._plans) >= MAX_PLANS:  # orders of a few dozen signatures: bounded all the same
                self._plans.clear()
            plan = self._plans[signatures] = _Plan(self.slots, self._segment_slots, signatures)
        return plan

    def _run_segment_detectors(self, exchange: Exchange, plan: _Plan, per_slot: list[list[Finding]],
                               timings: dict[str, float]) -> None:
        """Run every segment detector, walking the segments once.

        A segment resent unchanged (the history memo hands back the very same object) gets the findings
        placed for it last time: step N of a session costs its new segments, not its whole history.
        """
        slots = self._segment_slots
        if not slots:
            return
        spent = dict.fromkeys(slots, 0.0)
        failed: dict[int, BaseException] = {}
        # A detector past its timeout reads no more new text in this check (cached texts cost nothing): the
        # segments it skipped are counted, the first one located, and none of them is remembered as judged.
        limits = {i: self.slots[i].config.timeout_s for i in slots}
        skipped: dict[int, list[Segment]] = {}
        placed, cache = self._placed, self.cache
        seen = placed.entries
        clock = time.perf_counter
        chosen, all_slots = plan.segment_slots, self.slots
        for segment in exchange.segments:
            slots_here = chosen[segment.signature]
            if not slots_here:
                continue
            entry = seen.get(id(segment))
            if entry is not None and entry[0] is segment:
                for i, found in entry[1]:
                    per_slot[i].extend(found)
                continue
            placed_here: list[tuple[int, list[Finding]]] = []
            complete = True
            for i in slots_here:
                if i in failed:
                    continue
                slot = all_slots[i]
                detector = slot.detector
                started = clock()
                try:
                    key = (slot.key, segment.kind, segment.trust)
                    table = cache.table(key)
                    hits = table.get(segment.text)
                    if hits is None and spent[i] > limits[i]:
                        skipped.setdefault(i, []).append(segment)
                        complete = False
                        continue
                    if hits is None:
                        cache.misses += 1
                        hits = detector.analyze(segment)  # type: ignore[attr-defined]
                        cache.put(key, table, segment.text, hits)
                    else:
                        cache.hits += 1
                    found = [detector.finding(segment, hit) for hit in hits]
                except Exception as exc:
                    failed[i] = exc
                    continue
                finally:
                    spent[i] += clock() - started
                if found:
                    placed_here.append((i, found))
                    per_slot[i].extend(found)
            # A response's segments are never handed back (next step reads them from the request): not kept.
            if complete and not failed and segment.phase is not Phase.RESPONSE:
                placed.put(id(segment), (segment, tuple(placed_here)))
        for i in slots:
            if i in failed:
                per_slot[i] = [self._logged(self.slots[i], _error_finding(self.slots[i], failed[i]))]
            elif spent[i] > limits[i]:
                overrun = _overrun_finding(self.slots[i], spent[i], skipped.get(i, []))
                per_slot[i].append(self._logged(self.slots[i], overrun))
            timings[self.slots[i].detector.name] = round(spent[i] * 1000, 3)

    async def _run_inline(self, slot: _Slot, exchange: Exchange, ctx: ScanContext,
                          timings: dict[str, float]) -> list[Finding]:
        started = time.perf_counter()
        try:
            findings = await slot.detector.scan(exchange, ctx)
        except Exception as exc:
            findings = [self._logged(slot, _error_finding(slot, exc))]
        spent = time.perf_counter() - started
        if spent > slot.config.timeout_s:
            findings = [*findings, self._logged(slot, _overrun_finding(slot, spent))]
        timings[slot.detector.name] = round(spent * 1000, 3)
        return findings

    async def _run_io(self, slot: _Slot, exchange: Exchange, ctx: ScanContext,
                      timings: dict[str, float]) -> list[Finding]:
        started = time.perf_counter()
        try:
            findings = await asyncio.wait_for(slot.detector.scan(exchange, ctx), slot.config.timeout_s)
        except TimeoutError:
            timeout = TimeoutError(f"timed out after {slot.config.timeout_s:g} s")
            findings = [self._logged(slot, _error_finding(slot, timeout))]
        except Exception as exc:
            findings = [self._logged(slot, _error_finding(slot, exc))]
        timings[slot.detector.name] = _ms(started)
        return findings

    def _logged(self, slot: _Slot, finding: Finding) -> Finding:
        """Log a `detector_error` finding (rate-limited), then hand it on: an outage must reach the log."""
        DETECTOR_ERRORS.report(self.policy.id, slot.detector.name, str(finding.evidence["error_type"]),
                               finding.message, self.policy.on_detector_error.value)
        return finding


Signature = tuple[SegmentKind, Trust, Phase]
ALL_SEGMENTS = None  # a selection that keeps every segment of the exchange
MAX_PLANS = 1024
# Findings one detector reports in one check: thousands of leaked-call markups (`<function=a>` x 8000 in a reply)
# made a 24 MB answer. Far above what a real exchange yields (a 50-turn session: ~35 PII findings).
MAX_FINDINGS_PER_DETECTOR = 1000
_SEVERITY_RANK = {severity: rank for rank, severity in enumerate(Severity)}


def capped_findings(findings: list[Finding], limit: int) -> list[Finding]:
    """At most about `limit` of one detector's findings, in order: the first and the last half (the oldest history
    and the newest content, which comes last), and between them only a finding stricter (action, then severity)
    than every one kept so far, so the cap never changes the verdict nor hides a block behind warnings."""
    half = limit // 2
    head, middle, tail = findings[:half], findings[half:len(findings) - half], findings[len(findings) - half:]

    def rank(f: Finding) -> tuple[int, int]:
        return ACTION_RANK[f.action or Action.ALLOW], _SEVERITY_RANK[f.severity]

    worst = max(map(rank, head + tail))
    kept = []
    for f in middle:
        if rank(f) > worst:
            kept.append(f)
            worst = rank(f)
    return head + kept + tail


class _Plan:
    """What each detector slot reads, decided once per tuple of distinct segment signatures (kind, trust,
    phase) instead of per check: a session sends the same few tuples step after step.

    `exchange_slots`: each exchange detector's slot index with the signatures its scope selects (None: all of
    them). `segment_slots`: per signature, the segment detectors' slot indices whose scope selects it.
    """

    __slots__ = ("exchange_slots", "segment_slots")

    def __init__(self, slots: Sequence[_Slot], segment_slots: Sequence[int], signatures: tuple[Signature, ...]
                 ) -> None:
        self.segment_slots = {sig: tuple(i for i in segment_slots if _scope_allows(slots[i].scope, sig))
                              for sig in signatures}
        self.exchange_slots: list[tuple[int, tuple[Signature, ...] | None]] = []
        for i, slot in enumerate(slots):
            if isinstance(slot.detector, SegmentDetector):
                continue
            allowed = tuple(sig for sig in signatures if _scope_allows(slot.scope, sig))
            self.exchange_slots.append((i, ALL_SEGMENTS if len(allowed) == len(signatures) else allowed))


class _Selector:
    """The segments of one exchange a plan's selection names; a selection of several signatures is merged once
    per check, however many detectors read it."""

    def __init__(self, exchange: Exchange) -> None:
        self.segments = exchange.segments
        self.groups = exchange.by_signature
        self._merged: dict[tuple[Signature, ...], tuple[Segment, ...]] = {}

    def __call__(self, allowed: tuple[Signature, ...] | None) -> Sequence[Segment]:
        """The selected segments in exchange order (a shared list when one signature is selected: read only)."""
        if allowed is ALL_SEGMENTS:
            return self.segments
        if not allowed:
            return ()
        if len(allowed) == 1:
            return self.groups[allowed[0]]
        merged = self._merged.get(allowed)
        if merged is None:
            merged = self._merged[allowed] = tuple(sorted(chain.from_iterable(self.groups[sig] for sig in allowed),
                                                          key=_position))
        return list(merged)  # a list of its own per detector, as before: only single-signature lists are shared


_position = attrgetter("index")  # a segment's place in its exchange


def _scope_allows(scope: Scope, sig: tuple[Any, Any, Any]) -> bool:
    kind, trust, phase = sig
    return ((not scope.kinds or kind in scope.kinds) and (not scope.trust or trust in scope.trust)
            and (not scope.phases or phase in scope.phases))


def _narrow_to_rails(scope: Scope, config: DetectorConfig, file: Any) -> Scope:
    """A built-in flow listed under rail types looks only at those rails' segments."""
    rail_kinds = frozenset().union(*(RAIL_KINDS[t] for t in config.rail_types))
    kinds = scope.kinds & rail_kinds if scope.kinds else rail_kinds
    if not kinds:
        # At the rail listing the flow (else the detector's entry): that is what points it at nothing.
        raise PolicyError(f"detector {config.name!r} cannot look at any segment of the rails "
                          f"{sorted(config.rail_types)} its flow is listed under", file,
                          config.rails_line or config.line)
    return Scope(kinds=kinds, trust=scope.trust, phases=scope.phases)


def _unknown_setting(detector: str, key: Any, asked: list[str]) -> str:
    """`detector 'x' has no setting 'y'`, with the closest name the detector asked for, else all of them."""
    message = f"detector {detector!r} has no setting {key!r}"
    close = difflib.get_close_matches(str(key), asked, n=1)
    if close:
        return f"{message}; did you mean {close[0]!r}?"
    return f"{message}; it reads {', '.join(sorted(asked))}" if asked else f"{message}; it reads none when built"


class DetectorErrorLog:
    """Logs detector failures at WARNING, at most once per `interval_s` per (policy, detector, error type),
    with how many were left out since: a store outage fails a detector on every check, and a line per check
    would flood the log. Only the finding's message is logged, never the checked content."""

    def __init__(self, interval_s: float = 60.0) -> None:
        self.interval_s = interval_s
        self.clock = time.monotonic
        self._seen: dict[tuple[str, str, str], tuple[float, int]] = {}  # key -> (last logged, left out since)

    def report(self, policy_id: str, detector: str, error_type: str, message: str, action: str) -> None:
        key = (policy_id, detector, error_type)
        now = self.clock()
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < self.interval_s:
            self._seen[key] = (seen[0], seen[1] + 1)
            return
        self._seen[key] = (now, 0)
        left_out = f"; {seen[1]} more like it since the last line" if seen is not None and seen[1] else ""
        log.warning("policy %s: %s (a detector_error finding, action %s)%s", policy_id, message, action, left_out)


DETECTOR_ERRORS = DetectorErrorLog()


def _reason(exc: BaseException) -> str:
    """`Type: message` on one line, bounded, with any URL's password masked: it goes to the caller and the log."""
    text = URL_PASSWORD.sub(r"\1***@", " ".join(f"{type(exc).__name__}: {exc}".split()))
    return text if len(text) <= MAX_REASON_CHARS else text[:MAX_REASON_CHARS] + "..."


def _error_finding(slot: _Slot, exc: BaseException) -> Finding:
    return Finding(
        category=Category.DETECTOR_ERROR,
        detector=slot.detector.name,
        severity=Severity.MEDIUM,
        message=f"detector {slot.detector.name!r} failed: {_reason(exc)}",
        pointer="",
        evidence={"error_type": type(exc).__name__},
    )


def _overrun_finding(slot: _Slot, spent_s: float, skipped: Sequence[Segment] = ()) -> Finding:
    """An inline detector past its timeout, whether it computed or waited on a store's lock. A call already
    running is not stopped (Python code cannot be stopped mid-computation without a thread per scan, which costs
    more than most scans), so its findings stand; a segment detector is given no new text after it (`skipped`:
    located at the first, never passed). The overrun is reported with the action `on_detector_error` gives it."""
    limit_ms = slot.config.timeout_s * 1000
    name = slot.detector.name
    evidence: dict[str, Any] = {"error_type": "Overrun", "elapsed_ms": round(spent_s * 1000, 3),
                                "timeout_ms": limit_ms}
    if not skipped:
        return Finding(category=Category.DETECTOR_ERROR, detector=name, severity=Severity.MEDIUM,
                       message=f"detector {name!r} took {spent_s * 1000:.0f} ms, over its timeout of {limit_ms:g} ms "
                       "(it ran inline, so it finished; its findings are kept)", pointer="", evidence=evidence)
    first = skipped[0]
    evidence["segments_not_analyzed"] = len(skipped)
    count = f"{len(skipped)} segment{'s' if len(skipped) > 1 else ''}"
    return Finding(category=Category.DETECTOR_ERROR, detector=name, severity=Severity.MEDIUM,
                   message=f"detector {name!r} took {spent_s * 1000:.0f} ms, over its timeout of {limit_ms:g} ms: "
                   f"{count} from here on not analyzed (the findings it made are kept)",
                   pointer=first.locate(0, len(first.text)).pointer, evidence=evidence)


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
