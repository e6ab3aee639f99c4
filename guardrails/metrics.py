"""Prometheus metrics: counters kept by a check observer, rendered in the text exposition format 0.0.4.

Counting costs a few dict increments per check, on the event loop that runs the check (observers are awaited
there), so no lock is needed; detectors never touch these counters. Each process (uvicorn worker) counts its
own checks. The exposition is written by hand: it is small, and it keeps the service free of a client library.
"""

from __future__ import annotations

import logging
import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

from guardrails import __version__
from guardrails.findings import Action, Category, Finding
from guardrails.policy import PolicyStore

if TYPE_CHECKING:
    from guardrails.service import CheckOutcome

log = logging.getLogger("guardrails.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "guardrails_"
# Upper bounds in seconds: a small check takes a few tenths of a millisecond, a guard-model call up to a second.
DURATION_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
UNKNOWN_ERROR_TYPE = "unknown"

Labels = tuple[str, ...]  # label values; enum members (str subclasses) among them, rendered as their values


class Histogram:
    """One labelled series of a histogram: per-bucket counts (made cumulative when rendered) and the sum."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(DURATION_BUCKETS) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(DURATION_BUCKETS, seconds)] += 1  # bucket `le` bounds are inclusive
        self.total += seconds


class CheckMetrics:
    """A check observer (appended last to `CheckService.observers`) and the edge's count of refused checks."""

    def __init__(self) -> None:
        self.checks: dict[Labels, int] = {}  # (policy, format, phase, verdict)
        self.partial_checks: dict[Labels, int] = {}  # (policy, verdict): mid-stream re-checks, advisory verdicts
        self.findings: dict[Labels, int] = {}  # (category, detector, action)
        self.detector_errors: dict[Labels, int] = {}  # (detector, error_type)
        self.check_errors: dict[Labels, int] = {}  # (status, type)
        self.check_durations: dict[str, Histogram] = {}  # policy
        self.detector_ms: dict[str, list[float]] = {}  # detector -> [milliseconds spent, runs]

    async def __call__(self, outcome: CheckOutcome) -> None:
        try:
            self.count(outcome)
        except Exception:  # metrics must never fail a check
            log.exception("metrics: could not count check %s", outcome.check_id)

    def count(self, outcome: CheckOutcome) -> None:
        result, exchange, policy_id = outcome.result, outcome.exchange, outcome.policy.id
        # Keys hold the enum members themselves (str subclasses, rendered as their values): `.value` costs a
        # property call per finding, and a 50-step session answers with dozens of findings.
        if exchange.partial:  # a mid-stream re-check: its verdict is advisory, the stream's final check counts
            _increment(self.partial_checks, (policy_id, result.verdict))
        else:
            _increment(self.checks, (policy_id, exchange.format, exchange.phase, result.verdict))
        findings = self.findings
        for finding in result.findings:
            if not exchange.partial:
                key = (finding.category, finding.detector, finding.action or Action.ALLOW)
                findings[key] = findings.get(key, 0) + 1
            if finding.category is Category.DETECTOR_ERROR:  # a detector that failed did fail, partial or not
                self._count_detector_error(finding)
        spent = self.detector_ms
        for detector, ms in result.timings_ms.items():
            entry = spent.get(detector)
            if entry is None:
                spent[detector] = [ms, 1]
            else:
                entry[0] += ms
                entry[1] += 1
        histogram = self.check_durations.get(policy_id)
        if histogram is None:
            histogram = self.check_durations[policy_id] = Histogram()
        # From the check's arrival to now: every stage and the observers before this one (the audit write).
        histogram.observe(max(0.0, time.time() - outcome.received_at))

    def _count_detector_error(self, finding: Finding) -> None:
        evidence = finding.evidence
        error_type = evidence.get("error_type") if isinstance(evidence, Mapping) else None
        _increment(self.detector_errors, (finding.detector, str(error_type or UNKNOWN_ERROR_TYPE)))

    def count_refusal(self, status: int, error_type: str) -> None:
        """A check answered with an error (4xx/5xx) instead of a verdict; the edge reports these."""
        _increment(self.check_errors, (str(status), error_type))


def _increment(counter: dict[Labels, int], labels: Labels) -> None:
    counter[labels] = counter.get(labels, 0) + 1


def render(metrics: CheckMetrics, policies: PolicyStore, redaction_failures: int | None = None,
           idempotency: tuple[int, int] = (0, 0)) -> str:
    """The exposition of `metrics`, plus the service version and the serving version of every policy loaded so
    far. A scrape loads nothing: loading and building every bundle took a second on the event loop, and a bundle
    that does not load was retried on every scrape (/readyz loads them all and names those that fail).
    `redaction_failures`: the audit observer's count (None: no audit log, so the family has no sample).
    `idempotency`: retries answered with a stored answer, and stored answers dropped by the bounds before their TTL."""
    return "".join(_render_lines(metrics, policies, redaction_failures, idempotency))


def _render_lines(m: CheckMetrics, policies: PolicyStore, redaction_failures: int | None,
                  idempotency: tuple[int, int]) -> Iterator[str]:
    yield from _family("info", "gauge", "The service's version (always 1).", ("version",), {(__version__,): 1})
    yield from _family("policy_info", "gauge", "Each policy bundle loaded, with its serving version (always 1).",
                       ("policy", "version"), {pair: 1 for pair in policies.loaded_versions().items()})
    # A rejected edit keeps the last good version serving: readiness stays true, so only these tell an alert.
    reloads = policies.reload_status()
    yield from _family("policy_reload_failures_total", "counter",
                       "Edits of a policy bundle (or of routing.yml) rejected on reload; the last good version serves.",
                       ("policy",), {(key,): failures for key, (_, failures) in reloads.items()})
    yield from _family("policy_last_reload_ok", "gauge",
                       "1 when a bundle's (or routing.yml's) latest edit loaded, 0 while an older version serves.",
                       ("policy",), {(key,): int(ok) for key, (ok, _) in reloads.items()})
    yield from _family("checks_total", "counter", "Checks answered with a verdict (mid-stream re-checks apart).",
                       ("policy", "format", "phase", "verdict"), m.checks)
    yield from _family("findings_total", "counter", "Findings reported in check answers.",
                       ("category", "detector", "action"), m.findings)
    yield from _family("partial_checks_total", "counter",
                       "Mid-stream re-checks (partial) answered; their verdicts are advisory.",
                       ("policy", "verdict"), m.partial_checks)
    yield from _family("detector_errors_total", "counter", "Detectors that failed, timed out or overran.",
                       ("detector", "error_type"), m.detector_errors)
    yield from _family("check_errors_total", "counter", "Checks refused with an error instead of a verdict.",
                       ("status", "type"), m.check_errors)
    # Exposed at 0 from the start, so `increase(...) > 0` alerts on the first one (a series born at 1 shows none).
    yield from _family("audit_redaction_failures_total", "counter",
                       "Audit record segments stored as [unredacted] (their text dropped) because the redactor raised.",
                       (), {} if redaction_failures is None else {(): redaction_failures})
    replays, evicted = idempotency
    yield from _family("idempotent_replays_total", "counter",
                       "Retries (same Idempotency-Key and body) answered with the first check's stored answer.",
                       (), {(): replays})
    yield from _family("idempotency_evictions_total", "counter",
                       "Stored answers dropped by the memory bounds before their TTL (a retry of one runs again).",
                       (), {(): evicted})
    yield from _histogram("check_duration_seconds", "Time from a check's arrival to its verdict.", "policy",
                          m.check_durations)
    yield from _sum_count("detector_duration_seconds", "Time spent in each detector.", "detector", m.detector_ms)


def _family(name: str, kind: str, help_text: str, label_names: Labels,
            samples: Mapping[tuple[str, ...], float]) -> Iterator[str]:
    yield from _header(name, kind, help_text)
    # Merged by rendered value: an enum member and its plain string (from a plug-in) hash apart but are one series.
    merged: dict[tuple[str, ...], float] = {}
    for labels, value in samples.items():
        key = tuple(map(str, labels))
        merged[key] = merged.get(key, 0) + value
    for labels, value in sorted(merged.items()):
        yield f"{PREFIX}{name}{_labels(zip(label_names, labels, strict=True))} {_number(value)}\n"


def _histogram(name: str, help_text: str, label_name: str, series: Mapping[str, Histogram]) -> Iterator[str]:
    yield from _header(name, "histogram", help_text)
    bounds = [*map(_number, DURATION_BUCKETS), "+Inf"]
    for label, histogram in sorted(series.items()):
        cumulative = 0
        for bound, count in zip(bounds, histogram.counts, strict=True):
            cumulative += count
            yield f"{PREFIX}{name}_bucket{_labels([(label_name, label), ('le', bound)])} {cumulative}\n"
        yield f"{PREFIX}{name}_sum{_labels([(label_name, label)])} {_number(histogram.total)}\n"
        yield f"{PREFIX}{name}_count{_labels([(label_name, label)])} {cumulative}\n"


def _sum_count(name: str, help_text: str, label_name: str, spent_ms: Mapping[str, list[float]]) -> Iterator[str]:
    """A summary without quantiles: enough for rate(_sum) / rate(_count), at two additions per observation."""
    yield from _header(name, "summary", help_text)
    for label, (total_ms, runs) in sorted(spent_ms.items()):
        yield f"{PREFIX}{name}_sum{_labels([(label_name, label)])} {_number(total_ms / 1000)}\n"
        yield f"{PREFIX}{name}_count{_labels([(label_name, label)])} {_number(int(runs))}\n"


def _header(name: str, kind: str, help_text: str) -> Iterator[str]:
    yield f"# HELP {PREFIX}{name} {help_text}\n"
    yield f"# TYPE {PREFIX}{name} {kind}\n"


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    text = ",".join(f'{name}="{escape_label_value(value)}"' for name, value in pairs)
    return "{" + text + "}" if text else ""  # a series without labels is written bare


def escape_label_value(value: str) -> str:
    """Backslash, double quote and line feed escaped, as the text format requires (backslash first)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else repr(float(value))
