"""JSON Schema `format` checks that jsonschema skips when an optional package is missing.

jsonschema asserts `uri` only with `rfc3987` installed, `date-time` only with `rfc3339-validator`, `hostname` only
with `fqdn`, `duration` only with `isoduration`...; without them any string passes, silently. These fallbacks
follow the RFCs' grammar closely enough to reject what is plainly not the format ("yesterday" as a date-time,
"not a uri" as a uri), and are used only where jsonschema has no checker of its own.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from jsonschema import FormatChecker

_EXCLUDED = r"\s<>\"{}|\\^`"  # characters RFC 3986 never allows unescaped
_URI = re.compile(rf"^[A-Za-z][A-Za-z0-9+.\-]*:[^{_EXCLUDED}]*$")
_URI_REFERENCE = re.compile(rf"^[^{_EXCLUDED}]*$")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})$")
_TIME = re.compile(r"^(\d{2}):(\d{2}):(\d{2})(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})$")
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_DURATION = re.compile(r"^P(?!$)(?:\d+Y)?(?:\d+M)?(?:\d+W)?(?:\d+D)?(?:T(?=\d)(?:\d+H)?(?:\d+M)?(?:\d+(?:\.\d+)?S)?)?$")
_JSON_POINTER = re.compile(r"^(?:/(?:[^~/]|~[01])*)*$")


def _strings(check: Callable[[str], bool]) -> Callable[[Any], bool]:
    """Formats apply to strings only: any other type passes (the `type` keyword judges it)."""
    return lambda instance: not isinstance(instance, str) or check(instance)


# `uri` and `uri-reference` take internationalized forms too (`https://bücher.example/`, `/wiki/Café`): a client
# IDNA- and percent-encodes them before sending, and the validators tools are written with (Pydantic's URL types,
# which a `format: uri` schema often comes from) accept them. A strict RFC 3986 reading reported them as malformed.
def _uri(value: str) -> bool:
    return bool(_URI.match(value)) and not _BAD_ESCAPE.search(value)


def _uri_reference(value: str) -> bool:
    return bool(_URI_REFERENCE.match(value)) and not _BAD_ESCAPE.search(value)


def _date_time(value: str) -> bool:
    if not _DATE_TIME.match(value):
        return False
    text = value.replace("z", "Z").replace("t", "T")
    if text[17:19] == "60":  # a leap second (RFC 3339 allows it; datetime does not): its date must still be real
        text = text[:17] + "59" + text[19:]
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def _time(value: str) -> bool:
    match = _TIME.match(value)
    return bool(match) and int(match.group(1)) < 24 and int(match.group(2)) < 60 and int(match.group(3)) < 61


def _hostname(value: str) -> bool:
    name = value[:-1] if value.endswith(".") else value
    return 0 < len(name) <= 253 and all(_LABEL.match(label) for label in name.split("."))


FALLBACKS: dict[str, Callable[[str], bool]] = {
    "uri": _uri, "iri": _uri, "uri-reference": _uri_reference, "iri-reference": _uri_reference,
    "date-time": _date_time, "time": _time, "hostname": _hostname,
    "duration": lambda v: bool(_DURATION.match(v)), "json-pointer": lambda v: bool(_JSON_POINTER.match(v)),
}


def with_fallback_formats(base: FormatChecker) -> FormatChecker:
    """A copy of `base` that also checks the FALLBACKS formats `base` has no checker for."""
    checker = FormatChecker(formats=())
    checker.checkers = dict(base.checkers)
    for name, check in FALLBACKS.items():
        if name not in checker.checkers:
            checker.checks(name)(_strings(check))
    return checker
