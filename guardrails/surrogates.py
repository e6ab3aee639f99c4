"""Lone surrogates: code points Python strings may hold (a half-decoded `\\ud83d` escape) that no encoder takes.

The HTTP API refuses such JSON with a 400, but a library caller of `CheckService.check` can pass them, and a
detector can produce one while decoding an escape. Encoders (orjson, SQLite, UTF-8) then raise: the answer and
the audit record are repaired here instead of failing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def without_surrogates(value: Any) -> Any:
    """`value` with each surrogate pair joined into one character and each lone surrogate U+FFFD, recursively
    through mappings and sequences (tuples become lists, as JSON has them)."""
    if isinstance(value, str):
        return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    if isinstance(value, Mapping):
        return {without_surrogates(k): without_surrogates(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [without_surrogates(item) for item in value]
    return value
