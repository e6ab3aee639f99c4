"""Small readers of decoded JSON that every adapter shares: type checks that raise the documented 422 with its
pointer, lenient "this type or None" reads, and the scans sniffs run. One name each; adapters import them from
here, never from one another.

A JSON boolean decodes to a Python bool, which is an int: `integer` and `json_type` rule it out first.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from guardrails.errors import BodyError
from guardrails.pointer import join

MAX_LEAF_DEPTH = 32  # `string_leaves` stops here: a tool result nested deeper is not walked further


def is_mapping(value: Any) -> bool:
    """`isinstance(value, Mapping)`, answered without the ABC machinery (~4x dearer) for the dicts orjson gives."""
    return type(value) is dict or isinstance(value, Mapping)


def has_any(mapping: Mapping[str, Any], keys: tuple[str, ...]) -> bool:
    """`any(key in mapping for key in keys)`, in C for a dict."""
    if type(mapping) is dict:
        return not mapping.keys().isdisjoint(keys)
    return any(key in mapping for key in keys)


def is_one_of(value: Any, choices: frozenset[str]) -> bool:
    """`value in choices` for a value from the body, which may be unhashable (a list would raise TypeError)."""
    return isinstance(value, str) and value in choices


def integer(value: Any) -> int | None:
    """An integer, else None (a boolean is not one, though Python counts it as an int)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def string(value: Any) -> str | None:
    """A string, else None."""
    return value if isinstance(value, str) else None


def expect(value: Any, kind: type | tuple[type, ...], pointer: str, what: str, accepted: str | None = None) -> Any:
    """Type-check one field of the body, raising the documented 422 with its pointer. `accepted` names every
    shape the field takes where the caller read the others first ("a string, an array of content parts or
    null"): the message must not say "must be an array" of a field that a string fills too."""
    if type(value) is dict and kind is Mapping:  # the usual case, without the ABC check
        return value
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise BodyError(f"{what} must be {accepted or _article(names)}, got {json_type(value)}", pointer)
    return value


def obj(value: Any, pointer: str, what: str) -> Mapping[str, Any]:
    """`value` as an object, else the 422 `expect(value, Mapping, ...)` raises (the same message)."""
    if type(value) is dict or isinstance(value, Mapping):  # a dict, as orjson gives, skips the ABC check
        return value
    raise BodyError(f"{what} must be an object, got {json_type(value)}", pointer)


def optional_list(value: Any, pointer: str, what: str, accepted: str = "an array") -> list[Any]:
    """`value` as a list, null as an empty one. `accepted` names every shape the field takes where the caller
    read the others first (a string, an object)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise BodyError(f"{what} must be {accepted}, got {json_type(value)}", pointer)
    return value


def json_type(value: Any) -> str:
    """The JSON type of a decoded value, for "got ..." in a 422: the caller sent JSON, not Python objects."""
    if value is None:
        return "null"
    if isinstance(value, bool):  # before numbers: a bool is an int to Python
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "an array"
    return "an object" if is_mapping(value) else type(value).__name__


def describe_object(chunk: Mapping[str, Any]) -> str:
    """A short account of an object for an error message: the field that names its kind, else its first keys."""
    for key in ("type", "object", "event_type"):
        value = chunk.get(key)
        if isinstance(value, str):
            return f"an object with {key} {value[:60]!r}"
    keys = [str(key)[:30] for key in list(chunk)[:5]]
    if not keys:
        return "an empty object"
    return "an object with keys " + ", ".join(keys) + (", ..." if len(chunk) > 5 else "")


def _article(names: str) -> str:
    mapping = {"dict": "an object", "Mapping": "an object", "list": "an array", "str": "a string", "int": "an integer"}
    return " or ".join(mapping.get(n, n) for n in names.split(" or "))


def string_leaves(value: Any, pointer: str) -> Iterator[tuple[str, str]]:
    """Every string inside a JSON value with its pointer: tool results arrive as arbitrary objects."""
    stack: list[tuple[Any, str, int]] = [(value, pointer, 0)]
    while stack:
        node, ptr, depth = stack.pop()
        if isinstance(node, str):
            yield node, ptr
        elif depth < MAX_LEAF_DEPTH and is_mapping(node):
            stack.extend((v, join(ptr, k), depth + 1) for k, v in reversed(node.items()))
        elif depth < MAX_LEAF_DEPTH and isinstance(node, list):
            stack.extend((v, f"{ptr}/{i}", depth + 1) for i, v in reversed(list(enumerate(node))))


def same_value(one: Any, other: Any) -> bool:
    """Whether two decoded values are equal; nested too deep to compare: not, so both are read (never a 500)."""
    try:
        return bool(one == other)
    except RecursionError:
        return False


# --- sniffs: loops rather than any(<generator>), since every check runs all the sniffs ---------------------------
def any_object_with(items: Any, keys: tuple[str, ...]) -> bool:
    """Whether `items` is an array holding an object with one of `keys` (a tool with `input_schema`...)."""
    if isinstance(items, list):
        for item in items:
            if is_mapping(item) and has_any(item, keys):
                return True
    return False


def any_of_type(items: Any, types: frozenset[str]) -> bool:
    """Whether `items` is an array holding an object whose `type` is one of `types` (a content block...)."""
    if isinstance(items, list):
        for item in items:
            if is_mapping(item) and is_one_of(item.get("type"), types):
                return True
    return False
