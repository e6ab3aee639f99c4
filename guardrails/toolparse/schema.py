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
    if not isinstance(schema, Mapping):
        return None
    properties = schema.get("properties")
    return properties if isinstance(properties, Mapping) else None


def parameter_schema(properties: Mapping[str, Any] | None, parameter: str) -> Mapping[str, Any] | None:
    found = properties.get(parameter) if properties is not None else None
    return found if isinstance(found, Mapping) else None


def coerce(text: str, schema: Mapping[str, Any] | None, repairs: set[str]) -> Any:
    """The value `text` stands for under `schema`; the text itself when the schema says string or nothing."""
    if schema is None:
        return text
    raw = schema.get("type")
    types = [raw] if isinstance(raw, str) else list(raw) if isinstance(raw, list) else []
    value = text.strip()
    if value.lower() == "null":
        return None
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
