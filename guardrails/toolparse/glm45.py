"""GLM-4.5/4.6/4.7: `<tool_call>NAME\n<arg_key>KEY</arg_key>\n<arg_value>value</arg_value>\n</tool_call>`."""

from __future__ import annotations

import re

from guardrails.toolparse.base import RecoveredCall, Schemas, ToolParser, register
from guardrails.toolparse.blocks import tagged_blocks
from guardrails.toolparse.schema import coerce, parameter_schema, tool_properties

_NAME = re.compile(r"\s*([A-Za-z_][\w.\-]*)\s*(?=<arg_key>|</tool_call>|$)")
_LAST_NAME = re.compile(r"([A-Za-z_][\w.\-]*+)\s*+$")  # possessive: no backtracking in prose
_KEY = re.compile(r"<arg_key>(.*?)</arg_key>\s*(?:<arg_value>)?", re.S)
_VALUE_END = re.compile(r"</arg_value>|<arg_key>")


@register
class GLM45Parser(ToolParser):
    family = "glm45"
    markers = ("<arg_key>",)

    def parse(self, text: str, schemas: Schemas | None = None) -> list[RecoveredCall]:
        calls = []
        for block in tagged_blocks(text, "<tool_call>", "</tool_call>"):
            if block.opened:
                name = _NAME.match(text, block.body, block.body_end)
            else:  # no start tag: the name is the word just before the first <arg_key>
                first_key = text.find("<arg_key>", block.body, block.body_end)
                window = max(block.body, first_key - 200)
                name = _LAST_NAME.search(text, window, first_key) if first_key >= 0 else None
            if name is None:
                continue
            start = block.start if block.opened else name.start(1)
            calls.append(self._call(text, start, name, block.body_end, block.end if block.closed else None,
                                    schemas))
        return calls

    def _call(self, text: str, start: int, name: re.Match[str], body_end: int, closed_end: int | None,
              schemas: Schemas | None) -> RecoveredCall:
        tool = name.group(1)
        arguments: dict[str, object] = {}
        repairs: set[str] = set()
        properties = tool_properties(schemas, tool)
        args_end = name.end()
        for key in _KEY.finditer(text, name.end(), body_end):
            if key.start() < args_end:
                continue
            stop = _VALUE_END.search(text, key.end(), body_end)
            value_end = stop.start() if stop else body_end
            value = text[key.end():value_end]
            if stop is None or stop.group() != "</arg_value>":
                repairs.add("unclosed")
                value = value.rstrip()
                args_end = value_end
            else:
                args_end = stop.end()
            param = key.group(1).strip()
            arguments[param] = coerce(value, parameter_schema(properties, param), repairs)
        if closed_end is None and body_end >= len(text.rstrip()):
            repairs.add("truncated")
        end = closed_end if closed_end is not None else args_end
        return RecoveredCall(
            family=self.family, name=tool, arguments=arguments, arguments_parsed=True, span=(start, end),
            name_span=name.span(1), arguments_span=(name.end(), args_end), block=(start, end),
            repairs=tuple(sorted(repairs)),
        )
