"""What a declared JSON Schema may not make `tool_schema`'s validator do: fetch a `$ref` from the network, or spend
exponential time on a `pattern`.

Tool schemas come with each request (and from remote MCP servers' tool lists), so they are the caller's input. Left
to its defaults, jsonschema fetches any `$ref` it cannot resolve locally (`http://169.254.169.254/...`: a request
from this service, blocking the check, whose answer became the schema), and evaluates `pattern` with Python's
backtracking `re`, where `^(a+)+$` against 40 characters runs for minutes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from re import _constants as sre  # the parsed form of a pattern: the only way to see its nesting
from re import _parser as sre_parse
from typing import Any

from jsonschema_specifications import REGISTRY

# The JSON Schema meta-schemas and nothing else: a `$ref` to anything else is unresolvable, never fetched.
OFFLINE_REGISTRY = REGISTRY
# Values that hold data, not subschemas: a `pattern` key inside them is not the keyword.
DATA_KEYWORDS = frozenset({"enum", "const", "default", "examples"})
_REPEATS = (sre.MAX_REPEAT, sre.MIN_REPEAT)


class SlowPattern(Exception):
    """A `patternProperties` key that can take exponential time: every key of an object is matched against it."""


def without_slow_patterns(schema: Any) -> Any:
    """The schema without the `pattern` keywords that can take exponential time (they are not checked: the
    caller's constraint, not a model's error). Raises SlowPattern where such a pattern is a `patternProperties`
    key, which also decides which keys are additional: that schema cannot be used at all."""
    if isinstance(schema, list):
        return [without_slow_patterns(item) for item in schema]
    if not isinstance(schema, Mapping):
        return schema
    out = {}
    for key, value in schema.items():
        if key == "pattern" and isinstance(value, str) and slow_pattern(value):
            continue
        if key == "patternProperties" and isinstance(value, Mapping) and any(map(slow_pattern, value)):
            raise SlowPattern(key)
        out[key] = value if key in DATA_KEYWORDS else without_slow_patterns(value)
    return out


@lru_cache(maxsize=1024)
def slow_pattern(pattern: Any) -> bool:
    """A repeated group that itself holds a repeat (`(a+)+`, `(\\w+\\s?)*`, `(a{1,3})+`): on a near-match, a
    backtracking engine tries every way of splitting the text between the two. (Some such patterns are safe,
    `(-[a-z]+)*` among them; telling them apart is not worth the risk.)"""
    if not isinstance(pattern, str):
        return False
    try:
        return _nested_repeat(sre_parse.parse(pattern), inside=False)
    except re.error:
        return False  # not a pattern at all: the schema is refused as invalid
    except RecursionError:
        return True


def _nested_repeat(items: Any, inside: bool) -> bool:
    """Whether a repeat of more than one item sits in a repeat without an upper bound (`inside`)."""
    for op, arg in items:
        if op in _REPEATS:
            _, high, sub = arg
            if inside and high > 1:
                return True
            children, child_inside = [sub], inside or high == sre.MAXREPEAT
        else:
            children, child_inside = _parts(op, arg), inside
        if any(_nested_repeat(child, child_inside) for child in children):
            return True
    return False


def _parts(op: Any, arg: Any) -> list[Any]:
    """The sub-patterns of a group, an alternation, a lookaround or a conditional."""
    if op is sre.SUBPATTERN:
        return [arg[3]]
    if op is sre.BRANCH:
        return list(arg[1])
    if op in (sre.ASSERT, sre.ASSERT_NOT):
        return [arg[1]]
    if op is sre.GROUPREF_EXISTS:
        return [branch for branch in arg[1:] if branch is not None]
    return []  # (atomic groups and possessive repeats never backtrack into themselves)
