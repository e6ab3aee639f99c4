"""`content`: banned terms and topics from the policy, matched on word boundaries after Unicode folding.

Text and terms are folded the same way (NFKC, then casefold), with zero-width and other invisible format
characters dropped, so "ＢＡＮＮＥＤ", "Banned" and "ban" U+200B "ned" all match "banned". The folded text
keeps, for each of its characters, the span of original characters it came from, so a match maps back to the exact
original substring (zero-width characters inside it included).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from detectors._textfilter import TextFilter
from guardrails.detector import Scope, Services, SettingError, read_setting
from guardrails.exchange import Segment, SegmentKind
from guardrails.findings import Category, Hit, Severity
from guardrails.textview import JSON_ESCAPE, where


# Invisible characters used to split a word so a filter misses it: Unicode format characters (category Cf:
# zero-width space and joiners, soft hyphen, word joiner, BOM, bidi controls, tag characters...).
def _invisible(char: str) -> bool:
    return unicodedata.category(char) == "Cf"


@cache
def _invisible_pattern() -> re.Pattern[str]:
    planes = (*range(0x30000), *range(0xE0000, 0xE1000))  # no format characters elsewhere
    chars = "".join(chr(c) for c in planes if unicodedata.category(chr(c)) == "Cf")
    return re.compile(f"[{re.escape(chars)}]")


def fold(text: str) -> str:
    """The comparison form of a term: NFKC, casefold, invisible characters removed."""
    return "".join(c for c in unicodedata.normalize("NFKC", text).casefold() if not _invisible(c))


@dataclass(frozen=True, slots=True)
class FoldedText:
    """`text` folded, with `starts[i]`/`ends[i]`: the original span the i-th folded character came from."""

    text: str
    starts: tuple[int, ...] | None  # None: identity mapping (ASCII input)
    ends: tuple[int, ...] | None

    def original_span(self, start: int, end: int) -> tuple[int, int]:
        if self.starts is None or self.ends is None:
            return start, end
        return self.starts[start], self.ends[end - 1]


def fold_with_offsets(text: str, json_escapes: bool = False) -> FoldedText:
    """Fold `text` keeping the map back to it. With `json_escapes` (a tool call's raw JSON arguments) an escape
    such as `\\uff42` folds as the character it encodes, so escaped evasions match too."""
    json_escapes = json_escapes and "\\" in text
    if not json_escapes:
        if text.isascii():  # the common case: casefold is lower(), nothing to drop or compose
            return FoldedText(text.lower(), None, None)
        if unicodedata.is_normalized("NFKC", text) and not _invisible_pattern().search(text):
            folded = text.casefold()
            if len(folded) == len(text):  # casefold never deletes, so equal length means one-to-one
                return FoldedText(folded, None, None)
    out: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    i, n = 0, len(text)
    while i < n:
        escape = JSON_ESCAPE.match(text, i) if json_escapes and text[i] == "\\" else None
        if escape:
            j = escape.end()
            unit = _decode_escape(escape.group())
        else:
            # A base character with its combining marks folds as one unit, so NFKC can compose them.
            j = i + 1
            while j < n and unicodedata.combining(text[j]):
                j += 1
            unit = text[i:j]
        for c in unicodedata.normalize("NFKC", unit).casefold():
            if not _invisible(c):
                out.append(c)
                starts.append(i)
                ends.append(j)
        i = j
    return FoldedText("".join(out), tuple(starts), tuple(ends))


def _decode_escape(escape: str) -> str:
    try:
        return json.loads(f'"{escape}"')
    except ValueError:  # a lone surrogate half or a bad escape: keep it as text
        return escape


@dataclass(frozen=True, slots=True)
class Term:
    term: str  # as configured
    topic: str | None
    severity: Severity


class ContentDetector(TextFilter):
    """Settings:

    terms: [word, "two words", ...]                 banned terms
    topics: {name: [terms...]} or {name: {terms: [...], severity: high}}
    severity: medium                                default severity of a match
    """

    name = "content"
    category = Category.CONTENT
    default_scope = Scope()

    def __init__(self, settings: Mapping[str, Any] | None = None, services: Services | None = None) -> None:
        super().__init__(settings, services)
        default = Severity(self.setting("severity", str, Severity.MEDIUM.value))
        self.terms: dict[str, list[Term]] = {}
        for term in self.setting("terms", list, []):
            self._add(str(term), None, default)
        for topic, spec in self.setting("topics", dict, {}).items():
            terms, severity = spec or [], default
            if isinstance(spec, Mapping):
                terms = read_setting(spec, "terms", list, [], where=f"topics.{topic}.")
                severity = Severity(read_setting(spec, "severity", str, default.value, where=f"topics.{topic}."))
            elif not isinstance(terms, list):  # a bare string would be matched letter by letter
                raise SettingError(f"setting topics.{topic} must be a list of terms or a mapping, not {spec!r}")
            for term in terms:
                self._add(str(term), str(topic), severity)
        self.pattern = self._compile()
        _invisible_pattern()  # built here, not on the first check

    def _add(self, term: str, topic: str | None, severity: Severity) -> None:
        key = " ".join(fold(term).split())
        if key:
            self.terms.setdefault(key, []).append(Term(term, topic, severity))

    def _compile(self) -> re.Pattern[str] | None:
        if not self.terms:
            return None
        # Longest first, so "credit card fraud" wins over "credit card"; inner spaces match any whitespace.
        keys = sorted(self.terms, key=len, reverse=True)
        alternatives = (r"\s+".join(map(re.escape, key.split(" "))) for key in keys)
        return re.compile(rf"(?<!\w)(?:{'|'.join(alternatives)})(?!\w)")

    def analyze(self, segment: Segment) -> list[Hit]:
        if self.pattern is None:
            return []
        folded = fold_with_offsets(segment.text, json_escapes=segment.kind is SegmentKind.TOOL_CALL)
        hits = []
        for match in self.pattern.finditer(folded.text):
            start, end = folded.original_span(*match.span())
            for term in self.terms[" ".join(match.group().split())]:
                hits.append(self._hit(segment, start, end, term))
        return hits

    def _hit(self, segment: Segment, start: int, end: int, term: Term) -> Hit:
        about = f"topic {term.topic!r} (term {term.term!r})" if term.topic else f"banned term {term.term!r}"
        evidence: dict[str, Any] = {"term": term.term, "matched": segment.text[start:end]}
        if term.topic:
            evidence["topic"] = term.topic
        return Hit(
            message=f"{about} {where(segment)}",
            start=start,
            end=end,
            severity=term.severity,
            score=1.0,
            evidence=evidence,
        )
