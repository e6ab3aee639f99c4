"""The detector interface and its registry.

A detector is a small class built once per policy version. Two shapes share one interface:

* `SegmentDetector.analyze(segment) -> list[Hit]`: a pure function of one segment's kind and text (PII,
  secrets, injection...). The engine runs it only on the segments its scope selects and caches the hits
  per segment content, so an agent's resent history costs nothing on the next step.
* `Detector.scan(exchange, ctx) -> list[Finding]`: anything that needs the whole exchange (tool calls
  against declared tools, loops, taint) or waits on I/O (a vLLM scoring call). It is a coroutine so the
  engine can run several concurrently under a timeout.

Third-party packages register detectors through the `guardrails.detectors` entry-point group, exactly as
this project registers its own (see pyproject.toml).

Detectors read their policy settings through `Detector.setting(key, type, default)` when they are built: a
value of the wrong type raises `SettingError`, which the engine reports as a configuration error naming the
detector, the setting and the line of config.yml, so `guardrails policy validate` and a policy load refuse it.
While a detector is built its settings are a `RecordedSettings`: a key it never asks for is a misspelled or
unsupported setting, which `guardrails policy validate` reports and a policy load logs as a warning.

A number setting may declare its range (`setting("score_threshold", float, 0.4, minimum=0, maximum=1)`): a value
outside it (`score_threshold: 7`, which would report nothing) is a `SettingError` naming the range. A detector that
reads a mapping of its own (an entry per tool, a rule per argument) refuses a key it does not read with
`refuse_unknown_keys`, so a typo there (`maximum:` for `max:`) stops the policy as a misspelt setting does.

A setting that reaches outside the process (a file path, a URL, a client block) is read with
`setting(..., server_only=True)`: an inline policy (`InlineSettings`, sent by a caller of the NeMo endpoint) that
sets it raises `SettingError` before the detector reads the file or calls the URL.
"""

from __future__ import annotations

import difflib
import math
from abc import ABC, abstractmethod
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar, TypeVar, overload

from guardrails.exchange import Exchange, Phase, Segment, SegmentKind, Trust
from guardrails.findings import Category, Finding, Hit

ENTRY_POINT_GROUP = "guardrails.detectors"

T = TypeVar("T")
# How a setting's expected type reads in an error message (YAML words: authors write `true`, not `True`).
_TYPE_WORDS: dict[type, str] = {bool: "true or false", int: "a whole number", float: "a number", str: "a string",
                                list: "a list", dict: "a mapping"}
_PLURAL_WORDS: dict[type, str] = {bool: "true/false values", int: "whole numbers", float: "numbers", str: "strings",
                                  list: "lists", dict: "mappings"}
SERVER_ONLY = "file and URL settings are only allowed in policy bundles on the server, not in an inline config"


class SettingError(ValueError):
    """A policy setting of the wrong type, or a server-only one in an inline policy. Raised while a detector is
    built; the engine names the detector and the config.yml line."""


class InlineSettings(dict[str, Any]):
    """A detector's settings from an inline policy: written by whoever calls the service, not by whoever runs
    it, so a setting read with `server_only=True` is refused (it would read the server's files or call URLs
    from the server's network)."""

    inline = True


def is_inline(settings: Mapping[Any, Any]) -> bool:
    """Whether `settings` (or the settings a `RecordedSettings` wraps) came from an inline policy."""
    return getattr(settings, "inline", False) is True


def refuse_inline(settings: Mapping[Any, Any], key: str) -> None:
    """Raise `SettingError` when `key` is set in inline settings: file and URL settings come from the server."""
    if settings.get(key) is not None and is_inline(settings):
        raise SettingError(f"setting {key} reads a file or calls a URL: {SERVER_ONLY}")


def read_setting(settings: Mapping[Any, Any], key: Hashable, kind: type[T], default: Any = None,
                 items: type | None = None, where: str = "", *, minimum: float | None = None,
                 maximum: float | None = None, above: float | None = None) -> Any:
    """`settings[key]` checked against `kind` (bool, int, float, str, list or dict); `default` when the key is
    absent or null. `items` checks a list's elements; `where` prefixes the key in messages ("tools.x.").
    `minimum`/`maximum` (inclusive) and `above` (exclusive) bound a number setting's value.

    Python's bool is an int: a number setting refuses `true`, a bool setting refuses 0 and 1. An int is a
    float (`threshold: 1`); a float is not an int (`max_repeats: 2.5` would be cut to 2)."""
    value = settings.get(key)
    if value is None:
        return default
    if not _is_a(value, kind):
        raise SettingError(f"setting {where}{key} must be {_TYPE_WORDS.get(kind, kind.__name__)}, not {value!r}")
    if kind is list:
        wrong = [v for v in value if not _is_a(v, items)] if items is not None else []
        if items is not None and wrong:
            plural = _PLURAL_WORDS.get(items, f"{items.__name__} values")
            quote = " (quote it to use a number as a string)" if items is str and _is_a(wrong[0], float) else ""
            raise SettingError(f"setting {where}{key} must be a list of {plural}, but holds {wrong[0]!r}{quote}")
        return list(value)
    if minimum is not None or maximum is not None or above is not None:
        check_range(value, f"{where}{key}", minimum, maximum, above)
    return float(value) if kind is float else value


def check_range(value: Any, name: str, minimum: float | None, maximum: float | None, above: float | None) -> None:
    """A number outside its range is refused: `score_threshold: 7` would silently report nothing; so are NaN and
    infinities (`token_z: .inf` would switch relative thresholds off)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    inside = math.isfinite(value) and (
        (minimum is None or value >= minimum) and (maximum is None or value <= maximum)
        and (above is None or value > above))
    if not inside:
        raise SettingError(f"setting {name} must be {range_words(minimum, maximum, above)}, not {value!r}")


def range_words(minimum: float | None, maximum: float | None, above: float | None = None) -> str:
    """`between 0 and 1`, `at least 2`, `above 0 and at most 1`..."""
    low = f"above {above:g}" if above is not None else (f"at least {minimum:g}" if minimum is not None else "")
    if maximum is None:
        return low or "a number"
    if minimum is not None and above is None:
        return f"between {minimum:g} and {maximum:g}"
    return f"{low} and at most {maximum:g}" if low else f"at most {maximum:g}"


def refuse_unknown_keys(settings: Mapping[Any, Any], known: Iterable[str], where: str) -> None:
    """A key of a nested settings mapping (`tools.<name>`, an argument rule) that its reader does not read is
    refused, with the closest known key: left alone it would switch its rule off without a word."""
    valid = list(dict.fromkeys(known))
    for key in settings:
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ";"
            raise SettingError(f"{where}: unknown key {key!r}{hint} valid: {', '.join(sorted(valid)) or 'none'}")


def _is_a(value: Any, kind: type) -> bool:
    if kind is bool or isinstance(value, bool):
        return kind is bool and isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float))
    if kind is list:
        return isinstance(value, (list, tuple))  # YAML gives lists; code building a detector may pass tuples
    if kind is dict:
        return isinstance(value, Mapping)
    return isinstance(value, kind)


class RecordedSettings(Mapping[str, Any]):
    """A detector's settings that remember which keys the detector asked for while it was built.

    Every lookup (`setting()`, `get`, `[]`, `in`) records the key, present or not, so the names a detector
    asks for also serve as did-you-mean candidates; iterating (`items()`, `keys()`, `dict(...)`) reads them all.
    """

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self._settings = settings
        self.asked: dict[str, None] = {}  # in the order asked: suggestions are deterministic
        self.read_all = False

    def __getitem__(self, key: str) -> Any:
        self.asked[key] = None
        return self._settings[key]

    def __iter__(self) -> Iterator[str]:
        self.read_all = True  # a detector that walks its settings checks (or accepts) every key itself
        return iter(self._settings)

    def __len__(self) -> int:
        return len(self._settings)

    def __repr__(self) -> str:
        return f"RecordedSettings({self._settings!r})"

    @property
    def inline(self) -> bool:
        return is_inline(self._settings)

    def unread(self) -> list[Any]:
        """The keys the detector never asked for: misspelled or unsupported, unless it reads them later."""
        return [] if self.read_all else [key for key in self._settings if key not in self.asked]


@dataclass(frozen=True, slots=True)
class Scope:
    """Which segments a detector looks at. Empty means any."""

    kinds: frozenset[SegmentKind] = frozenset()
    trust: frozenset[Trust] = frozenset()
    phases: frozenset[Phase] = frozenset()

    def matches(self, segment: Segment) -> bool:
        return (
            (not self.kinds or segment.kind in self.kinds)
            and (not self.trust or segment.trust in self.trust)
            and (not self.phases or segment.phase in self.phases)
        )

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> Scope:
        """Build a scope from policy YAML: {kinds: [...], trust: [...], phases: [...]}."""
        unknown = set(raw) - {"kinds", "trust", "phases"}
        if unknown:
            raise ValueError(f"unknown applies_to keys: {sorted(unknown)}")
        return cls(
            kinds=frozenset(SegmentKind(k) for k in raw.get("kinds", ())),
            trust=frozenset(Trust(t) for t in raw.get("trust", ())),
            phases=frozenset(Phase(p) for p in raw.get("phases", ())),
        )


@dataclass(slots=True)
class Services:
    """Shared, long-lived collaborators a detector may use. Wired by `guardrails serve`."""

    state: Any = None  # per-agent/per-model state store
    vllm: Any = None  # async vLLM HTTP client
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class ScanContext:
    """What the engine hands a detector for one check besides the exchange."""

    segments: Sequence[Segment]  # the exchange's segments this detector's scope selects
    signals: dict[str, Any]  # detectors publish per-check signals under their own name
    policy_id: str = "default"


class Detector(ABC):
    """Base class of every detector. Subclasses set `name` and `category` and implement `scan`.

    Read every setting in `__init__` (with `setting()`): the engine records which keys a detector asks for
    while it is built, and a key it did not ask for is reported as unknown (an error for `guardrails policy
    validate`, a warning when the service loads the policy). A setting first read in `scan` is reported too.
    """

    name: ClassVar[str]
    category: ClassVar[Category]
    default_scope: ClassVar[Scope] = Scope()
    # True for detectors that wait on the network (vLLM scoring, a guard model): the engine runs them
    # concurrently under the policy's timeout. CPU-bound detectors run inline, which is cheaper.
    io_bound: ClassVar[bool] = False

    def __init__(self, settings: Mapping[str, Any] | None = None, services: Services | None = None) -> None:
        self.settings: Mapping[str, Any] = settings or {}
        self.services = services or Services()

    @overload
    def setting(self, key: str, kind: type[T], default: T, items: type | None = None, *,
                server_only: bool = False, minimum: float | None = None, maximum: float | None = None,
                above: float | None = None) -> T: ...

    @overload
    def setting(self, key: str, kind: type[T], default: None = None, items: type | None = None, *,
                server_only: bool = False, minimum: float | None = None, maximum: float | None = None,
                above: float | None = None) -> T | None: ...

    def setting(self, key: str, kind: type[T], default: T | None = None, items: type | None = None, *,
                server_only: bool = False, minimum: float | None = None, maximum: float | None = None,
                above: float | None = None) -> T | None:
        """A setting of this detector, type-checked (see `read_setting`); read it in `__init__`, so a wrong
        type stops the policy from loading instead of failing a check. `server_only=True` declares a setting
        that reaches outside the process (a file, a URL, a client): an inline policy may not set it.
        `minimum`/`maximum` (inclusive) and `above` (exclusive) bound a number: a value that would switch the
        detector off or make it fire on everything is refused with its range."""
        if server_only:
            refuse_inline(self.settings, key)
        return read_setting(self.settings, key, kind, default, items, minimum=minimum, maximum=maximum, above=above)

    def policy_file(self, value: str | Path, outside_a_bundle: Path | None = None) -> Path:
        """A file named by a setting: a relative path is read from the policy's bundle (where the author keeps
        it, and where it counts in the policy version), not from the directory the service was started in;
        for a detector built outside a bundle, from `outside_a_bundle` when given."""
        path = Path(value).expanduser()
        # A backstop for a setting not declared `server_only`: an inline policy names no file of the server's.
        if is_inline(self.settings) and (outside_a_bundle is None or path.is_absolute() or ".." in path.parts):
            raise SettingError(f"file {str(value)!r}: {SERVER_ONLY}")
        base = self.services.extra.get("policy_dir") or outside_a_bundle
        return path if path.is_absolute() or base is None else Path(base) / path

    @abstractmethod
    async def scan(self, exchange: Exchange, ctx: ScanContext) -> list[Finding]:
        """Return findings for one exchange."""

    def finding(self, segment: Segment, hit: Hit) -> Finding:
        """Place a segment-relative hit in the check body."""
        if hit.start is None:
            span = (0, len(segment.text))
            location = segment.locate(*span)
            start = end = None
        else:
            span = (hit.start, hit.end if hit.end is not None else hit.start)
            location = segment.locate(*span)
            start, end = location.start, location.end
        return Finding(
            category=hit.category or self.category,
            detector=self.name,
            severity=hit.severity,
            message=hit.message,
            pointer=location.pointer,
            start=start,
            end=end,
            score=hit.score,
            evidence=hit.evidence,
            action=hit.action,
            span=span,
        )


class SegmentDetector(Detector):
    """A detector that judges segments one at a time; the engine caches its hits per segment content."""

    @abstractmethod
    def analyze(self, segment: Segment) -> list[Hit]:
        """Return hits relative to `segment.text`. Must depend only on the segment's kind, trust and text."""

    async def scan(self, exchange: Exchange, ctx: ScanContext) -> list[Finding]:
        return [self.finding(s, h) for s in ctx.segments for h in self.analyze(s)]


class DetectorRegistry:
    """Name -> detector class. Filled from entry points; `register` serves tests and embedding apps."""

    def __init__(self, classes: Iterable[type[Detector]] = ()) -> None:
        self._classes: dict[str, type[Detector]] = {}
        self.load_errors: dict[str, str] = {}  # entry point name -> why it failed to load (shown on /readyz)
        for cls in classes:
            self.register(cls)

    def register(self, cls: type[Detector]) -> type[Detector]:
        if not (isinstance(cls, type) and issubclass(cls, Detector)):
            raise TypeError(f"{cls!r} is not a Detector subclass")
        self._classes[cls.name] = cls
        return cls

    def get(self, name: str) -> type[Detector]:
        try:
            return self._classes[name]
        except KeyError:
            raise KeyError(f"no detector named {name!r}; known: {sorted(self._classes)}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._classes

    def names(self) -> list[str]:
        return sorted(self._classes)

    @classmethod
    def from_entry_points(cls, group: str = ENTRY_POINT_GROUP) -> DetectorRegistry:
        registry = cls()
        for ep in entry_points(group=group):
            try:
                registry.register(ep.load())
            except Exception as exc:  # a broken plug-in must not take the service down
                registry.load_errors[ep.name] = f"{type(exc).__name__}: {exc}"
        return registry
