"""The tool-parser interface, the recovered-call record and the family registry."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from functools import partial
from operator import attrgetter
from typing import Any, ClassVar, NamedTuple

Span = tuple[int, int]
# Tool name -> JSON Schema of its parameters; XML-style families type their text values with it.
Schemas = Mapping[str, Any]


class RecoveredCall(NamedTuple):
    """One tool call read from raw model text. All spans are [start, end) offsets into that text.

    A NamedTuple rather than a frozen dataclass: as immutable, and several times cheaper to build, which
    counts on the per-call path of every parser."""

    family: str
    name: str
    arguments: Any  # the parsed (possibly repaired) arguments, or the raw text when unreadable
    arguments_parsed: bool
    span: Span  # the call's markup
    name_span: Span
    arguments_span: Span  # the arguments text as written (JSON, XML parameters, Python kwargs...)
    block: Span  # the markup block the call belongs to (several calls can share one)
    call_id: str | None = None
    repairs: tuple[str, ...] = ()  # what had to be mended: "single_quotes", "trailing_comma", "truncated"...


# `new_call((family, name, arguments, parsed, span, name_span, arguments_span, block, call_id, repairs))`: a
# record from all ten fields in order, built in C. The parsers' hot paths use it: the NamedTuple constructor
# is a Python function (and with keywords costs about as much as the parse of a small call).
new_call = partial(tuple.__new__, RecoveredCall)
by_span = attrgetter("span")  # the sort key of calls in text order
# A call's ten fields as a plain tuple, before its markup block is known: the readers that leave the block to
# their caller (`jsoncalls.with_block`) return drafts, so that each record is built once.
Draft = tuple[str, str, Any, bool, Span, Span, Span, Span, str | None, tuple[str, ...]]


# Per text, the candidates one parser tries: a tag, a head, a list, and each further call object in one (a call
# usually costs one). A 4 MB answer of repeated markup holds 40,000 to 180,000 calls, and every one of them cost
# each check its parse and then a tool-call segment that the tool detectors judge (seconds per megabyte); real
# answers hold a few. Past the bound the parser stops: where, `Budget.unread` tells (`recover.recover_bounded`).
MAX_CANDIDATES = 5_000


class Budget:
    """The candidates one parser may still try on one text, and `until` where (another parser stopped there: the
    text past it is not read); `unread`: where it stopped (the start of the first candidate it did not try)."""

    __slots__ = ("left", "unread", "until")

    def __init__(self, limit: int | None = None, until: int | None = None) -> None:
        self.left = MAX_CANDIDATES if limit is None else limit
        self.until = until
        self.unread: int | None = None

    def take(self, at: int) -> bool:
        """Spend one candidate on the one at `at`; False (noting `at`) when none is left or `at` is past `until`."""
        if self.left > 0 and (self.until is None or at < self.until):
            self.left -= 1
            return True
        self.stop(at)
        return False

    def stop(self, at: int) -> None:
        """Stop reading at `at` (the earliest of the places where reading stopped is kept)."""
        self.left = 0
        if self.unread is None or at < self.unread:
            self.unread = at


class ToolParser(ABC):
    """One format family. Tolerant: recovers calls vLLM's parser of the family would drop or reject."""

    family: ClassVar[str]
    # The parser runs only when one of these substrings occurs in the text (the cheap precheck).
    markers: ClassVar[tuple[str, ...]]
    # Reads bodies that other families wrap (bare JSON, pythonic lists): runs after the others, on the text
    # with their markup blanked out.
    bare: ClassVar[bool] = False

    def applies(self, text: str) -> bool:
        for marker in self.markers:  # noqa: SIM110  (a loop: any() over a generator costs twice as much)
            if marker in text:
                return True
        return False

    @abstractmethod
    def parse(self, text: str, schemas: Schemas | None = None) -> list[RecoveredCall]:
        """Every call of this family found in `text`, in order. Never raises on malformed text."""

    def read(self, text: str, schemas: Schemas | None, budget: Budget) -> list[RecoveredCall]:
        """`parse`, trying at most `budget`'s candidates (a parser without its own bound reads the whole text)."""
        return self.parse(text, schemas)


class BoundedParser(ToolParser):
    """A parser that stops after its budget of candidates (`read`); `parse` reads with a fresh budget."""

    def parse(self, text: str, schemas: Schemas | None = None) -> list[RecoveredCall]:
        return self.read(text, schemas, Budget())

    @abstractmethod
    def read(self, text: str, schemas: Schemas | None, budget: Budget) -> list[RecoveredCall]:
        """The calls of this family in `text`, in order, up to where `budget` ran out (`budget.unread`)."""


PARSERS: dict[str, ToolParser] = {}  # family -> parser, in precedence order


def register(cls: type[ToolParser]) -> type[ToolParser]:
    PARSERS[cls.family] = cls()
    return cls


def get_parser(family: str) -> ToolParser:
    try:
        return PARSERS[family]
    except KeyError:
        raise KeyError(f"no tool parser family {family!r}; known: {sorted(PARSERS)}") from None
