"""FunctionGemma: `<start_function_call>call:NAME{key:<escape>text<escape>,...}<end_function_call>`."""

from __future__ import annotations

from guardrails.toolparse.base import RecoveredCall, Schemas, ToolParser, register
from guardrails.toolparse.gemma4 import call_syntax


@register
class FunctionGemmaParser(ToolParser):
    family = "functiongemma"
    markers = ("<start_function_call>", "<end_function_call>")

    def parse(self, text: str, schemas: Schemas | None = None) -> list[RecoveredCall]:
        return call_syntax(self.family, text, "<start_function_call>", "<end_function_call>", "<escape>")
