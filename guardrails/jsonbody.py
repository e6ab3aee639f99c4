"""A check body's JSON, read the same way by the HTTP API and `guardrails check`."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import orjson

from guardrails.errors import InvalidJSON

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # json.loads joins escaped pairs: what is left is alone
# The integers orjson reads as integers; it reads larger ones as floats (and refuses those past a double's range).
_INT_RANGE = (-(2**63), 2**64 - 1)


def loads_body(raw: bytes) -> Any:
    """`raw` as JSON, or `InvalidJSON`. orjson is the fast path. What it refuses but Python's `json` (and so
    vLLM, LiteLLM's proxy, the SDKs and a gateway hook's `json.dumps`) reads is JSON to the callers too: an escaped
    lone surrogate (`"\\ud800"`: half an emoji cut by truncation), `NaN`/`Infinity`/`-Infinity`, a number past a
    double's range. Refusing it let a fail-open gateway pass such a step unchecked; it is read instead, as
    `orjson_compatible` gives it."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        error = exc
    try:
        text = raw.decode("utf-8")  # UTF-8 only: Python's json would also guess UTF-16/32 from bytes
    except UnicodeDecodeError as bad:
        # orjson reports any byte that is not UTF-8 as "surrogates not allowed" at char 0: say where it is.
        raise InvalidJSON(f"the body is not valid UTF-8 at byte {bad.start} (0x{raw[bad.start:bad.end].hex()}): "
                          "JSON is sent as UTF-8") from None
    try:
        return orjson_compatible(json.loads(text))
    except (ValueError, RecursionError):  # orjson's message: it names the first problem, as before
        raise InvalidJSON(f"body is not valid JSON: {error}") from None


def orjson_compatible(value: Any) -> Any:
    """`value` (from Python's `json`) as orjson would have read it, had it taken it: a lone surrogate becomes
    U+FFFD (one code point for one: finding offsets still count the caller's string), a non-finite number null
    (as the middleware's strict copy has it), an integer past 64 bits a float (null past a double's range).
    Downstream, encoders refuse the originals (orjson, UTF-8, the audit record's hash)."""
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if _INT_RANGE[0] <= value <= _INT_RANGE[1]:
            return value
        try:
            return float(value)
        except OverflowError:
            return None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        return [orjson_compatible(item) for item in value]
    if isinstance(value, dict):
        return {orjson_compatible(key): orjson_compatible(item) for key, item in value.items()}
    return value
