"""Reading a payload's JSON the way the upstream and the client SDKs read it, and giving the service bytes it reads.

vLLM (FastAPI/Starlette `request.json()`) and the OpenAI/Anthropic Python SDKs parse JSON with Python's `json`,
which also accepts a UTF-8 BOM, UTF-16/32, `NaN`/`Infinity`/`1e400` and lone surrogate escapes (`"\\ud800"`);
orjson, and so the check service, refuses them. A body that only Python's reader takes still reaches the model
(or the agent), so it must still be checked: the service then gets a strict copy of it.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, NamedTuple

import orjson

_SURROGATE = re.compile("[\ud800-\udfff]")


class Payload(NamedTuple):
    value: Any  # the parsed JSON, as the upstream sees it
    check_bytes: bytes  # what goes into the check body: the original bytes whenever they are strict JSON


def read_payload(raw: bytes) -> Payload | None:
    """The JSON in `raw`, or None when Python's `json` cannot read it either (then the upstream refuses it too)."""
    try:
        return Payload(orjson.loads(raw), raw)  # the usual case: spliced verbatim, never re-serialized
    except orjson.JSONDecodeError:
        pass
    try:
        value = json.loads(raw)
        # Same structure and the same code points (a lone surrogate becomes one U+FFFD, a non-finite number
        # null), so finding pointers and offsets still hold for the bytes that were forwarded.
        strict = json.dumps(_strict(value), ensure_ascii=False, separators=(",", ":")).encode()
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    return Payload(value, strict)


def _strict(value: Any) -> Any:
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        return [_strict(item) for item in value]
    if isinstance(value, dict):
        return {_strict(key): _strict(item) for key, item in value.items()}
    return value


__all__ = ["Payload", "read_payload"]
