"""`low_confidence`: segments and tool arguments the model generated with low token confidence.

Judged against the model's own running distribution of weighted token logprobs (guardrails/model_stats.py)
once enough of its traffic was seen, against the policy's absolute thresholds before that. Learned from final
checks only, each response once (not from `partial` re-checks, nor a retry with the same response id) and with a
capped weight (at most 100 tokens, 4 segments), under the model name the body claims (what that allows:
guardrails/model_stats.py). Token statistics are learned on the scale tokens are judged on (logprob x weight,
guardrails/logprobs/weights.py): a relative token threshold is a weighted logprob, like `token_logprob`.
Logprobs come from the response (any source shape, Gemini's `logprobsResult` included) or, with `pull: true`,
from teacher-forced scoring on a vLLM server. No logprobs means no finding. Tokens forced by constrained
decoding and masked (-9999) tokens do not count. A malformed logprob source is not read: the adapters leave it
unread (guardrails/logprobs/check.py) and it is reported here as a `detector_error` finding at the bad field (the
policy's `on_detector_error` action); the response's other sources are read, and every other detector checks the
response as usual.

Settings (policy `detectors.low_confidence`):
    token_logprob: -2.3       cold start: a token is low under this weighted logprob
    segment_logprob: -1.0     cold start: a segment is low under this weighted mean logprob
    max_low_share: 0.25       a segment with more low tokens than this share is low
    min_tokens: 4             reasoning/content with fewer counted tokens is not judged
    relative: {min_tokens: 500, min_segments: 30, token_z: 2.5, segment_z: 2.0}
    high_risk_tools: []       low-confidence arguments of these tools block
    pull: false               score on vLLM when the response has no logprobs
    pull_mode: auto           auto | chat | completions
    top_k: 5                  alternatives to ask for when pulling
    vllm: {base_url, model, api_key, timeout_s, max_concurrency}   ranges: guardrails/vllm_client.py VLLM_SETTINGS
    max_spans: 5              low spans listed in a finding's evidence
    max_summary_units: 32     units in the per-check signals summary (all segments and names, low arguments)
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property, partial
from typing import Any

from detectors._choices import read_choice
from guardrails.detector import Detector, ScanContext, Scope, Services, SettingError, read_setting
from guardrails.exchange import Exchange, Location, Phase, Segment, SegmentKind, UnreadLogprobs
from guardrails.findings import Action, Category, Finding, Severity
from guardrails.logprobs import Aligned, Analysis, UnitReport, align_exchange, analyze
from guardrails.logprobs.jsonspans import leaves
from guardrails.logprobs.pull import pull_logprobs, resolve_token_ids, token_ids_to_resolve
from guardrails.model_stats import ModelStats, ModelStatsStore, Moments, default_store
from guardrails.vllm_client import VLLMClient, VLLMConfig, VLLMError, shared_client

DEFAULT_RELATIVE = {"min_tokens": 500, "min_segments": 30, "token_z": 2.5, "segment_z": 2.0}
# With no statistics behind them (0 seen) or a threshold at or above the mean (z <= 0), relative thresholds would call
# half of everything low.
RELATIVE_RANGES: dict[str, dict[str, float]] = {"min_tokens": {"minimum": 1}, "min_segments": {"minimum": 1},
                                                "token_z": {"above": 0}, "segment_z": {"above": 0}}
PULL_MODES = ("auto", "chat", "completions")  # see guardrails/logprobs/pull.py


@dataclass(frozen=True, slots=True)
class Thresholds:
    token: float
    segment: float
    relative: bool


class _Shown:
    """A unit that findings and the summary both show: located in the body and summarized once, when asked."""

    def __init__(self, report: UnitReport) -> None:
        self.report = report

    @cached_property
    def location(self) -> Location:
        unit = self.report.unit
        return unit.locate(unit.text_start, unit.text_end)

    @cached_property
    def compact(self) -> dict[str, object]:
        return self.report.signals.compact()


class LowConfidenceDetector(Detector):
    name = "low_confidence"
    category = Category.LOW_CONFIDENCE
    default_scope = Scope(
        kinds=frozenset({SegmentKind.REASONING, SegmentKind.ASSISTANT, SegmentKind.TOOL_CALL}),
        phases=frozenset({Phase.RESPONSE}),
    )

    def __init__(self, settings: Mapping[str, Any] | None = None, services: Services | None = None) -> None:
        super().__init__(settings, services)
        # Logprobs are at most 0: a positive threshold would make every token (or segment) low.
        self.token_logprob = self.setting("token_logprob", float, -2.3, maximum=0)
        self.segment_logprob = self.setting("segment_logprob", float, -1.0, maximum=0)
        self.max_low_share = self.setting("max_low_share", float, 0.25, minimum=0, maximum=1)
        self.min_tokens = self.setting("min_tokens", int, 4, minimum=1)
        self.relative = _relative(self.setting("relative", dict, {}))
        self.high_risk_tools = frozenset(self.setting("high_risk_tools", list, [], items=str))
        self.max_spans = self.setting("max_spans", int, 5, minimum=1)
        self.max_summary_units = self.setting("max_summary_units", int, 32, minimum=1)
        self.pull = self.setting("pull", bool, False)
        self.pull_mode = read_choice(self.settings, "pull_mode", PULL_MODES, "auto")
        self.top_k = self.setting("top_k", int, 5, minimum=1)
        self.client = self._client()
        self.stats: ModelStatsStore = self.services.extra.get("model_stats") or default_store()
        # We wait on vLLM or on a remote statistics store: the engine then runs us concurrently, under our timeout.
        self.io_bound = self.client is not None or self.stats.remote

    def _client(self) -> VLLMClient | None:
        # Checked even when the service hands us its client (a URL the server would call, and maybe a key): a bad
        # value or an unknown key stops the policy, with the setting's path and its range or closest key.
        raw = self.setting("vllm", dict, server_only=True)
        config = VLLMConfig.from_settings(raw, "vllm") if raw is not None else None
        if self.services.vllm is not None:
            return self.services.vllm
        return shared_client(config) if config is not None else None

    async def scan(self, exchange: Exchange, ctx: ScanContext) -> list[Finding]:
        if not exchange.has_response:
            return []
        findings = await self._judge(exchange, ctx)
        if exchange.unread_logprobs:  # reported beside what the response's other sources show
            findings = [*map(self._unread, exchange.unread_logprobs), *findings]
        return findings

    async def _judge(self, exchange: Exchange, ctx: ScanContext) -> list[Finding]:
        model = exchange.generation.model or "unknown"
        try:
            aligned, origin = await self._aligned(exchange)
        except VLLMError as exc:
            ctx.signals[self.name] = {"source": "pull_failed"}
            return [self._error(exc)]
        if not aligned:
            reason = "its logprobs are malformed (not read)" if exchange.unread_logprobs else "no logprobs"
            ctx.signals[self.name] = {"source": "none", "reason": f"the response carries {reason}"}
            return []
        if origin == "pulled":
            model = f"scored:{self.client.config.model if self.client else model}"
        thresholds = self._thresholds(await self.stats.run(partial(self.stats.get, model)))
        analysis = analyze(aligned, exchange.constraints.any, thresholds.token)
        in_scope = {s.index for s in ctx.segments}
        judged = [r for r in analysis.reports if r.origin != "prompt" and r.unit.segment.index in in_scope]
        # Segments, tool names and the arguments with low tokens: the only units that can be findings, and the
        # ones the summary lists (a call can hold hundreds of confident arguments).
        shown = [_Shown(r) for r in judged if r.unit.kind != "argument" or r.signals.low_spans]
        findings = [self._finding(s, thresholds) for s in shown if self._is_low(s.report, thresholds)]
        learned = self._learned(analysis, shown)
        # A partial re-check resends every chunk so far (40 of them outweighed the final answer); a retried check
        # resends the same response: learned from once, at its first final check.
        if (learned is not None and not exchange.partial
                and self.stats.first_count(model, exchange.generation.response_id, exchange.context.tenant or "")):
            await self.stats.run(partial(self.stats.update, model, learned))
        ctx.signals[self.name] = self._summary(model, origin, exchange, thresholds, analysis, judged, shown)
        unaligned = self._unaligned_calls(ctx.segments, judged)
        if unaligned:
            ctx.signals[self.name]["unaligned_calls"] = unaligned
        return findings

    async def _aligned(self, exchange: Exchange) -> tuple[list[Aligned], str]:
        id_text = None
        if self.client is not None and exchange.logprobs:
            ids = token_ids_to_resolve(exchange)
            id_text = await resolve_token_ids(self.client, ids) if ids else None
        aligned = align_exchange(exchange, id_text, prompt=False)  # prompt logprobs are never judged
        if aligned or not self.pull or self.client is None:
            return aligned, "response"
        return [await pull_logprobs(self.client, exchange, top_k=self.top_k, mode=self.pull_mode)], "pulled"

    def _thresholds(self, stats: ModelStats | None) -> Thresholds:
        rel = self.relative
        token, segment, relative = self.token_logprob, self.segment_logprob, False
        if stats is not None and stats.tokens.count >= rel["min_tokens"]:
            token = stats.tokens.mean - rel["token_z"] * max(stats.tokens.std, 0.1)
            relative = True
        if stats is not None and stats.segments.count >= rel["min_segments"]:
            segment = stats.segments.mean - rel["segment_z"] * max(stats.segments.std, 0.05)
            relative = True
        return Thresholds(token, segment, relative)

    def _is_low(self, report: UnitReport, t: Thresholds) -> bool:
        unit, sig = report.unit, report.signals
        if sig.tokens == 0 or sig.weighted_mean is None:
            return False
        if unit.kind != "segment":  # names and values are short: one unsure token is the signal
            return bool(sig.low_spans)
        if unit.segment.tool_call is not None or sig.tokens < self.min_tokens:
            return False  # a call is judged by its name and each argument value
        return sig.weighted_mean < t.segment or (sig.low_share or 0.0) > self.max_low_share

    def _finding(self, shown: _Shown, t: Thresholds) -> Finding:
        unit, sig = shown.report.unit, shown.report.signals
        mean = sig.weighted_mean
        assert mean is not None  # `_is_low` passes only units with counted tokens
        call = unit.segment.tool_call
        if unit.kind == "segment":
            what = f"{unit.segment.kind.value} text"
        else:
            what = f"tool name {call.name!r}" if unit.kind == "tool_name" and call else (
                f"argument {unit.label!r} of tool {call.name!r}" if call else unit.label)
        high_risk = call is not None and call.name in self.high_risk_tools and unit.kind != "segment"
        location = shown.location
        spans = [unit.locate(a, b) for a, b in sig.low_spans[: self.max_spans]]
        return Finding(
            category=self.category,
            detector=self.name,
            severity=Severity.HIGH if high_risk else Severity.MEDIUM,
            message=f"low confidence in {what}: mean logprob {mean:.2f}, min {sig.min:.2f}",
            pointer=location.pointer,
            start=location.start,
            end=location.end,
            score=round(1.0 - math.exp(min(mean, 0.0)), 3),
            evidence={
                "unit": unit.kind if unit.kind != "segment" else unit.segment.kind.value,
                **({"tool": call.name} if call else {}),
                **({"path": list(unit.path)} if unit.path else {}),
                "source": shown.report.origin,
                "signals": shown.compact,
                "thresholds": {"token": round(t.token, 3), "segment": round(t.segment, 3),
                               "relative": t.relative},
                "spans": [{"pointer": s.pointer, "start": s.start, "end": s.end} for s in spans],
            },
            action=Action.BLOCK if high_risk else None,
        )

    def _learned(self, analysis: Analysis, shown: list[_Shown]) -> ModelStats | None:
        """What this check adds to the model's statistics (None: nothing): its tokens' weighted logprobs
        (`analysis.tokens`, the scale `_thresholds` turns into a token threshold) and its judged texts' weighted
        means, weighing at most `MAX_TOKENS_PER_CHECK` tokens and `MAX_SEGMENTS_PER_CHECK` segments."""
        texts = [s.report.signals for s in shown if s.report.unit.kind == "segment"
                 and s.report.unit.segment.tool_call is None]
        means = [sig.weighted_mean for sig in texts if sig.tokens >= self.min_tokens and sig.weighted_mean is not None]
        moments = Moments()
        if means:
            mean = sum(means) / len(means)
            moments = Moments(len(means), mean, sum((v - mean) ** 2 for v in means))
        if not analysis.tokens.count and not moments.count:
            return None
        # One check weighs at most MAX_TOKENS_PER_CHECK tokens: a single long response cannot set the baseline.
        return ModelStats(analysis.tokens, moments).capped()

    def _summary(self, model: str, origin: str, exchange: Exchange, t: Thresholds, analysis: Analysis,
                 judged: list[UnitReport], shown: list[_Shown]) -> dict[str, Any]:
        segments = [s.report.signals for s in shown if s.report.unit.kind == "segment"]  # every one is shown
        forced = sum(sig.forced for sig in segments)
        masked = sum(sig.masked for sig in segments)
        units = []
        # Compact: every segment and tool name, but only the arguments that were low (calls can hold hundreds).
        for s in shown[: self.max_summary_units]:
            unit, location = s.report.unit, s.location
            # An argument is named by its kind only: its path is keys the model wrote (text, which signals never
            # hold: they reach the audit record whatever its content mode); the pointer and offsets locate it.
            label = "argument" if unit.kind == "argument" else unit.label
            entry: dict[str, Any] = {"pointer": location.pointer, "unit": label, **s.compact}
            if unit.kind == "argument" and location.start is not None:
                entry["start"], entry["end"] = location.start, location.end
            units.append(entry)
        summary: dict[str, Any] = {
            "source": origin,
            "model": model,
            "thresholds": {"token": round(t.token, 3), "segment": round(t.segment, 3), "relative": t.relative},
            "units": units,
            # Every judged unit that is not shown is an argument.
            "arguments": len(judged) - sum(1 for s in shown if s.report.unit.kind != "argument"),
        }
        if exchange.constraints.any:
            summary["constrained"] = True
            summary["excluded"] = {"forced": forced, "masked": masked}
        elif masked:
            summary["excluded"] = {"masked": masked}
        if analysis.unresolved_ids:
            summary["unresolved_token_ids"] = analysis.unresolved_ids
        return summary

    def _unaligned_calls(self, segments: Sequence[Segment], judged: list[UnitReport]) -> list[dict[str, Any]]:
        """Response tool calls some of whose argument values have no tokens: said rather than guessed. Gemini
        (and Anthropic) send arguments as an object, so no token text of them is in the body; their values are
        placed only after the call's name was found in the tokens."""
        named = {r.unit.segment.index for r in judged if r.unit.kind == "tool_name"}
        placed = Counter(r.unit.segment.index for r in judged if r.unit.kind == "argument")
        out: list[dict[str, Any]] = []
        for segment in segments:
            call = segment.tool_call
            if call is None or segment.phase is not Phase.RESPONSE:
                continue
            values = len(leaves(call.arguments_raw))
            if placed[segment.index] >= values:
                continue
            unplaceable = call.arguments_is_object and call.name_in_text and segment.index not in named
            out.append({"pointer": call.arguments_pointer, "tool": call.name, "values": values,
                        "aligned": placed[segment.index],
                        "reason": "arguments sent as an object and the call's name is not in the tokens"
                        if unplaceable else "argument values not found in the tokens"})
        return out[: self.max_summary_units]

    def _error(self, exc: VLLMError) -> Finding:
        return Finding(
            category=Category.DETECTOR_ERROR,
            detector=self.name,
            severity=Severity.MEDIUM,
            message=f"could not score the response on vLLM: {exc}",
            pointer="/response",
            evidence={"error": type(exc).__name__},
        )

    def _unread(self, part: UnreadLogprobs) -> Finding:
        """A malformed logprob source the adapters left unread: the response's confidence is judged without it."""
        return Finding(
            category=Category.DETECTOR_ERROR,
            detector=self.name,
            severity=Severity.MEDIUM,
            message=f"logprobs not read: {part.reason}",
            pointer=part.pointer,
            evidence={"error_type": "MalformedLogprobs", "reason": part.reason},
        )


def _relative(raw: Mapping[str, Any]) -> dict[str, float]:
    """`relative:` over its defaults; a key that is not one of them is a typo, not a setting."""
    unknown = sorted(str(key) for key in set(raw) - set(DEFAULT_RELATIVE))
    if unknown:
        raise SettingError(f"setting relative: unknown keys {unknown}; expected {sorted(DEFAULT_RELATIVE)}")
    return {key: read_setting(raw, key, float, default, where="relative.", **RELATIVE_RANGES[key])
            for key, default in DEFAULT_RELATIVE.items()}
