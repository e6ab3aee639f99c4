"""FunctionGemma: `<start_function_call>call:NAME{key:<escape>text<escape>,...}<end_function_call>`."""

from __future__ import annotations

from guardrails.toolparse.base import BoundedParser, Budget, RecoveredCall, Schemas, register
from guardrails.toolparse.gemma4 import call_syntax


@register
class FunctionGemmaParser(BoundedParser):
    family = "functiongemma"
    markers = ("<start_function_call>", "<end_function_call>")

    def read(self, text: str, schemas: Schemas | None, budget: Budget) -> list[RecoveredCall]:
        return call_syntax(self.family, text, "<start_function_call>", "<end_function_call>", "<escape>", budget)
