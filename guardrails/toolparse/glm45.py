"""GLM-4.5/4.6/4.7: `<tool_call>NAME\n<arg_key>KEY</arg_key>\n<arg_value>value</arg_value>\n</tool_call>`."""

from __future__ import annotations

import re

from guardrails.toolparse.base import BoundedParser, Budget, RecoveredCall, Schemas, new_call, register
from guardrails.toolparse.blocks import rskip_space, tagged_blocks
from guardrails.toolparse.schema import coerce, tool_properties

_NAME = re.compile(r"\s*([A-Za-z_][\w.\-]*)\s*(?=<arg_key>|</tool_call>|$)")
_LAST_NAME = re.compile(r"([A-Za-z_][\w.\-]*+)\s*+$")  # possessive: no backtracking in prose
# A key and its value, which runs to the first `</arg_value>` (then group 3: the value is closed) or `<arg_key>`:
# one match per argument (the runs between `<` are possessive, so a long value is one scan).
_ARGUMENT = re.compile(r"<arg_key>(.*?)</arg_key>\s*(?:<arg_value>)?([^<]*+(?:<(?!/arg_value>|arg_key>)[^<]*+)*+)"
                       r"(</arg_value>)?", re.S)


@register
class GLM45Parser(BoundedParser):
    family = "glm45"
    markers = ("<arg_key>",)

    def read(self, text: str, schemas: Schemas | None, budget: Budget) -> list[RecoveredCall]:
        calls = []
        for block_start, body, body_end, block_end, opened, closed in tagged_blocks(text, "<tool_call>",
                                                                                    "</tool_call>",
                                                                                    limit=budget.left + 1):
            if not budget.take(block_start):
                break
            if opened:
                name = _NAME.match(text, body, body_end)
            else:  # no start tag: the name is the word just before the first <arg_key>
                first_key = text.find("<arg_key>", body, body_end)
                window = max(body, first_key - 200)
                name = _LAST_NAME.search(text, window, first_key) if first_key >= 0 else None
            if name is None:
                continue
            start = block_start if opened else name.start(1)
            calls.append(self._call(text, start, name, body_end, block_end if closed else None, schemas))
        return calls

    def _call(self, text: str, start: int, name: re.Match[str], body_end: int, closed_end: int | None,
              schemas: Schemas | None) -> RecoveredCall:
        tool = name.group(1)
        arguments: dict[str, object] = {}
        repairs: set[str] = set()
        properties = tool_properties(schemas, tool)
        args_end = name.end()
        for argument in _ARGUMENT.finditer(text, args_end, body_end):
            param, value, close = argument.groups()
            args_end = argument.end()
            if close is None:
                value = value.rstrip()
                repairs.add("unclosed")
            param = param.strip()
            arguments[param] = coerce(value, properties, param, repairs)
        if closed_end is None and body_end >= rskip_space(text, len(text)):
            repairs.add("truncated")
        end = closed_end if closed_end is not None else args_end
        span = (start, end)
        return new_call((self.family, tool, arguments, True, span, name.span(1), (name.end(), args_end), span, None,
                         tuple(sorted(repairs)) if repairs else ()))
