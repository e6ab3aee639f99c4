"""What a declared JSON Schema may not make `tool_schema`'s validator do: fetch a `$ref` from the network, or spend
unbounded time on a `pattern`.

Tool schemas come with each request (and from remote MCP servers' tool lists), so they are the caller's input. Left
to its defaults, jsonschema fetches any `$ref` it cannot resolve locally (`http://169.254.169.254/...`: a request
from this service, blocking the check, whose answer became the schema), and evaluates `pattern` with Python's
backtracking `re`, where `^(a|aa)+$` against 40 characters runs for minutes and no shape test catches every such
pattern. So `pattern` and `patternProperties` are searched with the `regex` package, which can stop a search: each
search has `SEARCH_TIMEOUT_S`, a whole check `CHECK_BUDGET_S`. A search that did not finish judges nothing: the
value passes that pattern and is listed in `PatternChecks.unchecked`, for the detector to say so.

Patterns a policy sets (tool_policy's `pattern` and `path` rules, pii's custom recognizers and regex allow list) are
the same hazard where an inline config sends them: they are compiled once with `policy_pattern` (refused at load
when they do not compile or compile too large) and searched with `PatternChecks.judge`, under the same limits; the
detector reports a search that did not finish as a finding of its own, never as a pass.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal, TypeVar

import regex
from jsonschema import ValidationError, validators
from jsonschema_specifications import REGISTRY

from guardrails.memo import SizedMemo

# The JSON Schema meta-schemas and nothing else: a `$ref` to anything else is unresolvable, never fetched.
OFFLINE_REGISTRY = REGISTRY
# Values that hold data, not subschemas: a `pattern` key inside them is not the keyword.
DATA_KEYWORDS = frozenset({"enum", "const", "default", "examples"})
# Keywords whose value maps names (not keywords) to subschemas.
SUBSCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas",
                            "dependencies"})

SEARCH_TIMEOUT_S = 0.05  # one pattern against one value (regex checks its clock coarsely: expect up to ~2x)
CHECK_BUDGET_S = 0.25  # all the pattern searches (and compiles) of one check together
# regex lays a counted repeat's body out `min` times when it compiles (`(?:a{1000}){1000}` took 270 MB): a pattern
# is compiled only if that size stays under this (about 250-500 bytes each), and the cache holds a bounded total.
MAX_COMPILED_SIZE = 10_000
CACHE_SIZE = 200_000

Reason = Literal["timeout", "budget", "too_large", "unsupported"]
T = TypeVar("T")
REASONS: dict[str, str] = {
    "timeout": f"the search ran past {SEARCH_TIMEOUT_S * 1000:g} ms (the pattern backtracks on this value)",
    "budget": f"this check's {CHECK_BUDGET_S * 1000:g} ms for pattern searches was spent",
    "too_large": f"the pattern compiles to more than {MAX_COMPILED_SIZE} items",
    "unsupported": "the pattern engine refuses the pattern",
}


@dataclass(frozen=True, slots=True)
class Unchecked:
    """A value (or object key) that a declared pattern did not judge, and why."""
    pattern: str
    text: str
    reason: Reason


@dataclass(eq=False)
class PatternChecks:
    """The pattern searches of one check: each bounded by `timeout`, all of them (compiles included) by `budget`.
    A pair searched again (nested applicators re-validate the same value) is answered from the first search."""
    timeout: float = SEARCH_TIMEOUT_S
    budget: float = CHECK_BUDGET_S
    unchecked: list[Unchecked] = field(default_factory=list)
    _results: dict[tuple[str, str], bool | Reason] = field(default_factory=dict)
    _judged: dict[tuple[regex.Pattern[str], bool, str], bool | Reason] = field(default_factory=dict)

    def matches(self, pattern: str, text: str) -> bool | None:
        """Whether `pattern` finds a match in `text` (`re.search`, as jsonschema reads it); None where that could
        not be judged (recorded in `unchecked`)."""
        key = (pattern, text)
        result = self._results.get(key)
        if result is None:
            result = self._results[key] = self._search(pattern, text)
        if isinstance(result, bool):
            return result
        self.unchecked.append(Unchecked(pattern, text, result))
        return None

    def judge(self, compiled: regex.Pattern[str], text: str, full: bool = False) -> bool | Reason:
        """Whether a pattern compiled by `policy_pattern` finds a match in `text` (`full`: matches all of it), under
        this block's limits; where that could not be judged, why (also recorded in `unchecked`). A caller reports
        the reason: it is never a pass."""
        key = (compiled, full, text)
        result = self._judged.get(key)
        if result is None:
            found = self._run(compiled.fullmatch if full else compiled.search, text)
            result = self._judged[key] = found if isinstance(found, str) else found is not None
        if not isinstance(result, bool):
            self.unchecked.append(Unchecked(compiled.pattern, text, result))
        return result

    def find_all(self, compiled: regex.Pattern[str], text: str) -> list[regex.Match[str]]:
        """Every match of a `policy_pattern` in `text` (`finditer`), under this block's limits; none where the
        search did not finish, which is recorded in `unchecked` for the caller to report."""
        found = self._run(lambda value, timeout: list(compiled.finditer(value, timeout=timeout)), text)
        if isinstance(found, str):
            self.unchecked.append(Unchecked(compiled.pattern, text, found))
            return []
        return found

    def search(self, compiled: regex.Pattern[str], text: str) -> regex.Match[str] | Reason | None:
        """The first match of a `policy_pattern` in `text` (`search`), or None, under this block's limits; where
        the search did not finish, why (also recorded in `unchecked`): the caller reports it, never a pass."""
        found = self._run(compiled.search, text)
        if isinstance(found, str):
            self.unchecked.append(Unchecked(compiled.pattern, text, found))
        return found

    def _run(self, run: Callable[..., T], text: str) -> T | Reason:
        if self.budget <= 0:
            return "budget"
        start = time.perf_counter()
        try:
            return _limited(run, text, self.timeout, self.budget)
        finally:
            self.budget -= time.perf_counter() - start

    def _search(self, pattern: str, text: str) -> bool | Reason:
        if self.budget <= 0:
            return "budget"
        start = time.perf_counter()
        try:
            compiled = compiled_pattern(pattern)
            if isinstance(compiled, str):
                return compiled
            found = _limited(compiled.search, text, self.timeout, self.budget - (time.perf_counter() - start))
            return found if isinstance(found, str) else found is not None
        finally:
            self.budget -= time.perf_counter() - start


def _limited(run: Callable[..., T], text: str, timeout: float, budget: float) -> T | Reason:
    """`run(text)` stopped after `timeout` seconds, or what is left of the check's `budget`."""
    limit = min(timeout, budget)
    try:
        return run(text, timeout=max(limit, 0.0))
    except TimeoutError:
        return "timeout" if limit >= timeout else "budget"


_current_checks: ContextVar[PatternChecks | None] = ContextVar("pattern_checks", default=None)


@contextmanager
def pattern_checks(**limits: float) -> Iterator[PatternChecks]:
    """The searches made by guarded validators in this block share one budget, and their misses are listed."""
    checks = PatternChecks(**limits)
    token = _current_checks.set(checks)
    try:
        yield checks
    finally:
        _current_checks.reset(token)


def current_checks() -> PatternChecks:
    """The block's checks; outside one, a fresh set per keyword (each search still bounded, the total not)."""
    return _current_checks.get() or PatternChecks()


# --- compiling ------------------------------------------------------------------------------------------------------

class _CompiledPatterns:
    """Compiled patterns (or why one is not compiled), least recently used first out, bounded by total size (an
    entry is at most MAX_COMPILED_SIZE, far below it: each is kept with the others); locked, as a check may run
    in any thread."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._memo: SizedMemo[str, regex.Pattern[str] | Reason] = SizedMemo(
            None, capacity, max_entry_bytes=capacity, lru=True)
        self._lock = threading.Lock()

    def get(self, pattern: str) -> regex.Pattern[str] | Reason | None:
        with self._lock:
            return self._memo.get(pattern)

    def put(self, pattern: str, compiled: regex.Pattern[str] | Reason, size: int) -> None:
        with self._lock:
            if pattern not in self._memo.entries:  # (another thread's compile of it came first: keep that one)
                self._memo.put(pattern, compiled, size)


_compiled = _CompiledPatterns(CACHE_SIZE)


def compiled_pattern(pattern: str) -> regex.Pattern[str] | Reason:
    """The pattern compiled by `regex` (Python `re`'s syntax and meaning: its VERSION0), or why it is not."""
    cached = _compiled.get(pattern)
    if cached is not None:
        return cached
    size = compiled_size(pattern)
    compiled: regex.Pattern[str] | Reason
    if size > MAX_COMPILED_SIZE:
        compiled, size = "too_large", 1
    else:
        try:
            compiled = regex.compile(pattern)
        except (regex.error, ValueError, TypeError, OverflowError, RecursionError):
            compiled, size = "unsupported", 1  # (`re` accepted it: jsonschema checked the schema first)
    _compiled.put(pattern, compiled, max(size, 1))
    return compiled


def policy_pattern(pattern: str, flags: int = 0) -> regex.Pattern[str]:
    """A pattern from a policy setting, compiled by `regex` (Python `re`'s syntax) for `PatternChecks.judge`;
    `ValueError` when it does not compile, or would compile to more than MAX_COMPILED_SIZE items."""
    size = compiled_size(pattern)
    if size > MAX_COMPILED_SIZE:
        raise ValueError(f"pattern {_shown(pattern)} compiles to more than {MAX_COMPILED_SIZE} items ({size}): "
                         "write its counted repeats smaller")
    try:
        return regex.compile(pattern, flags)
    except (regex.error, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise ValueError(f"pattern {_shown(pattern)} does not compile: {exc}") from None


def _shown(pattern: str) -> str:
    return repr(pattern if len(pattern) <= 80 else pattern[:77] + "...")


_COUNT = re.compile(r"\{(\d*)(?:,\d*)?\}")
_BRACED_ESCAPE = re.compile(r"\\[NpPx]\{[^}]*\}")


def compiled_size(pattern: str) -> int:
    """An upper bound on the items regex compiles `pattern` to: each character, class or escape counts once, times
    the minimum count of every counted repeat around it (`x{3}` is 3, `(ab){2,5}` 4, `a{0,9}` 1). Read from the
    text, not a parse tree: it may count a flag or a name as items, never fewer than there are."""
    frames = [[0, 0]]  # per open group: [its size so far, the size of its last item]
    i, length = 0, len(pattern)
    while i < length:
        char, frame, item = pattern[i], frames[-1], 1
        if char == "\\":
            braced = _BRACED_ESCAPE.match(pattern, i)
            i = braced.end() if braced else i + 2
        elif char == "[":
            i = _class_end(pattern, i)
        elif pattern.startswith("(?#", i):
            end = pattern.find(")", i)
            i, item = (length if end < 0 else end + 1), 0
        elif char == "(":
            frames.append([0, 0])
            i += 1
            continue
        elif char == ")" and len(frames) > 1:
            item = max(frames.pop()[0], 1)
            frame = frames[-1]
            i += 1
        elif char == "{" and (count := _COUNT.match(pattern, i)) and frame[1]:
            factor = max(int(count[1] or 0), 1)
            frame[0] += frame[1] * (factor - 1)
            frame[1] *= factor
            i = count.end()
            continue
        elif char in "*+?|":
            i += 1
            continue
        else:
            i += 1
        frame[0] += item
        frame[1] = item
    return sum(frame[0] for frame in frames)


def _class_end(pattern: str, start: int) -> int:
    """The index after the `]` that closes the class opened at `start`."""
    i = start + 1
    if pattern.startswith("^", i):
        i += 1
    if pattern.startswith("]", i):
        i += 1
    while i < len(pattern) and pattern[i] != "]":
        i += 2 if pattern[i] == "\\" else 1
    return i + 1


# --- the validator --------------------------------------------------------------------------------------------------

_SENTINEL = "(?#declared pattern "


def declared_pattern(key: str) -> str:
    """A `patternProperties` key as declared (`guarded_schema` may have written it as a sentinel)."""
    if key.startswith(_SENTINEL) and key.endswith(")"):
        try:
            return bytes.fromhex(key[len(_SENTINEL):-1]).decode()
        except ValueError:
            pass
    return key


def _sentinel(pattern: str) -> str:
    """A regex comment, which matches at once everywhere, carrying the declared pattern."""
    return f"{_SENTINEL}{pattern.encode().hex()})"


def guarded_schema(schema: Any) -> Any:
    """The schema a guarded validator is built on. jsonschema's `unevaluatedProperties` matches `patternProperties`
    keys with `re` itself (no keyword function to replace): where a schema uses it, those keys are written as
    sentinels that match every key in no time, so there a key under `patternProperties` counts as evaluated (the
    values still meet the declared patterns' subschemas, through `patternProperties` below)."""
    if not _uses_keyword(schema, "unevaluatedProperties"):
        return schema
    return _with_sentinels(schema)


def _uses_keyword(schema: Any, keyword: str) -> bool:
    stack = [schema]
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            if keyword in item:
                return True
            stack.extend(value for key, value in item.items() if key not in DATA_KEYWORDS)
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _with_sentinels(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_with_sentinels(item) for item in schema]
    if not isinstance(schema, Mapping):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in DATA_KEYWORDS:
            out[key] = value
        elif key in SUBSCHEMA_MAPS and isinstance(value, Mapping):
            rename = _sentinel if key == "patternProperties" else str
            out[key] = {rename(name): _with_sentinels(sub) for name, sub in value.items()}
        else:
            out[key] = _with_sentinels(value)
    return out


def additional_keys(instance: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    """The keys of `instance` that neither `properties` nor a `patternProperties` pattern of `schema` covers. A key
    a pattern could not judge counts as covered (its value is checked against that pattern's subschema)."""
    properties = schema.get("properties", {})
    patterns = [declared_pattern(p) for p in schema.get("patternProperties", {})]
    checks = current_checks()
    return [key for key in instance if key not in properties
            and all(checks.matches(pattern, key) is False for pattern in patterns)]


def _pattern(validator: Any, pattern: str, instance: Any, schema: Mapping[str, Any]) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and current_checks().matches(pattern, instance) is False:
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(validator: Any, patterns: Mapping[str, Any], instance: Any, schema: Mapping[str, Any]
                        ) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    checks = current_checks()
    for key_pattern, subschema in patterns.items():
        pattern = declared_pattern(key_pattern)
        for key, value in instance.items():
            if checks.matches(pattern, key) is not False:
                yield from validator.descend(value, subschema, path=key, schema_path=key_pattern)


def _additional_properties(validator: Any, allowed: Any, instance: Any, schema: Mapping[str, Any]
                           ) -> Iterator[ValidationError]:
    """jsonschema's, but matching `patternProperties` one pattern at a time (it joins them with `|`, which also
    fails where a later pattern starts with a global flag)."""
    if not validator.is_type(instance, "object"):
        return
    extras = additional_keys(instance, schema)
    if validator.is_type(allowed, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], allowed, path=extra)
    elif not allowed and extras:
        if "patternProperties" in schema:
            verb = "does" if len(extras) == 1 else "do"
            joined = ", ".join(repr(each) for each in sorted(extras))
            patterns = ", ".join(repr(declared_pattern(each)) for each in sorted(schema["patternProperties"]))
            yield ValidationError(f"{joined} {verb} not match any of the regexes: {patterns}")
        else:
            listed = ", ".join(repr(each) for each in sorted(extras, key=str))
            verb = "was" if len(extras) == 1 else "were"
            yield ValidationError(f"Additional properties are not allowed ({listed} {verb} unexpected)")


_GUARDED_KEYWORDS = {"pattern": _pattern, "patternProperties": _pattern_properties,
                     "additionalProperties": _additional_properties}


@cache
def guarded_validator(cls: type) -> type:
    """`cls` (a dialect's validator class) with the pattern keywords above in place of jsonschema's."""
    keywords = {name: function for name, function in _GUARDED_KEYWORDS.items() if name in cls.VALIDATORS}  # type: ignore[attr-defined]
    return validators.extend(cls, keywords)  # type: ignore[arg-type]


def unchecked_by_pattern(unchecked: Iterable[Unchecked]) -> dict[str, list[Unchecked]]:
    """The misses grouped by pattern, in the order first met."""
    groups: dict[str, list[Unchecked]] = {}
    for item in unchecked:
        groups.setdefault(item.pattern, []).append(item)
    return groups
