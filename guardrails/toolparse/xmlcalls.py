"""Shared reading of `<function=NAME><parameter=KEY>value</parameter>...</function>` (Qwen3-Coder,
Seed-OSS)."""

from __future__ import annotations

import re

from guardrails.toolparse.base import RecoveredCall, Schemas
from guardrails.toolparse.blocks import rskip_space, skip_space
from guardrails.toolparse.schema import coerce, parameter_schema, tool_properties

_FUNCTION = re.compile(r"<function=([^>\n<]*)>?")
_PARAMETER = re.compile(r"<parameter=([^>\n<]*)>?")
_FUNCTION_END = re.compile(r"</function>|<function=|</?tool_call>|</?seed:tool_call>")
_VALUE_END = re.compile(r"</parameter>|<parameter=")
WRAPPERS = (("<tool_call>", "</tool_call>"), ("<seed:tool_call>", "</seed:tool_call>"))


def function_calls(family: str, text: str, schemas: Schemas | None) -> list[tuple[RecoveredCall, str | None]]:
    """Every `<function=...>` call, with the wrapper it sits in ("<tool_call>", "<seed:tool_call>", None)."""
    out = []
    for head in _FUNCTION.finditer(text):
        header_end = head.end()
        stop = _FUNCTION_END.search(text, header_end)
        func_end = stop.start() if stop else len(text)
        closed = stop is not None and stop.group() == "</function>"
        raw_name = head.group(1)
        name = raw_name.strip()
        name_start = head.start(1) + (len(raw_name) - len(raw_name.lstrip()))
        properties = tool_properties(schemas, name)
        arguments: dict[str, object] = {}
        repairs: set[str] = set()
        if text[header_end - 1] != ">":
            repairs.add("unclosed_header")
        args_end = header_end
        for param in _PARAMETER.finditer(text, header_end, func_end):
            if param.start() < args_end:
                continue
            value_stop = _VALUE_END.search(text, param.end(), func_end)
            value_end = value_stop.start() if value_stop else func_end
            value = text[param.end():value_end]
            if value_stop is None or value_stop.group() != "</parameter>":
                repairs.add("unclosed")
                value = value.rstrip()
                args_end = value_end
            else:
                args_end = value_stop.end()
            value = value.removeprefix("\n").removesuffix("\n")
            key = param.group(1).strip()
            arguments[key] = coerce(value, parameter_schema(properties, key), repairs)
        start, end, wrapper = head.start(), func_end + len("</function>") if closed else func_end, None
        for open_, close in WRAPPERS:
            before = rskip_space(text, start)
            if text.endswith(open_, 0, before):
                start, wrapper = before - len(open_), open_
            after = skip_space(text, end)
            if text.startswith(close, after):
                end, wrapper = after + len(close), open_
        if not closed and stop is None:
            repairs.add("truncated")
        call = RecoveredCall(family, name, arguments, True, (start, end), (name_start, name_start + len(name)),
                             (header_end, args_end), (start, end), None, tuple(sorted(repairs)))
        out.append((call, wrapper))
    return out
