"""Token usage as both Gemini APIs report it: thought tokens counted apart from the output's."""

from __future__ import annotations

from typing import Any, NamedTuple

from guardrails.adapters.jsonread import integer, is_mapping
from guardrails.exchange import Usage


class GeminiUsageKeys(NamedTuple):
    """Where one API's usage object puts each count."""

    input: str
    output: str
    thought: str
    cached: str
    total: str


GENERATE_CONTENT = GeminiUsageKeys("promptTokenCount", "candidatesTokenCount", "thoughtsTokenCount",
                                   "cachedContentTokenCount", "totalTokenCount")
INTERACTIONS = GeminiUsageKeys("total_input_tokens", "total_output_tokens", "total_thought_tokens",
                               "total_cached_tokens", "total_tokens")


def thought_usage(usage: Any, keys: GeminiUsageKeys) -> Usage:
    """`usage` (anything: only an object is read) with `output_tokens` meaning everything generated, as the other
    adapters report it: Google counts thought tokens apart, so they are added (and kept as `reasoning_tokens`)."""
    u = usage if is_mapping(usage) else {}
    output, thought = integer(u.get(keys.output)), integer(u.get(keys.thought))
    return Usage(
        input_tokens=integer(u.get(keys.input)),
        output_tokens=output + (thought or 0) if output is not None else thought,
        reasoning_tokens=thought,
        cached_tokens=integer(u.get(keys.cached)),
        total_tokens=integer(u.get(keys.total)),
    )
