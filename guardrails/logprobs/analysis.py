"""From an exchange's logprob sources to signals per segment, tool name and tool argument."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import NamedTuple

import numpy as np

from guardrails.exchange import Exchange, LogprobSource, Phase, Segment, SegmentKind
from guardrails.logprobs.align import Unit, align
from guardrails.logprobs.records import records
from guardrails.logprobs.signals import UnitSignals, token_signals, unit_bounds, unit_signals, weighted_logprobs
from guardrails.logprobs.tokens import (
    TokenStream,
    join_completions,
    read_chat,
    read_completions,
    read_gemini,
    read_source,
)
from guardrails.model_stats import Moments

GENERATED = (SegmentKind.REASONING, SegmentKind.ASSISTANT, SegmentKind.TOOL_CALL)
_CHOICE = re.compile(r"/(?:choices|candidates)/(\d+)/")  # OpenAI choices, Gemini candidates


def moments(values: np.ndarray) -> Moments:
    """Moments of some logprobs, mergeable into a model's running statistics."""
    if values.size == 0:
        return Moments()
    # values.mean() and ((values - mean) ** 2).sum(), without their Python wrappers: the same sums.
    mean = float(np.add.reduce(values)) / values.size
    deviations = values - mean
    return Moments(int(values.size), mean, float(np.add.reduce(np.multiply(deviations, deviations, out=deviations))))


@dataclass(frozen=True, slots=True)
class Aligned:
    """One token stream and the units found in it."""

    stream: TokenStream
    units: list[Unit]
    origin: str  # "response", "prompt" or "pulled"


class UnitReport(NamedTuple):  # a tuple: one per unit, hundreds per check, built by `records`
    unit: Unit
    signals: UnitSignals
    origin: str


@dataclass(frozen=True, slots=True)
class Analysis:
    reports: list[UnitReport]
    # Weighted logprobs of the tokens that counted, for the model's running statistics: the relative token
    # threshold derived from them is compared with weighted logprobs.
    tokens: Moments
    unresolved_ids: int  # "token_id:N" tokens we could not turn into text


def generated_segments(exchange: Exchange, choice: int | None = None) -> list[Segment]:
    """The response's model-written segments, in generation order; one choice when several exist."""
    segments = [s for s in exchange.segments if s.phase is Phase.RESPONSE and s.kind in GENERATED]
    if choice is None:
        return segments
    return [s for s in segments if _choice_of(s.pointer) == choice]


def _choice_of(pointer: str) -> int:
    match = _CHOICE.search(pointer)
    return int(match.group(1)) if match else 0


def streams(exchange: Exchange, id_text: Mapping[int, str] | None = None, *, prompt: bool = True
            ) -> list[tuple[TokenStream, str, int]]:
    """(stream, origin, choice) per generation: a stream's per-chunk sources are joined in order. `prompt`:
    whether to read prompt logprobs too (a long prompt's are the largest source)."""
    out: list[tuple[TokenStream, str, int]] = []
    chat_parts: dict[int, list[LogprobSource]] = {}
    completion_parts: dict[int, list[LogprobSource]] = {}
    gemini_parts: dict[int, list[LogprobSource]] = {}
    for source in exchange.logprobs:
        if source.shape in ("chat", "responses"):
            chat_parts.setdefault(source.choice, []).append(source)
        elif source.shape == "completions":
            completion_parts.setdefault(source.choice, []).append(source)
        elif source.shape == "gemini":
            gemini_parts.setdefault(source.choice, []).append(source)
        elif source.shape == "prompt" and prompt:
            out.append((read_source("prompt", source.data), "prompt", source.choice))
    for choice, parts in completion_parts.items():  # a stream: one source per chunk, joined as one generation
        out.append((read_completions(join_completions([p.data for p in parts])), "response", choice))
    for choice, parts in chat_parts.items():
        out.append((read_chat([p.data for p in parts], id_text), "response", choice))
    for choice, parts in gemini_parts.items():  # a candidate's logprobsResult, one per streamed chunk
        out.append((read_gemini([p.data for p in parts]), "response", choice))
    return out


def align_exchange(exchange: Exchange, id_text: Mapping[int, str] | None = None, *, prompt: bool = True
                   ) -> list[Aligned]:
    """Every stream aligned to its segments; `prompt=False` leaves prompt logprobs unread."""
    found = streams(exchange, id_text, prompt=prompt)
    choices = {choice for _, origin, choice in found if origin == "response"}
    aligned = []
    for stream, origin, choice in found:
        if origin == "prompt":
            segments = [s for s in exchange.segments if s.phase is Phase.REQUEST]
        else:
            segments = generated_segments(exchange, choice if len(choices) > 1 else None)
        aligned.append(Aligned(stream, align(stream, segments), origin))
    return aligned


def analyze(aligned: Sequence[Aligned], constrained: bool, token_threshold: float) -> Analysis:
    """Signals of every unit of every stream. `token_threshold` marks a weighted token logprob as low."""
    reports: list[UnitReport] = []
    counted: list[np.ndarray] = []
    unresolved = 0
    for item in aligned:
        unresolved += item.stream.unresolved_ids
        if not item.units:
            continue
        # Prompt logprobs score what the model read, not what it decided: never constrained.
        ts = token_signals(item.stream, constrained and item.origin != "prompt")
        bounds = unit_bounds(item.units)
        signals = unit_signals(item.stream, ts, item.units, token_threshold, bounds)
        reports += records(UnitReport, item.units, signals, repeat(item.origin, len(signals)))
        if item.origin != "prompt":
            counted.append(weighted_logprobs(ts, ts.used & _covered(len(item.stream), bounds)))
    batch = moments(np.concatenate(counted)) if counted else Moments()
    return Analysis(reports, batch, unresolved)


def _covered(n: int, bounds: np.ndarray) -> np.ndarray:
    """Tokens inside at least one unit (markup between segments is not the model's answer)."""
    starts = np.bincount(bounds[:, 0], minlength=n + 1)
    ends = np.bincount(bounds[:, 1], minlength=n + 1)
    return np.cumsum(starts - ends)[:n] > 0
