"""Type the text values of XML-style calls from the declared JSON Schema (as vLLM's XML parsers do).

Undeclared tools and parameters keep their text. Object and array values get the tolerant reader.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from guardrails.toolparse.base import Schemas
from guardrails.toolparse.lenient import read_value

_INTEGER = re.compile(r"-?\d+")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")


def tool_properties(schemas: Schemas | None, tool: str) -> Mapping[str, Any] | None:
    """The declared `properties` of `tool` (looked up once per call, not once per parameter)."""
    schema = schemas.get(tool) if schemas else None
    # Here and per parameter, a dict is checked first: isinstance against the Mapping ABC costs several times more.
    if type(schema) is not dict and not isinstance(schema, Mapping):
        return None
    properties = schema.get("properties")
    return properties if type(properties) is dict or isinstance(properties, Mapping) else None


def coerce(text: str, properties: Mapping[str, Any] | None, parameter: str, repairs: set[str]) -> Any:
    """The value `text` stands for under the declared schema of `parameter` (in the tool's `properties`); the
    text itself when the schema says string or nothing."""
    if properties is None:
        return text
    schema = properties.get(parameter)
    if type(schema) is not dict and not isinstance(schema, Mapping):
        return text
    raw = schema.get("type")
    value = text.strip()
    if len(value) == 4 and value.lower() == "null":
        return None
    if type(raw) is str and raw == "string":  # the common case, before the general one below
        return text
    types = [raw] if isinstance(raw, str) else list(raw) if isinstance(raw, list) else []
    if "string" in types:
        return text
    if "integer" in types and _INTEGER.fullmatch(value):
        return int(value)
    if "number" in types and _NUMBER.fullmatch(value):
        return float(value) if any(c in value for c in ".eE") else int(value)
    if "boolean" in types and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if ("object" in types or "array" in types) and value[:1] in "{[":
        read = read_value(value, 0)
        if read is not None and read[1] == len(value):
            repairs.update(read[2])
            return read[0]
    return text
