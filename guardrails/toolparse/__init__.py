"""Recovery of tool calls from raw model text: one tolerant parser per format family (see
docs/tool-call-recovery.md). `recover(text)` tries every family whose markers occur in the text."""

from __future__ import annotations

from guardrails.toolparse import (  # noqa: F401  (imported to register each family)
    deepseek_v3,
    deepseek_v31,
    functiongemma,
    gemma4,
    glm45,
    granite,
    granite_20b_fc,
    harmony,
    hermes,
    internlm,
    jamba,
    kimi_k2,
    llama3_json,
    llama4_pythonic,
    mistral_prev11,
    mistral_v11,
    phi4_mini_json,
    pythonic,
    qwen3_coder,
    react,
    seed_oss,
    xlam,
)
from guardrails.toolparse.base import PARSERS, RecoveredCall, Schemas, ToolParser, get_parser
from guardrails.toolparse.leaks import CarriedCalls, LeakReading, find_leaks, read_leaks
from guardrails.toolparse.recover import MAX_CALLS, PRECEDENCE, Recovery, might_contain_calls, recover, recover_bounded

__all__ = ["MAX_CALLS", "PARSERS", "PRECEDENCE", "CarriedCalls", "LeakReading", "RecoveredCall", "Recovery", "Schemas",
           "ToolParser", "find_leaks", "get_parser", "might_contain_calls", "read_leaks", "recover", "recover_bounded"]
