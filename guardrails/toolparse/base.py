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


PARSERS: dict[str, ToolParser] = {}  # family -> parser, in precedence order


def register(cls: type[ToolParser]) -> type[ToolParser]:
    PARSERS[cls.family] = cls()
    return cls


def get_parser(family: str) -> ToolParser:
    try:
        return PARSERS[family]
    except KeyError:
        raise KeyError(f"no tool parser family {family!r}; known: {sorted(PARSERS)}") from None
