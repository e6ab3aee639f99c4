"""Token logprobs: read every source shape, align tokens to segments and tool arguments, compute signals.

See docs/logprobs.md. Nothing here does I/O except `pull`, which asks a vLLM server for missing logprobs.
"""

from guardrails.logprobs.align import Unit, align
from guardrails.logprobs.analysis import Aligned, Analysis, UnitReport, align_exchange, analyze
from guardrails.logprobs.signals import UnitSignals
from guardrails.logprobs.tokens import TokenStream, read_source
from guardrails.logprobs.weights import token_weight

__all__ = [
    "Aligned",
    "Analysis",
    "TokenStream",
    "Unit",
    "UnitReport",
    "UnitSignals",
    "align",
    "align_exchange",
    "analyze",
    "read_source",
    "token_weight",
]
