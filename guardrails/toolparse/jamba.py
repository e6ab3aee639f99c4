"""AI21 Jamba: `<tool_calls>[{"name": ..., "arguments": {...}}]</tool_calls>`."""

from __future__ import annotations

from guardrails.toolparse.base import RecoveredCall, Schemas, ToolParser, register
from guardrails.toolparse.blocks import tagged_blocks
from guardrails.toolparse.jsoncalls import call_array, with_block


@register
class JambaParser(ToolParser):
    family = "jamba"
    markers = ("<tool_calls>", "</tool_calls>")

    def parse(self, text: str, schemas: Schemas | None = None) -> list[RecoveredCall]:
        calls: list[RecoveredCall] = []
        for block_start, body, body_end, block_end, opened, closed in tagged_blocks(text, "<tool_calls>",
                                                                                    "</tool_calls>"):
            start = body if opened else text.rfind("[{", body, body_end)
            if start < 0:
                continue
            found, after = call_array(self.family, text, start, body_end)
            if found:
                calls += with_block(found, (block_start if opened else start, block_end if closed else after))
        return calls
