"""The check engine: run one policy's detectors over an exchange and turn findings into a verdict.

Built once per policy version. Segment detectors run inline with a bounded per-segment cache, so the
history an agent resends every step costs a dictionary lookup; exchange detectors that wait on I/O run
concurrently under their timeout. A detector that raises or times out becomes a `detector_error`
finding whose action the policy sets: a check never fails because a detector did.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from guardrails.detector import Detector, DetectorRegistry, ScanContext, Scope, SegmentDetector, Services
from guardrails.exchange import Exchange, Segment
from guardrails.findings import (
    DEFAULT_ACTION_BY_SEVERITY,
    Action,
    Category,
    Finding,
    Hit,
    Severity,
    strictest,
)
from guardrails.policy import DetectorConfig, Policy, PolicyError


class SegmentCache:
    """A bounded LRU of segment-detector hits keyed by (detector slot, segment kind, trust, text)."""

    def __init__(self, max_entries: int = 50_000) -> None:
        self.max_entries = max_entries
        self._data: OrderedDict[Hashable, list[Hit]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> list[Hit] | None:
        value = self._data.get(key)
        if value is None:
            self.misses += 1
            return None
        self._data.move_to_end(key)
        self.hits += 1
        return value

    def put(self, key: Hashable, value: list[Hit]) -> None:
        self._data[key] = value
        if len(self._data) > self.max_entries:
            self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


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
    ) -> None:
        self.policy = policy
        self.cache = cache or SegmentCache()
        self.slots: list[_Slot] = []
        services = services or Services()
        for config in policy.detectors:
            if not config.enabled:
                continue
            if config.name not in registry:
                reason = registry.load_errors.get(config.name, "not installed")
                raise PolicyError(f"policy enables detector {config.name!r}, which is unavailable: {reason}",
                                  policy.path)
            cls = registry.get(config.name)
            try:
                detector = cls(config.settings, services)
            except Exception as exc:
                raise PolicyError(f"detector {config.name!r} rejected its settings: {exc}", policy.path) from exc
            self.slots.append(_Slot(detector, config, config.scope or cls.default_scope, id(detector)))

    async def run(self, exchange: Exchange) -> EngineResult:
        timings: dict[str, float] = {}
        signals: dict[str, Any] = {}
        per_slot: list[list[Finding]] = [[] for _ in self.slots]
        pending: list[tuple[int, asyncio.Task[list[Finding]]]] = []
        for i, slot in enumerate(self.slots):
            segments = [s for s in exchange.segments if slot.scope.matches(s)]
            if isinstance(slot.detector, SegmentDetector):
                per_slot[i] = self._run_segment_detector(slot, segments, timings)
            elif getattr(slot.detector, "io_bound", False):
                ctx = ScanContext(segments=segments, signals=signals, policy_id=self.policy.id)
                pending.append((i, asyncio.ensure_future(self._run_io(slot, exchange, ctx, timings))))
            else:
                ctx = ScanContext(segments=segments, signals=signals, policy_id=self.policy.id)
                per_slot[i] = await self._run_inline(slot, exchange, ctx, timings)
        for i, task in pending:
            per_slot[i] = await task
        findings = [f for chunk in per_slot for f in chunk]
        for f in findings:
            if f.action is None:
                f.action = self._action_for(f)
        verdict = strictest([f.action for f in findings if f.action is not None])
        return EngineResult(verdict=verdict, findings=findings, timings_ms=timings, signals=signals)

    def _action_for(self, finding: Finding) -> Action:
        if finding.category is Category.DETECTOR_ERROR:
            return self.policy.on_detector_error
        config = self.policy.detector(finding.detector)
        if config is not None and config.action is not None:
            return config.action
        return DEFAULT_ACTION_BY_SEVERITY[finding.severity]

    def _run_segment_detector(self, slot: _Slot, segments: list[Segment], timings: dict[str, float]) -> list[Finding]:
        detector = slot.detector
        assert isinstance(detector, SegmentDetector)
        started = time.perf_counter()
        findings: list[Finding] = []
        try:
            for segment in segments:
                key = (slot.key, segment.kind, segment.trust, segment.text)
                hits = self.cache.get(key)
                if hits is None:
                    hits = detector.analyze(segment)
                    self.cache.put(key, hits)
                findings.extend(detector.finding(segment, hit) for hit in hits)
        except Exception as exc:
            findings = [_error_finding(slot, exc)]
        timings[detector.name] = _ms(started)
        return findings

    async def _run_inline(self, slot: _Slot, exchange: Exchange, ctx: ScanContext,
                          timings: dict[str, float]) -> list[Finding]:
        started = time.perf_counter()
        try:
            findings = await slot.detector.scan(exchange, ctx)
        except Exception as exc:
            findings = [_error_finding(slot, exc)]
        timings[slot.detector.name] = _ms(started)
        return findings

    async def _run_io(self, slot: _Slot, exchange: Exchange, ctx: ScanContext,
                      timings: dict[str, float]) -> list[Finding]:
        started = time.perf_counter()
        try:
            findings = await asyncio.wait_for(slot.detector.scan(exchange, ctx), slot.config.timeout_s)
        except TimeoutError:
            findings = [_error_finding(slot, TimeoutError(f"timed out after {slot.config.timeout_s:g} s"))]
        except Exception as exc:
            findings = [_error_finding(slot, exc)]
        timings[slot.detector.name] = _ms(started)
        return findings


def _error_finding(slot: _Slot, exc: BaseException) -> Finding:
    return Finding(
        category=Category.DETECTOR_ERROR,
        detector=slot.detector.name,
        severity=Severity.MEDIUM,
        message=f"detector {slot.detector.name!r} failed: {type(exc).__name__}: {exc}",
        pointer="",
        evidence={"error_type": type(exc).__name__},
    )


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
