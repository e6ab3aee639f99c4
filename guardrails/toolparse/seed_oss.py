"""ByteDance Seed-OSS:
`<seed:tool_call>\n<function=NAME>\n<parameter=KEY>value</parameter>\n</function>\n</seed:tool_call>`."""

from __future__ import annotations

from guardrails.toolparse.base import RecoveredCall, Schemas, ToolParser, register
from guardrails.toolparse.xmlcalls import function_calls


@register
class SeedOSSParser(ToolParser):
    family = "seed_oss"
    # Its calls are the `<function=` calls with a seed wrapper, so only the wrapper wakes it.
    markers = ("<seed:tool_call>", "</seed:tool_call>")

    def parse(self, text: str, schemas: Schemas | None = None) -> list[RecoveredCall]:
        return function_calls(self.family, text, schemas, seed_wrapped=True)
