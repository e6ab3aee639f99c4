"""Llama 3.x / 4 JSON: `<|python_tag|>{"name": ..., "parameters": {...}}; {...}`. The tag is optional:
a bare call object (with `parameters` or `arguments`) is a call too, as in vLLM."""

from __future__ import annotations

import re

from guardrails.toolparse.base import BoundedParser, Budget, RecoveredCall, Schemas, by_span, register
from guardrails.toolparse.jsoncalls import bare_call, call_objects, with_block

_TAG = "<|python_tag|>"
# A call's name is a string: an object whose name is anything else reads as no call (nor does it keep a call
# nested in it from being read alone), so it is not tried.
_BARE = re.compile(r"""\{\s*["']name["']\s*:\s*["']""")


@register
class Llama3JsonParser(BoundedParser):
    family = "llama3_json"
    bare = True
    markers = (_TAG, '"name"', "'name'")

    def read(self, text: str, schemas: Schemas | None, budget: Budget) -> list[RecoveredCall]:
        calls: list[RecoveredCall] = []
        covered = 0
        i = text.find(_TAG)
        while i >= 0:
            if not budget.take(i):
                break
            bound = text.find(_TAG, i + len(_TAG))
            found, after = call_objects(self.family, text, i + len(_TAG), bound if bound >= 0 else len(text),
                                        budget=budget)
            calls += with_block(found, (i, after))
            covered = max(covered, after)
            if budget.unread is not None:
                break
            i = bound
        no_calls: set[int] = set()  # nested objects a read found to be no call (see `bare_call`)
        for match in _BARE.finditer(text):
            start = match.start()
            # Every block read so far ends by `covered` (the tagged ones before this loop, the bare ones in
            # it, left to right): no need to test each block in turn.
            if start < covered or start in no_calls:
                continue
            if not budget.take(start):
                break
            call, after, nested = bare_call(self.family, text, start)
            if call is not None:
                calls.append(call)
                covered = after
            no_calls.update(nested)
        if len(calls) > 1:
            calls.sort(key=by_span)
        return calls
