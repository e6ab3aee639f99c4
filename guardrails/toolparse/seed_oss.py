"""ByteDance Seed-OSS:
`<seed:tool_call>\n<function=NAME>\n<parameter=KEY>value</parameter>\n</function>\n</seed:tool_call>`."""

from __future__ import annotations

from guardrails.toolparse.base import BoundedParser, Budget, RecoveredCall, Schemas, register
from guardrails.toolparse.xmlcalls import function_calls


@register
class SeedOSSParser(BoundedParser):
    family = "seed_oss"
    # Its calls are the `<function=` calls with a seed wrapper, so only the wrapper wakes it.
    markers = ("<seed:tool_call>", "</seed:tool_call>")

    def read(self, text: str, schemas: Schemas | None, budget: Budget) -> list[RecoveredCall]:
        return function_calls(self.family, text, schemas, seed_wrapped=True, budget=budget)
