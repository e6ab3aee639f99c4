"""`content`: banned terms and topics from the policy, matched on word boundaries after Unicode folding.

Text and terms are folded the same way (detectors/_fold.py: NFKC, confusables, casefold, invisible format
characters dropped), so "ＢＡＮＮＥＤ", "Banned", "ban" U+200B "ned" and "bаnned" with a Cyrillic "а" all match
"banned". The folded text keeps, for each of its characters, the span of original characters it came from, so a
match maps back to the exact original substring (zero-width characters inside it included).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from detectors._choices import read_severity
from detectors._fold import fold, fold_with_offsets, folded_view, warm_up
from detectors._textfilter import TextFilter
from guardrails.detector import Scope, Services, SettingError, read_setting
from guardrails.exchange import Segment
from guardrails.findings import Category, Hit, Severity
from guardrails.textview import where

__all__ = ["ContentDetector", "fold", "fold_with_offsets"]  # the folding helpers moved to _fold; still importable here


_RANK = {severity: rank for rank, severity in enumerate(Severity)}


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
    max_hits: 20                                    matches reported per segment (the first ones); past them
                                                    only a term more severe than all reported
    """

    name = "content"
    category = Category.CONTENT
    default_scope = Scope()

    def __init__(self, settings: Mapping[str, Any] | None = None, services: Services | None = None) -> None:
        super().__init__(settings, services)
        default = read_severity(self.settings, "severity", Severity.MEDIUM)
        self.terms: dict[str, list[Term]] = {}
        for term in self.setting("terms", list, []):
            self._add(str(term), None, default)
        for topic, spec in self.setting("topics", dict, {}).items():
            terms, severity = spec or [], default
            if isinstance(spec, Mapping):
                terms = read_setting(spec, "terms", list, [], where=f"topics.{topic}.")
                severity = read_severity(spec, "severity", default, where=f"topics.{topic}.")
            elif not isinstance(terms, list):  # a bare string would be matched letter by letter
                raise SettingError(f"setting topics.{topic} must be a list of terms or a mapping, not {spec!r}")
            for term in terms:
                self._add(str(term), str(topic), severity)
        self.pattern = _compile(self.terms)
        # Per segment: a megabyte of one term repeated was half a million findings (seconds, a huge answer).
        self.max_hits = self.setting("max_hits", int, 20)
        # Past the cap, only terms more severe than those found are looked for: the pattern of each rank's.
        ranks = {_RANK[t.severity] for terms in self.terms.values() for t in terms}
        self.more_severe = {rank: _compile({key: terms for key, terms in self.terms.items()
                                            if any(_RANK[t.severity] > rank for t in terms)})
                            for rank in ranks}
        warm_up()  # folding's character classes built here, not on the first check

    def _add(self, term: str, topic: str | None, severity: Severity) -> None:
        key = " ".join(fold(term).split())
        if key:
            self.terms.setdefault(key, []).append(Term(term, topic, severity))

    def analyze(self, segment: Segment) -> list[Hit]:
        if self.pattern is None:
            return []
        folded = folded_view(segment, casefold=True, blank_escapes=True)
        hits: list[Hit] = []
        worst = -1  # rank of the most severe term found
        pattern: re.Pattern[str] | None = self.pattern
        position = 0
        while pattern is not None and (match := pattern.search(folded.text, position)) is not None:
            position = match.end()
            terms = self.terms[" ".join(match.group().split())]
            if len(hits) >= self.max_hits:
                terms = [term for term in terms if _RANK[term.severity] > worst]
            start, end = folded.original_span(*match.span())
            for term in terms:
                hits.append(self._hit(segment, start, end, term))
                worst = max(worst, _RANK[term.severity])
            if len(hits) >= self.max_hits:
                # Past the cap only a more severe term is reported: twenty mild terms written first must not hide
                # one that blocks. Once the most severe is in, nothing further can change the verdict.
                pattern = self.more_severe.get(worst)
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


def _compile(terms: Mapping[str, list[Term]]) -> re.Pattern[str] | None:
    if not terms:
        return None
    # Longest first, so "credit card fraud" wins over "credit card"; inner spaces match any whitespace.
    keys = sorted(terms, key=len, reverse=True)
    alternatives = (r"\s+".join(map(re.escape, key.split(" "))) for key in keys)
    return re.compile(rf"(?<!\w)(?:{'|'.join(alternatives)})(?!\w)")
