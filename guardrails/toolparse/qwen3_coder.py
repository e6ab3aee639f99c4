"""Qwen3-Coder / Qwen3.5 (`qwen3_coder`, `qwen3_xml`):
`<tool_call>\n<function=NAME>\n<parameter=KEY>\nvalue\n</parameter>\n</function>\n</tool_call>`."""

from __future__ import annotations

from guardrails.toolparse.base import BoundedParser, Budget, RecoveredCall, Schemas, register
from guardrails.toolparse.xmlcalls import function_calls


@register
class Qwen3CoderParser(BoundedParser):
    family = "qwen3_coder"
    markers = ("<function=",)

    def read(self, text: str, schemas: Schemas | None, budget: Budget) -> list[RecoveredCall]:
        return function_calls(self.family, text, schemas, seed_wrapped=False, budget=budget)
